"""The ingest pipeline shared by C-STORE, `hpacs import` and (later) STOW-RS.

A data set streams in as fragments. Each fragment is queued to a temp file (after a Part 10
preamble and file meta naming the transfer syntax it arrived in: the bytes are never decoded or
re-encoded), which an I/O thread writes while the rest arrives (store/sink.py), and is fed to
the header scanner, which collects the index keys and checks that the top-level elements add
up to exactly the bytes received. On the last fragment the file is fsync'd and renamed into
place, its record goes to the single index writer, and only when that commit is done does the
caller learn the outcome.
"""

from __future__ import annotations

import asyncio
import errno
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum

import msgspec

from hpacs.config import DuplicatePolicy
from hpacs.dicom.part10 import build_file_meta
from hpacs.dicom.scan import HeaderScanner, ScanError
from hpacs.dicom.transfer_syntax import Encoding, encoding_of
from hpacs.index.db import IndexDB
from hpacs.index.schema import WANTED_TAGS, InstanceRecord, RecordError, record_from_scan
from hpacs.index.writer import IndexWriteError, IndexWriter
from hpacs.log import get_logger
from hpacs.store import trace
from hpacs.store.commits import Commits
from hpacs.store.hot import HotStore
from hpacs.store.sink import FileSink

log = get_logger("hpacs.store")

SOP_CLASS_UID_TAG = 0x00080016
SOP_INSTANCE_UID_TAG = 0x00080018

#: Threads for file I/O (each works on one file at a time, in order).
IO_THREADS = 16


class Outcome(Enum):
    """What became of one instance; the services map these to DICOM / HTTP statuses."""

    STORED = "stored"
    REPLACED = "replaced"
    DUPLICATE_KEPT = "duplicate-kept"
    DUPLICATE_REJECTED = "duplicate-rejected"
    INVALID = "invalid"  # malformed, truncated, missing UIDs
    MISMATCH = "mismatch"  # data set does not match its command (SOP class / instance)
    OUT_OF_RESOURCES = "out-of-resources"  # disk or index full

    @property
    def ok(self) -> bool:
        return self in (Outcome.STORED, Outcome.REPLACED, Outcome.DUPLICATE_KEPT)


@dataclass(frozen=True, slots=True)
class StoreResult:
    outcome: Outcome
    comment: str = ""
    record: InstanceRecord | None = None
    #: The data element at fault, as a tag int (e.g. SOP Instance UID on a mismatch).
    offending_tag: int | None = None


