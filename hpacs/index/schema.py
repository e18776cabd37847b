"""What the index keeps per level, and how raw scanned values become an :class:`InstanceRecord`.

The header scanner hands us raw element values (stream byte order, padding intact, no VR: implicit
VR streams carry none), so the VR of every wanted tag comes from pydicom's dictionary, computed
once at import. Decoding is the ingest hot path (once per instance): a per-tag table picks one of
four decoders, run by the compiled record builder (``hpacs._ext._recordkit``, twin
``hpacs._ext.recordkit``); text in a one-byte or UTF-8 character set is decoded there, the rest
by pydicom's charset machinery (``decode_bytes``), which handles ISO 2022 code extensions.

Values kept: strings as the DICOM string (multi-values joined with ``\\``, trailing spaces/NULs
stripped, leading ones too for the non-text VRs), binary integers (US/UL/SS/SL) as ``int`` or
``list[int]`` when multi-valued. Empty values are left out (absent == empty for the index).
"""

from __future__ import annotations

from typing import Any, Final

import msgspec
from pydicom.datadict import dictionary_VR, tag_for_keyword

from hpacs._ext import load
from hpacs._ext.recordkit import INT, INT_FORMATS, PLAIN, PN, SPECIFIC_CHARACTER_SET, TEXT
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

__all__ = ["ATTRS", "ATTRS_BY_KEYWORD", "BUILDER", "COMPILED", "INSTANCE", "LEVELS",
           "LEVEL_KEYWORDS", "PATIENT", "SERIES", "SPECIFIC_CHARACTER_SET", "STUDY",
           "WANTED_TAGS", "Attr", "InstanceRecord", "RecordError", "Value", "record_from_scan"]

_TEXT_VRS: Final = {"LO", "SH", "ST", "LT", "UT", "UC"}

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
        return PN
    if vr in _TEXT_VRS:
        return TEXT
    if vr in INT_FORMATS:
        return INT
    return PLAIN


# tag -> (keyword, kind, vr, level indexes): tuples are the fastest thing to unpack per element
_DECODERS: Final[dict[int, tuple[str, int, str, tuple[int, ...]]]] = {
    a.tag: (a.keyword, _kind(a.vr), a.vr, tuple(_LEVEL_INDEX[lv] for lv in a.levels))
    for a in ATTRS.values()
}

_kit, COMPILED = load("recordkit", "record builder")
#: Scanned values to records: compiled unless ``HPACS_PURE=1`` (``hpacs._ext.recordkit``).
BUILDER: Final = _kit.RecordBuilder(_DECODERS, InstanceRecord, RecordError)


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
    (only Explicit VR Big Endian is big endian). The decoding rules: ``hpacs._ext.recordkit``.
    """
    if little_endian is None:
        little_endian = transfer_syntax != EXPLICIT_VR_BE
    return BUILDER.build(values, transfer_syntax, path, size, stored_at, little_endian)
