# cython: language_level=3
"""A growable byte buffer the compiled encoders write into (C-FIND identifiers in _findenc,
framed pages of pending responses in _findwalk): one definition, inlined where cimported."""

from libc.stdlib cimport realloc
from libc.string cimport memcpy


cdef struct Buf:
    char* p
    Py_ssize_t n
    Py_ssize_t cap


cdef inline int buf_put(Buf* b, const char* src, Py_ssize_t n) except -1:
    """Append ``n`` bytes, doubling the allocation when full (the owner frees ``b.p``)."""
    cdef Py_ssize_t cap
    cdef char* p
    if b.n + n > b.cap:
        cap = b.cap * 2
        if cap < b.n + n:
            cap = b.n + n
        p = <char*>realloc(b.p, cap)
        if p == NULL:
            raise MemoryError()
        b.p = p
        b.cap = cap
    if n:
        memcpy(b.p + b.n, src, n)
    b.n += n
    return 0
