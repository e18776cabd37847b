"""C-FIND at 1M instances, this tree (B) against a reference commit (A), interleaved.

``python -m benchmarks.query_ab --reference edbde3d``

One index is filled (``benchmarks.fill``, ``--instances``) and copied (LMDB's compacting copy,
never a plain file copy of the sparse data.mdb) so each side has its own data directory; the
reference is the ``git archive`` of ``--reference`` with this tree's compiled extensions copied
in where their sources are identical and the others compiled in it (never their twins), run
with this repository's venv. Query shapes and values
are ``benchmarks.query``'s (Study Root, STUDY level, 12 return keys), ``--queries`` per shape.
Every round measures, alternating which side goes first:

1. **in-process** (``benchmarks/find_cpu.py`` under each tree): parse + engine + encoding of
   every match, wall and thread-CPU ms per query (median of ``--repeat``): the server's own
   work without the network;
2. **through dcmtk findscu** against a running ``hpacs serve`` of each side, query by query,
   A and B alternating: ms per query = (wall of ``findscu --repeat 1+K`` - wall of
   ``--repeat 1``) / K, start-up and association cancelled out;
3. the servers' own ``find.done`` log lines for those queries: ms (wall inside the server,
   waiting for the client to read included) and, on B, the loop thread's CPU ms;
4. **through the fast client** (``benchmarks.query.FindClient``: our upper layer, responses
   counted without decoding them), one association per side, A and B alternating query by
   query: ms per query and the client's own CPU per query.

Reported per shape and side: matches, p50/p99 over queries (median over rounds), and µs per
match. The work directory (two 1M indexes, a few GB) is deleted at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import fill as fill_mod
from benchmarks import peers as peers_mod
from benchmarks import query as query_mod
from benchmarks.ingest import machine_info

REPO = Path(__file__).resolve().parent.parent
SIDES = ("A", "B")


def which_hpacs(tree: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([str(REPO / ".venv" / "bin" / "python"), "-c",
                           "import hpacs; print(hpacs.__file__)"], env=env,
                          cwd=tempfile.gettempdir(), check=True, capture_output=True,
                          text=True).stdout.strip()


def in_process(tree: Path, index: Path, queries: list[tuple[str, dict]], repeat: int,
               work: Path) -> list[dict]:
    spec = work / "find_cpu.json"
    spec.write_text(json.dumps({"index": str(index), "repeat": repeat, "queries": [
        {"shape": shape, "identifier": query_mod.encode_query(q).hex()} for shape, q in queries]}))
    env = {**os.environ, "PYTHONPATH": str(tree)}
    r = subprocess.run([str(REPO / ".venv" / "bin" / "python"), str(REPO / "benchmarks" /
                        "find_cpu.py"), str(spec)], env=env, cwd=work, check=True,
                       capture_output=True, text=True)
    out = json.loads(r.stdout)
    if not out["hpacs"].startswith(str(tree)):
        raise RuntimeError(f"find_cpu imported {out['hpacs']}, not the tree {tree}")
    return out["results"]


def findscu_ms(peer: peers_mod.Peer, keys: dict[str, str], repeat: int) -> float:
    one = query_mod._findscu_seconds(peer, keys, 1)
    many = query_mod._findscu_seconds(peer, keys, 1 + repeat)
    return max(0.0, many - one) / repeat * 1000


def done_lines(log: Path, start: int) -> tuple[list[dict], int]:
    """``find.done`` entries of a server log after byte ``start``, and the new end."""
    data = log.read_bytes()
    out = []
    for line in data[start:].splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == "find.done":
            out.append(entry)
    return out, len(data)


def stats(values: list[float]) -> dict:
    if not values:
        return {"p50": None, "p99": None, "n": 0}
    return {"p50": statistics.median(values), "p99": query_mod.p99(values), "n": len(values)}


def per_match_us(ms: list[float], matches: list[int]) -> float | None:
    xs = [m * 1000 / n for m, n in zip(ms, matches, strict=True) if n >= 20]
    return statistics.median(xs) if xs else None


def run(args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="query-ab-", dir=args.workdir))
    report: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S"),
                    "command": "python -m benchmarks.query_ab " + " ".join(sys.argv[1:]),
                    "machine": machine_info(), "B": query_mod.hpacs_commit(),
                    "params": {k: str(v) for k, v in vars(args).items()}}
    try:
        trees = {"A": work / "ref-tree", "B": REPO}
        report["A"] = peers_mod.reference_tree(args.reference, trees["A"], build=True)
        for side in SIDES:
            if not which_hpacs(trees[side]).startswith(str(trees[side])):
                raise RuntimeError(f"side {side} would not run the tree {trees[side]}")
        dirs = {s: work / s for s in SIDES}
        db = fill_mod.open_index(dirs["B"] / "hpacs-data")
        try:
            res = fill_mod.fill(db, args.instances)
            (dirs["A"] / "hpacs-data" / "index").mkdir(parents=True)
            db.env.copy(str(dirs["A"] / "hpacs-data" / "index"), compact=True)
        finally:
            db.close()
        report["fill"] = res.to_json()
        print(f"fill: {res.instances} instances, {res.studies} studies", file=sys.stderr)
        shapes = args.shapes
        queries = [(shape, q) for shape in shapes
                   for q in query_mod.make_queries(shape, res.studies, args.queries)]
        indexes = {s: dirs[s] / "hpacs-data" / "index" for s in SIDES}

        inproc: dict[str, list[list[dict]]] = {s: [] for s in SIDES}
        fs: dict[str, list[list[float]]] = {s: [] for s in SIDES}
        logs: dict[str, list[dict]] = {s: [] for s in SIDES}
        for rnd in range(args.rounds):
            order = SIDES if rnd % 2 == 0 else SIDES[::-1]
            for side in order:
                inproc[side].append(in_process(trees[side], indexes[side], queries,
                                               args.repeat, work))
            print(f"round {rnd}: in-process done", file=sys.stderr)
        with peers_mod.hpacs(dirs["A"], tree=trees["A"]) as pa, \
                peers_mod.hpacs(dirs["B"], tree=trees["B"]) as pb:
            peers = {"A": pa, "B": pb}
            for shape in shapes:  # warm both servers' caches the same way
                for side in SIDES:
                    findscu_ms(peers[side], query_mod.make_queries(shape, res.studies, 1)[0], 1)
            offsets = {s: done_lines(peers[s].log, 0)[1] for s in SIDES}
            for rnd in range(args.rounds):
                times = {s: [] for s in SIDES}
                for i, (_shape, q) in enumerate(queries):
                    order = SIDES if (i + rnd) % 2 == 0 else SIDES[::-1]
                    for side in order:
                        times[side].append(findscu_ms(peers[side], q, args.findscu_repeat))
                for side in SIDES:
                    fs[side].append(times[side])
                    lines, offsets[side] = done_lines(peers[side].log, offsets[side])
                    logs[side].extend(lines)
                print(f"round {rnd}: findscu done", file=sys.stderr)
            fast, fast_cpu = fast_client_rounds(peers, queries, args.rounds)
        report["results"] = summarize(shapes, queries, inproc, fs, logs, args)
        for shape, row in report["results"].items():
            idx = [i for i, (s, _) in enumerate(queries) if s == shape]
            for side in SIDES:
                row[side]["fast_ms"] = _med([stats([r[i] for i in idx]) for r in fast[side]])
                row[side]["fast_us_per_match"] = _median_or_none(
                    [per_match_us([r[i] for i in idx], row[side]["matches_list"])
                     for r in fast[side]])
                row[side]["fast_client_cpu_ms"] = statistics.median(
                    [fast_cpu[side][k][i] for k in range(args.rounds) for i in idx])
                del row[side]["matches_list"]
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return report


def fast_client_rounds(peers: dict, queries: list[tuple[str, dict]], rounds: int
                       ) -> tuple[dict[str, list[list[float]]], dict[str, list[list[float]]]]:
    """ms per query through ``benchmarks.query.FindClient`` (our upper layer, responses
    counted undecoded: a few µs per match, where findscu spends ~26), one association per
    side, A and B alternating query by query; and the client's own CPU ms per query."""
    clients = {s: query_mod.FindClient(p.host, p.port, p.ae_title) for s, p in peers.items()}
    try:
        idents = [query_mod.encode_query(q) for _, q in queries]
        for side in SIDES:
            clients[side].time(idents[:20])  # untimed
        ms: dict[str, list[list[float]]] = {s: [] for s in SIDES}
        cpu: dict[str, list[list[float]]] = {s: [] for s in SIDES}
        for rnd in range(rounds):
            times: dict[str, list[float]] = {s: [] for s in SIDES}
            cpus: dict[str, list[float]] = {s: [] for s in SIDES}
            for i, ident in enumerate(idents):
                for side in (SIDES if (i + rnd) % 2 == 0 else SIDES[::-1]):
                    before = clients[side].cpu_s
                    times[side].append(clients[side].time([ident])[0][0] * 1000)
                    cpus[side].append((clients[side].cpu_s - before) * 1000)
            for side in SIDES:
                ms[side].append(times[side])
                cpu[side].append(cpus[side])
            print(f"round {rnd}: fast client done", file=sys.stderr)
        return ms, cpu
    finally:
        for c in clients.values():
            c.close()


