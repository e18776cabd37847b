# cython: language_level=3, boundscheck=False, wraparound=False
"""C-FIND matches read and encoded straight from their index rows, compiled: the twin of
``findenc.py`` (see its docstring for the plan and the value sources).

An ASCII string value (what nearly every index value is) is copied from the str object's own
buffer into the answer: no bytes object per value, no codec call. Numbers, lists, non-ASCII
values the answer's codec must replace, and unique keys that are not strings go through the
caller's ``slow`` function, which the twin uses too.
"""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdlib cimport free, malloc

from hpacs._ext._growbuf cimport Buf, buf_put

cdef extern from "Python.h":
    bint PyUnicode_IS_ASCII(object o)
    void* PyUnicode_DATA(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)
    const char* PyUnicode_AsUTF8AndSize(object o, Py_ssize_t* size) except NULL

from hpacs._ext.findenc import (
    ATTR, CHARSET, CHARSET_REQUESTED, CONST, CONST_NON_ASCII, FIELD, KEY, KEYS, LITTLE, TRUTHY,
    UNIQUE,
)

cdef int _ATTR = ATTR, _FIELD = FIELD, _TRUTHY = TRUTHY, _KEYS = KEYS
cdef int _KEY = KEY, _UNIQUE = UNIQUE, _CONST = CONST, _CHARSET = CHARSET
cdef int _LITTLE = LITTLE, _CONST_NON_ASCII = CONST_NON_ASCII
cdef int _CHARSET_REQUESTED = CHARSET_REQUESTED
cdef object _ABSENT = object()


@cython.boundscheck(True)
cdef object _resolve(list rows, tuple sources):
    cdef tuple src
    cdef int how
    cdef dict attrs
    for src in sources:
        row = rows[<Py_ssize_t>src[0]]
        how = src[1]
        if how == _ATTR:
            attrs = row.attrs
            v = attrs.get(src[2], _ABSENT)
            if v is not _ABSENT:
                return v
        elif how == _FIELD:
            return getattr(row, src[2])
        elif how == _TRUTHY:
            v = getattr(row, src[2])
            if v:
                return v
        else:
            return "\\".join(sorted(getattr(row, src[2])))
    return None


def resolve(list rows, tuple sources):
    """The value ``sources`` point at in ``rows`` (None when there is none)."""
    return _resolve(rows, sources)


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
        if not non_ascii:
            for sources in self.text_sources:
                value = _resolve(rows, sources)
                if value is None:
                    continue
                if type(value) is str and PyUnicode_IS_ASCII(value):
                    continue
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
                value = _resolve(rows, <tuple>entry[4])
                if fast and type(value) is int:
                    value = str(value)  # a count (IS): what the slow path writes, faster
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
