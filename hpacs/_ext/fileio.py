"""Pure-Python twin of ``hpacs._ext._fileio`` (the oracle its tests hold it to).

Same operations through ``os``: each system call releases and re-takes the GIL, which is what
the compiled version avoids (see its docstring).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import mmap
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence

_IOV_MAX = 1024
_SYNC_FILE_RANGE_WRITE = 2


def _load_sync_file_range():
    """libc's sync_file_range through ctypes (Python does not expose it); None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_sync_file_range = _load_sync_file_range()


def write_all(fd: int, chunks: Sequence) -> int:
    """Write the buffers in ``chunks`` in order; returns the byte count (OSError on failure)."""
    views = [memoryview(c).cast("B") for c in chunks]
    total = sum(len(v) for v in views)
    views = [v for v in views if len(v)]
    while views:
        try:
            written = os.writev(fd, views[:_IOV_MAX])
        except InterruptedError:
            continue
        advance(views, written)
    return total


def advance(views: list[memoryview], written: int) -> None:
    """Drop from ``views`` the ``written`` bytes that went out (a partly written view trimmed)."""
    while written and views:
        if written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        else:
            views[0] = views[0][written:]
            written = 0


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing a range to disk, without waiting (Linux; else no-op)."""
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def finish_file(fd: int, temp, final, directory, sync: bool) -> None:
    """fdatasync (if ``sync``) and close ``fd`` (skipped if ``fd`` < 0), rename ``temp`` to
    ``final``, then fsync ``directory`` (if ``sync``) so the new name is durable. ``fd`` is
    closed in every case. An error names the file of the failing step (``temp`` for the
    fdatasync, ``final`` for the rename, ``directory`` for its fsync), as the compiled one's."""
    _finish(fd, temp, final, directory, sync, None)


def _finish(fd: int, temp, final, directory, sync: bool, marks: list | None) -> None:
    """``finish_file``; ``marks`` (if given) gets the time the fdatasync ended."""
    try:
        if fd >= 0:
            try:
                if sync:
                    os.fdatasync(fd)
            finally:
                os.close(fd)
    except OSError as exc:
        raise _named(exc, temp) from None
    if marks is not None:
        marks.append(time.monotonic())
    try:
        os.rename(temp, final)
    except OSError as exc:
        raise _named(exc, final) from None
    if sync:
        try:
            dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as exc:
            raise _named(exc, directory) from None


def _named(exc: OSError, path) -> OSError:
    """``exc`` as ``OSError(errno, strerror, path)`` (the subclass follows the errno)."""
    return OSError(exc.errno, exc.strerror, str(path))

def _pwrite_all(fd: int, views: list, offset: int) -> None:
    """``write_all`` at an explicit offset (os.pwritev, short writes resumed)."""
    views = [v for v in views if len(v)]
    while views:
        try:
            written = os.pwritev(fd, views[:_IOV_MAX], offset)
        except InterruptedError:
            continue
        offset += written
        advance(views, written)


class _FileState:
    __slots__ = ("deferred", "err", "fd", "path", "pending", "t_presynced", "t_written")

    def __init__(self, fd: int, path: str | None) -> None:
        self.pending = 0
        self.err: OSError | None = None
        #: -1 until the first write job creates ``path`` (a ``stream_at`` stream)
        self.fd = fd
        self.path = path
        #: jobs waiting for pending == 0, in order (an early datasync, then commit/discard)
        self.deferred: deque = deque()
        #: traced: when the last write and the early fdatasync ended
        self.t_written = 0.0
        self.t_presynced = 0.0


class Stream:
    """The writes of one temp file on the commit threads, then its commit or discard (the
    compiled one's docstring says why). Buffers are held until the committer's next drain."""

    def __init__(self, owner: Committer, fd: int, path: str | None = None) -> None:
        self._owner = owner
        self._fd = fd
        self._state: _FileState | None = _FileState(fd, path)

    def write(self, parts: Sequence, offset: int, wb_offset: int = 0, wb_length: int = 0) -> int:
        """Queue ``pwritev(fd, parts, offset)``, then ``sync_file_range`` of
        ``(wb_offset, wb_length)`` if ``wb_length``; returns the byte count."""
        state = self._live()
        views = [memoryview(p).cast("B") for p in parts]
        total = sum(len(v) for v in views)
        job = ("write", state, self._fd, views, offset, total, wb_offset, wb_length)
        with self._owner._cond:
            state.pending += 1
            self._owner.pending_bytes += total
            self._owner._todo.append(job)
            self._owner._cond.notify()
        return total

    def commit(self, token: int, temp, final, directory, sync: bool) -> None:
        """Once every write finished: ``finish_file(fd, temp, final, directory, sync)``,
        reported by ``drain`` under ``token`` (>= 0); a failed write is reported instead
        (named after ``temp``), nothing renamed. The fd now belongs to the job."""
        if token < 0:
            raise ValueError("token must be >= 0")
        self._end((token, self._fd, os.fsdecode(temp), os.fsdecode(final),
                   os.fsdecode(directory), sync))

    def discard(self, temp) -> None:
        """Once every write finished: close the fd and unlink ``temp``; not reported."""
        self._end((-1, self._fd, os.fsdecode(temp), "", "", False))

    def _live(self) -> _FileState:
        if self._state is None:
            raise RuntimeError("stream is committed or discarded")
        if self._owner.closed:
            raise RuntimeError("committer is closed")
        return self._state

    def presync(self) -> None:
        """Once the writes so far are done, ``fdatasync`` the file on a commit thread, ahead
        of the commit (which waits for it). Not reported; a failure only loses the head
        start."""
        state = self._live()
        with self._owner._cond:
            self._owner._defer_or_queue(state, ("datasync", state, self._fd))

    def _end(self, job: tuple) -> None:
        state = self._live()
        self._state = None
        with self._owner._cond:
            self._owner._defer_or_queue(state, ("end", state, *job))


