"""One temp file of the hot store, written while the data set is still arriving.

With the C commit threads (``commits``, every C-STORE and STOW), each batch of fragments is one
write job of a ``Stream`` on their writer thread (``pwritev`` at its offset, plus the writeback
of the range it completes; the first one also creates the temp file): the event loop spends
neither the page-cache copy (~0.25 ms per 526 KB slice, the largest kernel item on the loop),
nor the inode allocation of the temp file, nor a wake-up per writeback step, and no Python
thread takes the GIL. The buffers stay referenced until written (the receive buffer's reference
check in net/dimse_server.py then hands the transport another one).

Without them (and in the tests' executor variant), fragments up to ``INLINE_MAX`` bytes are
written by the event loop itself (a write lands in the page cache in ~40 µs per 128 KiB here)
so that no Python thread takes the GIL per fragment: on this 2-core VM those hand-offs between
the loop and I/O threads were the latency of the ingest path. Kernel writeback is started as
the file grows, so the final fsync has little left to wait for. What can block for long goes
to a thread, in order: fragments larger than ``INLINE_MAX`` (a data set handed over whole),
after which later fragments queue behind them, and the commit (fdatasync, rename, directory
fsync: one GIL-free call, store/fileio.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Executor

from hpacs.store.commits import Commits
from hpacs.store.fileio import Stream, start_writeback, write_all
from hpacs.store.hot import HotStore

#: Start kernel writeback every this many bytes.
WRITEBACK_STEP = 256 * 1024
#: Larger fragments are written by a thread, not by the loop.
INLINE_MAX = 1 << 20


class _Commit:
    __slots__ = ("future", "loop", "relative")

    def __init__(self, relative: str, loop: asyncio.AbstractEventLoop) -> None:
        self.relative = relative
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()


_DISCARD = object()


class FileSink:
    """Ordered, asynchronous writes of one file. ``write`` and ``discard`` never block."""

    #: The instance's trace record (store/trace.py), set by the receiver when tracing.
    trace: dict | None = None

    def __init__(self, hot: HotStore, executor: Executor, commits: Commits | None = None) -> None:
        self.hot = hot
        self.executor = executor
        self.commits = commits
        self.error: OSError | None = None
        self._queued = 0
        #: The C write path, once the first fragment went to it (then every one does).
        self._stream: Stream | None = None
        self._queue: deque = deque()
        self._lock = threading.Lock()
        self._running = False
        self._fd: int | None = None
        self._temp: str | None = None
        self._written = 0
        self._flushed = 0
        self._closed = False

    # -- loop side ----------------------------------------------------------------------------
    @property
    def queued_bytes(self) -> int:
        """Bytes handed over and not written yet (on the C path: of every file, which is what
        a reader pausing for the disk wants to know)."""
        if self._stream is not None:
            return self._queued + self.commits.pending_bytes  # type: ignore[union-attr]
        return self._queued

    def write(self, data: bytes | memoryview) -> None:
        """Append ``data`` (which must stay unchanged until written: it may be queued)."""
        self.write_parts((data,))

    def write_parts(self, parts: Sequence[bytes | memoryview], last: bool = False) -> int:
        """Append consecutive buffers (one writev); returns their total size. Same rules as
        ``write``: they must stay unchanged until written. ``last``: no more data follows, so
        no writeback is started for the tail (the file's fdatasync, next, submits it anyway:
        one system call less between the last fragment and the data on disk)."""
        size = len(parts[0]) if len(parts) == 1 else sum(len(p) for p in parts)
        if self._closed or self.error is not None or not size:
            return size
        if self.commits is not None and not self._running and not self._queue:
            try:
                if self._stream is None:  # the writer thread creates the file
                    self._temp = self.hot.temp_name()
                    self._stream = self.commits.stream_at(self._temp)
                written = self._written + size
                wb_offset = wb_length = 0
                if self.hot.fsync and not last and written - self._flushed >= WRITEBACK_STEP:
                    wb_offset, wb_length = self._flushed, written - self._flushed
                    self._flushed = written
                self._stream.write(parts, self._written, wb_offset, wb_length)
                self._written = written
            except OSError as exc:
                self.error = exc
                self._drop()
            return size
        if self._running or self._queue or size > INLINE_MAX:
            for p in parts:
                if len(p):
                    self._put(p, len(p))
            return size
        # no thread owns the file now (_running is cleared only after its last operation)
        try:
            if self._fd is None:
                self._fd, self._temp = self.hot.open_temp()
            write_all(self._fd, parts)
            self._wrote(size)
        except OSError as exc:
            self.error = exc
            self._drop()
        return size

    def presync(self) -> None:
        """The last fragment is in: start the file's fdatasync now (C path only), so it runs
        while the caller validates the data set; ``commit`` waits for it and syncs again
        (nearly nothing left)."""
        if (self._stream is not None and self.hot.fsync and self.error is None
                and not self._closed):
            self._stream.presync()

    def discard(self) -> None:
        """Drop the file (whatever was queued is not written)."""
        if not self._closed:
            self._closed = True
            if self._running or self._queue:
                self._put(_DISCARD, 0)
            else:
                self._drop()

    def commit(self, relative: str) -> asyncio.Future[None]:
        """Once everything queued is written: fsync, rename to ``relative``, fsync the
        directory. The future fails with the first OSError met on the way."""
        self._closed = True
        if self._running or self._queue or self.commits is None:
            item = _Commit(relative, asyncio.get_running_loop())
            self._put(item, 0)
            return item.future
        # no thread owns the file: hand it to the commit threads directly
        if self.error is None:
            try:
                if self._fd is None and self._stream is None:  # nothing was written
                    self._fd, self._temp = self.hot.open_temp()
                fd, temp, stream = self._fd, self._temp, self._stream
                # the commit owns (and removes on failure) both
                self._fd = self._temp = self._stream = None
                return self.commits.commit(-1 if fd is None else fd, temp, relative, stream,
                                           self.trace)
            except OSError as exc:
                self.error = exc
                self._drop()
        future = asyncio.get_running_loop().create_future()
        future.set_exception(self.error)
        return future

    def _put(self, item: object, size: int) -> None:
        with self._lock:
            self._queue.append(item)
            self._queued += size
            if self._running:
                return
            self._running = True
        self.executor.submit(self._drain)

    def _wrote(self, size: int) -> None:
        self._written += size
        if self.hot.fsync and self._written - self._flushed >= WRITEBACK_STEP:
            if self.commits is not None:  # submitted by a commit thread, not by the loop
                self.commits.writeback(self._fd, self._flushed, self._written - self._flushed)
            else:
                start_writeback(self._fd, self._flushed, self._written - self._flushed)
            self._flushed = self._written

    # -- worker side --------------------------------------------------------------------------
    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._queue:
                    self._running = False
                    return
                item = self._queue.popleft()
                if not isinstance(item, _Commit) and item is not _DISCARD:
                    # take every data fragment queued so far: one writev for all of them
                    chunks = [item]
                    while self._queue and _is_data(self._queue[0]):
                        chunks.append(self._queue.popleft())
                    item = chunks
            try:
                if isinstance(item, _Commit):
                    self._do_commit(item)
                elif item is _DISCARD:
                    self._drop()
                else:
                    size = self._do_write(item)
                    with self._lock:
                        self._queued -= size
            except Exception as exc:  # a bug must fail this instance, not hang its association
                self.error = self.error or OSError(errno.EIO, f"I/O worker failed: {exc!r}")
                with contextlib.suppress(Exception):
                    self._drop()
                if isinstance(item, _Commit):
                    item.loop.call_soon_threadsafe(_settle, item.future, self.error)

    def _do_write(self, chunks: list) -> int:
        size = sum(len(c) for c in chunks)
        if self.error is not None:
            return size
        try:
            if self._fd is None:
                self._fd, self._temp = self.hot.open_temp()
            write_all(self._fd, chunks)
            self._wrote(size)
        except OSError as exc:
            self.error = exc
            self._drop()
        return size

    def _do_commit(self, item: _Commit) -> None:
        error = self.error
        if error is None:
            try:
                if self._fd is None:
                    self._fd, self._temp = self.hot.open_temp()
                fd, self._fd = self._fd, None
                self.hot.commit(fd, self._temp, item.relative)
            except OSError as exc:
                error = exc
                self._drop()
        item.loop.call_soon_threadsafe(_settle, item.future, error)

    def _drop(self) -> None:
        if self._stream is not None:  # closed and removed once its writes are done
            stream, self._stream = self._stream, None
            if self._temp is not None:
                try:
                    stream.discard(self._temp)
                except RuntimeError:  # the committer is closed: its writes are all done
                    self.hot.discard(self._fd, self._temp)
        elif self._temp is not None:
            self.hot.discard(self._fd, self._temp)
        self._fd = None
        self._temp = None


def _settle(future: asyncio.Future[None], error: OSError | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


def _is_data(item: object) -> bool:
    return item is not _DISCARD and not isinstance(item, _Commit)

