# cython: language_level=3, boundscheck=False, wraparound=False
"""C-FIND matches read and encoded straight from their index rows, compiled: the twin of
``findenc.py`` (see its docstring for the plan and the value sources).

An ASCII string value (what nearly every index value is) is copied from the str object's own
buffer into the answer: no bytes object per value, no codec call. Numbers, lists, non-ASCII
values the answer's codec must replace, and unique keys that are not strings go through the
caller's ``slow`` function, which the twin uses too.
"""

cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdlib cimport free, malloc
from libc.string cimport memcmp

from hpacs._ext._growbuf cimport Buf, buf_put

cdef extern from "Python.h":
    bint PyUnicode_IS_ASCII(object o)
    void* PyUnicode_DATA(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)
    const char* PyUnicode_AsUTF8AndSize(object o, Py_ssize_t* size) except NULL
    long long PyLong_AsLongLongAndOverflow(object o, int* overflow) except? -1
    object PyUnicode_DecodeUTF8(const char* s, Py_ssize_t size, const char* errors)

from hpacs._ext.findenc import (
    ATTR, CHARSET, CHARSET_REQUESTED, CONST, CONST_NON_ASCII, FIELD, KEY, KEYS, LITTLE, TRUTHY,
    UNIQUE, raw_attrs,
)

cdef int _ATTR = ATTR, _FIELD = FIELD, _TRUTHY = TRUTHY, _KEYS = KEYS
cdef int _KEY = KEY, _UNIQUE = UNIQUE, _CONST = CONST, _CHARSET = CHARSET
cdef int _LITTLE = LITTLE, _CONST_NON_ASCII = CONST_NON_ASCII
cdef int _CHARSET_REQUESTED = CHARSET_REQUESTED
cdef object _ABSENT = object()


# ------------------------------------------------------------------ raw msgpack attrs
# A view row's attrs (hpacs.index.db.PatientView ...) are the msgpack map as stored: a value is
# found by walking the map's keys (a few per row) and read in place when it is a string.

cdef inline Py_ssize_t _be(const unsigned char* p, int n):
    cdef Py_ssize_t v = 0
    cdef int i
    for i in range(n):
        v = (v << 8) | p[i]
    return v


cdef int _str_at(const unsigned char* p, Py_ssize_t n, Py_ssize_t* pos,
                 const unsigned char** sp, Py_ssize_t* sn):
    """1: a string at ``pos[0]`` (``sp``, ``sn`` set, ``pos`` moved past it); 0: another type
    (``pos`` unmoved); -1: truncated."""
    cdef Py_ssize_t i = pos[0], hl, ln
    cdef unsigned char b
    if i >= n:
        return -1
    b = p[i]
    if 0xa0 <= b <= 0xbf:
        hl, ln = 1, b & 0x1f
    elif b == 0xd9 or b == 0xda or b == 0xdb:
        hl = 2 if b == 0xd9 else (3 if b == 0xda else 5)
        if i + hl > n:
            return -1
        ln = _be(p + i + 1, <int>(hl - 1))
    else:
        return 0
    if i + hl + ln > n:
        return -1
    sp[0] = p + i + hl
    sn[0] = ln
    pos[0] = i + hl + ln
    return 1


