"""DICOM Part 10 files without pydicom: write the preamble + file meta, read it back, scan a file.

Why not pydicom: a C-STORE writes the file meta once per instance and import/reindex reads it for
every file; building a Dataset for 6 elements costs far more than the bytes themselves.

Files without a preamble/"DICM" (PS3.10 says they are not Part 10, but pydicom's corpus and real
archives hold some) are read as *raw data sets*: ``FileMeta.transfer_syntax_uid`` is None,
``dataset_offset`` is 0 and ``guess_encoding`` infers the framing from the first element header
(the same is done for a meta group lacking (0002,0010)). Bytes that look like neither are
rejected with ``Part10Error``.
"""

from __future__ import annotations

import contextlib
import os
import struct
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO

from hpacs._ext.headscan import VR_CLASS, VR_SHORT, ScanError
from hpacs.dicom.scan import HeaderScanner
from hpacs.dicom.transfer_syntax import encoding_of

__all__ = [
    "IMPLEMENTATION_CLASS_UID",
    "IMPLEMENTATION_VERSION_NAME",
    "FileMeta",
    "Part10Error",
    "build_file_meta",
    "build_preamble_and_meta",
    "guess_encoding",
    "read_file_meta",
    "read_part10",
    "scan_part10",
]

#: hpacs' UID root (1.2.826.0.1.3680043.10.1488) + ".1" names this implementation.
IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.10.1488.1"
IMPLEMENTATION_VERSION_NAME = "HPACS_010"

PREAMBLE = bytes(128)
_HEAD = 65536  # read this much first; a file meta group is almost always far smaller
_CHUNK = 1 << 20
_UID_CHARS = "0123456789."

TAG_TRANSFER_SYNTAX = 0x00020010
TAG_MS_SOP_CLASS = 0x00020002
TAG_MS_SOP_INSTANCE = 0x00020003
TAG_IMPL_CLASS = 0x00020012
TAG_IMPL_VERSION = 0x00020013
TAG_SOURCE_AE = 0x00020016


class Part10Error(ScanError):
    """Not a Part 10 file (or raw data set) we can read, or one cut short."""


@dataclass(frozen=True, slots=True)
class FileMeta:
    """What the preamble and group 0002 say; UIDs with their \\0/space padding removed."""

    transfer_syntax_uid: str | None
    sop_class_uid: str | None
    sop_instance_uid: str | None
    dataset_offset: int  # where the data set starts in the file (0 for a raw data set)
    has_preamble: bool  # 128-byte preamble + b"DICM" present
    implementation_class_uid: str | None = None
    implementation_version_name: str | None = None
    source_ae_title: str | None = None
    elements: dict[int, bytes] = field(default_factory=dict)  # raw group 0002 values


# -- writing --------------------------------------------------------------------------------


def _short(tag: int, vr: bytes, value: bytes) -> bytes:
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr, len(value)) + value


def _uid_value(uid: str) -> bytes:
    uid = uid.rstrip("\0 ")
    if not uid or len(uid) > 64 or uid.strip(_UID_CHARS):
        raise ValueError(f"not a valid UID: {uid!r}")
    raw = uid.encode("ascii")
    return raw + b"\0" if len(raw) & 1 else raw


_VERSION = struct.pack("<HH2s2sL", 2, 1, b"OB", b"\0\0", 2) + b"\x00\x01"
_IMPL = _short(TAG_IMPL_CLASS, b"UI", _uid_value(IMPLEMENTATION_CLASS_UID)) + _short(
    TAG_IMPL_VERSION,
    b"SH",
    IMPLEMENTATION_VERSION_NAME.encode() + b" " * (len(IMPLEMENTATION_VERSION_NAME) & 1),
)
_GROUP_LENGTH = struct.Struct("<HH2sHL")