def summarize(shapes: list[str], queries: list[tuple[str, dict]], inproc: dict, fs: dict,
              logs: dict, args: argparse.Namespace) -> dict:
    out: dict = {}
    for shape in shapes:
        idx = [i for i, (s, _) in enumerate(queries) if s == shape]
        row: dict = {}
        for side in SIDES:
            rounds = inproc[side]
            matches = [rounds[0][i]["matches"] for i in idx]
            wall = [stats([r[i]["wall_ms"] for i in idx]) for r in rounds]
            cpu = [stats([r[i]["cpu_ms"] for i in idx]) for r in rounds]
            cpu_us = [per_match_us([r[i]["cpu_ms"] for i in idx], matches) for r in rounds]
            find = [stats([r[i] for i in idx]) for r in fs[side]]
            find_us = [per_match_us([r[i] for i in idx], matches) for r in fs[side]]
            # the server logs: one find.done per findscu run (1 + 1 + K per query and round);
            # the last 1 + K of each query are the repeated ones
            per_query = 2 + args.findscu_repeat
            entries = [e for k, e in enumerate(logs[side])
                       if (k // per_query) % len(queries) in idx]
            srv_ms = [e["ms"] for e in entries]
            srv_n = [e["matches"] for e in entries]
            row[side] = {
                "matches_median": statistics.median(matches), "matches_max": max(matches),
                "matches_list": matches,
                "inproc_wall_ms": _med(wall), "inproc_cpu_ms": _med(cpu),
                "inproc_cpu_us_per_match": _median_or_none(cpu_us),
                "findscu_ms": _med(find), "findscu_us_per_match": _median_or_none(find_us),
                "server_ms": stats(srv_ms),
                "server_us_per_match": per_match_us(srv_ms, srv_n),
                "server_cpu_us_per_match": per_match_us([e["cpu_ms"] for e in entries], srv_n)
                if entries and all("cpu_ms" in e for e in entries) else None,
            }
        out[shape] = row
    return out


def _median_or_none(xs: list[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return statistics.median(vals) if vals else None


def _med(per_round: list[dict]) -> dict:
    """p50 and p99 of each round, the median over rounds (and their range)."""
    out = {}
    for k in ("p50", "p99"):
        vals = [r[k] for r in per_round if r[k] is not None]
        out[k] = statistics.median(vals) if vals else None
        out[k + "_range"] = [min(vals), max(vals)] if vals else None
    return out


def _f(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def markdown(report: dict) -> str:
    m = report["machine"]
    a = report["A"]
    lines = [f"# C-FIND A/B at {report['fill']['instances']} instances ({report['started']})", "",
             f"Machine: {m['cpu']}, {m['cpus']} CPUs, {m['memory']}, kernel {m['kernel']}, "
             f"Python {m['python']}.", "",
             f"Command: `{report['command']}`", "",
             f"A = reference {a['ref']} ({a['commit']}; compiled extensions copied: "
             f"{', '.join(a['extensions_copied']) or 'none'}; built: "
             f"{', '.join(a.get('extensions_built', [])) or 'none'}); B = this tree, "
             f"{report['B']}.", "",
             "ms per query, p50 / p99 over the queries of a shape (median over rounds); µs per "
             "match: median over the queries with >= 20 matches.", "",
             "| shape | side | matches (median, max) | in-process wall p50 / p99 | in-process "
             "CPU p50 / p99 | CPU µs/match | findscu p50 / p99 | findscu µs/match | server "
             "log p50 / p99 | server µs/match | server CPU µs/match | fast client p50 / p99 "
             "| fast client µs/match | its CPU ms/query |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for shape, row in report["results"].items():
        for side in SIDES:
            r = row[side]
            lines.append(
                f"| {shape} | {side} | {r['matches_median']:.0f}, {r['matches_max']} | "
                f"{_f(r['inproc_wall_ms']['p50'])} / {_f(r['inproc_wall_ms']['p99'])} | "
                f"{_f(r['inproc_cpu_ms']['p50'])} / {_f(r['inproc_cpu_ms']['p99'])} | "
                f"{_f(r['inproc_cpu_us_per_match'], 1)} | "
                f"{_f(r['findscu_ms']['p50'])} / {_f(r['findscu_ms']['p99'])} | "
                f"{_f(r['findscu_us_per_match'], 1)} | "
                f"{_f(r['server_ms']['p50'])} / {_f(r['server_ms']['p99'])} | "
                f"{_f(r['server_us_per_match'], 1)} | {_f(r['server_cpu_us_per_match'], 1)} | "
                f"{_f(r['fast_ms']['p50'])} / {_f(r['fast_ms']['p99'])} | "
                f"{_f(r['fast_us_per_match'], 1)} | {_f(r['fast_client_cpu_ms'], 3)} |")
    lines += ["", f"Target p99 <= {query_mod.TARGET_P99_MS:g} ms (median over rounds of each "
              "round's p99), through findscu and through the fast client:", ""]
    for shape, row in report["results"].items():
        verdict = []
        for side in SIDES:
            for key, label in (("findscu_ms", "findscu"), ("fast_ms", "fast client")):
                v = row[side][key]["p99"]
                ok = v is not None and v <= query_mod.TARGET_P99_MS
                verdict.append(f"{side} {label} {_f(v)} ms {'met' if ok else 'NOT met'}")
        lines.append(f"- {shape}: " + ", ".join(verdict))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reference", default="edbde3d", help="git ref of side A")
    ap.add_argument("--instances", type=int, default=1_000_000)
    ap.add_argument("--shapes", default=",".join(query_mod.SHAPES),
                    type=lambda s: [x for x in s.split(",") if x])
    ap.add_argument("--queries", type=int, default=25, help="per shape")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="in-process runs per query")
    ap.add_argument("--findscu-repeat", type=int, default=4)
    ap.add_argument("--workdir", type=Path, default=query_mod.DEFAULT_WORKDIR)
    ap.add_argument("--out", type=Path, default=query_mod.DEFAULT_OUT)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    report = run(args)
    query_mod.write_stamped(args.out, "query-ab", report, markdown(report))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TCP_NODELAY", "1")
    sys.exit(main())
