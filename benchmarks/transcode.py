"""Transcoding throughput per codec on a real CT slice, side by side in one run (a script, not a
test):

    .venv/bin/python -m benchmarks.transcode [--runs 7] [--loop]

The slice is pydicom's ``J2K_pixelrep_mismatch.dcm`` (512x512 CT, 16 bits), first made Explicit
VR LE. Each row times ``hpacs.pixels.transcode.transcode`` (Part 10 bytes in, data set out: read,
decode, encode, write) and, for reference, pydicom's own ``Dataset.compress()`` /
``decompress()`` on a Dataset read from the same bytes (read + codec + write to bytes). MB/s of
uncompressed pixel data: median (min-max) of the runs; ratio = uncompressed / compressed size.

``--loop`` also measures what transcoding does to the server's event loop: a running
``hpacs serve`` holds 20 JPEG-LS copies of the slice; ``GET /healthz`` round trips (the same
event loop) are timed while an association C-GETs the 20 proposing Explicit VR LE only (every
instance transcoded), with ``pixels.transcode_workers`` 0 (threads) and 2 (processes).
"""

from __future__ import annotations

import argparse
import io
import platform
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pydicom
import pydicom.data
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from benchmarks.stats import fmt_ratio, fmt_summary, ratio, summarize, timeit
from hpacs.pixels.transcode import transcode

SOURCE = "J2K_pixelrep_mismatch.dcm"


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


def _probe_latencies(peer, busy: Callable[[], object] | None, seconds: float) -> list[float]:
    """GET /healthz round trips (ms; served by the same event loop as DIMSE) while ``busy``
    runs in a thread."""
    import threading
    import urllib.request

    stop = threading.Event()

    def work() -> None:
        while not stop.is_set():
            busy()

    thread = threading.Thread(target=work) if busy else None
    if thread:
        thread.start()
    out = []
    url = f"http://{peer.host}:{peer.http_port}/healthz"
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        with urllib.request.urlopen(url, timeout=30) as r:
            r.read()
        out.append((time.perf_counter() - t) * 1000)
        time.sleep(0.005)
    stop.set()
    if thread:
        thread.join()
    return sorted(out)


def loop_stall(raw: bytes, seconds: float) -> None:
    import os
    import tempfile

    from pydicom.uid import generate_uid
    from pynetdicom import AE, build_role
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet as GET

    from benchmarks import peers

    jls = pydicom.dcmread(io.BytesIO(transcode(raw, JPEGLSLossless).part10()))
    study = generate_uid()
    print("\n# Event loop while C-GET transcodes 20 JPEG-LS CT slices to Explicit VR LE")
    print(f"(GET /healthz round trips on the same loop, {seconds:.0f} s each, ms)\n")
    print("| transcode_workers | C-GET running | probes | p50 | p99 | max |")
    print("|---|---|---|---|---|---|")
    for workers in (0, 2):
        os.environ["HPACS_PIXELS__TRANSCODE_WORKERS"] = str(workers)
        with tempfile.TemporaryDirectory() as tmp, peers.hpacs(Path(tmp)) as peer:
            ae = AE(ae_title="LOAD")
            ae.add_requested_context(jls.SOPClassUID, JPEGLSLossless)
            assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title)
            for _ in range(20):
                jls.StudyInstanceUID = study
                jls.SOPInstanceUID = jls.file_meta.MediaStorageSOPInstanceUID = generate_uid()
                assert assoc.send_c_store(jls).Status == 0
            assoc.release()

            def c_get() -> None:
                ae = AE(ae_title="GETTER")
                ae.add_requested_context(GET)
                ae.add_requested_context(jls.SOPClassUID, ExplicitVRLittleEndian)
                a = ae.associate(peer.host, peer.port, ae_title=peer.ae_title,
                                 ext_neg=[build_role(jls.SOPClassUID, scp_role=True)],
                                 evt_handlers=[("EVT_C_STORE", lambda event: 0x0000)])
                ident = pydicom.Dataset()
                ident.QueryRetrieveLevel, ident.StudyInstanceUID = "STUDY", study
                for _status, _ in a.send_c_get(ident, GET):
                    pass
                a.release()

            for label, busy in (("no", None), ("yes", c_get)):
                lat = _probe_latencies(peer, busy, seconds)
                p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
                print(f"| {workers} | {label} | {len(lat)} | {lat[len(lat) // 2]:.1f} "
                      f"| {p99:.1f} | {lat[-1]:.1f} |")
    os.environ.pop("HPACS_PIXELS__TRANSCODE_WORKERS", None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--loop", action="store_true", help="also measure the server's loop")
    ap.add_argument("--loop-seconds", type=float, default=10.0)
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
    if args.loop:
        loop_stall(raw, args.loop_seconds)


if __name__ == "__main__":
    main()
