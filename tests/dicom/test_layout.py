"""Native frame layout against pydicom's reading of the same files."""

from __future__ import annotations

import warnings

import pydicom
import pytest

from hpacs.dicom.layout import native_layout
from hpacs.dicom.transfer_syntax import EXPLICIT_VR_LE, IMPLICIT_VR_LE
from tests.conftest import storage_test_files

TRUNCATED = {"MR_truncated.dcm"}  # Pixel Data runs past the end of the file


def _cases():
    out = []
    for path in storage_test_files():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path)
        if "PixelData" in ds:
            out.append(pytest.param(path, id=path.name))
    return out


@pytest.mark.parametrize("path", _cases())
def test_layout_slices_the_frames_pydicom_reads(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path)
    data = path.read_bytes()
    layout = native_layout(data)
    ts = ds.file_meta.TransferSyntaxUID
    frames_text = str(ds.get("NumberOfFrames", 1) or 1)
    native_le = (ts in (EXPLICIT_VR_LE, IMPLICIT_VR_LE) and ds.BitsAllocated % 8 == 0
                 and "422" not in ds.PhotometricInterpretation  # chroma subsampled
                 and frames_text.isdigit()  # badVR.dcm: "1A"
                 and path.name not in TRUNCATED)
    if not native_le:
        assert layout is None
        return
    assert layout is not None
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    assert layout.frames == frames
    size = ds.Rows * ds.Columns * ds.get("SamplesPerPixel", 1) * ds.BitsAllocated // 8
    assert layout.frame_size == size
    for k in range(1, frames + 1):
        start, end = layout.frame_span(k)
        assert data[start:end] == ds.PixelData[(k - 1) * size : k * size]
    assert layout.frame_span(0) is None and layout.frame_span(frames + 1) is None


def test_no_pixel_data_and_garbage_give_none():
    ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    del ds.PixelData
    import io

    buf = io.BytesIO()
    ds.save_as(buf)
    assert native_layout(buf.getvalue()) is None
