"""Transcoding throughput per codec on a real CT slice, side by side in one run (a script, not a
test):

    .venv/bin/python -m benchmarks.transcode [--runs 7]

The slice is pydicom's ``J2K_pixelrep_mismatch.dcm`` (512x512 CT, 16 bits), first made Explicit
VR LE. Each row times ``hpacs.pixels.transcode.transcode`` (Part 10 bytes in, data set out: read,
decode, encode, write) and, for reference, pydicom's own ``Dataset.compress()`` /
``decompress()`` on a Dataset read from the same bytes (read + codec + write to bytes). MB/s of
uncompressed pixel data: median (min-max) of the runs; ratio = uncompressed / compressed size.
"""

from __future__ import annotations

import argparse
import io
import platform
import time
import warnings
from collections.abc import Callable
from functools import partial

import pydicom
import pydicom.data
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from benchmarks.stats import fmt_ratio, fmt_summary, ratio, summarize
from hpacs.pixels.transcode import transcode

SOURCE = "J2K_pixelrep_mismatch.dcm"


def timeit(fn: Callable[[], object], runs: int) -> list[float]:
    fn()  # warm up
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def _pydicom_to(data: bytes, target: str) -> bytes:
    """The reference path: pydicom reads, decompresses and/or compresses, writes."""
    ds = pydicom.dcmread(io.BytesIO(data))
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        ds.decompress(generate_instance_uid=False)
    if target not in (ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian):
        ds.compress(target, generate_instance_uid=False)
    else:
        ds.file_meta.TransferSyntaxUID = target
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    raw = transcode(pydicom.data.get_testdata_file(SOURCE), ExplicitVRLittleEndian).part10()
    ds = pydicom.dcmread(io.BytesIO(raw))
    pixel_mb = len(ds.PixelData) / 1e6
    sources = {ExplicitVRLittleEndian: raw}
    for ts in (RLELossless, JPEGLSLossless, JPEG2000Lossless):
        sources[ts] = transcode(raw, ts).part10()
    rows = [(ExplicitVRLittleEndian, t) for t in
            (RLELossless, JPEGLSLossless, JPEG2000Lossless, DeflatedExplicitVRLittleEndian)]
    rows += [(s, ExplicitVRLittleEndian) for s in (RLELossless, JPEGLSLossless, JPEG2000Lossless)]
    print(f"# Transcoding a {ds.Rows}x{ds.Columns} CT slice ({pixel_mb:.2f} MB of pixels), "
          f"{args.runs} runs, {platform.python_version()}, shared 2-core machine (loaded)\n")
    print("| from -> to | hpacs MB/s | pydicom MB/s | hpacs/pydicom | size ratio |")
    print("|---|---|---|---|---|")
    for src, dst in rows:
        data = sources[src]
        ours = summarize([pixel_mb / t for t in timeit(partial(transcode, data, dst), args.runs)])
        theirs = summarize([pixel_mb / t for t in
                            timeit(partial(_pydicom_to, data, dst), args.runs)])
        out = transcode(data, dst).dataset
        size = len(out) if dst != ExplicitVRLittleEndian else len(data)
        print(f"| {pydicom.uid.UID(src).name} -> {pydicom.uid.UID(dst).name} "
              f"| {fmt_summary(ours, 1)} | {fmt_summary(theirs, 1)} "
              f"| {fmt_ratio(ratio(ours.median, theirs.median))} "
              f"| {len(raw) / size:.2f} |")


if __name__ == "__main__":
    main()
