"""Deterministic generator of realistic DICOM Part 10 files for benchmarks.

``python -m benchmarks.corpus --out DIR --studies N`` writes CT, MR, DX and multi-frame US
studies with plausible tags at every level and plausible pixels (phantoms plus noise, so that
compression numbers mean something). The same configuration always gives the same bytes: every
random choice comes from a numpy Generator seeded from (seed, study, series), and every UID is
derived from the seed with ``generate_uid(entropy_srcs=...)``.

Speed matters (benchmarks need thousands of files): a series builds its data set and its noise
field once, each slice only recomputes the phantom inside the structures' bounding boxes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import math
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)

#: pydicom's own UID root: fine for synthetic, never-clinical data.
UID_PREFIX = "1.2.826.0.1.3680043.8.498."

SYNTAXES = {
    "explicit": ExplicitVRLittleEndian,
    "implicit": ImplicitVRLittleEndian,
    "big": ExplicitVRBigEndian,
    "deflated": DeflatedExplicitVRLittleEndian,
}

SOP_CLASSES = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    "MR": "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image Storage - For Presentation
    "US": "1.2.840.10008.5.1.4.1.1.3.1",  # Ultrasound Multi-frame Image Storage
}

MODALITIES = tuple(SOP_CLASSES)

MANIFEST = "manifest.json"

_FAMILY = (
    "Müller",
    "Smith",
    "Dubois",
    "García",
    "Rossi",
    "Nowak",
    "Jansen",
    "Johansson",
    "Martin",
    "O'Brien",
    "Schmidt",
    "Lefèvre",
    "Fernández",
    "Kowalski",
    "Peeters",
    "Andersen",
    "Brown",
    "Moreau",
    "Weber",
    "Silva",
    "Novák",
    "Horvath",
    "Costa",
    "Wagner",
    "Lambert",
    "Meyer",
)
_GIVEN_M = ("Jean", "Peter", "Luca", "Jan", "Carlos", "Erik", "John", "Hans", "Pierre", "Tomás")
_GIVEN_F = ("Marie", "Anna", "Sofia", "Laura", "Eva", "Ingrid", "Chloé", "Julia", "Clara", "Lena")
_REFERRING = ("Dr^House^Gregory", "Curie^Marie", "Lister^Joseph", "Röntgen^Wilhelm", "Osler^W")
_INSTITUTIONS = ("Hôpital Saint-Luc", "General Hospital", "Klinikum Mitte", "University Clinic")

# Per modality: (study description, series descriptions, body part)
_PROTOCOLS = {
    "CT": (
        ("CT THORAX ABDOMEN", ("Thorax 1.0 B31f", "Abdomen 3.0 B30f"), "CHEST"),
        ("CT CHEST", ("Lung 1.0 B70f", "Mediastinum 3.0 B31f"), "CHEST"),
        ("CT ABDOMEN PELVIS", ("Portal venous 2.0", "Delayed 5.0"), "ABDOMEN"),
    ),
    "MR": (
        ("MR BRAIN", ("t1_se_tra", "t2_tse_tra", "flair_tra"), "HEAD"),
        ("MR HEAD W/O", ("t1_mprage_sag", "t2_tse_cor"), "HEAD"),
    ),
    "DX": (
        ("XR CHEST PA LAT", ("PA", "LAT"), "CHEST"),
        ("XR THORAX", ("PA",), "CHEST"),
    ),
    "US": (
        ("US ECHO TTE", ("Cine PLAX", "Cine A4C", "Cine SAX"), "HEART"),
        ("US ABDOMEN", ("Liver cine", "Kidney cine"), "ABDOMEN"),
    ),
}


@dataclass(frozen=True)
class CorpusConfig:
    """Everything that determines the corpus bytes (stored in the manifest to reuse a cache)."""

    seed: int = 1
    #: Number of studies; ``None`` means as many as needed to reach ``files``.
    studies: int | None = 10
    #: Stop after this many files in total (the last series is cut short).
    files: int | None = None
    #: Relative weights of the modalities of the studies.
    mix: dict[str, float] = field(
        default_factory=lambda: {"CT": 4.0, "MR": 3.0, "DX": 2.0, "US": 1.0}
    )
    ct_slices: int = 120
    ct_series_per_study: int = 2
    mr_slices: int = 24
    us_frames: int = 30
    us_rgb: bool = False
    syntax: str = "explicit"

    def __post_init__(self) -> None:
        if self.studies is None and self.files is None:
            raise ValueError("give studies, files, or both")
        if self.syntax not in SYNTAXES:
            raise ValueError(f"unknown syntax {self.syntax!r}; choose from {sorted(SYNTAXES)}")
        unknown = set(self.mix) - set(MODALITIES)
        if unknown or not any(w > 0 for w in self.mix.values()):
            raise ValueError(f"bad mix {self.mix!r}; modalities are {MODALITIES}")

    def to_json(self) -> dict:
        return asdict(self)


def ct_only(
    files: int, seed: int = 1, syntax: str = "explicit", ct_slices: int = 120
) -> CorpusConfig:
    """The preset of the ingest benchmark: ``files`` CT slices of 512x512 16-bit (~525 KB)."""
    return CorpusConfig(
        seed=seed,
        studies=None,
        files=files,
        mix={"CT": 1.0},
        ct_slices=ct_slices,
        ct_series_per_study=1,
        syntax=syntax,
    )


def derive_uid(seed: int, *parts: object) -> str:
    """A valid UID that depends only on the seed and the path of the object in the corpus."""
    return str(generate_uid(UID_PREFIX, ["hpacs-bench", str(seed), *map(str, parts)]))


def _rng(seed: int, *parts: int) -> np.random.Generator:
    return np.random.default_rng([seed, *parts])


# ---------------------------------------------------------------------------------------------
# Pixel phantoms


class _Ellipses:
    """Paints filled ellipses into an image, touching only each ellipse's bounding box."""

    def __init__(self, rows: int, cols: int) -> None:
        self.rows, self.cols = rows, cols
        self.yy = np.arange(rows, dtype=np.float32)[:, None]
        self.xx = np.arange(cols, dtype=np.float32)[None, :]

    def add(
        self,
        img: np.ndarray,
        cy: float,
        cx: float,
        ry: float,
        rx: float,
        value: float,
        mode: str = "set",
    ) -> None:
        if ry < 1 or rx < 1:
            return
        y0, y1 = max(0, int(cy - ry)), min(self.rows, int(cy + ry) + 2)
        x0, x1 = max(0, int(cx - rx)), min(self.cols, int(cx + rx) + 2)
        if y0 >= y1 or x0 >= x1:
            return
        dy = (self.yy[y0:y1] - cy) / ry
        dx = (self.xx[:, x0:x1] - cx) / rx
        mask = dy * dy + dx * dx <= 1.0
        view = img[y0:y1, x0:x1]
        if mode == "set":
            view[mask] = value
        else:
            view[mask] += value


