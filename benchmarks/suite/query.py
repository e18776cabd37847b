"""Scenario ``query``: C-FIND and QIDO-RS latency per query shape as the index grows.

Orthanc's method (fill, measure, fill more) with the pieces of ``benchmarks.query``: one hpacs
data directory is filled with synthetic index records (``benchmarks.fill``, no files) to each
size in turn; at each size a real ``hpacs serve`` answers the query shapes of
``benchmarks.query`` (patient ID, name prefix, a month, modality + month, accession, 10 UIDs)
over DIMSE (pynetdicom, one association, sequential) and over QIDO-RS (aiohttp, keep-alive,
sequential, the same matching keys). Orthanc, with ``--against orthanc``, is filled through its
REST API with the same studies, up to ``--orthanc-max`` instances (REST upload is slow), and
gets the same queries at each size it reaches.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import time
import urllib.parse
from pathlib import Path

from benchmarks import fill as fill_mod
from benchmarks import query as qb
from benchmarks.suite import common, plots, servers

#: QIDO return keys beyond the defaults, so both protocols return the same attributes.
INCLUDE = "ModalitiesInStudy,NumberOfStudyRelatedSeries,NumberOfStudyRelatedInstances"


def qido_params(keys: dict[str, str]) -> str:
    params = {k: v.replace("\\", ",") for k, v in keys.items()}
    params["includefield"] = INCLUDE
    return urllib.parse.urlencode(params)


async def _qido_times(base: str, queries: list[dict[str, str]]) -> tuple[list[float], list[int]]:
    import aiohttp

    times, counts = [], []
    async with aiohttp.ClientSession(auto_decompress=False,
                                     headers={"Accept-Encoding": "identity"}) as s:
        for q in queries:
            t0 = time.perf_counter()
            async with s.get(f"{base}/studies?{qido_params(q)}",
                             headers={"Accept": "application/dicom+json"}) as r:
                body = await r.read()
                if r.status not in (200, 204):
                    raise RuntimeError(f"QIDO {q}: HTTP {r.status}: {body[:200]!r}")
            times.append(time.perf_counter() - t0)
            counts.append(body.count(b'"0020000D"'))  # one StudyInstanceUID per match
    return times, counts


#: Warm-up queries may take this long before a client stall is assumed (Orthanc at 1M).
WARMUP_TIMEOUT_S = 120.0


def measure_peer(peer, n_studies: int, opts, bar) -> dict:
    """Per shape: C-FIND and QIDO latency summaries (ms) and matches."""
    out: dict = {}
    client = qb.FindClient(peer.host, peer.port, peer.ae_title)
    try:
        for shape in qb.SHAPES:
            queries = qb.make_queries(shape, n_studies, opts.queries)
            client.set_stall_timeout(WARMUP_TIMEOUT_S)
            warmup, _ = qb.time_dimse(client, queries[:5])  # untimed
            client.calibrate(warmup)
            t_dimse, n_dimse = qb.time_dimse(client, queries)
            asyncio.run(_qido_times(servers.dicomweb_base(peer), queries[:5]))
            t_qido, n_qido = asyncio.run(_qido_times(servers.dicomweb_base(peer), queries))
            # pynetdicom now and then loses a pending response (~1 query in 300 here, against
            # hpacs and Orthanc alike; never with dcmtk findscu --repeat): count it again.
            recounted = 0
            for i, q in enumerate(queries):
                if n_dimse[i] != n_qido[i]:
                    recounted += 1
                    n_dimse[i] = max(client.find_retrying(qb.to_dataset(q))[1] for _ in (0, 1))
            out[shape] = {
                "c_find_ms": common.latency_summary([t * 1000 for t in t_dimse]),
                "qido_ms": common.latency_summary([t * 1000 for t in t_qido]),
                "matches_c_find": sum(n_dimse), "matches_qido": sum(n_qido),
                "c_find_recounted": recounted,
                "queries": len(queries),
            }
            bar.update(1)
    finally:
        client.close()
        out["_stalls"] = client.stalls
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
                                    "index_count": stored, "stalls": row.pop("_stalls"),
                                    "shapes": row})
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
                                      "stalls": row.pop("_stalls"), "shapes": row})
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
        if c["c_find_recounted"]:
            report["notes"].append(f"{server} {row['instances']} {shape}: "
                                   f"{c['c_find_recounted']} C-FIND answer(s) short of QIDO's, "
                                   "counted again")
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
    return {"largest_size": last["instances"], "worst_p95_ms": worst,
            "largest_size_within_target": max(ok_sizes) if ok_sizes else 0,
            "c_find_p95_growth": growth}


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
              "after 5 untimed; latency in ms, p50 / p95 / p99. C-FIND times include the "
              "pynetdicom client's own cost (several ms per query: `python -m "
              "benchmarks.query --findscu-repeat N` measures without it).", "",
              "| server | instances | shape | matches/query | C-FIND p50 / p95 / p99 "
              "| QIDO p50 / p95 / p99 | Orthanc p95 / hpacs p95 (C-FIND, QIDO) |",
              "|---|---:|---|---:|---:|---:|---:|"]
    for server in ("hpacs", "orthanc"):
        for row in report[server]:
            for shape in qb.SHAPES:
                c = row["shapes"][shape]
                sp = row.get("hpacs_speedup_p95", {}).get(shape)
                lines.append(
                    f"| {server} | {row['instances']} | {shape} "
                    f"| {c['matches_c_find'] / c['queries']:.1f} | {_pq(c['c_find_ms'])} "
                    f"| {_pq(c['qido_ms'])} | "
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
                              for k, v in s["c_find_p95_growth"].items()) + "."]
    return "\n".join(lines) + "\n"


def _pq(d: dict) -> str:
    return f"{d['p50']:.2f} / {d['p95']:.2f} / {d['p99']:.2f}"
