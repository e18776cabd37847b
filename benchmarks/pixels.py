"""Pixel benchmarks, side by side in one run (a script, not a test):

    .venv/bin/python -m benchmarks.pixels [--runs 7] [--out benchmarks/reports]

Windowing (modality + VOI LINEAR + 8 bit) with hpacs's kernel vs the pydicom + numpy
reference (apply_modality_lut + apply_voi_lut + scaling to uint8) vs np.copyto of the same
array, on a 512x512 CT and a 3000x2500 DX (16-bit, synthetic); RLE decode of the same images
with hpacs vs pylibjpeg-rle vs pydicom's own decoder. Megapixels/s: median (min-max).

hpacs windowing is timed twice: ``to_uint8(arr, ds)`` (the plan read from the dataset, then
the kernel) and ``to_uint8(arr, params=plan)`` (a plan made once, as for the frames of one
image or series: the kernel and its Python wrapper). The windowing columns and np.copyto are
timed in interleaved rounds (each sample: the mean of a batch of calls lasting >= ~2 ms), so
load from other processes hits them alike; the ratios are per round, then the median.
Writes ``pixels-<stamp>.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.pixels.decoders.rle import _rle_decode_frame
from rle.rle import decode_frame as pylibjpeg_rle_decode

from benchmarks.stats import fmt_summary, summarize, timeit
from hpacs.pixels import COMPILED, encode_array, to_uint8, voi_params
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


def mps(arr: np.ndarray, times: list[float]):
    return summarize([arr.size / 1e6 / t for t in times])


def interleaved(fns: dict, rounds: int, size: int) -> dict[str, list[float]]:
    """Mpx/s samples of each function, one batch per function per round, in turn."""
    batch = {}
    for name, fn in fns.items():
        fn()  # warm up
        t = time.perf_counter()
        fn()
        batch[name] = max(1, min(200, int(0.002 / max(time.perf_counter() - t, 1e-7))))
    out: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            k = batch[name]
            t = time.perf_counter()
            for _ in range(k):
                fn()
            out[name].append(size / 1e6 / ((time.perf_counter() - t) / k))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "reports")
    args = ap.parse_args(argv)
    runs = args.runs
    lines: list[str] = []

    def emit(line: str = "") -> None:
        print(line)
        lines.append(line)

    emit(f"compiled kernels: {COMPILED}; {runs} interleaved rounds; Mpx/s median (min-max); "
         "ratios: median of the per-round ratios\n")
    emit("| image | hpacs to_uint8(ds) | hpacs to_uint8(plan) | pydicom+numpy | np.copyto | "
         "vs pydicom | (ds) vs copy | (plan) vs copy |")
    emit("|---|---:|---:|---:|---:|---:|---:|---:|")
    rle_rows = []
    for name, arr, ds in images():
        out = np.empty(arr.shape, np.uint8)
        dst = np.empty_like(arr)
        plan = voi_params(ds)
        diff = np.abs(to_uint8(arr, ds).astype(int) - reference(arr, ds).astype(int)).max()
        assert diff <= 1, diff
        s = interleaved({
            "ds": lambda a=arr, d=ds, o=out: to_uint8(a, d, out=o),
            "plan": lambda a=arr, p=plan, o=out: to_uint8(a, params=p, out=o),
            "copy": lambda a=arr, d=dst: np.copyto(d, a),
        }, runs, arr.size)
        ref = mps(arr, timeit(lambda a=arr, d=ds: reference(a, d), max(3, runs // 2)))
        ours, planned, cp = summarize(s["ds"]), summarize(s["plan"]), summarize(s["copy"])
        r_ds = statistics.median(o / c for o, c in zip(s["ds"], s["copy"], strict=True))
        r_plan = statistics.median(o / c for o, c in zip(s["plan"], s["copy"], strict=True))
        emit(f"| {name} | {fmt_summary(ours, 1)} | {fmt_summary(planned, 1)} | "
             f"{fmt_summary(ref, 1)} | {fmt_summary(cp, 1)} | {ours.median / ref.median:.1f}x | "
             f"{r_ds:.2f}x | {r_plan:.2f}x |")

        (enc,) = encode_array(arr.astype(arr.dtype.newbyteorder("<")))
        args_ = (arr.shape[0], arr.shape[1], 1, 16)
        want = arr.astype("<u2" if arr.dtype.kind == "u" else "<i2").tobytes()
        assert bytes(rle_decode_frame(enc, *args_)) == want
        ho = mps(arr, timeit(lambda e=enc, a=args_: rle_decode_frame(e, *a), runs))
        pl = mps(arr, timeit(lambda e=enc, a=args_: pylibjpeg_rle_decode(e, a[0] * a[1], 16, "<"),
                             runs))
        pd = mps(arr, timeit(lambda e=enc, a=args_: _rle_decode_frame(e, *a), 3))
        rle_rows.append((name, len(want) / len(enc), ho, pl, pd))
    emit("\n| RLE decode | ratio | hpacs | pylibjpeg-rle | pydicom | vs pylibjpeg-rle |")
    emit("|---|---:|---:|---:|---:|---:|")
    for name, ratio, ho, pl, pd in rle_rows:
        emit(f"| {name} | {ratio:.2f} | {fmt_summary(ho, 1)} | {fmt_summary(pl, 1)} | "
             f"{fmt_summary(pd, 1)} | {ho.median / pl.median:.2f}x |")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"pixels-{time.strftime('%Y%m%d-%H%M%S')}.md"
    path.write_text("# benchmarks.pixels\n\n" + "\n".join(lines) + "\n")
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