def _ct_slice(painter: _Ellipses, t: float, var: np.ndarray) -> np.ndarray:
    """Hounsfield units of an axial thorax/abdomen slice at relative height t in [0, 1]."""
    n = painter.rows
    c = n / 2
    img = np.full((n, n), -1000.0, dtype=np.float32)
    # table under the patient
    img[int(0.80 * n) : int(0.82 * n), int(0.1 * n) : int(0.9 * n)] = 150.0
    bw, bh = 0.42 * n * var[0], 0.30 * n * var[1]
    painter.add(img, c, c, bh, bw, -100.0)  # subcutaneous fat
    painter.add(img, c, c, bh - 0.025 * n, bw - 0.025 * n, 45.0)  # soft tissue
    lung = max(0.0, math.sin(math.pi * min(1.0, t * 1.6)))  # lungs in the upper part only
    for side in (-1, 1):
        painter.add(img, c - 0.02 * n, c + side * 0.18 * n, 0.2 * n * lung, 0.13 * n * lung, -850.0)
        # vessels in the lungs
        for k in range(3):
            painter.add(
                img,
                c - 0.06 * n + 0.04 * k * n,
                c + side * (0.14 + 0.02 * k) * n,
                0.008 * n * lung,
                0.008 * n * lung,
                40.0,
            )
    liver = max(0.0, math.sin(math.pi * max(0.0, t * 1.6 - 0.6)))
    painter.add(img, c, c - 0.12 * n, 0.16 * n * liver, 0.18 * n * liver, 60.0)
    painter.add(img, c - 0.02 * n, c + 0.05 * n, 0.08 * n * lung, 0.09 * n * lung, 35.0)  # heart
    painter.add(img, c + 0.04 * n, c + 0.02 * n, 0.025 * n, 0.025 * n, 180.0)  # aorta, contrast
    painter.add(img, c + 0.19 * n, c, 0.045 * n, 0.05 * n, 700.0)  # vertebral body
    painter.add(img, c + 0.19 * n, c, 0.025 * n, 0.03 * n, 250.0)  # cancellous bone
    painter.add(img, c + 0.255 * n, c, 0.02 * n, 0.012 * n, 900.0)  # spinous process
    for side in (-1, 1):  # ribs
        for k, (dy, dx) in enumerate(((-0.18, 0.30), (0.0, 0.38), (0.15, 0.32))):
            painter.add(
                img,
                c + dy * n * var[1],
                c + side * dx * n * var[0] * (1 - 0.02 * k),
                0.012 * n,
                0.012 * n,
                800.0,
            )
    return img


