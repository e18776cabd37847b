"""The DICOM JSON encoder against pydicom's ``to_json_dict`` on every pydicom test file, plus the
PS3.18 F.2 choices pydicom does not make (empty multi-values, bulk data, inline nested binary)."""

from __future__ import annotations

import base64
import contextlib
import io
import warnings

import pydicom
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from hpacs.dicom.dicomjson import INLINE_MAX, DicomJSONError, dataset_json, part10_json
from hpacs.dicom.part10 import Part10Error
from tests.conftest import pydicom_test_dir
from tests.dicom.json_oracle import compare_json, pydicom_reference

BASE = "http://h/dicom-web/studies/1/series/2/instances/3"
# not whole data sets (ingest refuses them, so they never reach /metadata); the DICOMDIR's last
# item claims more bytes than its sequence holds
TRUNCATED = {"MR_truncated.dcm", "rtplan_truncated.dcm", "DICOMDIR-nooffset"}


def _dicom_files() -> list[str]:
    out = []
    for path in map(str, sorted(pydicom_test_dir().rglob("*"))):
        if path.rsplit("/", 1)[-1] in TRUNCATED:
            continue
        try:
            with open(path, "rb") as f:
                head = f.read(132)
        except OSError:
            continue
        if head[128:132] == b"DICM":
            out.append(path)
    return sorted(out)


@pytest.mark.parametrize("path", _dicom_files(), ids=lambda p: p.rsplit("/", 1)[-1])
def test_matches_pydicom(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = pydicom_reference(pydicom.dcmread(path))
    with open(path, "rb") as f:
        ours = part10_json(f.read(), bulk_base=BASE)
    assert compare_json(ours, ref, BASE) == []


def _file(ds: Dataset, syntax: str = ExplicitVRLittleEndian) -> bytes:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _sample() -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ImageType = ["ORIGINAL", "", "AXIAL"]
    ds.PatientName = "Müller^Jürgen=山田^太郎"
    ds.add_new(0x00100020, "LO", "")
    ds.OtherPatientNames = ["", "Doe^Jane"]
    ds.WindowCenter = ["40", "-400.5"]
    ds.SeriesNumber = "7"
    ds.FrameIncrementPointer = 0x00181063
    ds.ImageComments = "a\\b"
    ds.Rows = 2
    ds.BitsAllocated = 16
    ds.add_new(0x00091010, "OB", b"\x01" * (INLINE_MAX + 2))  # big binary: bulk at top level
    item = Dataset()
    item.CodeValue = "T-1"
    item.add_new(0x00091011, "OB", b"\x02" * (INLINE_MAX + 2))  # nested: inline
    ds.ReferencedImageSequence = Sequence([item, Dataset()])
    ds.add_new(0x7FE00010, "OW", b"\x00\x01" * 4)
    return ds


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian,
                                    ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian])
def test_model_choices(syntax):
    out = part10_json(_file(_sample(), syntax), bulk_base=BASE)
    assert out["00080008"] == {"vr": "CS", "Value": ["ORIGINAL", None, "AXIAL"]}
    assert out["00100010"] == {"vr": "PN", "Value": [
        {"Alphabetic": "Müller^Jürgen", "Ideographic": "山田^太郎"}]}
    assert out["00100020"] == {"vr": "LO"}
    assert out["00101001"] == {"vr": "PN", "Value": [None, {"Alphabetic": "Doe^Jane"}]}
    assert out["00281050"] == {"vr": "DS", "Value": [40, -400.5]}
    assert out["00200011"] == {"vr": "IS", "Value": [7]}
    assert out["00280009"] == {"vr": "AT", "Value": ["00181063"]}
    assert out["00204000"] == {"vr": "LT", "Value": ["a\\b"]}
    assert out["00280010"] == {"vr": "US", "Value": [2]}
    big = "UN" if syntax == ImplicitVRLittleEndian else "OB"  # private: no dictionary VR
    assert out["00091010"] == {"vr": big, "BulkDataURI": f"{BASE}/bulkdata/00091010"}
    items = out["00081140"]["Value"]
    assert items[0]["00080100"] == {"vr": "SH", "Value": ["T-1"]}
    assert base64.b64decode(items[0]["00091011"]["InlineBinary"]) == b"\x02" * (INLINE_MAX + 2)
    assert items[1] == {}
    assert out["7FE00010"]["InlineBinary"] == base64.b64encode(b"\x00\x01" * 4).decode()


def test_without_bulk_base_everything_is_inline():
    out = part10_json(_file(_sample()))
    assert base64.b64decode(out["00091010"]["InlineBinary"]) == b"\x01" * (INLINE_MAX + 2)


def test_encapsulated_pixel_data_is_always_bulk():
    path = get_testdata_file("SC_rgb_rle.dcm")
    with open(path, "rb") as f:
        out = part10_json(f.read(), bulk_base=BASE)
    assert out["7FE00010"] == {"vr": "OB", "BulkDataURI": f"{BASE}/bulkdata/7FE00010"}


@pytest.mark.parametrize("name", sorted(TRUNCATED))
def test_truncated_data_set_is_a_typed_error(name):
    with open(get_testdata_file(name), "rb") as f:
        data = f.read()
    with pytest.raises(DicomJSONError):
        part10_json(data, bulk_base=BASE)


@given(st.binary(max_size=512), st.booleans(), st.booleans())
def test_arbitrary_bytes_only_typed_errors(data, explicit, little):
    with contextlib.suppress(DicomJSONError):
        dataset_json(data, explicit_vr=explicit, little_endian=little, bulk_base=BASE)


@given(st.integers(min_value=0, max_value=400), st.binary(min_size=1, max_size=4))
def test_mutated_file_only_typed_errors(at, junk):
    data = bytearray(_file(_sample()))
    at = 132 + at % (len(data) - 132)
    data[at : at + len(junk)] = junk
    with contextlib.suppress(DicomJSONError, Part10Error):
        part10_json(bytes(data), bulk_base=BASE)
