"""Cold pack framing: the pack file header and one self-describing record per instance.

Pure functions over bytes (no I/O), so the store, the scanner of torn tails and the tests share
one definition. A pack file is ``PACK_HEADER`` followed by records laid end to end::

    record = header (RECORD.size bytes) | key (SOP Instance UID, ascii) | payload

The header carries its own CRC-32 (over the header and the key), so a scan can walk the framing
without reading payloads, and an xxh3-64 of the payload, so a torn or corrupted payload is found
before any decompression. The ``checksum`` is the xxh3-64 of the *original* file: every restore
is checked against it, whatever the codec did.
"""

from __future__ import annotations

import struct
import zlib

import msgspec
import xxhash

__all__ = [
    "HEADER_SIZE",
    "MAX_KEY",
    "PACK_HEADER",
    "PACK_MAGIC",
    "Checkpoint",
    "ColdCorruptError",
    "ColdError",
    "ColdRef",
    "RecordHeader",
    "checkpoint_bytes",
    "checksum",
    "pack_header",
    "parse_checkpoint",
    "parse_header",
    "parse_pack_header",
    "record_bytes",
]

PACK_MAGIC = b"HPACSPK\x01"
#: magic, format version, pack id.
PACK_HEADER = struct.Struct("<8sII")
RECORD_MAGIC = b"HPCR"
RECORD_VERSION = 1
#: magic, version, codec, key length, dictionary id, payload length, original size,
#: original checksum, payload hash, CRC-32 of (these fields + key).
RECORD = struct.Struct("<4sBBHIQQQQI")
HEADER_SIZE = RECORD.size
_CRC_AT = HEADER_SIZE - 4
MAX_KEY = 0xFFFF


class ColdError(Exception):
    """A cold store operation failed (missing pack, bad argument, I/O)."""


class ColdCorruptError(ColdError):
    """Stored bytes fail their checks: the store never returns bytes it cannot vouch for."""


class ColdRef(msgspec.Struct, frozen=True, array_like=True):
    """Where one record lies; the index keeps it (array_like: 5 ints, compact in msgpack)."""

    pack: int
    offset: int  # of the record header in the pack file
    length: int  # of the whole record (header + key + payload)
    size: int  # of the original file
    checksum: int  # xxh3-64 of the original bytes


class RecordHeader(msgspec.Struct, frozen=True):
    codec: int
    dict_id: int
    key: str
    payload_length: int
    size: int
    checksum: int
    payload_hash: int
    header_length: int  # header + key: the payload starts here

    @property
    def length(self) -> int:
        return self.header_length + self.payload_length


def checksum(data: bytes | bytearray | memoryview) -> int:
    """The checksum of original bytes (and of payloads): xxh3-64, ~10 GB/s."""
    return xxhash.xxh3_64_intdigest(data)


def pack_header(pack: int) -> bytes:
    return PACK_HEADER.pack(PACK_MAGIC, 1, pack)


def parse_pack_header(raw: bytes) -> int:
    """The pack id of a pack file header; ColdCorruptError if it is not one."""
    if len(raw) < PACK_HEADER.size:
        raise ColdCorruptError("pack file shorter than its header")
    magic, version, pack = PACK_HEADER.unpack_from(raw)
    if magic != PACK_MAGIC or version != 1:
        raise ColdCorruptError("not a cold pack file (bad magic or version)")
    return pack


def record_bytes(
    *, key: str, codec: int, dict_id: int, payload: bytes, size: int, original_checksum: int
) -> tuple[bytes, bytes]:
    """(header + key, payload) of one record; written back to back."""
    try:
        kb = key.encode("ascii")
    except UnicodeEncodeError:
        raise ColdError(f"key is not ascii: {key!r}") from None
    if len(kb) > MAX_KEY:
        raise ColdError(f"key longer than {MAX_KEY} bytes")
    head = RECORD.pack(
        RECORD_MAGIC,
        RECORD_VERSION,
        codec,
        len(kb),
        dict_id,
        len(payload),
        size,
        original_checksum,
        checksum(payload),
        0,
    )
    crc = zlib.crc32(kb, zlib.crc32(memoryview(head)[:_CRC_AT]))
    return head[:_CRC_AT] + struct.pack("<I", crc) + kb, payload


def parse_header(raw: bytes | memoryview, *, key_bytes: bytes | memoryview | None = None):
    """Parse a record header (``raw`` holds at least HEADER_SIZE bytes, plus the key when
    ``key_bytes`` is None). Returns a RecordHeader, or None when more bytes are needed for the
    key. Raises ColdCorruptError when the framing is not a valid record."""
    if len(raw) < HEADER_SIZE:
        raise ColdCorruptError("record header cut short")
    magic, version, codec, klen, dict_id, plen, size, osum, psum, crc = RECORD.unpack_from(raw)
    if magic != RECORD_MAGIC or version != RECORD_VERSION:
        raise ColdCorruptError("bad record magic or version")
    if key_bytes is None:
        if len(raw) < HEADER_SIZE + klen:
            return None
        key_bytes = raw[HEADER_SIZE : HEADER_SIZE + klen]
    if len(key_bytes) != klen:
        raise ColdCorruptError("record key cut short")
    if zlib.crc32(key_bytes, zlib.crc32(memoryview(raw)[:_CRC_AT])) != crc:
        raise ColdCorruptError("record header CRC mismatch")
    try:
        key = bytes(key_bytes).decode("ascii")
    except UnicodeDecodeError:
        raise ColdCorruptError("record key is not ascii") from None
    return RecordHeader(codec, dict_id, key, plen, size, osum, psum, HEADER_SIZE + klen)


#: The synced end of the active pack (``root/CHECKPOINT``): magic, pack id, end of the last
#: synced record, offset of that record (0: none), CRC-32 of these fields.
CHECKPOINT = struct.Struct("<4sIQQI")
CHECKPOINT_MAGIC = b"HPCK"


class Checkpoint(msgspec.Struct, frozen=True):
    """Records of ``pack`` before ``end`` were synced; the last of them starts at ``last``."""

    pack: int
    end: int
    last: int


def checkpoint_bytes(cp: Checkpoint) -> bytes:
    head = CHECKPOINT.pack(CHECKPOINT_MAGIC, cp.pack, cp.end, cp.last, 0)
    return head[:-4] + struct.pack("<I", zlib.crc32(head[:-4]))


def parse_checkpoint(raw: bytes) -> Checkpoint | None:
    """The checkpoint in ``raw``, or None when it is missing, torn or not one."""
    if len(raw) != CHECKPOINT.size:
        return None
    magic, pack, end, last, crc = CHECKPOINT.unpack(raw)
    if magic != CHECKPOINT_MAGIC or zlib.crc32(raw[:-4]) != crc:
        return None
    return Checkpoint(pack, end, last)