def build_file_meta(
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax_uid: str,
    *,
    source_ae_title: str | None = None,
) -> bytes:
    """Preamble + b"DICM" + group 0002 (explicit VR LE) for one instance.

    UIDs may carry scanner padding (trailing \\0/space); ValueError on an invalid UID."""
    body = b"".join(
        (
            _VERSION,
            _short(TAG_MS_SOP_CLASS, b"UI", _uid_value(sop_class_uid)),
            _short(TAG_MS_SOP_INSTANCE, b"UI", _uid_value(sop_instance_uid)),
            _short(TAG_TRANSFER_SYNTAX, b"UI", _uid_value(transfer_syntax_uid)),
            _IMPL,
        )
    )
    if source_ae_title:
        ae = source_ae_title.strip().encode("ascii")
        if not ae or len(ae) > 16 or b"\\" in ae:
            raise ValueError(f"not a valid AE title: {source_ae_title!r}")
        body += _short(TAG_SOURCE_AE, b"AE", ae + b" " * (len(ae) & 1))
    return b"".join(
        (PREAMBLE, b"DICM", _GROUP_LENGTH.pack(2, 0, b"UL", 4, len(body)), body)
    )


#: The name CONTRACTS.md uses.
build_preamble_and_meta = build_file_meta


# -- reading --------------------------------------------------------------------------------


class _NeedMore(Exception):
    pass