class Committer:
    """``finish_file`` jobs run by ``threads`` threads; completions come back through an eventfd
    (the compiled version's threads never take the GIL; these take it per system call)."""

    def __init__(self, threads: int = 4) -> None:
        if threads < 1:
            raise ValueError("threads must be >= 1")
        self._cond = threading.Condition()
        self._todo: deque = deque()
        self._done: list = []
        self._notified = False
        self._stopping = False
        self.closed = False
        #: Bytes handed to stream writes and not written yet (all streams).
        self.pending_bytes = 0
        #: Time each stream commit's steps into ``traces``: (token, last write ended, early
        #: fdatasync ended, commit taken by a thread, its fdatasync ended, directory fsync
        #: ended), ``time.monotonic`` seconds, 0.0 for a step that did not happen.
        self.trace = False
        self.traces: list[tuple] = []
        self._traced: list[tuple] = []  # (condition held) not drained yet
        self._efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._threads = [threading.Thread(target=self._work, name="hpacs-commit", daemon=True)
                         for _ in range(threads)]
        for t in self._threads:
            t.start()

    def fileno(self) -> int:
        """The eventfd that becomes readable when completions are waiting."""
        return self._efd

    def submit(self, token: int, fd: int, temp, final, directory, sync: bool) -> None:
        """Queue ``finish_file(fd, temp, final, directory, sync)``; ``fd`` now belongs to the
        job (closed in every case)."""
        if self.closed:
            raise RuntimeError("committer is closed")
        job = (token, fd, os.fsdecode(temp), os.fsdecode(final), os.fsdecode(directory), sync)
        with self._cond:
            self._todo.append(job)
            self._cond.notify()

    def writeback(self, fd: int, offset: int, length: int) -> None:
        """Start writeback of a range of ``fd`` on a thread, through a duplicate of ``fd`` (the
        caller may close or commit the file meanwhile). No completion is reported."""
        if self.closed:
            raise RuntimeError("committer is closed")
        try:
            copy = os.dup(fd)
        except OSError:
            return
        with self._cond:
            self._todo.append((None, copy, offset, length))
            self._cond.notify()

    def stream(self, fd: int) -> Stream:
        """A :class:`Stream` writing ``fd`` on these threads (the caller keeps ``fd`` open
        until it hands it to the stream's ``commit`` or ``discard``)."""
        if self.closed:
            raise RuntimeError("committer is closed")
        return Stream(self, fd)

    def stream_at(self, path) -> Stream:
        """A :class:`Stream` of a new file at ``path``, created (O_EXCL) by the thread of its
        first write; a failure to create it fails the commit like a failed write."""
        if self.closed:
            raise RuntimeError("committer is closed")
        return Stream(self, -1, os.fsdecode(path))

    def drain(self) -> list[tuple[int, OSError | None]]:
        """Every completion since the last call, in completion order."""
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self._efd)
        with self._cond:
            done, self._done = self._done, []
            self._notified = False
            if self._traced:
                self.traces += self._traced
                self._traced = []
        return [d for d in done if d[0] >= 0]  # discards are not reported

    def close(self) -> list[tuple[int, OSError | None]]:
        """Finish every queued job, stop the threads, close the eventfd; returns the
        completions not drained yet (like ``drain``)."""
        if self.closed:
            return []
        self.closed = True
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for t in self._threads:
            t.join()
        done = self.drain()
        os.close(self._efd)
        return done

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._todo and not self._stopping:
                    self._cond.wait()
                if not self._todo:
                    return
                job = self._todo.popleft()
            if job[0] is None:  # writeback
                _, fd, offset, length = job
                start_writeback(fd, offset, length)
                os.close(fd)
                continue
            if job[0] == "write":
                self._write(job)
                continue
            if job[0] == "datasync":
                _, state, _fd = job
                fd = state.fd
                if state.err is None and fd >= 0:
                    with contextlib.suppress(OSError):
                        os.fdatasync(fd)
                if self.trace:
                    state.t_presynced = time.monotonic()
                with self._cond:
                    self._settled(state)
                continue
            state = None
            if job[0] == "end":  # a stream's commit or discard: its writes are all done
                state, job = job[1], job[2:]
            token, fd, temp, final, directory, sync = job
            if state is not None:
                fd = state.fd
            error, trace = None, None
            if state is not None and state.err is not None:
                if fd >= 0:
                    os.close(fd)
                if token < 0:
                    with contextlib.suppress(OSError):
                        os.unlink(temp)
                error = _named(state.err, temp)
            elif token < 0:
                if fd >= 0:
                    os.close(fd)
                with contextlib.suppress(OSError):
                    os.unlink(temp)
            else:
                traced = self.trace and state is not None
                start = time.monotonic() if traced else 0.0
                marks: list | None = [] if traced else None
                try:
                    _finish(fd, temp, final, directory, sync, marks)
                except OSError as exc:
                    error = exc
                if traced:
                    trace = (token, state.t_written, state.t_presynced,  # type: ignore[union-attr]
                             start, marks[0] if marks else 0.0, time.monotonic())
            with self._cond:
                self._done.append((token, error))
                if trace is not None:
                    self._traced.append(trace)
                notify = not self._notified
                self._notified = True
            if notify:
                os.eventfd_write(self._efd, 1)

    def _write(self, job: tuple) -> None:
        _, state, fd, views, offset, total, wb_offset, wb_length = job
        with self._cond:  # the first write creates the file (once: writes run on any thread)
            if state.fd < 0 and state.path is not None and state.err is None:
                try:
                    state.fd = os.open(state.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                                       | os.O_CLOEXEC, 0o644)
                except OSError as exc:
                    state.err = exc
            fd, error = state.fd, state.err
        if error is None:  # after a failed write, later ones are skipped
            try:
                _pwrite_all(fd, views, offset)
                if wb_length:
                    start_writeback(fd, wb_offset, wb_length)
            except OSError as exc:
                error = exc
        if self.trace:
            state.t_written = time.monotonic()
        with self._cond:
            if error is not None and state.err is None:
                state.err = error
            self.pending_bytes -= total
            self._settled(state)

    def _defer_or_queue(self, state: _FileState, job: tuple) -> None:
        """(Condition held.) Queue ``job`` once ``state`` has nothing pending or deferred."""
        if state.pending or state.deferred:
            state.deferred.append(job)
            return
        if job[0] == "datasync":
            state.pending += 1  # the commit waits for it
        self._todo.append(job)
        self._cond.notify()

    def _settled(self, state: _FileState) -> None:
        """(Condition held.) One job of ``state`` finished: release what waited for it."""
        state.pending -= 1
        if not state.pending and state.deferred:
            job = state.deferred.popleft()
            if job[0] == "datasync":
                state.pending += 1  # what is deferred behind it waits for it in turn
            self._todo.append(job)
            self._cond.notify()