class Ingestor:
    """Turns streamed data sets into durable, indexed instances."""

    def __init__(
        self,
        hot: HotStore,
        db: IndexDB,
        duplicate_policy: DuplicatePolicy = "keep",
        writer: IndexWriter | None = None,
    ) -> None:
        self.hot = hot
        self.db = db
        self.writer: IndexWriter = writer  # type: ignore[assignment]  # set before use
        self.duplicate_policy = duplicate_policy
        self._locks: dict[str, list] = {}  # SOP Instance UID -> [lock, users]
        #: stored_at of records whose file may be in place but whose index commit is pending.
        self._unindexed: dict[int, float] = {}
        self.in_flight = 0
        #: Instances between their file commit's start and their index submit: while one is,
        #: its record will join a group commit, so the others do not commit alone.
        self._committing = 0
        self._last_active = time.monotonic()
        #: Called with every newly stored record, after its commit (metadata warming, prior
        #: prefetch): must be cheap and never raise (schedule work, do not do it).
        self.listeners: list[Callable[[InstanceRecord], None]] = []
        #: File I/O runs here, one file's work in order (see store/sink.py).
        self.io = ThreadPoolExecutor(max_workers=IO_THREADS, thread_name_prefix="hpacs-io")
        #: The per-instance commits: C threads answering through an eventfd (store/commits.py).
        self.commits = Commits(hot, self.io)

    def close(self) -> None:
        self.commits.close()
        self.io.shutdown(wait=True)

    def quiet_for(self) -> float:
        """Seconds since a data set was last arriving (0 while one is): background work such
        as metadata warming waits for quiet instead of taking CPU from ingest."""
        if self.in_flight:
            return 0.0
        return time.monotonic() - self._last_active

    def oldest_unindexed(self) -> float | None:
        """For the writer's checkpoint: no file stored before this time lacks its commit."""
        return min(self._unindexed.values(), default=None)

    def begin(
        self,
        sop_class_uid: str,
        sop_instance_uid: str,
        transfer_syntax_uid: str,
        *,
        source: str = "",
    ) -> Receiver:
        """Start receiving one data set (the command's UIDs are checked against it at the end)."""
        return Receiver(self, sop_class_uid, sop_instance_uid, transfer_syntax_uid, source)

    async def store_bytes(
        self,
        sop_class_uid: str,
        sop_instance_uid: str,
        transfer_syntax_uid: str,
        chunks: Iterable[bytes | memoryview],
        *,
        source: str = "",
    ) -> StoreResult:
        """Store a data set given as an iterable of fragments."""
        receiver = self.begin(sop_class_uid, sop_instance_uid, transfer_syntax_uid, source=source)
        for chunk in chunks:
            receiver.write(chunk)
        return await receiver.finish()

    def instance_lock(self, sop_uid: str) -> InstanceLock:
        """``async with``: hold one SOP Instance UID against stores (and tier moves) of the
        same instance."""
        return InstanceLock(self._locks, sop_uid)

    async def _commit(self, receiver: Receiver, record: InstanceRecord) -> StoreResult:
        """Apply the duplicate policy, make the file durable, index it. Serialized per SOP UID."""
        async with self.instance_lock(record.sop_instance_uid):
            return await self._commit_locked(receiver, record)

    async def _commit_locked(self, receiver: Receiver, record: InstanceRecord) -> StoreResult:
        existing = self.db.get_instance(record.sop_instance_uid)
        if existing is not None and self.duplicate_policy != "replace":
            receiver.discard()
            if self.duplicate_policy == "reject":
                log.warning("store.duplicate_rejected", sop=record.sop_instance_uid,
                            source=receiver.source)
                return StoreResult(Outcome.DUPLICATE_REJECTED,
                                   "duplicate SOP Instance UID rejected by policy")
            log.info("store.duplicate_kept", sop=record.sop_instance_uid, source=receiver.source)
            return StoreResult(Outcome.DUPLICATE_KEPT)

        token = id(receiver)
        record = msgspec.structs.replace(record, stored_at=time.time())
        self._unindexed[token] = record.stored_at
        rec = receiver.trace
        if rec is not None:
            trace.stamp(rec, "validated")
        try:
            self._committing += 1
            try:
                await receiver.sink.commit(record.path)
            except OSError as exc:
                return _resource_failure(exc, record, receiver)
            finally:
                self._committing -= 1
            if rec is not None:
                trace.stamp(rec, "resumed")
            try:
                # nobody else about to submit (one association): commit now, no hand-off
                result = None if self._committing else self.writer.commit_now(record)
                if result is None:
                    result = await self.writer.submit(record)
            except IndexWriteError as exc:
                if existing is None or existing.path != record.path:
                    self.hot.remove(record.path)
                log.error("store.index_failed", sop=record.sop_instance_uid, error=str(exc))
                return StoreResult(Outcome.OUT_OF_RESOURCES, f"index write failed: {exc}")
        finally:
            del self._unindexed[token]
        if rec is not None:
            trace.stamp(rec, "indexed")
        previous = result.previous
        if previous is not None and previous.path and previous.path != record.path:
            self.hot.remove(previous.path)
        outcome = Outcome.REPLACED if previous is not None else Outcome.STORED
        for listener in self.listeners:
            try:
                listener(record)
            except Exception as exc:  # a listener must never fail a stored instance
                log.error("store.listener_failed", sop=record.sop_instance_uid, error=repr(exc))
        return StoreResult(outcome, "", record)


class InstanceLock:
    """One asyncio.Lock per SOP Instance UID, kept while someone holds or awaits it.

    A class rather than an asynccontextmanager: it is taken once per stored instance. The entry
    counts its users, so it is dropped only when nobody holds or awaits the lock any more (a
    waiter just woken by a release still counts: no second lock is made for the same UID).
    """

    __slots__ = ("_entry", "_locks", "_uid")

    def __init__(self, locks: dict[str, list], uid: str) -> None:
        self._locks = locks
        self._uid = uid
        self._entry: list = []

    async def __aenter__(self) -> None:
        entry = self._locks.get(self._uid)
        if entry is None:
            entry = self._locks[self._uid] = [asyncio.Lock(), 0]
        self._entry = entry
        entry[1] += 1
        try:
            await entry[0].acquire()
        except BaseException:
            self._leave()
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._entry[0].release()
        self._leave()

    def _leave(self) -> None:
        entry = self._entry
        entry[1] -= 1
        if entry[1] == 0 and self._locks.get(self._uid) is entry:
            del self._locks[self._uid]


def _resource_failure(exc: OSError, record: InstanceRecord, receiver: Receiver) -> StoreResult:
    reason = "disk full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else exc.strerror
    log.error("store.write_failed", sop=record.sop_instance_uid, source=receiver.source,
              error=str(exc))
    return StoreResult(Outcome.OUT_OF_RESOURCES, f"cannot write the instance: {reason}")