def _mr_slice(painter: _Ellipses, t: float, var: np.ndarray) -> np.ndarray:
    """A T1-like head slice (Shepp-Logan flavour) at relative height t."""
    n = painter.rows
    c = n / 2
    img = np.zeros((n, n), dtype=np.float32)
    s = math.sqrt(max(0.05, 1.0 - (2 * t - 1) ** 2))  # the head is a sphere-ish
    painter.add(img, c, c, 0.46 * n * s * var[1], 0.36 * n * s * var[0], 300.0)  # scalp/skull
    painter.add(img, c, c, 0.42 * n * s * var[1], 0.32 * n * s * var[0], 900.0)  # white matter
    painter.add(img, c, c, 0.40 * n * s, 0.30 * n * s, -180.0, mode="add")  # grey matter rim
    painter.add(img, c, c, 0.36 * n * s, 0.26 * n * s, 180.0, mode="add")
    for side in (-1, 1):  # ventricles
        painter.add(img, c - 0.02 * n, c + side * 0.05 * n, 0.1 * n * s, 0.03 * n * s, 250.0)
    painter.add(img, c + 0.2 * n * s, c, 0.05 * n * s, 0.04 * n * s, 1200.0)  # a bright lesion
    return img


# ---------------------------------------------------------------------------------------------
# Data sets


@dataclass
class _Patient:
    name: str
    pid: str
    birth: dt.date
    sex: str
    weight: float
    height: float


@dataclass
class _Study:
    index: int
    modality: str
    uid: str
    patient: _Patient
    date: dt.date
    time: dt.time
    accession: str
    description: str
    series: tuple[str, ...]
    body_part: str
    referring: str
    institution: str


@dataclass
class Written:
    """One written file."""

    path: str  # relative to the corpus directory
    size: int
    modality: str


def _da(d: dt.date) -> str:
    return d.strftime("%Y%m%d")


def _tm(t: dt.time) -> str:
    return t.strftime("%H%M%S") + f".{t.microsecond:06d}"


