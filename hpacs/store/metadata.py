"""Per-instance DICOM JSON computed at ingest, so WADO-RS ``/metadata`` never opens an instance.

A viewer opens a series by asking for its metadata: building it from the files at request time
costs a file read and a full header parse per instance. Instead every stored instance's PS3.18
F.2 JSON (hpacs.dicom.dicomjson) is computed once, right after its index commit, by a worker
*process* (the parse is CPU work; in a thread it would take the GIL from the ingest loop), and
kept in a side LMDB environment ``metadata/`` keyed by SOP Instance UID. A series response is
then a few LMDB reads and one join.

The side environment is a cache, not a source of truth: each value records the ``stored_at`` of
the instance it was computed from and is used only while the index row still says the same (a
replaced instance is recomputed); a missing or stale value is computed on demand and stored;
``sync=False`` because anything lost in a crash is recomputed. BulkDataURIs are stored relative
(``/studies/...``) and the server's base URL is put in front when serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import io
import math
import mmap
import multiprocessing
import os
import signal
import struct
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Final

import lmdb
import msgspec

from hpacs.dicom.dicomjson import DicomJSONError, part10_json
from hpacs.dicom.part10 import Part10Error
from hpacs.log import get_logger

log = get_logger("hpacs.metadata")

METADATA_DIR: Final = "metadata"
_STAMP: Final = struct.Struct("<d")
_BULK_KEY: Final = b'"BulkDataURI":"/studies/'
_BATCH: Final = 64
#: Warming waits until no data set has been arriving for this long. It is a cache (the instances
#: are durable and indexed already), and computing it while data streams in takes CPU from
#: ingest: on 2 cores, 1000 CT slices over 1 association went 247 -> 317 files/s without it.
QUIET_S: Final = 0.5
#: Beyond this many waiting instances new ones are not queued (computed on demand instead).
MAX_BACKLOG: Final = 100_000
_ENCODER = msgspec.json.Encoder()


def instance_uri(study_uid: str, series_uid: str, sop_uid: str) -> str:
    """The instance's path under the DICOMweb root (where its bulk data is served)."""
    return f"/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"


def compute(data: bytes | memoryview | mmap.mmap, study_uid: str, series_uid: str,
            sop_uid: str) -> bytes:
    """Encoded JSON of one stored instance, BulkDataURIs relative to the DICOMweb root."""
    return _ENCODER.encode(part10_json(data, bulk_base=instance_uri(study_uid, series_uid,
                                                                      sop_uid)))


def compute_file(path: Path, study_uid: str, series_uid: str, sop_uid: str) -> bytes:
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise DicomJSONError(f"{path} is empty")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            return compute(m, study_uid, series_uid, sop_uid)


def compute_source(src: Path | io.BytesIO, study_uid: str, series_uid: str, sop_uid: str) -> bytes:
    """:func:`compute` for what the tier-aware read gives: a hot file or restored cold bytes."""
    if isinstance(src, io.BytesIO):
        return compute(src.getbuffer(), study_uid, series_uid, sop_uid)
    return compute_file(src, study_uid, series_uid, sop_uid)


def absolute_uris(blob: bytes, base: bytes) -> bytes:
    """Put the server's DICOMweb base URL in front of the stored relative BulkDataURIs.

    A JSON string value cannot contain the raw bytes ``"BulkDataURI":"`` (its quotes would be
    escaped), so this finds only real BulkDataURI members."""
    if _BULK_KEY not in blob:
        return blob
    return blob.replace(_BULK_KEY, b'"BulkDataURI":"' + base + b"/studies/")


