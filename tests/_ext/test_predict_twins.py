"""Prediction filter: compiled == twin in both directions, round trips byte-exact, rejects
inconsistent input (never returns wrong-sized or silently wrong pixels)."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_file

from hpacs._ext import _predict, predict

TWINS = [pytest.param(predict, id="pure"), pytest.param(_predict, id="compiled")]


def test_same_model():
    assert _predict.CONTEXTS == predict.CONTEXTS


def _image(rng, height, width, samples, bits, kind):
    n = height * width * samples
    top = 1 << bits
    if kind == "noise":
        x = rng.integers(0, top, n)
    elif kind == "smooth":  # a gradient plus small noise, like real images
        yy, xx = np.mgrid[0:height, 0:width * samples]
        x = (yy * 7 + xx * 3 + rng.integers(-3, 4, (height, width * samples))).ravel()
    elif kind == "extremes":  # wrap-around residuals
        x = rng.choice([0, 1, top // 2 - 1, top // 2, top - 2, top - 1], n)
    else:
        x = np.full(n, rng.integers(0, top))
    return (x % top).astype(np.uint8 if bits == 8 else "<u2").tobytes()


@settings(max_examples=300, deadline=None)  # no timing in unit tests: the machine is shared
@given(
    seed=st.integers(0, 2**32 - 1),
    height=st.integers(0, 9),
    width=st.integers(0, 11),
    samples=st.sampled_from([1, 1, 3, 2]),
    bits=st.sampled_from([8, 16]),
    signed=st.booleans(),
    kind=st.sampled_from(["noise", "smooth", "extremes", "flat"]),
)
def test_twins_agree_both_ways(seed, height, width, samples, bits, signed, kind):
    rng = np.random.default_rng(seed)
    data = _image(rng, height, width, samples, bits, kind)
    shape = (width, height, samples, bits, signed)
    planes, counts = predict.encode(data, *shape)
    assert _predict.encode(data, *shape) == (planes, counts)
    assert len(planes) == len(data)
    assert sum(counts) == height * width * samples
    assert predict.decode(planes, counts, *shape) == data
    assert _predict.decode(planes, counts, *shape) == data


@pytest.mark.parametrize("mod", TWINS)
def test_real_ct_round_trip_and_gain(mod):
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    raw = ds.PixelData
    shape = (ds.Columns, ds.Rows, 1, 16, ds.PixelRepresentation == 1)
    planes, counts = mod.encode(raw, *shape)
    assert mod.decode(planes, counts, *shape) == raw
    # prediction leaves small residuals: high bytes mostly zero, low bytes concentrated
    high = np.frombuffer(planes[len(raw) // 2 :], np.uint8)
    assert np.count_nonzero(high) < high.size // 10


@pytest.mark.parametrize("mod", TWINS)
def test_rejects_inconsistent_input(mod):
    data = bytes(range(24))
    planes, counts = mod.encode(data, 4, 3, 1, 16, False)
    with pytest.raises(ValueError):
        mod.encode(data, 5, 3, 1, 16, False)  # wrong size
    with pytest.raises(ValueError):
        mod.encode(data, 4, 3, 1, 12, False)  # bits
    with pytest.raises(ValueError):
        mod.decode(planes[:-1], counts, 4, 3, 1, 16, False)
    with pytest.raises(ValueError):
        mod.decode(planes, [*counts[:-1], counts[-1] + 1], 4, 3, 1, 16, False)
    with pytest.raises(ValueError):
        mod.decode(planes, counts[:-1], 4, 3, 1, 16, False)
    # counts that sum right but are shuffled between contexts: a stream runs dry
    moved = counts[:]
    k = next(i for i, c in enumerate(moved) if c)
    moved[k] -= 1
    moved[(k + 1) % len(moved)] += 1
    with pytest.raises(ValueError):
        mod.decode(planes, moved, 4, 3, 1, 16, False)