cdef int _skip(const unsigned char* p, Py_ssize_t n, Py_ssize_t* pos, int depth):
    """Move ``pos`` past one msgpack object; -1 when malformed, truncated or too deep."""
    cdef Py_ssize_t i = pos[0], count = 0, k, hl
    cdef unsigned char b
    if i >= n or depth > 32:
        return -1
    b = p[i]
    if b <= 0x7f or b >= 0xe0 or b == 0xc0 or b == 0xc2 or b == 0xc3:
        pos[0] = i + 1
        return 0
    if 0xa0 <= b <= 0xbf:
        k = i + 1 + (b & 0x1f)
    elif b == 0xcc or b == 0xd0:
        k = i + 2
    elif b == 0xcd or b == 0xd1:
        k = i + 3
    elif b == 0xce or b == 0xd2 or b == 0xca:
        k = i + 5
    elif b == 0xcf or b == 0xd3 or b == 0xcb:
        k = i + 9
    elif 0xd4 <= b <= 0xd8:  # fixext 1, 2, 4, 8, 16
        k = i + 2 + (1 << (b - 0xd4))
    elif b == 0xd9 or b == 0xc4 or b == 0xc7:  # str8, bin8, ext8
        if i + 2 > n:
            return -1
        k = i + 2 + p[i + 1] + (1 if b == 0xc7 else 0)
    elif b == 0xda or b == 0xc5 or b == 0xc8:
        if i + 3 > n:
            return -1
        k = i + 3 + _be(p + i + 1, 2) + (1 if b == 0xc8 else 0)
    elif b == 0xdb or b == 0xc6 or b == 0xc9:
        if i + 5 > n:
            return -1
        k = i + 5 + _be(p + i + 1, 4) + (1 if b == 0xc9 else 0)
    else:  # containers
        if 0x90 <= b <= 0x9f:
            hl, count = 1, b & 0x0f
        elif 0x80 <= b <= 0x8f:
            hl, count = 1, 2 * (b & 0x0f)
        elif b == 0xdc or b == 0xde:
            hl = 3
            if i + hl > n:
                return -1
            count = _be(p + i + 1, 2) * (2 if b == 0xde else 1)
        elif b == 0xdd or b == 0xdf:
            hl = 5
            if i + hl > n:
                return -1
            count = _be(p + i + 1, 4) * (2 if b == 0xdf else 1)
        else:
            return -1  # 0xc1: never used
        pos[0] = i + hl
        for k in range(count):
            if _skip(p, n, pos, depth + 1) < 0:
                return -1
        return 0
    if k > n:
        return -1
    pos[0] = k
    return 0


cdef enum:
    _MAX_ENTRIES = 64  # a map with more entries is read by the fallback (decoded)


cdef struct RawMap:
    # state 0: not read yet, 1: read, -1: not readable here (the fallback decodes it)
    int state
    Py_ssize_t n
    const unsigned char* kp[_MAX_ENTRIES]
    Py_ssize_t kn[_MAX_ENTRIES]
    const unsigned char* vp[_MAX_ENTRIES]
    Py_ssize_t vn[_MAX_ENTRIES]  # a string's length; -1: another type


cdef int _read_map(object raw, RawMap* m) except -2:
    """Index the msgpack map ``raw`` (a view row's attrs) into ``m``: each string key and
    where its value is. The buffer stays valid while the row holds ``raw``."""
    cdef Py_buffer view
    cdef const unsigned char* p
    cdef Py_ssize_t n, pos, count, i
    cdef unsigned char b
    cdef int r
    m.state = -1
    m.n = 0
    PyObject_GetBuffer(raw, &view, PyBUF_SIMPLE)
    try:
        p = <const unsigned char*>view.buf
        n = view.len
        if n < 1:
            return -1
        b = p[0]
        if 0x80 <= b <= 0x8f:
            count, pos = b & 0x0f, 1
        elif b == 0xde and n >= 3:
            count, pos = _be(p + 1, 2), 3
        elif b == 0xdf and n >= 5:
            count, pos = _be(p + 1, 4), 5
        else:
            return -1
        if count > _MAX_ENTRIES:
            return -1
        for i in range(count):
            if _str_at(p, n, &pos, &m.kp[i], &m.kn[i]) != 1:
                return -1
            r = _str_at(p, n, &pos, &m.vp[i], &m.vn[i])
            if r < 0:
                return -1
            if r == 0:
                m.vn[i] = -1
                if _skip(p, n, &pos, 0) < 0:
                    return -1
        m.n = count
        m.state = 1
        return 1
    finally:
        PyBuffer_Release(&view)


cdef int _map_find(RawMap* m, const char* key, Py_ssize_t klen):
    """The entry of ``key`` in a read map (the last one, as a decoder keeps), -1: absent."""
    cdef Py_ssize_t i = m.n - 1
    while i >= 0:
        if m.kn[i] == klen and memcmp(m.kp[i], key, klen) == 0:
            return <int>i
        i -= 1
    return -1


cdef object _SPAN = object()  # _resolve_span: the value is the string at vp[:vn]


