"""Where the server's CPU goes per ingested instance: user vs kernel, loop thread vs other
threads, and the kernel's own threads (writeback, journal), read from /proc around each run.

    python -m benchmarks.ingest_cpu [--files 1000] [--assocs 1,4] [--rounds 3]
                                    [--reference 5e38c19] [--storescp]

Each round starts a fresh ``hpacs serve`` (``benchmarks.peers.hpacs``) per side, sends the CT
corpus with dcmtk storescu over N associations (``benchmarks.ingest.drive``) and diffs, from
before to after the send: every thread of the server's session (``/proc/PID/task/*/stat``:
utime = user, stime = kernel) grouped as the event loop (the main thread), the commit threads
(named ``hpacs-commit``) and the other threads (the I/O executor, the index writer's thread,
helper processes); the kernel threads (children of kthreadd: ``kworker`` writeback, ``jbd2``
journal, others); and the storescu processes. Numbers are CPU microseconds per instance
(median over rounds; /proc ticks are 10 ms, so runs of ~1000 instances resolve ~10 µs). With
``--reference`` the same is measured for hpacs at that commit (``peers.reference_tree``),
rounds interleaved, alternating which side goes first. On a shared machine the per-instance CPU
of the server is far steadier than its throughput; the report says how busy the machine was.
With ``--storescp``, dcmtk ``storescp --fork`` is measured the same way, as a third side: its
accepting process is the "loop" and the processes it forks per association, once reaped, are
"reaped children" (their user and kernel time, from the parent's cutime/cstime).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

from benchmarks import corpus as corpus_mod
from benchmarks import peers as peers_mod
from benchmarks.ingest import (
    DEFAULT_OUT,
    DEFAULT_WORKDIR,
    _int_list,
    drive,
    machine_cpu_seconds,
    machine_info,
    split,
    warm,
    write_report,
)

_CLK_TCK = os.sysconf("SC_CLK_TCK")
GROUPS = ("loop", "commit threads", "other threads", "kernel threads", "client")


def _stat_fields(path: str) -> list[bytes] | None:
    try:
        with open(path, "rb") as f:
            stat = f.read()
    except OSError:
        return None
    head, _, rest = stat.rpartition(b")")
    return [head.partition(b"(")[2], *rest.split()]  # [comm, state, ppid, pgrp, session, ...]


def server_threads(sid: int) -> dict[tuple[int, int], tuple[str, int, int]]:
    """(pid, tid) -> (group, user ticks, kernel ticks) of every thread in session ``sid``."""
    out = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        proc = _stat_fields(f"/proc/{entry.name}/stat")
        if proc is None or int(proc[4]) != sid:
            continue
        pid = int(entry.name)
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in map(int, tids):
            f = _stat_fields(f"/proc/{pid}/task/{tid}/stat")
            if f is None:
                continue
            comm = f[0].decode(errors="replace")
            if pid == sid and tid == pid:
                group = "loop"
                # children it forked and reaped (storescp --fork: one per association)
                out[(pid, -1)] = ("reaped children", int(proc[14]), int(proc[15]))
            elif comm.startswith("hpacs-commit"):
                group = "commit threads"
            else:
                group = "other threads"
            out[(pid, tid)] = (group, int(f[12]), int(f[13]))  # utime, stime (fields 14, 15)
    return out


def kernel_threads() -> dict[int, tuple[str, int]]:
    """pid -> (name, ticks) of the kernel's threads (children of kthreadd)."""
    out = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        f = _stat_fields(f"/proc/{entry.name}/stat")
        if f is None or (int(f[2]) != 2 and entry.name != "2"):
            continue
        out[int(entry.name)] = (f[0].decode(errors="replace"), int(f[12]) + int(f[13]))
    return out


def _kernel_kind(name: str) -> str:
    for prefix in ("kworker", "jbd2", "ksoftirqd"):
        if name.startswith(prefix):
            return prefix
    return "other"


def measure(peer: peers_mod.Peer, parts: list[list[Path]], timeout: float) -> dict:
    """One send; CPU seconds by group (user/kernel) and the wall time."""
    sid = peer.proc.pid
    t0, k0, m0 = server_threads(sid), kernel_threads(), machine_cpu_seconds()
    wall, client_cpu, codes = drive(peer, parts, timeout=timeout)
    t1, k1, m1 = server_threads(sid), kernel_threads(), machine_cpu_seconds()
    cpu: dict[str, float] = {}
    for key, (group, user, kern) in t1.items():
        _, user0, kern0 = t0.get(key, (group, 0, 0))
        cpu[f"{group} user"] = cpu.get(f"{group} user", 0.0) + (user - user0) / _CLK_TCK
        cpu[f"{group} kernel"] = cpu.get(f"{group} kernel", 0.0) + (kern - kern0) / _CLK_TCK
    for pid, (name, ticks) in k1.items():
        kind = f"kernel threads: {_kernel_kind(name)}"
        cpu[kind] = cpu.get(kind, 0.0) + (ticks - k0.get(pid, (name, 0))[1]) / _CLK_TCK
    cpu["client"] = client_cpu
    return {"wall_s": wall, "codes": codes, "cpu_s": cpu, "machine_cpu_s": m1 - m0,
            "stored": peer.stored_count()}


