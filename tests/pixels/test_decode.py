"""decode() equals ds.pixel_array on every image pydicom can decode; bad data -> PixelDataError."""

from __future__ import annotations

import warnings

import numpy as np
import pydicom
import pytest
from pydicom.uid import RLELossless

from hpacs.pixels import PixelDataError, decode, iter_frames, num_frames
from tests.pixels.files import IMAGES, TEST_FILES, UNDECODABLE


def _reference(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path).pixel_array


@pytest.mark.parametrize("path", IMAGES, ids=[p.name for p in IMAGES])
def test_decode_equals_pixel_array(path):
    data = path.read_bytes()
    if path.name in UNDECODABLE:
        with pytest.raises(Exception):  # noqa: B017 - pydicom itself fails (any way it likes)
            _reference(path)
        with pytest.raises(PixelDataError), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            decode(data)
        return
    ref = _reference(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = decode(data)
        assert ours.dtype == ref.dtype and ours.shape == ref.shape
        assert np.array_equal(ours, ref)
        n = num_frames(data)
        if n > 1:
            for i in (0, n - 1):
                assert np.array_equal(decode(data, frame=i), ref[i])
            assert all(np.array_equal(a, b) for a, b in zip(iter_frames(data), ref, strict=True))
        else:
            assert np.array_equal(decode(data, frame=0), ref)
        ds = pydicom.dcmread(path)
        assert np.array_equal(decode(ds), ref)


def test_every_decodable_file_is_covered():
    decodable = [p for p in IMAGES if p.name not in UNDECODABLE]
    assert len(decodable) >= 55
    assert {p.name for p in IMAGES} >= UNDECODABLE


def test_rle_goes_through_our_decoder(monkeypatch):
    import hpacs.pixels.rle as rle_mod

    calls = []
    real = rle_mod.rle_decode_frame
    monkeypatch.setattr(rle_mod, "rle_decode_frame", lambda *a: calls.append(1) or real(*a))
    decode((TEST_FILES / "SC_rgb_rle_2frame.dcm").read_bytes(), frame=1)
    assert calls == [1]  # one frame decoded, not both


def _rle_ds():
    ds = pydicom.dcmread(TEST_FILES / "MR_small_RLE.dcm")
    assert ds.file_meta.TransferSyntaxUID == RLELossless
    return ds


def test_truncated_rle_fragment():
    ds = _rle_ds()
    (frame,) = pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1)
    ds.PixelData = pydicom.encaps.encapsulate([frame[: len(frame) // 2]])
    with pytest.raises(PixelDataError, match="RLE segment"):
        decode(ds)


def test_rle_segment_count_wrong():
    ds = _rle_ds()
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    with pytest.raises(PixelDataError):
        decode(ds)


def test_native_wrong_length_and_missing_tags():
    ds = pydicom.dcmread(TEST_FILES / "CT_small.dcm")
    short = ds.copy()
    short.PixelData = ds.PixelData[:-100]
    with pytest.raises(PixelDataError):
        decode(short)
    missing = ds.copy()
    del missing.Rows
    with pytest.raises(PixelDataError):
        decode(missing)
    with pytest.raises(PixelDataError):
        decode(ds, frame=3)
    with pytest.raises(PixelDataError):
        decode(b"not dicom at all")
