"""Scenario ``retrieve``: what readers pull out: C-GET/C-MOVE studies, DICOMweb, N viewers.

A fresh server is loaded with the corpus (our storage SCU, 2 associations; the count is
checked). Then, sequentially: every study is fetched by dcmtk ``getscu`` (C-GET) and by
``movescu`` (C-MOVE to a dcmtk ``storescp`` writing files, one association at a time; movescu
moving to its own ``--port`` takes ~1.4 s a study for either server, a client artefact), each
received file counted; then again through the fast discarding receiver
(``benchmarks.discard_receiver``: as C-GET SCU, and as movescu's destination), so that neither
dcmtk's parsing nor the client's disk is what is timed; the largest series
goes through ``benchmarks.dicomweb.measure`` (QIDO, series metadata first and warm, WADO-RS
series retrieve, frames/s); then N viewer processes at once (``--viewers`` sweep) each open
``--sessions`` series the way OHIF does (see ``loadgen.open_series``): series-open latency
(series list + metadata + first frame), whole-series load time, frames/s. All from the hot
store (no cold tier on this branch).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pydicom

from benchmarks import dicomweb as dw
from benchmarks import peers as peers_mod
from benchmarks.stats import rusage_cpu
from benchmarks.suite import common, plots, servers
from benchmarks.suite.ingest import store_load
from benchmarks.suite.loadgen import Load

MOVE_AE = "BENCHMOVE"
#: C-MOVE destination AE of the fast discarding receiver (``benchmarks.discard_receiver``).
FAST_AE = "BENCHFAST"
#: C-GET/C-MOVE results: through dcmtk (getscu; movescu to storescp writing files) and
#: through the fast receiver (discards; neither the client's disk nor dcmtk's parsing).
#: ``_w8``: the fast receiver negotiating an asynchronous operations window of 8 (PS3.7
#: D.3.3.3; as C-GET SCU it proposes to perform 8 C-STOREs at once, as destination it grants 8).
DIMSE_PARTS = ("c_get", "c_move", "c_get_fast", "c_move_fast", "c_get_fast_w8",
               "c_move_fast_w8")
#: C-MOVE destination AE of the fast receiver granting a window of 8.
FAST_W8_AE = "BENCHFASTW8"
FAST_WINDOW = 8


def catalogue(studies: list[list[Path]]) -> list[dict]:
    """Per corpus study: patient, study UID, series UID -> SOP UIDs (in order), bytes, and the
    SOP classes and transfer syntaxes in it (what a C-GET SCU must accept)."""
    out = []
    for files in studies:
        entry: dict = {"series": {}, "bytes": 0, "files": len(files), "sop_classes": [],
                       "syntaxes": []}
        for p in files:
            ds = pydicom.dcmread(p, stop_before_pixels=True)
            for key, uid in (("sop_classes", ds.SOPClassUID),
                             ("syntaxes", ds.file_meta.TransferSyntaxUID)):
                if uid not in entry[key]:
                    entry[key].append(str(uid))
            entry["patient"], entry["study"] = ds.PatientID, ds.StudyInstanceUID
            entry["series"].setdefault(ds.SeriesInstanceUID, []).append(ds.SOPInstanceUID)
            entry["bytes"] += p.stat().st_size
        out.append(entry)
    return out


def _dimse_fetch(tool: str, peer, study: dict, outdir: Path, dest=None) -> dict:
    """One study by ``tool``: dcmtk getscu (files written to ``outdir``), movescu (to the
    ``dest`` peer: dcmtk storescp writing into ``outdir``, or the fast discarding receiver,
    whose own count is checked), or ``fast-get`` (``benchmarks.discard_receiver get``: C-GET
    SCU on hpacs's upper layer that discards what it receives; its own clock and CPU, from
    connect to release, since its Python start-up is not retrieval). Wall time, files, bytes,
    and the CPU of the client side (the tool, and the destination for a move)."""
    shutil.rmtree(outdir, ignore_errors=True)
    outdir.mkdir(parents=True)
    if tool.startswith("fast-get"):
        cmd = [sys.executable, "-m", "benchmarks.discard_receiver", "get", peer.host,
               str(peer.port), "--aec", peer.ae_title, "--aet", servers.CLIENT_AE,
               "--study", study["study"], "--expect", str(study["files"])]
        if tool == "fast-get-w8":
            cmd += ["--window", str(FAST_WINDOW)]
        for uid in study["sop_classes"]:
            cmd += ["--sop-class", uid]
        for uid in study["syntaxes"]:
            cmd += ["--syntax", uid]
    else:
        cmd = [peers_mod.dcmtk(tool), "-S", "-aet", servers.CLIENT_AE, "-aec", peer.ae_title,
               "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study['study']}"]
        cmd += ["-aem", dest.ae_title] if tool == "movescu" else ["-od", str(outdir)]
        cmd += [peer.host, str(peer.port)]
    counted = _discards(dest)  # nothing to count on disk: the receiver's own tally
    before = dest.stored_count() if counted else 0
    cpu0 = rusage_cpu(children=True) + (dest.cpu_seconds() if dest else 0.0)
    t0 = time.perf_counter()
    r = common.run_checked(cmd, timeout=600)
    seconds = time.perf_counter() - t0
    cpu = rusage_cpu(children=True) + (dest.cpu_seconds() if dest else 0.0) - cpu0
    if tool.startswith("fast-get"):
        try:
            res = json.loads(r.stdout.strip().splitlines()[-1])
            seconds, cpu = res["ms"] / 1000, res["cpu_ms"] / 1000
            got, nbytes = res["received"], res["bytes"]
        except (ValueError, IndexError, KeyError):
            got, nbytes = 0, 0
    elif counted:
        got, nbytes = dest.stored_count() - before, study["bytes"]  # data sets, not files
    else:
        got = peers_mod.count_part10_files(outdir)
        nbytes = sum(p.stat().st_size for p in outdir.rglob("*") if p.is_file())
    err = "" if r.returncode == 0 and got == study["files"] else \
        f"{tool}: exit {r.returncode}, {got}/{study['files']} files: {r.stderr[-300:]}"
    return {"seconds": seconds, "files": got, "bytes": nbytes, "client_cpu_s": cpu, "error": err}


def _discards(dest) -> bool:
    """``dest`` is the fast receiver (it writes nothing; ``stored_count()`` is its tally)."""
    return dest is not None and dest.name == "discard-receiver"


def dimse_retrieve(tool: str, peer, cat: list[dict], work: Path, bar, dest=None) -> dict:
    """Every study in turn; ``dest``: the C-MOVE destination (its output directory is used)."""
    rows = []
    for i, study in enumerate(cat):
        out = dest.data_dir if dest is not None and not _discards(dest) else work / f"{tool}-{i}"
        rows.append(_dimse_fetch(tool, peer, study, out, dest))
        bar.update(1)
    shutil.rmtree(work, ignore_errors=True)
    total_s = sum(r["seconds"] for r in rows) or 1e-9
    return {"studies": len(rows), "files": sum(r["files"] for r in rows),
            "instances_per_s": sum(r["files"] for r in rows) / total_s,
            "mb_per_s": sum(r["bytes"] for r in rows) / 1e6 / total_s,
            "study_ms": common.latency_summary([r["seconds"] * 1000 for r in rows]),
            "client_cpu_share": sum(r["client_cpu_s"] for r in rows) / total_s,
            "errors": [r["error"] for r in rows if r["error"]]}


def viewer_cell(peer, cat: list[dict], n: int, opts, disk) -> dict:
    load = Load(timeout=opts.timeout)
    for i in range(n):
        load.add("viewer", {"index": i, "base": servers.dicomweb_base(peer), "studies": cat,
                            "sessions": opts.sessions, "parallel": opts.parallel})
    window = common.Window(peer, disk)
    before = common.quiet(opts)
    lr = load.run(on_start=window.start)
    return {**viewer_stats(lr, window.stop(), n), "load_before": before}


def viewer_stats(lr, win: dict, n: int) -> dict:
    recs = lr.records("viewer")
    wall = win["wall_s"] or 1e-9
    out = {"viewers": n, "sessions": len(recs), "wall_s": wall,
           "frames_per_s": sum(r["frames"] for r in recs) / wall,
           "mb_per_s": sum(r["bytes"] for r in recs) / 1e6 / wall,
           "client_cpu_s": lr.client_cpu_s, "server_cpu_s": win["server_cpu_s"],
           "utilisation": common.utilisation(win, lr.client_cpu_s), "errors": lr.errors}
    for key in ("qido_ms", "series_ms", "metadata_ms", "first_frame_ms", "series_open_ms",
                "series_load_ms"):
        out[key] = common.latency_summary([r[key] for r in recs])
    return out


def run_server(name: str, opts, studies: list[list[Path]], cat: list[dict], work: Path,
               disk) -> dict:
    res: dict = {"server": name, "ok": False, "errors": []}
    rundir = work / f"retrieve-{name}"
    shutil.rmtree(rundir, ignore_errors=True)
    n_files = sum(s["files"] for s in cat)
    steps = 6 * len(cat) + 1 + len(opts.viewers)
    bar = common.progress(steps, f"retrieve {name}", opts.no_progress, unit="step")
    try:
        with peers_mod.storescp(rundir / "move-dest", fork=False, ae=MOVE_AE) as dest, \
                peers_mod.discard_receiver(rundir / "fast-dest", ae=FAST_AE) as fast, \
                peers_mod.discard_receiver(rundir / "fast-w8-dest", ae=FAST_W8_AE,
                                           window=FAST_WINDOW) as fast_w8, \
                servers.start(name, rundir, remotes={MOVE_AE: dest.port, FAST_AE: fast.port,
                                                     FAST_W8_AE: fast_w8.port}) as peer:
            t0 = time.perf_counter()
            lr = store_load(peer, common.deal(studies, 2), timeout=opts.timeout).run()
            res["load_s"] = time.perf_counter() - t0
            res["stored"] = servers.instance_count(peer)
            if lr.errors or res["stored"] != n_files:
                raise RuntimeError(f"loading: {res['stored']}/{n_files} stored; {lr.errors}")
            res["metadata_wait_s"] = servers.wait_metadata(peer, n_files)
            res["c_get"] = dimse_retrieve("getscu", peer, cat, rundir / "get", bar)
            res["c_move"] = dimse_retrieve("movescu", peer, cat, rundir / "move", bar, dest)
            res["c_get_fast"] = dimse_retrieve("fast-get", peer, cat, rundir / "fast-get", bar)
            res["c_move_fast"] = dimse_retrieve("movescu", peer, cat, rundir / "fast-move", bar,
                                                fast)
            res["c_get_fast_w8"] = dimse_retrieve("fast-get-w8", peer, cat,
                                                  rundir / "fast-get-w8", bar)
            res["c_move_fast_w8"] = dimse_retrieve("movescu", peer, cat, rundir / "fast-move-w8",
                                                   bar, fast_w8)
            big = max(cat, key=lambda s: max(len(v) for v in s["series"].values()))
            series_uid, sops = max(big["series"].items(), key=lambda kv: len(kv[1]))
            uids = {"study": big["study"], "series": series_uid, "patient": big["patient"]}
            cpu0, t0 = rusage_cpu(), time.perf_counter()
            res["dicomweb"] = asyncio.run(dw.measure(
                servers.dicomweb_base(peer), uids, sops, requests=opts.requests,
                clients=opts.parallel, first=True))
            res["dicomweb"]["client_cpu_share"] = ((rusage_cpu() - cpu0)
                                                   / (time.perf_counter() - t0))
            res["dicomweb"]["series_instances"] = len(sops)
            bar.update(1)
            res["viewers"] = []
            for n in opts.viewers:
                res["viewers"].append(viewer_cell(peer, cat, n, opts, disk))
                bar.update(1)
            for part in DIMSE_PARTS:
                res["errors"] += res[part]["errors"]
            for v in res["viewers"]:
                res["errors"] += v["errors"]
            if not peer.alive():
                res["errors"].append("server died")
            res["ok"] = not res["errors"]
    except Exception as exc:
        res["errors"].append(f"{type(exc).__name__}: {exc}"[:2000])
    finally:
        bar.close()
        shutil.rmtree(rundir, ignore_errors=True)
    common.log(f"retrieve {name}: {'ok' if res['ok'] else 'FAILED: ' + str(res['errors'][:2])}")
    return res


def run(opts) -> dict:
    work = Path(opts.workdir)
    report = common.new_report("retrieve", opts, work)
    manifest, studies = common.corpus(opts, opts.retrieve_files, work, seed=2)
    report["corpus"] = {k: manifest[k] for k in ("config", "count", "total_bytes",
                                                  "by_modality")}
    cat = catalogue(studies)
    disk = report["machine"]["disk"].get("disk")
    report["servers"] = {name: run_server(name, opts, studies, cat, work / "runs", disk)
                         for name in opts.servers}
    report["ok"] = all(r["ok"] for r in report["servers"].values())
    report["sizing"] = sizing(report["servers"].get("hpacs", {}))
    if "orthanc" in report["servers"]:
        report["sizing_orthanc"] = sizing(report["servers"]["orthanc"])
    report["plots"] = make_plots(report, Path(opts.out))
    return report


def sizing(res: dict) -> dict:
    views = res.get("viewers") or []
    if not views:
        return {}
    target = common.TARGETS["series_open_p95_ms"]
    within = [v["viewers"] for v in views if v["series_open_ms"].get("p95", 1e18) <= target]
    top = views[-1]
    cores = os.cpu_count() or 1
    u = top["utilisation"]
    limit = common.server_core_limit(res["server"])
    shares = {"server CPU": u["server_cores"] / limit, "viewer (client) CPU": u["client_share"],
              "disk": u["disk_busy"] or 0.0}
    return {"viewers_within_target": max(within) if within else 0,
            "open_ended": bool(within) and max(within) == top["viewers"],
            "largest_tested": top["viewers"],
            "frames_per_s_at_largest": top["frames_per_s"],
            "frames_per_s_per_core": top["frames_per_s"] / cores,
            "resource_shares": shares, "first_to_saturate": max(shares, key=shares.get),
            "other_cores": u["other_cores"]}


def make_plots(report: dict, out: Path) -> dict[str, str]:
    out.mkdir(parents=True, exist_ok=True)
    lat, thr = {}, {}
    for name, res in report["servers"].items():
        views = [v for v in res.get("viewers", []) if v["sessions"]]
        xs = [v["viewers"] for v in views]
        for q in ("p50", "p95"):
            lat[f"{name} series open {q}"] = (xs, [v["series_open_ms"][q] for v in views])
        thr[name] = (xs, [v["frames_per_s"] for v in views])
    made = {
        "open": plots.lines(out / "retrieve-series-open.png", "Viewer series-open latency",
                            "concurrent viewers", "ms", lat,
                            hline=(common.TARGETS["series_open_p95_ms"], "p95 target")).name,
        "frames": plots.lines(out / "retrieve-frames.png", "Frames/s with N viewers",
                              "concurrent viewers", "frames/s", thr).name,
    }
    names = list(report["servers"])
    groups = ["C-GET inst/s", "C-MOVE inst/s", "WADO-RS MB/s",
              f"frames/s ({report['params']['parallel']} concurrent)"]
    vals = {}
    for name in names:
        r = report["servers"][name]
        if "dicomweb" not in r:
            continue
        vals[name] = [r["c_get"]["instances_per_s"], r["c_move"]["instances_per_s"],
                      r["dicomweb"]["retrieve_mb_s"], r["dicomweb"]["frames_per_s"]]
    made["compare"] = plots.bars(out / "retrieve-compare.png", "Retrieval throughput",
                                 "per second", groups, vals).name
    return made


#: Client-CPU shares listed under the table: result part -> label.
CLIENT_LABELS = {"c_get": "C-GET", "c_move": "C-MOVE", "c_get_fast": "C-GET fast",
                 "c_move_fast": "C-MOVE fast", "c_get_fast_w8": "C-GET fast, window 8",
                 "c_move_fast_w8": "C-MOVE fast, window 8", "dicomweb": "DICOMweb"}


def comparison_rows(report: dict) -> list[tuple[str, Callable[[dict], float], bool]]:
    """(label, value from one server's result, higher is better) of the hpacs/Orthanc table."""
    return [
        ("C-GET study: instances/s", lambda r: r["c_get"]["instances_per_s"], True),
        ("C-GET study: MB/s", lambda r: r["c_get"]["mb_per_s"], True),
        ("C-GET study p95 ms", lambda r: r["c_get"]["study_ms"]["p95"], False),
        ("C-MOVE study: instances/s", lambda r: r["c_move"]["instances_per_s"], True),
        ("C-MOVE study p95 ms", lambda r: r["c_move"]["study_ms"]["p95"], False),
        ("C-GET study, fast receiver: instances/s",
         lambda r: r["c_get_fast"]["instances_per_s"], True),
        ("C-GET study, fast receiver p95 ms", lambda r: r["c_get_fast"]["study_ms"]["p95"],
         False),
        ("C-MOVE study, fast receiver: instances/s",
         lambda r: r["c_move_fast"]["instances_per_s"], True),
        ("C-MOVE study, fast receiver p95 ms", lambda r: r["c_move_fast"]["study_ms"]["p95"],
         False),
        ("C-GET study, fast receiver, window 8: instances/s",
         lambda r: r["c_get_fast_w8"]["instances_per_s"], True),
        ("C-MOVE study, fast receiver, window 8: instances/s",
         lambda r: r["c_move_fast_w8"]["instances_per_s"], True),
        ("QIDO /studies?PatientID ms", lambda r: r["dicomweb"]["qido_studies_ms"], False),
        ("series /metadata first ms", lambda r: r["dicomweb"]["metadata_first_ms"], False),
        ("series /metadata ms", lambda r: r["dicomweb"]["metadata_ms"], False),
        ("WADO-RS series MB/s", lambda r: r["dicomweb"]["retrieve_mb_s"], True),
        (f"frames/s, {report['params']['parallel']} concurrent",
         lambda r: r["dicomweb"]["frames_per_s"], True),
    ]


def advantage(servers_: dict, get: Callable[[dict], float], higher: bool) -> float | None:
    """hpacs's advantage over Orthanc on one row (> 1: hpacs better)."""
    try:
        h, o = get(servers_["hpacs"]), get(servers_["orthanc"])
    except (KeyError, TypeError):
        return None
    return common.ratio(h, o) if higher else common.ratio(o, h)


def markdown(report: dict) -> str:
    c = report["corpus"]
    lines = common.header_md(report, "hpacs bench retrieve")
    lines += [f"Corpus: {c['count']} instances in {len(c['by_modality'])}"
              f" modalities {c['by_modality']}, {c['total_bytes'] / 1e6:.1f} MB, "
              f"{c['config']['syntax']}; hot store.", ""]
    names = list(report["servers"])
    srv = report["servers"]

    def cell(name: str, getter, digits: int = 1) -> str:
        try:
            return common.fmt(getter(srv[name]), digits)
        except (KeyError, TypeError):
            return "-"

    rows = comparison_rows(report)
    lines += ["| metric | " + " | ".join(names) + (" | hpacs advantage |" if
                                                      "orthanc" in names else " |"),
              "|---|" + "---:|" * len(names) + ("---:|" if "orthanc" in names else "")]
    for label, get, higher in rows:
        line = f"| {label} | " + " | ".join(cell(n, get) for n in names) + " |"
        if "orthanc" in names:
            line += f" {common.fmt_ratio(advantage(srv, get, higher))} |"
        lines.append(line)
    lines += ["", "Viewers (each opens series like OHIF: study search, series list, metadata, "
              f"first frame, then all frames with {report['params']['parallel']} requests; ms "
              "p50 / p95):", "",
              "| server | viewers | sessions | series open | metadata | first frame "
              "| whole series | frames/s | MB/s | server cores | viewer cores | other cores |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in names:
        for v in srv[name].get("viewers", []):
            if not v["sessions"]:
                continue
            u = v["utilisation"]
            lines.append(
                f"| {name} | {v['viewers']} | {v['sessions']} "
                f"| {common.pp(v['series_open_ms'])} | {common.pp(v['metadata_ms'])} "
                f"| {common.pp(v['first_frame_ms'])} | {common.pp(v['series_load_ms'])} "
                f"| {v['frames_per_s']:.0f} | {v['mb_per_s']:.1f} "
                f"| {u['server_cores']:.2f} | {u['client_cores']:.2f} "
                f"| {u['other_cores']:.2f} |")
    shares = [f"{n}: " + ", ".join(f"{label} {srv[n][part]['client_cpu_share']:.0%}"
                                   for part, label in CLIENT_LABELS.items())
              for n in names if all(part in srv[n] for part in CLIENT_LABELS)]
    if shares:
        lines += ["", "Load generators' own CPU as a share of the wall time (getscu; movescu "
                  "and its storescp destination; the fast receiver as C-GET SCU; movescu and "
                  "the fast receiver as destination; the in-process aiohttp client): "
                  + "; ".join(shares) + ". Viewer processes: the viewer cores column. The fast "
                  "receiver (`benchmarks.discard_receiver`: hpacs's upper layer, 1 MiB PDUs, "
                  "data sets discarded undecoded) keeps the client from being what is measured."]
    errs = [(n, e) for n in names for e in srv[n]["errors"]]
    if errs:
        lines += ["", "Errors:"] + [f"- {n}: {e[:300]}" for n, e in errs]
    p = report["plots"]
    lines += ["", plots.md_image(Path(p["open"]), "series open latency"),
              plots.md_image(Path(p["frames"]), "frames/s"),
              plots.md_image(Path(p["compare"]), "retrieval throughput"), ""]
    s = report["sizing"]
    if s:
        t = common.TARGETS["series_open_p95_ms"]
        lines += ["## Sizing (retrieve)", "",
                  f"- Concurrent viewers (back to back, no think time) with series-open p95 < "
                  f"{t:.0f} ms: {'>= ' if s['open_ended'] else ''}{s['viewers_within_target']}"
                  f" (largest tested {s['largest_tested']}).",
                  f"- At {s['largest_tested']} viewers: {s['frames_per_s_at_largest']:.0f} "
                  f"frames/s ({s['frames_per_s_per_core']:.0f} per core); first resource to "
                  f"saturate: {common.saturation_text(s['resource_shares'])}.",
                  *common.distortion(s["other_cores"])]
    return "\n".join(lines) + "\n"

