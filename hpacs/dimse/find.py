"""The C-FIND SCP (PS3.4 Annex C, Query/Retrieve FIND), apart from any I/O.

:func:`parse_find` turns a C-FIND-RQ identifier into a :class:`FindRequest` (or raises
:class:`FindError` carrying the failure status); :func:`encode_match` builds one pending
response identifier; :func:`pending_response` / :func:`final_response` build the command sets.
The adapter (net/dimse_server.py) pages the query engine and writes the responses.

Statuses (PS3.4 C.4.1.1.4):

- ``0xFF00`` pending; ``0xFF01`` pending when a matching key names an attribute the index does
  not hold (it was not used for matching; it is returned empty);
- ``0x0000`` all matches sent; ``0xFE00`` after a C-CANCEL-RQ;
- ``0xA900`` identifier does not match SOP class: QueryRetrieveLevel missing or not valid for
  the information model;
- ``0xC000`` unable to process: undecodable identifier, malformed date/time/range value
  (with Offending Element and Error Comment);
- ``0xA700`` refused, out of resources: more than ``query.max_matches`` matches; the first
  ``max_matches`` were sent as pending responses (see docs/CONFORMANCE.md).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Final

from hpacs._ext.findenc import CHARSET, CHARSET_REQUESTED, CONST_NON_ASCII, KEY, LITTLE, UNIQUE
from hpacs.dicom.elements import LONG_VRS, encode_elements, value_bytes
from hpacs.dicom.transfer_syntax import STORABLE
from hpacs.dimse import status
from hpacs.dimse.commands import (
    COMMAND_DATA_SET_TYPE,
    DATASET_PRESENT,
    ERROR_COMMENT,
    OFFENDING_ELEMENT,
    Command,
    CommandField,
    response_to,
)
from hpacs.dimse.identifier import read_plain, read_pydicom
from hpacs.index.query import (
    IMAGE,
    PATIENT,
    SERIES,
    STUDY,
    Query,
    QueryError,
    home_level,
    value_sources,
)
from hpacs.index.rowkernels import RowEncoder

PATIENT_ROOT_FIND: Final = "1.2.840.10008.5.1.4.1.2.1.1"
STUDY_ROOT_FIND: Final = "1.2.840.10008.5.1.4.1.2.2.1"
#: Information model -> the levels it allows.
FIND_SOP_CLASSES: Final[dict[str, tuple[str, ...]]] = {
    PATIENT_ROOT_FIND: (PATIENT, STUDY, SERIES, IMAGE),
    STUDY_ROOT_FIND: (STUDY, SERIES, IMAGE),
}
#: Largest identifier we accept (a query is a few hundred bytes; this is generous).
MAX_IDENTIFIER_BYTES: Final = 1 << 20

STATUS_PENDING_WARNING: Final = 0xFF01
STATUS_UNABLE_TO_PROCESS: Final = 0xC000

_QR_LEVEL: Final = 0x00080052
_CHARSET: Final = 0x00080005
_RETRIEVE_AE: Final = 0x00080054
_AVAILABILITY: Final = 0x00080056
_UNIQUE: Final = (("PatientID", 0x00100020, "LO"), ("StudyInstanceUID", 0x0020000D, "UI"),
                  ("SeriesInstanceUID", 0x0020000E, "UI"), ("SOPInstanceUID", 0x00080018, "UI"))
_LEVEL_DEPTH: Final = {PATIENT: 0, STUDY: 1, SERIES: 2, IMAGE: 3}
_TEXT_VRS: Final = frozenset({"PN", "LO", "SH", "ST", "LT", "UT", "UC"})
_NUMBER_VRS: Final = frozenset({"US", "UL", "SS", "SL", "FL", "FD"})
#: VRs hpacs.dicom.elements writes as binary numbers, and those it always writes in ASCII.
_BINARY_VRS: Final = frozenset({"US", "UL", "SS", "SL", "FL", "FD", "SV", "UV", "AT"})
_ASCII_VRS: Final = frozenset({"UI", "DA", "TM", "DT", "CS", "AS", "IS", "DS"})


class FindError(Exception):
    """The identifier cannot be processed: answer with ``status`` (and comment / element)."""

    def __init__(self, code: int, comment: str, offending: int | None = None) -> None:
        super().__init__(comment)
        self.status = code
        self.comment = comment
        self.offending = offending


@dataclass
class FindRequest:
    model: str
    level: str
    query: Query
    #: (tag, VR, keyword) of each key to return, in tag order, as the SCU sent them.
    keys: list[tuple[int, str, str]]
    #: Matching keys we did not use (attributes the index does not hold): pending is 0xFF01.
    unsupported: list[str]
    explicit_vr: bool
    little_endian: bool
    charset_requested: bool


def parse_find(
    sop_class: str, identifier: bytes, transfer_syntax: str, *, case_insensitive_names: bool = True
) -> FindRequest:
    """Decode and validate a C-FIND identifier; raises :class:`FindError`."""
    levels = FIND_SOP_CLASSES.get(sop_class)
    if levels is None:
        raise FindError(status.SOP_CLASS_NOT_SUPPORTED, f"{sop_class} is not a FIND model")
    enc = STORABLE.get(transfer_syntax)
    if enc is None or enc.deflated or enc.encapsulated:
        raise FindError(STATUS_UNABLE_TO_PROCESS, f"transfer syntax {transfer_syntax} for a query")
    if len(identifier) > MAX_IDENTIFIER_BYTES:
        raise FindError(status.OUT_OF_RESOURCES, "identifier larger than 1 MiB")
    elements = read_plain(identifier, enc.explicit_vr, enc.little_endian)
    if elements is None:  # not a plain identifier: pydicom reads it
        try:
            elements = read_pydicom(identifier, enc.explicit_vr, enc.little_endian)
        except Exception as exc:  # pydicom raises many types on garbage
            raise FindError(STATUS_UNABLE_TO_PROCESS,
                            f"undecodable identifier: {exc}"[:64]) from None

    level_elem = next((e for e in elements if e[0] == _QR_LEVEL), None)
    if level_elem is None:
        raise FindError(status.DATASET_MISMATCH, "QueryRetrieveLevel (0008,0052) missing",
                        _QR_LEVEL)
    level = level_elem[3].strip().upper()
    if level not in levels:
        raise FindError(status.DATASET_MISMATCH,
                        f"QueryRetrieveLevel {level!r} not valid for this model", _QR_LEVEL)

    values: dict[str, str] = {}
    keys: list[tuple[int, str, str]] = []
    unsupported: list[str] = []
    charset_requested = False
    for tag, vr, kw, raw in elements:
        if tag == _CHARSET:
            charset_requested = True
            continue
        if tag == _QR_LEVEL or (tag >> 16) == 0x0002 or (tag & 0xFFFF) == 0:
            continue
        keys.append((tag, vr, kw))
        if vr == "SQ" or not kw:
            continue  # sequence matching is not supported: returned empty
        if home_level(kw, level) is None:
            if raw.strip(" *\\") and tag not in (_RETRIEVE_AE, _AVAILABILITY):
                unsupported.append(kw)
            continue
        values[kw] = raw
    try:
        query = Query.build(level, values, case_insensitive_names=case_insensitive_names)
    except QueryError as exc:
        from pydicom.datadict import tag_for_keyword

        raise FindError(STATUS_UNABLE_TO_PROCESS, str(exc)[:64],
                        tag_for_keyword(exc.keyword) if exc.keyword else None) from None
    return FindRequest(sop_class, level, query, keys, unsupported, enc.explicit_vr,
                       enc.little_endian, charset_requested)


def _element_value(vr: str, value: Any) -> Any:
    if value is None or value == "":
        return None
    if vr in _NUMBER_VRS:
        if isinstance(value, str):
            try:
                parts = [int(v) for v in value.split("\\")]
            except ValueError:
                return None
            return parts[0] if len(parts) == 1 else parts
        return value
    if isinstance(value, list):
        return [str(v) for v in value]
    if isinstance(value, int):
        return str(value)
    if vr not in ("ST", "LT", "UT") and "\\" in value:
        return value.split("\\")
    return value


def encode_match(req: FindRequest, match: dict[str, Any], *, retrieve_ae: str = "") -> bytes:
    """One pending response identifier for ``match``, in the request's transfer syntax."""
    elements: list[tuple[int, str, Any]] = []
    non_ascii = False
    depth = _LEVEL_DEPTH[req.level]
    present = {tag for tag, _, _ in req.keys}
    for tag, vr, kw in req.keys:
        if vr == "SQ":
            elements.append((tag, "SQ", None))
            continue
        if tag == _RETRIEVE_AE:
            value: Any = retrieve_ae or None
        elif tag == _AVAILABILITY:
            value = "ONLINE"
        else:
            value = _element_value(vr, match.get(kw)) if kw else None
        if vr in _TEXT_VRS and value is not None and not non_ascii:
            non_ascii = not all(v.isascii() for v in (value if isinstance(value, list)
                                                      else [value]))
        elements.append((tag, vr, value))
    for i, (kw, tag, vr) in enumerate(_UNIQUE):
        if tag not in present and i <= depth and (i > 0 or req.model == PATIENT_ROOT_FIND):
            elements.append((tag, vr, match.get(kw) or None))
    elements.append((_QR_LEVEL, "CS", req.level))
    if non_ascii:
        elements.append((_CHARSET, "CS", "ISO_IR 192"))
    elif req.charset_requested:
        elements.append((_CHARSET, "CS", None))
    return encode_elements(elements, explicit_vr=req.explicit_vr,
                           little_endian=req.little_endian,
                           text_codec="utf-8" if non_ascii else "ascii")