def run(args: argparse.Namespace) -> dict:
    work = args.workdir / "ingest-cpu"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    cfg = corpus_mod.ct_only(args.files, seed=args.seed)
    cdir = args.corpus or args.workdir / f"corpus-ct-{args.files}-seed{args.seed}"
    manifest = corpus_mod.ensure(cfg, cdir)
    paths = corpus_mod.corpus_paths(cdir, manifest)
    warm(paths)
    sides: dict[str, Path | None] = {"hpacs": None}
    report: dict = {"meta": {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": "python -m benchmarks.ingest_cpu " + " ".join(args.argv),
        "machine": machine_info(), "files": len(paths), "rounds": args.rounds,
        "assocs": args.assocs}}
    if args.reference:
        tree = work / "reference"
        report["meta"]["reference"] = peers_mod.reference_tree(args.reference, tree, build=True)
        sides["hpacs-ref"] = tree
    if args.storescp:
        sides["storescp"] = None
    runs = []
    for n in args.assocs:
        for rnd in range(args.rounds):
            order = list(sides) if rnd % 2 == 0 else list(reversed(sides))
            for side in order:
                rundir = work / f"{side}-a{n}-r{rnd}"
                os.sync()
                rundir.mkdir(parents=True, exist_ok=True)
                with (peers_mod.storescp(rundir) if side == "storescp"
                      else peers_mod.hpacs(rundir, tree=sides[side])) as peer:
                    time.sleep(0.5)  # start-up work (index open, warmers) out of the way
                    r = measure(peer, split(paths, n), args.timeout)
                shutil.rmtree(rundir, ignore_errors=True)
                r.update(side=side, assocs=n, round=rnd)
                ok = r["stored"] == len(paths) and not any(r["codes"])
                r["ok"] = ok
                runs.append(r)
                per = {k: round(v * 1e6 / len(paths)) for k, v in sorted(r["cpu_s"].items())}
                print(f"{side:9s} assocs={n} round={rnd}: {len(paths) / r['wall_s']:6.1f} files/s "
                      f"{'ok' if ok else 'FAILED'} µs/instance {per}", file=sys.stderr, flush=True)
    report["runs"] = runs
    report["summary"] = summarize(runs, len(paths))
    report["markdown"] = markdown(report)
    return report


def summarize(runs: list[dict], files: int) -> list[dict]:
    rows = []
    for side in dict.fromkeys(r["side"] for r in runs):
        for n in dict.fromkeys(r["assocs"] for r in runs):
            mine = [r for r in runs if r["side"] == side and r["assocs"] == n and r["ok"]]
            if not mine:
                continue
            keys = sorted({k for r in mine for k in r["cpu_s"]})
            us = {k: statistics.median(r["cpu_s"].get(k, 0.0) * 1e6 / files for r in mine)
                  for k in keys}
            server = [sum(v for k, v in r["cpu_s"].items()
                          if not k.startswith(("client", "kernel threads")))
                      * 1e6 / files for r in mine]
            rows.append({"side": side, "assocs": n, "runs": len(mine),
                         "files_per_s": statistics.median(files / r["wall_s"] for r in mine),
                         "server_us": statistics.median(server),
                         "server_us_range": [min(server), max(server)],
                         "machine_busy_cores": statistics.median(
                             r["machine_cpu_s"] / r["wall_s"] for r in mine),
                         "us": us})
    return rows


def markdown(report: dict) -> str:
    m = report["meta"]
    lines = [f"Date: {m['date']}  ", f"Command: `{m['command']}`  ",
             f"Machine: {m['machine']['cpu']}, {m['machine']['cpus']} CPUs, "
             f"Linux {m['machine']['kernel']}, {m['machine']['filesystem']}  "]
    if "reference" in m:
        ref = m["reference"]
        lines.append(f"Reference (hpacs-ref): commit {ref['commit']}, extensions built "
                     f"{ref['extensions_built']}  ")
    keys = sorted({k for r in report["summary"] for k in r["us"]})
    lines += ["", "CPU µs per instance (median of rounds); server = its whole session "
              "(user + kernel), kernel threads and client counted apart.", "",
              "| side | assocs | files/s | server µs (min-max) | machine busy cores | "
              + " | ".join(keys) + " |",
              "|---|---:|---:|---:|---:|" + "---:|" * len(keys)]
    for r in report["summary"]:
        lo, hi = r["server_us_range"]
        lines.append(f"| {r['side']} | {r['assocs']} | {r['files_per_s']:.0f} "
                     f"| {r['server_us']:.0f} ({lo:.0f}-{hi:.0f}) "
                     f"| {r['machine_busy_cores']:.2f} | "
                     + " | ".join(f"{r['us'].get(k, 0.0):.0f}" for k in keys) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.ingest_cpu", description=__doc__)
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--assocs", type=_int_list, default=[1, 4])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reference", default=None, help="git ref of an A/B reference side")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--corpus", type=Path, default=None)
    ap.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--storescp", action="store_true",
                    help="also measure dcmtk storescp --fork (no fsync, no index)")
    args = ap.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    report = run(args)
    files = write_report(args.out, "ingest-cpu", report)
    print(report["markdown"])
    print("wrote " + " ".join(files), file=sys.stderr)
    return 0 if all(r["ok"] for r in report["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
