"""Start writing a file's dirty pages to disk while the rest of it is still arriving.

A C-STORE is acknowledged only after fsync; if the first 90% of a data set is already on its
way to disk when the last fragment lands, that fsync has little left to wait for. Linux's
``sync_file_range(SYNC_FILE_RANGE_WRITE)`` starts that writeback without waiting for it. Python
does not expose it, so it is called through ctypes; elsewhere this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

SYNC_FILE_RANGE_WRITE = 2


def _load():
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


_sync_file_range = _load()
AVAILABLE = _sync_file_range is not None


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to begin writing ``length`` bytes at ``offset`` (never blocks on I/O;
    a failure only loses the head start: the fsync that follows is what counts)."""
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WRITE)
