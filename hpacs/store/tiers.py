"""One read path for stored instances, whatever tier holds them.

Every reader (WADO-RS/URI, frames, rendered, metadata, C-GET/C-MOVE, ``hpacs send``) asks
:meth:`Tiers.source` for an index entry and gets either the hot file's :class:`~pathlib.Path`
(so zero-copy and sendfile stay possible, nothing is read ahead) or, for an instance in a cold
pack, an :class:`io.BytesIO` over the restored, checksum-verified original bytes. Both are what
``pydicom.dcmread`` and ``read_file_meta`` take; :func:`open_source` gives a binary file for
streaming either.

The same function is where reads are *noticed*: the series read is stamped in memory (the
lifecycle flushes these as studies' last-access times through the single index writer, never an
LMDB write per read), and a cold read calls :attr:`Tiers.on_cold_read` so a promotion rule can
bring the study back to hot after the read, off its path.
"""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import msgspec

from hpacs.index.db import InstanceEntry
from hpacs.store.cold import ColdError, ColdRef, ColdStore
from hpacs.store.hot import HotStore

COLD_DIR = "cold"

#: What a reader gets: the hot file, or the restored bytes of a cold record.
Source = Path | io.BytesIO


class TierError(OSError):
    """The instance cannot be read from its tier (missing file, corrupt or missing cold record).

    An OSError so every reader's existing "stored instance unreadable" handling applies."""


def cold_ref(entry: InstanceEntry) -> ColdRef | None:
    """The entry's cold reference as the cold store's type (the index keeps a plain array)."""
    if entry.cold is None:
        return None
    return msgspec.convert(entry.cold, ColdRef)


def ref_to_index(ref: ColdRef) -> list[Any]:
    """A cold reference as the plain array the index stores."""
    return msgspec.to_builtins(ref)


def open_source(src: Source) -> BinaryIO:
    """A binary file positioned at 0 over a source (the caller closes it)."""
    if isinstance(src, io.BytesIO):
        src.seek(0)
        return src
    return open(src, "rb")


def as_path_or_bytes(src: Source) -> Path | bytes:
    """A source as the pixel codecs and worker processes take it (a path, or the bytes)."""
    return src.getvalue() if isinstance(src, io.BytesIO) else src


class Tiers:
    """The hot store, the cold store (opened on first use) and the read bookkeeping."""

    def __init__(self, hot: HotStore, *, fsync: bool = True, pack_size: int = 1 << 30,
                 level: int = 3, clock: Callable[[], float] = time.time) -> None:
        self.hot = hot
        self.cold_root = hot.data_dir / COLD_DIR
        self._cold_opts = {"fsync": fsync, "pack_size": pack_size, "level": level}
        self._cold: ColdStore | None = None
        self._lock = threading.Lock()
        self.clock = clock
        #: series UID -> last read time, not yet flushed to the index (see lifecycle).
        self.reads: dict[str, float] = {}
        #: Called (from any thread) with the series UID of every instance read from cold.
        self.on_cold_read: Callable[[str], None] | None = None
        self.cold_reads = 0
        self.cold_read_bytes = 0

    @property
    def cold(self) -> ColdStore:
        store = self._cold
        if store is None:
            with self._lock:
                if self._cold is None:
                    self._cold = ColdStore(self.cold_root, **self._cold_opts)
                store = self._cold
        return store

    def close(self) -> None:
        with self._lock:
            if self._cold is not None:
                self._cold.close()
                self._cold = None

    # -- reading --------------------------------------------------------------------------
    def is_cold(self, entry: InstanceEntry) -> bool:
        return entry.cold is not None

    def restore(self, entry: InstanceEntry) -> bytes:
        """The exact original bytes of a cold instance (checksum verified). Blocking."""
        ref = cold_ref(entry)
        if ref is None:
            raise TierError(f"{entry.sop_instance_uid} is not in the cold store")
        try:
            data = self.cold.read(ref)
        except ColdError as exc:
            raise TierError(f"{entry.sop_instance_uid}: cold record unreadable: {exc}") from exc
        self.cold_reads += 1
        self.cold_read_bytes += len(data)
        return data

    def source(self, entry: InstanceEntry) -> Source:
        """The instance as a hot path or restored bytes. Blocking for a cold instance."""
        self.reads[entry.series_uid] = self.clock()
        if entry.cold is None:
            return self.hot.absolute(entry.path)
        data = self.restore(entry)
        if self.on_cold_read is not None:
            self.on_cold_read(entry.series_uid)
        return io.BytesIO(data)

    async def asource(self, entry: InstanceEntry) -> Source:
        """:meth:`source` for the loop: a hot path costs no thread hop, a restore runs in the
        default executor."""
        if entry.cold is None:
            return self.source(entry)
        return await asyncio.get_running_loop().run_in_executor(None, self.source, entry)

    def read_bytes(self, entry: InstanceEntry) -> bytes:
        """The whole instance in memory (blocking)."""
        src = self.source(entry)
        return src.getvalue() if isinstance(src, io.BytesIO) else src.read_bytes()

    def take_reads(self) -> dict[str, float]:
        """The series read since the last call (for the access-time flush)."""
        reads, self.reads = self.reads, {}
        return reads
