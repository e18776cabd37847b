# cython: language_level=3, boundscheck=False, wraparound=False
"""The candidates of a query page turned into matches, compiled: the twin of ``findwalk.py``
(see its docstring).

What it saves per candidate: the interpreter's loop, row fetch and cache (no tuple key per
lookup), the patient key of an ASCII study row built in place, and the name-prefix check of an
ASCII value (strip, casefold, compare) without a call or a new string; and a page of pending
responses framed straight into one buffer. The candidate sources (scan, dedup, children) are
iterator objects instead of generators: no frame to resume per key, the cursor stepped by
py-lmdb's own iterators.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.dict cimport PyDict_GetItem, PyDict_SetItem
from cpython.list cimport PyList_Append
from cpython.object cimport PyObject
from libc.stdlib cimport free, malloc
from libc.string cimport memcmp, memcpy

from hpacs._ext._growbuf cimport Buf, buf_put

cdef extern from "Python.h":
    bint PyUnicode_IS_ASCII(object o)
    void* PyUnicode_DATA(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)

from hpacs._ext.findwalk import ABOVE, CACHE_MAX, EXACT, NEVER, PREFIX

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


cdef int _prefix_match_str(str value, str pre, bint fold, bint pn):
    """:func:`_prefix_match` for any string (non-ASCII: casefolded by Python, as the matcher
    does); -1 when the matcher must decide (several values, PN component groups)."""
    if "\\" in value or (pn and "=" in value):
        return -1
    if not value:
        return 0
    c = value.rstrip("^ =") if pn else value.rstrip(" ")
    if fold:
        c = c.casefold()
    return 1 if c.startswith(pre) else 0


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

    def collect(self, keys, tuple gets, list out, Py_ssize_t size, Py_ssize_t budget,
                tuple having=None):
        """See findwalk.RowWalker.collect."""
        cdef list caches = [{} for _ in range(self.depth + 1)]
        cdef Py_ssize_t examined = 0
        cdef tuple check, prefix, probe_values = None
        cdef int r
        cdef str pre
        cdef bint kept
        resolve = self.resolve
        probe = None
        if having is not None:
            probe, probe_values = having[0], <tuple?>having[1]
        for k in keys:
            examined += 1
            if probe is not None:
                kept = False
                for v in probe_values:
                    if probe(v, k):
                        kept = True
                        break
                if not kept:
                    if examined >= budget:
                        return False
                    continue
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
                        if r < 0 and type(value) is str:
                            r = _prefix_match_str(<str>value, pre, bool(prefix[1]),
                                                  bool(prefix[2]))
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


cdef inline int _put(Buf* b, const char* src, Py_ssize_t n) except -1:
    return buf_put(b, src, n)


cdef int _put_pdv_header(Buf* b, Py_ssize_t n, int context_id, int flags) except -1:
    """P-DATA-TF PDU header (type, reserved, length) + PDV item header (length, context ID,
    message control header) for a PDV of ``n`` data bytes."""
    cdef unsigned char h[12]
    cdef unsigned long pdu = n + 6, item = n + 2
    h[0] = 0x04
    h[1] = 0
    h[2] = (pdu >> 24) & 0xFF
    h[3] = (pdu >> 16) & 0xFF
    h[4] = (pdu >> 8) & 0xFF
    h[5] = pdu & 0xFF
    h[6] = (item >> 24) & 0xFF
    h[7] = (item >> 16) & 0xFF
    h[8] = (item >> 8) & 0xFF
    h[9] = item & 0xFF
    h[10] = context_id
    h[11] = flags
    return _put(b, <char*>h, 12)


def frame_matches(encode, list matches, bytes pending_pdu, int context_id, Py_ssize_t pdu_limit):
    """See findwalk.frame_matches."""
    cdef Py_ssize_t chunk = pdu_limit - 6
    cdef Py_ssize_t n, off, part
    cdef const char* src
    cdef bytes data
    cdef Buf b
    if chunk < 1 or not 0 < context_id < 256:
        raise ValueError("P-DATA-TF framing: bad PDU limit or presentation context ID")
    b.n = 0
    b.cap = 1024 + len(matches) * (len(pending_pdu) + 512)
    b.p = <char*>malloc(b.cap)
    if b.p == NULL:
        raise MemoryError()
    try:
        for rows in matches:
            _put(&b, PyBytes_AS_STRING(pending_pdu), len(pending_pdu))
            data = encode(rows)
            n = len(data)
            src = PyBytes_AS_STRING(data)
            if n <= chunk:
                _put_pdv_header(&b, n, context_id, 2)
                _put(&b, src, n)
                continue
            off = 0
            while off < n:
                part = n - off if n - off < chunk else chunk
                _put_pdv_header(&b, part, context_id, 2 if off + part >= n else 0)
                _put(&b, src + off, part)
                off += part
        return PyBytes_FromStringAndSize(b.p, b.n)
    finally:
        free(b.p)


cdef int _NEVER = NEVER, _PREFIX = PREFIX, _EXACT = EXACT, _ABOVE = ABOVE


cdef inline bint _stopped(bytes k, int stop, bytes bound):
    cdef Py_ssize_t n
    if stop == _PREFIX:
        n = len(bound)
        return len(k) < n or memcmp(PyBytes_AS_STRING(k), PyBytes_AS_STRING(bound), n) != 0
    if stop == _EXACT:
        return k != bound
    if stop == _ABOVE:
        return k > bound
    return False


cdef class Scan:
    """findwalk.scan as an iterator object: the cursor steps through py-lmdb's own iterator
    (one C call per key), the range end is tested on the key's bytes."""

    cdef object state, cur, it
    cdef int stop
    cdef bytes bound
    cdef bint dup, started, finished

    def __init__(self, state, cur):
        self.state, self.cur = state, cur
        self.stop = state.stop
        self.bound = state.bound if state.stop != _NEVER else b""
        self.dup = state.dup
        self.it = None
        self.started = self.finished = False

    def __iter__(self):
        return self

    cdef _finish(self):
        self.finished = True
        self.it = None
        self.state.done = True

    def __next__(self):
        cdef object item
        cdef bytes k
        if self.finished:
            raise StopIteration
        state, cur = self.state, self.cur
        if not self.started:
            self.started = True
            if state.done:
                self.finished = True
                raise StopIteration
            last = state.last
            if last is None:
                ok = cur.set_range(state.lo)
            elif self.dup:
                lk, lv = last
                ok = cur.set_range_dup(lk, lv)
                if ok and cur.value() == lv:
                    ok = cur.next()
                elif not ok:
                    ok = cur.set_range(lk + b"\0")
            else:
                ok = cur.set_range(last[0])
                if ok and cur.key() == last[0]:
                    ok = cur.next()
            if not ok:
                self._finish()
                raise StopIteration
            self.it = cur.iternext(True, self.dup)
        item = next(self.it, None)
        if item is None:
            self._finish()
            raise StopIteration
        if self.dup:
            k = (<tuple>item)[0]
            if _stopped(k, self.stop, self.bound):
                self._finish()
                raise StopIteration
            state.last = item
            return (<tuple>item)[1]
        k = item
        if _stopped(k, self.stop, self.bound):
            self._finish()
            raise StopIteration
        state.last = (k, k)
        return k


