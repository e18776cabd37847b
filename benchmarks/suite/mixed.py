"""Scenario ``mixed``: the question a hospital asks: do readers wait while modalities send?

A fresh server holds the priors (the retrieve corpus, loaded and counted first). K viewer
processes open prior series back to back for a baseline period alone, then again for
``--mixed-duration`` seconds while modality processes store new studies at a fixed total rate
(``--rate`` instances/s, open loop: instance k of a modality is due at k / its rate, whatever
the responses). Reported: the viewers' latency percentiles alone and under ingest, the rate
actually achieved and the C-STORE latency, server and load-generator CPU. Afterwards the
server must hold the priors plus every acknowledged instance.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

from benchmarks.suite import common, plots, servers
from benchmarks.suite.ingest import store_load, store_stats
from benchmarks.suite.loadgen import Load
from benchmarks.suite.retrieve import catalogue, viewer_stats

STEPS = ("series_open_ms", "metadata_ms", "first_frame_ms", "series_load_ms", "qido_ms")


def _viewers(load: Load, peer, cat: list[dict], opts, duration: float) -> None:
    for i in range(opts.mixed_viewers):
        load.add("viewer", {"index": i, "base": servers.dicomweb_base(peer), "studies": cat,
                            "duration": duration, "parallel": opts.parallel})


def run_server(name: str, opts, priors: list[list[Path]], cat: list[dict],
               new: list[list[Path]], work: Path, disk) -> dict:
    res: dict = {"server": name, "ok": False, "errors": []}
    rundir = work / f"mixed-{name}"
    shutil.rmtree(rundir, ignore_errors=True)
    n_priors = sum(len(s) for s in priors)
    baseline_s = max(2.0, opts.mixed_duration / 3)
    bar = common.progress(None, f"mixed {name} (seconds of load)", opts.no_progress, unit="s")
    try:
        with servers.start(name, rundir) as peer:
            lr = store_load(peer, common.deal(priors, 2), timeout=opts.timeout).run()
            if lr.errors or servers.instance_count(peer) != n_priors:
                raise RuntimeError(f"loading priors: {lr.errors}")
            servers.wait_metadata(peer, n_priors)
            # baseline: viewers alone
            load = Load(timeout=opts.timeout)
            _viewers(load, peer, cat, opts, baseline_s)
            win = common.Window(peer, disk)
            res["load_before_baseline"] = common.quiet(opts)
            lr = load.run(on_start=win.start, poll=lambda: bar.update(1))
            res["baseline"] = viewer_stats(lr, win.stop(), opts.mixed_viewers)
            # under load: the same viewers while the modalities send at the fixed rate
            groups = common.deal(new, opts.mixed_modalities)
            load = store_load(peer, groups, rate=opts.rate, duration=opts.mixed_duration,
                              timeout=opts.timeout)
            _viewers(load, peer, cat, opts, opts.mixed_duration)
            win = common.Window(peer, disk)
            res["load_before_under_load"] = common.quiet(opts)
            lr = load.run(on_start=win.start, poll=lambda: bar.update(1))
            w = win.stop()
            res["under_load"] = viewer_stats(lr, w, opts.mixed_viewers)
            st = store_stats(lr, w)
            st.pop("latencies_ms")
            res["ingest"] = {**st, "modalities": len(groups), "target_rate": opts.rate}
            res["stored"] = servers.instance_count(peer)
            expected = n_priors + st["acknowledged"]
            res["errors"] = list(lr.errors) + res["baseline"]["errors"]
            if res["stored"] != expected:
                res["errors"].append(f"{name} holds {res['stored']} instances, expected "
                                     f"{expected} (priors + acknowledged)")
            if st["failed"]:
                res["errors"].append(f"{st['failed']} C-STORE failures")
            if not res["under_load"]["sessions"]:
                res["errors"].append("no viewer session completed under load")
            res["ok"] = not res["errors"] and peer.alive()
    except Exception as exc:
        res["errors"].append(f"{type(exc).__name__}: {exc}"[:2000])
    finally:
        bar.close()
        shutil.rmtree(rundir, ignore_errors=True)
    common.log(f"mixed {name}: {'ok' if res['ok'] else 'FAILED: ' + str(res['errors'][:2])}")
    return res


def run(opts) -> dict:
    work = Path(opts.workdir)
    report = common.new_report("mixed", opts, work)
    _m, priors = common.corpus(opts, opts.retrieve_files, work, seed=2)
    # enough new instances for the whole duration at the target rate (+20 %)
    want = max(opts.mixed_modalities, math.ceil(opts.rate * opts.mixed_duration * 1.2))
    manifest, new = common.corpus(opts, want, work, seed=3)
    report["corpus"] = {"priors": sum(len(s) for s in priors), "new": manifest["count"],
                        "new_bytes": manifest["total_bytes"],
                        "by_modality": manifest["by_modality"],
                        "syntax": manifest["config"]["syntax"]}
    cat = catalogue(priors)
    disk = report["machine"]["disk"].get("disk")
    report["servers"] = {name: run_server(name, opts, priors, cat, new, work / "runs", disk)
                         for name in opts.servers}
    report["ok"] = all(r["ok"] for r in report["servers"].values())
    report["sizing"] = sizing(report["servers"].get("hpacs", {}))
    report["plots"] = make_plots(report, Path(opts.out))
    return report


def sizing(res: dict) -> dict:
    if not res.get("under_load") or not res["under_load"]["sessions"]:
        return {}
    b, u, ing = res["baseline"], res["under_load"], res["ingest"]
    target = common.TARGETS["series_open_p95_ms"]
    p95 = u["series_open_ms"]["p95"]
    return {"viewers": res["under_load"]["viewers"], "rate_target": ing["target_rate"],
            "rate_achieved": ing["instances_per_s"], "series_open_p95_ms": p95,
            "within_target": p95 <= target,
            "slowdown_p95": common.ratio(p95, b["series_open_ms"].get("p95")),
            "c_store_p95_ms": ing["latency_ms"].get("p95"),
            "c_store_within_target": (ing["latency_ms"].get("p95") or 0)
            <= common.TARGETS["c_store_p95_ms"],
            "gb_per_day_at_rate": ing["mb_per_s"] * 86400 / 1000,
            "other_cores": u["utilisation"]["other_cores"]}


def make_plots(report: dict, out: Path) -> dict[str, str]:
    out.mkdir(parents=True, exist_ok=True)
    groups, vals = [], {}
    for name, res in report["servers"].items():
        if "under_load" not in res:
            continue
        for phase in ("baseline", "under_load"):
            vals.setdefault(f"{name} {phase.replace('_', ' ')}", [
                res[phase][k].get("p95", 0.0) for k in STEPS])
    groups = [k.replace("_ms", "") for k in STEPS]
    return {"viewers": plots.bars(out / "mixed-viewers.png",
                                  "Viewer p95 latency alone vs under ingest", "ms p95",
                                  groups, vals).name}


def markdown(report: dict) -> str:
    c = report["corpus"]
    p = report["params"]
    lines = common.header_md(report, "hpacs bench mixed")
    lines += [f"Priors: {c['priors']} instances; new studies: {c['new']} instances "
              f"({c['new_bytes'] / 1e6:.1f} MB, {c['by_modality']}, {c['syntax']}) sent by "
              f"{p['mixed_modalities']} modalities at {p['rate']:g} instances/s in total for "
              f"{p['mixed_duration']:g} s while {p['mixed_viewers']} viewers open prior series "
              f"back to back ({p['parallel']} frame requests each).", "",
              "| server | phase | sessions | series open p50 / p95 | metadata p50 / p95 "
              "| first frame p50 / p95 | whole series p50 / p95 | frames/s | server cores "
              "| client cores | other cores |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, res in report["servers"].items():
        for phase in ("baseline", "under_load"):
            v = res.get(phase)
            if not v:
                continue
            u = v["utilisation"]
            lines.append(
                f"| {name} | {phase.replace('_', ' ')} | {v['sessions']} "
                f"| {common.pp(v['series_open_ms'])} | {common.pp(v['metadata_ms'])} "
                f"| {common.pp(v['first_frame_ms'])} | {common.pp(v['series_load_ms'])} "
                f"| {v['frames_per_s']:.0f} | {u['server_cores']:.2f} | {u['client_cores']:.2f} "
                f"| {u['other_cores']:.2f} |")
    lines += ["", "| server | ingest target inst/s | achieved inst/s | MB/s | C-STORE p50 / p95 "
              "/ p99 ms | acknowledged | stored (priors + new) |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for name, res in report["servers"].items():
        i = res.get("ingest")
        if not i:
            continue
        lat = i["latency_ms"]
        lines.append(f"| {name} | {i['target_rate']:g} | {i['instances_per_s']:.1f} "
                     f"| {i['mb_per_s']:.1f} | {lat.get('p50', 0):.0f} / {lat.get('p95', 0):.0f}"
                     f" / {lat.get('p99', 0):.0f} | {i['acknowledged']} | {res['stored']} |")
    errs = [(n, e) for n, r in report["servers"].items() for e in r["errors"]]
    if errs:
        lines += ["", "Errors:"] + [f"- {n}: {e[:300]}" for n, e in errs]
    lines += ["", plots.md_image(Path(report["plots"]["viewers"]), "viewer latency"), ""]
    s = report["sizing"]
    if s:
        t = common.TARGETS
        lines += ["## Sizing (mixed)", "",
                  f"- With {s['rate_achieved']:.1f} instances/s arriving (target "
                  f"{s['rate_target']:g}; {s['gb_per_day_at_rate']:.0f} GB/day around the "
                  f"clock), {s['viewers']} viewers open a series in {s['series_open_p95_ms']:.0f}"
                  f" ms p95 ({common.fmt_ratio(s['slowdown_p95'])} of their time alone): "
                  f"{'within' if s['within_target'] else 'OVER'} the {t['series_open_p95_ms']:.0f}"
                  f" ms target; C-STORE p95 {common.fmt(s['c_store_p95_ms'], 0)} ms "
                  f"({'within' if s['c_store_within_target'] else 'OVER'} "
                  f"{t['c_store_p95_ms']:.0f} ms).",
                  "- Raise `--rate` and `--mixed-viewers` until either target breaks: that "
                  "pair is what this machine carries at once.",
                  *common.distortion(s["other_cores"])]
    return "\n".join(lines) + "\n"
