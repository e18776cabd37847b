"""Load generators, each in its own process: simulated modalities (C-STORE), viewers (HTTP) and
query clients (C-FIND and QIDO-RS).

A modality is one association of our asyncio storage SCU (``hpacs.net.storage_scu``, the
same one ``hpacs send`` and C-MOVE use) that times every C-STORE from the first byte of the
request to its response: dcmtk ``storescu`` cannot give per-request latency. A viewer is an
aiohttp client that opens studies the way OHIF does (QIDO study search, series list, series
metadata, then the frames of a series with a few parallel requests) and times each step. A
query client sends each query shape's queries one at a time, over C-FIND
(``benchmarks.discard_receiver.FindSCU``: counts the pending responses without decoding them)
and then over QIDO-RS (aiohttp, keep-alive), and reports its own CPU per shape and protocol.

Workers are ``spawn``ed processes (no inherited loop or threads); each associates or connects,
reports ready, waits for the common start signal, runs, and returns its records and its own
CPU time (``getrusage``), so the report shows whether the load generator was the bottleneck.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import os
import queue as queue_mod
import random
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.dicomweb import FRAMES, fetch
from benchmarks.stats import rusage_cpu


@dataclass
class WorkerResult:
    kind: str
    index: int
    ok: bool
    error: str = ""
    cpu_s: float = 0.0
    #: store: (end wall time, latency ms, bytes, status); viewer: one dict per session
    records: list = field(default_factory=list)
    #: number of items the worker had but did not send (duration ended first)
    unsent: int = 0


# ------------------------------------------------------------------------------ modalities
async def _store_run(spec: dict, ready, start) -> WorkerResult:
    from hpacs.dicom.part10 import read_file_meta
    from hpacs.dimse.retrieve import choose_context
    from hpacs.net.storage_scu import (
        StorageSCU,
        StoredInstance,
        open_instance,
        storage_contexts,
    )

    res = WorkerResult("store", spec["index"], ok=False)
    items = []
    for p in spec["files"]:
        meta = read_file_meta(Path(p))
        items.append((StoredInstance(meta.sop_class_uid, meta.sop_instance_uid,
                                     meta.transfer_syntax_uid, Path(p)), os.path.getsize(p)))
    scu = StorageSCU(spec["host"], spec["port"], called_ae=spec["called_ae"],
                     calling_ae=f"MOD{spec['index']:03d}",
                     contexts=storage_contexts([it for it, _ in items]), timeout=60)
    await scu.connect()
    ready.put(spec["index"])
    spec["ready_sent"] = True
    await asyncio.get_running_loop().run_in_executor(None, start.wait)
    cpu0 = rusage_cpu()
    t_start = time.time()
    rate = spec.get("rate") or 0.0
    duration = spec.get("duration") or 0.0
    try:
        for k, (item, size) in enumerate(items):
            now = time.time()
            if duration and now - t_start >= duration:
                res.unsent = len(items) - k
                break
            if rate > 0:  # open loop: instance k is due at k / rate
                due = t_start + k / rate
                if due > now:
                    await asyncio.sleep(due - now)
            choice = choose_context(scu.accepted_contexts, item.sop_class_uid,
                                    item.transfer_syntax_uid)
            if choice is None:
                res.records.append((time.time(), 0.0, size, 0xA900))
                continue
            t0 = time.perf_counter()
            opened = await open_instance(item, choice[1])
            try:
                status = await scu.store(item, choice[0], opened)
            finally:
                opened.close()
            res.records.append((time.time(), (time.perf_counter() - t0) * 1000, size, status))
        res.ok = True
    finally:
        res.cpu_s = rusage_cpu() - cpu0
        await scu.release()
    return res


# ------------------------------------------------------------------------------ viewers
DICOM_JSON = "application/dicom+json"


async def open_series(session, base: str, study: dict, parallel: int) -> dict:
    """One viewer session on ``study`` (dict: patient, study, series -> [sop...]).

    Steps timed like OHIF's: QIDO study search by patient, the study's series, the first
    series' metadata, its first frame (``series_open`` = series list to first frame: what the
    radiologist waits for), then every frame of that series with ``parallel`` requests."""
    t = {}
    t0 = time.perf_counter()
    await fetch(session, f"{base}/studies?PatientID={study['patient']}", DICOM_JSON)
    t1 = time.perf_counter()
    await fetch(session, f"{base}/studies/{study['study']}/series", DICOM_JSON)
    series_uid, sops = next(iter(study["series"].items()))
    t2 = time.perf_counter()
    await fetch(session, f"{base}/studies/{study['study']}/series/{series_uid}/metadata",
               DICOM_JSON)
    t3 = time.perf_counter()
    url = f"{base}/studies/{study['study']}/series/{series_uid}/instances/{{}}/frames/1"
    nbytes = await fetch(session, url.format(sops[0]), FRAMES)
    t4 = time.perf_counter()
    rest = list(sops[1:])

    async def worker() -> int:
        n = 0
        while rest:
            n += await fetch(session, url.format(rest.pop()), FRAMES)
        return n

    nbytes += sum(await asyncio.gather(*(worker() for _ in range(max(1, parallel)))))
    t5 = time.perf_counter()
    t.update(qido_ms=(t1 - t0) * 1000, series_ms=(t2 - t1) * 1000,
             metadata_ms=(t3 - t2) * 1000, first_frame_ms=(t4 - t3) * 1000,
             series_open_ms=(t4 - t1) * 1000, series_load_ms=(t5 - t1) * 1000,
             frames=len(sops), bytes=nbytes, end=time.time())
    return t


async def _viewer_run(spec: dict, ready, start) -> WorkerResult:
    import aiohttp

    res = WorkerResult("viewer", spec["index"], ok=False)
    rng = random.Random(f"viewer:{spec['index']}")
    studies = spec["studies"]
    connector = aiohttp.TCPConnector(limit=spec.get("parallel", 4))
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                     headers={"Accept-Encoding": "identity"}) as s:
        ready.put(spec["index"])
        spec["ready_sent"] = True
        await asyncio.get_running_loop().run_in_executor(None, start.wait)
        cpu0 = rusage_cpu()
        t_start = time.time()
        try:
            for k in range(spec.get("sessions") or 1 << 30):
                if spec.get("duration") and time.time() - t_start >= spec["duration"]:
                    break
                if spec.get("think_s") and k:
                    await asyncio.sleep(spec["think_s"])
                res.records.append(await open_series(s, spec["base"], rng.choice(studies),
                                                     spec.get("parallel", 4)))
            res.ok = True
        finally:
            res.cpu_s = rusage_cpu() - cpu0
    return res


# ------------------------------------------------------------------------------ queries
#: QIDO return keys beyond the defaults, so both protocols return the same attributes.
INCLUDE = "ModalitiesInStudy,NumberOfStudyRelatedSeries,NumberOfStudyRelatedInstances"


def qido_params(keys: dict[str, str]) -> str:
    params = {k: v.replace("\\", ",") for k, v in keys.items()}
    params["includefield"] = INCLUDE
    return urllib.parse.urlencode(params)


async def qido_times(session, base: str, queries: list[dict[str, str]]
                     ) -> tuple[list[float], list[int]]:
    """Seconds and matches of each QIDO-RS study search, sequentially."""
    times, counts = [], []
    for q in queries:
        t0 = time.perf_counter()
        async with session.get(f"{base}/studies?{qido_params(q)}",
                               headers={"Accept": DICOM_JSON}) as r:
            body = await r.read()
            if r.status not in (200, 204):
                raise RuntimeError(f"QIDO {q}: HTTP {r.status}: {body[:200]!r}")
        times.append(time.perf_counter() - t0)
        counts.append(body.count(b'"0020000D"'))  # one StudyInstanceUID per match
    return times, counts


async def _query_run(spec: dict, ready, start) -> WorkerResult:
    """spec: host, port, called_ae, calling_ae, base (DICOMweb root), warmup, timeout, ``shapes``:
    {shape: [(keys, C-FIND identifier bytes), ...]}. One record per shape.

    Each shape's C-FINDs get an association of their own (set up before the clock starts):
    while the QIDO queries run, a DIMSE association would sit idle for minutes against a slow
    server, and servers close idle associations (Orthanc after 30 s)."""
    import aiohttp

    from benchmarks.discard_receiver import FindSCU

    res = WorkerResult("query", spec["index"], ok=False)
    warm, timeout = spec.get("warmup", 5), spec.get("timeout", 600.0)
    async with aiohttp.ClientSession(auto_decompress=False,
                                     headers={"Accept-Encoding": "identity"}) as s:
        ready.put(spec["index"])
        spec["ready_sent"] = True
        await asyncio.get_running_loop().run_in_executor(None, start.wait)
        cpu0 = rusage_cpu()
        try:
            for shape, queries in spec["shapes"].items():
                keys = [k for k, _ in queries]
                idents = [i for _, i in queries]
                scu = await FindSCU.connect(spec["host"], spec["port"], spec["called_ae"],
                                            calling_ae=spec.get("calling_ae", "BENCH"))
                try:
                    await scu.timed(idents[:warm], timeout)  # untimed
                    c0 = rusage_cpu()
                    t_find, n_find = await scu.timed(idents, timeout)
                    c1 = rusage_cpu()
                finally:
                    await scu.release()
                await qido_times(s, spec["base"], keys[:warm])  # untimed
                c2 = rusage_cpu()
                t_qido, n_qido = await qido_times(s, spec["base"], keys)
                res.records.append({
                    "shape": shape, "c_find_s": t_find, "c_find_matches": n_find,
                    "c_find_cpu_s": c1 - c0, "qido_s": t_qido, "qido_matches": n_qido,
                    "qido_cpu_s": rusage_cpu() - c2})
            res.ok = True
        finally:
            res.cpu_s = rusage_cpu() - cpu0
    return res


# ------------------------------------------------------------------------------ driver
_RUNS = {"store": _store_run, "viewer": _viewer_run, "query": _query_run}


def _worker_main(kind: str, spec: dict, ready, start, results) -> None:
    """A spawned worker's entry: run ``kind`` and put its result (or its failure, which the
    parent reports and fails the run with) on ``results``."""
    if kind == "query":
        with contextlib.suppress(ImportError):
            import uvloop

            uvloop.install()  # the client's own cost per response is what it reports
    try:
        res = asyncio.run(_RUNS[kind](spec, ready, start))
    except BaseException as exc:
        res = WorkerResult(kind, spec["index"], ok=False, error=f"{type(exc).__name__}: {exc}")
        if not spec.get("ready_sent"):
            ready.put(spec["index"])
    results.put(res)


@dataclass
class LoadRun:
    """Every worker's result, and the wall time from the start signal to the last one done."""

    results: list[WorkerResult]
    wall_s: float
    t_start: float

    @property
    def client_cpu_s(self) -> float:
        return sum(r.cpu_s for r in self.results)

    @property
    def errors(self) -> list[str]:
        return [f"{r.kind} {r.index}: {r.error}" for r in self.results if not r.ok]

    def records(self, kind: str) -> list:
        return [rec for r in self.results if r.kind == kind for rec in r.records]


