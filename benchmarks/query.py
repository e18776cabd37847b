"""C-FIND latency at growing index sizes, hpacs beside Orthanc (issue 3's query benchmark).

``python -m benchmarks.query --sizes 10000,100000,1000000 --runs 2 --queries 200``

Method (Orthanc's: fill, measure, fill more): one hpacs data directory is filled with synthetic
index records (``benchmarks.fill``: no DICOM files) up to each size in turn. At each size:

1. the query engine is timed in-process (``QueryEngine.pages`` consumed to the end, plus
   ``Query.build``): the engine's own cost;
2. a real ``hpacs serve`` is started on the data directory and the same queries are sent by
   :class:`FindClient` (``benchmarks.discard_receiver.FindSCU``: hpacs's upper layer, counts
   responses without decoding them) over one association, sequentially (TCP_NODELAY on the
   client socket too): the time from the request to the final response, every pending
   received. The difference is the DIMSE/network cost; the client's own CPU per query is
   reported beside it.

Orthanc (Debian package) is filled through its REST API (``POST /instances`` of small
synthetic Part 10 files without pixel data, generated from the same records as hpacs's first
``--orthanc-instances`` instances, i.e. the same patients, studies and values) and receives the
same C-FIND queries, from the same client, as hpacs at that size.

Query shapes, all Study Root at STUDY level with the same return keys: patient ID (exact),
patient name prefix (first three letters of a patient's family name + ``*``), study date range
(one calendar month), ModalitiesInStudy + study date range (a month), accession number, a list
of 10 study UIDs. Values are drawn (seeded) from the studies present at that size. Each run is
one pass over ``--queries`` queries per shape after an untimed warm-up pass of 20; the table gives
the median over runs of each run's median and p99 (min-max over runs).
"""

from __future__ import annotations

import argparse
import asyncio
import calendar
import contextlib
import datetime as dt
import itertools
import json
import math
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from io import BytesIO
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from benchmarks import fill as fill_mod
from benchmarks import peers as peers_mod
from benchmarks.discard_receiver import FindSCU, identifier
from benchmarks.ingest import machine_info
from benchmarks.stats import summarize
from hpacs.index.query import Query, QueryEngine

REPO = Path(__file__).resolve().parent.parent
DEFAULT_WORKDIR = REPO / "benchmarks" / "work"
DEFAULT_OUT = REPO / "benchmarks" / "reports"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"

SHAPES = ("patient_id", "name_prefix", "date_month", "modality_date", "accession", "uid_list")
RETURN_KEYS = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
    "StudyInstanceUID", "AccessionNumber", "StudyDescription", "ModalitiesInStudy",
    "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
)  # fmt: skip
TARGET_P99_MS = 20.0
TARGET_GROWTH = 1.5


# ------------------------------------------------------------------------------------ queries
def _month(rng: random.Random) -> str:
    day = fill_mod.EPOCH + dt.timedelta(days=rng.randrange(fill_mod.DAYS))
    last = calendar.monthrange(day.year, day.month)[1]
    return f"{day.year:04d}{day.month:02d}01-{day.year:04d}{day.month:02d}{last:02d}"


def make_queries(
    shape: str, n_studies: int, count: int, seed: int = 11
) -> list[dict[str, str]]:
    """``count`` matching-key dicts (keyword -> value) of ``shape``, drawn from studies
    ``0..n_studies-1`` of the fill (the return keys are added by the callers)."""
    rng = random.Random(f"{seed}:{shape}:{n_studies}")
    out = []
    for _ in range(count):
        i = rng.randrange(n_studies)
        if shape == "patient_id":
            q = {"PatientID": fill_mod.make_patient(fill_mod.patient_of(i)).patient_id}
        elif shape == "name_prefix":
            name = fill_mod.make_patient(fill_mod.patient_of(i)).attrs["PatientName"]
            q = {"PatientName": name.split("^", 1)[0][:3] + "*"}
        elif shape == "date_month":
            q = {"StudyDate": _month(rng)}
        elif shape == "modality_date":
            q = {"ModalitiesInStudy": rng.choice(("CT", "MR", "US", "DX", "CR")),
                 "StudyDate": _month(rng)}
        elif shape == "accession":
            q = {"AccessionNumber": fill_mod.accession(i)}
        elif shape == "uid_list":
            q = {"StudyInstanceUID": "\\".join(
                fill_mod.study_uid(rng.randrange(n_studies)) for _ in range(10))}
        else:
            raise ValueError(shape)
        out.append(q)
    return out