@cython.boundscheck(True)
cdef object _resolve_span(list rows, tuple sources, RawMap* maps,
                          const unsigned char** vp, Py_ssize_t* vn):
    """:func:`resolve`, except that a string found in a view row's raw attrs is not made an
    object: ``_SPAN`` is returned and ``vp``, ``vn`` hold its UTF-8 bytes. ``maps``: one
    RawMap per level (state 0 until the level's attrs are first read)."""
    cdef tuple src
    cdef int how, i
    cdef Py_ssize_t level, j
    cdef dict attrs
    cdef str name
    cdef RawMap* m
    for j in range(len(sources)):
        src = <tuple>sources[j]
        level = <Py_ssize_t>src[0]
        row = rows[level]
        how = src[1]
        if how == _ATTR:
            a = row.attrs
            if type(a) is dict:
                attrs = <dict>a
                v = attrs.get(src[2], _ABSENT)
                if v is not _ABSENT:
                    return v
                continue
            name = <str>src[2]
            m = &maps[level]
            if m.state == 0:
                _read_map(a, m)
            if m.state == 1 and PyUnicode_IS_ASCII(name):
                i = _map_find(m, <const char*>PyUnicode_DATA(name), PyUnicode_GET_LENGTH(name))
                if i < 0:
                    continue
                if m.vn[i] >= 0:
                    vp[0] = m.vp[i]
                    vn[0] = m.vn[i]
                    return _SPAN
            v = (<dict>raw_attrs(a)).get(name, _ABSENT)
            if v is not _ABSENT:
                return v
        elif how == _FIELD:
            return getattr(row, src[2])
        elif how == _TRUTHY:
            v = getattr(row, src[2])
            if v:
                return v
        else:
            keys = getattr(row, src[2])
            if type(keys) is dict and len(<dict>keys) == 1:  # one modality: no sort, no join
                for k in <dict>keys:
                    if type(k) is str:
                        return k
            return "\\".join(sorted(keys))
    return None


cdef Py_ssize_t _digits(long long v, char* out):
    """``str(v)`` of an integer into ``out`` (at least 21 bytes): its length."""
    cdef char tmp[24]
    cdef Py_ssize_t n = 0, i = 0
    cdef unsigned long long u = <unsigned long long>v
    if v < 0:
        out[0] = 45  # "-"
        i = 1
        u = <unsigned long long>0 - u
    while True:
        tmp[n] = <char>(48 + u % 10)
        n += 1
        u //= 10
        if u == 0:
            break
    while n > 0:
        n -= 1
        out[i] = tmp[n]
        i += 1
    return i


cdef inline bint _ascii_bytes(const unsigned char* p, Py_ssize_t n):
    cdef Py_ssize_t i
    for i in range(n):
        if p[i] >= 0x80:
            return False
    return True


cdef object _resolve(list rows, tuple sources, RawMap* maps):
    cdef const unsigned char* vp = NULL
    cdef Py_ssize_t vn = 0
    v = _resolve_span(rows, sources, maps, &vp, &vn)
    if v is _SPAN:
        try:
            return PyUnicode_DecodeUTF8(<const char*>vp, vn, NULL)
        except UnicodeDecodeError:
            return _fallback(rows, sources)
    return v


cdef object _fallback(list rows, tuple sources):
    """The twin's answer (a string the strict UTF-8 decoder refused: msgspec's decoder says)."""
    from hpacs._ext.findenc import resolve as twin_resolve
    return twin_resolve(rows, sources)


def resolve(list rows, tuple sources):
    """The value ``sources`` point at in ``rows`` (None when there is none)."""
    cdef RawMap maps[4]
    maps[0].state = maps[1].state = maps[2].state = maps[3].state = 0
    return _resolve(rows, sources, maps)


cdef inline int _put(Buf* b, const char* src, Py_ssize_t n) except -1:
    return buf_put(b, src, n)


cdef int _put_bytes(Buf* b, bytes data) except -1:
    return _put(b, PyBytes_AS_STRING(data), len(data))


cdef int _put_len(Buf* b, Py_ssize_t n, bint long_len, bint little) except -1:
    cdef unsigned char h[4]
    cdef int i
    if n > 0xFFFFFFFF or (not long_len and n > 0xFFFF):
        raise OverflowError(f"element value of {n} bytes is too long for its length field")
    if long_len:
        for i in range(4):
            h[i if little else 3 - i] = (n >> (8 * i)) & 0xFF
        return _put(b, <char*>h, 4)
    for i in range(2):
        h[i if little else 1 - i] = (n >> (8 * i)) & 0xFF
    return _put(b, <char*>h, 2)


cdef int _put_element(Buf* b, bytes head, const char* data, Py_ssize_t n, bint long_len,
                      bint little, bytes pad) except -1:
    """header, length and the value padded to an even length"""
    cdef bint odd = n & 1
    _put_bytes(b, head)
    _put_len(b, n + odd, long_len, little)
    if n:
        _put(b, data, n)
    if odd:
        _put(b, PyBytes_AS_STRING(pad), 1)
    return 0


