# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Lossless prediction filter, compiled: the twin of ``predict.py`` (the model is described
there). Both directions run without the GIL over int32 row buffers (two rows up, above,
current), so neighbours are read from already converted values and the image is touched once.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t
from libc.stdlib cimport abs, free, malloc

from hpacs._ext.predict import CONTEXTS as _PY_CONTEXTS

cdef enum:
    K = 12
assert K == _PY_CONTEXTS

CONTEXTS = K


cdef extern from *:
    int __builtin_clz(unsigned int) nogil


cdef inline int _ctx(int32_t b, int32_t c, int32_t d, int32_t e, int32_t f) noexcept nogil:
    """Bit length of |b - c| + |b - d| + |c - e| + |b - f|, capped: branch-free (clz of 2x+1).
    Only rows above: the context is off the decoder's serial chain through the left value."""
    cdef uint32_t act = <uint32_t>(abs(b - c) + abs(b - d) + abs(c - e) + abs(b - f))
    cdef int k = 31 - __builtin_clz(2 * act + 1)
    return k if k < K - 1 else K - 1


cdef inline int32_t _med(int32_t a, int32_t b, int32_t c) noexcept nogil:
    """MED as the median of (a, b, a + b - c): min/max compile to conditional moves, so the
    unpredictable three-way branch of the textbook form costs no mispredictions."""
    cdef int32_t lo = a if a < b else b
    cdef int32_t hi = a if a > b else b
    cdef int32_t g = a + b - c
    g = g if g < hi else hi
    return g if g > lo else lo


cdef inline int32_t _load(const uint8_t* p, Py_ssize_t i, int nbytes, uint32_t bias) noexcept nogil:
    """Sample i as an unsigned value; signed samples are biased to offset binary (x + 2**(bits-1),
    order preserving), which changes neither MED residuals nor contexts (both are
    translation invariant) and keeps the decoder's serial chain free of sign extension."""
    if nbytes == 1:
        return p[i] ^ bias
    return (p[2 * i] | (<int32_t>p[2 * i + 1] << 8)) ^ bias


