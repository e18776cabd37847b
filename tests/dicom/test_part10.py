"""Part 10 helpers against pydicom: meta written by us reads back in pydicom, and our reader
agrees with pydicom's file_meta on every file it ships."""

from __future__ import annotations

import io
import os
import zlib

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.filewriter import write_dataset

from hpacs.dicom import part10
from hpacs.dicom.part10 import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    Part10Error,
    build_file_meta,
    read_file_meta,
    scan_part10,
)
from hpacs.dicom.scan import HeaderScanner, ScanError
from hpacs.dicom.transfer_syntax import DEFLATED_EXPLICIT_VR_LE, EXPLICIT_VR_LE, encoding_of
from tests._ext.headscan_corpus import KNOWN_BAD, ROOT, WANTED, sample

CT = "1.2.840.10008.5.1.4.1.1.2"
FILES = sorted(
    os.path.relpath(os.path.join(d, f), ROOT) for d, _, fs in os.walk(ROOT) for f in fs
)
NOT_DICOM = {"README.txt", "dicomdirtests/README.txt", "dicomdirtests/TINY_ALPHA/README",
             "crayons.icc", "test1.json", "test_PN.json", "rtplan.dump", "rtstruct.dump",
             "zipMR.gz", "no_meta.dcm"}  # no_meta.dcm starts with a stray byte: garbage


def _dataset_bytes(ts: str) -> bytes:
    ds = Dataset()
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "P1"
    ds.SOPInstanceUID = "1.2.3.4"
    enc = encoding_of(ts)
    fp = pydicom.filebase.DicomBytesIO()
    fp.is_implicit_VR, fp.is_little_endian = not enc.explicit_vr, enc.little_endian
    write_dataset(fp, ds)
    raw = fp.getvalue()
    if enc.deflated:
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        raw = c.compress(raw) + c.flush()
    return raw


@pytest.mark.parametrize("ts", [EXPLICIT_VR_LE, "1.2.840.10008.1.2", "1.2.840.10008.1.2.2",
                                DEFLATED_EXPLICIT_VR_LE, "1.2.840.10008.1.2.4.50"])
@pytest.mark.parametrize("inst", ["1.2.3.4", "1.2.3.45", "1." + "2" * 62])
def test_build_file_meta_reads_back_in_pydicom(tmp_path, ts, inst):
    meta = build_file_meta(CT, inst, ts, source_ae_title="STORESCU")
    assert meta[:128] == bytes(128) and meta[128:132] == b"DICM"
    assert int.from_bytes(meta[140:144], "little") == len(meta) - 144  # group length
    body = _dataset_bytes(ts if ts != "1.2.840.10008.1.2.4.50" else EXPLICIT_VR_LE)
    path = tmp_path / "x.dcm"
    path.write_bytes(meta + body)
    ds = pydicom.dcmread(path)
    fm = ds.file_meta
    assert fm.FileMetaInformationVersion == b"\x00\x01"
    assert (fm.MediaStorageSOPClassUID, fm.MediaStorageSOPInstanceUID) == (CT, inst)
    assert fm.TransferSyntaxUID == ts
    assert fm.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert fm.ImplementationVersionName == IMPLEMENTATION_VERSION_NAME
    assert fm.SourceApplicationEntityTitle == "STORESCU"
    assert fm.FileMetaInformationGroupLength == len(meta) - 144
    assert ds.PatientName == "Doe^Jane"
    ours = read_file_meta(path)
    assert (ours.sop_class_uid, ours.sop_instance_uid, ours.transfer_syntax_uid) == (CT, inst, ts)
    assert ours.dataset_offset == len(meta) and ours.has_preamble
    assert ours.source_ae_title == "STORESCU"
    if ts != "1.2.840.10008.1.2.4.50":
        got_meta, values = scan_part10(path, WANTED)
        assert values[0x00100010] == b"Doe^Jane" and got_meta == ours


def test_build_file_meta_rejects_bad_uids_and_pads_from_scanner_values():
    with pytest.raises(ValueError):
        build_file_meta(CT, "1.2.a", EXPLICIT_VR_LE)
    with pytest.raises(ValueError):
        build_file_meta(CT, "1." * 40, EXPLICIT_VR_LE)
    with pytest.raises(ValueError):
        build_file_meta(CT, "", EXPLICIT_VR_LE)
    assert build_file_meta(CT + "\0", "1.2.3\0", EXPLICIT_VR_LE) == build_file_meta(
        CT, "1.2.3", EXPLICIT_VR_LE
    )
    assert part10.build_preamble_and_meta is build_file_meta


