"""Scenario ``query``: C-FIND and QIDO-RS latency per query shape as the index grows.

Orthanc's method (fill, measure, fill more) with the pieces of ``benchmarks.query``: one hpacs
data directory is filled with synthetic index records (``benchmarks.fill``, no files) to each
size in turn; at each size a real ``hpacs serve`` answers the query shapes of
``benchmarks.query`` (patient ID, name prefix, a month, modality + month, accession, 10 UIDs)
over DIMSE (C-FIND, one association, sequential) and over QIDO-RS (aiohttp, keep-alive,
sequential, the same matching keys), from a load-generator process that reports its own CPU
(``loadgen``'s query client). Orthanc, with ``--against orthanc``, is filled through its
REST API with the same studies, up to ``--orthanc-max`` instances (REST upload is slow), and
gets the same queries at each size it reaches.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from pathlib import Path

from benchmarks import fill as fill_mod
from benchmarks import query as qb
from benchmarks.suite import common, loadgen, plots, servers

#: Untimed queries per shape and protocol before the timed ones.
WARMUP_QUERIES = 5
#: A query slower than this fails the run (Orthanc's slowest at 1M take ~3 s).
QUERY_TIMEOUT_S = 600.0


def measure_peer(peer, n_studies: int, opts, bar) -> dict:
    """Per shape: C-FIND and QIDO latency summaries (ms), matches, and the client's CPU.

    The queries run in a load-generator process (``loadgen``'s query client), one at a time:
    all C-FINDs of a shape on one association, then the same keys over QIDO-RS."""
    shapes = {}
    for shape in qb.SHAPES:
        queries = qb.make_queries(shape, n_studies, opts.queries)
        shapes[shape] = [(q, qb.encode_query(q)) for q in queries]
    load = loadgen.Load(timeout=3600)
    load.add("query", {"index": 0, "host": peer.host, "port": peer.port,
                       "called_ae": peer.ae_title, "calling_ae": servers.CLIENT_AE,
                       "base": servers.dicomweb_base(peer),
                       "shapes": shapes, "warmup": WARMUP_QUERIES,
                       "timeout": QUERY_TIMEOUT_S})
    run = load.run(poll=lambda: bar.refresh())
    if run.errors:
        raise RuntimeError("query client: " + "; ".join(run.errors))
    out: dict = {}
    for rec in run.records("query"):
        n = len(rec["c_find_s"])
        c_find_wall, qido_wall = sum(rec["c_find_s"]), sum(rec["qido_s"])
        out[rec["shape"]] = {
            "c_find_ms": common.latency_summary([t * 1000 for t in rec["c_find_s"]]),
            "qido_ms": common.latency_summary([t * 1000 for t in rec["qido_s"]]),
            "matches_c_find": sum(rec["c_find_matches"]),
            "matches_qido": sum(rec["qido_matches"]),
            "client_cpu_ms": {"c_find": rec["c_find_cpu_s"] * 1000 / n,
                              "qido": rec["qido_cpu_s"] * 1000 / n},
            "client_cpu_share": {"c_find": rec["c_find_cpu_s"] / max(c_find_wall, 1e-9),
                                 "qido": rec["qido_cpu_s"] / max(qido_wall, 1e-9)},
            "queries": n,
        }
        bar.update(1)
    return out


def run(opts) -> dict:
    work = Path(opts.workdir) / "runs" / "query"

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    report = common.new_report("query", opts, Path(opts.workdir))
    report.update(fills=[], hpacs=[], orthanc=[], ok=True, errors=[], notes=[])
    bar = common.progress(len(opts.sizes) * len(qb.SHAPES) * len(opts.servers), "query",
                          opts.no_progress, unit="shape")
    try:
        data = work / "hpacs" / "hpacs-data"
        for size in opts.sizes:
            db = fill_mod.open_index(data)
            try:
                res = fill_mod.fill(db, size)
            finally:
                db.close()
            report["fills"].append({"target": size, **res.to_json()})
            common.log(f"query: hpacs index filled to {res.instances} instances "
                       f"({res.rate:.0f} records/s)")
            with servers.start("hpacs", work / "hpacs") as peer:
                row = measure_peer(peer, res.studies, opts, bar)
                stored = servers.instance_count(peer)
            report["hpacs"].append({"instances": res.instances, "studies": res.studies,
                                    "index_count": stored, "shapes": row})
            _check(report, "hpacs", report["hpacs"][-1])
        if "orthanc" in opts.servers:
            _orthanc(report, opts, work, bar)
    except Exception as exc:
        report["ok"] = False
        report["errors"].append(f"{type(exc).__name__}: {exc}"[:2000])
        common.log(f"query FAILED: {report['errors'][-1]}")
    finally:
        bar.close()
        shutil.rmtree(work, ignore_errors=True)
    _compare(report)
    report["sizing"] = sizing(report)
    report["plots"] = make_plots(report, Path(opts.out))
    return report


def _orthanc(report: dict, opts, work: Path, bar) -> None:
    """Orthanc at the sizes up to ``--orthanc-max`` (the same studies as hpacs there), or once
    at ``--orthanc-max`` if every size is larger. Each filled size is kept (see
    :func:`_orthanc_at`): its REST fill takes ~30 min at 1M, so a later run reuses it."""
    sizes = [s for s in opts.sizes if s <= opts.orthanc_max] or [opts.orthanc_max]
    bar.update(len(qb.SHAPES) * (len(opts.sizes) - len(sizes)))
    cache = Path(opts.workdir).resolve() / "orthanc-fill"
    previous: Path | None = None
    for size in sizes:
        here = cache / f"seed{fill_mod.SEED}-{size}"
        with _orthanc_at(here, size, previous) as (peer, f):
            previous = here
            how = "reused" if f.get("reused") else "filled"
            common.log(f"query: Orthanc {how} at {f['instances']} instances by REST "
                       f"({f['instances_per_s']:.0f}/s)")
            row = measure_peer(peer, f["study_count_used"], opts, bar)
            report["orthanc"].append({"instances": f["instances"],
                                      "studies": f["study_count_used"],
                                      "index_count": servers.instance_count(peer),
                                      "fill_per_s": f["instances_per_s"],
                                      "fill_reused": bool(f.get("reused")),
                                      "shapes": row})
            _check(report, "orthanc", report["orthanc"][-1])


@contextlib.contextmanager
def _orthanc_at(d: Path, size: int, previous: Path | None):
    """Orthanc in ``d`` holding the fill's first studies up to ``size`` instances, with its
    fill record.

    ``d`` keeps Orthanc's storage once the fill is complete (``fill.json`` written last); a run
    finding it starts Orthanc on it. Otherwise ``d`` is made from the previous size's directory
    (copied) and filled further. Queries leave the instances unchanged."""
    done = d / "fill.json"
    if done.exists():
        with servers.start("orthanc", d) as peer:
            yield peer, {**json.loads(done.read_text()), "reused": True}
        return
    shutil.rmtree(d, ignore_errors=True)
    first = 0  # studies already in Orthanc
    if previous is not None and (previous / "fill.json").exists():
        first = json.loads((previous / "fill.json").read_text())["study_count_used"]
        subprocess.run(["cp", "-a", "--sparse=always", str(previous), str(d)], check=True)
        (d / "fill.json").unlink()
    with servers.start("orthanc", d) as peer:
        f = qb.orthanc_fill(peer, size, first_study=first)
        done.write_text(json.dumps(f))
        yield peer, f


def _check(report: dict, server: str, row: dict) -> None:
    """The server holds what was filled, and both protocols found the same studies."""
    if row["index_count"] != row["instances"]:
        report["errors"].append(f"{server}: index holds {row['index_count']} instances, "
                                f"filled {row['instances']}")
    for shape, c in row["shapes"].items():
        if c["matches_c_find"] != c["matches_qido"]:  # the servers' own semantics differ
            report["notes"].append(f"{server} {row['instances']} {shape}: C-FIND matched "
                                   f"{c['matches_c_find']}, QIDO {c['matches_qido']}")
    report["ok"] = report["ok"] and not report["errors"]


def _compare(report: dict) -> None:
    """hpacs / Orthanc latency ratios (p95) where both hold the same studies."""
    by_studies = {h["studies"]: h for h in report["hpacs"]}
    for o in report["orthanc"]:
        h = by_studies.get(o["studies"])
        if h is None:
            continue
        o["hpacs_speedup_p95"] = {
            shape: {proto: common.ratio(o["shapes"][shape][proto].get("p95"),
                                        h["shapes"][shape][proto].get("p95"))
                    for proto in ("c_find_ms", "qido_ms")}
            for shape in qb.SHAPES}


def sizing(report: dict) -> dict:
    if not report["hpacs"]:
        return {}
    last = report["hpacs"][-1]
    worst = {proto: max(last["shapes"][s][proto]["p95"] for s in qb.SHAPES)
             for proto in ("c_find_ms", "qido_ms")}
    ok_sizes = [h["instances"] for h in report["hpacs"]
                if all(h["shapes"][s]["c_find_ms"]["p95"] <= common.TARGETS["c_find_p95_ms"]
                       and h["shapes"][s]["qido_ms"]["p95"] <= common.TARGETS["qido_p95_ms"]
                       for s in qb.SHAPES)]
    first = report["hpacs"][0]
    growth = {s: common.ratio(last["shapes"][s]["c_find_ms"]["p95"],
                              first["shapes"][s]["c_find_ms"]["p95"]) for s in qb.SHAPES}
    shares = [v for server in ("hpacs", "orthanc") for row in report[server]
              for c in row["shapes"].values() for v in c["client_cpu_share"].values()]
    return {"largest_size": last["instances"], "worst_p95_ms": worst,
            "largest_size_within_target": max(ok_sizes) if ok_sizes else 0,
            "c_find_p95_growth": growth, "client_cpu_share_max": max(shares)}


def make_plots(report: dict, out: Path) -> dict[str, str]:
    out.mkdir(parents=True, exist_ok=True)
    made = {}
    for proto, label in (("c_find_ms", "C-FIND"), ("qido_ms", "QIDO-RS")):
        series = {}
        for server in ("hpacs", "orthanc"):
            rows = report[server]
            if not rows:
                continue
            for shape in qb.SHAPES:
                series[f"{server} {shape}"] = ([r["instances"] for r in rows],
                                               [r["shapes"][shape][proto]["p95"] for r in rows])
        key = "c_find" if proto == "c_find_ms" else "qido"
        made[key] = plots.lines(out / f"query-{key}-p95.png",
                                f"{label} p95 latency vs index size", "instances in the index",
                                "p95 ms", series, logx=True,
                                hline=(common.TARGETS[f"{key}_p95_ms"], "p95 target")).name
    return made


def markdown(report: dict) -> str:
    lines = common.header_md(report, "hpacs bench query")
    lines += ["Fill (synthetic index records, no files; `benchmarks.fill`):", "",
              "| target | instances | studies | records/s |", "|---:|---:|---:|---:|"]
    for f in report["fills"]:
        lines.append(f"| {f['target']} | {f['instances']} | {f['studies']} "
                     f"| {f['records_per_s']:.0f} |")
    lines += ["", f"{report['params']['queries']} queries per shape and size, sequential, "
              f"after {WARMUP_QUERIES} untimed, from a load-generator process (C-FIND: "
              "`benchmarks.discard_receiver.FindSCU`, which counts responses without decoding "
              "them; QIDO-RS: aiohttp); latency in ms, p50 / p95 / p99. \"client CPU\" is that "
              "process's own CPU per query, and its share of the queries' wall time (how much of "
              "the latency is the client's).", "",
              "| server | instances | shape | matches/query | C-FIND p50 / p95 / p99 "
              "| QIDO p50 / p95 / p99 | client CPU ms/query (share): C-FIND, QIDO "
              "| Orthanc p95 / hpacs p95 (C-FIND, QIDO) |",
              "|---|---:|---|---:|---:|---:|---:|---:|"]
    for server in ("hpacs", "orthanc"):
        for row in report[server]:
            for shape in qb.SHAPES:
                c = row["shapes"][shape]
                sp = row.get("hpacs_speedup_p95", {}).get(shape)
                lines.append(
                    f"| {server} | {row['instances']} | {shape} "
                    f"| {c['matches_c_find'] / c['queries']:.1f} | {_pq(c['c_find_ms'])} "
                    f"| {_pq(c['qido_ms'])} | {_client(c)} | "
                    + (f"{common.fmt_ratio(sp['c_find_ms'])}, {common.fmt_ratio(sp['qido_ms'])}"
                       if sp else "-") + " |")
    if report["errors"]:
        lines += ["", "Errors:"] + [f"- {e[:300]}" for e in report["errors"]]
    if report["notes"]:
        lines += ["", "Notes:"] + [f"- {e[:300]}" for e in report["notes"]]
    p = report["plots"]
    lines += ["", plots.md_image(Path(p["c_find"]), "C-FIND p95 vs index size"),
              plots.md_image(Path(p["qido"]), "QIDO p95 vs index size"), ""]
    s = report["sizing"]
    if s:
        t = common.TARGETS
        lines += ["## Sizing (query)", "",
                  f"- At {s['largest_size']} instances the slowest shape answers in "
                  f"{s['worst_p95_ms']['c_find_ms']:.1f} ms p95 over C-FIND and "
                  f"{s['worst_p95_ms']['qido_ms']:.1f} ms over QIDO-RS.",
                  f"- Largest measured index with every shape within C-FIND p95 < "
                  f"{t['c_find_p95_ms']:.0f} ms and QIDO p95 < {t['qido_p95_ms']:.0f} ms: "
                  f"{s['largest_size_within_target']} instances.",
                  "- C-FIND p95 growth from the smallest to the largest index: "
                  + ", ".join(f"{k} {common.fmt_ratio(v)}"
                              for k, v in s["c_find_p95_growth"].items()) + ".",
                  f"- The load generator's own CPU was at most {s['client_cpu_share_max']:.0%} "
                  "of a query's wall time (C-FIND and QIDO-RS, any shape, size and server); "
                  "the latencies above include it, so they overstate the servers' own by up "
                  "to that share."]
    return "\n".join(lines) + "\n"


def _client(c: dict) -> str:
    ms, share = c["client_cpu_ms"], c["client_cpu_share"]
    return (f"{ms['c_find']:.2f} ({share['c_find']:.0%}), "
            f"{ms['qido']:.2f} ({share['qido']:.0%})")


def _pq(d: dict) -> str:
    return f"{d['p50']:.2f} / {d['p95']:.2f} / {d['p99']:.2f}"