cdef Py_ssize_t _check(Py_ssize_t n_bytes, Py_ssize_t width, Py_ssize_t height,
                       Py_ssize_t samples, int bits) except -1:
    if bits != 8 and bits != 16:
        raise ValueError(f"bits must be 8 or 16, not {bits}")
    if width < 0 or height < 0 or samples < 1:
        raise ValueError("bad image shape")
    cdef Py_ssize_t n = width * height * samples
    if n * (bits // 8) != n_bytes:
        raise ValueError(f"{n_bytes} bytes do not hold {height}x{width}x{samples} {bits}-bit")
    return n


cdef inline void _pad(int32_t* prev, int32_t* cur, Py_ssize_t row_len,
                     Py_ssize_t s) noexcept nogil:
    """Edge rules as padding (rows have 2s spare samples on the left, s on the right): the row
    above is extended by repeating its first and last pixels; column 0 sees a = b."""
    cdef Py_ssize_t ch
    for ch in range(s):
        cur[ch - s] = prev[ch]
        prev[ch - s] = prev[ch]
        prev[ch - 2 * s] = prev[ch]
        prev[row_len + ch] = prev[row_len - s + ch]


cdef int32_t* _rows(Py_ssize_t row_len, Py_ssize_t s) except NULL:
    """Three padded row buffers in one block (free() the first row's block start)."""
    cdef int32_t* rows = <int32_t*>malloc(3 * (row_len + 3 * s) * sizeof(int32_t))
    if rows == NULL:
        raise MemoryError()
    return rows


cdef inline int32_t* _row(int32_t* rows, Py_ssize_t stride, Py_ssize_t s,
                          Py_ssize_t y) noexcept nogil:
    """Row buffer ``y`` of the three in rotation (its sample 0, after the 2s left padding)."""
    return rows + (y % 3) * stride + 2 * s


def encode(data, Py_ssize_t width, Py_ssize_t height, Py_ssize_t samples, int bits, bint signed):
    """(shuffled residual planes, residual count per context)."""
    cdef const uint8_t[::1] src = memoryview(data).cast("B")
    cdef Py_ssize_t n = _check(src.shape[0], width, height, samples, bits)
    cdef int nbytes = bits // 8
    cdef Py_ssize_t counts[K]
    cdef Py_ssize_t cursor[K]
    cdef Py_ssize_t k, y, i, j, base, s = samples, row_len = width * samples
    cdef Py_ssize_t stride = row_len + 3 * s
    for k in range(K):
        counts[k] = 0
    out = PyBytes_FromStringAndSize(NULL, n * nbytes)
    if n == 0:
        return out, [0] * K
    cdef uint8_t* o = <uint8_t*>PyBytes_AS_STRING(out)
    cdef const uint8_t* p = &src[0]
    cdef uint16_t* zz = <uint16_t*>malloc(n * sizeof(uint16_t))
    cdef uint8_t* cx = <uint8_t*>malloc(n)
    if zz == NULL or cx == NULL:
        free(zz); free(cx)
        raise MemoryError()
    cdef int32_t* rows = _rows(row_len, s)
    cdef int32_t* prev2
    cdef int32_t* prev
    cdef int32_t* cur
    cdef int32_t pred, r
    cdef int ctx
    cdef uint32_t mask = (1u << bits) - 1, half = 1u << (bits - 1)
    cdef uint32_t bias = half if signed else 0
    with nogil:
        for y in range(height):
            base = y * row_len
            cur = _row(rows, stride, s, y)
            for i in range(row_len):
                cur[i] = _load(p, base + i, nbytes, bias)
            if y:
                prev = _row(rows, stride, s, y - 1)
                prev2 = _row(rows, stride, s, y - 2) if y > 1 else prev
                _pad(prev, cur, row_len, s)
            for i in range(row_len):
                if y:
                    pred = _med(cur[i - s], prev[i], prev[i - s])
                    ctx = _ctx(prev[i], prev[i - s], prev[i + s], prev[i - 2 * s], prev2[i])
                else:  # row 0: b = c = d = a, one context
                    pred = cur[i - s] if i >= s else <int32_t>bias
                    ctx = 0
                r = <int32_t>((<uint32_t>(cur[i] - pred) & mask) ^ half) - <int32_t>half
                zz[base + i] = <uint16_t>(((<uint32_t>r << 1) ^ <uint32_t>(r >> 31)) & mask)
                cx[base + i] = <uint8_t>ctx
                counts[ctx] += 1
        j = 0
        for k in range(K):
            cursor[k] = j
            j += counts[k]
        for i in range(n):
            k = cx[i]
            j = cursor[k]
            cursor[k] = j + 1
            o[j] = <uint8_t>zz[i]
            if nbytes == 2:
                o[n + j] = <uint8_t>(zz[i] >> 8)
    free(zz)
    free(cx)
    free(rows)
    return out, [counts[k] for k in range(K)]


cdef inline void _ctx_row(const int32_t* prev2, const int32_t* prev, int32_t* cx,
                          Py_ssize_t row_len, Py_ssize_t s) noexcept nogil:
    """Contexts of a whole row at once (they depend on the rows above only): the same value as
    ``_ctx``, as a sum of threshold tests so the compiler can vectorise the loop."""
    cdef Py_ssize_t i
    cdef int32_t act, b
    cdef int t
    for i in range(row_len):
        b = prev[i]
        act = abs(b - prev[i - s]) + abs(b - prev[i + s]) + abs(prev[i - s] - prev[i - 2 * s]) \
            + abs(b - prev2[i])
        t = (act >= 1) + (act >= 2) + (act >= 4) + (act >= 8) + (act >= 16) + (act >= 32) \
            + (act >= 64) + (act >= 128) + (act >= 256) + (act >= 512) + (act >= 1024)
        cx[i] = t


cdef inline bint _decode_row(const uint8_t* p, Py_ssize_t n, const int32_t* prev2,
                             const int32_t* prev, int32_t* cur, int32_t* cx, Py_ssize_t y,
                             Py_ssize_t row_len, Py_ssize_t s, Py_ssize_t* cursor,
                             const Py_ssize_t* ends, int nbytes, uint32_t bias,
                             uint32_t mask) noexcept nogil:
    """Decode one row into ``cur``; False when a stream runs out (corrupt input).

    Speed notes: contexts come from a vectorised pass over the row above; the cursors live in a
    local array and the row is written as int32 only (a byte store may alias anything and would
    force reloads); with one sample per pixel the left neighbour stays in a register."""
    cdef Py_ssize_t i, j
    cdef Py_ssize_t cs[K]
    cdef int32_t pred, r, v, a
    cdef uint32_t z
    cdef int ctx
    for ctx in range(K):
        cs[ctx] = cursor[ctx]
    if y:
        _ctx_row(prev2, prev, cx, row_len, s)
    a = cur[-s] if y else <int32_t>bias
    for i in range(row_len):
        if s != 1:
            a = cur[i - s]
        if y:
            pred = _med(a, prev[i], prev[i - s])
            ctx = cx[i]
        else:
            pred = a if i >= s else <int32_t>bias
            ctx = 0
        j = cs[ctx]
        if j >= ends[ctx]:
            return False
        cs[ctx] = j + 1
        z = p[j]
        if nbytes == 2:
            z |= <uint32_t>p[n + j] << 8
        r = <int32_t>(z >> 1) ^ -<int32_t>(z & 1)
        v = <int32_t>(<uint32_t>(pred + r) & mask)
        cur[i] = v
        a = v
    for ctx in range(K):
        cursor[ctx] = cs[ctx]
    return True


cdef inline void _store_row(const int32_t* cur, uint8_t* o, Py_ssize_t row_len, int nbytes,
                            uint32_t bias) noexcept nogil:
    cdef Py_ssize_t i
    cdef uint32_t v
    for i in range(row_len):
        v = <uint32_t>cur[i] ^ bias
        if nbytes == 1:
            o[i] = <uint8_t>v
        else:
            o[2 * i] = <uint8_t>v
            o[2 * i + 1] = <uint8_t>(v >> 8)


def decode(planes, counts, Py_ssize_t width, Py_ssize_t height, Py_ssize_t samples, int bits,
           bint signed):
    """The original pixel bytes from ``encode``'s output."""
    cdef int nbytes = bits // 8
    cdef Py_ssize_t n = _check(width * height * samples * nbytes, width, height, samples, bits)
    cdef Py_ssize_t cursor[K]
    cdef Py_ssize_t ends[K]
    cdef Py_ssize_t k, y, total = 0, s = samples, row_len = width * samples
    cdef Py_ssize_t stride = row_len + 3 * s
    if len(counts) != K:
        raise ValueError("residual counts do not match the image")
    for k in range(K):
        if counts[k] < 0:
            raise ValueError("residual counts do not match the image")
        cursor[k] = total
        total += counts[k]
        ends[k] = total
    if total != n:
        raise ValueError("residual counts do not match the image")
    cdef const uint8_t[::1] src = memoryview(planes).cast("B")
    if src.shape[0] != n * nbytes:
        raise ValueError(f"{src.shape[0]} residual bytes for {n} samples of {bits} bits")
    out = PyBytes_FromStringAndSize(NULL, n * nbytes)
    if n == 0:
        return out
    cdef uint8_t* o = <uint8_t*>PyBytes_AS_STRING(out)
    cdef const uint8_t* p = &src[0]
    cdef int32_t* rows = _rows(row_len, s)
    cdef int32_t* cx = <int32_t*>malloc(row_len * sizeof(int32_t))
    if cx == NULL:
        free(rows)
        raise MemoryError()
    cdef int32_t* prev2 = NULL
    cdef int32_t* prev = NULL
    cdef int32_t* cur
    cdef bint ok = True
    cdef uint32_t bias = (1u << (bits - 1)) if signed else 0
    with nogil:
        for y in range(height):
            cur = _row(rows, stride, s, y)
            if y:
                prev = _row(rows, stride, s, y - 1)
                prev2 = _row(rows, stride, s, y - 2) if y > 1 else prev
                _pad(prev, cur, row_len, s)
            # constant arguments: the compiler specialises each copy of the loop
            if nbytes == 2 and s == 1:
                ok = _decode_row(p, n, prev2, prev, cur, cx, y, row_len, 1, cursor, ends, 2, bias,
                                 0xFFFF)
            elif nbytes == 2:
                ok = _decode_row(p, n, prev2, prev, cur, cx, y, row_len, s, cursor, ends, 2, bias,
                                 0xFFFF)
            elif s == 1:
                ok = _decode_row(p, n, prev2, prev, cur, cx, y, row_len, 1, cursor, ends, 1, bias,
                                 0xFF)
            else:
                ok = _decode_row(p, n, prev2, prev, cur, cx, y, row_len, s, cursor, ends, 1, bias,
                                 0xFF)
            if not ok:
                break
            _store_row(cur, o + y * row_len * nbytes, row_len, nbytes, bias)
    free(rows)
    free(cx)
    if not ok:
        raise ValueError("residual streams do not match their counts")
    return out
