"""The P-DATA receive path in plain Python: the twin (and test oracle) of ``_pdata.pyx``.

One :meth:`PDataFramer.feed` call takes a received chunk, cuts the whole PDUs out of it (a PDU
straddling chunks is assembled once, into a buffer sized from its header) and splits every
P-DATA-TF into its PDVs, checking each presentation context ID, so the Connection sees one
entry per PDU instead of running a framer, a decoder and a context check itself.

PDUs that lie wholly inside one chunk are memoryview slices of that chunk (no copy: asyncio hands
us immutable ``bytes``); the buffer of a straddling PDU is handed over and never reused, so views
into it stay valid. Oversized and unknown PDUs are refused from the 6-byte header alone, so memory
is bounded by the largest allowed PDU plus the chunk being processed.

The exception and value types of the P-DATA path live here, not in ``hpacs.ul.pdu`` (which
re-exports them), so that both implementations can import them without importing the ``hpacs.ul``
package (which imports the selected implementation: a cycle).
"""

from __future__ import annotations

import struct
from collections.abc import Container
from typing import NamedTuple

#: PS3.8 PDU type of P-DATA-TF; types 1..7 are defined.
P_DATA_TF = 0x04
_FIRST_TYPE, _LAST_TYPE = 0x01, 0x07
#: A-ABORT reasons (source 2) the framer itself can give.
ABORT_REASON_UNRECOGNIZED_PDU = 1
ABORT_REASON_INVALID_PARAMETER = 6
#: Cap for every PDU but P-DATA-TF (an A-ASSOCIATE-RQ with 128 contexts is ~20 KiB).
MAX_CONTROL_PDU = 1 << 20

_HEADER = struct.Struct(">BxI")
_U32 = struct.Struct(">I")


class PDUError(ValueError):
    """A malformed or unexpected PDU; ``reason`` is the A-ABORT reason to send (source 2)."""

    def __init__(self, message: str, reason: int = ABORT_REASON_INVALID_PARAMETER) -> None:
        super().__init__(message)
        self.reason = reason


class PDV(NamedTuple):
    """One presentation data value: a fragment of a command or data set."""

    context_id: int
    is_command: bool
    is_last: bool
    data: memoryview | bytes


_new_pdv = tuple.__new__  # skips NamedTuple's Python-level __new__ on the hot path

#: One fed PDU: (pdu_type, body, pdvs). ``body`` excludes the 6-byte header; ``pdvs`` is None
#: for all but P-DATA-TF, for which it is its PDVs or, when the body is malformed or names a
#: context not in ``contexts``, the PDUError saying so (returned, not raised).
Entry = tuple[int, memoryview, "list[PDV] | PDUError | None"]


def decode_pdata(body: memoryview | bytes) -> list[PDV]:
    """Split a P-DATA-TF body (after the 6-byte PDU header) into PDVs, without copying data."""
    mv = body if type(body) is memoryview else memoryview(body)
    n = len(mv)
    unpack = _U32.unpack_from
    if n >= 6 and unpack(mv)[0] == n - 4:  # the usual case: one PDV filling the PDU
        mch = mv[5]
        return [_new_pdv(PDV, (mv[4], (mch & 1) == 1, (mch & 2) == 2, mv[6:]))]
    off = 0
    out: list[PDV] = []
    while off < n:
        if n - off < 6:
            raise PDUError("truncated PDV item header")
        length = unpack(mv, off)[0]
        end = off + 4 + length
        if length < 2 or end > n:
            raise PDUError(f"PDV item length {length} does not fit the PDU")
        ctx = mv[off + 4]
        mch = mv[off + 5]
        out.append(_new_pdv(PDV, (ctx, (mch & 1) == 1, (mch & 2) == 2, mv[off + 6 : end])))
        off = end
    return out


def split_pdata(body: memoryview | bytes, contexts: Container[int] | None) -> list[PDV] | PDUError:
    """decode_pdata, then every PDV's context must be in ``contexts`` (None: any).

    Returns the error instead of raising it: the caller decides, by state, what it means.
    """
    try:
        pdvs = decode_pdata(body)
    except PDUError as exc:
        return exc
    if contexts is not None:
        for pdv in pdvs:
            if pdv.context_id not in contexts:
                return PDUError(
                    f"PDV for presentation context {pdv.context_id}, not accepted",
                    ABORT_REASON_INVALID_PARAMETER,
                )
    return pdvs


