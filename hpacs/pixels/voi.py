"""Modality LUT + VOI + MONOCHROME1 inversion to 8 bits, in one pass (``hpacs/_ext/_voi.pyx``).

``to_uint8(arr, ds)`` turns stored values (``decode()`` output, monochrome) into grey levels
0..255. ``voi_params(ds, ...)`` is the plan it runs, readable and overridable.

Oracle and exactness: the result is pydicom's ``apply_modality_lut`` then ``apply_voi_lut``
(same ``index``/``prefer_lut``), followed by the documented 8-bit mapping

* windows: ``g = (v - y_min) / (y_max - y_min) * 255`` with pydicom's ``y_min``/``y_max``
  (the output range ``apply_windowing`` maps onto), then ``floor(g + 0.5)``;
* VOI LUT tables: ``g = v * 255 / (2**depth - 1)`` (depth = 3rd LUT Descriptor value), rounded
  the same way;
* no VOI at all: an automatic LINEAR window over [min, max] of the modality values (center
  ``(lo + hi) / 2 + 0.5``, width ``hi - lo + 1``: ``lo`` -> 0, ``hi`` -> 255), or with
  ``auto="histogram"`` over the 0.5th-99.5th percentiles of the stored values (numpy's
  ``inverted_cdf``: values the image has; a few hot or dead pixels no longer flatten it);
* MONOCHROME1: ``255 - g``.

Tables are exact. The windows are computed with the standard's formulas evaluated directly on
[0, 255] (``y_min = 0``, ``y_max = 255``), so they equal the oracle except where double
rounding lands on the other side of a .5: within 1 grey level, and the tests measure how rare.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from struct import unpack

import numpy as np
from pydicom.dataset import Dataset
from pydicom.valuerep import VR

from hpacs._ext.voi import LINEAR, LINEAR_EXACT, SIGMOID, TABLE
from hpacs.pixels._kernels import PixelDataError, minmax, window_u8

__all__ = ["AUTO", "AUTO_PERCENTILES", "FUNCTIONS", "THREADS", "VoiParams",
           "percentile_range", "to_uint8", "voi_params"]

FUNCTIONS = {"LINEAR": LINEAR, "LINEAR_EXACT": LINEAR_EXACT, "SIGMOID": SIGMOID}
#: Threads ``to_uint8`` lets the kernel use on a large image (see ``hpacs._ext.voi``). One by
#: default: on the loaded 2-core dev machine two OpenMP threads cut a 512x512 CT's kernel time
#: by ~30 % in a tight loop, but with libgomp's default spin-waiting a benchmark run slowed to
#: ~27 ms per frame (a descheduled team thread holds the barrier), and with passive waiting two
#: were slower than one. A server has other requests for its cores; opt in per call.
THREADS = 1
#: Automatic windows: "minmax" spans the data, "histogram" the percentiles below.
AUTO = ("minmax", "histogram")
AUTO_PERCENTILES = (0.5, 99.5)


@dataclass(frozen=True)
class VoiParams:
    """What the kernel runs: see ``hpacs._ext.voi`` for the formulas."""

    slope: float = 1.0
    intercept: float = 0.0
    mlut: np.ndarray | None = None
    mlut_first: int = 0
    func: int = LINEAR
    center: float | None = None  # None (with width None): automatic window from min/max
    width: float | None = None
    vlut: np.ndarray | None = None
    vlut_first: int = 0
    vlut_scale: float = 1.0
    invert: bool = False
    lo: int = 0  # stored-value range the kernel tabulates (from Bits Stored)
    hi: int = -1
    auto: str = "minmax"  # automatic window: "minmax" or "histogram" (AUTO_PERCENTILES)


def _lut(ds: Dataset, item: Dataset) -> tuple[np.ndarray, int, int]:
    try:
        n, first, depth = (int(v) for v in item.LUTDescriptor)
        n = n or 65536
        elem = item["LUTData"]
        if elem.VR == VR.OW or isinstance(elem.value, bytes):
            meta = getattr(ds, "file_meta", None)
            little = meta._tsyntax_encoding[1] if meta is not None else ds.original_encoding[1]
            if little is None:
                little = True
            data = unpack(f"{'><'[bool(little)]}{n}H", bytes(elem.value)[: 2 * n])
        else:
            data = [elem.value] if isinstance(elem.value, int) else list(elem.value)
        table = np.asarray(data, dtype=np.uint16)
    except (AttributeError, KeyError, ValueError, TypeError) as exc:
        raise PixelDataError(f"bad LUT: {exc}") from exc
    if len(table) < n:
        raise PixelDataError(f"LUT has {len(table)} entries, descriptor says {n}")
    return table[:n], first, depth


# Tags voi_params reads: integer tags and one ``ds.get`` each (a keyword lookup costs twice
# as much, and the plan is made per rendered frame).
_BITS_STORED = 0x00280101
_PIXEL_REPRESENTATION = 0x00280103
_PHOTOMETRIC = 0x00280004
_MODALITY_LUT_SEQ = 0x00283000
_RESCALE_INTERCEPT = 0x00281052
_RESCALE_SLOPE = 0x00281053
_VOI_LUT_SEQ = 0x00283010
_WINDOW_CENTER = 0x00281050
_WINDOW_WIDTH = 0x00281051
_VOI_LUT_FUNCTION = 0x00281056
_MISSING = object()


def _value(ds: Dataset, tag: int, default=None):
    elem = ds.get(tag)
    return default if elem is None else elem.value


def voi_params(
    ds: Dataset,
    *,
    index: int = 0,
    prefer_lut: bool = True,
    center: float | None = None,
    width: float | None = None,
    function: str | None = None,
    auto: str = "minmax",
) -> VoiParams:
    """The plan for ``ds``: its modality LUT/rescale, its VOI (window ``index`` or VOI LUT
    ``index``), MONOCHROME1 inversion. ``center``/``width``/``function`` override the window;
    ``auto`` picks the automatic window of an image without one ("minmax", "histogram")."""
    if auto not in AUTO:
        raise PixelDataError(f"automatic window {auto!r} is not one of {', '.join(AUTO)}")
    try:
        bits_value = _value(ds, _BITS_STORED, _MISSING)
        if bits_value is _MISSING:
            raise AttributeError("no Bits Stored")
        bits = int(bits_value)
        signed = int(_value(ds, _PIXEL_REPRESENTATION, 0)) == 1
        photometric = str(_value(ds, _PHOTOMETRIC, "MONOCHROME2")).strip()
    except (AttributeError, TypeError, ValueError) as exc:
        raise PixelDataError(f"missing or bad image pixel attributes: {exc}") from exc
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise PixelDataError(f"windowing needs a monochrome image, not {photometric}")
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    kw: dict = {"invert": photometric == "MONOCHROME1", "lo": lo, "hi": hi, "auto": auto}

    # modality (pydicom's output range y_lo/y_hi is not needed: the kernel maps onto [0, 255])
    mlut_seq = _value(ds, _MODALITY_LUT_SEQ)
    if mlut_seq:
        table, first, _depth = _lut(ds, mlut_seq[0])
        kw.update(mlut=table, mlut_first=first)
    else:
        slope = _value(ds, _RESCALE_SLOPE, _MISSING)
        intercept = _value(ds, _RESCALE_INTERCEPT, _MISSING)
        if slope is not _MISSING and intercept is not _MISSING:
            kw.update(slope=float(slope), intercept=float(intercept))

    # VOI
    if center is not None or width is not None:
        if center is None or width is None:
            raise PixelDataError("give both a window center and a window width")
        func = FUNCTIONS.get((function or "LINEAR").upper())
        if func is None:
            raise PixelDataError(f"unknown VOI LUT Function {function!r}")
        return VoiParams(func=func, center=float(center), width=float(width), **kw)

    voi_seq = _value(ds, _VOI_LUT_SEQ)
    has_lut = bool(voi_seq) and all(
        voi_seq[0].get(k) is not None for k in ("LUTDescriptor", "LUTData")
    )
    wc = ds.get(_WINDOW_CENTER)
    ww = ds.get(_WINDOW_WIDTH)
    has_window = wc is not None and wc.value is not None and ww is not None and (
        ww.value is not None)
    if has_lut and (prefer_lut or not has_window):
        try:
            item = voi_seq[index]
        except IndexError as exc:
            raise PixelDataError(f"no VOI LUT number {index}") from exc
        table, first, depth = _lut(ds, item)
        if depth != 8 and not 10 <= depth <= 16:
            raise PixelDataError(f"{depth} bits per VOI LUT entry is not supported")
        return VoiParams(func=TABLE, vlut=table, vlut_first=first,
                         vlut_scale=255.0 / (2**depth - 1), **kw)
    if has_window:
        try:
            c = _pick(wc, index)
            w = _pick(ww, index)
        except IndexError as exc:
            raise PixelDataError(f"no window number {index}") from exc
        name = str(_value(ds, _VOI_LUT_FUNCTION) or "LINEAR").strip().upper()
        func = FUNCTIONS.get(name)
        if func is None:
            raise PixelDataError(f"unsupported VOI LUT Function {name!r}")
        return VoiParams(func=func, center=c, width=w, **kw)
    return VoiParams(**kw)  # automatic window, resolved per image


def _pick(elem, index: int) -> float:
    return float(elem.value[index] if elem.VM > 1 else elem.value)


def to_uint8(
    arr: np.ndarray,
    ds: Dataset | None = None,
    *,
    params: VoiParams | None = None,
    out: np.ndarray | None = None,
    threads: int | None = None,
    **kwargs,
) -> np.ndarray:
    """Grey levels (uint8, same shape as ``arr``) for stored values ``arr`` of ``ds``.

    ``kwargs`` go to ``voi_params`` (``index``, ``prefer_lut``, ``center``, ``width``,
    ``function``); or pass a ready ``params`` (once per image or series: reading the data set
    costs about as much as windowing a 512x512 frame). ``threads``: how many threads a large
    image may be split over (default ``THREADS``).
    """
    if params is None:
        if ds is None:
            raise TypeError("give a dataset or params")
        params = voi_params(ds, **kwargs)
    src = np.ascontiguousarray(arr)
    if src.dtype.byteorder == ">" or src.dtype.kind == "b":
        src = src.astype(src.dtype.newbyteorder("=") if src.dtype.kind != "b" else np.uint8)
    if src.dtype.kind in "iu" and src.dtype.itemsize == 8:
        src = src.astype(np.int32 if src.dtype.kind == "i" else np.uint32)  # values fit
    if out is None:
        out = np.empty(src.shape, dtype=np.uint8)
    p = params
    if p.func != TABLE and (p.center is None or p.width is None):
        p = _auto_window(src, p)
    try:
        window_u8(
            src, out, slope=p.slope, intercept=p.intercept, mlut=p.mlut,
            mlut_first=p.mlut_first, func=p.func,
            center=127.5 if p.center is None else p.center,
            width=256.0 if p.width is None else p.width,
            vlut=p.vlut, vlut_first=p.vlut_first, vlut_scale=p.vlut_scale,
            invert=p.invert, lo=p.lo, hi=p.hi, threads=THREADS if threads is None else threads,
        )
    except (ValueError, TypeError) as exc:
        raise PixelDataError(f"cannot window these pixels: {exc}") from exc
    return out


def percentile_range(src: np.ndarray, q: tuple[float, float]) -> tuple[float, float]:
    """``np.percentile(src, q, method="inverted_cdf")``: for integers from one histogram
    (``bincount`` over [min, max], then the cumulative counts), without a sort."""
    flat = src.reshape(-1)
    lo_q, hi_q = q
    if not 0 <= lo_q <= hi_q <= 100:
        raise ValueError(f"bad percentiles {q}")
    if flat.dtype.kind in "iu":
        smin, smax = minmax(flat)
        if smax - smin < 1 << 22:
            counts = np.bincount(flat.astype(np.intp) - smin, minlength=smax - smin + 1)
            cdf = np.cumsum(counts)
            n = flat.size
            idx = np.searchsorted(cdf, [lo_q / 100 * n, hi_q / 100 * n], side="left")
            a, b = (min(int(i), len(cdf) - 1) for i in idx)
            return smin + a, smin + b
    lo, hi = np.percentile(flat, [lo_q, hi_q], method="inverted_cdf")
    return (int(lo), int(hi)) if flat.dtype.kind in "iu" else (float(lo), float(hi))


def _auto_window(src: np.ndarray, p: VoiParams) -> VoiParams:
    """LINEAR window that maps the smallest modality value to 0 and the largest to 255 (or
    the AUTO_PERCENTILES of the stored values, for ``auto="histogram"``)."""
    if src.size == 0:
        return replace(p, func=LINEAR, center=0.5, width=1.0)
    if p.auto == "histogram":
        smin, smax = percentile_range(src, AUTO_PERCENTILES)
    else:
        smin, smax = minmax(src)
    if p.mlut is not None:
        a = int(np.clip(int(smin) - p.mlut_first, 0, len(p.mlut) - 1))
        b = int(np.clip(int(smax) - p.mlut_first, 0, len(p.mlut) - 1))
        used = p.mlut[a : b + 1]
        y_lo, y_hi = float(used.min()), float(used.max())
    else:
        ends = (smin * p.slope + p.intercept, smax * p.slope + p.intercept)
        y_lo, y_hi = min(ends), max(ends)
    return replace(p, func=LINEAR, center=(y_lo + y_hi) / 2 + 0.5, width=y_hi - y_lo + 1)