def _text(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    return raw.decode("ascii", "replace").rstrip("\0 ").lstrip(" ") or None


def _parse(buf: bytes, complete: bool) -> FileMeta:
    """Parse the head of a file held in ``buf`` (the whole file when ``complete``)."""
    n = len(buf)
    if n >= 132 and buf[128:132] == b"DICM":
        offset, has_preamble = 132, True
    elif buf[:4] == b"DICM":  # no preamble but a prefix: not standard, harmless to accept
        offset, has_preamble = 4, False
    elif n < 132 and not complete:
        raise _NeedMore
    else:
        if not n:
            raise Part10Error("not DICOM: empty file")
        if guess_encoding(buf) is None:
            raise Part10Error("not DICOM: no 'DICM' prefix and no plausible data set header")
        return FileMeta(None, None, None, 0, False)
    elements: dict[int, bytes] = {}
    while True:
        if offset + 8 > n:
            if not complete:
                raise _NeedMore
            if offset < n:
                raise Part10Error(f"file truncated in an element header at offset {offset}")
            break  # a file that is only a meta group: the data set is empty
        group, elem = struct.unpack_from("<HH", buf, offset)
        if group != 2:
            break
        vr = VR_CLASS.get(buf[offset + 4 : offset + 6], 0)
        if vr == 0:  # implicit VR meta: wrong, but seen in the wild
            length, start = struct.unpack_from("<L", buf, offset + 4)[0], offset + 8
        elif vr == VR_SHORT:
            length, start = struct.unpack_from("<H", buf, offset + 6)[0], offset + 8
        else:
            if offset + 12 > n:
                if complete:
                    raise Part10Error(f"file meta truncated at offset {offset}")
                raise _NeedMore
            length, start = struct.unpack_from("<L", buf, offset + 8)[0], offset + 12
        if length == 0xFFFFFFFF:
            raise Part10Error(f"undefined length in file meta at offset {offset}")
        end = start + length
        if end > n:
            if complete:
                raise Part10Error(f"file meta truncated at offset {offset}")
            raise _NeedMore
        elements[group << 16 | elem] = bytes(buf[start:end])
        offset = end
    get = elements.get
    return FileMeta(
        transfer_syntax_uid=_text(get(TAG_TRANSFER_SYNTAX)),
        sop_class_uid=_text(get(TAG_MS_SOP_CLASS)),
        sop_instance_uid=_text(get(TAG_MS_SOP_INSTANCE)),
        dataset_offset=offset,
        has_preamble=has_preamble,
        implementation_class_uid=_text(get(TAG_IMPL_CLASS)),
        implementation_version_name=_text(get(TAG_IMPL_VERSION)),
        source_ae_title=_text(get(TAG_SOURCE_AE)),
        elements=elements,
    )


def guess_encoding(head: bytes, *, strict: bool = True) -> tuple[bool, bool] | None:
    """(explicit_vr, little_endian) of a raw data set from its first element header, or None
    when it does not look like one (``strict``: the first group must be even and 0002..0028;
    otherwise only <= 0x7FE0). An empty data set reads as implicit VR LE, the default syntax."""
    if not head:
        return (False, True)
    if len(head) < 8:
        return None
    le, be = struct.unpack_from("<H", head)[0], struct.unpack_from(">H", head)[0]
    little = le <= be
    group = le if little else be
    if (group & 1 or not 0x0002 <= group <= 0x0028) if strict else group > 0x7FE0:
        return None
    return (VR_CLASS.get(bytes(head[4:6]), 0) != 0, little)


def _read_head(f: BinaryIO) -> FileMeta:
    buf = f.read(_HEAD)
    while True:
        try:
            return _parse(buf, complete=False)
        except _NeedMore:
            more = f.read(max(len(buf), _HEAD))
            if not more:
                return _parse(buf, complete=True)
            buf += more


def read_file_meta(
    source: bytes | bytearray | memoryview | str | os.PathLike | BinaryIO,
) -> FileMeta:
    """Parse the preamble and group 0002 of a file (path, open binary file or its bytes).

    An open file is left positioned anywhere; use ``dataset_offset``. Raises Part10Error."""
    if isinstance(source, bytes | bytearray | memoryview):
        return _parse(bytes(source), complete=True)
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as f:
            return _read_head(f)
    return _read_head(source)


def read_part10(source) -> tuple[dict[int, bytes], int]:
    """CONTRACTS.md form: (raw group 0002 values, data set offset)."""
    meta = read_file_meta(source)
    return meta.elements, meta.dataset_offset


def scan_part10(
    path: str | os.PathLike | BinaryIO,
    wanted: frozenset[int],
    *,
    max_value_length: int = 1024,
    chunk_size: int = _CHUNK,
) -> tuple[FileMeta, dict[int, bytes]]:
    """Stream a file through the header scanner with bounded memory (deflate inflated in
    ``chunk_size`` pieces). Raises Part10Error/ScanError for anything not whole and well formed.
    ``path`` may also be an open binary file (e.g. a cold instance's restored bytes), read from 0.
    """
    opened = open(path, "rb") if isinstance(path, str | os.PathLike) else None  # noqa: SIM115
    if opened is None:
        path.seek(0)  # type: ignore[union-attr]
    with opened or contextlib.nullcontext(path) as f:
        meta = _read_head(f)
        f.seek(meta.dataset_offset)
        first = f.read(chunk_size)
        deflated = False
        if meta.transfer_syntax_uid is None:
            # a raw data set passed guess_encoding in _parse; a DICM file lacking (0002,0010)
            # is DICOM by its prefix, so only the framing is guessed
            enc = guess_encoding(first, strict=meta.dataset_offset == 0)
            if enc is None:
                raise Part10Error(f"{path}: no transfer syntax and no plausible data set header")
            explicit, little = enc
        else:
            try:
                e = encoding_of(meta.transfer_syntax_uid)
            except KeyError:
                raise Part10Error(
                    f"{path}: unsupported transfer syntax {meta.transfer_syntax_uid}"
                ) from None
            explicit, little, deflated = e.explicit_vr, e.little_endian, e.deflated
        scanner = HeaderScanner(wanted, explicit, little, max_value_length)
        chunk = first
        if not deflated:
            while chunk:
                scanner.feed(chunk)
                chunk = f.read(chunk_size)
            return meta, scanner.finish()
        inflater = zlib.decompressobj(-15)
        try:
            while chunk:
                data = inflater.decompress(chunk, chunk_size)
                while data:
                    scanner.feed(data)
                    data = inflater.decompress(inflater.unconsumed_tail, chunk_size)
                if inflater.eof:
                    break
                chunk = f.read(chunk_size)
        except zlib.error as exc:
            raise Part10Error(f"{path}: corrupt deflate stream: {exc}") from None
        if not inflater.eof:
            raise Part10Error(f"{path}: deflate stream truncated")
        return meta, scanner.finish()
