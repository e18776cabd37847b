"""Incremental PDU framer: cuts whole PDUs out of an arbitrarily chunked byte stream.

PDUs that lie wholly inside one received chunk are returned as memoryview slices of that chunk
(no copy: asyncio hands us immutable ``bytes``). Only a PDU that straddles chunks is assembled,
once, into a buffer sized from its header; that buffer is handed over and never reused, so views
into it stay valid. Oversized and unknown PDUs are refused from the 6-byte header alone, so
memory is bounded by the largest allowed PDU plus the chunk being processed.
"""

from __future__ import annotations

import struct

from hpacs.ul.pdu import (
    ABORT_REASON_INVALID_PARAMETER,
    ABORT_REASON_UNRECOGNIZED_PDU,
    P_DATA_TF,
    PDU_TYPES,
    PDUError,
)

#: Cap for every PDU but P-DATA-TF (an A-ASSOCIATE-RQ with 128 contexts is ~20 KiB).
MAX_CONTROL_PDU = 1 << 20

_HEADER = struct.Struct(">BxI")


class PDUFramer:
    """Splits a byte stream into (pdu_type, body) pairs; body excludes the 6-byte header."""

    __slots__ = ("_fill", "_header", "_partial", "_type", "error", "max_control", "max_pdata")

    def __init__(self, max_pdata: int, max_control: int = MAX_CONTROL_PDU) -> None:
        #: Largest P-DATA-TF body accepted (our advertised maximum PDU length).
        self.max_pdata = max_pdata
        self.max_control = max_control
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
        if pdu_type not in PDU_TYPES:
            raise PDUError(f"unrecognized PDU type 0x{pdu_type:02X}", ABORT_REASON_UNRECOGNIZED_PDU)
        limit = self.max_pdata if pdu_type == P_DATA_TF else self.max_control
        if length > limit:
            raise PDUError(
                f"PDU type 0x{pdu_type:02X} of {length} bytes exceeds the maximum of {limit}",
                ABORT_REASON_INVALID_PARAMETER,
            )

    def feed(self, data: bytes | bytearray | memoryview) -> list[tuple[int, memoryview]]:
        """Append ``data``; return the PDUs it completes, in order.

        On a framing error the PDUs cut before it are still returned and ``error`` is set; the
        caller must check it. ``data`` must not be mutated afterwards (bodies may be views of it).
        """
        out: list[tuple[int, memoryview]] = []
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
                out.append((self._type, memoryview(buf)))
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
                out.append((pdu_type, mv[pos + 6 : end]))
                pos = end
            if pos < n:
                self._header = bytearray(mv[pos:])
        except PDUError as exc:
            self.error = exc
            self._header = bytearray()
            self._partial = None
        return out
