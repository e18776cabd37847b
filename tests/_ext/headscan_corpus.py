"""pydicom's test files as (name, data set bytes, explicit_vr, little_endian) for scanner tests.

Located with hpacs.dicom.part10 (itself tested against pydicom in tests/dicom); deflated data
sets are inflated. The oracle for values and element boundaries is pydicom's own
``data_element_generator`` run over the same bytes.
"""

from __future__ import annotations

import io
import os
import zlib
from dataclasses import dataclass
from functools import cache

import pydicom.data
from pydicom.filereader import data_element_generator

from hpacs.dicom.part10 import Part10Error, guess_encoding, read_file_meta
from hpacs.dicom.transfer_syntax import encoding_of

ROOT = os.path.join(os.path.dirname(pydicom.data.__file__), "test_files")

#: Files pydicom reads (leniently) that the scanner must reject, with the reason.
KNOWN_BAD = {
    "MR_truncated.dcm": "stream ends inside the value of (7FE0,0010)",  # cut short
    "rtplan_truncated.dcm": "stream ends inside the value of (300A,00B0)",  # cut short
    # transfer syntax says explicit VR, the data set is implicit (pydicom switches silently)
    "SC_rgb_jpeg.dcm": "invalid VR bytes 0x1800 in (0008,0008)",
    # the last directory record item (defined length) runs past its defined-length sequence
    "dicomdirtests/DICOMDIR-nooffset": "item at offset 10530 overruns its enclosing item",
}

WANTED = frozenset(
    {
        0x00080005,  # SpecificCharacterSet
        0x00080008,  # ImageType
        0x00080016,  # SOPClassUID
        0x00080018,  # SOPInstanceUID
        0x00080020,  # StudyDate
        0x00080030,  # StudyTime
        0x00080050,  # AccessionNumber
        0x00080060,  # Modality
        0x00080090,  # ReferringPhysicianName
        0x00081030,  # StudyDescription
        0x0008103E,  # SeriesDescription
        0x00100010,  # PatientName
        0x00100020,  # PatientID
        0x00100021,  # IssuerOfPatientID
        0x00100030,  # PatientBirthDate
        0x00100040,  # PatientSex
        0x0020000D,  # StudyInstanceUID
        0x0020000E,  # SeriesInstanceUID
        0x00200010,  # StudyID
        0x00200011,  # SeriesNumber
        0x00200013,  # InstanceNumber
        0x00280002,  # SamplesPerPixel
        0x00280004,  # PhotometricInterpretation
        0x00280008,  # NumberOfFrames
        0x00280010,  # Rows
        0x00280011,  # Columns
        0x00280100,  # BitsAllocated
    }
)


@dataclass(frozen=True)
class Sample:
    name: str
    data: bytes
    explicit_vr: bool
    little_endian: bool


def _all_files() -> list[str]:
    out = []
    for dirpath, _, files in os.walk(ROOT):
        out.extend(os.path.relpath(os.path.join(dirpath, f), ROOT) for f in files)
    return sorted(out)


@cache
def samples() -> tuple[Sample, ...]:
    out = []
    for name in _all_files():
        path = os.path.join(ROOT, name)
        try:
            meta = read_file_meta(path)
        except Part10Error:
            continue
        with open(path, "rb") as f:
            data = f.read()[meta.dataset_offset :]
        if meta.transfer_syntax_uid:
            enc = encoding_of(meta.transfer_syntax_uid)
            explicit, little = enc.explicit_vr, enc.little_endian
            if enc.deflated:
                data = zlib.decompressobj(-15).decompress(data)
        else:
            guess = guess_encoding(data, strict=meta.dataset_offset == 0)
            assert guess is not None
            explicit, little = guess
        out.append(Sample(name, data, explicit, little))
    return tuple(out)


def sample(name: str) -> Sample:
    return next(s for s in samples() if s.name == name)


def pydicom_walk(s: Sample, max_len: int) -> tuple[dict[int, bytes], list[int]]:
    """pydicom's view: raw values of WANTED top-level elements, and every top-level boundary."""
    fp = io.BytesIO(s.data)
    values: dict[int, bytes] = {}
    bounds = [0]
    for el in data_element_generator(fp, not s.explicit_vr, s.little_endian):
        bounds.append(fp.tell())
        if el.tag in WANTED and el.length <= max_len and isinstance(el.value, bytes):
            values[int(el.tag)] = el.value
        elif el.tag in WANTED and el.length == 0:
            values[int(el.tag)] = b""
    return values, bounds
