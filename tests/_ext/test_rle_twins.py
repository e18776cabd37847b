"""RLE: compiled == twin == pydicom's native encoder, byte for byte; round trips byte-exact."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.encaps import generate_frames
from pydicom.pixels.encoders.native import _encode_frame as pydicom_encode_frame

from hpacs._ext import _rle, rle
from hpacs.pixels import PixelDataError, decode, encode_array
from tests.pixels.files import TEST_FILES

TWINS = [pytest.param(rle, id="pure"), pytest.param(_rle, id="compiled")]
RLE_FILES = [*sorted(p.name for p in TEST_FILES.glob("*rle*.dcm")), "MR_small_RLE.dcm"]


class _Runner:
    def __init__(self, rows, columns, samples, bits):
        self.rows, self.columns = rows, columns
        self.samples_per_pixel, self.bits_allocated = samples, bits

    def get_option(self, _key, default):
        return default


def test_rle_is_compiled():
    assert _rle.__file__.endswith(".so")


@pytest.mark.parametrize("name", sorted(set(RLE_FILES)))
@pytest.mark.parametrize("mod", TWINS)
def test_rle_files_round_trip(mod, name):
    ds = pydicom.dcmread(TEST_FILES / name)
    n = int(ds.get("NumberOfFrames") or 1)
    args = (ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.BitsAllocated)
    ref = ds.pixel_array.reshape(n, ds.Rows, ds.Columns, ds.SamplesPerPixel)
    for i, frame in enumerate(generate_frames(ds.PixelData, number_of_frames=n)):
        raw = mod.decode_frame(frame, *args)
        want = ref[i].astype(ref.dtype.newbyteorder("<"))
        assert bytes(raw) == want.tobytes()
        enc = mod.encode_frame(raw, *args)
        assert enc == pydicom_encode_frame(bytes(raw), _Runner(*args))
        assert bytes(mod.decode_frame(enc, *args)) == bytes(raw)


@settings(max_examples=120, deadline=2000)
@given(
    seed=st.integers(0, 2**32 - 1),
    bits=st.sampled_from([8, 16, 32]),
    samples=st.sampled_from([1, 3]),
    frames=st.integers(1, 3),
    alphabet=st.sampled_from([1, 2, 3, 16, 256]),
)
def test_random_arrays(seed, bits, samples, frames, alphabet):
    rng = np.random.default_rng(seed)
    rows, cols = int(rng.integers(1, 30)), int(rng.integers(1, 300))
    dtype = {8: np.uint8, 16: np.uint16, 32: np.uint32}[bits]
    arr = rng.integers(0, alphabet, size=(frames, rows, cols, samples)).astype(dtype)
    if alphabet > 3:  # also long runs, crossing 128 and 129
        arr[:, :, : cols // 2] = rng.integers(0, 2**bits, dtype=np.uint64).astype(dtype)
    encoded = encode_array(arr, frames=True)
    for f, enc in zip(arr, encoded, strict=True):
        raw = f.astype(f.dtype.newbyteorder("<")).tobytes()
        args = (rows, cols, samples, bits)
        assert enc == pydicom_encode_frame(raw, _Runner(*args)) == rle.encode_frame(raw, *args)
        assert bytes(_rle.decode_frame(enc, *args)) == raw == bytes(rle.decode_frame(enc, *args))


@pytest.mark.parametrize("mod", TWINS)
def test_bad_frames(mod):
    good = mod.encode_frame(bytes(range(64)), 8, 8, 1, 8)
    with pytest.raises(PixelDataError, match="64-byte header"):
        mod.decode_frame(good[:10], 8, 8, 1, 8)
    with pytest.raises(PixelDataError, match="segments"):
        mod.decode_frame(good, 8, 4, 1, 16)
    with pytest.raises(PixelDataError, match="decodes to"):
        mod.decode_frame(good[:-20], 8, 8, 1, 8)
    with pytest.raises(PixelDataError, match="multiple of 8"):
        mod.decode_frame(good, 8, 8, 1, 12)
    with pytest.raises(PixelDataError, match="15 segments"):
        mod.encode_frame(bytes(64 * 16), 8, 8, 4, 32)


def test_dataset_round_trip_through_pydicom():
    ds = pydicom.dcmread(TEST_FILES / "CT_small.dcm")
    arr = ds.pixel_array
    (frame,) = encode_array(arr)
    ds.PixelData = pydicom.encaps.encapsulate([frame])
    ds.file_meta.TransferSyntaxUID = pydicom.uid.RLELossless
    ds["PixelData"].VR = "OB"
    assert np.array_equal(pydicom.dcmread(_to_bytes(ds)).pixel_array, arr)
    assert np.array_equal(decode(ds), arr)


def _to_bytes(ds):
    import io

    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    buf.seek(0)
    return buf
