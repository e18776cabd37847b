"""Ingest benchmark: C-STORE a CT corpus into hpacs, Orthanc and dcmtk storescp.

    python -m benchmarks.ingest [--files N] [--runs 3] [--assocs 1,4,8]
                                [--peers hpacs,orthanc,storescp,storescp-ignore]
                                [--out benchmarks/reports]

For every association count and run, each peer starts afresh (new data directory), the corpus
is split into N disjoint contiguous parts and N dcmtk ``storescu`` processes (TCP_NODELAY=1,
explicit VR little endian proposed first) are started together; the wall time runs from the
first spawn to the last exit. Then every file must be found stored by the peer's own means
(Orthanc: REST ``/statistics``; storescp and hpacs: Part 10 files in the data directory;
``storescp --ignore`` stores nothing and is the client/loopback ceiling). The storescu
children's CPU time (from ``wait4``) is recorded so we know whether the load generator was the
bottleneck, and the peer's own CPU time too. Runs of the peers are interleaved so slow drift of
the machine is spread over all of them.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks import corpus as corpus_mod
from benchmarks import peers as peers_mod
from benchmarks.stats import Summary, fmt_ratio, fmt_summary, ratio, summarize

REPO = Path(__file__).resolve().parent.parent
DEFAULT_WORKDIR = REPO / "benchmarks" / "work"  # git-ignored
DEFAULT_OUT = REPO / "benchmarks" / "reports"
DEFAULT_PEERS = ("hpacs", "orthanc", "storescp", "storescp-ignore")
#: The peer name of ``--reference``: hpacs at another commit, run beside this tree's (A/B).
REF_PEER = "hpacs-ref"
#: A run during which other processes used more than this many cores is "disturbed": it is
#: repeated (a bounded number of times) and left out of the summary when a clean one exists.
MAX_OTHER = 0.25


@dataclass
class RunResult:
    peer: str
    assocs: int
    run: int
    ok: bool
    wall_s: float = 0.0
    files: int = 0
    bytes: int = 0
    stored: int | None = None
    client_cpu_s: float = 0.0
    server_cpu_s: float = 0.0
    #: CPU time of the whole machine during the run; minus client and peer = other load.
    machine_cpu_s: float = 0.0
    #: CPU time of user-space processes other than the client's and the peer's.
    other_cpu_s: float = 0.0
    #: Background load (cores) measured just before the run.
    load_before: float = 0.0
    #: Other work on the machine took more than ``MAX_OTHER`` cores during the run.
    disturbed: bool = False
    exit_codes: list[int] = field(default_factory=list)
    error: str = ""

    @property
    def files_per_s(self) -> float:
        return self.files / self.wall_s if self.wall_s else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.wall_s if self.wall_s else 0.0

    def to_json(self) -> dict:
        return {
            **asdict(self),
            "files_per_s": round(self.files_per_s, 2),
            "mb_per_s": round(self.mb_per_s, 2),
        }


def split(items: list, n: int) -> list[list]:
    """``n`` disjoint contiguous parts whose sizes differ by at most one (none empty)."""
    n = max(1, min(n, len(items)))
    q, r = divmod(len(items), n)
    parts, start = [], 0
    for i in range(n):
        end = start + q + (i < r)
        parts.append(items[start:end])
        start = end
    return parts


def storescu_cmd(peer: peers_mod.Peer, files: list[Path]) -> list[str]:
    return [
        peers_mod.dcmtk("storescu"),
        "-q",
        "-xe",
        "-aet",
        "BENCH",
        "-aec",
        peer.ae_title,
        peer.host,
        str(peer.port),
        *map(str, files),
    ]


def drive(
    peer: peers_mod.Peer, parts: list[list[Path]], *, timeout: float
) -> tuple[float, float, list[int]]:
    """Run one storescu per part, all at once; (wall seconds, client CPU seconds, exit codes).

    Bounded: whatever still runs after ``timeout`` seconds is killed (its exit code is then
    negative, and the run fails).
    """
    env = peers_mod.nodelay_env()
    procs: list[subprocess.Popen] = []
    timed_out = threading.Event()

    def kill_all() -> None:
        timed_out.set()
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)

    watchdog = threading.Timer(timeout, kill_all)
    t0 = time.perf_counter()
    try:
        for part in parts:
            procs.append(
                subprocess.Popen(
                    storescu_cmd(peer, part),
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        watchdog.start()
        cpu, codes = 0.0, []
        for p in procs:
            _pid, status, ru = os.wait4(p.pid, 0)
            p.returncode = os.waitstatus_to_exitcode(status)
            codes.append(p.returncode)
            cpu += ru.ru_utime + ru.ru_stime
        wall = time.perf_counter() - t0
    finally:
        watchdog.cancel()
        for p in procs:
            if p.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                p.wait()
    if timed_out.is_set():
        codes.append(-999)
    return wall, cpu, codes


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds() -> float:
    """Busy CPU seconds of the whole machine since boot (all CPUs; steal counts as busy)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = v
    return (user + nice + system + irq + softirq + steal) / _CLK_TCK


