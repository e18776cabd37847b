"""Pure-Python twin of ``hpacs._ext._fileio`` (the oracle its tests hold it to).

Same operations through ``os``: each system call releases and re-takes the GIL, which is what
the compiled version avoids (see its docstring).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
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
    closed in every case."""
    if fd >= 0:
        try:
            if sync:
                os.fdatasync(fd)
        finally:
            os.close(fd)
    os.replace(temp, final)
    if sync:
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
