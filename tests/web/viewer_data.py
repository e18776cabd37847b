"""A CT study a viewer can show: 20 slices of 256x256 with a visible body (a water ellipse, a
bright "spine" and a dark "lung"), real geometry, and a prior of the same patient."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from tests.factories import make_ct, uid, write
from tests.interop.helpers import send_files

PATIENT = 7
CURRENT, PRIOR, OTHER_PRIOR = 2, 1, 3  # study numbers: 2 is current, 1 a CT prior, 3 an MR
SLICES, SIZE = 20, 256


def phantom(z: int, size: int = SIZE) -> np.ndarray:
    """Stored values (HU + 1024) of one slice: air, a soft-tissue ellipse, a bony disc and a
    lung-like dark region whose size changes with ``z`` (scrolling shows a change)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    img = np.full((size, size), -1000.0, dtype=np.float32)
    img[(x / 0.42) ** 2 + (y / 0.32) ** 2 <= 1] = 40.0  # soft tissue
    img[(x + 0.15) ** 2 + y**2 <= (0.06 + 0.004 * z) ** 2] = -800.0  # lung
    img[x**2 + (y - 0.18) ** 2 <= 0.05**2] = 900.0  # bone
    img += np.random.default_rng(z).normal(0, 8, img.shape).astype(np.float32)
    return np.clip(img + 1024, 0, 4095).astype(np.uint16)


def ct_slice(study: int, z: int, *, date: str, modality: str = "CT",
             body_part: str = "CHEST") -> Dataset:
    ds = make_ct(PATIENT, study, 1, z + 1, size=SIZE, name="VIEWER^TEST")
    ds.Modality = modality
    ds.StudyDate, ds.StudyTime = date, "093000"
    ds.StudyDescription = f"{body_part} {modality} {date}"
    ds.SeriesDescription = f"Axial {modality}"
    ds.BodyPartExamined = body_part
    ds.FrameOfReferenceUID = uid("for", PATIENT, study)
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [-128.0, -128.0, float(-z * 2.5)]
    ds.SliceThickness = 2.5
    ds.PixelSpacing = [1.0, 1.0]
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
    ds.WindowCenter, ds.WindowWidth = 40, 400
    ds.PixelData = phantom(z).tobytes()
    return ds


STUDIES = {  # study number -> (date, modality, body part)
    CURRENT: ("20260310", "CT", "CHEST"),
    PRIOR: ("20250310", "CT", "CHEST"),
    OTHER_PRIOR: ("20251010", "MR", "HEAD"),
}


def study_uid(study: int) -> str:
    return uid("study", PATIENT, study)


def patient_id() -> str:
    return f"PAT{PATIENT:05d}"


def load_viewer_studies(server, directory: Path, slices: int = SLICES) -> dict[int, str]:
    """Store the current study, its CT prior and an older-modality MR study; returns
    study number -> StudyInstanceUID."""
    paths = []
    for study, (date, modality, part) in STUDIES.items():
        n = slices if study != OTHER_PRIOR else 3
        paths += [write(ct_slice(study, z, date=date, modality=modality, body_part=part),
                        directory) for z in range(n)]
    statuses = send_files(server, paths)
    assert set(statuses.values()) == {0}, statuses
    return {s: study_uid(s) for s in STUDIES}
