"""Pixel benchmarks, side by side in one run (a script, not a test):

    .venv/bin/python -m benchmarks.pixels [--runs 7]

Windowing (modality + VOI LINEAR + 8 bit) with hpacs's kernel vs the pydicom + numpy
reference (apply_modality_lut + apply_voi_lut + scaling to uint8) vs np.copyto of the same
array, on a 512x512 CT and a 3000x2500 DX (16-bit, synthetic); RLE decode of the same images
with hpacs vs pylibjpeg-rle vs pydicom's own decoder. Megapixels/s: median (min-max).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.pixels.decoders.rle import _rle_decode_frame
from rle.rle import decode_frame as pylibjpeg_rle_decode

from benchmarks.stats import fmt_summary, summarize
from hpacs.pixels import COMPILED, encode_array, to_uint8
from hpacs.pixels._kernels import rle_decode_frame


def images() -> list[tuple[str, np.ndarray, Dataset]]:
    rng = np.random.default_rng(0)
    out = []
    # CT: 12-bit signed stored values with a body-like structure (runs for RLE) plus noise
    yy, xx = np.mgrid[:512, :512]
    body = ((yy - 256) ** 2 + (xx - 256) ** 2 < 230**2) * 1040
    ct = (body + rng.normal(0, 20, (512, 512)) - 1000).clip(-2048, 2047).astype(np.int16)
    ds = Dataset()
    ds.BitsAllocated, ds.BitsStored, ds.PixelRepresentation = 16, 12, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.WindowCenter, ds.WindowWidth = 40, 400
    out.append(("CT 512x512", ct, ds))
    yy, xx = np.mgrid[:3000, :2500]
    dx = (2000 + 1500 * np.sin(xx / 300) * np.cos(yy / 400) + rng.normal(0, 30, (3000, 2500)))
    dx = dx.clip(0, 16383).astype(np.uint16)
    ds = Dataset()
    ds.BitsAllocated, ds.BitsStored, ds.PixelRepresentation = 16, 14, 0
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.WindowCenter, ds.WindowWidth = 2000, 3000
    out.append(("DX 3000x2500", dx, ds))
    return out


def reference(arr: np.ndarray, ds: Dataset) -> np.ndarray:
    """The pydicom + numpy path: modality, VOI, then [y_min, y_max] -> uint8."""
    v = apply_voi_lut(apply_modality_lut(arr, ds), ds)
    bits = ds.BitsStored
    y_min, y_max = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if ds.PixelRepresentation else (
        0, 2**bits - 1)
    if "RescaleSlope" in ds:
        y_min = y_min * ds.RescaleSlope + ds.RescaleIntercept
        y_max = y_max * ds.RescaleSlope + ds.RescaleIntercept
    g = np.floor((v - y_min) / (y_max - y_min) * 255 + 0.5).clip(0, 255).astype(np.uint8)
    return 255 - g if ds.PhotometricInterpretation == "MONOCHROME1" else g


def timeit(fn, runs: int) -> list[float]:
    fn()  # warm up
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def mps(arr: np.ndarray, times: list[float]):
    return summarize([arr.size / 1e6 / t for t in times])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=7)
    runs = ap.parse_args().runs
    print(f"compiled kernels: {COMPILED}; {runs} runs each; Mpx/s median (min-max)\n")
    print("| image | hpacs to_uint8 | pydicom+numpy | np.copyto | vs pydicom | vs copy |")
    print("|---|---:|---:|---:|---:|---:|")
    rle_rows = []
    for name, arr, ds in images():
        out = np.empty(arr.shape, np.uint8)
        dst = np.empty_like(arr)
        ours = mps(arr, timeit(lambda a=arr, d=ds, o=out: to_uint8(a, d, out=o), runs))
        ref = mps(arr, timeit(lambda a=arr, d=ds: reference(a, d), max(3, runs // 2)))
        cp = mps(arr, timeit(lambda a=arr, d=dst: np.copyto(d, a), runs))
        diff = np.abs(to_uint8(arr, ds).astype(int) - reference(arr, ds).astype(int)).max()
        assert diff <= 1, diff
        print(f"| {name} | {fmt_summary(ours, 1)} | {fmt_summary(ref, 1)} | "
              f"{fmt_summary(cp, 1)} | {ours.median / ref.median:.1f}x | "
              f"{ours.median / cp.median:.2f}x |")

        (enc,) = encode_array(arr.astype(arr.dtype.newbyteorder("<")))
        args = (arr.shape[0], arr.shape[1], 1, 16)
        want = arr.astype("<u2" if arr.dtype.kind == "u" else "<i2").tobytes()
        assert bytes(rle_decode_frame(enc, *args)) == want
        ho = mps(arr, timeit(lambda e=enc, a=args: rle_decode_frame(e, *a), runs))
        pl = mps(arr, timeit(lambda e=enc, a=args: pylibjpeg_rle_decode(e, a[0] * a[1], 16, "<"),
                             runs))
        pd = mps(arr, timeit(lambda e=enc, a=args: _rle_decode_frame(e, *a), 3))
        rle_rows.append((name, len(want) / len(enc), ho, pl, pd))
    print("\n| RLE decode | ratio | hpacs | pylibjpeg-rle | pydicom | vs pylibjpeg-rle |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, ratio, ho, pl, pd in rle_rows:
        print(f"| {name} | {ratio:.2f} | {fmt_summary(ho, 1)} | {fmt_summary(pl, 1)} | "
              f"{fmt_summary(pd, 1)} | {ho.median / pl.median:.2f}x |")


if __name__ == "__main__":
    main()
