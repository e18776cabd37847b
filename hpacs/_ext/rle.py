"""RLE Lossless (PS3.5 Annex G) codec: the pure-Python twin of ``_rle.pyx``.

Frame layout on both sides: the *decoded* frame is little-endian and sample-interleaved
(PlanarConfiguration 0, the layout of ``ndarray.tobytes()`` for shape (rows, cols, samples)),
exactly what pydicom's RLE encoder takes as input.

Decoding follows pydicom's ``_rle_decode_frame``: a segment that decodes to fewer than
rows*columns bytes is an error, bytes beyond that are ignored (non-conformant padding); a
truncated run yields what is there. Encoding reproduces pydicom's native encoder
(``pydicom.pixels.encoders.native``) byte for byte: every row is encoded separately, runs of
two or more equal bytes are Replicate Runs, a run whose length is 1 modulo 128 ends with a
one-byte Literal Run, literals are cut into chunks of 128, odd segments get one 0x00 pad byte.

Both modules raise ``PixelDataError`` (defined here, imported by the compiled module), the one
error type of ``hpacs.pixels`` for bad pixel data.
"""

from __future__ import annotations

import struct

__all__ = ["PixelDataError", "decode_frame", "encode_frame"]


class PixelDataError(ValueError):
    """The pixel data (or the attributes that describe it) cannot be decoded as declared."""


def _check(rows: int, columns: int, samples: int, bits_allocated: int) -> int:
    if bits_allocated <= 0 or bits_allocated % 8:
        raise PixelDataError(f"RLE needs Bits Allocated a multiple of 8, not {bits_allocated}")
    if rows <= 0 or columns <= 0 or samples <= 0:
        raise PixelDataError(f"bad frame size {rows}x{columns}x{samples}")
    nseg = samples * (bits_allocated // 8)
    if nseg > 15:
        raise PixelDataError(f"RLE allows at most 15 segments, this frame needs {nseg}")
    return nseg


def _decode_segment(src: bytes, start: int, end: int, need: int) -> bytearray:
    out = bytearray()
    pos = start
    while pos < end and len(out) < need:
        h = src[pos]
        pos += 1
        if h < 128:
            n = h + 1
            out += src[pos : min(pos + n, end)]
            pos += n
        elif h > 128:
            if pos >= end:
                break
            out += src[pos : pos + 1] * (257 - h)
            pos += 1
    return out


def decode_frame(src, rows: int, columns: int, samples: int, bits_allocated: int) -> bytearray:
    """Decode one RLE frame into little-endian, sample-interleaved bytes."""
    src = bytes(src)
    nseg = _check(rows, columns, samples, bits_allocated)
    if len(src) < 64:
        raise PixelDataError(f"RLE frame of {len(src)} bytes is shorter than its 64-byte header")
    (count,) = struct.unpack_from("<L", src, 0)
    if count != nseg:
        raise PixelDataError(f"RLE frame has {count} segments, expected {nseg}")
    offsets = [*struct.unpack_from(f"<{nseg}L", src, 4), len(src)]
    npix = rows * columns
    bpp = bits_allocated // 8
    out = bytearray(npix * nseg)
    for seg in range(nseg):
        start = min(offsets[seg], len(src))
        end = max(start, min(offsets[seg + 1], len(src)))
        data = _decode_segment(src, start, end, npix)
        if len(data) < npix:
            raise PixelDataError(
                f"RLE segment {seg} decodes to {len(data)} bytes, expected {npix}"
            )
        sample, msb_index = divmod(seg, bpp)
        pos = sample * bpp + (bpp - 1 - msb_index)
        out[pos::nseg] = data[:npix]
    return out


def _encode_row(row: bytes, out: bytearray) -> None:
    n = len(row)
    lit_start = 0
    lit_len = 0
    i = 0
    while i < n:
        b = row[i]
        j = i + 1
        while j < n and row[j] == b:
            j += 1
        g = j - i
        if g == 1:
            if lit_len == 0:
                lit_start = i
            lit_len += 1
        else:
            _flush_literal(row, lit_start, lit_len, out)
            lit_len = 0
            full, rest = divmod(g, 128)
            out += bytes((129, b)) * full
            if rest > 1:
                out += bytes((257 - rest, b))
            elif rest == 1:
                out += bytes((0, b))
        i = j
    _flush_literal(row, lit_start, lit_len, out)


def _flush_literal(row: bytes, start: int, length: int, out: bytearray) -> None:
    for k in range(start, start + length, 128):
        chunk = row[k : min(k + 128, start + length)]
        out.append(len(chunk) - 1)
        out += chunk


def encode_frame(src, rows: int, columns: int, samples: int, bits_allocated: int) -> bytes:
    """Encode one little-endian, sample-interleaved frame as RLE (pydicom's exact bytes)."""
    src = bytes(src)
    nseg = _check(rows, columns, samples, bits_allocated)
    npix = rows * columns
    if len(src) != npix * nseg:
        raise PixelDataError(f"frame has {len(src)} bytes, expected {npix * nseg}")
    bpp = bits_allocated // 8
    body = bytearray()
    offsets = []
    for seg in range(nseg):
        sample, msb_index = divmod(seg, bpp)
        plane = src[sample * bpp + (bpp - 1 - msb_index) :: nseg]
        offsets.append(64 + len(body))
        seg_start = len(body)
        for r in range(0, npix, columns):
            _encode_row(plane[r : r + columns], body)
        if (len(body) - seg_start) % 2:
            body.append(0)
    header = struct.pack(f"<L{nseg}L", nseg, *offsets).ljust(64, b"\x00")
    return header + bytes(body)
