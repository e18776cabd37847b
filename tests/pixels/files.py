"""pydicom's own test images, split into what pydicom decodes and what it cannot."""

from __future__ import annotations

import warnings
from pathlib import Path

import pydicom
import pydicom.data

TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"

#: Files that pydicom 3 itself cannot decode (no file meta, truncated, broken streams, no
#: Bits Allocated, no pixel data at all ...): our decode must raise PixelDataError on them.
UNDECODABLE = {
    "ExplVR_BigEndNoMeta.dcm",
    "ExplVR_LitEndNoMeta.dcm",
    "JPEG-lossy.dcm",
    "JPEG2000-embedded-sequence-delimiter.dcm",
    "MR_truncated.dcm",
    "badVR.dcm",
    "meta_missing_tsyntax.dcm",
    "nested_priv_SQ.dcm",
    "no_meta.dcm",
    "rtstruct.dcm",
}


def image_files() -> list[Path]:
    """Every test file with pixel data, or in UNDECODABLE."""
    out = []
    for f in sorted(TEST_FILES.glob("*.dcm")):
        if f.name in UNDECODABLE:
            out.append(f)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ds = pydicom.dcmread(f, stop_before_pixels=False)
            except Exception:
                out.append(f)
                continue
        if "PixelData" in ds:
            out.append(f)
    return out


IMAGES = image_files()