def _full(keys: dict[str, str]) -> dict[str, str]:
    return {**dict.fromkeys(RETURN_KEYS, ""), **keys}


def to_dataset(keys: dict[str, str]) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.QueryRetrieveLevel = "STUDY"
    for kw, v in _full(keys).items():
        setattr(ds, kw, v)
    return ds


# ------------------------------------------------------------------------------------ timing
def p99(values: list[float]) -> float:
    """Nearest-rank 99th percentile."""
    s = sorted(values)
    return s[max(0, math.ceil(0.99 * len(s)) - 1)]


def time_engine(
    engine: QueryEngine, queries: list[dict[str, str]]
) -> tuple[list[float], list[int]]:
    """Seconds and matches per query, in-process."""
    times, counts = [], []
    for q in queries:
        t0 = time.perf_counter()
        query = Query.build("STUDY", _full(q))
        n = sum(len(page) for page in engine.pages(query))
        times.append(time.perf_counter() - t0)
        counts.append(n)
    return times, counts


class FindClient:
    """Sequential Study Root C-FINDs on one association of :class:`FindSCU` (hpacs's sans-IO
    upper layer on a private uvloop event loop, TCP_NODELAY on), with a blocking API.

    The client counts pending responses and never decodes an identifier: a few µs per match,
    where pynetdicom spent ~1 ms and dcmtk findscu ~26 µs, so the times are the server's.
    ``cpu_s`` accumulates the client's own CPU (this thread) over :meth:`time` calls."""

    def __init__(self, host: str, port: int, called_ae: str, timeout: float = 600.0) -> None:
        try:
            import uvloop

            self.loop = uvloop.new_event_loop()
        except ImportError:
            self.loop = asyncio.new_event_loop()
        self.timeout = timeout
        self.cpu_s = 0.0
        self.queries = 0
        try:
            self.scu = self.loop.run_until_complete(FindSCU.connect(host, port, called_ae,
                                                                    calling_ae="BENCH"))
        except Exception as exc:
            self.loop.close()
            raise peers_mod.PeerError(f"C-FIND association to {called_ae}@{host}:{port} "
                                      f"failed: {exc}") from exc

    def time(self, identifiers: list[bytes]) -> tuple[list[float], list[int]]:
        """Seconds and matches of each C-FIND, in order (one event-loop run for them all)."""
        cpu0 = time.thread_time()
        try:
            return self.loop.run_until_complete(self.scu.timed(identifiers, self.timeout))
        finally:
            self.cpu_s += time.thread_time() - cpu0
            self.queries += len(identifiers)

    @property
    def cpu_ms_per_query(self) -> float:
        return self.cpu_s * 1000 / max(1, self.queries)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.loop.run_until_complete(self.scu.release())
        self.loop.close()


def encode_query(keys: dict[str, str]) -> bytes:
    """The C-FIND identifier of ``keys`` (with the return keys), as :class:`FindClient` sends it."""
    return identifier(to_dataset(keys))


def time_dimse(client: FindClient, queries: list[dict[str, str]]) -> tuple[list[float], list[int]]:
    return client.time([encode_query(q) for q in queries])


def _findscu_seconds(peer: peers_mod.Peer, keys: dict[str, str], repeat: int) -> float:
    cmd = [peers_mod.dcmtk("findscu"), "-S", "-q", "--repeat", str(repeat), "-aet", "BENCH",
           "-aec", peer.ae_title, "-k", "QueryRetrieveLevel=STUDY",
           "-k", "SpecificCharacterSet=ISO_IR 192"]
    for kw, v in _full(keys).items():
        cmd += ["-k", f"{kw}={v}" if v else kw]
    cmd += [peer.host, str(peer.port)]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=peers_mod.nodelay_env(), capture_output=True, timeout=600)
    seconds = time.perf_counter() - t0
    if r.returncode != 0:
        raise peers_mod.PeerError(f"findscu failed: {r.stderr.decode(errors='replace')[-500:]}")
    return seconds


def time_findscu(peer: peers_mod.Peer, keys: dict[str, str], repeat: int) -> float:
    """Mean ms per query of dcmtk ``findscu -S --repeat N`` (one process, one association,
    the same query N times), its start-up and association removed by subtracting a
    ``--repeat 1`` run: a DIMSE figure from dcmtk's client (~26 µs of its CPU per match)."""
    one = min(_findscu_seconds(peer, keys, 1) for _ in range(3))
    many = _findscu_seconds(peer, keys, repeat + 1)
    return max(0.0, many - one) / repeat * 1000