class MetadataCache:
    """The side LMDB environment: SOP Instance UID -> (stored_at, JSON bytes)."""

    def __init__(self, directory: Path, map_size: int = 1 << 40) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.env = lmdb.open(str(directory), map_size=map_size, sync=False, metasync=False,
                             max_dbs=0, readahead=False)

    def close(self) -> None:
        self.env.close()

    def get_many(self, keys: Sequence[tuple[str, float]]) -> list[bytes | None]:
        """The JSON of each (SOP UID, stored_at), None where missing or computed from another
        version of the instance."""
        out: list[bytes | None] = []
        with self.env.begin(buffers=True) as txn:
            for sop, stored_at in keys:
                raw = txn.get(sop.encode())
                if raw is None or _STAMP.unpack_from(raw)[0] != stored_at:
                    out.append(None)
                else:
                    out.append(bytes(raw[_STAMP.size :]))
        return out

    def put_many(self, rows: Sequence[tuple[str, float, bytes]]) -> None:
        with self.env.begin(write=True) as txn:
            for sop, stored_at, blob in rows:
                txn.put(sop.encode(), _STAMP.pack(stored_at) + blob)

    def delete(self, sop_uid: str) -> None:
        with self.env.begin(write=True) as txn:
            txn.delete(sop_uid.encode())


# -- the worker process ------------------------------------------------------------------------

_worker_cache: MetadataCache | None = None


def _worker_init(directory: str) -> None:
    global _worker_cache
    with contextlib.suppress(OSError, AttributeError):  # die with the server, even on kill -9
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    # ingest and serving come first: run only on CPU time nobody else wants (measured on 2
    # cores: at nice 5 the worker cost 4-association ingest a quarter of its throughput)
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (OSError, AttributeError):
        with contextlib.suppress(OSError):
            os.nice(19)
    _worker_cache = MetadataCache(Path(directory))


WarmItem = tuple[str, str, str, str, float]  # (path, study, series, sop, stored_at)


def _warm_batch(items: list[WarmItem]) -> list[tuple[str, str]]:
    """Compute and store the JSON of a batch; returns (sop, error) for what could not be read."""
    assert _worker_cache is not None
    rows, failed = [], []
    for path, study, series, sop, stored_at in items:
        try:
            rows.append((sop, stored_at, compute_file(Path(path), study, series, sop)))
        except (OSError, DicomJSONError, Part10Error) as exc:
            failed.append((sop, str(exc)))  # replaced or moved meanwhile: computed on demand
    if rows:
        _worker_cache.put_many(rows)
    return failed


class MetadataWarmer:
    """Feeds newly stored instances to the worker process in batches, off the ack path."""

    def __init__(self, directory: Path, resolve: Callable[[str], Path], workers: int = 1,
                 quiet_for: Callable[[], float] = lambda: math.inf) -> None:
        self.directory = directory
        self.resolve = resolve  # relative path in the hot store -> absolute path
        self.workers = workers
        #: Seconds since ingest was last busy (0 while a data set is arriving).
        self.quiet_for = quiet_for
        self.dropped = 0
        self._pool: ProcessPoolExecutor | None = None
        self._queue: asyncio.Queue[WarmItem] | None = None
        self._task: asyncio.Task | None = None
        self._pending = 0
        self.warmed = 0

    def enqueue(self, path: str, study: str, series: str, sop: str, stored_at: float) -> None:
        if self.workers <= 0:
            return
        if self._pending >= MAX_BACKLOG:
            self.dropped += 1
            return
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(self._run())
        # the path is resolved when the batch goes out (quiet time), not on the ack path
        self._queue.put_nowait((path, study, series, sop, stored_at))
        self._pending += 1

    async def _run(self) -> None:
        assert self._queue is not None
        while True:
            batch = [await self._queue.get()]
            while (wait := QUIET_S - self.quiet_for()) > 0:
                await asyncio.sleep(wait)
            while len(batch) < _BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            batch = [(str(self.resolve(p)), *rest) for p, *rest in batch]
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    self.workers, mp_context=multiprocessing.get_context("spawn"),
                    initializer=_worker_init, initargs=(str(self.directory),))
            try:
                failed = await asyncio.wrap_future(self._pool.submit(_warm_batch, batch))
            except Exception as exc:  # a dead worker must not stop ingest: log, go on
                log.error("metadata.warm_failed", instances=len(batch), error=repr(exc))
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None
                continue
            finally:
                self._pending -= len(batch)
            self.warmed += len(batch) - len(failed)
            for sop, error in failed:
                log.info("metadata.warm_skipped", sop=sop, error=error)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    @property
    def pending(self) -> int:
        return self._pending

    async def drain(self) -> None:
        """Wait until every queued instance is warmed (tests, benchmarks)."""
        while self._pending:
            await asyncio.sleep(0.01)