def _plan_study(cfg: CorpusConfig, index: int) -> _Study:
    rng = _rng(cfg.seed, index)
    mods = [m for m in MODALITIES if cfg.mix.get(m, 0) > 0]
    w = np.array([cfg.mix[m] for m in mods], dtype=float)
    modality = mods[int(rng.choice(len(mods), p=w / w.sum()))]
    sex = "F" if rng.random() < 0.5 else "M"
    given = (_GIVEN_F if sex == "F" else _GIVEN_M)[int(rng.integers(10))]
    family = _FAMILY[int(rng.integers(len(_FAMILY)))]
    date = dt.date(2019, 1, 1) + dt.timedelta(days=int(rng.integers(0, 5 * 365)))
    age = int(rng.integers(1, 95))
    birth = date - dt.timedelta(days=age * 365 + int(rng.integers(0, 365)))
    patient = _Patient(
        name=f"{family}^{given}",
        pid=f"HPB{cfg.seed:03d}{index:06d}",
        birth=birth,
        sex=sex,
        weight=round(float(rng.normal(75 if sex == "M" else 63, 12)), 1),
        height=round(float(rng.normal(1.76 if sex == "M" else 1.64, 0.07)), 2),
    )
    desc, series, body = _PROTOCOLS[modality][int(rng.integers(len(_PROTOCOLS[modality])))]
    if modality == "CT":
        series = series[: max(1, cfg.ct_series_per_study)]
    sec = int(rng.integers(7 * 3600, 19 * 3600))
    return _Study(
        index=index,
        modality=modality,
        uid=derive_uid(cfg.seed, "study", index),
        patient=patient,
        date=date,
        time=dt.time(sec // 3600, sec // 60 % 60, sec % 60, int(rng.integers(1e6))),
        accession=f"A{cfg.seed:02d}{index:08d}",
        description=desc,
        series=series,
        body_part=body,
        referring=_REFERRING[int(rng.integers(len(_REFERRING)))],
        institution=_INSTITUTIONS[int(rng.integers(len(_INSTITUTIONS)))],
    )


def _base_dataset(cfg: CorpusConfig, st: _Study, se_index: int, se_desc: str) -> Dataset:
    """Patient, study, series and equipment attributes shared by every instance of a series."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = SOP_CLASSES[st.modality]
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = _da(st.date)
    ds.StudyTime = _tm(st.time)
    series_time = dt.datetime.combine(st.date, st.time) + dt.timedelta(minutes=3 * se_index)
    ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = _tm(series_time.time())
    ds.AccessionNumber = st.accession
    ds.Modality = st.modality
    ds.Manufacturer = "HPACS Synthetic"
    ds.InstitutionName = st.institution
    ds.ReferringPhysicianName = st.referring
    ds.StationName = f"{st.modality}STATION{st.index % 3 + 1}"
    ds.StudyDescription = st.description
    ds.SeriesDescription = se_desc
    ds.ManufacturerModelName = {
        "CT": "Phantom CT 64",
        "MR": "Phantom MR 1.5T",
        "DX": "Phantom DR",
        "US": "Phantom Echo",
    }[st.modality]
    p = st.patient
    ds.PatientName = p.name
    ds.PatientID = p.pid
    ds.IssuerOfPatientID = "HPACS-BENCH"
    ds.PatientBirthDate = _da(p.birth)
    ds.PatientSex = p.sex
    ds.PatientAge = f"{max(0, (st.date - p.birth).days // 365):03d}Y"
    ds.PatientSize = f"{p.height:.2f}"
    ds.PatientWeight = f"{p.weight:.1f}"
    ds.BodyPartExamined = st.body_part
    ds.ProtocolName = f"{st.description} / {se_desc}"[:64]
    ds.StudyInstanceUID = st.uid
    ds.SeriesInstanceUID = derive_uid(cfg.seed, "series", st.index, se_index)
    ds.StudyID = str(1000 + st.index)
    ds.SeriesNumber = se_index + 1
    ds.AcquisitionNumber = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.PixelRepresentation = 0
    return ds


def _iter_series(
    cfg: CorpusConfig, st: _Study, se_index: int, se_desc: str, limit: int
) -> Iterator[Dataset]:
    """Yield the data sets of one series (at most ``limit``), pixels included."""
    rng = _rng(cfg.seed, st.index, se_index)
    ds = _base_dataset(cfg, st, se_index, se_desc)
    mod = st.modality
    if mod in ("CT", "MR"):
        yield from _iter_volume(cfg, st, se_index, ds, rng, limit)
    elif mod == "DX":
        if limit > 0:
            yield _dx(cfg, st, se_index, ds, rng)
    elif limit > 0:
        yield _us(cfg, st, se_index, ds, rng)


def _iter_volume(
    cfg: CorpusConfig, st: _Study, se_index: int, ds: Dataset, rng: np.random.Generator, limit: int
) -> Iterator[Dataset]:
    ct = st.modality == "CT"
    n = 512 if ct else 256
    count = min(limit, cfg.ct_slices if ct else cfg.mr_slices)
    thickness = 1.0 if ct and se_index == 0 else (3.0 if ct else 5.0)
    spacing = round(float(rng.uniform(0.65, 0.85) if ct else rng.uniform(0.85, 1.0)), 4)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.FrameOfReferenceUID = derive_uid(cfg.seed, "for", st.index)
    ds.PositionReferenceIndicator = ""
    ds.PatientPosition = "HFS"
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceThickness = f"{thickness:g}"
    ds.SpacingBetweenSlices = f"{thickness:g}"
    ds.PixelSpacing = [f"{spacing:g}", f"{spacing:g}"]
    ds.Rows = ds.Columns = n
    ds.BitsStored, ds.HighBit = 12, 11
    if ct:
        ds.KVP = "120"
        ds.XRayTubeCurrent = int(rng.integers(150, 400))
        ds.ConvolutionKernel = "B70f" if "Lung" in ds.SeriesDescription else "B31f"
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "-1024", "1", "HU"
        lung = "Lung" in ds.SeriesDescription
        ds.WindowCenter, ds.WindowWidth = ("-600", "1500") if lung else ("40", "400")
        ds.WindowCenterWidthExplanation = "LUNG" if lung else "SOFT TISSUE"
        sigma = 12.0
    else:
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "SE", "SK", ""
        ds.MRAcquisitionType = "2D"
        ds.RepetitionTime, ds.EchoTime = "500", "12"
        ds.MagneticFieldStrength = "1.5"
        ds.ImagingFrequency = "63.87"
        ds.WindowCenter, ds.WindowWidth = "600", "1200"
        sigma = 25.0
    painter = _Ellipses(n, n)
    var = rng.uniform(0.9, 1.1, size=2)
    # One noise field per series; each slice takes a different window of it.
    noise = rng.normal(0.0, sigma, size=(2 * n, 2 * n)).astype(np.float32)
    offsets = rng.integers(0, n, size=(count, 2))
    z0 = float(rng.uniform(-400.0, -100.0))
    fov = n * spacing
    for i in range(count):
        t = (i + 0.5) / count
        z = z0 + i * thickness
        hu = (_ct_slice if ct else _mr_slice)(painter, t, var)
        oy, ox = offsets[i]
        hu += noise[oy : oy + n, ox : ox + n]
        # CT stores HU + 1024; MR magnitude images are positive
        stored = np.clip(hu + 1024.0 if ct else np.abs(hu), 0, 4095)
        pixels = stored.astype("<u2")
        ds.SOPInstanceUID = derive_uid(cfg.seed, "instance", st.index, se_index, i)
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [f"{-fov / 2:g}", f"{-fov / 2:g}", f"{z:g}"]
        ds.SliceLocation = f"{z:g}"
        ds.PixelData = pixels.tobytes()
        ds["PixelData"].VR = "OW"
        yield ds


def _dx(
    cfg: CorpusConfig, st: _Study, se_index: int, ds: Dataset, rng: np.random.Generator
) -> Dataset:
    rows, cols = 2500, 2048
    ds.SOPInstanceUID = derive_uid(cfg.seed, "instance", st.index, se_index, 0)
    ds.InstanceNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ViewPosition = ds.SeriesDescription if ds.SeriesDescription in ("PA", "LAT") else "PA"
    ds.PatientOrientation = ["A", "F"] if ds.ViewPosition == "LAT" else ["L", "F"]
    ds.ImagerPixelSpacing = ["0.148", "0.148"]
    ds.PixelSpacing = ["0.148", "0.148"]
    ds.KVP = "125"
    ds.Exposure = int(rng.integers(2, 8))
    ds.BurnedInAnnotation = "NO"
    ds.Rows, ds.Columns = rows, cols
    ds.BitsStored, ds.HighBit = 14, 13
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "US"
    ds.WindowCenter, ds.WindowWidth = "8192", "12000"
    # Anatomy at 1/4 resolution (cheap), upsampled, then full-resolution noise.
    q = 4
    small = np.full((rows // q, cols // q), 2500.0, dtype=np.float32)  # background (air, dark)
    painter = _Ellipses(rows // q, cols // q)
    cy, cx = rows / q / 2, cols / q / 2
    var = rng.uniform(0.93, 1.07, size=2)
    painter.add(small, cy + 40, cx, 300 * var[1], 230 * var[0], 9000.0)  # body
    for side in (-1, 1):
        painter.add(small, cy - 20, cx + side * 100 * var[0], 190, 85, 5500.0)  # lungs
        for k in range(8):  # ribs
            painter.add(
                small, cy - 190 + 45 * k, cx + side * 100 * var[0], 6, 95, 2500.0, mode="add"
            )
    painter.add(small, cy + 40, cx + 30, 90, 80, 3000.0, mode="add")  # heart
    small[:, int(cx) - 14 : int(cx) + 14] += 3500.0  # spine
    small = _box_blur(_box_blur(small, 9, 0), 9, 1)  # soft edges, as a projection has
    img = np.repeat(np.repeat(small, q, axis=0), q, axis=1)
    img += rng.normal(0.0, 60.0, size=(rows, cols)).astype(np.float32)
    ds.PixelData = np.clip(img, 0, 16383).astype("<u2").tobytes()
    ds["PixelData"].VR = "OW"
    return ds


def _box_blur(a: np.ndarray, k: int, axis: int) -> np.ndarray:
    """Moving average of width k along one axis (edges replicated), via cumulative sums."""
    pad = [(0, 0), (0, 0)]
    pad[axis] = (k // 2 + 1, k // 2)
    c = np.cumsum(np.pad(a, pad, mode="edge"), axis=axis, dtype=np.float64)
    hi = np.take(c, np.arange(k, c.shape[axis]), axis=axis)
    lo = np.take(c, np.arange(0, c.shape[axis] - k), axis=axis)
    return ((hi - lo) / k).astype(np.float32)


def _us(
    cfg: CorpusConfig, st: _Study, se_index: int, ds: Dataset, rng: np.random.Generator
) -> Dataset:
    rows, cols, frames = 480, 640, cfg.us_frames
    ds.SOPInstanceUID = derive_uid(cfg.seed, "instance", st.index, se_index, 0)
    ds.InstanceNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "INVALID", "0001"]
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.NumberOfFrames = frames
    ds.FrameTime = "33.33"
    ds.CineRate = 30
    ds.RecommendedDisplayFrameRate = 30
    ds.FrameIncrementPointer = 0x00181063  # Frame Time
    ds.LossyImageCompression = "00"
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    r = np.hypot(yy + 20.0, xx - cols / 2)  # apex just above the image
    angle = np.arctan2(xx - cols / 2, yy + 20.0)
    sector = (np.abs(angle) < 0.75) & (r < rows * 0.98)
    depth_gain = np.clip(1.2 - r / rows, 0.2, 1.0)
    speckle = rng.rayleigh(40.0, size=(rows + 64, cols)).astype(np.float32)
    video = np.zeros((frames, rows, cols), dtype=np.uint8)
    painter = _Ellipses(rows, cols)
    for f in range(frames):
        phase = math.sin(2 * math.pi * f / max(frames, 1))
        tissue = np.full((rows, cols), 1.0, dtype=np.float32)
        painter.add(tissue, rows * 0.5, cols * 0.5, 90 + 20 * phase, 70 + 15 * phase, 0.15)
        painter.add(tissue, rows * 0.3, cols * 0.45, 12, 180, 2.5)  # bright wall
        shift = (f * 2) % 64
        frame = speckle[shift : shift + rows] * tissue * depth_gain
        frame[~sector] = 0.0
        video[f] = np.clip(frame, 0, 255).astype(np.uint8)
    if cfg.us_rgb:
        ds.SamplesPerPixel = 3
        ds.PhotometricInterpretation = "RGB"
        ds.PlanarConfiguration = 0
        rgb = np.repeat(video[..., None], 3, axis=3)
        rgb[:, 20:40, 20:200, 1] = 255  # a green annotation bar, as on many scanners
        ds.PixelData = rgb.tobytes()
    else:
        ds.PixelData = video.tobytes()
    ds["PixelData"].VR = "OB"
    return ds


def _encode(ds: Dataset, syntax: str) -> bytes:
    ts = SYNTAXES[syntax]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ts
    ds.file_meta = meta
    swapped = None
    if syntax == "big" and ds.BitsAllocated == 16:
        # pydicom writes PixelData bytes as they are: OW must be swapped by us.
        swapped = ds.PixelData
        ds.PixelData = np.frombuffer(swapped, "<u2").astype(">u2").tobytes()
    buf = io.BytesIO()
    try:
        dcmwrite(buf, ds, enforce_file_format=True)
    finally:
        if swapped is not None:
            ds.PixelData = swapped
    return buf.getvalue()


def iter_files(cfg: CorpusConfig) -> Iterator[tuple[str, str, bytes]]:
    """Yield (relative path, modality, Part 10 bytes) for the whole corpus, in order."""
    remaining = cfg.files if cfg.files is not None else math.inf
    index = 0
    while remaining > 0 and (cfg.studies is None or index < cfg.studies):
        st = _plan_study(cfg, index)
        for se_index, se_desc in enumerate(st.series):
            if remaining <= 0:
                break
            limit = int(min(remaining, 1_000_000))
            for i, ds in enumerate(_iter_series(cfg, st, se_index, se_desc, limit)):
                rel = f"S{index:05d}_{st.modality}/SE{se_index + 1:02d}/IM{i + 1:05d}.dcm"
                yield rel, st.modality, _encode(ds, cfg.syntax)
                remaining -= 1
        index += 1


def generate(cfg: CorpusConfig, out: Path, *, progress: bool = False) -> dict:
    """Write the corpus under ``out`` (which must be empty or absent) and its manifest."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty")
    t0 = time.perf_counter()
    files: list[Written] = []
    made: set[Path] = set()
    for rel, modality, data in iter_files(cfg):
        path = out / rel
        if path.parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            made.add(path.parent)
        path.write_bytes(data)
        files.append(Written(rel, len(data), modality))
        if progress and len(files) % 100 == 0:
            print(f"  {len(files)} files", file=sys.stderr)
    by_mod: dict[str, int] = {}
    for w in files:
        by_mod[w.modality] = by_mod.get(w.modality, 0) + 1
    manifest = {
        "config": cfg.to_json(),
        "count": len(files),
        "total_bytes": sum(w.size for w in files),
        "by_modality": by_mod,
        "generation_seconds": round(time.perf_counter() - t0, 3),
        "files": [[w.path, w.size] for w in files],
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=0))
    return manifest


