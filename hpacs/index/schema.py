"""What the index keeps per level, and how raw scanned values become an :class:`InstanceRecord`.

The header scanner hands us raw element values (stream byte order, padding intact, no VR: implicit
VR streams carry none), so the VR of every wanted tag comes from pydicom's dictionary, computed
once at import. Decoding is the ingest hot path (once per instance): a per-tag table picks one of
three decoders, and text takes an ASCII/no-escape fast path before falling back to pydicom's
charset machinery (``decode_bytes``), which handles ISO 2022 code extensions.

Values kept: strings as the DICOM string (multi-values joined with ``\\``, trailing spaces/NULs
stripped, leading ones too for the non-text VRs), binary integers (US/UL/SS/SL) as ``int`` or
``list[int]`` when multi-valued. Empty values are left out (absent == empty for the index).
"""

from __future__ import annotations

import re
import struct
from typing import Any, Final

import msgspec
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.valuerep import TEXT_VR_DELIMS

from hpacs.dicom.text import decode_pn, decode_text, encodings_for
from hpacs.dicom.transfer_syntax import EXPLICIT_VR_BE

PATIENT: Final = "patient"
STUDY: Final = "study"
SERIES: Final = "series"
INSTANCE: Final = "instance"
LEVELS: Final = (PATIENT, STUDY, SERIES, INSTANCE)

#: Attributes kept per level: at least Orthanc's "main DICOM tags", by keyword.
LEVEL_KEYWORDS: Final[dict[str, tuple[str, ...]]] = {
    PATIENT: (
        "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
        "OtherPatientIDs",
    ),
    STUDY: (
        "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID", "StudyDescription",
        "AccessionNumber", "ReferringPhysicianName", "RequestedProcedureDescription",
        "InstitutionName", "RequestingPhysician", "TimezoneOffsetFromUTC",
    ),
    SERIES: (
        "SeriesInstanceUID", "SeriesDate", "SeriesTime", "Modality", "Manufacturer",
        "StationName", "SeriesDescription", "BodyPartExamined", "SequenceName", "ProtocolName",
        "SeriesNumber", "CardiacNumberOfImages", "ImagesInAcquisition",
        "NumberOfTemporalPositions", "NumberOfSlices", "NumberOfTimeSlices",
        "ImageOrientationPatient", "SeriesType", "OperatorsName",
        "PerformedProcedureStepDescription", "AcquisitionDeviceProcessingDescription",
        "ContrastBolusAgent", "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime",
    ),
    INSTANCE: (
        "SOPInstanceUID", "SOPClassUID", "InstanceCreationDate", "InstanceCreationTime",
        "AcquisitionNumber", "ImageIndex", "InstanceNumber", "NumberOfFrames",
        "TemporalPositionIdentifier", "ImagePositionPatient", "ImageOrientationPatient",
        "ImageComments", "ContentDate", "ContentTime", "AcquisitionDate", "AcquisitionTime",
        "Rows", "Columns", "BitsAllocated", "PhotometricInterpretation", "SamplesPerPixel",
        "WindowCenter", "WindowWidth", "SpecificCharacterSet",
    ),
}  # fmt: skip

SPECIFIC_CHARACTER_SET: Final = 0x00080005
_UID_TAGS: Final = {
    "SOPInstanceUID": 0x00080018,
    "SOPClassUID": 0x00080016,
    "StudyInstanceUID": 0x0020000D,
    "SeriesInstanceUID": 0x0020000E,
}
_UID_RE: Final = re.compile(r"[0-9.]{1,64}")

# decoder kinds
_PLAIN, _TEXT, _PN, _INT = 0, 1, 2, 3
_TEXT_VRS: Final = {"LO", "SH", "ST", "LT", "UT", "UC"}
_SINGLE_VALUED_TEXT: Final = {"ST", "LT", "UT"}  # backslash is data there, not a delimiter
_INT_FORMATS: Final = {"US": ("H", False), "UL": ("I", False), "SS": ("h", True),
                       "SL": ("i", True)}  # fmt: skip

Value = str | int | list[int]


class RecordError(ValueError):
    """The scanned values cannot make an index record (missing or malformed identifying UIDs)."""


class InstanceRecord(msgspec.Struct, gc=False):
    """Everything the index learns about one stored instance (see CONTRACTS.md)."""

    sop_instance_uid: str
    sop_class_uid: str
    study_uid: str
    series_uid: str
    patient_id: str
    issuer_of_patient_id: str
    transfer_syntax_uid: str
    path: str  # relative to the data dir
    size: int
    stored_at: float
    patient: dict[str, Value]
    study: dict[str, Value]
    series: dict[str, Value]
    instance: dict[str, Value]
    #: Where the instance lives when it is not a hot file: the cold store's reference as a
    #: plain array (the index does not know the store's types); ``path`` is then "".
    cold: list[Any] | None = None


class Attr(msgspec.Struct, frozen=True):
    """One indexed attribute: where it lives and how to decode it."""

    keyword: str
    tag: int
    vr: str
    levels: tuple[str, ...]


