"""Small synthetic DICOM instances for tests (benchmarks/corpus.py makes the big realistic ones)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

ROOT = "1.2.826.0.1.3680043.10.1488.99."


def uid(*parts: object) -> str:
    """A deterministic valid UID from parts."""
    return generate_uid(ROOT, entropy_srcs=[str(p) for p in parts])


def make_ct(patient: int = 1, study: int = 1, series: int = 1, number: int = 1,
            size: int = 64, name: str | None = None) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = uid("inst", patient, study, series, number)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = uid("study", patient, study)
    ds.SeriesInstanceUID = uid("series", patient, study, series)
    ds.PatientID = f"PAT{patient:05d}"
    ds.PatientName = name or f"DOE^JOHN{patient}"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "M"
    ds.StudyDate = f"2026{(study % 12) + 1:02d}15"
    ds.StudyTime = "101500"
    ds.AccessionNumber = f"ACC{patient:04d}{study:03d}"
    ds.StudyID = str(study)
    ds.Modality = "CT"
    ds.SeriesNumber = series
    ds.InstanceNumber = number
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    rng = np.random.default_rng(number)
    ds.PixelData = rng.integers(0, 4096, (size, size), dtype=np.uint16).tobytes()
    return ds


def write(ds: Dataset, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path
