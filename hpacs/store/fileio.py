"""The file I/O primitives of the ingest path: compiled, unless ``HPACS_PURE=1`` asks for the twin.

- ``write_all(fd, chunks)``: write buffers in order (writev, short writes resumed).
- ``start_writeback(fd, offset, length)``: start writing a range to disk without waiting
  (``sync_file_range(SYNC_FILE_RANGE_WRITE)``): a C-STORE is acknowledged only after fsync, and
  if most of a data set is already on its way to disk when the last fragment lands, that fsync
  has little left to wait for. A failure only loses the head start.
- ``finish_file(fd, temp, final, directory, sync)``: fdatasync + close + rename + directory
  fsync in one call that holds no GIL (``hpacs/_ext/_fileio.pyx`` says why that matters).
- ``Committer(threads)``: ``finish_file`` jobs run by threads that never take the GIL, with
  completions signalled through an eventfd (store/commits.py drives it from the event loop);
  ``Committer.stream(fd)`` (or ``stream_at(path)``, the file then created by the writer thread)
  gives a ``Stream``: the data writes of one file on its writer thread (``pwritev`` at offsets),
  then its commit or discard once they are done.

Picked by ``hpacs._ext.load``: a missing build falls back to the twin, logs a warning and says
so in ``COMPILED``; the test suite treats that as a failure.
"""

from __future__ import annotations

from hpacs._ext import load

__all__ = ["COMPILED", "Committer", "Stream", "finish_file", "start_writeback", "write_all"]

_impl, COMPILED = load("fileio", "file I/O")
Committer = _impl.Committer
Stream = _impl.Stream
finish_file = _impl.finish_file
start_writeback = _impl.start_writeback
write_all = _impl.write_all