def _pydicom_meta(path: str):
    with open(path, "rb") as f:
        read_preamble(f, True)
        fm = _read_file_meta_info(f)
        return fm, f.tell()


@pytest.mark.parametrize("name", [f for f in FILES if f not in NOT_DICOM])
def test_read_file_meta_agrees_with_pydicom(name):
    path = os.path.join(ROOT, name)
    fm, offset = _pydicom_meta(path)
    ours = read_file_meta(path)
    def norm(v):
        return str(v) if v else None
    assert ours.transfer_syntax_uid == norm(fm.get("TransferSyntaxUID"))
    assert ours.sop_class_uid == norm(fm.get("MediaStorageSOPClassUID"))
    assert ours.sop_instance_uid == norm(fm.get("MediaStorageSOPInstanceUID"))
    assert ours.implementation_class_uid == norm(fm.get("ImplementationClassUID"))
    assert ours.dataset_offset == offset
    assert ours.has_preamble == (offset > 0)
    raw = open(path, "rb").read()  # noqa: SIM115
    assert read_file_meta(raw) == ours
    with open(path, "rb") as f:
        assert read_file_meta(f) == ours
    assert part10.read_part10(path) == (ours.elements, ours.dataset_offset)


@pytest.mark.parametrize("name", sorted(NOT_DICOM))
def test_not_dicom_rejected(name):
    with pytest.raises(Part10Error, match="not DICOM"):
        read_file_meta(os.path.join(ROOT, name))


def test_truncated_meta_and_empty():
    meta = build_file_meta(CT, "1.2.3.4", EXPLICIT_VR_LE)
    with pytest.raises(Part10Error, match="empty"):
        read_file_meta(b"")
    for cut in (140, 150, 170, len(meta) - 3):
        with pytest.raises(Part10Error, match="truncated"):
            read_file_meta(meta[:cut])
    assert read_file_meta(meta).dataset_offset == len(meta)  # meta only: empty data set


@pytest.mark.parametrize("name", [f for f in FILES if f not in NOT_DICOM])
def test_scan_part10_matches_scanner(name, tmp_path):
    path = os.path.join(ROOT, name)
    s = sample(name)
    if name in KNOWN_BAD:
        with pytest.raises(ScanError, match=r"offset|stream ends"):
            scan_part10(path, WANTED)
        return
    sc = HeaderScanner(WANTED, s.explicit_vr, s.little_endian)
    sc.feed(s.data)
    meta, values = scan_part10(path, WANTED, chunk_size=4093)
    assert values == sc.finish()
    assert meta == read_file_meta(path)


def test_scan_part10_deflate_truncated_and_corrupt(tmp_path):
    raw = open(os.path.join(ROOT, "image_dfl.dcm"), "rb").read()  # noqa: SIM115
    off = read_file_meta(raw).dataset_offset
    p = tmp_path / "cut.dcm"
    p.write_bytes(raw[: off + (len(raw) - off) // 2])
    with pytest.raises(Part10Error, match="truncated"):
        scan_part10(p, WANTED, chunk_size=1000)
    bad = bytearray(raw)
    bad[off : off + 40] = b"\xff" * 40
    p.write_bytes(bytes(bad))
    with pytest.raises(ScanError):
        scan_part10(p, WANTED)


def test_scan_part10_unknown_transfer_syntax(tmp_path):
    p = tmp_path / "x.dcm"
    p.write_bytes(build_file_meta(CT, "1.2.3", "1.2.3.4.5") + _dataset_bytes(EXPLICIT_VR_LE))
    with pytest.raises(Part10Error, match="unsupported transfer syntax"):
        scan_part10(p, WANTED)


def test_read_file_meta_large_meta_from_file(tmp_path):
    """A meta group bigger than the first read still parses from a file object."""
    big = b"x" * 70_000
    meta = build_file_meta(CT, "1.2.3", EXPLICIT_VR_LE)
    extra = b"\x02\x00\x00\x01OB\x00\x00" + len(big).to_bytes(4, "little") + big
    data = meta + extra + _dataset_bytes(EXPLICIT_VR_LE)
    got = read_file_meta(io.BytesIO(data))
    assert got.dataset_offset == len(meta) + len(extra)
    assert got.elements[0x00020100] == big
    assert FileMetaDataset  # pydicom's class exists: keeps the import honest