cdef class Dedup:
    """findwalk.dedup as an iterator object."""

    cdef set seen
    cdef object it

    def __init__(self, set seen, keys):
        self.seen, self.it = seen, iter(keys)

    def __iter__(self):
        return self

    def __next__(self):
        while True:
            k = next(self.it)
            if k not in self.seen:
                self.seen.add(k)
                return k


cdef class Children:
    """findwalk.children as an iterator object: a parent's children through py-lmdb's own
    duplicate iterator."""

    cdef object state, cur, parents, dups
    cdef bint strip, resumed, finished

    def __init__(self, state, cur, parents, bint strip):
        self.state, self.cur, self.parents, self.strip = state, cur, iter(parents), strip
        self.dups = None
        self.resumed = self.finished = False

    def __iter__(self):
        return self

    def __next__(self):
        cdef object v
        if self.finished:
            raise StopIteration
        state, cur = self.state, self.cur
        while True:
            if self.dups is not None:
                v = next(self.dups, None)
                if v is not None:
                    state.last = v
                    return (<bytes>v)[4:] if self.strip else v
                self.dups = None
            if not self.resumed:
                self.resumed = True
                current = state.current
                if current is not None:
                    last = state.last
                    if last is None:
                        ok = cur.set_key(current)
                    else:
                        ok = cur.set_range_dup(current, last)
                        if ok and cur.value() == last:
                            ok = cur.next_dup()
                    if ok:
                        self.dups = cur.iternext_dup(False, True)
                    continue
            try:
                parent = next(self.parents)
            except StopIteration:
                self.finished = True
                state.current = None
                raise
            state.current, state.last = parent, None
            if cur.set_key(parent):
                self.dups = cur.iternext_dup(False, True)


scan, dedup, children = Scan, Dedup, Children
