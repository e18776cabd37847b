"""Fused modality LUT + VOI + 8-bit kernel: the pure-Python/numpy twin of ``_voi.pyx``.

One function of a stored value ``x`` gives the 8-bit grey level (PS3.3 C.11.1, C.11.2):

1. modality: ``y = mlut[clip(x - mlut_first, 0, n-1)]`` (x below the first mapped value takes
   entry 0) when a Modality LUT table is given, else ``y = x * slope + intercept``;
2. VOI, straight to the output range [0, 255] (so ``y_min = 0``, ``y_max = 255`` in the
   standard's formulas):

   * LINEAR (C.11.2.1.2.1): ``c = center - 0.5``, ``w = width - 1``; ``y <= c - w/2`` -> 0,
     ``y > c + w/2`` -> 255, else ``((y - c) / w + 0.5) * 255``;
   * LINEAR_EXACT (C.11.2.1.3.2): the same with ``c = center``, ``w = width``;
   * SIGMOID (C.11.2.1.3.1): ``255 / (1 + exp(-4 * (y - center) / width))``;
   * TABLE (VOI LUT Sequence): ``vlut[clip(trunc(y - vlut_first), 0, n-1)] * vlut_scale``
     with ``vlut_scale = 255 / (2**depth - 1)``;

3. round half up (``floor(t + 0.5)``), clamp to [0, 255], and for MONOCHROME1 ``255 - v``.

The common case, 8/16-bit integers with a LINEAR or LINEAR_EXACT window and no modality LUT,
is plain float32 arithmetic instead (the compiled loop is SIMD, no table, no min/max pass): with
``x0`` an integer stored value near the window center (``linear_coeffs``), ``d = x - x0``
(exact in int32, then exact in float32), ``u = d * a + b`` (float32 multiply, then float32 add:
the compiled kernel is built with ``-ffp-contract=off``), ``clip(trunc(u), 0, 255)``, which is
``clip(floor(t + 0.5), 0, 255)`` with ``b`` holding the ``+ 0.5`` (trunc and floor differ only
below 0, which clamps to 0 either way; ``linear_coeffs`` keeps ``|u| < 2**30``). Centering on
``x0`` keeps ``|d * a|`` and ``b`` near [-255, 255] wherever the result is not clamped, so the
float32 error stays ~1e-5 grey level. ``linear_coeffs`` takes this path only when no stored
value of the type has its exact result that close to a .5 tie (a linear function of ``x``: a
few hundred values to check, once per window), so it gives the same bytes as the table path
below for every input; windows with ties (LINEAR_EXACT on integers, the automatic window) keep
the table.

Other integer input whose values lie in ``[lo, hi]`` (the range Bits Stored allows) goes through
a table of ``hi - lo + 1`` entries built from that function (values outside it are computed
one by one), float input is computed per pixel; the results are the same. The compiled kernel
does all of it in C without the GIL and without any intermediate array; this twin builds the
table with numpy (float64, same operation order, ``math.exp`` like C's ``exp``) and must give
identical bytes.
"""

from __future__ import annotations

import functools
import math

import numpy as np

__all__ = ["LINEAR", "LINEAR_EXACT", "MAX_TABLE", "PARALLEL_MIN", "SIGMOID", "TABLE",
           "linear_coeffs", "minmax", "window_u8"]

LINEAR = 0
LINEAR_EXACT = 1
SIGMOID = 2
TABLE = 3
#: Largest stored-value table the kernel builds (2**16 entries: 16-bit data).
MAX_TABLE = 1 << 16


