# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Incremental DICOM data set header scanner, compiled.

The twin of ``headscan.py``: same state machine, same error messages (see that module's docstring
for the model). The inner loop works on a C pointer into the chunk; Python objects appear only
when a wanted value is stored or an error is raised.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

from hpacs._ext.headscan import ScanError

cdef enum:
    MAX_DEPTH_C = 128
    K_TOP = 0
    K_ITEM = 1
    K_SQ = 2
    K_FRAG = 3
    S_HEADER = 0
    S_SKIP = 1
    S_COLLECT = 2
    S_FAILED = 3
    VR_SHORT = 1
    VR_LONG = 2
    VR_SQ = 3
    VR_UN = 4

cdef uint32_t UNDEFINED = 0xFFFFFFFFu
cdef uint32_t ITEM = 0xFFFEE000u
cdef uint32_t ITEM_DELIM = 0xFFFEE00Du
cdef uint32_t SEQ_DELIM = 0xFFFEE0DDu
cdef uint32_t PIXEL_DATA = 0x7FE00010u
cdef int64_t NO_LIMIT = (<int64_t>1) << 62

# VR class by (first letter - 'A') * 26 + (second letter - 'A'); 0 = not a VR.
cdef uint8_t VR_TABLE[676]


cdef void _init_vr_table():
    cdef int i
    for i in range(676):
        VR_TABLE[i] = 0
    for vr in "AE AS AT CS DA DS DT FL FD IS LO LT PN SH SL SS ST TM UI UL US".split():
        VR_TABLE[(ord(vr[0]) - 65) * 26 + ord(vr[1]) - 65] = VR_SHORT
    for vr in "OB OD OF OL OV OW SV UC UR UT UV".split():
        VR_TABLE[(ord(vr[0]) - 65) * 26 + ord(vr[1]) - 65] = VR_LONG
    VR_TABLE[(ord("S") - 65) * 26 + ord("Q") - 65] = VR_SQ
    VR_TABLE[(ord("U") - 65) * 26 + ord("N") - 65] = VR_UN


_init_vr_table()
MAX_DEPTH = MAX_DEPTH_C


cdef inline int _vr_class(uint8_t a, uint8_t b) noexcept:
    if a < 65 or a > 90 or b < 65 or b > 90:
        return 0
    return VR_TABLE[(a - 65) * 26 + (b - 65)]


cdef inline uint16_t _u16(const uint8_t* p, bint le) noexcept:
    if le:
        return <uint16_t>(p[0] | (p[1] << 8))
    return <uint16_t>((p[0] << 8) | p[1])


cdef inline uint32_t _u32(const uint8_t* p, bint le) noexcept:
    if le:
        return (<uint32_t>p[0]) | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | (<uint32_t>p[3])


def _t(uint32_t tag):
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


#: Sorted wanted-tag lists by the frozenset they came from: the ingest path builds one scanner
#: per instance, always with the same frozenset: sort it once.
cdef dict _SORTED_TAGS = {}


cdef list _sorted_tags(wanted):
    cdef list tags
    if type(wanted) is frozenset:
        tags = _SORTED_TAGS.get(wanted)
        if tags is None:
            tags = sorted({int(t) for t in wanted})
            if len(_SORTED_TAGS) < 64:
                _SORTED_TAGS[wanted] = tags
        return tags
    return sorted({int(t) for t in wanted})


cdef struct Frame:
    int kind
    int64_t end
    int64_t limit
    bint explicit
    bint little


