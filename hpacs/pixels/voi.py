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
  ``(lo + hi) / 2 + 0.5``, width ``hi - lo + 1``: ``lo`` -> 0, ``hi`` -> 255);
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

__all__ = ["FUNCTIONS", "VoiParams", "to_uint8", "voi_params"]

FUNCTIONS = {"LINEAR": LINEAR, "LINEAR_EXACT": LINEAR_EXACT, "SIGMOID": SIGMOID}


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


def voi_params(
    ds: Dataset,
    *,
    index: int = 0,
    prefer_lut: bool = True,
    center: float | None = None,
    width: float | None = None,
    function: str | None = None,
) -> VoiParams:
    """The plan for ``ds``: its modality LUT/rescale, its VOI (window ``index`` or VOI LUT
    ``index``), MONOCHROME1 inversion. ``center``/``width``/``function`` override the window."""
    try:
        bits = int(ds.BitsStored)
        signed = int(ds.get("PixelRepresentation", 0)) == 1
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    except (AttributeError, TypeError, ValueError) as exc:
        raise PixelDataError(f"missing or bad image pixel attributes: {exc}") from exc
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise PixelDataError(f"windowing needs a monochrome image, not {photometric}")
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    p = VoiParams(invert=photometric == "MONOCHROME1", lo=lo, hi=hi)

    # modality
    y_lo: float
    y_hi: float
    if ds.get("ModalityLUTSequence"):
        table, first, depth = _lut(ds, ds.ModalityLUTSequence[0])
        p = replace(p, mlut=table, mlut_first=first)
        y_lo, y_hi = 0.0, float(2**depth - 1)
    else:
        y_lo, y_hi = float(lo), float(hi)
        if "RescaleSlope" in ds and "RescaleIntercept" in ds:
            slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
            p = replace(p, slope=slope, intercept=intercept)
            y_lo, y_hi = y_lo * slope + intercept, y_hi * slope + intercept
    del y_lo, y_hi  # pydicom's output range; the kernel maps straight onto [0, 255]

    # VOI
    if center is not None or width is not None:
        if center is None or width is None:
            raise PixelDataError("give both a window center and a window width")
        func = FUNCTIONS.get((function or "LINEAR").upper())
        if func is None:
            raise PixelDataError(f"unknown VOI LUT Function {function!r}")
        return replace(p, func=func, center=float(center), width=float(width))

    has_lut = bool(ds.get("VOILUTSequence")) and all(
        ds.VOILUTSequence[0].get(k) is not None for k in ("LUTDescriptor", "LUTData")
    )
    has_window = ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None
    if has_lut and (prefer_lut or not has_window):
        try:
            item = ds.VOILUTSequence[index]
        except IndexError as exc:
            raise PixelDataError(f"no VOI LUT number {index}") from exc
        table, first, depth = _lut(ds, item)
        if depth != 8 and not 10 <= depth <= 16:
            raise PixelDataError(f"{depth} bits per VOI LUT entry is not supported")
        return replace(p, func=TABLE, vlut=table, vlut_first=first,
                       vlut_scale=255.0 / (2**depth - 1))
    if has_window:
        try:
            c = _pick(ds["WindowCenter"], index)
            w = _pick(ds["WindowWidth"], index)
        except IndexError as exc:
            raise PixelDataError(f"no window number {index}") from exc
        name = str(ds.get("VOILUTFunction") or "LINEAR").strip().upper()
        func = FUNCTIONS.get(name)
        if func is None:
            raise PixelDataError(f"unsupported VOI LUT Function {name!r}")
        return replace(p, func=func, center=c, width=w)
    return p  # automatic window, resolved per image


def _pick(elem, index: int) -> float:
    return float(elem.value[index] if elem.VM > 1 else elem.value)


def to_uint8(
    arr: np.ndarray,
    ds: Dataset | None = None,
    *,
    params: VoiParams | None = None,
    out: np.ndarray | None = None,
    **kwargs,
) -> np.ndarray:
    """Grey levels (uint8, same shape as ``arr``) for stored values ``arr`` of ``ds``.

    ``kwargs`` go to ``voi_params`` (``index``, ``prefer_lut``, ``center``, ``width``,
    ``function``); or pass a ready ``params``.
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
            invert=p.invert, lo=p.lo, hi=p.hi,
        )
    except (ValueError, TypeError) as exc:
        raise PixelDataError(f"cannot window these pixels: {exc}") from exc
    return out


def _auto_window(src: np.ndarray, p: VoiParams) -> VoiParams:
    """LINEAR window that maps the smallest modality value to 0 and the largest to 255."""
    if src.size == 0:
        return replace(p, func=LINEAR, center=0.5, width=1.0)
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
