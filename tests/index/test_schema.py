"""record_from_scan: charset decoding (against pydicom), byte order, and the error cases."""

from __future__ import annotations

import struct
import warnings

import pydicom
import pydicom.data
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.multival import MultiValue

from hpacs.index.schema import (
    ATTRS,
    ATTRS_BY_KEYWORD,
    WANTED_TAGS,
    RecordError,
    record_from_scan,
)

UIDS = {
    0x00080018: b"1.2.3.4.5\0",
    0x00080016: b"1.2.840.10008.5.1.4.1.1.7\0",
    0x0020000D: b"1.2.3\0",
    0x0020000E: b"1.2.3.4 ",
}
LE = "1.2.840.10008.1.2"
BE = "1.2.840.10008.1.2.2"


def _rec(values, **kw):
    kw.setdefault("transfer_syntax", LE)
    return record_from_scan(values, path="a/b.dcm", size=10, stored_at=1.0, **kw)


def _raw_values(path):
    """Raw bytes of every wanted element, as the header scanner would hand them over."""
    ds = pydicom.dcmread(path)
    vals = {}
    for tag in WANTED_TAGS:
        if tag not in ds:
            continue
        item = ds.get_item(tag)
        if isinstance(item, RawDataElement):
            vals[tag] = bytes(item.value or b"")
        else:  # (0008,0005) is converted eagerly by pydicom: re-encode the ASCII terms
            v = item.value
            vals[tag] = (v if isinstance(v, str) else "\\".join(v)).encode()
    return ds, vals


CHARSET_FILES = sorted(pydicom.data.get_charset_files("chr*.dcm"))


def test_wanted_tags_cover_main_dicom_tags():
    for kw in (
        "PatientName",
        "OtherPatientIDs",
        "TimezoneOffsetFromUTC",
        "ContrastBolusAgent",
        "PerformedProcedureStepStartTime",
        "WindowWidth",
        "SpecificCharacterSet",
    ):
        assert ATTRS_BY_KEYWORD[kw].tag in WANTED_TAGS
    assert ATTRS_BY_KEYWORD["ImageOrientationPatient"].levels == ("series", "instance")
    assert len(WANTED_TAGS) >= 64


@pytest.mark.parametrize("path", CHARSET_FILES, ids=lambda p: p.rsplit("/", 1)[-1])
def test_text_decoding_matches_pydicom(path):
    ds, vals = _raw_values(path)
    vals.update(UIDS)
    rec = _rec(vals)
    merged = {**rec.patient, **rec.study, **rec.series, **rec.instance}
    checked = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for tag in vals:
            a = ATTRS[tag]
            if a.vr not in ("PN", "LO", "SH", "ST", "LT", "UT", "UC") or tag in UIDS:
                continue
            v = ds[tag].value
            want = "\\".join(str(x) for x in v) if isinstance(v, MultiValue | list) else str(v)
            assert merged.get(a.keyword, "") == want, a.keyword
            checked += 1
    assert checked


def test_non_ascii_names_decoded():
    names = {}
    for path in CHARSET_FILES:
        _, vals = _raw_values(path)
        if 0x00100010 in vals:
            vals.update(UIDS)
            names[path.rsplit("/", 1)[-1]] = _rec(vals).patient["PatientName"]
    assert names["chrH31.dcm"] == "Yamada^Tarou=山田^太郎=やまだ^たろう"
    assert names["chrRuss.dcm"] == "Люкceмбypг"  # noqa: RUF001
    assert names["chrI2.dcm"] == "Hong^Gildong=洪^吉洞=홍^길동"
    assert names["chrX1.dcm"] == "Wang^XiaoDong=王^小東"


def test_bad_charset_tolerated():
    vals = {**UIDS, 0x00080005: b"NOT A CHARSET", 0x00100010: b"Caf\xe9^Ol\xe9 "}
    assert _rec(vals).patient["PatientName"] == "Café^Olé"
    vals[0x00080005] = b"ISO_IR 192"
    vals[0x00100010] = b"\xff\xfe^bad utf8"  # undecodable: replaced, never raises
    assert "bad utf8" in _rec(vals).patient["PatientName"]


@pytest.mark.parametrize("little", [True, False])
def test_binary_integers_by_byte_order(little):
    o = "<" if little else ">"
    vals = {
        **UIDS,
        0x00280010: struct.pack(o + "H", 512),  # Rows US
        0x00280011: struct.pack(o + "H", 0x1234),  # Columns US
        0x00541330: struct.pack(o + "H", 7),  # ImageIndex US
        0x00280100: struct.pack(o + "H", 16),
    }
    rec = _rec(vals, transfer_syntax=LE if little else BE)
    assert rec.instance["Rows"] == 512
    assert rec.instance["Columns"] == 0x1234
    assert rec.instance["ImageIndex"] == 7
    assert rec.instance["BitsAllocated"] == 16
    # explicit override beats the transfer syntax default
    rec2 = _rec(vals, transfer_syntax=LE, little_endian=little)
    assert rec2.instance["Columns"] == 0x1234


def test_strings_stripped_and_multivalued():
    vals = {
        **UIDS,
        0x00080020: b"20240102",
        0x00200037: b"1\\0\\0 \\0\\1\\0 ",  # ImageOrientationPatient DS
        0x00281050: b" 40\\400 ",  # WindowCenter DS
        0x00101000: b"A\\B ",  # OtherPatientIDs LO
        0x00204000: b"line1\\still one value ",  # ImageComments LT keeps backslashes
        0x00100020: b"",  # empty PatientID: absent
    }
    rec = _rec(vals)
    assert rec.study["StudyDate"] == "20240102"
    assert rec.series["ImageOrientationPatient"] == "1\\0\\0\\0\\1\\0"
    assert rec.instance["ImageOrientationPatient"] == "1\\0\\0\\0\\1\\0"
    assert rec.instance["WindowCenter"] == "40\\400"
    assert rec.patient["OtherPatientIDs"] == "A\\B"
    assert rec.instance["ImageComments"] == "line1\\still one value"
    assert rec.patient_id == "" and "PatientID" not in rec.patient
    assert rec.sop_instance_uid == "1.2.3.4.5" and rec.series_uid == "1.2.3.4"
    assert rec.transfer_syntax_uid == LE and rec.path == "a/b.dcm"


@pytest.mark.parametrize(
    "tag,name",
    [
        (0x00080018, "SOPInstanceUID"),
        (0x00080016, "SOPClassUID"),
        (0x0020000D, "StudyInstanceUID"),
        (0x0020000E, "SeriesInstanceUID"),
    ],
)
def test_missing_uid(tag, name):
    vals = dict(UIDS)
    del vals[tag]
    with pytest.raises(RecordError, match=name):
        _rec(vals)
    vals[tag] = b"\0"
    with pytest.raises(RecordError, match=f"missing {name}"):
        _rec(vals)


@pytest.mark.parametrize("bad", [b"1.2.abc", b"1." * 40, b"1.2 3"])
def test_invalid_uid(bad):
    with pytest.raises(RecordError, match="invalid StudyInstanceUID"):
        _rec({**UIDS, 0x0020000D: bad})


def test_real_file_record():
    path = pydicom.data.get_testdata_file("CT_small.dcm")
    ds, vals = _raw_values(path)
    rec = _rec(vals, transfer_syntax=str(ds.file_meta.TransferSyntaxUID))
    assert rec.sop_instance_uid == ds.SOPInstanceUID
    assert rec.patient["PatientName"] == str(ds.PatientName)
    assert rec.instance["Rows"] == ds.Rows and rec.instance["Columns"] == ds.Columns
    assert rec.series["Modality"] == "CT"