class Receiver:
    """One data set on its way in. ``write`` never raises: the first error is kept for the end."""

    #: The instance's trace record (store/trace.py; None: not traced).
    trace: dict | None = None

    def __init__(
        self,
        ingestor: Ingestor,
        sop_class_uid: str,
        sop_instance_uid: str,
        transfer_syntax_uid: str,
        source: str,
    ) -> None:
        self.ingestor = ingestor
        self.sop_class_uid = sop_class_uid
        self.sop_instance_uid = sop_instance_uid
        self.transfer_syntax_uid = transfer_syntax_uid
        self.source = source
        self.size = 0
        self.sink = FileSink(ingestor.hot, ingestor.io, ingestor.commits)
        self._failure: StoreResult | None = None
        self._inflater: zlib._Decompress | None = None  # type: ignore[name-defined]
        self._finished = False
        ingestor.in_flight += 1
        try:
            encoding: Encoding = encoding_of(transfer_syntax_uid)
        except KeyError:
            self._failure = StoreResult(
                Outcome.INVALID, f"transfer syntax {transfer_syntax_uid} cannot be stored")
            return
        self._little_endian = encoding.little_endian
        self._scanner = HeaderScanner(WANTED_TAGS, encoding.explicit_vr, encoding.little_endian)
        if encoding.deflated:
            self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        meta = build_file_meta(sop_class_uid, sop_instance_uid, transfer_syntax_uid)
        self.sink.write(meta)
        self.size = len(meta)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append one fragment of the data set (bytes exactly as received)."""
        self.write_parts((data,))

    def write_parts(self, parts: Sequence[bytes | bytearray | memoryview],
                    last: bool = False) -> None:
        """Append consecutive fragments of the data set (one file write for all of them);
        ``last``: the data set ends with them."""
        if self._failure is not None:
            return
        if any(type(p) is bytearray for p in parts):
            # the caller may reuse it; the sink writes later
            parts = [bytes(p) if type(p) is bytearray else p for p in parts]
        size = self.sink.write_parts(parts, last)
        self.size += size
        try:
            inflater = self._inflater
            feed = self._scanner.feed
            for data in parts:
                feed(data if inflater is None else inflater.decompress(data))
        except (ScanError, zlib.error) as exc:
            self._failure = StoreResult(Outcome.INVALID, f"malformed data set: {exc}")
            self.discard()

    def discard(self) -> None:
        """Drop the temp file (association aborted, or the instance was refused)."""
        self.sink.discard()
        self._end()

    def _end(self) -> None:
        if not self._finished:
            self._finished = True
            self.ingestor.in_flight -= 1
            self.ingestor._last_active = time.monotonic()

    async def finish(self) -> StoreResult:
        """The last fragment arrived: validate, make durable, index. Returns the outcome."""
        try:
            return await self._finish()
        finally:
            self.sink.discard()  # no-op once committed
            self._end()

    async def _finish(self) -> StoreResult:
        if self._failure is not None:
            self._log_refusal(self._failure)
            return self._failure
        if self.trace is not None:
            trace.stamp(self.trace, "finish")
        self.sink.presync()  # the data goes to disk while we validate and look up
        try:
            if self._inflater is not None:
                self._scanner.feed(self._inflater.flush())
                if not self._inflater.eof:
                    raise ScanError("deflated data set ends before the end of its stream")
            values = self._scanner.finish()
            record = record_from_scan(
                values,
                little_endian=self._little_endian,
                transfer_syntax=self.transfer_syntax_uid,
                path="",
                size=self.size,
                stored_at=time.time(),
            )
        except (ScanError, zlib.error) as exc:
            return self._refuse(Outcome.INVALID, f"malformed or truncated data set: {exc}")
        except RecordError as exc:
            return self._refuse(Outcome.INVALID, str(exc))
        if record.sop_instance_uid != self.sop_instance_uid:
            return self._refuse(Outcome.MISMATCH, "SOP Instance UID differs from the command",
                                SOP_INSTANCE_UID_TAG, found=record.sop_instance_uid)
        if record.sop_class_uid != self.sop_class_uid:
            return self._refuse(Outcome.MISMATCH, "SOP Class UID differs from the command",
                                SOP_CLASS_UID_TAG, found=record.sop_class_uid,
                                expected=self.sop_class_uid)
        relative = self.ingestor.hot.relative_path(
            record.study_uid, record.series_uid, record.sop_instance_uid)
        record = msgspec.structs.replace(record, path=relative)
        result = await self.ingestor._commit(self, record)
        if result.outcome.ok:
            log.debug("store.stored", sop=record.sop_instance_uid, outcome=result.outcome.value,
                      size=self.size, source=self.source)
        return result

    def _refuse(self, outcome: Outcome, comment: str, offending_tag: int | None = None,
                **details: str) -> StoreResult:
        """Refuse the instance. ``comment`` goes back to the peer (Error Comment is an LO:
        keep it under 64 characters); ``details`` go to the log only."""
        self.discard()
        result = StoreResult(outcome, comment, offending_tag=offending_tag)
        self._log_refusal(result, **details)
        return result

    def _log_refusal(self, result: StoreResult, **details: str) -> None:
        log.warning("store.refused", sop=self.sop_instance_uid, outcome=result.outcome.value,
                    reason=result.comment, source=self.source, **details)
