"""Scanned raw values to an index record: the twin of ``_recordkit.pyx`` (the code that was
``hpacs.index.schema.record_from_scan``, moved here unchanged in behaviour).

:class:`RecordBuilder` is configured once by ``hpacs.index.schema`` (its per-tag decoder table,
the record type, the error type) so this module imports nothing from the index. A decoder
entry is ``tag -> (keyword, kind, vr, level indexes)``; ``kind`` is :data:`PLAIN` (latin-1,
each backslash-separated value stripped of spaces and NULs both sides), :data:`TEXT` (the data
set's character sets; trailing spaces/NULs stripped), :data:`PN` (the same, then trailing ``=``)
or :data:`INT` (US/UL/SS/SL in the data set's byte order: an int, or a list when
multi-valued). Empty values are left out. The four identifying UIDs must be present and match
``[0-9.]{1,64}``, else ``error_type`` is raised with the message below.
"""

from __future__ import annotations

import re
import struct
from typing import Any, Final

from pydicom.valuerep import TEXT_VR_DELIMS

from hpacs.dicom.text import decode_pn, decode_text, encodings_for

__all__ = [
    "INT",
    "PLAIN",
    "PN",
    "SINGLE_VALUED_TEXT",
    "TEXT",
    "RecordBuilder",
    "check_uids",
    "decode_value",
]

PLAIN, TEXT, PN, INT = 0, 1, 2, 3
SINGLE_VALUED_TEXT: Final = frozenset({"ST", "LT", "UT"})  # backslash is data, not a delimiter
INT_FORMATS: Final = {"US": ("H", False), "UL": ("I", False), "SS": ("h", True),
                      "SL": ("i", True)}  # fmt: skip
SPECIFIC_CHARACTER_SET: Final = 0x00080005
#: The identifying UIDs in record order: (keyword, tag, level index, in the record).
UID_KEYS: Final = (("SOPInstanceUID", 0x00080018, 3), ("SOPClassUID", 0x00080016, 3),
                   ("StudyInstanceUID", 0x0020000D, 1), ("SeriesInstanceUID", 0x0020000E, 2))
_UID_RE: Final = re.compile(r"[0-9.]{1,64}")


def decode_value(raw: bytes, kind: int, vr: str, encodings: tuple[str, ...]) -> Any:
    """A non-integer value (kinds PLAIN, TEXT, PN) as the index keeps it."""
    if kind == PLAIN:
        s = raw.decode("latin-1")
        if "\\" in s:
            return "\\".join([p.strip(" \0") for p in s.split("\\")])
        return s.strip(" \0")
    if kind == PN:
        if b"\\" in raw:
            return "\\".join([decode_pn(p.rstrip(b" \0"), encodings) for p in raw.split(b"\\")])
        return decode_pn(raw.rstrip(b" \0"), encodings)
    if vr not in SINGLE_VALUED_TEXT and b"\\" in raw:
        return "\\".join(
            [decode_text(p.rstrip(b" \0"), encodings, TEXT_VR_DELIMS) for p in raw.split(b"\\")]
        )
    return decode_text(raw.rstrip(b" \0"), encodings, TEXT_VR_DELIMS)


def decode_int(raw: bytes, vr: str, little_endian: bool) -> int | list[int] | None:
    code, signed = INT_FORMATS[vr]
    width = 2 if code in "Hh" else 4
    n = len(raw) // width
    if n == 0:
        return None
    if n == 1:
        return int.from_bytes(raw[:width], "little" if little_endian else "big", signed=signed)
    return list(struct.unpack(("<" if little_endian else ">") + code * n, raw[: n * width]))


def check_uids(levels: tuple[dict, ...], error_type: type[Exception]) -> list[str]:
    """The four identifying UIDs (SOP instance, SOP class, study, series); raises
    ``error_type`` naming the first one missing or malformed."""
    out = []
    for keyword, tag, level in UID_KEYS:
        uid = levels[level].get(keyword)
        if not uid:
            raise error_type(f"missing {keyword} ({tag:08X})")
        if not isinstance(uid, str) or _UID_RE.fullmatch(uid) is None:
            raise error_type(f"invalid {keyword} {uid!r}")
        out.append(uid)
    return out


class RecordBuilder:
    """Builds ``record_type`` records from the header scanner's raw values."""

    def __init__(self, decoders: dict[int, tuple[str, int, str, tuple[int, ...]]],
                 record_type: type, error_type: type[Exception]) -> None:
        self.decoders = decoders
        self.record_type = record_type
        self.error_type = error_type

    def build(self, values: dict[int, bytes], transfer_syntax: str, path: str, size: int,
              stored_at: float, little_endian: bool) -> Any:
        """The record of one instance; raises ``error_type`` on missing/bad UIDs."""
        encodings = encodings_for(values.get(SPECIFIC_CHARACTER_SET))
        levels: tuple[dict[str, Any], ...] = ({}, {}, {}, {})
        decoders = self.decoders
        for tag, raw in values.items():
            spec = decoders.get(tag)
            if spec is None or not raw:
                continue
            keyword, kind, vr, where = spec
            if kind == INT:
                value = decode_int(raw, vr, little_endian)
            else:
                value = decode_value(raw, kind, vr, encodings)
            if value is None or value == "":
                continue
            for i in where:
                levels[i][keyword] = value
        patient, study, series, instance = levels
        sop, sop_class, study_uid, series_uid = check_uids(levels, self.error_type)
        pid = patient.get("PatientID", "")
        issuer = patient.get("IssuerOfPatientID", "")
        return self.record_type(
            sop, sop_class, study_uid, series_uid,
            pid if isinstance(pid, str) else str(pid),
            issuer if isinstance(issuer, str) else str(issuer),
            transfer_syntax, path, size, stored_at, patient, study, series, instance,
        )  # fmt: skip