def load_manifest(out: Path) -> dict | None:
    try:
        return json.loads((Path(out) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def ensure(cfg: CorpusConfig, out: Path, *, progress: bool = False) -> dict:
    """Reuse the corpus in ``out`` if it was made from ``cfg`` and is whole; else regenerate."""
    out = Path(out)
    m = load_manifest(out)
    if m is not None and m.get("config") == cfg.to_json():
        try:
            if all((out / p).stat().st_size == s for p, s in m["files"]):
                return m
        except OSError:
            pass
    if out.exists():
        shutil.rmtree(out)
    return generate(cfg, out, progress=progress)


def corpus_paths(out: Path, manifest: dict) -> list[Path]:
    return [Path(out) / p for p, _ in manifest["files"]]


def _parse_mix(text: str) -> dict[str, float]:
    mix = {}
    for part in text.split(","):
        name, _, weight = part.partition("=")
        mix[name.strip().upper()] = float(weight or 1)
    return mix


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.corpus", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--out", type=Path, required=True, help="output directory (empty or absent)")
    ap.add_argument("--studies", type=int, default=None, help="number of studies (default 10)")
    ap.add_argument("--files", type=int, default=None, help="stop after this many files")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--mix", type=_parse_mix, default=None, help="modality weights, e.g. ct=4,mr=3,dx=2,us=1"
    )
    ap.add_argument(
        "--ct-only",
        action="store_true",
        help="preset of the ingest benchmark: single-series CT studies only",
    )
    ap.add_argument("--ct-slices", type=int, default=120)
    ap.add_argument("--mr-slices", type=int, default=24)
    ap.add_argument("--us-frames", type=int, default=30)
    ap.add_argument("--us-rgb", action="store_true", help="RGB ultrasound instead of MONOCHROME2")
    ap.add_argument("--syntax", choices=sorted(SYNTAXES), default="explicit")
    ap.add_argument("--force", action="store_true", help="regenerate even if --out is up to date")
    args = ap.parse_args(argv)
    if args.ct_only:
        cfg = CorpusConfig(
            seed=args.seed,
            studies=args.studies,
            files=args.files if args.files or args.studies else 500,
            mix={"CT": 1.0},
            ct_slices=args.ct_slices,
            ct_series_per_study=1,
            syntax=args.syntax,
        )
    else:
        studies = args.studies if args.studies is not None or args.files else 10
        kw = {"mix": args.mix} if args.mix else {}
        cfg = CorpusConfig(
            seed=args.seed,
            studies=studies,
            files=args.files,
            ct_slices=args.ct_slices,
            mr_slices=args.mr_slices,
            us_frames=args.us_frames,
            us_rgb=args.us_rgb,
            syntax=args.syntax,
            **kw,
        )
    if args.force and args.out.exists():
        shutil.rmtree(args.out)
    t0 = time.perf_counter()
    m = ensure(cfg, args.out, progress=True)
    dt_s = time.perf_counter() - t0
    print(
        f"{args.out}: {m['count']} files, {m['total_bytes'] / 1e6:.1f} MB "
        f"{m['by_modality']} ({dt_s:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
