"""C-FIND answers encoded without pydicom equal what pydicom's writer makes of them."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom import config as pydicom_config
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pynetdicom.dsutils import encode

from hpacs.dicom.elements import encode_elements
from hpacs.dimse import find as f
from hpacs.index.query import merge_rows
from tests.dimse.find_requests import DEPTH, find_requests
from tests.index.row_strategies import match_rows

SYNTAXES = ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"]
STUDY_ROOT = "1.2.840.10008.5.1.4.1.2.2.1"
PATIENT_ROOT = "1.2.840.10008.5.1.4.1.2.1.1"


def pydicom_bytes(elements: list[tuple[int, str, Any]], explicit: bool, little: bool,
                  codec: str) -> bytes:
    ds = Dataset()
    for tag, vr, value in elements:
        ds[tag] = DataElement(tag, vr, [] if vr == "SQ" else value,
                              validation_mode=pydicom_config.IGNORE)
    if codec == "utf-8":
        ds.SpecificCharacterSet = "ISO_IR 192"
    fp = DicomBytesIO()
    fp.is_little_endian = little
    fp.is_implicit_VR = not explicit
    write_dataset(fp, ds)
    return fp.getvalue()


ELEMENTS = [
    (0x00080020, "DA", "20200101"),
    (0x00080061, "CS", ["CT", "SR"]),
    (0x00080052, "CS", "STUDY"),
    (0x00100010, "PN", "DOE^JOHN"),
    (0x00100020, "LO", "PAT1"),
    (0x00100030, "DA", None),
    (0x0020000D, "UI", "1.2.3.4.5"),
    (0x00201206, "IS", "3"),
    (0x00201208, "IS", "301"),
    (0x00280010, "US", 512),
    (0x00281050, "DS", ["40", "400"]),
    (0x00081110, "SQ", None),
]


@pytest.mark.parametrize("explicit,little", [(False, True), (True, True), (True, False)])
def test_flat_elements_equal_pydicoms_bytes(explicit, little):
    ours = encode_elements(ELEMENTS, explicit_vr=explicit, little_endian=little)
    assert ours == pydicom_bytes(ELEMENTS, explicit, little, "ascii")


def test_non_ascii_text_is_utf8_with_its_charset():
    elements = [(0x00080005, "CS", "ISO_IR 192"), (0x00100010, "PN", "Müller^Jürgen"),
                (0x00081030, "LO", "Thorax ñ")]
    ours = encode_elements(elements, explicit_vr=True, little_endian=True, text_codec="utf-8")
    assert ours == pydicom_bytes(elements[1:], True, True, "utf-8")


# "=" is left out: pydicom's PersonName drops trailing empty component groups ("A==" -> "A")
# when it writes, while hpacs answers the stored value as it is.
text = st.text(alphabet=st.characters(codec="ascii", exclude_characters="\\\0="), max_size=20)


def _request(level: str, model: str, pid: str, syntax: str, *, charset: bool = False,
             extra: tuple[str, ...] = ()) -> f.FindRequest:
    """A parsed C-FIND request at ``level`` asking for the attributes the match tests fill
    (plus the universal keys in ``extra``), encoded in ``syntax``."""
    query = Dataset()
    if charset:
        query.SpecificCharacterSet = "ISO_IR 192"
    query.QueryRetrieveLevel = level
    query.PatientName = ""
    query.PatientID = pid if model == PATIENT_ROOT else ""
    query.StudyDescription = ""
    for keyword in extra:
        setattr(query, keyword, "")
    query.StudyInstanceUID = "1.2.3" if level != "STUDY" else ""
    if level != "STUDY":
        query.SeriesInstanceUID = "1.2.3.4" if level == "IMAGE" else ""
        query.NumberOfSeriesRelatedInstances = ""
    if level == "IMAGE":
        query.SOPInstanceUID = ""
        query.Rows = None
    explicit = syntax != "1.2.840.10008.1.2"
    little = syntax != "1.2.840.10008.1.2.2"
    return f.parse_find(model, encode(query, not explicit, little), syntax)


@settings(max_examples=200, deadline=None)
@given(name=text, pid=text, desc=text, n=st.integers(0, 65535),
       syntax=st.sampled_from(SYNTAXES), level=st.sampled_from(["STUDY", "SERIES", "IMAGE"]),
       model=st.sampled_from([STUDY_ROOT, PATIENT_ROOT]))
def test_encode_match_equals_the_pydicom_encoding(name, pid, desc, n, syntax, level, model):
    req = _request(level, model, pid, syntax)
    match = {"PatientName": name, "PatientID": pid, "StudyDescription": desc,
             "StudyInstanceUID": "1.2.3", "SeriesInstanceUID": "1.2.3.4",
             "SOPInstanceUID": "1.2.3.4.5", "NumberOfSeriesRelatedInstances": n, "Rows": n}
    ours = f.encode_match(req, match)
    # the reference: the same elements through pydicom's writer
    expected = reference_encode_match(req, match)
    assert ours == expected


def reference_encode_match(req: f.FindRequest, match: dict[str, Any]) -> bytes:
    """The pydicom-based encoder hpacs used before (kept as the oracle)."""
    ds = Dataset()
    non_ascii = False
    depth = f._LEVEL_DEPTH[req.level]
    present = {tag for tag, _, _ in req.keys}
    for tag, vr, kw in req.keys:
        if vr == "SQ":
            ds[tag] = DataElement(tag, "SQ", [])
            continue
        value = f._element_value(vr, match.get(kw)) if kw else None
        if vr in f._TEXT_VRS and value is not None and not non_ascii:
            non_ascii = not all(v.isascii() for v in (value if isinstance(value, list)
                                                      else [value]))
        ds[tag] = DataElement(tag, vr, value, validation_mode=pydicom_config.IGNORE)
    for i, (kw, tag, vr) in enumerate(f._UNIQUE):
        if tag not in present and i <= depth and (i > 0 or req.model == f.PATIENT_ROOT_FIND):
            ds[tag] = DataElement(tag, vr, match.get(kw) or None,
                                  validation_mode=pydicom_config.IGNORE)
    ds[f._QR_LEVEL] = DataElement(f._QR_LEVEL, "CS", req.level)
    if req.charset_requested:
        ds[f._CHARSET] = DataElement(f._CHARSET, "CS", None)
    fp = DicomBytesIO()
    fp.is_little_endian = req.little_endian
    fp.is_implicit_VR = not req.explicit_vr
    write_dataset(fp, ds)
    return fp.getvalue()


# MatchEncoder (the per-request prepared encoder the C-FIND SCP uses) == encode_match, its twin
any_text = st.text(alphabet=st.characters(exclude_characters="\\\0=", exclude_categories=("Cs",)),
                   max_size=12)


@settings(max_examples=300, deadline=None)
@given(name=any_text, pid=text, desc=any_text, n=st.integers(0, 65535),
       modalities=st.lists(st.sampled_from(["CT", "MR", "SR"]), max_size=3),
       syntax=st.sampled_from(SYNTAXES), level=st.sampled_from(["STUDY", "SERIES", "IMAGE"]),
       model=st.sampled_from([STUDY_ROOT, PATIENT_ROOT]), charset=st.booleans(),
       retrieve_ae=st.sampled_from(["", "HPACS"]), missing=st.booleans())
def test_match_encoder_equals_encode_match(name, pid, desc, n, modalities, syntax, level, model,
                                           charset, retrieve_ae, missing):
    req = _request(level, model, pid, syntax, charset=charset,
                   extra=("ModalitiesInStudy", "RetrieveAETitle", "InstanceAvailability"))
    match = {"PatientName": name, "PatientID": pid, "StudyDescription": desc,
             "ModalitiesInStudy": modalities, "StudyInstanceUID": "1.2.3",
             "SeriesInstanceUID": "1.2.3.4", "SOPInstanceUID": "1.2.3.4.5",
             "NumberOfSeriesRelatedInstances": n, "Rows": n}
    if missing:
        match = {k: v for k, v in match.items() if k not in ("PatientID", "StudyDescription")}
    encoder = f.MatchEncoder(req, retrieve_ae=retrieve_ae)
    assert encoder.encode(match) == f.encode_match(req, match, retrieve_ae=retrieve_ae)


# MatchEncoder.encode_rows (what the C-FIND SCP sends: from a match's index rows, compiled)
# == encode_match of the merged rows
@settings(max_examples=400, deadline=None)
@given(data=st.data(), req=find_requests(), retrieve_ae=st.sampled_from(["", "HPACS", "ÄE"]))
def test_encode_rows_equals_encode_match_of_the_merged_rows(data, req, retrieve_ae):
    rows = data.draw(match_rows(DEPTH[req.level]))
    encoder = f.MatchEncoder(req, retrieve_ae=retrieve_ae)
    expected = f.encode_match(req, merge_rows(rows), retrieve_ae=retrieve_ae)
    assert encoder.encode_rows(rows) == expected
    assert encoder.encode(merge_rows(rows)) == expected
