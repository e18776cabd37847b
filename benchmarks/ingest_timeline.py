"""The ack chain of one association, per instance: where the time between two C-STOREs goes.

    python -m benchmarks.ingest_timeline [--files 1000] [--rounds 2] [--reference REF]

Each round starts a fresh ``hpacs serve`` with its ingest tracer on (``HPACS_INGEST_TRACE``,
hpacs/store/trace.py: monotonic stamps from the event loop and from the C writer and commit
threads), sends the CT corpus over ONE association with dcmtk storescu (``benchmarks.ingest
.drive``), stops the server (which writes the stamps) and turns them into stages: the time from
one stamp of the chain to the next, per instance. The report gives the median and p90 of each
stage over every instance of every round (>= 500 instances), and which of them are ours (the
server's) and which are the client's (response written -> next command in). Stages that run in
parallel with the loop's own work (the writer's last write and the early fdatasync, while the
loop validates) are listed apart from the chain's critical path, so the table reads as: where
does the cycle of one instance go. With ``--reference REF`` (a commit that has the tracer, e.g.
26dc74f), the same is measured for hpacs at REF (``peers.reference_tree``), rounds interleaved
and alternating which side goes first, and the report puts both sides side by side.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from benchmarks import corpus as corpus_mod
from benchmarks import peers as peers_mod
from benchmarks.ingest import (
    DEFAULT_OUT,
    DEFAULT_WORKDIR,
    drive,
    machine_info,
    split,
    warm,
    write_report,
)

#: (name, from stamp, to stamp, on the critical path of the cycle). A "from" given as a tuple
#: means the later of those stamps (a step waiting for two others).
STAGES: tuple[tuple[str, object, str, bool], ...] = (
    ("receive: command in -> last fragment in", "cmd", "last", True),
    ("loop: last fragment -> store task runs", "last", "finish", True),
    ("loop: validate, record, duplicate check -> commit queued", "finish", "validated", True),
    ("writer thread: last fragment -> last write done", "last", "written", False),
    ("commit thread: last write done -> early fdatasync done", "written", "presynced", False),
    ("hand-off: commit queued and fdatasync done -> commit taken by a thread",
     ("validated", "presynced"), "taken", True),
    ("commit thread: second fdatasync", "taken", "synced", True),
    ("commit thread: rename + directory fsync", "synced", "renamed", True),
    ("hand-off: commit done -> loop takes the completion (eventfd)", "renamed", "settled", True),
    ("loop: completion -> store task resumes", "settled", "resumed", True),
    ("loop: index commit (and the task's wake-ups)", "resumed", "indexed", True),
    ("loop: response encoded and written", "indexed", "responded", True),
    ("client: response written -> next command in", "responded", "next", True),
)
SUMMARY = (
    ("cycle: command in -> next command in", "cmd", "next"),
    ("server share: last fragment in -> response written", "last", "responded"),
    ("data on disk: last fragment in -> early fdatasync done", "last", "presynced"),
)


def _at(rec: dict, key: object) -> float | None:
    if isinstance(key, tuple):
        values = [rec.get(k) for k in key]
        return None if None in values else max(values)  # type: ignore[type-var]
    return rec.get(key)  # type: ignore[arg-type]


def load(path: Path) -> list[dict]:
    """The tracer's records, each with ``next``: the next command on its association."""
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    by_assoc: dict[int, list[dict]] = {}
    for rec in records:
        by_assoc.setdefault(rec["assoc"], []).append(rec)
    for recs in by_assoc.values():
        recs.sort(key=lambda r: r["cmd"])
        for a, b in itertools.pairwise(recs):
            a["next"] = b["cmd"]
    return records


def stage_values(records: list[dict], start: object, end: str) -> list[float]:
    """Milliseconds from ``start`` to ``end`` for every record that has both."""
    out = []
    for rec in records:
        a, b = _at(rec, start), rec.get(end)
        if a is not None and b is not None:
            out.append((b - a) * 1e3)
    return out


