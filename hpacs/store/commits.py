"""The per-instance commit of the hot store (fdatasync, close, rename, directory fsync) without
an executor hand-off.

Through a ``ThreadPoolExecutor`` each commit cost the loop a ``submit`` (a Future, a work item and
a ``SimpleQueue.put`` waking a Python thread: 22 % of the loop's GIL samples under load), then the
thread had to take the GIL to start and again to ``call_soon_threadsafe`` the answer back. Here
the jobs go to C threads that never take the GIL (``store.fileio.Committer``); they answer
through an eventfd the loop watches with ``add_reader``, written once per batch of completions,
so one wake-up of the loop settles every commit finished meanwhile.

A future resolves only once the file and its directory entry are on disk (when the store
fsyncs): acknowledgements stay durable. A rename that finds its directory missing (the first
instance of a series, or a directory pruned meanwhile) is finished in ``executor``, which
creates the directories under the store's lock.
"""

from __future__ import annotations

import asyncio
import functools
import os
from concurrent.futures import Executor

from hpacs.store import trace
from hpacs.store.fileio import Committer, Stream
from hpacs.store.hot import HotStore

#: Commit threads: each one waits on one fdatasync at a time; 8 covers 8 associations.
COMMIT_THREADS = 8


class Commits:
    """Commit jobs of one hot store, answered on the event loop that submitted them."""

    def __init__(self, hot: HotStore, executor: Executor, threads: int = COMMIT_THREADS) -> None:
        self.hot = hot
        self.executor = executor
        self.threads = threads
        self._impl: Committer | None = Committer(threads)
        self._impl.trace = trace.ON
        #: token -> trace record of every traced job not answered yet (store/trace.py)
        self._traces: dict[int, dict] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        #: token -> (future, temp path, relative path) of every job not answered yet
        self._waiting: dict[int, tuple[asyncio.Future[None], str, str]] = {}
        self._next_token = 0

    def stream(self, fd: int) -> Stream:
        """Writes of ``fd`` on the commit threads (``store.fileio.Stream``); end it with
        ``commit(fd, temp, relative, stream)`` or ``stream.discard(temp)``."""
        if self._impl is None:
            raise RuntimeError("commits are closed")
        return self._impl.stream(fd)

    def stream_at(self, temp: str) -> Stream:
        """The same for a new temp file that the writer thread creates (O_EXCL) before its
        first write: the inode allocation leaves the loop too."""
        if self._impl is None:
            raise RuntimeError("commits are closed")
        return self._impl.stream_at(temp)

    @property
    def pending_bytes(self) -> int:
        """Bytes of stream writes not written yet (every file)."""
        return self._impl.pending_bytes if self._impl is not None else 0

    def commit(self, fd: int, temp: str, relative: str, stream: Stream | None = None,
               record: dict | None = None) -> asyncio.Future[None]:
        """Make ``temp`` (open as ``fd``, which the job closes) durable as ``relative``; the
        future fails with the OSError met on the way (the temp file is then removed). With the
        ``stream`` that wrote it, once its writes are done (a failed one fails the commit).
        ``record``: the instance's trace record (store/trace.py) gets the threads' stamps."""
        loop = self._loop
        if loop is None:
            loop = self._start()
        token = self._next_token
        self._next_token = token + 1
        future = loop.create_future()
        final, parent = self.hot.final_path(relative)
        self._waiting[token] = (future, temp, relative)
        if record is not None:
            self._traces[token] = record
        try:
            if stream is not None:
                stream.commit(token, temp, final, parent, self.hot.fsync)
            else:
                self._impl.submit(token, fd, temp, final, parent,  # type: ignore[union-attr]
                                  self.hot.fsync)
        except BaseException:
            del self._waiting[token]
            raise
        return future

    def writeback(self, fd: int, offset: int, length: int) -> None:
        """Start writing a range of ``fd`` to disk on a commit thread (never blocks; from any
        thread). The loop would spend ~0.1 ms per 128 KiB submitting it itself."""
        if self._impl is not None:
            self._impl.writeback(fd, offset, length)

    def close(self) -> None:
        """Finish every queued commit (answering its future) and stop the threads."""
        if self._impl is None:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._impl.fileno())
        self._settle(self._impl.close())
        self._impl = None
        self._loop = None

    def _start(self) -> asyncio.AbstractEventLoop:
        if self._impl is None:
            raise RuntimeError("commits are closed")
        loop = self._loop = asyncio.get_running_loop()
        loop.add_reader(self._impl.fileno(), self._on_ready)
        return loop

    def _on_ready(self) -> None:
        done = self._impl.drain()  # type: ignore[union-attr]
        if trace.ON:
            self._stamp(done)
        self._settle(done)

    def _stamp(self, done: list[tuple[int, OSError | None]]) -> None:
        """Tracing: the threads' stamps and the loop's ``settled`` go to each record."""
        impl = self._impl
        for token, *stamps in impl.traces:  # type: ignore[union-attr]
            trace.add_c_stamps(self._traces.get(token), tuple(stamps))
        impl.traces.clear()  # type: ignore[union-attr]
        for token, _error in done:
            trace.stamp(self._traces.pop(token, None), "settled")

    def _settle(self, done: list[tuple[int, OSError | None]]) -> None:
        waiting = self._waiting
        for token, error in done:
            future, temp, relative = waiting.pop(token)
            if error is None:
                if not future.done():
                    future.set_result(None)
            elif isinstance(error, FileNotFoundError) and os.path.exists(temp):
                # the rename found no directory: finish in a thread that creates it
                retry = self._loop.run_in_executor(  # type: ignore[union-attr]
                    self.executor, self.hot.commit_into_new_dirs, temp, relative)
                retry.add_done_callback(functools.partial(self._retried, future, temp))
            else:
                self.hot.discard(None, temp)
                if not future.done():
                    future.set_exception(error)

    def _retried(self, future: asyncio.Future[None], temp: str,
                 retry: asyncio.Future[None]) -> None:
        error = retry.exception()
        if error is not None:
            self.hot.discard(None, temp)
        if not future.done():
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)