def foreign_cpu_seconds(exclude: set[int]) -> float:
    """CPU seconds of user-space processes outside the sessions in ``exclude``."""
    return sum(v for sid, v in peers_mod.cpu_by_session().items() if sid not in exclude)


def background_load(window: float = 0.5) -> float:
    """Busy cores over the next ``window`` seconds (we only sleep meanwhile)."""
    c0, t0 = machine_cpu_seconds(), time.perf_counter()
    time.sleep(window)
    return (machine_cpu_seconds() - c0) / (time.perf_counter() - t0)


def wait_quiet(max_wait: float, threshold: float = 0.15) -> float:
    """Wait (at most ``max_wait`` s) until other work on the machine uses < ``threshold`` cores.

    The machine may be shared (builds, other test suites): a run that competes with them for
    two cores measures them, not the peer. Returns the last load seen; the report keeps it.
    """
    deadline = time.monotonic() + max_wait
    load = background_load()
    while load >= threshold and time.monotonic() < deadline:
        load = background_load()
    return load


def run_once(
    peer_name: str,
    assocs: int,
    run: int,
    files: list[Path],
    total_bytes: int,
    workdir: Path,
    *,
    timeout: float,
    keep: bool = False,
    quiet_wait: float = 0.0,
) -> RunResult:
    """Start ``peer_name`` afresh, send all ``files`` over ``assocs`` associations, verify."""
    res = RunResult(peer_name, assocs, run, ok=False, files=len(files), bytes=total_bytes)
    rundir = workdir / f"{peer_name}-a{assocs}-r{run}"
    if rundir.exists():
        shutil.rmtree(rundir)
    rundir.mkdir(parents=True)
    os.sync()  # the previous run's dirty pages must not be written back during this one
    try:
        with peers_mod.start(peer_name, rundir) as peer:
            if quiet_wait > 0:
                res.load_before = wait_quiet(quiet_wait)
            ours = {os.getsid(0), peer.proc.pid}  # the benchmark (+ storescu), the peer
            cpu0, mach0 = peer.cpu_seconds(), machine_cpu_seconds()
            other0 = foreign_cpu_seconds(ours)
            wall, client_cpu, codes = drive(peer, split(files, assocs), timeout=timeout)
            res.machine_cpu_s = machine_cpu_seconds() - mach0
            res.other_cpu_s = max(0.0, foreign_cpu_seconds(ours) - other0)
            res.server_cpu_s = peer.cpu_seconds() - cpu0
            res.wall_s, res.client_cpu_s, res.exit_codes = wall, client_cpu, codes
            res.stored = peer.stored_count()
            failed = [c for c in codes if c != 0]
            if failed:
                res.error = f"storescu exit codes {codes}"
            elif res.stored is not None and res.stored != len(files):
                res.error = f"peer holds {res.stored} instances, sent {len(files)}"
            elif not peer.alive():
                res.error = "peer died during the run"
            else:
                res.ok = True
            # CPU times tick at 10 ms: below a few ticks the share means nothing
            res.disturbed = res.other_cpu_s > max(MAX_OTHER * wall, 0.05)
    except Exception as exc:  # a peer that cannot start is reported, not fatal to the others
        res.error = f"{type(exc).__name__}: {exc}"[:2000]
    finally:
        if not keep:
            shutil.rmtree(rundir, ignore_errors=True)
    return res


def warm(paths: list[Path]) -> None:
    """Read the corpus once so every peer and run sees it in the page cache."""
    for p in paths:
        with open(p, "rb") as f:
            while f.read(1 << 20):
                pass


