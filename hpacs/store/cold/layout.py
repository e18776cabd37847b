"""Where an instance's pixel data lies and how it is laid out, for the cold codec.

The header scanner (``hpacs.dicom.scan``, the same one ingest uses) walks the data set and checks
its framing; it hands back the raw values of the image pixel module and of the top-level Pixel
Data, and the value's position is then found by its element header (tag, VR, exact length) and
confirmed byte for byte. Nothing here can make a restore wrong: the codec keeps every byte that is
not filtered in the header section, and the store checks the original checksum anyway; a wrong
guess would only compress worse. Anything unusual returns ``None`` (plain zstd).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from hpacs._ext.headscan import ScanError
from hpacs.dicom.part10 import guess_encoding, read_file_meta
from hpacs.dicom.scan import HeaderScanner
from hpacs.dicom.transfer_syntax import encoding_of

__all__ = ["PixelLayout", "locate"]

ROWS, COLUMNS = 0x00280010, 0x00280011
SAMPLES, PLANAR = 0x00280002, 0x00280006
BITS_ALLOCATED, PIXEL_REPRESENTATION = 0x00280100, 0x00280103
NUMBER_OF_FRAMES = 0x00280008
MODALITY = 0x00080060
PIXEL_DATA = 0x7FE00010
_WANTED = frozenset(
    {ROWS, COLUMNS, SAMPLES, PLANAR, BITS_ALLOCATED, PIXEL_REPRESENTATION, NUMBER_OF_FRAMES,
     MODALITY, PIXEL_DATA}
)
_TAG = b"\xe0\x7f\x10\x00"
_UNDEFINED = b"\xff\xff\xff\xff"


@dataclass(frozen=True, slots=True)
class PixelLayout:
    """A section of the file to code apart from the rest (``filter``: native pixels the
    prediction filter takes, as ``width`` x ``height`` x ``samples`` of ``bits``)."""

    offset: int
    length: int
    filter: bool = False
    width: int = 0
    height: int = 0
    samples: int = 0
    bits: int = 0
    signed: bool = False
    modality: str = ""


def _us(values: dict[int, bytes], tag: int) -> int | None:
    raw = values.get(tag)
    if raw is None or len(raw) != 2:
        return None
    return struct.unpack("<H", raw)[0]


def locate(data: bytes) -> PixelLayout | None:
    """The pixel section of a Part 10 file (or raw little endian data set), if it has one."""
    try:
        meta = read_file_meta(data)
        start = meta.dataset_offset
        if meta.transfer_syntax_uid is None:
            enc = guess_encoding(data[start : start + 8], strict=start == 0)
            if enc is None:
                return None
            explicit, little, encapsulated = enc[0], enc[1], False
        else:
            e = encoding_of(meta.transfer_syntax_uid)
            if e.deflated:
                return None
            explicit, little, encapsulated = e.explicit_vr, e.little_endian, e.encapsulated
        if not little:
            return None
        scanner = HeaderScanner(_WANTED, explicit, little, max_value_length=len(data))
        scanner.feed(memoryview(data)[start:])
        values = scanner.finish()
    except (ScanError, KeyError, ValueError):
        return None
    modality = values.get(MODALITY, b"").decode("ascii", "replace").strip("\0 ")
    if encapsulated:  # OB by the standard; OW and UN are seen in the wild
        for vr in (b"OB", b"OW", b"UN"):
            head = _TAG + vr + b"\0\0" + _UNDEFINED
            at = data.rfind(head, start)
            if at >= 0:
                value = at + len(head)
                return PixelLayout(value, len(data) - value, modality=modality)
        return PixelLayout(0, 0, modality=modality)
    pixels = values.get(PIXEL_DATA)
    if not pixels:
        return PixelLayout(0, 0, modality=modality)
    length = struct.pack("<I", len(pixels))
    heads = [_TAG + vr + b"\0\0" + length for vr in (b"OW", b"OB")] if explicit else [
        _TAG + length
    ]
    value = -1
    for head in heads:
        at = data.rfind(head, start)
        if at >= 0 and data[at + len(head) : at + len(head) + len(pixels)] == pixels:
            value = at + len(head)
            break
    if value < 0:
        return None
    plain = PixelLayout(value, len(pixels), modality=modality)
    rows, cols = _us(values, ROWS), _us(values, COLUMNS)
    samples, bits = _us(values, SAMPLES) or 1, _us(values, BITS_ALLOCATED)
    signed = _us(values, PIXEL_REPRESENTATION) == 1
    try:
        frames = int(values.get(NUMBER_OF_FRAMES, b"1").strip(b"\0 ") or 1)
    except ValueError:
        return plain
    if not rows or not cols or bits not in (8, 16) or samples not in (1, 3) or frames < 1:
        return plain
    size = rows * cols * frames * samples * (bits // 8)
    if size > len(pixels):
        return plain
    width, height = cols, rows * frames
    if samples == 3 and _us(values, PLANAR) == 1:
        height, samples = height * 3, 1
    return PixelLayout(value, size, True, width, height, samples, bits, signed, modality)
