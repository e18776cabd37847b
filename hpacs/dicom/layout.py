"""Where the frames of native (uncompressed) pixel data lie in a stored file.

A viewer asks for frames one by one; reading the whole data set with pydicom for each costs
milliseconds. For native little-endian data a frame is a fixed-size slice of Pixel Data, so all
a request needs is Pixel Data's offset and the image geometry: a walk over the top-level element
headers (values are not decoded), then one slice of the file (mmap/pread).
"""

from __future__ import annotations

import struct
from typing import Any, Final

import msgspec

from hpacs.dicom.dicomjson import (
    BITS_ALLOCATED,
    PIXEL_DATA,
    DicomJSONError,
    ElementWalker,
    dataset_framing,
)

ROWS: Final = 0x00280010
COLUMNS: Final = 0x00280011
SAMPLES: Final = 0x00280002
NUMBER_OF_FRAMES: Final = 0x00280008
PHOTOMETRIC: Final = 0x00280004
_WANTED: Final = frozenset({ROWS, COLUMNS, SAMPLES, BITS_ALLOCATED, NUMBER_OF_FRAMES, PHOTOMETRIC,
                            PIXEL_DATA})


class PixelLayout(msgspec.Struct, frozen=True):
    offset: int  # of Pixel Data's value in the buffer given
    length: int
    frames: int
    frame_size: int  # bytes; whole bytes only (Bits Allocated a multiple of 8)

    def frame_span(self, number: int) -> tuple[int, int] | None:
        """(start, end) of 1-based frame ``number``, None when out of range or cut short."""
        if not 1 <= number <= self.frames:
            return None
        start = self.offset + (number - 1) * self.frame_size
        end = start + self.frame_size
        return (start, end) if end <= self.offset + self.length else None


def native_layout(data: Any) -> PixelLayout | None:
    """The layout of native, little-endian, byte-aligned pixel data in a Part 10 buffer, or None
    when the data set is anything else (encapsulated, big endian, deflated, 1-bit, YBR_FULL_422,
    no pixels, a malformed geometry or a value cut short): callers then take the general path,
    which knows how to report those."""
    buf, start, explicit, little = dataset_framing(data)
    if not little or buf is not data:  # big endian needs swapping; deflated was inflated
        return None
    walker = ElementWalker(buf, explicit, little, None, 0)
    try:
        found = walker.top_level(start, len(buf), _WANTED, PIXEL_DATA)
    except (DicomJSONError, struct.error):
        return None
    pixel = found.get(PIXEL_DATA)
    if pixel is None or pixel[1] == 0xFFFFFFFF:
        return None

    def us(tag: int, default: int | None = None) -> int | None:
        span = found.get(tag)
        if span is None or span[1] < 2:
            return default
        return struct.unpack_from("<H", buf, span[0])[0]

    span = found.get(PHOTOMETRIC)
    if span is not None and b"422" in bytes(buf[span[0] : span[0] + span[1]]):
        return None  # YBR_FULL_422: chroma subsampled, frames are not rows*cols*samples
    rows, cols, bits = us(ROWS), us(COLUMNS), us(BITS_ALLOCATED)
    samples = us(SAMPLES, 1)
    if not rows or not cols or not bits or not samples or bits % 8:
        return None
    frames = 1
    span = found.get(NUMBER_OF_FRAMES)
    if span is not None and span[1]:
        try:
            frames = int(bytes(buf[span[0] : span[0] + span[1]]).strip(b" \0") or b"1")
        except ValueError:
            return None
    if frames < 1:
        return None
    return PixelLayout(pixel[0], pixel[1], frames, rows * cols * samples * bits // 8)