cdef class HeaderScanner:
    """Walks a data set fed in arbitrary chunks; collects raw values of wanted top-level tags."""

    cdef uint32_t* _wanted
    cdef Py_ssize_t _n_wanted
    cdef int64_t _max_wanted
    cdef int64_t _max_len
    cdef int64_t _seen
    cdef int64_t _pos
    cdef int _state
    cdef uint8_t _hdr[12]
    cdef int _hdr_len
    cdef int64_t _remaining
    cdef uint32_t _tag
    cdef bytes _cbuf
    cdef int64_t _cfill
    cdef dict _values
    cdef str _error
    cdef int _kind
    cdef int64_t _end
    cdef int64_t _limit
    cdef bint _explicit
    cdef bint _little
    cdef Frame _stack[MAX_DEPTH_C]
    cdef int _depth

    def __cinit__(self):
        self._wanted = NULL

    def __init__(self, wanted, explicit_vr, little_endian, max_value_length=1024):
        tags = _sorted_tags(wanted)
        if tags and (tags[0] < 0 or tags[len(tags) - 1] > 0xFFFFFFFF):
            raise ValueError("wanted tags must be 32-bit unsigned integers")
        if max_value_length < 0:
            raise ValueError("max_value_length must be >= 0")
        free(self._wanted)
        self._n_wanted = len(tags)
        self._wanted = <uint32_t*>malloc((self._n_wanted + 1) * sizeof(uint32_t))
        if self._wanted == NULL:
            raise MemoryError()
        cdef Py_ssize_t k
        for k in range(self._n_wanted):
            self._wanted[k] = <uint32_t>tags[k]
        self._max_wanted = tags[len(tags) - 1] if tags else -1
        self._max_len = int(max_value_length)
        self._seen = 0
        self._pos = 0
        self._state = S_HEADER
        self._hdr_len = 0
        self._remaining = 0
        self._tag = 0
        self._cbuf = None
        self._cfill = 0
        self._values = {}
        self._error = ""
        self._kind = K_TOP
        self._end = -1
        self._limit = NO_LIMIT
        self._explicit = bool(explicit_vr)
        self._little = bool(little_endian)
        self._depth = 0

    def __dealloc__(self):
        free(self._wanted)

    @property
    def bytes_seen(self):
        """Bytes fed so far."""
        return self._seen

    def feed(self, data):
        """Consume the next chunk; raises ScanError as soon as the framing is known to be bad."""
        if self._state == S_FAILED:
            raise ScanError(self._error)
        cdef const uint8_t[::1] view
        try:
            view = data
        except (ValueError, TypeError):
            view = memoryview(data).cast("B")
        cdef Py_ssize_t n = view.shape[0]
        if n == 0:
            return
        self._seen += n
        try:
            self._run(&view[0], n)
        except ScanError as exc:
            self._state = S_FAILED
            self._error = str(exc)
            raise

    cdef int _run(self, const uint8_t* data, Py_ssize_t n) except -1:
        cdef Py_ssize_t i = 0, avail, used
        cdef int64_t take
        cdef int have, add
        cdef uint8_t tmp[12]
        while i < n:
            if self._state == S_SKIP:
                avail = n - i
                take = self._remaining
                if take > avail:
                    self._remaining = take - avail
                    self._pos += avail
                    return 0
                i += take
                self._pos += take
                self._remaining = 0
                self._state = S_HEADER
                self._close_ended()
            elif self._state == S_COLLECT:
                avail = n - i
                take = self._remaining
                if take > avail:
                    take = avail
                memcpy(PyBytes_AS_STRING(self._cbuf) + self._cfill, data + i, take)
                self._cfill += take
                self._remaining -= take
                self._pos += take
                i += take
                if self._remaining == 0:
                    self._values[self._tag] = self._cbuf
                    self._cbuf = None
                    self._state = S_HEADER
                    self._close_ended()
            elif self._hdr_len:
                have = self._hdr_len
                add = 12 - have
                if add > n - i:
                    add = <int>(n - i)
                memcpy(tmp, self._hdr, have)
                memcpy(tmp + have, data + i, add)
                used = self._header(tmp, have + add)
                if used == 0:
                    memcpy(self._hdr, tmp, have + add)
                    self._hdr_len = have + add
                    i += add
                else:
                    self._hdr_len = 0
                    i += used - have
            else:
                used = self._header(data + i, n - i)
                if used == 0:
                    memcpy(self._hdr, data + i, n - i)
                    self._hdr_len = <int>(n - i)
                    return 0
                i += used
        return 0

    def finish(self):
        """The collected values; raises ScanError unless the stream ended between top-level
        elements with nothing left open."""
        if self._state == S_FAILED:
            raise ScanError(self._error)
        msg = ""
        if self._hdr_len:
            msg = f"stream ends inside an element header at offset {self._pos}"
        elif self._state != S_HEADER:
            msg = (
                f"stream ends inside the value of {_t(self._tag)}: "
                f"{self._remaining} bytes missing"
            )
        elif self._kind != K_TOP:
            msg = f"stream ends inside an open sequence or item (depth {self._depth})"
        if msg:
            self._state = S_FAILED
            self._error = msg
            raise ScanError(msg)
        return dict(self._values)

    # -- the state machine ----------------------------------------------------------------------

    cdef Py_ssize_t _header(self, const uint8_t* b, Py_ssize_t a) except -1:
        """Parse one header at b[0:a]; 0 when more bytes are needed, else its length."""
        if a < 8:
            return 0
        cdef bint le = self._little
        cdef uint32_t group = _u16(b, le)
        cdef uint32_t tag = (group << 16) | _u16(b + 2, le)
        cdef int vr = 0
        cdef uint32_t length
        cdef int hlen
        if group == 0xFFFE:
            length = _u32(b + 4, le)
            hlen = 8
        elif self._explicit:
            vr = _vr_class(b[4], b[5])
            if vr == 0:
                raise ScanError(
                    f"invalid VR bytes 0x{b[4]:02X}{b[5]:02X} in {_t(tag)} "
                    f"at offset {self._pos}"
                )
            if vr >= VR_LONG:
                if a < 12:
                    return 0
                length = _u32(b + 8, le)
                hlen = 12
            else:
                length = _u16(b + 6, le)
                hlen = 8
        else:
            length = _u32(b + 4, le)
            hlen = 8
        self._element(tag, vr, length, hlen)
        return hlen

    cdef inline bint _is_wanted(self, uint32_t tag) noexcept:
        cdef Py_ssize_t lo = 0, hi = self._n_wanted, mid
        while lo < hi:
            mid = (lo + hi) >> 1
            if self._wanted[mid] < tag:
                lo = mid + 1
            else:
                hi = mid
        return lo < self._n_wanted and self._wanted[lo] == tag

    cdef int _element(self, uint32_t tag, int vr, uint32_t length, int hlen) except -1:
        cdef int64_t p = self._pos
        cdef int64_t q = p + hlen
        cdef int64_t end
        if q > self._limit:
            raise ScanError(f"header of {_t(tag)} at offset {p} overruns its enclosing item")
        self._pos = q
        self._tag = tag
        cdef int kind = self._kind
        if kind >= K_SQ:
            if tag == ITEM:
                if length == UNDEFINED:
                    if kind == K_FRAG:
                        raise ScanError(f"undefined-length fragment at offset {p}")
                    self._push(K_ITEM, -1, self._limit, self._explicit, self._little)
                else:
                    end = q + length
                    if end > self._limit:
                        raise ScanError(f"item at offset {p} overruns its enclosing item")
                    if kind == K_FRAG:
                        if length != 0:
                            self._state = S_SKIP
                            self._remaining = length
                    else:
                        self._push(K_ITEM, end, end, self._explicit, self._little)
            elif tag == SEQ_DELIM:
                if self._end != -1:
                    raise ScanError(f"sequence delimiter in a defined-length sequence at {p}")
                if length != 0:
                    raise ScanError(f"sequence delimiter with non-zero length at offset {p}")
                self._pop()
            else:
                raise ScanError(f"expected an item, found {_t(tag)} at offset {p}")
        elif (tag >> 16) == 0xFFFE:
            if tag != ITEM_DELIM or kind != K_ITEM or self._end != -1:
                raise ScanError(f"unexpected {_t(tag)} at offset {p}")
            if length != 0:
                raise ScanError(f"item delimiter with non-zero length at offset {p}")
            self._pop()
        elif length == UNDEFINED:
            if tag == PIXEL_DATA and vr != VR_SQ:
                self._push(K_FRAG, -1, self._limit, self._explicit, self._little)
            elif vr == VR_SQ or not self._explicit:
                self._push(K_SQ, -1, self._limit, self._explicit, self._little)
            elif vr == VR_UN:  # PS3.5 6.2.2: undefined-length UN is an implicit VR LE sequence
                self._push(K_SQ, -1, self._limit, False, True)
            else:
                raise ScanError(f"undefined length for {_t(tag)} at offset {p}")
        else:
            end = q + length
            if end > self._limit:
                raise ScanError(f"value of {_t(tag)} at offset {p} overruns its enclosing item")
            if vr == VR_SQ:
                self._push(K_SQ, end, end, self._explicit, self._little)
            elif (
                kind == K_TOP
                and tag <= self._max_wanted
                and length <= self._max_len
                and self._is_wanted(tag)
            ):
                if length == 0:
                    self._values[tag] = b""
                else:
                    self._state = S_COLLECT
                    self._remaining = length
                    self._cbuf = PyBytes_FromStringAndSize(NULL, length)
                    self._cfill = 0
            elif length != 0:
                self._state = S_SKIP
                self._remaining = length
        if self._state == S_HEADER:
            self._close_ended()
        return 0

    cdef int _push(self, int kind, int64_t end, int64_t limit, bint explicit,
                   bint little) except -1:
        if self._depth >= MAX_DEPTH_C:
            raise ScanError(f"nesting deeper than {MAX_DEPTH_C} at offset {self._pos}")
        cdef Frame* f = &self._stack[self._depth]
        f.kind = self._kind
        f.end = self._end
        f.limit = self._limit
        f.explicit = self._explicit
        f.little = self._little
        self._depth += 1
        self._kind = kind
        self._end = end
        self._limit = limit
        self._explicit = explicit
        self._little = little
        return 0

    cdef inline void _pop(self) noexcept:
        self._depth -= 1
        cdef Frame* f = &self._stack[self._depth]
        self._kind = f.kind
        self._end = f.end
        self._limit = f.limit
        self._explicit = f.explicit
        self._little = f.little

    cdef inline void _close_ended(self) noexcept:
        while self._end == self._pos:
            self._pop()
