"""Pure-Python twin of ``hpacs._ext._fileio`` (the oracle its tests hold it to).

Same operations through ``os``: each system call releases and re-takes the GIL, which is what
the compiled version avoids (see its docstring).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys
import threading
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
        while written and views:
            if written >= len(views[0]):
                written -= len(views[0])
                views.pop(0)
            else:
                views[0] = views[0][written:]
                written = 0
    return total


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing a range to disk, without waiting (Linux; else no-op)."""
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def finish_file(fd: int, temp, final, directory, sync: bool) -> None:
    """fdatasync (if ``sync``) and close ``fd`` (skipped if ``fd`` < 0), rename ``temp`` to
    ``final``, then fsync ``directory`` (if ``sync``) so the new name is durable. ``fd`` is
    closed in every case. An error names the file of the failing step (``temp`` for the
    fdatasync, ``final`` for the rename, ``directory`` for its fsync), as the compiled one's."""
    try:
        if fd >= 0:
            try:
                if sync:
                    os.fdatasync(fd)
            finally:
                os.close(fd)
    except OSError as exc:
        raise _named(exc, temp) from None
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

    def drain(self) -> list[tuple[int, OSError | None]]:
        """Every completion since the last call, in completion order."""
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self._efd)
        with self._cond:
            done, self._done = self._done, []
            self._notified = False
        return done

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
            token, fd, temp, final, directory, sync = job
            error = None
            try:
                finish_file(fd, temp, final, directory, sync)
            except OSError as exc:
                error = exc
            with self._cond:
                self._done.append((token, error))
                notify = not self._notified
                self._notified = True
            if notify:
                os.eventfd_write(self._efd, 1)
