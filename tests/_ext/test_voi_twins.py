"""The compiled VOI kernel equals its pure-Python twin, byte for byte, on random inputs."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from hpacs._ext import _voi, voi
from hpacs.pixels import COMPILED

DTYPES = [np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.float32, np.float64]


def test_compiled_kernels_built_and_selected():
    # a missing build is a failure, not a skip
    assert COMPILED == {"rle": True, "voi": True}
    assert _voi.__file__.endswith(".so")


@settings(max_examples=150, deadline=2000)
@given(
    seed=st.integers(0, 2**32 - 1),
    dtype=st.sampled_from(DTYPES),
    func=st.sampled_from([voi.LINEAR, voi.LINEAR_EXACT, voi.SIGMOID, voi.TABLE]),
    use_mlut=st.booleans(),
    invert=st.booleans(),
    center=st.floats(-5000, 5000, allow_nan=False),
    width=st.floats(1, 10000, allow_nan=False),
    slope=st.sampled_from([1.0, 0.5, 2.0, -1.0, 0.001]),
    intercept=st.floats(-2000, 2000, allow_nan=False),
    lo_hi=st.sampled_from([(0, 255), (-128, 127), (0, 4095), (-2048, 2047), (0, -1),
                           (-32768, 32767), (0, 65535)]),
)
def test_cython_equals_twin(seed, dtype, func, use_mlut, invert, center, width, slope,
                            intercept, lo_hi):
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    lo_v, hi_v = (max(info.min, -70000), min(info.max, 70000)) if info else (-70000, 70000)
    src = rng.integers(lo_v, hi_v, size=(int(rng.integers(1, 40)), int(rng.integers(1, 40))),
                       endpoint=True).astype(dtype)
    kw = dict(slope=slope, intercept=intercept, func=func, center=center, width=width,
              invert=invert, lo=lo_hi[0], hi=lo_hi[1])
    if func == voi.TABLE:
        kw.update(vlut=rng.integers(0, 65536, int(rng.integers(1, 5000))).astype(np.uint16),
                  vlut_first=int(rng.integers(-3000, 3000)), vlut_scale=255 / 65535)
    if use_mlut:
        kw.update(mlut=rng.integers(0, 65536, int(rng.integers(1, 5000))).astype(np.uint16),
                  mlut_first=int(rng.integers(-3000, 3000)))
    a = np.empty(src.shape, np.uint8)
    b = np.empty(src.shape, np.uint8)
    voi.window_u8(src, a, **kw)
    _voi.window_u8(src, b, **kw)
    assert np.array_equal(a, b)
    assert voi.minmax(src) == _voi.minmax(src)


def test_both_reject_the_same():
    src = np.zeros((2, 2), np.uint16)
    out = np.empty((2, 2), np.uint8)
    for mod in (voi, _voi):
        for kw in ({"func": voi.LINEAR, "width": 0.5}, {"func": voi.SIGMOID, "width": 0.0},
                   {"func": voi.TABLE}, {"func": 9}):
            try:
                mod.window_u8(src, out, **kw)
            except ValueError:
                continue
            raise AssertionError(f"{mod.__name__} accepted {kw}")


SMALL = [np.uint8, np.int8, np.uint16, np.int16]


def _every_value(dtype) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.arange(info.min, info.max + 1, dtype=np.int64).astype(dtype).reshape(1, -1)


@settings(max_examples=200, deadline=2000)
@given(
    dtype=st.sampled_from(SMALL),
    func=st.sampled_from([voi.LINEAR, voi.LINEAR_EXACT]),
    invert=st.booleans(),
    center=st.one_of(st.floats(-70000, 70000, allow_nan=False),
                     st.integers(-3000, 70000).map(float)),
    width=st.one_of(st.floats(1, 100000, allow_nan=False), st.integers(1, 5000).map(float)),
    slope=st.sampled_from([1.0, 0.5, 2.0, -1.0, 0.001, 3.7, 1e-5]),
    intercept=st.one_of(st.floats(-5000, 5000, allow_nan=False),
                        st.sampled_from([0.0, -1024.0, -1000.0, -32768.0])),
)
def test_float32_path_equals_the_double_formula(dtype, func, invert, center, width, slope,
                                                intercept):
    """Wherever linear_coeffs picks the float32 path, both kernels give, for every stored
    value of the type, the bytes of the double formula (the table path): the path is only an
    optimization."""
    src = _every_value(dtype)
    kw = dict(slope=slope, intercept=intercept, func=func, center=center, width=width,
              invert=invert)
    want = voi._values(src, slope, intercept, None, 0, func, center, width, None, 0, 1.0, invert)
    a = np.empty(src.shape, np.uint8)
    b = np.empty(src.shape, np.uint8)
    voi.window_u8(src, a, **kw)
    _voi.window_u8(src, b, **kw)
    assert np.array_equal(a, b)
    assert np.array_equal(a, want)


def test_float32_path_is_taken_for_plain_windows_only():
    coeffs = voi.linear_coeffs
    # the benchmark's CT (rescale -1024, 40/400) and DX (2000/3000) windows: float32
    assert coeffs("h", 1.0, -1024.0, None, voi.LINEAR, 40.0, 400.0) is not None
    assert coeffs("H", 1.0, 0.0, None, voi.LINEAR, 2000.0, 3000.0) is not None
    # LINEAR_EXACT 66/3 puts x = 67 on the tie 212.5 (double rounds it down): table
    assert coeffs("H", 1.0, 0.0, None, voi.LINEAR_EXACT, 66.0, 3.0) is None
    # a modality LUT, SIGMOID, 32-bit or float input, a step window: table / per pixel
    assert coeffs("H", 1.0, 0.0, np.arange(10, dtype=np.uint16), voi.LINEAR, 5.0, 10.0) is None
    assert coeffs("H", 1.0, 0.0, None, voi.SIGMOID, 2000.0, 3000.0) is None
    assert coeffs("i", 1.0, 0.0, None, voi.LINEAR, 2000.0, 3000.0) is None
    assert coeffs("f", 1.0, 0.0, None, voi.LINEAR, 2000.0, 3000.0) is None
    assert coeffs("H", 1.0, 0.0, None, voi.LINEAR, 2000.0, 1.0) is None


@settings(max_examples=25, deadline=5000)
@given(
    seed=st.integers(0, 2**32 - 1),
    dtype=st.sampled_from(SMALL),
    center=st.floats(-2000, 5000, allow_nan=False),
    width=st.floats(2, 6000, allow_nan=False),
    invert=st.booleans(),
    threads=st.integers(2, 4),
    extra=st.integers(0, 200),
)
def test_threads_do_not_change_the_bytes(seed, dtype, center, width, invert, threads, extra):
    """A large image split over threads: the same bytes as one thread and as the twin, for
    any split (sizes that are not a multiple of the 64-pixel slice alignment included)."""
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype)
    src = rng.integers(info.min, info.max, voi.PARALLEL_MIN + extra, endpoint=True).astype(dtype)
    kw = dict(func=voi.LINEAR, center=center, width=width, invert=invert, slope=1.0,
              intercept=0.0)
    one, many, twin = (np.empty(src.shape, np.uint8) for _ in range(3))
    _voi.window_u8(src, one, **kw)
    _voi.window_u8(src, many, threads=threads, **kw)
    voi.window_u8(src, twin, threads=threads, **kw)
    assert np.array_equal(one, many)
    assert np.array_equal(one, twin)