def findscu_floor(peer: peers_mod.Peer, query_sets: dict[str, list[dict[str, str]]],
                  repeat: int) -> dict[str, float]:
    return {shape: time_findscu(peer, qs[0], repeat) for shape, qs in query_sets.items()}


def measure(
    runner: Callable[[list[dict[str, str]]], tuple[list[float], list[int]]],
    query_sets: dict[str, list[dict[str, str]]],
    runs: int,
) -> dict[str, dict]:
    """Per shape: the runs' medians and p99s (ms) and the matches per query."""
    out: dict[str, dict] = {}
    for shape, queries in query_sets.items():
        runner(queries[:20])  # warm-up, untimed
        medians, p99s, counts = [], [], []
        for _ in range(runs):
            times, counts = runner(queries)
            ms = [t * 1000 for t in times]
            medians.append(summarize(ms).median)
            p99s.append(p99(ms))
        out[shape] = {
            "median_ms": summarize(medians).to_json(),
            "p99_ms": summarize(p99s).to_json(),
            "matches_median": summarize(counts).median,
            "matches_max": max(counts),
            "queries": len(queries),
            "runs": runs,
        }
    return out


# ------------------------------------------------------------------------------------ Orthanc
def part10(rec) -> bytes:
    """A small Part 10 file (no pixel data) with the record's attributes."""
    ds = Dataset()
    charset = rec.instance.get("SpecificCharacterSet")
    if charset:
        ds.SpecificCharacterSet = charset
    for attrs in (rec.patient, rec.study, rec.series, rec.instance):
        for kw, v in attrs.items():
            if kw != "SpecificCharacterSet":
                setattr(ds, kw, v)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = rec.sop_class_uid
    meta.MediaStorageSOPInstanceUID = rec.sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _study_blobs(study: int) -> list[bytes]:
    return [part10(r) for r in fill_mod.study_records(study)]


