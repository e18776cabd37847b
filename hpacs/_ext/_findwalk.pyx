# cython: language_level=3, boundscheck=False, wraparound=False
"""The candidates of a query page turned into matches, compiled: the twin of ``findwalk.py``
(see its docstring).

What it saves per candidate: the interpreter's loop, row fetch and cache (no tuple key per
lookup), the patient key of an ASCII study row built in place, and the name-prefix check of an
ASCII value (strip, casefold, compare) without a call or a new string.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.dict cimport PyDict_GetItem, PyDict_SetItem
from cpython.list cimport PyList_Append
from cpython.object cimport PyObject
from libc.string cimport memcpy

cdef extern from "Python.h":
    bint PyUnicode_IS_ASCII(object o)
    void* PyUnicode_DATA(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)

from hpacs._ext.findwalk import CACHE_MAX

cdef Py_ssize_t _CACHE_MAX = CACHE_MAX
#: the longest key hpacs.index.db.key leaves as it is
cdef Py_ssize_t _MAX_KEY = 480


cdef inline char _lower(char c):
    if 65 <= c <= 90:
        return c + 32
    return c


cdef int _prefix_match(object value, str pre, bint fold, bint pn):
    """1 / 0 when an ASCII string ``value`` does / does not start with ``pre`` as the
    matcher's candidates would (``pre`` ASCII, casefolded when ``fold``); -1: undecided here
    (not a string, not ASCII, several values, PN component groups): ask the matcher."""
    cdef const char* s
    cdef const char* p
    cdef Py_ssize_t n, end, m, i
    cdef char c
    if type(value) is not str or not PyUnicode_IS_ASCII(value):
        return -1
    n = PyUnicode_GET_LENGTH(value)
    s = <const char*>PyUnicode_DATA(value)
    for i in range(n):
        c = s[i]
        if c == 92 or (pn and c == 61):  # backslash: several values; "=": component groups
            return -1
    if n == 0:
        return 0  # an empty value never matches
    end = n
    if pn:
        while end > 0 and (s[end - 1] == 94 or s[end - 1] == 32):  # rstrip("^ =") sans "="
            end -= 1
    else:
        while end > 0 and s[end - 1] == 32:
            end -= 1
    m = PyUnicode_GET_LENGTH(pre)
    if end < m:
        return 0
    p = <const char*>PyUnicode_DATA(pre)
    if fold:
        for i in range(m):
            if _lower(s[i]) != p[i]:
                return 0
    else:
        for i in range(m):
            if s[i] != p[i]:
                return 0
    return 1


cdef object _patient_key(object pkey, object row):
    """``pkey(row.patient_id, row.issuer)``, the bytes built in place when both are ASCII."""
    cdef object pid = row.patient_id
    cdef object issuer = row.issuer
    cdef Py_ssize_t a, b
    cdef char* out
    if (type(pid) is str and type(issuer) is str and PyUnicode_IS_ASCII(pid)
            and PyUnicode_IS_ASCII(issuer)):
        a = PyUnicode_GET_LENGTH(pid)
        b = PyUnicode_GET_LENGTH(issuer)
        if a + 1 + b <= _MAX_KEY:
            k = PyBytes_FromStringAndSize(NULL, a + 1 + b)
            out = PyBytes_AS_STRING(k)
            if a:
                memcpy(out, PyUnicode_DATA(pid), a)
            out[a] = 0
            if b:
                memcpy(out + a + 1, PyUnicode_DATA(issuer), b)
            return k
    return pkey(pid, issuer)


cdef class RowWalker:
    """The rows of the matches among a query's candidates: the same as findwalk.RowWalker."""

    cdef tuple decoders, checks
    cdef int depth
    cdef object patient_key, resolve

    def __init__(self, tuple decoders, int depth, tuple checks, patient_key, resolve):
        if not 0 <= depth <= 3 or len(decoders) != depth + 1:
            raise ValueError("one decoder per level 0..depth (depth 0..3)")
        for check in checks:
            if len(check) != 3:
                raise ValueError("a check is (match, sources, prefix)")
            prefix = check[2]
            if prefix is not None and (len(prefix) != 3 or type(prefix[0]) is not str):
                raise ValueError("a prefix is (literal, fold, pn)")
        self.decoders, self.depth, self.checks = decoders, depth, checks
        self.patient_key, self.resolve = patient_key, resolve

    def collect(self, keys, tuple gets, list out, Py_ssize_t size, Py_ssize_t budget):
        """See findwalk.RowWalker.collect."""
        cdef list caches = [{} for _ in range(self.depth + 1)]
        cdef Py_ssize_t examined = 0
        cdef tuple check, prefix
        cdef int r
        cdef str pre
        resolve = self.resolve
        for k in keys:
            examined += 1
            rows = self._rows(gets, k, caches)
            if rows is not None:
                for check in self.checks:
                    value = resolve(rows, check[1])
                    r = -1
                    if check[2] is not None:
                        prefix = <tuple>check[2]
                        pre = <str>prefix[0]
                        if PyUnicode_IS_ASCII(pre):
                            r = _prefix_match(value, pre, bool(prefix[1]), bool(prefix[2]))
                    if r < 0:
                        r = 1 if check[0](value) else 0
                    if r == 0:
                        break
                else:
                    PyList_Append(out, rows)
            if len(out) >= size or examined >= budget:
                return False
        return True

    cdef object _rows(self, tuple gets, object k, list caches):
        cdef int d = self.depth
        cdef list rows = [None] * (d + 1)
        cdef dict cache
        cdef PyObject* hit
        rk = k
        while d >= 0:
            cache = <dict>caches[d]
            hit = PyDict_GetItem(cache, rk)
            if hit != NULL:
                row = <object>hit
            else:
                raw = gets[d](rk)
                row = None if raw is None else self.decoders[d](raw)
                if d < 3:  # instance rows are never shared: not cached
                    if len(cache) > _CACHE_MAX:
                        cache.clear()
                    PyDict_SetItem(cache, rk, row)
            if row is None:
                return None
            rows[d] = row
            if d == 3:
                rk = row.series_uid.encode()
            elif d == 2:
                rk = row.study_uid.encode()
            elif d == 1:
                rk = _patient_key(self.patient_key, row)
            d -= 1
        return rows
