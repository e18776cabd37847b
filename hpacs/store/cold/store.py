"""ColdStore: append-only pack files of self-describing records, one per instance.

Why packs: millions of small files cost inodes, directory fsyncs and seeks; a pack is one file
written sequentially and read with ``pread`` from any number of threads. Packs are never
rewritten in place: compaction copies live records into new packs and the caller drops the old
ones once its index points at the copies.

Durability: ``append`` only writes (page cache); ``sync`` fdatasyncs the open pack, and the
packs directory when a pack was created, so every ref handed out so far survives a crash. On
open, the last pack's records are validated (header CRC, payload hash) and a torn tail left by a
crash is truncated; damage *followed by* valid records is never truncated (that would lose
data): the pack is left as it is and appends go to a new pack.

Cheap start-up: after each sync ``root/CHECKPOINT`` names the active pack's synced end and its
last record. Those bytes were durable before the checkpoint was written, so a crash cannot have
torn them: open validates that last record and the tail after it only, not the whole pack (up to
``pack_size``). A checkpoint that is missing, torn (CRC), names another pack, or whose record
does not check out means a full walk, as before. Bit rot inside synced data is ``verify``'s job.

One writer: ``root/LOCK`` is flock'ed by the store that appends; a second ColdStore on the same
root (another process, e.g. a verify run) opens read only: it reads and scans, never recovers.

Layout: ``root/packs/<id:08d>.pack``; ``root/dicts/`` holds the zstd dictionaries.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import zstandard

from hpacs.log import get_logger
from hpacs.store.cold.codec import Codec
from hpacs.store.cold.dicts import Dictionaries
from hpacs.store.cold.record import (
    HEADER_SIZE,
    PACK_HEADER,
    RECORD_MAGIC,
    Checkpoint,
    ColdCorruptError,
    ColdError,
    ColdRef,
    RecordHeader,
    checkpoint_bytes,
    checksum,
    pack_header,
    parse_checkpoint,
    parse_header,
    parse_pack_header,
    record_bytes,
)
from hpacs.store.hot import _fsync_dir

__all__ = ["ColdMissingError", "ColdStore"]

log = get_logger(__name__)

PACKS_DIR = "packs"
DICTS_DIR = "dicts"
LOCK_FILE = "LOCK"
CHECKPOINT_FILE = "CHECKPOINT"
SUFFIX = ".pack"
_PEEK = HEADER_SIZE + 128  # one pread covers a header and a typical UID key
_RESYNC_CHUNK = 1 << 20


class ColdMissingError(ColdError):
    """The pack a ref points into does not exist (dropped, or lost)."""


def _pwrite_all(fd: int, parts: list[bytes], offset: int) -> None:
    for part in parts:
        view = memoryview(part)
        while view:
            n = os.pwrite(fd, view, offset)
            offset += n
            view = view[n:]


class ColdStore:
    """Appends from one thread at a time; ``read``/``check``/``scan`` from many threads."""

    def __init__(
        self,
        root: Path,
        *,
        fsync: bool = True,
        pack_size: int = 1 << 30,
        level: int = 3,
        pixel_level: int | None = None,
    ) -> None:
        """``level``: zstd level of headers and of data the filter does not take;
        ``pixel_level``: zstd level of the filtered pixel streams, None for tuned settings
        (``codec.PIXEL_PARAMS``; see benchmarks/RESULTS.md, "Cold")."""
        self.root = Path(root)
        self.packs_dir = self.root / PACKS_DIR
        self.dicts_dir = self.root / DICTS_DIR
        self.fsync = fsync
        self.pack_size = pack_size
        self.packs_dir.mkdir(parents=True, exist_ok=True)
        self.dicts_dir.mkdir(parents=True, exist_ok=True)
        self.dicts = Dictionaries(self.dicts_dir, fsync=fsync)
        self.codec = Codec(self.dicts, level=level, pixel_level=pixel_level)
        self._lock = threading.Lock()  # appends, syncs, pack switches
        self._fd_lock = threading.Lock()  # the reader fd table
        self._readers: dict[int, int] = {}
        self._active: int | None = None  # pack appends go to
        self._wfd = -1
        self._end = 0  # where the next record goes in the active pack
        self._last = 0  # offset of the active pack's last record (0: none yet)
        self._dirty = False  # written since the last sync
        self._dir_dirty = False  # a pack was created since the last sync
        self._closed = False
        self._lock_fd = self._take_lock()
        ids = self._pack_ids()
        self._next_id = (ids[-1] + 1) if ids else 1
        if ids and self.writable:
            self._recover(ids[-1])

    # -- the writer lock ----------------------------------------------------------------------

    def _take_lock(self) -> int | None:
        """flock ``root/LOCK``: one writer per store. Without it this store only reads: it must
        neither append nor "recover" a tail another process is in the middle of writing."""
        fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            log.info("cold.read_only", root=str(self.root), reason="another writer holds LOCK")
            return None
        return fd

    @property
    def writable(self) -> bool:
        """False when another ColdStore (this or another process) writes to ``root``."""
        return self._lock_fd is not None

    # -- paths and fds ----------------------------------------------------------------------

    def _path(self, pack: int) -> Path:
        return self.packs_dir / f"{pack:08d}{SUFFIX}"

    def _pack_ids(self) -> list[int]:
        ids = []
        for p in self.packs_dir.iterdir():
            if p.suffix == SUFFIX and p.stem.isdigit():
                ids.append(int(p.stem))
        return sorted(ids)

    def _reader(self, pack: int) -> int:
        fd = self._readers.get(pack)
        if fd is not None:
            return fd
        with self._fd_lock:
            fd = self._readers.get(pack)
            if fd is None:
                try:
                    fd = os.open(self._path(pack), os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:
                    raise ColdMissingError(f"cold pack {pack} does not exist") from None
                self._readers[pack] = fd
            return fd

    # -- recovery and framing walks -----------------------------------------------------------

    def _header_at(self, fd: int, offset: int, limit: int) -> RecordHeader:
        """The valid record header at ``offset`` whose record ends by ``limit``."""
        if offset + HEADER_SIZE > limit:
            raise ColdCorruptError(f"record header at {offset} runs past the end")
        raw = os.pread(fd, _PEEK, offset)
        hdr = parse_header(raw)
        if hdr is None:  # a long key
            klen = int.from_bytes(raw[6:8], "little")
            hdr = parse_header(os.pread(fd, HEADER_SIZE + klen, offset))
            if hdr is None:
                raise ColdCorruptError(f"record key at {offset} runs past the end")
        if offset + hdr.length > limit:
            raise ColdCorruptError(f"record at {offset} runs past the end")
        return hdr

    def _valid_at(self, fd: int, offset: int, limit: int) -> RecordHeader:
        """As _header_at, and the payload matches its hash (a complete, intact record)."""
        hdr = self._header_at(fd, offset, limit)
        payload = os.pread(fd, hdr.payload_length, offset + hdr.header_length)
        if checksum(payload) != hdr.payload_hash:
            raise ColdCorruptError(f"record at {offset}: payload hash mismatch")
        return hdr

    def _resync(self, fd: int, start: int, limit: int) -> int | None:
        """Offset of the next record with a valid header after ``start``, or None."""
        pos = start + 1
        while pos < limit:
            chunk = os.pread(fd, min(_RESYNC_CHUNK + 3, limit - pos), pos)
            if not chunk:
                return None
            i = chunk.find(RECORD_MAGIC)
            while i != -1:
                with contextlib.suppress(ColdCorruptError):
                    self._header_at(fd, pos + i, limit)
                    return pos + i
                i = chunk.find(RECORD_MAGIC, i + 1)
            pos += _RESYNC_CHUNK
        return None

    def _recover(self, pack: int) -> None:
        """Validate the last pack; truncate a torn tail or, if damage is followed by valid
        records, leave the pack alone and append to a new one."""
        path = self._path(pack)
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        size = os.fstat(fd).st_size
        try:
            parse_pack_header(os.pread(fd, PACK_HEADER.size, 0))
        except ColdCorruptError:
            if size > PACK_HEADER.size and self._resync(fd, 0, size) is not None:
                os.close(fd)
                log.error("cold.pack_damaged", pack=pack, offset=0, reason="bad pack header")
                return
            # crash while creating the pack: nothing in it was ever synced
            os.ftruncate(fd, 0)
            os.pwrite(fd, pack_header(pack), 0)
            self._sync_fd(fd)
            self._adopt(pack, fd, PACK_HEADER.size)
            log.warning("cold.pack_torn", pack=pack, offset=0, dropped=size)
            return
        cp = self._checkpointed(pack, fd, size)
        off, last = (cp.end, cp.last) if cp else (PACK_HEADER.size, 0)
        if cp:
            log.info("cold.checkpoint_used", pack=pack, offset=off, tail=size - off)
        while off < size:
            try:
                hdr = self._valid_at(fd, off, size)
            except ColdCorruptError as exc:
                if self._resync(fd, off, size) is not None:
                    os.close(fd)
                    log.error("cold.pack_damaged", pack=pack, offset=off, reason=str(exc))
                    return
                os.ftruncate(fd, off)
                self._sync_fd(fd)
                log.warning("cold.pack_torn", pack=pack, offset=off, dropped=size - off)
                break
            last = off
            off += hdr.length
        self._adopt(pack, fd, off, last)
        if cp is None or off != cp.end:
            # what was validated becomes the checkpoint (synced first: a kill -9 leaves
            # unsynced records in the page cache, which a later power loss could still tear)
            self._sync_fd(fd)
            self._write_checkpoint()

    def _checkpointed(self, pack: int, fd: int, size: int) -> Checkpoint | None:
        """The checkpoint of ``pack`` when it holds (its last record is intact and ends at its
        end): validation starts there. None: validate from the first record."""
        try:
            cp = parse_checkpoint((self.root / CHECKPOINT_FILE).read_bytes())
        except FileNotFoundError:
            return None
        if cp is None or cp.pack != pack or not PACK_HEADER.size <= cp.end <= size:
            return None
        try:
            parse_pack_header(os.pread(fd, PACK_HEADER.size, 0))
            if cp.last:
                if self._valid_at(fd, cp.last, cp.end).length != cp.end - cp.last:
                    return None
            elif cp.end != PACK_HEADER.size:
                return None
        except ColdCorruptError:
            return None
        return cp

    def _write_checkpoint(self) -> None:
        """Record the active pack's end as synced (called once it is). Not fsynced itself: a
        stale checkpoint only means validating more on the next open."""
        if self._active is None:
            return
        raw = checkpoint_bytes(Checkpoint(self._active, self._end, self._last))
        fd = os.open(self.root / CHECKPOINT_FILE, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            _pwrite_all(fd, [raw], 0)
        finally:
            os.close(fd)

    def _adopt(self, pack: int, fd: int, end: int, last: int = 0) -> None:
        self._active, self._wfd, self._end, self._last = pack, fd, end, last

    def _sync_fd(self, fd: int) -> None:
        if self.fsync:
            os.fdatasync(fd)

    def _walk(self, pack: int, limit: int | None = None) -> Iterator[tuple[str, ColdRef]]:
        fd = self._reader(pack)
        size = os.fstat(fd).st_size if limit is None else limit
        try:
            parse_pack_header(os.pread(fd, PACK_HEADER.size, 0))
        except ColdCorruptError:
            log.error("cold.scan_damaged", pack=pack, offset=0, reason="bad pack header")
        off = PACK_HEADER.size
        while off < size:
            try:
                hdr = self._header_at(fd, off, size)
            except ColdCorruptError as exc:
                nxt = self._resync(fd, off, size)
                if nxt is not None or (pack != self._active and self.writable):
                    # (a reader may see the tail of a record the writer is appending)
                    log.error("cold.scan_damaged", pack=pack, offset=off, reason=str(exc))
                if nxt is None:
                    return
                off = nxt
                continue
            yield hdr.key, ColdRef(pack, off, hdr.length, hdr.size, hdr.checksum)
            off += hdr.length

    # -- writing ------------------------------------------------------------------------------

    def _roll(self) -> None:
        """Seal the active pack (synced) and start a new one."""
        if self._wfd >= 0:
            if self._dirty:
                self._sync_fd(self._wfd)
                self._dirty = False
            os.close(self._wfd)
            self._wfd = -1
        pack = self._next_id
        self._next_id += 1
        fd = os.open(
            self._path(pack), os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644
        )
        head = pack_header(pack)
        _pwrite_all(fd, [head], 0)
        self._adopt(pack, fd, len(head))
        self._dirty = self._dir_dirty = True
        log.info("cold.pack_created", pack=pack)

    def _append_record(self, head: bytes, payload: bytes, size: int, csum: int) -> ColdRef:
        length = len(head) + len(payload)
        full = self._end > PACK_HEADER.size and self._end + length > self.pack_size
        if self._active is None or full:
            self._roll()
        off = self._end
        try:
            _pwrite_all(self._wfd, [head, payload], off)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(self._wfd, off)  # keep the framing clean for the next append
            raise ColdError(f"cold pack write failed: {exc}") from exc
        self._end = off + length
        self._last = off
        self._dirty = True
        assert self._active is not None
        return ColdRef(self._active, off, length, size, csum)

    def append(self, data: bytes, *, key: str, modality: str = "") -> ColdRef:
        """Store one instance's bytes; durable once ``sync`` returns."""
        if self._closed:
            raise ColdError("cold store is closed")
        if not self.writable:
            raise ColdError(f"cold store {self.root} is written by another process: read only")
        csum = checksum(data)
        codec, dict_id, payload = self.codec.encode(data, modality=modality)
        head, payload = record_bytes(
            key=key,
            codec=codec,
            dict_id=dict_id,
            payload=payload,
            size=len(data),
            original_checksum=csum,
        )
        with self._lock:
            return self._append_record(head, payload, len(data), csum)

    def sync(self) -> None:
        """Make every ref returned so far durable."""
        with self._lock:
            synced = self._dirty and self._wfd >= 0
            if synced:
                self._sync_fd(self._wfd)
            if self._dir_dirty and self.fsync:
                _fsync_dir(self.packs_dir)
            if synced:
                self._write_checkpoint()
            self._dirty = self._dir_dirty = False

    # -- reading ------------------------------------------------------------------------------

    def _record(self, ref: ColdRef) -> tuple[RecordHeader, bytes]:
        """The header and payload of ``ref``, framing and payload hash checked."""
        where = f"cold record {ref.pack}:{ref.offset}"
        if ref.offset < PACK_HEADER.size or ref.length < HEADER_SIZE:
            raise ColdCorruptError(f"{where}: not a record position")
        fd = self._reader(ref.pack)
        try:
            raw = os.pread(fd, ref.length, ref.offset)
        except OSError as exc:  # e.g. the pack was dropped under a reader
            raise ColdError(f"{where}: {exc}") from exc
        if len(raw) != ref.length:
            raise ColdCorruptError(f"{where}: cut short ({len(raw)} of {ref.length} bytes)")
        try:
            hdr = parse_header(raw)
        except ColdCorruptError as exc:
            raise ColdCorruptError(f"{where}: {exc}") from None
        if (
            hdr is None
            or hdr.length != ref.length
            or hdr.size != ref.size
            or hdr.checksum != ref.checksum
        ):
            raise ColdCorruptError(f"{where}: header does not match the ref")
        payload = raw[hdr.header_length :]
        if checksum(payload) != hdr.payload_hash:
            raise ColdCorruptError(f"{where}: payload hash mismatch")
        return hdr, payload

    def read(self, ref: ColdRef) -> bytes:
        """The exact original bytes; ColdCorruptError rather than anything unverified."""
        hdr, payload = self._record(ref)
        try:
            data = self.codec.decode(hdr.codec, hdr.dict_id, payload, hdr.size)
        except (ValueError, KeyError, struct.error, zstandard.ZstdError) as exc:
            raise ColdCorruptError(f"cold record {ref.pack}:{ref.offset}: {exc}") from None
        if len(data) != ref.size or checksum(data) != ref.checksum:
            raise ColdCorruptError(f"cold record {ref.pack}:{ref.offset}: checksum mismatch")
        return data

    def check(self, ref: ColdRef) -> None:
        """Verify ``ref`` restores its original bytes (raises ColdCorruptError/ColdMissingError)."""
        self.read(ref)

    def scan(self) -> Iterator[tuple[str, ColdRef]]:
        """(key, ref) of every complete record of every pack, in pack order (for reindex and
        verify). Damaged stretches are skipped (and logged), not fatal."""
        for pack in self._pack_ids():
            limit = self._end if pack == self._active else None
            with contextlib.suppress(ColdMissingError):
                yield from self._walk(pack, limit)

    def packs(self) -> list[int]:
        """Ids of the pack files present."""
        return self._pack_ids()

    def pack_bytes(self, pack: int) -> int:
        """Size of a pack file (0 if it is gone): compaction weighs it against its live bytes."""
        try:
            return self._path(pack).stat().st_size
        except FileNotFoundError:
            return 0

    # -- compaction ---------------------------------------------------------------------------

    def compact(self, live: Iterable[ColdRef]) -> dict[ColdRef, ColdRef]:
        """Copy each live record (verified, not re-encoded) into new packs; returns old -> new,
        durable. The caller points its index at the new refs, then ``drop_packs`` the old."""
        if not self.writable:
            raise ColdError(f"cold store {self.root} is written by another process: read only")
        refs = sorted(set(live), key=lambda r: (r.pack, r.offset))
        moved: dict[ColdRef, ColdRef] = {}
        with self._lock:
            old = {r.pack for r in refs}
            if self._active in old or self._active is None:
                self._roll()  # never copy into a pack that is about to be dropped
        for ref in refs:
            self.read(ref)  # never carry corruption forward
            raw = os.pread(self._reader(ref.pack), ref.length, ref.offset)
            hdr = parse_header(raw)
            assert hdr is not None
            with self._lock:
                moved[ref] = self._append_record(
                    raw[: hdr.header_length], raw[hdr.header_length :], ref.size, ref.checksum
                )
        self.sync()
        log.info("cold.compacted", records=len(moved), packs=len({r.pack for r in refs}))
        return moved

    def drop_packs(self, packs: Iterable[int]) -> None:
        """Delete pack files (after the index stopped pointing into them)."""
        if not self.writable:
            raise ColdError(f"cold store {self.root} is written by another process: read only")
        dropped = []
        with self._lock:
            for pack in set(packs):
                if pack == self._active:
                    os.close(self._wfd)
                    self._wfd, self._active, self._end, self._dirty = -1, None, 0, False
                    self._last = 0
                with self._fd_lock:
                    fd = self._readers.pop(pack, None)
                if fd is not None:
                    os.close(fd)
                with contextlib.suppress(FileNotFoundError):
                    self._path(pack).unlink()
                    dropped.append(pack)
            if dropped and self.fsync:
                _fsync_dir(self.packs_dir)
        if dropped:
            log.info("cold.packs_dropped", packs=sorted(dropped))

    def close(self) -> None:
        """Sync and release every file descriptor."""
        if self._closed:
            return
        self.sync()
        with self._lock:
            self._closed = True
            if self._wfd >= 0:
                os.close(self._wfd)
                self._wfd = -1
            with self._fd_lock:
                for fd in self._readers.values():
                    os.close(fd)
                self._readers.clear()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def __enter__(self) -> ColdStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