def orthanc_fill(peer: peers_mod.Peer, instances: int, threads: int = 2,
                 first_study: int = 0) -> dict:
    """POST the first studies of the fill to Orthanc until it holds ``instances``
    (``first_study``: the studies before it are there already: fill more).

    pydicom writes the Part 10 files (~1 ms each) in a worker process while the threads
    upload, so the fill takes as long as Orthanc's ingest, not the two one after the other."""
    if first_study:
        instances -= int(peers_mod.orthanc_rest(peer, "/statistics")["CountInstances"])
    studies: list[int] = []
    counted, study = 0, first_study
    while counted < instances:
        counted += len(fill_mod.study_records(study))
        studies.append(study)
        study += 1
    url = f"http://{peers_mod.LOOPBACK}:{peer.http_port}/instances"
    lock = threading.Lock()
    errors: list[str] = []
    t0 = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        it = itertools.chain.from_iterable(pool.imap(_study_blobs, studies, chunksize=8))

        def worker() -> None:
            while not errors:
                with lock:
                    blob = next(it, None)
                if blob is None:
                    return
                req = urllib.request.Request(url, data=blob, method="POST",
                                             headers={"Content-Type": "application/dicom"})
                try:
                    with urllib.request.urlopen(req, timeout=60) as r:
                        r.read()
                except OSError as exc:
                    errors.append(str(exc))
                    return

        ts = [threading.Thread(target=worker) for _ in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    seconds = time.perf_counter() - t0
    if errors:
        raise peers_mod.PeerError(f"Orthanc upload failed: {errors[0]}")
    stats = peers_mod.orthanc_rest(peer, "/statistics")
    return {"instances": int(stats["CountInstances"]), "studies": int(stats["CountStudies"]),
            "patients": int(stats["CountPatients"]), "study_count_used": study,
            "seconds": seconds, "instances_per_s": counted / seconds}


# ------------------------------------------------------------------------------------ report
def _cell(d: dict) -> str:
    if d["n"] == 1:
        return f"{d['median']:.2f}"
    return f"{d['median']:.2f} ({d['min']:.2f}-{d['max']:.2f})"


def evaluate(report: dict) -> dict:
    """Targets at the largest hpacs size (p99 over DIMSE) and growth smallest -> largest."""
    sizes = report["hpacs"]
    if not sizes:
        return {}
    small, large = sizes[0], sizes[-1]
    out = {"largest_size": large["instances"], "smallest_size": small["instances"],
           "shapes": {}}
    for shape in SHAPES:
        row = {}
        for mode in ("dimse", "engine"):
            p_large = large[mode][shape]["p99_ms"]["median"]
            p_small = small[mode][shape]["p99_ms"]["median"]
            m_large = large[mode][shape]["median_ms"]["median"]
            m_small = small[mode][shape]["median_ms"]["median"]
            row[mode] = {
                "p99_ms": p_large,
                "p99_ok": p_large <= TARGET_P99_MS,
                "growth_p99": p_large / p_small if p_small else None,
                "growth_median": m_large / m_small if m_small else None,
                "growth_ok": p_small > 0 and p_large / p_small <= TARGET_GROWTH,
            }
        out["shapes"][shape] = row
    return out


def markdown(report: dict) -> str:
    lines = [f"# C-FIND latency ({report['started']})", ""]
    m = report["machine"]
    lines += [f"Machine: {m['cpu']}, {m['cpus']} CPUs, {m['memory']}, kernel {m['kernel']}, "
              f"Python {m['python']}, {m['filesystem']}; {m['orthanc']}.", "",
              f"Command: `{report['command']}`; hpacs at {report.get('hpacs_commit', '?')}.",
              ""]
    lines += ["## Fill (synthetic index records, no files)", "",
              "| size | instances | studies | patients | added | s | records/s |",
              "|---:|---:|---:|---:|---:|---:|---:|"]
    for f in report["fills"]:
        lines.append(f"| {f['target']} | {f['instances']} | {f['studies']} | {f['patients']} | "
                     f"{f['added']} | {f['seconds']:.1f} | {f['records_per_s']:.0f} |")
    if report.get("orthanc_fill"):
        o = report["orthanc_fill"]
        lines += ["", f"Orthanc: {o['instances']} instances ({o['studies']} studies, "
                  f"{o['patients']} patients) uploaded by REST in {o['seconds']:.1f} s "
                  f"({o['instances_per_s']:.0f}/s)."]
    lines += ["", "## Latency, ms: median over runs of each run's median / p99 (min-max)", "",
              "| peer | instances | shape | matches (median, max) | DIMSE median | DIMSE p99 | "
              "engine median | engine p99 | findscu mean |",
              "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    rows = [("hpacs", s) for s in report["hpacs"]]
    if report.get("orthanc"):
        rows.append(("orthanc", report["orthanc"]))
    for peer, s in rows:
        for shape in SHAPES:
            d = s["dimse"][shape]
            e = s.get("engine", {}).get(shape)
            floor = s.get("findscu_ms")
            lines.append(
                f"| {peer} | {s['instances']} | {shape} | {d['matches_median']:.0f}, "
                f"{d['matches_max']} | {_cell(d['median_ms'])} | {_cell(d['p99_ms'])} | "
                f"{_cell(e['median_ms']) if e else '-'} | {_cell(e['p99_ms']) if e else '-'} | "
                f"{f'{floor[shape]:.2f}' if floor else '-'} |")
    ev = report.get("targets")
    if ev:
        lines += ["", f"## Targets at {ev['largest_size']} instances (p99 <= {TARGET_P99_MS:.0f} "
                  f"ms; p99 growth from {ev['smallest_size']} <= {TARGET_GROWTH}x)", "",
                  "| shape | DIMSE p99 ms | met | DIMSE p99 growth | met | engine p99 ms | "
                  "engine p99 growth |", "|---|---:|---|---:|---|---:|---:|"]
        for shape, r in ev["shapes"].items():
            d, e = r["dimse"], r["engine"]
            lines.append(
                f"| {shape} | {d['p99_ms']:.2f} | {'yes' if d['p99_ok'] else 'NO'} | "
                f"{d['growth_p99']:.2f}x | {'yes' if d['growth_ok'] else 'NO'} | "
                f"{e['p99_ms']:.2f} | {e['growth_p99']:.2f}x |")
    cpu = [(peer, s["instances"], s.get("client_cpu_ms_per_query")) for peer, s in rows]
    lines += ["", "C-FIND client's own CPU per query, ms (`FindSCU`, one thread): "
              + ", ".join(f"{p} {n}: {c:.3f}" for p, n, c in cpu if c is not None)]
    if report.get("notes"):
        lines += ["", *[f"- {n}" for n in report["notes"]]]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------ main
def hpacs_commit() -> str:
    """The commit of the tree under test (a ``git archive`` snapshot carries a COMMIT file)."""
    marker = REPO / "COMMIT"
    if marker.exists():
        return marker.read_text().strip() + " (snapshot)"
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "hpacs"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"
    return head + (" + uncommitted hpacs/ changes" if dirty else "")


def run(args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="query-", dir=args.workdir))
    report: dict = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": "python -m benchmarks.query " + " ".join(sys.argv[1:]),
        "machine": machine_info(),
        "hpacs_commit": hpacs_commit(),
        "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "fills": [], "hpacs": [], "orthanc": None, "orthanc_fill": None, "notes": [],
    }
    fill_started = time.perf_counter()
    data = work / "hpacs-data"
    try:
        for size in args.sizes:
            db = fill_mod.open_index(data)
            try:
                spent = time.perf_counter() - fill_started
                budget = max(1.0, args.fill_budget - spent)
                res = fill_mod.fill(db, size, batch=args.batch, time_budget=budget)
                entry = {"target": size, **res.to_json()}
                report["fills"].append(entry)
                print(f"fill -> {res.instances} instances ({res.studies} studies): "
                      f"{res.rate:.0f} rec/s", file=sys.stderr)
                if res.instances < size:
                    report["notes"].append(f"fill budget ({args.fill_budget:.0f} s) ran out at "
                                           f"{res.instances} instances (target {size})")
                query_sets = {s: make_queries(s, res.studies, args.queries) for s in SHAPES}
                engine = QueryEngine(db)
                eng = measure(lambda qs, engine=engine: time_engine(engine, qs), query_sets,
                              args.runs)
            finally:
                db.close()
            with peers_mod.hpacs(work) as peer:
                client = FindClient(peer.host, peer.port, peer.ae_title)
                try:
                    dim = measure(lambda qs, c=client: time_dimse(c, qs), query_sets, args.runs)
                finally:
                    client.close()
                floor = (findscu_floor(peer, query_sets, args.findscu_repeat)
                         if args.findscu_repeat else None)
            report["hpacs"].append({"instances": res.instances, "studies": res.studies,
                                    "engine": eng, "dimse": dim, "findscu_ms": floor,
                                    "client_cpu_ms_per_query": client.cpu_ms_per_query})
            print(json.dumps({s: (eng[s]["p99_ms"]["median"], dim[s]["p99_ms"]["median"],
                                  dim[s]["matches_median"]) for s in SHAPES}), file=sys.stderr)
            if res.instances < size:
                break
        if args.orthanc_instances:
            # the benchmark's client AE must be known to Orthanc to be allowed C-FIND
            modalities = {"bench": ["BENCH", peers_mod.LOOPBACK, 104]}
            with peers_mod.orthanc(work / "orthanc",
                                   extra_config={"DicomModalities": modalities}) as peer:
                of = orthanc_fill(peer, args.orthanc_instances)
                report["orthanc_fill"] = of
                query_sets = {s: make_queries(s, of["study_count_used"], args.queries)
                              for s in SHAPES}
                client = FindClient(peer.host, peer.port, peer.ae_title)
                try:
                    dim = measure(lambda qs, c=client: time_dimse(c, qs), query_sets, args.runs)
                finally:
                    client.close()
                floor = (findscu_floor(peer, query_sets, args.findscu_repeat)
                         if args.findscu_repeat else None)
                report["orthanc"] = {"instances": of["instances"], "studies": of["studies"],
                                     "dimse": dim, "findscu_ms": floor,
                                     "client_cpu_ms_per_query": client.cpu_ms_per_query}
                same = [h for h in report["hpacs"] if h["studies"] == of["study_count_used"]]
                if same:
                    report["notes"].append(
                        f"Orthanc holds the same {of['study_count_used']} studies as hpacs at "
                        f"{same[0]['instances']} instances and got the same queries.")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    report["targets"] = evaluate(report)
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10000,100000,1000000",
                    type=lambda s: [int(x) for x in s.split(",") if x])
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--queries", type=int, default=200, help="per shape and run")
    ap.add_argument("--batch", type=int, default=5000, help="records per fill transaction")
    ap.add_argument("--fill-budget", type=float, default=300.0, help="seconds for all fills")
    ap.add_argument("--orthanc-instances", type=int, default=10000, help="0: no Orthanc")
    ap.add_argument("--findscu-repeat", type=int, default=0,
                    help="also time dcmtk findscu --repeat N with each shape's first query")
    ap.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    report = run(args)
    write_stamped(args.out, "query", report, markdown(report))
    return 0


def write_stamped(out: Path, prefix: str, report: dict, md: str) -> None:
    """OUT/PREFIX-DATE-TIME.{json,md}; the Markdown is printed too."""
    base = out / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"
    base.with_suffix(".json").write_text(json.dumps(report, indent=1, default=str))
    base.with_suffix(".md").write_text(md)
    print(md)
    print(f"wrote {base}.json and {base}.md", file=sys.stderr)


if __name__ == "__main__":
    os.environ.setdefault("TCP_NODELAY", "1")
    sys.exit(main())