def _values(
    x: np.ndarray,
    slope: float,
    intercept: float,
    mlut: np.ndarray | None,
    mlut_first: int,
    func: int,
    center: float,
    width: float,
    vlut: np.ndarray | None,
    vlut_first: int,
    vlut_scale: float,
    invert: bool,
) -> np.ndarray:
    x = np.asarray(x)
    if mlut is not None:
        xi = x.astype(np.int64) if x.dtype.kind in "iub" else np.trunc(x).astype(np.int64)
        idx = np.clip(xi - mlut_first, 0, len(mlut) - 1)
        y = mlut[idx].astype(np.float64)
    else:
        y = x.astype(np.float64) * slope + intercept
    if func in (LINEAR, LINEAR_EXACT):
        c, w = (center - 0.5, width - 1.0) if func == LINEAR else (center, width)
        below = y <= c - w / 2
        above = y > c + w / 2
        with np.errstate(all="ignore"):
            t = ((y - c) / w + 0.5) * 255.0
        t = np.where(below, 0.0, np.where(above, 255.0, t))
    elif func == SIGMOID:
        arg = -4.0 * (y - center) / width
        e = np.fromiter(map(_exp, arg.ravel().tolist()), np.float64, arg.size).reshape(arg.shape)
        t = 255.0 / (1.0 + e)
    elif func == TABLE:
        assert vlut is not None
        idx = np.where(y >= vlut_first, y - vlut_first, 0.0)
        idx = np.clip(np.minimum(idx, len(vlut) - 1).astype(np.int64), 0, len(vlut) - 1)
        t = vlut[idx].astype(np.float64) * vlut_scale
    else:
        raise ValueError(f"unknown VOI function {func}")
    v = np.clip(np.floor(t + 0.5), 0, 255).astype(np.uint8)
    return 255 - v if invert else v


#: Smallest image (pixels) the compiled float32 path splits over threads: below it, waking a
#: second thread costs more than it saves.
PARALLEL_MIN = 1 << 17
#: Integer types the float32 path takes: ``x - x0`` fits int32 and float32 exactly.
ARITH_CHARS = "bBhH"
_TYPE_RANGE = {"b": (-128, 127), "B": (0, 255), "h": (-32768, 32767), "H": (0, 65535)}


def linear_coeffs(
    char: str, slope: float, intercept: float, mlut, func: int, center: float, width: float
) -> tuple[int, float, float] | None:
    """``(x0, a, b)`` of the float32 path for source type code ``char``, or None when the
    table path must run (other functions or types, a modality LUT, a step window, overflow,
    or a stored value whose result lies too close to a rounding tie).

    Shared by both kernels so they take the same path from the same three numbers; ``a``/``b``
    are float32 values (returned as Python floats). Cached: a series reuses its window."""
    if mlut is not None or func not in (LINEAR, LINEAR_EXACT) or char not in ARITH_CHARS:
        return None
    return _coeffs(char, float(slope), float(intercept), func, float(center), float(width))


@functools.lru_cache(maxsize=256)
def _coeffs(char: str, slope: float, intercept: float, func: int, center: float, width: float):
    c, w = (center - 0.5, width - 1.0) if func == LINEAR else (center, width)
    if not (w > 0 and slope != 0 and math.isfinite(slope) and math.isfinite(intercept)
            and math.isfinite(c) and math.isfinite(w)):
        return None
    tmin, tmax = _TYPE_RANGE[char]
    x0f = (c - intercept) / slope
    x0 = tmin if not x0f > tmin else tmax if not x0f < tmax else math.floor(x0f + 0.5)
    a = slope * 255.0 / w
    b = (x0 * slope + intercept - c) / w * 255.0 + 128.0
    a32, b32 = float(np.float32(a)), float(np.float32(b))
    if not abs(a32) * 65536 + abs(b32) < 2**30:  # float32 -> int32 never overflows (or NaN)
        return None
    if _near_tie(x0, a, b, tmin, tmax):
        return None
    return x0, a32, b32


def _near_tie(x0: int, a: float, b: float, tmin: int, tmax: int) -> bool:
    """Whether some stored value of the type has ``u = t + 0.5`` within the float32 path's
    error of an integer in [1, 255] (a .5 tie of ``t``), where float32 and the double formula
    may round apart. Without such a value both give the same byte for every input.

    The float32 error is below ``2**-24 * 3 * (256 + |b|)`` wherever ``u`` is in [0, 256]:
    ``a`` and ``b`` rounded to float32, then the product and the sum, each within ``2**-24``
    relative, with ``|d * a| <= |u| + |b|``. The double formula's error is ~1e-12. ``eps`` is
    4/3 of that bound (a wider margin sends common windows to the table: 2000/3000 comes
    within 1/5998 of a tie)."""
    eps = 2.0**-22 * (256.0 + abs(b))
    ends = sorted(((1 - eps - b) / a, (255 + eps - b) / a))
    d_lo = max(math.floor(ends[0]) - 1, tmin - x0)
    d_hi = min(math.ceil(ends[1]) + 1, tmax - x0)
    if d_lo > d_hi:
        return False
    u = np.arange(d_lo, d_hi + 1, dtype=np.float64) * a + b
    return bool((np.abs(u - np.round(u)) < eps).any())