# -- page-cache residency (hpacs.net.filesend) ----------------------------------------------

def _mman_calls():
    """libc's mmap/mincore/munmap through ctypes (Python exposes no mincore); None elsewhere."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        mmap_, mincore, munmap = libc.mmap, libc.mincore, libc.munmap
    except (OSError, AttributeError):
        return None
    mmap_.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                      ctypes.c_int, ctypes.c_int64]
    mmap_.restype = ctypes.c_void_p
    mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    mincore.restype = ctypes.c_int
    munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    munmap.restype = ctypes.c_int
    return mmap_, mincore, munmap


_LIBC = _mman_calls()
_MAP_FAILED = ctypes.c_void_p(-1).value
_PAGE = mmap.PAGESIZE
_vec = ctypes.create_string_buffer(1024)


def resident(fd: int, size: int) -> bool:
    """True when the first ``size`` bytes of the file are all in the page cache (reading
    them cannot wait for the disk). False when unknown (no mincore here)."""
    global _vec
    if _LIBC is None or size <= 0:
        return False
    mmap_, mincore, munmap = _LIBC
    addr = mmap_(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    if addr is None or addr == _MAP_FAILED:
        return False
    try:
        pages = (size + _PAGE - 1) // _PAGE
        if len(_vec) < pages:
            _vec = ctypes.create_string_buffer(pages * 2)
        if mincore(addr, size, _vec) != 0:
            return False
        # bit 0 of each byte: that page is resident
        return b"\x00" not in ctypes.string_at(_vec, pages).translate(_LOW_BIT)
    finally:
        munmap(addr, size)


_LOW_BIT = bytes(b & 1 for b in range(256))
#: Whether :func:`resident` can say yes here (the compiled module: always, Linux).
MINCORE = _LIBC is not None