class PDataFramer:
    """Splits a byte stream into :data:`Entry` tuples, P-DATA-TF PDUs already split into PDVs.

    ``contexts`` (anything supporting ``in``, e.g. the Connection's accepted-context dict; None
    accepts every ID) is read while feeding: set it before the P-DATA it applies to is fed.
    """

    __slots__ = (
        "_fill",
        "_header",
        "_partial",
        "_type",
        "contexts",
        "error",
        "max_control",
        "max_pdata",
    )

    def __init__(
        self,
        max_pdata: int,
        max_control: int = MAX_CONTROL_PDU,
        contexts: Container[int] | None = None,
    ) -> None:
        #: Largest P-DATA-TF body accepted (our advertised maximum PDU length).
        self.max_pdata = max_pdata
        self.max_control = max_control
        self.contexts = contexts
        #: Set once the stream could not be framed; the framer then ignores all input.
        self.error: PDUError | None = None
        self._header = bytearray()  # a header split across chunks
        self._partial: bytearray | None = None  # body of a PDU split across chunks
        self._fill = 0
        self._type = 0

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete PDU."""
        return len(self._header) + (6 + self._fill if self._partial is not None else 0)

    def _check(self, pdu_type: int, length: int) -> None:
        if not _FIRST_TYPE <= pdu_type <= _LAST_TYPE:
            raise PDUError(f"unrecognized PDU type 0x{pdu_type:02X}", ABORT_REASON_UNRECOGNIZED_PDU)
        limit = self.max_pdata if pdu_type == P_DATA_TF else self.max_control
        if length > limit:
            raise PDUError(
                f"PDU type 0x{pdu_type:02X} of {length} bytes exceeds the maximum of {limit}",
                ABORT_REASON_INVALID_PARAMETER,
            )

    def _entry(self, pdu_type: int, body: memoryview) -> Entry:
        if pdu_type == P_DATA_TF:
            return (pdu_type, body, split_pdata(body, self.contexts))
        return (pdu_type, body, None)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Entry]:
        """Append ``data``; return the PDUs it completes, in order.

        On a framing error the PDUs cut before it are still returned and ``error`` is set; the
        caller must check it. ``data`` must not be mutated afterwards (bodies may be views of it).
        """
        out: list[Entry] = []
        if self.error is not None or not data:
            return out
        mv = data if isinstance(data, memoryview) else memoryview(data)
        if mv.itemsize != 1 or mv.ndim != 1:
            mv = mv.cast("B")
        n = len(mv)
        pos = 0
        try:
            # 1. finish a PDU (or header) left over from earlier chunks
            if self._header:
                take = min(6 - len(self._header), n)
                self._header += mv[:take]
                pos = take
                if len(self._header) < 6:
                    return out
                pdu_type, length = _HEADER.unpack(self._header)
                self._header = bytearray()
                self._check(pdu_type, length)
                self._type = pdu_type
                self._partial = bytearray(length)
                self._fill = 0
            if self._partial is not None:
                buf = self._partial
                take = min(len(buf) - self._fill, n - pos)
                buf[self._fill : self._fill + take] = mv[pos : pos + take]
                self._fill += take
                pos += take
                if self._fill < len(buf):
                    return out
                self._partial = None
                out.append(self._entry(self._type, memoryview(buf)))
            # 2. whole PDUs inside this chunk: zero-copy views
            unpack = _HEADER.unpack_from
            while n - pos >= 6:
                pdu_type, length = unpack(mv, pos)
                self._check(pdu_type, length)
                end = pos + 6 + length
                if end > n:
                    self._type = pdu_type
                    buf = bytearray(length)
                    have = n - pos - 6
                    buf[:have] = mv[pos + 6 : n]
                    self._partial = buf
                    self._fill = have
                    return out
                out.append(self._entry(pdu_type, mv[pos + 6 : end]))
                pos = end
            if pos < n:
                self._header = bytearray(mv[pos:])
        except PDUError as exc:
            self.error = exc
            self._header = bytearray()
            self._partial = None
        return out
