# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Fused modality LUT + VOI + 8-bit kernel, compiled: the twin of ``voi.py`` (see its docstring).

One pass over the stored values, no intermediate array, the GIL released: 8/16-bit integers
with a LINEAR/LINEAR_EXACT window and no modality LUT take the float32 path (a loop gcc turns
into SIMD: int -> float32, multiply, add, truncate to int32, clamp; coefficients from the twin's
``linear_coeffs``), other integer data whose range is small goes through a stored-value ->
uint8 table built here (same function, same double arithmetic as the twin), everything else is
computed per pixel. Built with ``-ffp-contract=off`` (setup.py): no fused multiply-add, so the
float32 and double sequences are the twin's.
"""

from cpython.buffer cimport (
    PyBUF_C_CONTIGUOUS,
    PyBUF_WRITABLE,
    PyBuffer_Release,
    PyObject_GetBuffer,
)
from cython.parallel cimport prange
from libc.math cimport exp, floor
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t
from libc.stdlib cimport free, malloc

import numpy as np

from hpacs._ext.voi import (
    LINEAR,
    LINEAR_EXACT,
    MAX_TABLE,
    PARALLEL_MIN,
    SIGMOID,
    TABLE,
    _validate,
    linear_coeffs,
)

ctypedef fused pix_t:
    uint8_t
    int8_t
    uint16_t
    int16_t
    uint32_t
    int32_t
    float
    double

ctypedef fused small_t:
    uint8_t
    int8_t
    uint16_t
    int16_t


cdef extern from *:
    """
    #include <stdint.h>
    #include <stddef.h>
    #if defined(__AVX512BW__)
    #include <immintrin.h>
    /* 64 pixels of 16-bit stored values at a time: the same float32 operations as the plain
       loop, then int32 -> uint8 by saturating packs (which clamp to [0, 255] exactly as the
       plain loop's min/max) and one dword permute restoring the order the in-lane packs
       interleave. Returns how many pixels it did (a multiple of 64). */
    static size_t hpacs_voi_linear16(const void* src, int is_signed, uint8_t* o, size_t n,
                                     int32_t x0, float a, float b, uint8_t flip) {
        const __m512i vx0 = _mm512_set1_epi32(x0);
        const __m512 va = _mm512_set1_ps(a), vb = _mm512_set1_ps(b);
        const __m512i vflip = _mm512_set1_epi8((char)flip);
        const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13,
                                                2, 6, 10, 14, 3, 7, 11, 15);
        const int16_t* s = (const int16_t*)src;
        size_t i = 0;
        for (; i + 64 <= n; i += 64) {
            __m512i v[4];
            for (int k = 0; k < 4; k++) {
                __m256i h = _mm256_loadu_si256((const __m256i*)(s + i + 16 * k));
                __m512i x = is_signed ? _mm512_cvtepi16_epi32(h) : _mm512_cvtepu16_epi32(h);
                __m512 u = _mm512_add_ps(
                    _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(x, vx0)), va), vb);
                v[k] = _mm512_cvttps_epi32(u);
            }
            __m512i bytes = _mm512_packus_epi16(_mm512_packs_epi32(v[0], v[1]),
                                                _mm512_packs_epi32(v[2], v[3]));
            bytes = _mm512_permutexvar_epi32(order, bytes);
            _mm512_storeu_si512((void*)(o + i), _mm512_xor_si512(bytes, vflip));
        }
        return i;
    }
    #else
    static size_t hpacs_voi_linear16(const void* src, int is_signed, uint8_t* o, size_t n,
                                     int32_t x0, float a, float b, uint8_t flip) {
        return 0;
    }
    #endif
    """
    size_t hpacs_voi_linear16(const void* src, int is_signed, uint8_t* o, size_t n,
                              int32_t x0, float a, float b, uint8_t flip) noexcept nogil


cdef void _linear(const small_t* s, uint8_t* o, Py_ssize_t n, int32_t x0, float a, float b,
                  uint8_t flip) noexcept nogil:
    """The float32 path (see the twin's ``_linear_u8``): written for gcc's vectorizer; 16-bit
    input first goes through the AVX-512 block kernel above where the CPU has it."""
    cdef Py_ssize_t i, start = 0
    cdef int32_t v
    if small_t is int16_t or small_t is uint16_t:
        start = <Py_ssize_t>hpacs_voi_linear16(s, small_t is int16_t, o, n, x0, a, b, flip)
    for i in range(start, n):
        v = <int32_t>(<float>(<int32_t>s[i] - x0) * a + b)  # |.| < 2**30: linear_coeffs
        v = v if v > 0 else 0
        v = v if v < 255 else 255
        o[i] = <uint8_t>v ^ flip


cdef struct Params:
    double slope
    double intercept
    const uint16_t* mlut
    int64_t mlut_n
    int64_t mlut_first
    int func
    double center
    double width
    const uint16_t* vlut
    int64_t vlut_n
    double vlut_first
    double vlut_scale
    bint invert


cdef inline uint8_t _value(double x, bint is_int, const Params* p) noexcept nogil:
    cdef double y, t, c, w, d
    cdef int64_t i
    if p.mlut != NULL:
        i = <int64_t>x - p.mlut_first
        if i < 0:
            i = 0
        elif i > p.mlut_n - 1:
            i = p.mlut_n - 1
        y = <double>p.mlut[i]
    else:
        y = x * p.slope + p.intercept
    if p.func == 0 or p.func == 1:
        if p.func == 0:
            c = p.center - 0.5
            w = p.width - 1.0
        else:
            c = p.center
            w = p.width
        if y <= c - w / 2:
            t = 0.0
        elif y > c + w / 2:
            t = 255.0
        else:
            t = ((y - c) / w + 0.5) * 255.0
    elif p.func == 2:
        t = 255.0 / (1.0 + exp(-4.0 * (y - p.center) / p.width))
    else:
        if y >= p.vlut_first:
            d = y - p.vlut_first
            if d > <double>(p.vlut_n - 1):
                i = p.vlut_n - 1
            else:
                i = <int64_t>d
        else:
            i = 0
        t = <double>p.vlut[i] * p.vlut_scale
    t = floor(t + 0.5)
    if t < 0.0:
        t = 0.0
    elif t > 255.0:
        t = 255.0
    if p.invert:
        return <uint8_t>(255 - <int>t)
    return <uint8_t>t


cdef void _run(const pix_t* s, uint8_t* o, Py_ssize_t n, int64_t lo, int64_t hi,
               bint use_table, const Params* p, uint8_t* tab) noexcept nogil:
    cdef Py_ssize_t i
    cdef int64_t v, span = hi - lo
    cdef uint64_t_ d
    if pix_t is float or pix_t is double:
        for i in range(n):
            o[i] = _value(<double>s[i], False, p)
        return
    if not use_table:
        for i in range(n):
            o[i] = _value(<double>s[i], True, p)
        return
    if n == 0:
        return
    # Only the values present need a table entry: one min/max pass (vectorized) usually makes
    # the table far smaller than the Bits Stored range, and lets the main loop skip the range
    # check.
    cdef double dmin, dmax
    cdef int64_t a, b
    _minmax(s, n, &dmin, &dmax)
    a = <int64_t>dmin
    b = <int64_t>dmax
    if a >= lo and b <= hi:
        for v in range(a, b + 1):
            tab[v - a] = _value(<double>v, True, p)
        for i in range(n):
            o[i] = tab[<int64_t>s[i] - a]
        return
    for v in range(lo, hi + 1):
        tab[v - lo] = _value(<double>v, True, p)
    if (pix_t is uint8_t or pix_t is int8_t or pix_t is uint16_t or pix_t is int16_t) and (
            lo <= _type_min(s) and hi >= _type_max(s)):
        # the table covers every value of the type: no range check
        for i in range(n):
            o[i] = tab[<int64_t>s[i] - lo]
        return
    for i in range(n):
        d = <uint64_t_>(<int64_t>s[i] - lo)
        if d <= <uint64_t_>span:
            o[i] = tab[d]
        else:
            o[i] = _value(<double>s[i], True, p)


cdef inline int64_t _type_min(const pix_t* s) noexcept nogil:
    if pix_t is int8_t:
        return -128
    elif pix_t is int16_t:
        return -32768
    elif pix_t is int32_t:
        return -2147483648
    return 0


cdef inline int64_t _type_max(const pix_t* s) noexcept nogil:
    if pix_t is uint8_t:
        return 255
    elif pix_t is int8_t:
        return 127
    elif pix_t is uint16_t:
        return 65535
    elif pix_t is int16_t:
        return 32767
    return 4294967295


ctypedef unsigned long long uint64_t_


cdef void _minmax(const pix_t* s, Py_ssize_t n, double* lo, double* hi) noexcept nogil:
    cdef pix_t a = s[0], b = s[0], v
    cdef Py_ssize_t i
    for i in range(1, n):
        v = s[i]
        if v < a:
            a = v
        if v > b:
            b = v
    lo[0] = <double>a
    hi[0] = <double>b


cdef enum:
    T_U8 = 1
    T_I8 = 2
    T_U16 = 3
    T_I16 = 4
    T_U32 = 5
    T_I32 = 6
    T_F32 = 7
    T_F64 = 8

_TYPES = {"B": T_U8, "b": T_I8, "H": T_U16, "h": T_I16, "I": T_U32, "i": T_I32,
          "f": T_F32, "d": T_F64}
if np.dtype(np.uint32).char != "I" or np.dtype(np.int32).char != "i":  # pragma: no cover
    raise ImportError("unexpected numpy type codes")


cdef void* _data(a) except NULL:
    """Start of a C-contiguous, non-empty array's memory (the caller keeps ``a`` alive): the
    buffer protocol directly, ~10x cheaper than a memoryview of a reshaped view."""
    cdef Py_buffer view
    PyObject_GetBuffer(a, &view, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE)
    cdef void* p = view.buf
    PyBuffer_Release(&view)
    return p


cdef const void* _cdata(a) except NULL:
    cdef Py_buffer view
    PyObject_GetBuffer(a, &view, PyBUF_C_CONTIGUOUS)
    cdef const void* p = view.buf
    PyBuffer_Release(&view)
    return p


cdef void _linear_split(const small_t* s, uint8_t* o, Py_ssize_t n, int32_t x0, float a,
                        float b, uint8_t flip, int parts) noexcept nogil:
    """``_linear`` over ``parts`` contiguous slices, one OpenMP thread each."""
    cdef Py_ssize_t k, start, end
    if parts <= 1:
        _linear(s, o, n, x0, a, b, flip)
        return
    for k in prange(parts, num_threads=parts, schedule="static"):
        start = (n * k // parts) & ~(<Py_ssize_t>63)
        end = n if k == parts - 1 else (n * (k + 1) // parts) & ~(<Py_ssize_t>63)
        _linear(s + start, o + start, end - start, x0, a, b, flip)


cdef void _dispatch_linear(int t, const void* s, uint8_t* o, Py_ssize_t n, int32_t x0, float a,
                           float b, uint8_t flip, int parts) noexcept:
    with nogil:
        if t == T_U8:
            _linear_split(<const uint8_t*>s, o, n, x0, a, b, flip, parts)
        elif t == T_I8:
            _linear_split(<const int8_t*>s, o, n, x0, a, b, flip, parts)
        elif t == T_U16:
            _linear_split(<const uint16_t*>s, o, n, x0, a, b, flip, parts)
        else:
            _linear_split(<const int16_t*>s, o, n, x0, a, b, flip, parts)


def _dispatch_minmax(src):
    cdef double lo = 0, hi = 0
    cdef Py_ssize_t n = src.size
    cdef const void* s = _cdata(src)
    cdef int t = _TYPES[src.dtype.char]
    with nogil:
        if t == T_U8:
            _minmax(<const uint8_t*>s, n, &lo, &hi)
        elif t == T_I8:
            _minmax(<const int8_t*>s, n, &lo, &hi)
        elif t == T_U16:
            _minmax(<const uint16_t*>s, n, &lo, &hi)
        elif t == T_I16:
            _minmax(<const int16_t*>s, n, &lo, &hi)
        elif t == T_U32:
            _minmax(<const uint32_t*>s, n, &lo, &hi)
        elif t == T_I32:
            _minmax(<const int32_t*>s, n, &lo, &hi)
        elif t == T_F32:
            _minmax(<const float*>s, n, &lo, &hi)
        else:
            _minmax(<const double*>s, n, &lo, &hi)
    return lo, hi


def minmax(src):
    """Smallest and largest value of ``src`` (ints for integer arrays)."""
    a = np.ascontiguousarray(src)
    if a.size == 0:
        raise ValueError("empty array")
    if a.dtype.kind not in "iuf" or a.dtype.itemsize > 8 or (
            a.dtype.kind in "iu" and a.dtype.itemsize > 4) or a.dtype.byteorder == ">":
        return (int(a.min()), int(a.max())) if a.dtype.kind in "iub" else (
            float(a.min()), float(a.max()))
    lo, hi = _dispatch_minmax(a)
    return (int(lo), int(hi)) if a.dtype.kind in "iu" else (lo, hi)


def window_u8(
    src,
    out,
    *,
    double slope=1.0,
    double intercept=0.0,
    mlut=None,
    long long mlut_first=0,
    int func=LINEAR,
    double center=127.5,
    double width=256.0,
    vlut=None,
    long long vlut_first=0,
    double vlut_scale=1.0,
    bint invert=False,
    long long lo=0,
    long long hi=-1,
    int threads=1,
):
    """Map ``src`` (stored values) into ``out`` (uint8, same shape, C-contiguous); ``threads``:
    see the twin."""
    if _validate(src, out, mlut, func, width, vlut) is None:
        return
    cdef Params p
    cdef const uint16_t[::1] mview
    cdef const uint16_t[::1] vview
    p.slope = slope
    p.intercept = intercept
    p.mlut = NULL
    p.mlut_n = 0
    p.mlut_first = mlut_first
    p.func = func
    p.center = center
    p.width = width
    p.vlut = NULL
    p.vlut_n = 0
    p.vlut_first = <double>vlut_first
    p.vlut_scale = vlut_scale
    p.invert = invert
    if mlut is not None:
        mview = np.ascontiguousarray(mlut, dtype=np.uint16)
        p.mlut = &mview[0]
        p.mlut_n = mview.shape[0]
    if vlut is not None:
        vview = np.ascontiguousarray(vlut, dtype=np.uint16)
        p.vlut = &vview[0]
        p.vlut_n = vview.shape[0]
    cdef Py_ssize_t n = src.size
    cdef const void* s = _cdata(src)
    cdef uint8_t* o = <uint8_t*>_data(out)
    cdef int t = _TYPES[src.dtype.char]
    coeffs = linear_coeffs(src.dtype.char, slope, intercept, mlut, func, center, width)
    if coeffs is not None:
        _dispatch_linear(t, s, o, n, coeffs[0], coeffs[1], coeffs[2], 255 if invert else 0,
                         max(1, threads) if n >= PARALLEL_MIN else 1)
        return
    cdef bint use_table = src.dtype.kind in "iu" and 0 < hi - lo + 1 <= MAX_TABLE
    cdef uint8_t* tab = NULL
    if use_table:
        tab = <uint8_t*>malloc(hi - lo + 1)
        if tab == NULL:
            raise MemoryError()
    try:
        with nogil:
            if t == T_U8:
                _run(<const uint8_t*>s, o, n, lo, hi, use_table, &p, tab)
            elif t == T_I8:
                _run(<const int8_t*>s, o, n, lo, hi, use_table, &p, tab)
            elif t == T_U16:
                _run(<const uint16_t*>s, o, n, lo, hi, use_table, &p, tab)
            elif t == T_I16:
                _run(<const int16_t*>s, o, n, lo, hi, use_table, &p, tab)
            elif t == T_U32:
                _run(<const uint32_t*>s, o, n, lo, hi, use_table, &p, tab)
            elif t == T_I32:
                _run(<const int32_t*>s, o, n, lo, hi, use_table, &p, tab)
            elif t == T_F32:
                _run(<const float*>s, o, n, lo, hi, use_table, &p, tab)
            else:
                _run(<const double*>s, o, n, lo, hi, use_table, &p, tab)
    finally:
        free(tab)
