"""The single index writer: an asyncio task doing group commit.

Every ``submit`` enqueues a record and awaits a future. The task takes everything queued (up to
``max_batch``) and applies it in ONE LMDB write transaction, then resolves all the futures.
While one commit runs, the next batch accumulates: the batch size adapts to the load by itself,
no timer. In "sync" mode the transaction runs on a dedicated single thread (an fsync'd commit
costs milliseconds: the loop must not wait for it). In "files" mode a commit does no I/O wait
(~0.1 ms), so it runs inline in the task, saving two thread hops on every acknowledgement;
only the periodic ``env.sync`` goes to the thread.

Durability ("files" vs "sync") and the checkpoint:
- "sync": the env fsyncs on every commit; a future resolves only once its record is durable.
  The checkpoint is written in every transaction (free: it is durable with it).
- "files": commits are not fsynced (the fsynced stored files are the log). Every
  ``sync_interval`` the writer stores ``checkpoint`` T = min(stored_at of every record queued but
  not yet committed, now, ``floor()``) inside a transaction, then ``env.sync(True)``. No record
  with stored_at < T is uncommitted, so recovery re-indexes the files stored at or after T.
  Records stored but not yet submitted are invisible here: the store layer must submit right
  after the rename or report its in-flight minimum through ``floor``.
- ``start()`` clears meta "clean" (durably) after reading it into :attr:`was_clean`; ``stop()``
  drains, commits, syncs and sets it: a missing flag at start means a crash.

Besides records, the writer runs *operations* (``run(fn)``: ``fn(batch)`` inside the same group
commit, for the tier moves and access-time flushes of the lifecycle) so the index keeps ONE
writer; ``sync()`` makes everything committed so far durable (env.sync on the writer thread),
which a migration needs before it deletes a hot file.

A failing transaction (MapFullError, disk full...) fails its batch with :class:`IndexWriteError`;
when the batch held several records they are retried one per transaction first, so one poisonous
record fails alone. The writer keeps running either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec

from hpacs.index.db import DURABILITY_MODES, IndexDB, WriteBatch
from hpacs.index.schema import InstanceRecord


class IndexWriteError(RuntimeError):
    """The index could not commit a record (the instance must not be acknowledged)."""


class CommitResult(msgspec.Struct, frozen=True):
    """What ``submit`` returns once the record is committed."""

    previous: InstanceRecord | None  # the record stored before under this SOP Instance UID


@dataclass
class WriterStats:
    commits: int = 0  # write transactions committed (batches, checkpoints, retries)
    records: int = 0  # records committed
    syncs: int = 0  # explicit env.sync calls (files-mode checkpoints, stop)
    failed_batches: int = 0
    failed_records: int = 0


#: An operation run inside a write transaction; its return value resolves its future.
Operation = Callable[[WriteBatch], Any]
_Item = tuple[InstanceRecord | Operation, "asyncio.Future[Any]"]
T = TypeVar("T")


class IndexWriter:
    def __init__(
        self,
        db: IndexDB,
        durability: str | None = None,
        sync_interval: float = 1.0,
        max_batch: int = 512,
        max_queue: int = 4096,
        floor: Callable[[], float | None] | None = None,
    ) -> None:
        durability = durability or db.durability
        if durability not in DURABILITY_MODES:
            raise ValueError(f"durability must be one of {DURABILITY_MODES}")
        self.db = db
        self.durability = durability
        # a "sync" writer on an env opened for "files" must sync explicitly after each commit
        self._explicit_sync = durability == "sync" and db.durability != "sync"
        self.sync_interval = sync_interval
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.floor = floor
        self.stats = WriterStats()
        self.was_clean: bool | None = None
        self._pending: deque[_Item] = deque()
        self._slots = asyncio.Semaphore(max_queue)
        self._wakeup = asyncio.Event()
        self._executor: ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._dirty = False  # committed since the last durable checkpoint
        self._flush_scheduled = False
        self._next_checkpoint = 0.0

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="hpacs-index-writer")
        self.was_clean = self.db.meta_get("clean")
        await loop.run_in_executor(self._executor, self._mark, False)
        self._next_checkpoint = loop.time() + self.sync_interval
        self._task = asyncio.create_task(self._run(), name="hpacs-index-writer")

    async def stop(self) -> None:
        """Drain the queue, commit, sync, and mark the index cleanly shut down."""
        if self._task is None or self._executor is None:
            return
        self._stopping = True
        self._wakeup.set()
        await self._task
        await asyncio.get_running_loop().run_in_executor(self._executor, self._mark, True)
        self._executor.shutdown(wait=True)
        self._task = None
        self._executor = None

    def _mark(self, clean: bool) -> None:
        with self.db.env.begin(write=True) as txn:
            if clean:
                self.db.meta_set("checkpoint", time.time(), txn=txn)
            self.db.meta_set("clean", clean, txn=txn)
        self.db.env.sync(True)
        self.stats.commits += 1
        self.stats.syncs += 1

    # ------------------------------------------------------------------ submit
    async def submit(self, record: InstanceRecord) -> CommitResult:
        """Queue ``record``; returns once the transaction holding it committed (and, in "sync"
        mode, is on disk). Raises IndexWriteError if it could not be committed."""
        return await self._enqueue(record)

    def commit_now(self, record: InstanceRecord) -> CommitResult | None:
        """Files mode with nothing queued: commit ``record`` in a transaction of its own, now.
        On one association the ack chain then skips ``submit``'s future, scheduled flush and
        the caller's wake-up (~50 µs per instance); callers use it only when no other record
        is about to come (a batch would save more). None when it cannot (another mode, records
        queued before it, stopping): ``submit`` then. Raises IndexWriteError like ``submit``."""
        if (self.durability != "files" or self._pending or self._flush_scheduled
                or self._stopping or self._task is None or self._slots.locked()):
            return None
        try:
            (prev,) = self._commit([record], None, False)
        except Exception as exc:  # the txn was aborted: nothing of it is visible
            self.stats.failed_batches += 1
            self.stats.failed_records += 1
            err = IndexWriteError(f"index commit failed for {record.sop_instance_uid}: {exc!r}")
            raise err from exc
        self._mark_dirty()
        return CommitResult(prev)

    async def run(self, op: Callable[[WriteBatch], T]) -> T:
        """Run ``op(batch)`` in a write transaction (with whatever else is queued) and return
        its result once committed. Raises IndexWriteError if the transaction failed."""
        return await self._enqueue(op)

    async def sync(self) -> None:
        """Make every commit so far durable (a no-op cost in "sync" mode, ~ms in "files")."""
        if self._executor is None:
            raise IndexWriteError("index writer is not running")
        await asyncio.get_running_loop().run_in_executor(self._executor, self._sync)

    async def _enqueue(self, item: Any) -> Any:
        if self._stopping or self._task is None:
            raise IndexWriteError("index writer is not running")
        await self._slots.acquire()  # backpressure: at most max_queue records in flight
        if self._stopping:
            self._slots.release()
            raise IndexWriteError("index writer is stopping")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._pending.append((item, fut))
        if self.durability == "files":
            # A commit costs no I/O wait here: every record submitted during this loop
            # iteration goes into one transaction right after it (no task or thread hop).
            if not self._flush_scheduled:
                self._flush_scheduled = True
                loop.call_soon(self._flush)
        else:
            self._wakeup.set()
        return await fut

    def _flush(self) -> None:
        """Files mode: commit everything pending, inline, in batches of max_batch."""
        self._flush_scheduled = False
        while self._pending:
            n = min(len(self._pending), self.max_batch)
            batch = [self._pending.popleft() for _ in range(n)]
            try:
                results = self._commit([r for r, _ in batch], None, False)
            except Exception as exc:  # the txn was aborted: nothing of it is visible
                self.stats.failed_batches += 1
                for item in batch:  # retry one per transaction: a bad record fails alone
                    try:
                        (prev,) = self._commit([item[0]], None, False)
                    except Exception as one_exc:
                        self._fail(item, one_exc if len(batch) > 1 else exc)
                    else:
                        self._resolve(item, prev)
                continue
            for item, prev in zip(batch, results, strict=True):
                self._resolve(item, prev)
        self._mark_dirty()

    def _mark_dirty(self) -> None:
        """Files mode: something was committed since the last checkpoint."""
        if not self._dirty:
            # the task waits without a timeout only while clean: wake it to time the next
            # checkpoint. Waking it on every flush cost a wait_for (a Task) per instance.
            self._dirty = True
            self._wakeup.set()

    def _resolve(self, item: _Item, prev: Any) -> None:
        if not item[1].done():
            item[1].set_result(CommitResult(prev) if isinstance(item[0], InstanceRecord)
                               else prev)
        self._slots.release()

    @property
    def queued(self) -> int:
        return len(self._pending)

    # ------------------------------------------------------------------ the task
    def _checkpoint_value(self) -> float:
        t = time.time()
        for rec, _ in self._pending:
            if isinstance(rec, InstanceRecord) and rec.stored_at < t:
                t = rec.stored_at
        if self.floor is not None:
            f = self.floor()
            if f is not None and f < t:
                t = f
        return t

    async def _run(self) -> None:
        if self.durability == "files":
            await self._run_checkpoints()
        else:
            await self._run_sync_commits()

    async def _run_checkpoints(self) -> None:
        """Files mode: records are committed by ``_flush``; this task only makes the index
        durable every sync_interval (checkpoint + env.sync on the thread)."""
        loop = asyncio.get_running_loop()
        while not self._stopping:
            timeout = max(0.0, self._next_checkpoint - loop.time()) if self._dirty else None
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout)
            if self._dirty and loop.time() >= self._next_checkpoint:
                await self._checkpoint(loop)
        self._flush()

    async def _checkpoint(self, loop: asyncio.AbstractEventLoop) -> None:
        # clean from here on unless it fails: a flush during the sync makes it dirty again
        # (and so schedules the next checkpoint) instead of being forgotten
        self._dirty = False
        try:
            self._commit([], self._checkpoint_value(), False)
            await loop.run_in_executor(self._executor, self._sync)
        except Exception:  # retry at the next interval, never spin on it
            self.stats.failed_batches += 1
            self._dirty = True
        self._next_checkpoint = loop.time() + self.sync_interval

    async def _run_sync_commits(self) -> None:
        """Sync mode: group commit on the thread, every commit fsync'd."""
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                if self._stopping:
                    break
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            n = min(len(self._pending), self.max_batch)
            batch = [self._pending.popleft() for _ in range(n)]
            records = [r for r, _ in batch]
            try:
                results = await loop.run_in_executor(
                    self._executor, self._commit, records, self._checkpoint_value(), False
                )
            except Exception as exc:  # the txn was aborted: nothing of it is visible
                self.stats.failed_batches += 1
                if len(batch) > 1:
                    await self._retry_one_by_one(batch)
                else:
                    self._fail(batch[0], exc)
                continue
            for item, prev in zip(batch, results, strict=True):
                self._resolve(item, prev)

    async def _retry_one_by_one(self, batch: list[_Item]) -> None:
        loop = asyncio.get_running_loop()
        for item in batch:
            try:
                (prev,) = await loop.run_in_executor(
                    self._executor, self._commit, [item[0]], None, False
                )
            except Exception as exc:
                self._fail(item, exc)
                continue
            self._resolve(item, prev)

    def _fail(self, item: _Item, exc: Exception) -> None:
        self.stats.failed_records += 1
        fut = item[1]
        if not fut.done():
            what = item[0].sop_instance_uid if isinstance(item[0], InstanceRecord) else "an update"
            err = IndexWriteError(f"index commit failed for {what}: {exc!r}")
            err.__cause__ = exc
            fut.set_exception(err)
        self._slots.release()

    def _sync(self) -> None:
        self.db.env.sync(True)
        self.stats.syncs += 1

    def _commit(
        self, records: list[InstanceRecord | Operation], checkpoint: float | None, sync: bool
    ) -> list[Any]:
        """One transaction for the whole batch (on the writer thread, or inline in "files"
        mode where it does no I/O wait)."""
        db = self.db
        with db.write() as w:
            results = [db.apply(w, r) if isinstance(r, InstanceRecord) else r(w)
                       for r in records]
            if checkpoint is not None:
                db.meta_set("checkpoint", checkpoint, txn=w.txn)
        self.stats.commits += 1
        self.stats.records += len(records)
        if sync or self._explicit_sync:
            db.env.sync(True)
            self.stats.syncs += 1
        return results
