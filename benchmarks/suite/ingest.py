"""Scenario ``ingest``: N simulated modalities storing a CT/MR/DX/US mix at once.

For each modality count and run, a fresh server gets the whole corpus (or what fits in
``--duration``), its studies dealt round-robin to N modality processes (one association each,
closed loop: the next C-STORE leaves when the previous response came). Measured: instances/s
and MB/s (start signal to last response), every C-STORE's latency, the server's CPU (whole
process tree) and the load generators' CPU per instance, the disk's busy share. Afterwards the
server must hold exactly the instances it acknowledged (hpacs: its index; Orthanc: REST).

Then the disk alone (``benchmarks.fsync_floor``): files of the corpus's mean instance size made
durable the way an archive that acknowledges only durable data must (write with writeback
started as it goes, fdatasync, rename, directory fsync), with one stream and with as many
streams as the most modalities tested (at most 8). That is the ceiling of durable ingest on
this disk whatever the server, beside which the measured peak reads as a share.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from benchmarks import fsync_floor
from benchmarks.stats import summarize
from benchmarks.suite import common, plots, servers
from benchmarks.suite.loadgen import Load, LoadRun


def _outcome(status: int) -> str:
    from hpacs.dimse.retrieve import store_outcome

    return store_outcome(status)


def dir_bytes(root: Path) -> int:
    """Bytes allocated on disk under ``root`` (blocks, not apparent size: LMDB is sparse)."""
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total


def timeline(lr: LoadRun, records: list, bins: int = 30) -> dict:
    """Instances completed per second over time from the start signal, in about ``bins``
    equal bins (at least 0.05 s, at most 1 s): {"bin_s": width, "rates": [...]}."""
    if not records:
        return {"bin_s": 1.0, "rates": []}
    span = max(r[0] for r in records) - lr.t_start
    bin_s = min(1.0, max(0.05, span / bins))
    counts = [0] * (int(span / bin_s) + 1)
    for end, *_ in records:
        counts[min(len(counts) - 1, max(0, int((end - lr.t_start) / bin_s)))] += 1
    return {"bin_s": bin_s, "rates": [c / bin_s for c in counts]}


def store_load(peer, groups: list[list[Path]], *, rate: float = 0.0, duration: float = 0.0,
               timeout: float = 600.0) -> Load:
    """A :class:`Load` of one store worker per group (rate: total instances/s, open loop)."""
    load = Load(timeout=timeout)
    for i, files in enumerate(groups):
        load.add("store", {"index": i, "host": peer.host, "port": peer.port,
                           "called_ae": peer.ae_title, "files": [str(p) for p in files],
                           "rate": rate / len(groups) if rate else 0.0,
                           "duration": duration})
    return load


def store_stats(lr: LoadRun, window: dict) -> dict:
    """Throughput, latency and CPU figures of a store load over its measurement window."""
    recs = lr.records("store")
    ok = [r for r in recs if _outcome(r[3]) != "failed"]
    # the senders' own span (start signal to last response): other workers (viewers) of the
    # same load may run on after them
    last = max((r[0] for r in recs), default=lr.t_start)
    wall = min(window["wall_s"], last - lr.t_start) if recs else window["wall_s"]
    wall = wall or 1e-9
    nbytes = sum(r[2] for r in ok)
    util = common.utilisation(window, lr.client_cpu_s)
    return {
        "sent": len(recs), "acknowledged": len(ok), "failed": len(recs) - len(ok),
        "unsent": sum(r.unsent for r in lr.results), "bytes": nbytes, "wall_s": wall,
        "instances_per_s": len(ok) / wall, "mb_per_s": nbytes / 1e6 / wall,
        "latency_ms": common.latency_summary([r[1] for r in ok]),
        "client_cpu_s": lr.client_cpu_s, "server_cpu_s": window["server_cpu_s"],
        "server_cpu_ms_per_instance": 1000 * window["server_cpu_s"] / len(ok) if ok else None,
        "client_cpu_ms_per_instance": 1000 * lr.client_cpu_s / len(ok) if ok else None,
        "utilisation": util, "timeline": timeline(lr, ok), "errors": lr.errors,
        "latencies_ms": [round(r[1], 3) for r in ok],
    }


def run_cell(server: str, n: int, run: int, studies: list[list[Path]], opts, work: Path,
             disk: str | None) -> dict:
    """One fresh server, n modalities, every study sent once; checked against its count."""
    rundir = work / f"ingest-{server}-m{n}-r{run}"
    shutil.rmtree(rundir, ignore_errors=True)
    rundir.mkdir(parents=True)
    os.sync()  # the previous run's dirty pages must not be written back during this one
    cell: dict = {"server": server, "modalities": n, "run": run, "ok": False}
    groups = common.deal(studies, n)
    total = sum(len(g) for g in groups)
    try:
        with servers.start(server, rundir) as peer:
            window = common.Window(peer, disk)
            bar = common.progress(total, f"ingest {server} x{n} run {run}", opts.no_progress,
                                  unit="inst")
            last = [0]

            def poll() -> None:
                now = servers.instance_count(peer)
                bar.update(now - last[0])
                last[0] = now

            load = store_load(peer, groups, duration=opts.duration, timeout=opts.timeout)
            cell["load_before"] = common.quiet(opts)
            lr = load.run(poll=poll, on_start=window.start)
            win = window.stop()
            bar.close()
            cell.update(store_stats(lr, win))
            cell["stored"] = servers.instance_count(peer)
            cell["stored_bytes"] = dir_bytes(peer.data_dir)
            if cell["errors"]:
                cell["error"] = "; ".join(cell["errors"])[:2000]
            elif cell["stored"] != cell["acknowledged"]:
                cell["error"] = (f"{server} holds {cell['stored']} instances, acknowledged "
                                 f"{cell['acknowledged']}")
            elif cell["failed"]:
                cell["error"] = f"{cell['failed']} C-STORE failures"
            elif not peer.alive():
                cell["error"] = "server died during the run"
            else:
                cell["ok"] = True
    except Exception as exc:  # a server that cannot start is reported, not fatal
        cell["error"] = f"{type(exc).__name__}: {exc}"[:2000]
    finally:
        shutil.rmtree(rundir, ignore_errors=True)
    return cell


def aggregate(cells: list[dict]) -> list[dict]:
    """Per (server, modalities): median (min-max) over good runs; latencies pooled."""
    rows: dict[tuple[str, int], list[dict]] = {}
    for c in cells:
        rows.setdefault((c["server"], c["modalities"]), []).append(c)
    out = []
    for (server, n), cs in rows.items():
        good = [c for c in cs if c["ok"]]
        row: dict = {"server": server, "modalities": n, "runs": len(cs), "ok_runs": len(good),
                     "errors": sorted({c.get("error", "") for c in cs if not c["ok"]})}
        if good:
            for key in ("instances_per_s", "mb_per_s", "server_cpu_ms_per_instance",
                        "client_cpu_ms_per_instance"):
                row[key] = summarize([c[key] for c in good]).to_json()
            for key in ("server_cores", "client_cores", "other_cores", "kernel_cores",
                        "disk_busy"):
                vals = [c["utilisation"][key] for c in good
                        if c["utilisation"].get(key) is not None]
                row[key] = summarize(vals).median if vals else None
            row["latency_ms"] = common.latency_summary(
                [v for c in good for v in c["latencies_ms"]])
            row["stored_over_sent"] = summarize(
                [c["stored_bytes"] / c["bytes"] for c in good if c["bytes"]]).median
        out.append(row)
    by = {(r["server"], r["modalities"]): r for r in out}
    for r in out:
        mine = r.get("instances_per_s", {}).get("median")
        ref = by.get(("orthanc", r["modalities"]), {}).get("instances_per_s", {}).get("median")
        r["vs_orthanc"] = common.ratio(mine, ref)
    return sorted(out, key=lambda r: (r["modalities"], r["server"]))


def sizing(rows: list[dict], server: str = "hpacs") -> dict:
    """The ingest half of the sizing summary, from the measured rows of ``server``."""
    mine = [r for r in rows if r["server"] == server and r["ok_runs"]]
    if not mine:
        return {}
    cores = os.cpu_count() or 1
    best = max(mine, key=lambda r: r["instances_per_s"]["median"])
    ips = best["instances_per_s"]["median"]
    mbs = best["mb_per_s"]["median"]
    target = common.TARGETS["c_store_p95_ms"]
    within = [r["modalities"] for r in mine if r["latency_ms"]["p95"] <= target]
    largest = max(r["modalities"] for r in mine)
    gb_day = mbs * 86400 / 1000
    stored_ratio = best.get("stored_over_sent") or 1.0
    shares = {"server CPU": (best["server_cores"] or 0) / common.server_core_limit(server),
              "load generator CPU": (best["client_cores"] or 0) / cores,
              "disk": best["disk_busy"] or 0.0}
    first = max(shares, key=shares.get)
    ordered = sorted(mine, key=lambda r: r["modalities"])
    scaling = None
    if len(ordered) >= 2:
        a, b = ordered[-2], ordered[-1]
        scaling = common.ratio(b["instances_per_s"]["median"], a["instances_per_s"]["median"])
    return {
        "best_modalities": best["modalities"],
        "instances_per_s": ips,
        "mb_per_s": mbs,
        "instances_per_s_per_core": ips / cores,
        "instances_per_server_cpu_s": ips / best["server_cores"] if best["server_cores"] else None,
        "gb_per_day": gb_day,
        "instances_per_day": ips * 86400,
        "hot_store_days_per_tb": 1000 / (gb_day * stored_ratio) if gb_day else None,
        "stored_over_sent": stored_ratio,
        "modalities_within_target": max(within) if within else 0,
        "modalities_target_open_ended": bool(within) and max(within) == largest,
        "largest_tested": largest,
        "resource_shares": shares,
        "first_to_saturate": first,
        "scaling_last_step": scaling,
        "other_cores": best["other_cores"],
    }


def run(opts) -> dict:
    work = Path(opts.workdir)
    report = common.new_report("ingest", opts, work)
    manifest, studies = common.corpus(opts, opts.files, work)
    report["corpus"] = {k: manifest[k] for k in ("config", "count", "total_bytes",
                                                  "by_modality")}
    disk = report["machine"]["disk"].get("disk")
    cells = []
    for n in opts.modalities:
        for run_i in range(1, opts.runs + 1):
            for server in opts.servers:  # interleaved: slow drift hits every server alike
                cell = run_cell(server, n, run_i, studies, opts, work / "runs", disk)
                cells.append(cell)
                common.log(f"ingest {server} x{n} run {run_i}: "
                           f"{cell.get('instances_per_s', 0):.1f} inst/s, "
                           f"p95 {cell.get('latency_ms', {}).get('p95', 0):.0f} ms"
                           + ("" if cell["ok"] else f" FAILED: {cell.get('error')}"))
    report["cells"] = cells
    report["ok"] = all(c["ok"] for c in cells)
    report["summary"] = aggregate(cells)
    report["sizing"] = sizing(report["summary"])
    report["disk_ceiling"] = disk_ceiling(
        work / "disk-floor", report["corpus"]["total_bytes"] // max(1, report["corpus"]["count"]),
        max(opts.modalities), files=20 if report["quick"] else 200)
    if report["sizing"]:
        ceiling = max(d["files_per_s"] for d in report["disk_ceiling"]["streams"])
        report["sizing"]["peak_over_disk_ceiling"] = report["sizing"]["instances_per_s"] / ceiling
    if "orthanc" in opts.servers:
        report["sizing_orthanc"] = sizing(report["summary"], "orthanc")
    report["plots"] = make_plots(report, Path(opts.out))
    return report


#: Streams of the disk ceiling at most (more modalities than this share the same journal).
CEILING_STREAMS_MAX = 8


def disk_ceiling(work: Path, size: int, modalities: int, files: int = 200) -> dict:
    """What the disk alone takes to make files of ``size`` bytes durable: one stream, and
    ``min(modalities, 8)`` streams at once (each step's median ms per file, files/s)."""
    streams = []
    for n in sorted({1, max(1, min(modalities, CEILING_STREAMS_MAX))}):
        common.log(f"disk ceiling: {n} stream(s) of {files} files of {size / 1e3:.0f} KB")
        floor = fsync_floor.run(work, files, size, runs=1, writeback=True, writers=n)
        streams.append({"streams": n, "files_per_s": floor["files_per_s_ceiling"],
                        "ms_per_file": {step: floor["ms_per_file"][step]["median"]
                                        for step in fsync_floor.STEPS}})
    shutil.rmtree(work, ignore_errors=True)
    return {"size": size, "files": files, "streams": streams}


def make_plots(report: dict, out: Path) -> dict[str, str]:
    out.mkdir(parents=True, exist_ok=True)
    made = {}
    series = {}
    for c in report["cells"]:
        if c["ok"] and c["run"] == 1:
            tl = c["timeline"]
            series[f"{c['server']} x{c['modalities']}"] = (
                [(i + 0.5) * tl["bin_s"] for i in range(len(tl["rates"]))], tl["rates"])
    made["timeline"] = plots.lines(out / "ingest-throughput.png",
                                   "Ingest throughput over time (run 1)", "seconds",
                                   "instances/s", series, markers=False).name
    lat, thr = {}, {}
    for server in report["params"]["servers"]:
        rows = [r for r in report["summary"] if r["server"] == server and r["ok_runs"]]
        xs = [r["modalities"] for r in rows]
        for q in ("p50", "p95", "p99"):
            lat[f"{server} {q}"] = (xs, [r["latency_ms"][q] for r in rows])
        thr[server] = (xs, [r["instances_per_s"]["median"] for r in rows])
    made["latency"] = plots.lines(
        out / "ingest-latency.png", "C-STORE latency percentiles", "modalities (associations)",
        "ms", lat, hline=(common.TARGETS["c_store_p95_ms"], "p95 target")).name
    made["throughput"] = plots.lines(out / "ingest-scaling.png", "Ingest throughput",
                                     "modalities (associations)", "instances/s", thr).name
    return made


def markdown(report: dict) -> str:
    c = report["corpus"]
    cfg = c["config"]
    lines = common.header_md(report, "hpacs bench ingest")
    lines += [
        f"Corpus: {c['count']} instances, {c['total_bytes'] / 1e6:.1f} MB, "
        f"{c['by_modality']}, transfer syntax {cfg['syntax']} (CT {cfg['ct_slices']} slices, "
        f"MR {cfg['mr_slices']}, US {cfg['us_frames']} frames); studies dealt round-robin to "
        f"the modalities; {report['params']['runs']} run(s) per cell, fresh server each run"
        + (f", duration cap {report['params']['duration']} s" if report["params"]["duration"]
           else "") + ".", "",
        "| server | modalities | instances/s | MB/s | vs Orthanc | C-STORE p50 / p95 / p99 ms "
        "| server CPU ms/inst | client CPU ms/inst | server cores | client cores | kernel cores "
        "| other cores | disk busy | runs ok |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["summary"]:
        if not r["ok_runs"]:
            lines.append(f"| {r['server']} | {r['modalities']} | failed | | | | | | | | | | "
                         f"| 0/{r['runs']} |")
            continue
        lat = r["latency_ms"]
        lines.append(
            f"| {r['server']} | {r['modalities']} | {_s(r['instances_per_s'])} "
            f"| {_s(r['mb_per_s'], 1)} | {common.fmt_ratio(r['vs_orthanc'])} "
            f"| {lat['p50']:.1f} / {lat['p95']:.1f} / {lat['p99']:.1f} "
            f"| {_s(r['server_cpu_ms_per_instance'], 2)} "
            f"| {_s(r['client_cpu_ms_per_instance'], 2)} | {common.fmt(r['server_cores'], 2)} "
            f"| {common.fmt(r['client_cores'], 2)} | {common.fmt(r.get('kernel_cores'), 2)} "
            f"| {common.fmt(r['other_cores'], 2)} "
            f"| {_pct(r['disk_busy'])} | {r['ok_runs']}/{r['runs']} |")
    dur = report["params"]["duration"]
    short = [c for c in report["cells"] if dur and c.get("ok") and not c.get("unsent")
             and c["wall_s"] < 0.95 * dur]
    if short:
        lines += ["", f"Note: {len(short)} run(s) sent the whole corpus before --duration "
                  f"{dur:g} s ended: give a larger --files for a steady-state measurement."]
    errors = [(r["server"], r["modalities"], e) for r in report["summary"] for e in r["errors"]]
    if errors:
        lines += ["", "Errors:"] + [f"- {s} x{n}: {e[:300]}" for s, n, e in errors]
    p = report["plots"]
    lines += ["", plots.md_image(Path(p["throughput"]), "instances/s vs modalities"),
              plots.md_image(Path(p["latency"]), "C-STORE latency percentiles"),
              plots.md_image(Path(p["timeline"]), "throughput over time"), ""]
    lines += sizing_md(report)
    lines += ["", "CPU: server = the server's whole process tree, client = the modality "
              "processes (our asyncio storage SCU), kernel = interrupts, loopback networking, "
              "writeback and journal threads (work the load itself causes), other = user-space "
              "processes outside the benchmark (a shared machine distorts the numbers when it "
              "is not ~0). Latency = first byte of the "
              "C-STORE request to its response, every instance of every good run pooled. "
              "MB = 10^6 bytes."]
    return "\n".join(lines) + "\n"


def sizing_md(report: dict) -> list[str]:
    s = report.get("sizing")
    if not s:
        return ["## Sizing", "", "No successful hpacs run: nothing to size."]
    t = common.TARGETS["c_store_p95_ms"]
    n_mod = s["modalities_within_target"]
    scal = s["scaling_last_step"]
    lines = [
        "## Sizing (ingest)", "",
        f"- Peak: {s['instances_per_s']:.1f} instances/s, {s['mb_per_s']:.1f} MB/s with "
        f"{s['best_modalities']} modality(ies): {s['instances_per_s_per_core']:.1f} instances/s "
        f"per core of this machine ({report['machine']['cores']} cores); "
        + (f"{s['instances_per_server_cpu_s']:.1f} instances per server CPU-second."
           if s["instances_per_server_cpu_s"] else "server CPU not measured."),
        f"- Volume: {s['gb_per_day']:.0f} GB/day ({s['instances_per_day'] / 1e6:.2f} M "
        f"instances/day) at that rate around the clock; stored bytes / sent bytes = "
        f"{s['stored_over_sent']:.3f}, so 1 TB of hot store holds "
        f"{common.fmt(s['hot_store_days_per_tb'], 1)} days of ingest at peak rate "
        f"({1000 / s['stored_over_sent']:.0f} GB of sent data per TB).",
        f"- Modalities sending at once with C-STORE p95 < {t:.0f} ms: "
        f"{'>= ' if s['modalities_target_open_ended'] else ''}{n_mod} "
        f"(largest tested: {s['largest_tested']}; modalities here send back to back, a real "
        f"one sends far slower, so this is the concurrent-association bound).",
        f"- First resource to saturate at peak: {common.saturation_text(s['resource_shares'])}"
        f"; the last step of the modality sweep scaled throughput "
        f"{common.fmt_ratio(scal)}. (Server CPU is counted against what the server can use: "
        "one core for hpacs's event loop, every core for Orthanc.)",
        *disk_ceiling_md(report),
        *common.distortion(s["other_cores"]),
    ]
    o = report.get("sizing_orthanc")
    if o:
        lines.append(f"- Orthanc for comparison: peak {o['instances_per_s']:.1f} instances/s, "
                     f"{o['modalities_within_target']} modalities within the target, "
                     f"first to saturate: {common.saturation_text(o['resource_shares'])}.")
    return lines


def disk_ceiling_md(report: dict) -> list[str]:
    """The disk's own durable-write ceiling, and the peak's share of it."""
    c = report.get("disk_ceiling")
    if not c:
        return []
    one, many = c["streams"][0], c["streams"][-1]
    steps = one["ms_per_file"]
    text = (f"- Disk ceiling (the disk alone, no server): {one['files_per_s']:.0f} files of "
            f"{c['size'] / 1e3:.0f} KB made durable per second by one stream (write "
            f"{steps['write']:.2f} + fdatasync {steps['fdatasync']:.2f} + rename and directory "
            f"fsync {steps['rename_dirfsync']:.2f} ms each)")
    if many is not one:
        text += f", {many['files_per_s']:.0f} by {many['streams']} at once"
    share = (report.get("sizing") or {}).get("peak_over_disk_ceiling")
    if share is not None:
        text += (f"; the peak above is {share * 100:.0f} % of it (near 100 %: a faster disk, "
                 "not more cores, raises ingest here)")
    return [text + "."]


def _s(d: dict, digits: int = 1) -> str:
    if d["n"] == 1:
        return f"{d['median']:.{digits}f}"
    return f"{d['median']:.{digits}f} ({d['min']:.{digits}f}-{d['max']:.{digits}f})"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.0f} %"