class Load:
    """Start workers (``add``), then ``run()``: all start together once every one is ready."""

    def __init__(self, timeout: float = 600.0) -> None:
        self.ctx = mp.get_context("spawn")
        self.ready = self.ctx.Queue()
        self.results = self.ctx.Queue()
        self.start = self.ctx.Event()
        self.procs: list = []
        self.timeout = timeout

    def add(self, kind: str, spec: dict) -> None:
        p = self.ctx.Process(target=_worker_main, args=(kind, spec, self.ready, self.start,
                                                        self.results), daemon=True)
        self.procs.append(p)

    def run(self, poll=None, on_start=None) -> LoadRun:
        """Start everything, wait for all results; ``on_start()`` is called just before the
        start signal (a measurement window opens), ``poll()`` about once a second meanwhile
        (progress bars)."""
        for p in self.procs:
            p.start()
        try:
            for _ in self.procs:
                self.ready.get(timeout=120)
            if on_start is not None:
                on_start()
            t_start = time.time()
            t0 = time.perf_counter()
            self.start.set()
            out: list[WorkerResult] = []
            deadline = time.monotonic() + self.timeout
            while len(out) < len(self.procs):
                if time.monotonic() > deadline:
                    out.append(WorkerResult("?", -1, ok=False, error="timed out"))
                    break
                with contextlib.suppress(queue_mod.Empty):
                    out.append(self.results.get(timeout=1.0))
                if poll is not None:
                    poll()
            wall = time.perf_counter() - t0
        finally:
            for p in self.procs:
                p.join(timeout=10)
                if p.is_alive():
                    p.kill()
                    p.join(5)
        return LoadRun(out, wall, t_start)