def _stats(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    p90 = statistics.quantiles(values, n=10)[-1] if len(values) > 1 else values[0]
    return {"n": len(values), "median_ms": statistics.median(values), "p90_ms": p90,
            "mean_ms": statistics.fmean(values)}


def analyse(records: list[dict]) -> dict:
    stages = [{"stage": name, "critical": crit, **_stats(stage_values(records, a, b))}
              for name, a, b, crit in STAGES]
    summary = [{"stage": name, **_stats(stage_values(records, a, b))}
               for name, a, b in SUMMARY]
    return {"instances": len(records), "stages": stages, "summary": summary}


def one_round(paths: list[Path], rundir: Path, timeout: float,
              tree: Path | None = None, assocs: int = 1) -> tuple[list[dict], float]:
    rundir.mkdir(parents=True)
    trace_file = rundir / "trace.jsonl"
    os.sync()
    with peers_mod.hpacs(rundir, tree=tree,
                         env={"HPACS_INGEST_TRACE": str(trace_file)}) as peer:
        wall, _cpu, codes = drive(peer, split(paths, assocs), timeout=timeout)
        stored = peer.stored_count()
    if any(codes) or stored != len(paths):
        raise RuntimeError(f"send failed: exit codes {codes}, {stored} of {len(paths)} stored")
    return load(trace_file), len(paths) / wall


def markdown(report: dict) -> str:
    m = report["meta"]
    sides = report["sides"]
    names = list(sides)
    first = sides[names[0]]["analysis"]
    lines = [f"Date: {m['date']}  ", f"Command: `{m['command']}`  ",
             f"Commit: {m['commit']}  ",
             f"Machine: {m['machine']['cpu']}, {m['machine']['cpus']} CPUs, "
             f"Linux {m['machine']['kernel']}, {m['machine']['filesystem']}  "]
    for name in names:
        side = sides[name]
        lines.append(f"{name}: files/s per round "
                     + ", ".join(f"{x:.0f}" for x in side["files_per_s"])
                     + f"; {side['analysis']['instances']} instances traced  ")
    n = m.get("assocs", 1)
    lines.append(("One association" if n == 1 else f"{n} concurrent associations")
                 + " (dcmtk storescu); ms per instance, median (p90).")
    lines += ["", "| stage | on the cycle's path | " + " | ".join(names) + " |",
              "|---|:---:|" + "---:|" * len(names)]

    def cell(s: dict) -> str:
        return f"{s['median_ms']:.3f} ({s['p90_ms']:.3f})" if s["n"] else "-"

    for i, st in enumerate(first["stages"]):
        row = [cell(sides[n]["analysis"]["stages"][i]) for n in names]
        lines.append(f"| {st['stage']} | {'yes' if st['critical'] else 'parallel'} | "
                     + " | ".join(row) + " |")
    for i, st in enumerate(first["summary"]):
        row = [f"**{cell(sides[n]['analysis']['summary'][i])}**" for n in names]
        lines.append(f"| **{st['stage']}** | | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def _commit() -> str:
    try:
        return subprocess.run(["git", "-C", str(peers_mod.REPO), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.ingest_timeline", description=__doc__)
    ap.add_argument("--files", type=int, default=1000, help="CT files in the corpus (1000)")
    ap.add_argument("--rounds", type=int, default=2, help="fresh servers, one send each (2)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--corpus", type=Path, default=None)
    ap.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--assocs", type=int, default=1,
                    help="concurrent storescu associations (1); stages stay per instance")
    ap.add_argument("--reference", default=None,
                    help="git ref of an A/B reference side (it must have the tracer)")
    args = ap.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    cfg = corpus_mod.ct_only(args.files, seed=args.seed)
    cdir = args.corpus or args.workdir / f"corpus-ct-{args.files}-seed{args.seed}"
    paths = corpus_mod.corpus_paths(cdir, corpus_mod.ensure(cfg, cdir))
    warm(paths)
    work = args.workdir / "ingest-timeline"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    trees: dict[str, Path | None] = {"hpacs": None}
    meta: dict = {"date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                  "command": "python -m benchmarks.ingest_timeline " + " ".join(argv),
                  "commit": _commit(), "machine": machine_info(), "rounds": args.rounds,
                  "files": len(paths), "assocs": args.assocs}
    if args.reference:
        tree = work / "reference"
        meta["reference"] = peers_mod.reference_tree(args.reference, tree, build=True)
        trees[f"hpacs-ref ({meta['reference']['commit']})"] = tree
    records: dict[str, list[dict]] = {name: [] for name in trees}
    rates: dict[str, list[float]] = {name: [] for name in trees}
    for rnd in range(args.rounds):
        order = list(trees) if rnd % 2 == 0 else list(reversed(trees))
        for k, name in enumerate(order):
            recs, rate = one_round(paths, work / f"r{rnd}-{k}", args.timeout, trees[name],
                                   args.assocs)
            for rec in recs:
                rec["assoc"] = f"{rnd}-{rec['assoc']}"
            records[name] += recs
            rates[name].append(rate)
            print(f"{name} round {rnd}: {rate:.0f} files/s, {len(recs)} instances traced",
                  file=sys.stderr, flush=True)
            shutil.rmtree(work / f"r{rnd}-{k}", ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    report = {"meta": meta,
              "sides": {name: {"files_per_s": rates[name], "analysis": analyse(records[name])}
                        for name in trees}}
    report["markdown"] = markdown(report)
    files = write_report(args.out, "ingest-timeline", report)
    print(report["markdown"])
    print("wrote " + " ".join(files), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