cdef class RowEncoder:
    """Encodes the identifier of each match of one C-FIND (see findenc.py); the same bytes as
    its twin."""

    cdef tuple plan, text_sources
    cdef int flags
    cdef object slow, non_ascii_of

    def __init__(self, tuple plan, tuple text_sources, int flags, slow, non_ascii_of):
        self.plan, self.text_sources, self.flags = plan, text_sources, flags
        self.slow, self.non_ascii_of = slow, non_ascii_of

    def encode(self, list rows):
        """The identifier of the match whose rows are ``rows``."""
        cdef int flags = self.flags
        cdef bint non_ascii = (flags & _CONST_NON_ASCII) != 0
        cdef bint little = (flags & _LITTLE) != 0
        cdef tuple entry, sources
        cdef int kind
        cdef bint fast, ascii_only, long_len
        cdef Py_ssize_t n
        cdef const char* data
        cdef bytes raw, head, pad
        cdef Buf b
        cdef const unsigned char* vp = NULL
        cdef Py_ssize_t vn = 0
        cdef RawMap maps[4]
        cdef char num[32]
        cdef int overflow = 0
        cdef long long iv
        maps[0].state = maps[1].state = maps[2].state = maps[3].state = 0
        if not non_ascii:
            for sources in self.text_sources:
                value = _resolve_span(rows, sources, maps, &vp, &vn)
                if value is _SPAN:
                    if _ascii_bytes(vp, vn):
                        continue
                    value = _resolve(rows, sources, maps)
                if value is None:
                    continue
                if type(value) is str:
                    if PyUnicode_IS_ASCII(value):
                        continue
                    non_ascii = True  # what non_ascii_of answers for a non-ASCII string
                    break
                if self.non_ascii_of(value):
                    non_ascii = True
                    break
        codec = "utf-8" if non_ascii else "ascii"
        b.n = 0
        b.cap = 512
        b.p = <char*>malloc(b.cap)
        if b.p == NULL:
            raise MemoryError()
        try:
            for entry in self.plan:
                kind = entry[0]
                if kind == _CONST:
                    _put_bytes(&b, <bytes>(<tuple>entry[4])[1 if non_ascii else 0])
                    continue
                if kind == _CHARSET:
                    if non_ascii:
                        _put_bytes(&b, <bytes>(<tuple>entry[4])[0])
                    elif flags & _CHARSET_REQUESTED:
                        _put_bytes(&b, <bytes>(<tuple>entry[4])[1])
                    continue
                head = entry[1]
                long_len = entry[2]
                fast = entry[5]
                pad = entry[6]
                value = _resolve_span(rows, <tuple>entry[4], maps, &vp, &vn)
                if value is _SPAN:
                    if fast and vn > 0 and _ascii_bytes(vp, vn):
                        # a view row's ASCII string, copied from the row's own bytes
                        _put_element(&b, head, <const char*>vp, vn, long_len, little, pad)
                        continue
                    value = _resolve(rows, <tuple>entry[4], maps)
                if fast and type(value) is int:
                    # a count (IS): its decimal digits, as str(value) and the slow path write
                    iv = PyLong_AsLongLongAndOverflow(value, &overflow)
                    if overflow == 0:
                        n = _digits(iv, num)
                        _put_element(&b, head, num, n, long_len, little, pad)
                        continue
                    value = str(value)
                if fast and type(value) is str and PyUnicode_GET_LENGTH(value) > 0:
                    if PyUnicode_IS_ASCII(value):
                        _put_element(&b, head, <const char*>PyUnicode_DATA(value),
                                     PyUnicode_GET_LENGTH(value), long_len, little, pad)
                        continue
                    ascii_only = entry[7]
                    if non_ascii and not ascii_only:
                        try:
                            data = PyUnicode_AsUTF8AndSize(value, &n)
                        except UnicodeError:
                            pass  # lone surrogates: the codec replaces them, as in the twin
                        else:
                            _put_element(&b, head, data, n, long_len, little, pad)
                            continue
                    raw = value.encode("ascii" if ascii_only else codec, "replace")
                    _put_element(&b, head, PyBytes_AS_STRING(raw), len(raw), long_len, little,
                                 pad)
                    continue
                if kind == _UNIQUE:
                    raw = self.slow(entry[3], value, codec, False) if value else b""
                else:
                    raw = self.slow(entry[3], value, codec, True)
                # slow() pads already: its bytes are the whole value field
                _put_bytes(&b, head)
                _put_len(&b, len(raw), long_len, little)
                _put_bytes(&b, raw)
            return PyBytes_FromStringAndSize(b.p, b.n)
        finally:
            free(b.p)