class MatchEncoder:
    """:func:`encode_match` for every match of one request, its per-request work done once.

    What encode_match redoes for each match (the element list and its sort, the unique keys
    the level adds, the constant values, the header structs and VR bytes) is prepared here; a
    match then costs its own values only. encode_match stays the reference it is tested
    against (tests/dimse/test_find_encoding.py). The C-FIND SCP uses :attr:`encode_rows`: the
    same bytes from a match's index rows, through the compiled kernel of hpacs._ext.findenc
    (no merged dict per match, ASCII values copied as they are)."""

    def __init__(self, req: FindRequest, *, retrieve_ae: str = "") -> None:
        #: (tag, vr, source, payload): source "key" (payload = keyword, _element_value),
        #: "unique" (keyword, raw value or None), "const" (the value), "charset".
        entries: list[tuple[int, str, str, Any]] = []
        const_non_ascii = False
        present = {tag for tag, _, _ in req.keys}
        self._text_keys: list[str] = []
        for tag, vr, kw in req.keys:
            if vr == "SQ":
                entries.append((tag, "SQ", "const", None))
            elif tag in (_RETRIEVE_AE, _AVAILABILITY):
                value = (retrieve_ae or None) if tag == _RETRIEVE_AE else "ONLINE"
                entries.append((tag, vr, "const", value))
                if vr in _TEXT_VRS and value is not None and not value.isascii():
                    const_non_ascii = True
            elif kw:
                entries.append((tag, vr, "key", kw))
                if vr in _TEXT_VRS:
                    self._text_keys.append(kw)
            else:
                entries.append((tag, vr, "const", None))
        depth = _LEVEL_DEPTH[req.level]
        for i, (kw, tag, vr) in enumerate(_UNIQUE):
            if tag not in present and i <= depth and (i > 0 or req.model == PATIENT_ROOT_FIND):
                entries.append((tag, vr, "unique", kw))
        entries.append((_QR_LEVEL, "CS", "const", req.level))
        entries.append((_CHARSET, "CS", "charset", None))
        entries.sort(key=lambda e: e[0])  # stable, as encode_elements' sort
        self._entries = entries
        self._const_non_ascii = const_non_ascii
        self._charset_requested = req.charset_requested
        self._explicit_vr = req.explicit_vr
        self._little_endian = req.little_endian
        end = "<" if req.little_endian else ">"
        head_short = struct.Struct(end + "HH2sH")
        head_long = struct.Struct(end + "HH2s2xI")
        head_implicit = struct.Struct(end + "HHI")
        # per entry: (kind, header prefix, length struct, vr, payload, fast, pad, ascii_only);
        # kind 0 = a match key, 1 = a unique key, 2 = constant (value bytes prepared for each
        # codec), 3 = the character set. "fast": a plain string value needs no conversion
        # (not binary, not a number VR), encoded directly (ascii_only: a VR encode_elements
        # always writes in ASCII), padded with ``pad``.
        plan: list[tuple] = []
        for tag, vr, source, payload in entries:
            group, elem = tag >> 16, tag & 0xFFFF
            if not req.explicit_vr:
                prefix, length = head_implicit.pack(group, elem, 0)[:4], struct.Struct(end + "I")
            elif vr in LONG_VRS:
                prefix = head_long.pack(group, elem, vr.encode(), 0)[:8]
                length = struct.Struct(end + "I")
            else:
                prefix = head_short.pack(group, elem, vr.encode(), 0)[:6]
                length = struct.Struct(end + "H")
            kind = {"key": 0, "unique": 1, "const": 2, "charset": 3}[source]
            if kind == 2:
                payload = tuple(
                    prefix + length.pack(len(raw)) + raw
                    for raw in (b"" if vr == "SQ" else value_bytes(vr, payload, req.little_endian,
                                                                    codec)
                                for codec in ("ascii", "utf-8")))
            fast = vr not in _NUMBER_VRS and vr not in _BINARY_VRS and vr != "SQ"
            pad = b"\0" if vr in ("UI", "OB", "UN") else b" "
            plan.append((kind, prefix, length, vr, payload, fast, pad, vr in _ASCII_VRS))
        self._plan = plan
        #: RowEncoder's arguments (tests build the twin from them)
        self.row_args = self._row_args(req, plan, const_non_ascii)
        #: The identifier of a match from its index rows (QueryEngine.row_pages), compiled:
        #: == encode(merge_rows(rows)), without the merged dict.
        self.encode_rows = RowEncoder(*self.row_args).encode

    def _row_args(self, req: FindRequest, plan: list[tuple], const_non_ascii: bool) -> tuple:
        """The plan of hpacs._ext.findenc.RowEncoder: this plan with each keyword replaced by
        where its value is in a match's rows."""
        depth = _LEVEL_DEPTH[req.level]
        little = req.little_endian
        row_plan = []
        for kind, prefix, length, vr, payload, fast, pad, ascii_only in plan:
            if kind in (KEY, UNIQUE):
                payload = value_sources(depth, payload)
            elif kind == CHARSET:
                utf8 = value_bytes("CS", "ISO_IR 192", little, "ascii")
                payload = (prefix + length.pack(len(utf8)) + utf8, prefix + length.pack(0))
            row_plan.append((kind, prefix, length.size == 4, vr, payload, fast, pad, ascii_only))
        flags = ((LITTLE if little else 0) | (CONST_NON_ASCII if const_non_ascii else 0)
                 | (CHARSET_REQUESTED if req.charset_requested else 0))

        def slow(vr: str, value: Any, codec: str, convert: bool) -> bytes:
            return value_bytes(vr, _element_value(vr, value) if convert else value, little, codec)

        text_sources = tuple(value_sources(depth, kw) for kw in self._text_keys)
        return tuple(row_plan), text_sources, flags, slow, _non_ascii

    def encode(self, match: dict[str, Any]) -> bytes:
        """The identifier of one pending response (== encode_match(req, match, ...))."""
        non_ascii = self._const_non_ascii
        get = match.get
        if not non_ascii:
            for kw in self._text_keys:
                value = get(kw)
                if value is None or (value.__class__ is str and value.isascii()):
                    continue
                value = _element_value("LO", value)
                if value is not None and not all(
                        v.isascii() for v in (value if isinstance(value, list) else [value])):
                    non_ascii = True
                    break
        codec = "utf-8" if non_ascii else "ascii"
        little = self._little_endian
        out: list[bytes] = []
        for kind, prefix, length, vr, payload, fast, pad, ascii_only in self._plan:
            if kind == 2:
                out.append(payload[non_ascii])
                continue
            if kind == 0:
                value = get(payload)
                if fast and value.__class__ is str and value and "\\" not in value:
                    raw = value.encode("ascii" if ascii_only else codec, "replace")
                    if len(raw) & 1:
                        raw += pad
                    out.append(prefix)
                    out.append(length.pack(len(raw)))
                    out.append(raw)
                    continue
                value = _element_value(vr, value)
            elif kind == 1:
                value = get(payload) or None
            elif non_ascii:
                value = "ISO_IR 192"
            elif self._charset_requested:
                value = None
            else:
                continue
            raw = value_bytes(vr, value, little, codec)
            out.append(prefix)
            out.append(length.pack(len(raw)))
            out.append(raw)
        return b"".join(out)


