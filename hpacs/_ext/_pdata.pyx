# cython: language_level=3
"""The P-DATA receive path in C (twin and oracle: ``hpacs._ext.pdata``).

Framing, the PDV split and the context check of every received chunk run in one call, with the
PDU and PDV headers read straight from the buffer: the Python twin spends a struct unpack, a
slice and several attribute look-ups per PDU and per PDV. Same entries, same errors (messages
and A-ABORT reasons), same memory bound; the tests hold the two equal on arbitrary streams.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_FromStringAndSize
from libc.string cimport memcpy

from hpacs._ext.pdata import (
    ABORT_REASON_INVALID_PARAMETER,
    ABORT_REASON_UNRECOGNIZED_PDU,
    MAX_CONTROL_PDU,
    PDV,
    PDUError,
)

cdef int P_DATA_TF = 0x04
cdef object _new_pdv = tuple.__new__


cdef inline Py_ssize_t _u32(const unsigned char *p) noexcept nogil:
    return (<Py_ssize_t>p[0] << 24) | (<Py_ssize_t>p[1] << 16) | (<Py_ssize_t>p[2] << 8) | p[3]


cdef object _split(object body, const unsigned char *b, Py_ssize_t n, object contexts):
    """The PDVs of one P-DATA-TF body, or the PDUError (returned) that it is malformed or names
    a context not in ``contexts``. ``body`` is the memoryview over ``b[:n]``."""
    cdef list out = []
    cdef Py_ssize_t off = 0, length, end
    cdef int ctx, mch
    cdef object bad = None  # first PDV context not accepted; reported after the whole split
    if n >= 6 and _u32(b) == n - 4:  # the usual case: one PDV filling the PDU
        ctx = b[4]
        mch = b[5]
        if contexts is not None and ctx not in contexts:
            bad = ctx
        out.append(_new_pdv(PDV, (ctx, (mch & 1) == 1, (mch & 2) == 2, body[6:])))
    else:
        while off < n:
            if n - off < 6:
                return PDUError("truncated PDV item header")
            length = _u32(b + off)
            end = off + 4 + length
            if length < 2 or end > n:
                return PDUError(f"PDV item length {length} does not fit the PDU")
            ctx = b[off + 4]
            mch = b[off + 5]
            if bad is None and contexts is not None and ctx not in contexts:
                bad = ctx
            out.append(_new_pdv(PDV, (ctx, (mch & 1) == 1, (mch & 2) == 2, body[off + 6:end])))
            off = end
    if bad is not None:
        return PDUError(f"PDV for presentation context {bad}, not accepted",
                        ABORT_REASON_INVALID_PARAMETER)
    return out


cdef class PDataFramer:
    """Splits a byte stream into (pdu_type, body, pdvs) entries; see the twin for the contract."""

    cdef public Py_ssize_t max_pdata
    cdef public Py_ssize_t max_control
    cdef public object contexts
    cdef public object error
    cdef unsigned char _header[6]
    cdef Py_ssize_t _hlen
    cdef object _partial  # bytearray of a PDU body split across chunks, or None
    cdef Py_ssize_t _fill
    cdef int _type

    def __init__(self, Py_ssize_t max_pdata, Py_ssize_t max_control=MAX_CONTROL_PDU,
                 contexts=None):
        self.max_pdata = max_pdata
        self.max_control = max_control
        self.contexts = contexts
        self.error = None
        self._hlen = 0
        self._partial = None
        self._fill = 0
        self._type = 0

    @property
    def buffered(self):
        """Bytes held for an incomplete PDU."""
        return self._hlen + (6 + self._fill if self._partial is not None else 0)

    cdef object _refusal(self, int pdu_type, Py_ssize_t length):
        """The PDUError refusing this PDU from its header alone, or None."""
        cdef Py_ssize_t limit
        if pdu_type < 1 or pdu_type > 7:
            return PDUError(f"unrecognized PDU type 0x{pdu_type:02X}",
                            ABORT_REASON_UNRECOGNIZED_PDU)
        limit = self.max_pdata if pdu_type == P_DATA_TF else self.max_control
        if length > limit:
            return PDUError(
                f"PDU type 0x{pdu_type:02X} of {length} bytes exceeds the maximum of {limit}",
                ABORT_REASON_INVALID_PARAMETER)
        return None

    cdef inline void _fail(self, object error):
        self.error = error
        self._hlen = 0
        self._partial = None

    cdef inline void _emit(self, list out, int pdu_type, object body, const unsigned char *b,
                           Py_ssize_t n):
        if pdu_type == P_DATA_TF:
            out.append((pdu_type, body, _split(body, b, n, self.contexts)))
        else:
            out.append((pdu_type, body, None))

    def feed(self, data):
        """Append ``data``; return the PDUs it completes, in order (see the twin)."""
        cdef list out = []
        cdef Py_buffer view
        if self.error is not None or not data:
            return out
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            self._feed(data, <const unsigned char *>view.buf, view.len, out)
        finally:
            PyBuffer_Release(&view)
        return out

    cdef int _feed(self, object data, const unsigned char *p, Py_ssize_t n, list out) except -1:
        cdef Py_ssize_t pos = 0, take, length, end, have, size
        cdef int pdu_type
        cdef object mv = None
        cdef object buf, body, error
        cdef char *dst
        # 1. finish a PDU (or header) left over from earlier chunks
        if self._hlen:
            take = min(6 - self._hlen, n)
            memcpy(&self._header[self._hlen], p, take)
            self._hlen += take
            pos = take
            if self._hlen < 6:
                return 0
            self._hlen = 0
            pdu_type = self._header[0]
            length = _u32(&self._header[2])
            error = self._refusal(pdu_type, length)
            if error is not None:
                self._fail(error)
                return 0
            self._type = pdu_type
            self._partial = PyByteArray_FromStringAndSize(NULL, length)
            self._fill = 0
        if self._partial is not None:
            buf = self._partial
            size = len(buf)
            dst = PyByteArray_AS_STRING(buf)
            take = min(size - self._fill, n - pos)
            memcpy(dst + self._fill, p + pos, take)
            self._fill += take
            pos += take
            if self._fill < size:
                return 0
            self._partial = None
            self._emit(out, self._type, memoryview(buf), <const unsigned char *>dst, size)
        # 2. whole PDUs inside this chunk: zero-copy views
        while n - pos >= 6:
            pdu_type = p[pos]
            length = _u32(p + pos + 2)
            error = self._refusal(pdu_type, length)
            if error is not None:
                self._fail(error)
                return 0
            end = pos + 6 + length
            if end > n:
                self._type = pdu_type
                have = n - pos - 6
                buf = PyByteArray_FromStringAndSize(NULL, length)
                memcpy(PyByteArray_AS_STRING(buf), p + pos + 6, have)
                self._partial = buf
                self._fill = have
                return 0
            if mv is None:
                mv = memoryview(data)
                if mv.itemsize != 1 or mv.ndim != 1:
                    mv = mv.cast("B")
            body = mv[pos + 6:end]
            self._emit(out, pdu_type, body, p + pos + 6, length)
            pos = end
        if pos < n:
            memcpy(self._header, p + pos, n - pos)
            self._hlen = n - pos
        return 0
