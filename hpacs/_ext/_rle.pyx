# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""RLE Lossless (PS3.5 Annex G) codec, compiled: the twin of ``rle.py`` (see its docstring).

Decoding writes every segment straight into its interleaved little-endian position (no planar
intermediate); encoding walks each byte plane row by row. Both run without the GIL.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport uint8_t, uint32_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

from hpacs._ext.rle import PixelDataError


cdef int _check(int rows, int columns, int samples, int bits_allocated) except -1:
    if bits_allocated <= 0 or bits_allocated % 8:
        raise PixelDataError(f"RLE needs Bits Allocated a multiple of 8, not {bits_allocated}")
    if rows <= 0 or columns <= 0 or samples <= 0:
        raise PixelDataError(f"bad frame size {rows}x{columns}x{samples}")
    cdef int nseg = samples * (bits_allocated // 8)
    if nseg > 15:
        raise PixelDataError(f"RLE allows at most 15 segments, this frame needs {nseg}")
    return nseg


cdef inline uint32_t _u32(const uint8_t* p) noexcept nogil:
    return p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)


cdef Py_ssize_t _decode_segment(const uint8_t* src, Py_ssize_t pos, Py_ssize_t end,
                                uint8_t* out, Py_ssize_t need, Py_ssize_t stride) noexcept nogil:
    """Decode into out[0], out[stride], ...; return how many bytes were produced (<= need)."""
    cdef Py_ssize_t got = 0, n, k
    cdef uint8_t h, b
    while pos < end and got < need:
        h = src[pos]
        pos += 1
        if h < 128:
            n = h + 1
            if n > end - pos:
                n = end - pos
            if n > need - got:
                n = need - got
            if stride == 1:
                memcpy(out + got, src + pos, n)
            else:
                for k in range(n):
                    out[(got + k) * stride] = src[pos + k]
            got += n
            pos += h + 1
        elif h > 128:
            if pos >= end:
                break
            b = src[pos]
            pos += 1
            n = 257 - h
            if n > need - got:
                n = need - got
            if stride == 1:
                memset(out + got, b, n)
            else:
                for k in range(n):
                    out[(got + k) * stride] = b
            got += n
    return got


def decode_frame(src, int rows, int columns, int samples, int bits_allocated):
    """Decode one RLE frame into little-endian, sample-interleaved bytes (a bytearray)."""
    cdef int nseg = _check(rows, columns, samples, bits_allocated)
    cdef const uint8_t[::1] view = memoryview(src).cast("B") if not isinstance(src, bytes) else src
    cdef Py_ssize_t n = view.shape[0]
    if n < 64:
        raise PixelDataError(f"RLE frame of {n} bytes is shorter than its 64-byte header")
    cdef const uint8_t* s = &view[0]
    cdef uint32_t count = _u32(s)
    if count != <uint32_t>nseg:
        raise PixelDataError(f"RLE frame has {count} segments, expected {nseg}")
    cdef Py_ssize_t npix = <Py_ssize_t>rows * columns
    cdef int bpp = bits_allocated // 8
    out = bytearray(npix * nseg)
    cdef uint8_t[::1] oview = out
    cdef uint8_t* o = &oview[0]
    cdef Py_ssize_t offs[16]
    cdef Py_ssize_t got[15]
    cdef int seg, bad = -1
    for seg in range(nseg):
        offs[seg] = min(<Py_ssize_t>_u32(s + 4 + 4 * seg), n)
    offs[nseg] = n
    with nogil:
        for seg in range(nseg):
            got[seg] = _decode_segment(
                s, offs[seg], max(offs[seg], offs[seg + 1]),
                o + (seg // bpp) * bpp + (bpp - 1 - seg % bpp), npix, nseg)
            if got[seg] < npix:
                bad = seg
                break
    if bad >= 0:
        raise PixelDataError(f"RLE segment {bad} decodes to {got[bad]} bytes, expected {npix}")
    return out


cdef inline Py_ssize_t _flush(const uint8_t* row, Py_ssize_t start, Py_ssize_t length,
                              uint8_t* out, Py_ssize_t o) noexcept nogil:
    cdef Py_ssize_t k = start, end = start + length, c
    while k < end:
        c = min(128, end - k)
        out[o] = <uint8_t>(c - 1)
        memcpy(out + o + 1, row + k, c)
        o += c + 1
        k += c
    return o


cdef Py_ssize_t _encode_plane(const uint8_t* src, Py_ssize_t stride, Py_ssize_t rows,
                              Py_ssize_t columns, uint8_t* row, uint8_t* out) noexcept nogil:
    """Encode one byte plane (src[0], src[stride], ...) row by row; return the output length."""
    cdef Py_ssize_t o = 0, r, i, j, g, full, rest, lit_start, lit_len
    cdef uint8_t b
    for r in range(rows):
        for i in range(columns):
            row[i] = src[(r * columns + i) * stride]
        lit_start = 0
        lit_len = 0
        i = 0
        while i < columns:
            b = row[i]
            j = i + 1
            while j < columns and row[j] == b:
                j += 1
            g = j - i
            if g == 1:
                if lit_len == 0:
                    lit_start = i
                lit_len += 1
            else:
                o = _flush(row, lit_start, lit_len, out, o)
                lit_len = 0
                full = g // 128
                rest = g % 128
                while full > 0:
                    out[o] = 129
                    out[o + 1] = b
                    o += 2
                    full -= 1
                if rest > 1:
                    out[o] = <uint8_t>(257 - rest)
                    out[o + 1] = b
                    o += 2
                elif rest == 1:
                    out[o] = 0
                    out[o + 1] = b
                    o += 2
            i = j
        o = _flush(row, lit_start, lit_len, out, o)
    if o % 2:
        out[o] = 0
        o += 1
    return o


def encode_frame(src, int rows, int columns, int samples, int bits_allocated):
    """Encode one little-endian, sample-interleaved frame as RLE (pydicom's exact bytes)."""
    cdef int nseg = _check(rows, columns, samples, bits_allocated)
    cdef const uint8_t[::1] view = memoryview(src).cast("B") if not isinstance(src, bytes) else src
    cdef Py_ssize_t npix = <Py_ssize_t>rows * columns
    if view.shape[0] != npix * nseg:
        raise PixelDataError(f"frame has {view.shape[0]} bytes, expected {npix * nseg}")
    cdef int bpp = bits_allocated // 8
    cdef Py_ssize_t cap = 64 + nseg * (2 * npix + 2)
    cdef uint8_t* out = <uint8_t*>malloc(cap)
    cdef uint8_t* row = <uint8_t*>malloc(columns + 1)
    cdef Py_ssize_t o = 64, seg
    cdef const uint8_t* s = &view[0]
    if out == NULL or row == NULL:
        free(out)
        free(row)
        raise MemoryError()
    try:
        memset(out, 0, 64)
        out[0] = <uint8_t>nseg
        with nogil:
            for seg in range(nseg):
                out[4 + 4 * seg] = o & 0xFF
                out[5 + 4 * seg] = (o >> 8) & 0xFF
                out[6 + 4 * seg] = (o >> 16) & 0xFF
                out[7 + 4 * seg] = (o >> 24) & 0xFF
                o += _encode_plane(s + (seg // bpp) * bpp + (bpp - 1 - seg % bpp), nseg,
                                   rows, columns, row, out + o)
        return PyBytes_FromStringAndSize(<char*>out, o)
    finally:
        free(out)
        free(row)