def _linear_u8(flat: np.ndarray, x0: int, a: float, b: float, invert: bool) -> np.ndarray:
    d = (flat.astype(np.int32) - np.int32(x0)).astype(np.float32)
    u = d * np.float32(a)
    u += np.float32(b)
    v = np.clip(u.astype(np.int32), 0, 255).astype(np.uint8)
    return 255 - v if invert else v


def _exp(a: float) -> float:
    try:
        return math.exp(a)
    except OverflowError:
        return math.inf


def minmax(src: np.ndarray) -> tuple[float, float]:
    """Smallest and largest value of ``src`` (ints for integer arrays)."""
    a = np.asarray(src)
    if a.size == 0:
        raise ValueError("empty array")
    lo, hi = a.min(), a.max()
    return (int(lo), int(hi)) if a.dtype.kind in "iub" else (float(lo), float(hi))


def window_u8(
    src: np.ndarray,
    out: np.ndarray,
    *,
    slope: float = 1.0,
    intercept: float = 0.0,
    mlut: np.ndarray | None = None,
    mlut_first: int = 0,
    func: int = LINEAR,
    center: float = 127.5,
    width: float = 256.0,
    vlut: np.ndarray | None = None,
    vlut_first: int = 0,
    vlut_scale: float = 1.0,
    invert: bool = False,
    lo: int = 0,
    hi: int = -1,
    threads: int = 1,
) -> None:
    """Map ``src`` (stored values) into ``out`` (uint8, same shape, C-contiguous).

    ``threads``: how many threads the compiled float32 path may split a large image over
    (``PARALLEL_MIN`` pixels or more); the bytes do not depend on it, the twin ignores it."""
    args = _validate(src, out, mlut, func, width, vlut)
    if args is None:
        return
    params = (slope, intercept, mlut, mlut_first, func, center, width, vlut, vlut_first,
              vlut_scale, invert)
    flat = src.reshape(-1)
    dst = out.reshape(-1)
    coeffs = linear_coeffs(src.dtype.char, slope, intercept, mlut, func, center, width)
    if coeffs is not None:
        dst[...] = _linear_u8(flat, *coeffs, invert)
        return
    if src.dtype.kind in "iu" and 0 < hi - lo + 1 <= MAX_TABLE:
        table = _values(np.arange(lo, hi + 1, dtype=np.int64), *params)
        idx = flat.astype(np.int64) - lo
        inside = (idx >= 0) & (idx <= hi - lo)
        if inside.all():
            np.take(table, idx, out=dst)
            return
        dst[inside] = table[idx[inside]]
        dst[~inside] = _values(flat[~inside], *params)
    else:
        dst[...] = _values(flat, *params)


def _validate(src, out, mlut, func, width, vlut):
    if not isinstance(src, np.ndarray) or not isinstance(out, np.ndarray):
        raise TypeError("src and out must be numpy arrays")
    if src.dtype.kind not in "iuf" or src.dtype.itemsize > 8 or src.dtype.byteorder == ">":
        raise TypeError(f"unsupported source dtype {src.dtype}")
    if (src.dtype.kind in "iu" and src.dtype.itemsize > 4) or (
        src.dtype.kind == "f" and src.dtype.itemsize not in (4, 8)
    ):
        raise TypeError(f"unsupported source dtype {src.dtype}")
    if out.dtype != np.uint8 or out.shape != src.shape or not out.flags.c_contiguous:
        raise ValueError("out must be a C-contiguous uint8 array of the source's shape")
    if not src.flags.c_contiguous:
        raise ValueError("src must be C-contiguous")
    if func in (LINEAR, LINEAR_EXACT, SIGMOID):
        if func == LINEAR and not width >= 1:
            raise ValueError("LINEAR needs Window Width >= 1")
        if func != LINEAR and not width > 0:
            raise ValueError("LINEAR_EXACT and SIGMOID need Window Width > 0")
    elif func == TABLE:
        if vlut is None or len(vlut) == 0:
            raise ValueError("TABLE needs a non-empty VOI LUT")
    else:
        raise ValueError(f"unknown VOI function {func}")
    if mlut is not None and len(mlut) == 0:
        raise ValueError("empty modality LUT")
    return None if src.size == 0 else True
