"""A process pool for transcoding, so codecs never hold the event loop's GIL.

Why processes: pydicom's codecs (CharLS, OpenJPEG, libjpeg) keep the GIL for a whole frame.
Measured on a 512x512 CT with a thread transcoding beside a thread doing ``sleep(1 ms)``: the
sleeper's p99 went from 1.3 ms to 55 ms (JPEG-LS encode), 150 ms (JPEG 2000 encode) and 145 ms
(JPEG 2000 decode) -- in a thread executor that is how long the asyncio loop would stall. In
worker processes it does not stall at all; the price is pickling the data set bytes back
(~0.5 MB per CT slice) and starting the workers (``spawn``: a fork of a process with running
threads and an open LMDB environment is not safe) on first use.

``pixels.transcode_workers`` sets the pool size; 0 runs transcoding in the loop's default
thread executor instead. The pool is created on first use and shut down by
``concurrent.futures`` at interpreter exit.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import partial

from hpacs.pixels.transcode import Source, TranscodeError, transcode

__all__ = ["run_transcode", "transcoded_dataset", "transcoded_part10"]

_pool: ProcessPoolExecutor | None = None
_lock = threading.Lock()


def _executor(workers: int) -> Executor | None:
    """The process pool (created once, with the first caller's size); None: threads."""
    global _pool
    if workers <= 0:
        return None
    with _lock:
        if _pool is None:
            _pool = ProcessPoolExecutor(max_workers=workers,
                                        mp_context=multiprocessing.get_context("spawn"))
        return _pool


def transcoded_dataset(source: Source, target: str, allow_lossy: bool) -> bytes:
    """The data set of ``source`` in ``target`` (what runs in a worker)."""
    return transcode(source, target, allow_lossy=allow_lossy).dataset


def transcoded_part10(source: Source, target: str, allow_lossy: bool) -> bytes:
    """The Part 10 file of ``source`` in ``target`` (what runs in a worker)."""
    return transcode(source, target, allow_lossy=allow_lossy).part10()


async def run_transcode(func, source, target: str, *, allow_lossy: bool = False,
                        workers: int = 2) -> bytes:
    """``func(source, target, allow_lossy)`` (one of the two above) off the loop: in the process
    pool, or the default thread executor when ``workers`` is 0. Raises TranscodeError."""
    global _pool
    loop = asyncio.get_running_loop()
    call = partial(func, str(source) if not isinstance(source, bytes) else source, target,
                   allow_lossy)
    try:
        return await loop.run_in_executor(_executor(workers), call)
    except BrokenProcessPool as exc:  # a worker died (killed, out of memory): a new pool next
        with _lock:
            _pool = None
        raise TranscodeError(f"transcoding worker died: {exc}") from exc