def _build() -> dict[int, Attr]:
    by_tag: dict[int, Attr] = {}
    for level, keywords in LEVEL_KEYWORDS.items():
        for kw in keywords:
            tag = tag_for_keyword(kw)
            if tag is None:  # pragma: no cover - dictionary drift
                raise RuntimeError(f"unknown keyword {kw}")
            old = by_tag.get(tag)
            levels = (*old.levels, level) if old else (level,)
            by_tag[tag] = Attr(kw, tag, dictionary_VR(tag), levels)
    return by_tag


#: Every indexed attribute by tag int.
ATTRS: Final[dict[int, Attr]] = _build()
#: Every indexed attribute by keyword.
ATTRS_BY_KEYWORD: Final[dict[str, Attr]] = {a.keyword: a for a in ATTRS.values()}
#: What the header scanner must collect.
WANTED_TAGS: Final[frozenset[int]] = frozenset(ATTRS)

_LEVEL_INDEX: Final = {lvl: i for i, lvl in enumerate(LEVELS)}


def _kind(vr: str) -> int:
    if vr == "PN":
        return _PN
    if vr in _TEXT_VRS:
        return _TEXT
    if vr in _INT_FORMATS:
        return _INT
    return _PLAIN


# tag -> (keyword, kind, vr, level indexes): tuples are the fastest thing to unpack per element
_DECODERS: Final[dict[int, tuple[str, int, str, tuple[int, ...]]]] = {
    a.tag: (a.keyword, _kind(a.vr), a.vr, tuple(_LEVEL_INDEX[lv] for lv in a.levels))
    for a in ATTRS.values()
}

def _decode(raw: bytes, kind: int, vr: str, encodings: tuple[str, ...]) -> Value:
    if kind == _PLAIN:
        s = raw.decode("latin-1")
        if "\\" in s:
            return "\\".join([p.strip(" \0") for p in s.split("\\")])
        return s.strip(" \0")
    if kind == _PN:
        if b"\\" in raw:
            return "\\".join([decode_pn(p.rstrip(b" \0"), encodings) for p in raw.split(b"\\")])
        return decode_pn(raw.rstrip(b" \0"), encodings)
    if vr not in _SINGLE_VALUED_TEXT and b"\\" in raw:
        return "\\".join(
            [decode_text(p.rstrip(b" \0"), encodings, TEXT_VR_DELIMS) for p in raw.split(b"\\")]
        )
    return decode_text(raw.rstrip(b" \0"), encodings, TEXT_VR_DELIMS)


def _decode_int(raw: bytes, vr: str, little_endian: bool) -> int | list[int] | None:
    code, signed = _INT_FORMATS[vr]
    width = 2 if code in "Hh" else 4
    n = len(raw) // width
    if n == 0:
        return None
    if n == 1:
        return int.from_bytes(raw[:width], "little" if little_endian else "big", signed=signed)
    return list(struct.unpack(("<" if little_endian else ">") + code * n, raw[: n * width]))


def record_from_scan(
    values: dict[int, bytes],
    *,
    transfer_syntax: str,
    path: str,
    size: int,
    stored_at: float,
    little_endian: bool | None = None,
) -> InstanceRecord:
    """Decode the scanner's raw values into a record; raises RecordError on missing/bad UIDs.

    ``little_endian`` is the data set's byte order; when omitted it follows ``transfer_syntax``
    (only Explicit VR Big Endian is big endian).
    """
    if little_endian is None:
        little_endian = transfer_syntax != EXPLICIT_VR_BE
    encodings = encodings_for(values.get(SPECIFIC_CHARACTER_SET))
    levels: tuple[dict[str, Value], ...] = ({}, {}, {}, {})
    decoders = _DECODERS
    for tag, raw in values.items():
        spec = decoders.get(tag)
        if spec is None or not raw:
            continue
        keyword, kind, vr, where = spec
        if kind == _INT:
            value: Value | None = _decode_int(raw, vr, little_endian)
        else:
            value = _decode(raw, kind, vr, encodings)
        if value is None or value == "":
            continue
        for i in where:
            levels[i][keyword] = value
    patient, study, series, instance = levels

    uids = (
        instance.get("SOPInstanceUID"),
        instance.get("SOPClassUID"),
        study.get("StudyInstanceUID"),
        series.get("SeriesInstanceUID"),
    )
    for keyword, uid in zip(_UID_TAGS, uids, strict=True):
        if not uid:
            raise RecordError(f"missing {keyword} ({_UID_TAGS[keyword]:08X})")
        if not isinstance(uid, str) or _UID_RE.fullmatch(uid) is None:
            raise RecordError(f"invalid {keyword} {uid!r}")
    pid = patient.get("PatientID", "")
    issuer = patient.get("IssuerOfPatientID", "")
    return InstanceRecord(
        sop_instance_uid=uids[0],  # type: ignore[arg-type]
        sop_class_uid=uids[1],  # type: ignore[arg-type]
        study_uid=uids[2],  # type: ignore[arg-type]
        series_uid=uids[3],  # type: ignore[arg-type]
        patient_id=pid if isinstance(pid, str) else str(pid),
        issuer_of_patient_id=issuer if isinstance(issuer, str) else str(issuer),
        transfer_syntax_uid=transfer_syntax,
        path=path,
        size=size,
        stored_at=stored_at,
        patient=patient,
        study=study,
        series=series,
        instance=instance,
    )