def _non_ascii(value: Any) -> bool:
    """Whether a text value that is not an ASCII string (a list, a number...) is not ASCII."""
    if value.__class__ is str:  # a string: several values or one, non-ASCII is non-ASCII
        return not value.isascii()
    value = _element_value("LO", value)
    return value is not None and not all(
        v.isascii() for v in (value if isinstance(value, list) else [value]))


def pending_response(request: Command, req: FindRequest) -> bytes:
    code = STATUS_PENDING_WARNING if req.unsupported else status.PENDING
    return response_to(request, CommandField.C_FIND_RSP, code,
                       {COMMAND_DATA_SET_TYPE: DATASET_PRESENT})


def final_response(request: Command, code: int = status.SUCCESS, comment: str = "",
                   offending: int | None = None) -> bytes:
    extra: Command = {}
    if comment:
        extra[ERROR_COMMENT] = comment[:64]
    if offending is not None:
        extra[OFFENDING_ELEMENT] = (offending,)
    return response_to(request, CommandField.C_FIND_RSP, code, extra)


def too_many_matches(request: Command, limit: int) -> bytes:
    """The final response when ``max_matches`` is hit (more matches exist)."""
    return final_response(request, status.OUT_OF_RESOURCES,
                          f"more than {limit} matches: narrow the query")
