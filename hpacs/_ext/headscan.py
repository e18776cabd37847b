"""Incremental DICOM data set header scanner: the pure-Python twin of ``_headscan.pyx``.

Why a streaming scanner: a C-STORE arrives as chunks and is written to disk as received; we pull
the index keys and check the element framing on the way without pydicom and without buffering
values. Skipping a value costs O(1) per chunk, so pixel data is nearly free.

The state machine here and in ``_headscan.pyx`` is the same, step for step, and so are the error
messages: the tests feed both the same bytes and demand identical results.

Model: the scanner is always inside a *container*: the top-level data set, an item (a data set),
a sequence (holds items) or encapsulated pixel data (holds fragment items). Each container has an
``end`` (absolute offset; -1 when its length is undefined) and a ``limit``: the nearest enclosing
defined end, which no element header or value may cross.
"""

from __future__ import annotations

import struct

__all__ = ["MAX_DEPTH", "HeaderScanner", "ScanError"]

UNDEFINED = 0xFFFFFFFF
ITEM = 0xFFFEE000
ITEM_DELIM = 0xFFFEE00D
SEQ_DELIM = 0xFFFEE0DD
PIXEL_DATA = 0x7FE00010
#: Most containers open at once (a sequence and its item count as two).
MAX_DEPTH = 128
NO_LIMIT = 1 << 62

# Container kinds.
K_TOP, K_ITEM, K_SQ, K_FRAG = 0, 1, 2, 3
# Scanner states.
S_HEADER, S_SKIP, S_COLLECT, S_FAILED = 0, 1, 2, 3
# VR classes (0 = not a VR).
VR_SHORT, VR_LONG, VR_SQ, VR_UN = 1, 2, 3, 4

_SHORT_VRS = "AE AS AT CS DA DS DT FL FD IS LO LT PN SH SL SS ST TM UI UL US"
_LONG_VRS = "OB OD OF OL OV OW SV UC UR UT UV"
VR_CLASS: dict[bytes, int] = {
    **{vr.encode(): VR_SHORT for vr in _SHORT_VRS.split()},
    **{vr.encode(): VR_LONG for vr in _LONG_VRS.split()},
    b"SQ": VR_SQ,
    b"UN": VR_UN,
}

_HH = (struct.Struct(">HH").unpack_from, struct.Struct("<HH").unpack_from)
_H = (struct.Struct(">H").unpack_from, struct.Struct("<H").unpack_from)
_L = (struct.Struct(">L").unpack_from, struct.Struct("<L").unpack_from)


class ScanError(ValueError):
    """The data set is not well-formed DICOM (the one error the scanner raises on data)."""


