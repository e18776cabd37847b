import hashlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import UID

from benchmarks import corpus
from benchmarks.corpus import CorpusConfig

SMALL = CorpusConfig(
    seed=7,
    studies=6,
    mix={"CT": 1, "MR": 1, "DX": 1, "US": 1},
    ct_slices=3,
    ct_series_per_study=2,
    mr_slices=2,
    us_frames=3,
)


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*.dcm"))
    }


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("corpus")
    return out, corpus.generate(SMALL, out)


def test_same_seed_same_bytes(small, tmp_path):
    out, manifest = small
    again = corpus.generate(SMALL, tmp_path / "again")
    assert again["files"] == manifest["files"]
    assert _digests(out) == _digests(tmp_path / "again")


def test_other_seed_other_uids():
    a = next(corpus.iter_files(corpus.ct_only(1, seed=1)))[2]
    b = next(corpus.iter_files(corpus.ct_only(1, seed=2)))[2]
    da, db = (pydicom.dcmread(pydicom.filebase.DicomBytesIO(x)) for x in (a, b))
    assert da.SOPInstanceUID != db.SOPInstanceUID
    assert da.StudyInstanceUID != db.StudyInstanceUID


def test_all_modalities_readable_with_tags(small):
    out, manifest = small
    assert manifest["count"] == len(manifest["files"]) == len(list(out.rglob("*.dcm")))
    assert set(manifest["by_modality"]) == {"CT", "MR", "DX", "US"}
    sop_uids = set()
    for rel, size in manifest["files"]:
        path = out / rel
        assert path.stat().st_size == size
        ds = pydicom.dcmread(path)
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.SOPClassUID == corpus.SOP_CLASSES[ds.Modality]
        for kw in (
            "PatientName",
            "PatientID",
            "PatientBirthDate",
            "PatientSex",
            "StudyDate",
            "StudyTime",
            "StudyDescription",
            "AccessionNumber",
            "ReferringPhysicianName",
            "SeriesNumber",
            "SeriesDescription",
            "BodyPartExamined",
            "InstanceNumber",
            "SpecificCharacterSet",
        ):
            assert kw in ds, (rel, kw)
        for uid in (ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.StudyInstanceUID):
            assert UID(uid).is_valid and len(uid) <= 64
        sop_uids.add(ds.SOPInstanceUID)
        pixels = ds.pixel_array
        assert pixels.std() > 1, "pixels must not be flat (compression benchmarks need them)"
        if ds.Modality == "CT":
            assert (ds.Rows, ds.Columns, ds.BitsAllocated) == (512, 512, 16)
            assert len(ds.PixelData) == 512 * 512 * 2
            assert 520_000 < size < 535_000
            for kw in (
                "ImagePositionPatient",
                "ImageOrientationPatient",
                "PixelSpacing",
                "WindowCenter",
                "WindowWidth",
                "RescaleIntercept",
                "RescaleSlope",
                "SliceLocation",
                "FrameOfReferenceUID",
            ):
                assert kw in ds, kw
        elif ds.Modality == "MR":
            assert (ds.Rows, ds.Columns) == (256, 256)
        elif ds.Modality == "DX":
            assert (ds.Rows, ds.Columns, ds.BitsAllocated) == (2500, 2048, 16)
        else:
            assert ds.NumberOfFrames == 3 and pixels.shape == (3, 480, 640)
            assert ds.BitsAllocated == 8
    assert len(sop_uids) == manifest["count"]


def test_volume_positions_advance(small):
    out, _ = small
    series = next(p.parent for p in sorted(out.rglob("IM00003.dcm")) if "_CT" in str(p))
    z = [float(pydicom.dcmread(p).ImagePositionPatient[2]) for p in sorted(series.glob("*.dcm"))]
    assert z == sorted(z) and len(set(z)) == len(z)


@pytest.mark.parametrize("syntax", ["implicit", "big", "deflated"])
def test_other_syntaxes_same_pixels(syntax):
    ref = next(corpus.iter_files(corpus.ct_only(1)))[2]
    other = next(corpus.iter_files(corpus.ct_only(1, syntax=syntax)))[2]
    a, b = (pydicom.dcmread(pydicom.filebase.DicomBytesIO(x)) for x in (ref, other))
    assert b.file_meta.TransferSyntaxUID == corpus.SYNTAXES[syntax]
    assert np.array_equal(a.pixel_array, b.pixel_array)
    assert a.PatientName == b.PatientName


def test_rgb_ultrasound():
    cfg = CorpusConfig(seed=3, studies=1, files=1, mix={"US": 1}, us_frames=2, us_rgb=True)
    ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(next(corpus.iter_files(cfg))[2]))
    assert ds.PhotometricInterpretation == "RGB"
    assert ds.pixel_array.shape == (2, 480, 640, 3)


def test_files_cap_and_ct_only():
    cfg = corpus.ct_only(7, ct_slices=3)
    files = list(corpus.iter_files(cfg))
    assert len(files) == 7
    assert {m for _, m, _ in files} == {"CT"}
    assert len({rel.split("/")[0] for rel, _, _ in files}) == 3  # studies of 3, 3 and 1


def test_ensure_reuses_and_regenerates(tmp_path):
    cfg = corpus.ct_only(2)
    m1 = corpus.ensure(cfg, tmp_path / "c")
    first = tmp_path / "c" / m1["files"][0][0]
    mtime = first.stat().st_mtime_ns
    assert corpus.ensure(cfg, tmp_path / "c") == m1
    assert first.stat().st_mtime_ns == mtime
    m3 = corpus.ensure(corpus.ct_only(3), tmp_path / "c")
    assert m3["count"] == 3 and len(list((tmp_path / "c").rglob("*.dcm"))) == 3


def test_bad_config():
    with pytest.raises(ValueError):
        CorpusConfig(studies=None, files=None)
    with pytest.raises(ValueError):
        CorpusConfig(mix={"PET": 1})
    with pytest.raises(ValueError):
        CorpusConfig(syntax="jpeg")


def test_cli(tmp_path, capsys):
    assert corpus.main(["--out", str(tmp_path / "o"), "--ct-only", "--files", "2"]) == 0
    assert "2 files" in capsys.readouterr().out
    assert len(list((tmp_path / "o").rglob("*.dcm"))) == 2