def machine_info() -> dict:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError, IndexError, ValueError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    fs = "?"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        fs = (
            subprocess.run(
                ["df", "-T", str(DEFAULT_WORKDIR.parent)],
                capture_output=True,
                text=True,
                timeout=10,
            )
            .stdout.splitlines()[-1]
            .split()[1]
        )
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "filesystem": fs,
        "dcmtk": peers_mod.dcmtk_version(),
        "orthanc": peers_mod.orthanc_version(),
    }


def summarize_results(results: list[RunResult]) -> list[dict]:
    """One row per (peer, assocs): medians and ranges over the successful runs.

    Each run counts once: its first undisturbed attempt, else its last successful one (then
    counted in ``disturbed_runs``).
    """
    rows: dict[tuple[str, int], dict[int, list[RunResult]]] = {}
    for r in results:
        rows.setdefault((r.peer, r.assocs), {}).setdefault(r.run, []).append(r)
    out = []
    for (peer, assocs), by_run in rows.items():
        attempts = [r for rs in by_run.values() for r in rs]
        good = []
        for rs in by_run.values():
            ok = [r for r in rs if r.ok]
            clean = [r for r in ok if not r.disturbed]
            if clean or ok:
                good.append(clean[0] if clean else ok[-1])
        row: dict = {
            "peer": peer,
            "assocs": assocs,
            "runs": len(by_run),
            "attempts": len(attempts),
            "ok_runs": len(good),
            "disturbed_runs": sum(r.disturbed for r in good),
            "errors": sorted({r.error for r in attempts if r.error}),
        }
        if good:
            row["files_per_s"] = summarize([r.files_per_s for r in good]).to_json()
            row["mb_per_s"] = summarize([r.mb_per_s for r in good]).to_json()
            # CPU as a share of one core over the wall time (the machine has os.cpu_count())
            row["client_cpu_pct"] = summarize(
                [100 * r.client_cpu_s / r.wall_s for r in good]
            ).to_json()
            row["server_cpu_pct"] = summarize(
                [100 * r.server_cpu_s / r.wall_s for r in good]
            ).to_json()
            row["other_cpu_pct"] = summarize(
                [100 * r.other_cpu_s / r.wall_s for r in good]
            ).to_json()
        out.append(row)
    by_key = {(r["peer"], r["assocs"]): r for r in out}
    for r in out:
        med = r.get("files_per_s", {}).get("median")
        for ref in ("orthanc", "storescp", REF_PEER):
            other = by_key.get((ref, r["assocs"]), {}).get("files_per_s", {}).get("median")
            r[f"vs_{ref}"] = ratio(med, other)
    return out


def _s(d: dict, digits: int = 0) -> str:
    return fmt_summary(Summary(d["n"], d["median"], d["min"], d["max"], d["mean"]), digits)