def _t(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


class HeaderScanner:
    """Walks a data set fed in arbitrary chunks; collects raw values of wanted top-level tags."""

    __slots__ = (
        "_buf",
        "_end",
        "_error",
        "_explicit",
        "_hdr",
        "_kind",
        "_limit",
        "_little",
        "_max_len",
        "_max_wanted",
        "_pos",
        "_remaining",
        "_seen",
        "_stack",
        "_state",
        "_tag",
        "_values",
        "_wanted",
    )

    def __init__(
        self,
        wanted: frozenset[int],
        explicit_vr: bool,
        little_endian: bool,
        max_value_length: int = 1024,
    ) -> None:
        tags = sorted({int(t) for t in wanted})
        if tags and (tags[0] < 0 or tags[-1] > 0xFFFFFFFF):
            raise ValueError("wanted tags must be 32-bit unsigned integers")
        if max_value_length < 0:
            raise ValueError("max_value_length must be >= 0")
        self._wanted = frozenset(tags)
        self._max_wanted = tags[-1] if tags else -1
        self._max_len = int(max_value_length)
        self._seen = 0
        self._pos = 0  # bytes consumed; a partial header waiting in _hdr is not yet consumed
        self._state = S_HEADER
        self._hdr = b""
        self._remaining = 0
        self._tag = 0
        self._buf = bytearray()
        self._values: dict[int, bytes] = {}
        self._error = ""
        self._kind = K_TOP
        self._end = -1
        self._limit = NO_LIMIT
        self._explicit = bool(explicit_vr)
        self._little = bool(little_endian)
        self._stack: list[tuple[int, int, int, bool, bool]] = []

    @property
    def bytes_seen(self) -> int:
        """Bytes fed so far."""
        return self._seen

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Consume the next chunk; raises ScanError as soon as the framing is known to be bad."""
        if self._state == S_FAILED:
            raise ScanError(self._error)
        mv = memoryview(data)
        if mv.format != "B" or mv.ndim != 1:
            mv = mv.cast("B")
        n = len(mv)
        self._seen += n
        i = 0
        try:
            while i < n:
                state = self._state
                if state == S_SKIP:
                    avail = n - i
                    take = self._remaining
                    if take > avail:
                        self._remaining = take - avail
                        self._pos += avail
                        return
                    i += take
                    self._pos += take
                    self._remaining = 0
                    self._state = S_HEADER
                    self._close_ended()
                elif state == S_COLLECT:
                    avail = n - i
                    take = self._remaining
                    if take > avail:
                        self._buf += mv[i:n]
                        self._remaining = take - avail
                        self._pos += avail
                        return
                    self._buf += mv[i : i + take]
                    i += take
                    self._pos += take
                    self._remaining = 0
                    self._values[self._tag] = bytes(self._buf)
                    self._buf = bytearray()
                    self._state = S_HEADER
                    self._close_ended()
                elif self._hdr:
                    have = len(self._hdr)
                    take = min(12 - have, n - i)
                    tmp = self._hdr + mv[i : i + take].tobytes()
                    used = self._header(tmp, 0, len(tmp))
                    if used == 0:
                        self._hdr = tmp
                        i += take
                    else:
                        self._hdr = b""
                        i += used - have
                else:
                    used = self._header(mv, i, n - i)
                    if used == 0:
                        self._hdr = mv[i:n].tobytes()
                        return
                    i += used
        except ScanError as exc:
            self._state = S_FAILED
            self._error = str(exc)
            raise

    def finish(self) -> dict[int, bytes]:
        """The collected values; raises ScanError unless the stream ended between top-level
        elements with nothing left open."""
        if self._state == S_FAILED:
            raise ScanError(self._error)
        msg = ""
        if self._hdr:
            msg = f"stream ends inside an element header at offset {self._pos}"
        elif self._state != S_HEADER:
            msg = (
                f"stream ends inside the value of {_t(self._tag)}: "
                f"{self._remaining} bytes missing"
            )
        elif self._kind != K_TOP:
            msg = f"stream ends inside an open sequence or item (depth {len(self._stack)})"
        if msg:
            self._state = S_FAILED
            self._error = msg
            raise ScanError(msg)
        return dict(self._values)

    # -- the state machine ----------------------------------------------------------------------

    def _header(self, b, o: int, a: int) -> int:
        """Parse one header at b[o:o+a]; 0 when more bytes are needed, else its length."""
        if a < 8:
            return 0
        le = self._little
        group, elem = _HH[le](b, o)
        tag = group << 16 | elem
        vr = 0
        if group == 0xFFFE:
            length = _L[le](b, o + 4)[0]
            hlen = 8
        elif self._explicit:
            vr = VR_CLASS.get(bytes(b[o + 4 : o + 6]), 0)
            if vr == 0:
                raise ScanError(
                    f"invalid VR bytes 0x{b[o + 4]:02X}{b[o + 5]:02X} in {_t(tag)} "
                    f"at offset {self._pos}"
                )
            if vr >= VR_LONG:
                if a < 12:
                    return 0
                length = _L[le](b, o + 8)[0]
                hlen = 12
            else:
                length = _H[le](b, o + 6)[0]
                hlen = 8
        else:
            length = _L[le](b, o + 4)[0]
            hlen = 8
        self._element(tag, vr, length, hlen)
        return hlen

    def _element(self, tag: int, vr: int, length: int, hlen: int) -> None:
        p = self._pos
        q = p + hlen
        if q > self._limit:
            raise ScanError(f"header of {_t(tag)} at offset {p} overruns its enclosing item")
        self._pos = q
        self._tag = tag
        kind = self._kind
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
                        self._skip(length)
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
        elif tag >> 16 == 0xFFFE:
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
                and tag in self._wanted
            ):
                if length == 0:
                    self._values[tag] = b""
                else:
                    self._state = S_COLLECT
                    self._remaining = length
            elif length != 0:
                self._state = S_SKIP
                self._remaining = length
        if self._state == S_HEADER:
            self._close_ended()

    def _skip(self, length: int) -> None:
        if length != 0:
            self._state = S_SKIP
            self._remaining = length

    def _push(self, kind: int, end: int, limit: int, explicit: bool, little: bool) -> None:
        if len(self._stack) >= MAX_DEPTH:
            raise ScanError(f"nesting deeper than {MAX_DEPTH} at offset {self._pos}")
        self._stack.append((self._kind, self._end, self._limit, self._explicit, self._little))
        self._kind = kind
        self._end = end
        self._limit = limit
        self._explicit = explicit
        self._little = little

    def _pop(self) -> None:
        self._kind, self._end, self._limit, self._explicit, self._little = self._stack.pop()

    def _close_ended(self) -> None:
        """Close every defined-length container that ends exactly here."""
        while self._end == self._pos:
            self._pop()
