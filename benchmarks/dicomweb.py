"""DICOMweb side by side: hpacs and Orthanc + its DICOMweb plugin on the same series (issue 4).

``python -m benchmarks.dicomweb --instances 100 --rounds 5``

Both servers get the same 100-slice CT series (512x512, 16-bit, Explicit VR Little Endian,
~525 KB a slice) through dcmtk ``storescu``. hpacs's metadata is computed at ingest; the run
waits until its ``hpacs_metadata_warmed`` gauge says all of it is done (that is part of ingest,
not of the request). Then, in rounds that alternate the servers, one HTTP client in this process
(aiohttp, keep-alive, ``Accept-Encoding: identity``) measures:

- QIDO-RS: ``/studies?PatientID=...`` and ``/studies/{study}/series`` latency (sequential);
- series ``/metadata`` latency (sequential, whole body read; the first request is reported apart);
- WADO-RS series retrieval, MB/s of the multipart body (as stored: Explicit VR LE);
- frames: ``/instances/{sop}/frames/1`` over every instance by ``--clients`` concurrent
  requests, frames/s.

Each cell is the median over rounds of each round's median (latency) or total (throughput),
with the min-max over rounds. The client's own CPU time is reported so a saturated client shows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import statistics
import sys
import time
import urllib.request
from pathlib import Path

import aiohttp
import pydicom

from benchmarks import corpus as corpus_mod
from benchmarks import peers as peers_mod
from benchmarks.ingest import drive, machine_info, warm
from benchmarks.stats import fmt_ratio, ratio, rusage_cpu, summarize

REPO = Path(__file__).resolve().parent.parent
DEFAULT_WORKDIR = REPO / "benchmarks" / "work"
ORTHANC_DICOMWEB = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
DICOM_ANY = 'multipart/related; type="application/dicom"'
FRAMES = 'multipart/related; type="application/octet-stream"'
SEED = 7


async def fetch(session: aiohttp.ClientSession, url: str, accept: str) -> int:
    """GET ``url`` and read the whole body in 1 MiB chunks; its length (errors raise)."""
    async with session.get(url, headers={"Accept": accept}) as r:
        if r.status != 200:
            raise RuntimeError(f"{url}: HTTP {r.status}: {(await r.text())[:200]}")
        n = 0
        async for chunk in r.content.iter_chunked(1 << 20):
            n += len(chunk)
        return n


async def _latencies(session, url: str, accept: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        await fetch(session, url, accept)
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def _frames_per_second(session, urls: list[str], clients: int) -> float:
    queue = list(urls)

    async def worker() -> None:
        while queue:
            await fetch(session, queue.pop(), FRAMES)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return len(urls) / (time.perf_counter() - t0)


async def measure(base: str, uids: dict, sops: list[str], *, requests: int, clients: int,
                  first: bool) -> dict:
    study, series, pid = uids["study"], uids["series"], uids["patient"]
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                     headers={"Accept-Encoding": "identity"}) as s:
        meta_url = f"{base}/studies/{study}/series/{series}/metadata"
        out: dict = {}
        if first:
            out["metadata_first_ms"] = (await _latencies(s, meta_url, "application/dicom+json",
                                                         1))[0]
        out["qido_studies_ms"] = statistics.median(await _latencies(
            s, f"{base}/studies?PatientID={pid}", "application/dicom+json", requests))
        out["qido_series_ms"] = statistics.median(await _latencies(
            s, f"{base}/studies/{study}/series", "application/dicom+json", requests))
        out["metadata_ms"] = statistics.median(await _latencies(
            s, meta_url, "application/dicom+json", requests))
        t0 = time.perf_counter()
        nbytes = await fetch(s, f"{base}/studies/{study}/series/{series}", DICOM_ANY)
        out["retrieve_mb_s"] = nbytes / 1e6 / (time.perf_counter() - t0)
        out["retrieve_bytes"] = nbytes
        urls = [f"{base}/studies/{study}/series/{series}/instances/{sop}/frames/1"
                for sop in sops]
        out["frames_per_s"] = await _frames_per_second(s, urls, clients)
    return out


def _metadata_warmed(peer: peers_mod.Peer) -> float:
    url = f"http://{peers_mod.LOOPBACK}:{peer.http_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    m = re.search(r"^hpacs_metadata_warmed (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def load(peer: peers_mod.Peer, paths: list[Path]) -> float:
    wall, _cpu, codes = drive(peer, [paths], timeout=600)
    if any(codes):
        raise RuntimeError(f"{peer.name}: storescu exit codes {codes}")
    return wall


def series_corpus(workdir: Path, instances: int) -> tuple[list[Path], dict, list[str], dict]:
    """One CT series of ``instances`` slices: (paths, UIDs, SOP UIDs in order, manifest)."""
    cfg = corpus_mod.ct_only(instances, seed=SEED, ct_slices=instances)
    cdir = workdir / f"corpus-ct-{instances}-seed{SEED}"
    manifest = corpus_mod.ensure(cfg, cdir)
    paths = corpus_mod.corpus_paths(cdir, manifest)
    warm(paths)
    datasets = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    first = datasets[0]
    assert len({d.SeriesInstanceUID for d in datasets}) == 1, "the corpus must be one series"
    uids = {"study": first.StudyInstanceUID, "series": first.SeriesInstanceUID,
            "patient": first.PatientID}
    return paths, uids, [d.SOPInstanceUID for d in datasets], manifest


def run(args: argparse.Namespace) -> dict:
    workdir = Path(args.workdir)
    paths, uids, sops, manifest = series_corpus(workdir, args.instances)
    orthanc_extra = {"Plugins": [ORTHANC_DICOMWEB],
                     "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}}
    report: dict = {"machine": machine_info(), "instances": len(paths),
                    "bytes": manifest["total_bytes"], "rounds": [], "command": args.command}
    for name in ("dicomweb-hpacs", "dicomweb-orthanc"):  # both start empty
        shutil.rmtree(workdir / name, ignore_errors=True)
    with peers_mod.hpacs(workdir / "dicomweb-hpacs") as hp, \
            peers_mod.orthanc(workdir / "dicomweb-orthanc", extra_config=orthanc_extra) as orth:
        servers = {"hpacs": hp, "orthanc": orth}
        report["versions"] = {"orthanc": orth.info.get("version")}
        for name, peer in servers.items():
            print(f"loading {len(paths)} instances into {name}: {load(peer, paths):.1f} s",
                  flush=True)
        deadline = time.monotonic() + 300
        while _metadata_warmed(hp) < len(paths):
            if time.monotonic() > deadline:
                raise RuntimeError("hpacs metadata not warmed in 300 s")
            time.sleep(0.2)
        for rnd in range(args.rounds):
            order = list(servers.items()) if rnd % 2 == 0 else list(servers.items())[::-1]
            for name, peer in order:
                base = f"http://{peers_mod.LOOPBACK}:{peer.http_port}/dicom-web"
                cpu0, srv0 = rusage_cpu(), peer.cpu_seconds()
                row = asyncio.run(measure(base, uids, sops, requests=args.requests,
                                          clients=args.clients, first=rnd < 2))
                row.update(server=name, round=rnd + 1, client_cpu_s=rusage_cpu() - cpu0,
                           server_cpu_s=peer.cpu_seconds() - srv0)
                report["rounds"].append(row)
                print(json.dumps(row), flush=True)
    report["summary"] = summarize_report(report)
    return report


METRICS = (("qido_studies_ms", "QIDO /studies?PatientID (ms)", 2, False),
           ("qido_series_ms", "QIDO /studies/{{study}}/series (ms)", 2, False),
           ("metadata_first_ms", "series /metadata, first request (ms)", 1, False),
           ("metadata_ms", "series /metadata (ms)", 2, False),
           ("retrieve_mb_s", "WADO-RS series retrieve (MB/s)", 0, True),
           ("frames_per_s", "frames/s, {clients} clients", 0, True))


def summarize_report(report: dict) -> dict:
    out: dict = {}
    for key, _label, _digits, _higher in METRICS:
        for server in ("hpacs", "orthanc"):
            values = [r[key] for r in report["rounds"] if r["server"] == server and key in r]
            if values:
                out.setdefault(key, {})[server] = summarize(values).to_json()
    return out


def markdown(report: dict, clients: int) -> str:
    lines = ["| metric | hpacs | Orthanc + DICOMweb | hpacs advantage |", "|---|---|---|---|"]
    for key, label, digits, higher in METRICS:
        cell = report["summary"].get(key)
        if not cell:
            continue
        h, o = cell.get("hpacs"), cell.get("orthanc")

        def fmt(c: dict | None, d: int = digits) -> str:
            if c is None:
                return "-"
            return f"{c['median']:.{d}f} ({c['min']:.{d}f}-{c['max']:.{d}f})"

        adv = ratio(h["median"], o["median"]) if higher else ratio(o["median"], h["median"])
        lines.append(f"| {label.format(clients=clients)} | {fmt(h)} | {fmt(o)} | "
                     f"{fmt_ratio(adv)} |")
    cpu = {s: sum(r["client_cpu_s"] for r in report["rounds"] if r["server"] == s)
           for s in ("hpacs", "orthanc")}
    lines.append("")
    lines.append(f"Client CPU over all rounds: hpacs {cpu['hpacs']:.1f} s, "
                 f"Orthanc {cpu['orthanc']:.1f} s.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--instances", type=int, default=100)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--requests", type=int, default=30, help="sequential requests per latency")
    p.add_argument("--clients", type=int, default=8, help="concurrent frame requests")
    p.add_argument("--workdir", default=str(DEFAULT_WORKDIR))
    p.add_argument("--out", help="write the JSON report here")
    args = p.parse_args(argv)
    args.command = "python -m benchmarks.dicomweb " + " ".join(argv or sys.argv[1:])
    report = run(args)
    print(markdown(report, args.clients))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