def markdown(report: dict) -> str:
    m = report["meta"]
    c = m["corpus"]
    ab = any(r["peer"] == REF_PEER for r in report["summary"])
    lines = [
        f"Date: {m['date']}  ",
        f"Command: `{m['command']}`  ",
        f"Machine: {m['machine']['cpu']}, {m['machine']['cpus']} CPUs, "
        f"{m['machine']['memory']}, Linux {m['machine']['kernel']}, "
        f"{m['machine']['filesystem']}; {m['machine']['dcmtk']}; {m['machine']['orthanc']}  ",
        f"Corpus: {c['count']} CT files, {c['total_bytes'] / 1e6:.1f} MB "
        f"({c['total_bytes'] / c['count'] / 1e3:.0f} KB each), seed {c['seed']}, "
        f"{c['syntax']} VR LE; {m['runs']} runs per cell, fresh peer each run  ",
    ]
    if ab:
        ref = m["reference"]
        lines.append(f"Reference ({REF_PEER}): commit {ref['commit']} ({ref['ref']}), "
                     f"extensions copied {ref['extensions_copied']}, built "
                     f"{ref['extensions_built']}  ")
    lines += [
        "",
        "| peer | assocs | files/s median (min-max) | MB/s median (min-max) | vs Orthanc "
        "| vs storescp " + ("| vs ref " if ab else "")
        + "| client CPU % | peer CPU % | other CPU % | runs ok (disturbed) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if ab else ""),
    ]
    for r in sorted(report["summary"], key=lambda r: (r["assocs"], r["peer"])):
        if "files_per_s" not in r:
            lines.append(f"| {r['peer']} | {r['assocs']} | failed | | | | | | | 0/{r['runs']} |")
            continue
        lines.append(
            f"| {r['peer']} | {r['assocs']} | {_s(r['files_per_s'])} | {_s(r['mb_per_s'], 1)} "
            f"| {fmt_ratio(r['vs_orthanc'])} | {fmt_ratio(r['vs_storescp'])} "
            + (f"| {fmt_ratio(r['vs_' + REF_PEER])} " if ab else "")
            + f"| {r['client_cpu_pct']['median']:.0f} | {r['server_cpu_pct']['median']:.0f} "
            f"| {r['other_cpu_pct']['median']:.0f} "
            f"| {r['ok_runs']}/{r['runs']} ({r['disturbed_runs']}) |"
        )
    errors = [(r["peer"], r["assocs"], e) for r in report["summary"] for e in r["errors"]]
    if errors:
        lines += ["", "Errors:"]
        for peer, assocs, e in errors:
            first = e.splitlines()[0] if e else ""
            lines.append(f"- {peer} x{assocs}: {first[:300]}")
    lines += [
        "",
        "MB = 10^6 bytes. CPU % is CPU time over wall time (100 = one core busy); "
        "client = the storescu processes, peer = the server's whole process tree, "
        "other = all other user-space processes during the run (kernel I/O threads left out; "
        "a shared machine makes the numbers noisy; a run during which others used more than "
        f"{MAX_OTHER:g} core is repeated up to --retries times and its first clean attempt "
        "kept; '(disturbed)' counts the runs that never got one). "
        "storescp-ignore stores nothing: it is the client/loopback ceiling.",
    ]
    return "\n".join(lines) + "\n"


def run_benchmark(
    *,
    files: int,
    runs: int,
    assocs: list[int],
    peer_names: list[str],
    out: Path | None,
    workdir: Path,
    seed: int = 1,
    corpus_dir: Path | None = None,
    timeout: float = 300.0,
    keep: bool = False,
    quiet_wait: float = 0.0,
    retries: int = 2,
    command: str = "",
    reference: dict | None = None,
    log=print,
) -> dict:
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = corpus_mod.ct_only(files, seed=seed)
    cdir = Path(corpus_dir) if corpus_dir else workdir / f"corpus-ct-{files}-seed{seed}"
    t0 = time.perf_counter()
    manifest = corpus_mod.ensure(cfg, cdir)
    log(
        f"corpus {cdir}: {manifest['count']} files, {manifest['total_bytes'] / 1e6:.1f} MB "
        f"({time.perf_counter() - t0:.1f} s)"
    )
    paths = corpus_mod.corpus_paths(cdir, manifest)
    warm(paths)
    results: list[RunResult] = []
    broken: set[str] = set()  # a peer that failed to start is not retried on every cell
    for n in assocs:
        for run in range(1, runs + 1):
            for name in peer_names:
                if name in broken:
                    results.append(
                        RunResult(
                            name,
                            n,
                            run,
                            ok=False,
                            files=len(paths),
                            bytes=manifest["total_bytes"],
                            error="not started (failed before)",
                        )
                    )
                    continue
                for attempt in range(1 + retries):
                    r = run_once(
                        name,
                        n,
                        run,
                        paths,
                        manifest["total_bytes"],
                        workdir / "runs",
                        timeout=timeout,
                        keep=keep,
                        quiet_wait=quiet_wait,
                    )
                    results.append(r)
                    if r.ok:
                        status = "ok (disturbed)" if r.disturbed else "ok"
                    else:
                        status = f"FAILED: {r.error.splitlines()[0] if r.error else ''}"
                    log(
                        f"{name:16s} assocs={n} run={run}.{attempt}: {r.files_per_s:7.1f} files/s"
                        f" {r.mb_per_s:6.1f} MB/s wall={r.wall_s:.2f}s"
                        f" client_cpu={r.client_cpu_s:.2f}s peer_cpu={r.server_cpu_s:.2f}s"
                        f" other_cpu={r.other_cpu_s:.2f}s load_before={r.load_before:.2f} {status}"
                    )
                    if not r.ok and r.wall_s == 0.0:
                        broken.add(name)
                    if not (r.ok and r.disturbed):
                        break
    report = {
        "meta": {
            "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": command,
            "machine": machine_info(),
            "corpus": {
                "dir": str(cdir),
                "count": manifest["count"],
                "total_bytes": manifest["total_bytes"],
                "seed": seed,
                "syntax": cfg.syntax,
            },
            "runs": runs,
            "assocs": assocs,
            "peers": peer_names,
            "quiet_wait": quiet_wait,
            "max_other_cores": MAX_OTHER,
            "reference": reference,
        },
        "summary": summarize_results(results),
        "runs": [r.to_json() for r in results],
    }
    report["markdown"] = markdown(report)
    if out is not None:
        report["files"] = write_report(Path(out), "ingest", report)
    return report


def write_report(out: Path, prefix: str, report: dict) -> list[str]:
    """``report`` as ``out/PREFIX-STAMP.json`` and its ``markdown`` as ``.md``; the paths."""
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{prefix}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    paths = [stem.with_suffix(".json"), stem.with_suffix(".md")]
    paths[0].write_text(json.dumps(report, indent=1))
    paths[1].write_text(report["markdown"])
    return [str(p) for p in paths]


def _int_list(text: str) -> list[int]:
    vals = [int(x) for x in text.split(",") if x.strip()]
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError("association counts are positive integers")
    return vals


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.ingest",
        description="C-STORE ingest benchmark against reference peers",
    )
    ap.add_argument("--files", type=int, default=500, help="CT files in the corpus (500)")
    ap.add_argument("--runs", type=int, default=3, help="runs per peer and association count")
    ap.add_argument(
        "--assocs",
        type=_int_list,
        default=[1, 4, 8],
        help="comma-separated association counts (1,4,8)",
    )
    ap.add_argument(
        "--peers",
        default=",".join(DEFAULT_PEERS),
        help=f"comma-separated, among {','.join(peers_mod.PEERS)}",
    )
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="report directory")
    ap.add_argument(
        "--workdir",
        type=Path,
        default=DEFAULT_WORKDIR,
        help="corpus cache and peer data (benchmarks/work, git-ignored)",
    )
    ap.add_argument("--corpus", type=Path, default=None, help="corpus directory to (re)use")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds allowed per run")
    ap.add_argument("--keep", action="store_true", help="keep each run's peer data")
    ap.add_argument(
        "--quiet-wait",
        type=float,
        default=60.0,
        help="before each run, wait up to this many seconds for other load to drop (0: don't)",
    )
    ap.add_argument(
        "--reference",
        default=None,
        help=f"git ref of an A/B reference: adds peer {REF_PEER} (that commit, its changed "
        "extensions built), run interleaved with this tree's hpacs",
    )
    ap.add_argument(
        "--retries",
        type=int,
        default=2,
        help=f"repeats of a run disturbed by other load (> {MAX_OTHER:g} core)",
    )
    args = ap.parse_args(argv)
    names = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = [p for p in names if p not in peers_mod.PEERS]
    if unknown:
        ap.error(f"unknown peers {unknown}; known: {', '.join(peers_mod.PEERS)}")
    command = "python -m benchmarks.ingest " + " ".join(sys.argv[1:] if argv is None else argv)
    reference = None
    if args.reference:
        tree = args.workdir / "reference"
        shutil.rmtree(tree, ignore_errors=True)
        reference = peers_mod.reference_tree(args.reference, tree, build=True)
        peers_mod.PEERS[REF_PEER] = lambda workdir: peers_mod.hpacs(workdir, tree=tree)
        if REF_PEER not in names:
            names.insert(names.index("hpacs") + 1 if "hpacs" in names else 0, REF_PEER)
    report = run_benchmark(
        files=args.files,
        runs=args.runs,
        assocs=args.assocs,
        peer_names=names,
        out=args.out,
        workdir=args.workdir,
        seed=args.seed,
        corpus_dir=args.corpus,
        timeout=args.timeout,
        quiet_wait=args.quiet_wait,
        retries=args.retries,
        keep=args.keep,
        command=command.strip(),
        reference=reference,
        log=lambda s: print(s, file=sys.stderr, flush=True),
    )
    print(report["markdown"])
    for f in report.get("files", []):
        print(f"wrote {f}", file=sys.stderr)
    return 0 if all(r["ok_runs"] == r["runs"] for r in report["summary"]) else 1


if __name__ == "__main__":
    sys.exit(main())
