"""What every scenario shares: percentiles, machine description, resource sampling, output."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks import corpus as corpus_mod
from benchmarks import ingest as ingest_mod
from benchmarks import peers as peers_mod
from benchmarks.query import hpacs_commit

REPO = Path(__file__).resolve().parents[2]
DEFAULT_WORKDIR = REPO / "benchmarks" / "work"  # git-ignored

#: Latency targets the sizing summary holds the measurements to (stated in every report).
TARGETS = {
    "c_store_p95_ms": 500.0,
    "series_open_p95_ms": 1000.0,
    "c_find_p95_ms": 100.0,
    "qido_p95_ms": 100.0,
}


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default) of an already sorted list."""
    if not sorted_values:
        raise ValueError("no values")
    k = (len(sorted_values) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def latency_summary(values: list[float]) -> dict:
    """n, mean, p50, p95, p99, max of ``values`` (ms); an empty list gives n=0 only."""
    if not values:
        return {"n": 0}
    s = sorted(float(v) for v in values)
    return {"n": len(s), "mean": sum(s) / len(s), "p50": percentile(s, 50),
            "p95": percentile(s, 95), "p99": percentile(s, 99), "max": s[-1]}


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt(v: float | None, digits: int = 1) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) \
        else f"{v:.{digits}f}"


def fmt_ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}x"


def pp(d: dict) -> str:
    """``"12 / 40"``: p50 / p95 of a latency summary, ``-`` when empty."""
    return f"{d['p50']:.0f} / {d['p95']:.0f}" if d.get("n") else "-"


# ---------------------------------------------------------------------------- machine
def _disk_of(path: Path) -> dict:
    """The block device holding ``path``: name, model, rotational, filesystem, free space."""
    out: dict = {}
    with contextlib.suppress(OSError):
        st = os.stat(path)
        out["device"] = Path(os.path.realpath(
            f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}")).name
        disk = block_parent(out["device"])
        out["disk"] = disk
        base = Path("/sys/block") / disk
        with contextlib.suppress(OSError):
            out["model"] = (base / "device" / "model").read_text().strip()
        with contextlib.suppress(OSError):
            out["rotational"] = (base / "queue" / "rotational").read_text().strip() == "1"
    with contextlib.suppress(OSError):
        usage = shutil.disk_usage(path)
        out["total_gb"] = round(usage.total / 1e9, 1)
        out["free_gb"] = round(usage.free / 1e9, 1)
    return out


def block_parent(device: str) -> str:
    """``sda`` for ``sda1``, ``nvme0n1`` for ``nvme0n1p2``; the device itself otherwise."""
    link = Path("/sys/class/block") / device
    with contextlib.suppress(OSError):
        if (link / "partition").exists():
            return Path(os.path.realpath(link)).parent.name
    return device


def machine_info(workdir: Path) -> dict:
    """benchmarks.ingest's machine description plus cores, disk and every version."""
    info = ingest_mod.machine_info()
    from hpacs import __version__

    info.update({
        "cores": os.cpu_count(),
        "memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        "disk": _disk_of(Path(workdir)),
        "hpacs": f"hpacs {__version__} ({hpacs_commit()})",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
    })
    return info


# ---------------------------------------------------------------------------- sampling
def disk_io_ms(disk: str | None) -> float | None:
    """Milliseconds the disk has been busy since boot (/proc/diskstats io_ticks)."""
    if not disk:
        return None
    with contextlib.suppress(OSError):
        for line in Path("/proc/diskstats").read_text().splitlines():
            f = line.split()
            if len(f) > 12 and f[2] == disk:
                return float(f[12])
    return None


@dataclass
class Window:
    """Resource use over one measured interval (``start()`` .. ``stop()``): server CPU,
    machine CPU, CPU of user-space processes that are neither ours nor the server's
    (``foreign``: other load on a shared machine), disk busy time."""

    peer: peers_mod.Peer
    disk: str | None
    t0: float = 0.0
    server0: float = 0.0
    machine0: float = 0.0
    foreign0: float = 0.0
    disk0: float | None = None

    def _ours(self) -> set[int]:
        # the benchmark's session holds its load processes; the peer leads its own session
        return {os.getsid(0), self.peer.proc.pid}

    def start(self) -> None:
        self.t0 = time.perf_counter()
        self.server0 = self.peer.cpu_seconds()
        self.machine0 = ingest_mod.machine_cpu_seconds()
        self.foreign0 = ingest_mod.foreign_cpu_seconds(self._ours())
        self.disk0 = disk_io_ms(self.disk)

    def stop(self) -> dict:
        wall = time.perf_counter() - self.t0
        d1 = disk_io_ms(self.disk)
        return {
            "wall_s": wall,
            "server_cpu_s": self.peer.cpu_seconds() - self.server0,
            "machine_cpu_s": ingest_mod.machine_cpu_seconds() - self.machine0,
            "foreign_cpu_s": max(0.0, ingest_mod.foreign_cpu_seconds(self._ours())
                                 - self.foreign0),
            "disk_busy": None if d1 is None or self.disk0 is None or wall <= 0
            else min(1.0, (d1 - self.disk0) / 1000 / wall),
        }


def server_core_limit(server: str) -> float:
    """Cores a server's work can use: hpacs runs its protocol work on one event loop (the
    executor threads mostly wait for the disk), Orthanc is multi-threaded."""
    return 1.0 if server == "hpacs" else float(os.cpu_count() or 1)


def quiet(opts) -> float:
    """Before a measured phase: wait up to ``--quiet-wait`` s for other load to drop
    (``benchmarks.ingest.wait_quiet``); the cores other work used just before."""
    if not getattr(opts, "quiet_wait", 0):
        return ingest_mod.background_load(0.2)
    return ingest_mod.wait_quiet(opts.quiet_wait)


def distortion(other_cores: float | None, where: str = "") -> list[str]:
    """A warning line when other work took a noticeable share of the machine (``where``: the
    scenario it happened in, on a page that covers several)."""
    if other_cores is None or other_cores < 0.25:
        return []
    return [f"- **Distorted**{f' ({where})' if where else ''}: other processes used "
            f"{other_cores:.2f} of "
            f"{os.cpu_count()} cores meanwhile; these figures understate this machine. "
            "Run again on a quiet machine."]


def saturation_text(shares: dict[str, float]) -> str:
    """Which resource is closest to its limit, said honestly when none is close."""
    first = max(shares, key=shares.get)
    listed = ", ".join(f"{k} {v * 100:.0f} %" for k, v in shares.items())
    if shares[first] < 0.5:
        return (f"nothing near saturation yet (closest: {first}; {listed} of capacity): "
                "the load did not reach this machine's limits, sweep higher")
    return f"**{first}** ({listed} of capacity)"


def utilisation(window: dict, client_cpu_s: float) -> dict:
    """Shares (0..1) of what could saturate: server CPU (of all cores), client CPU, disk.

    ``other`` is the CPU of user-space processes that are neither the server nor the load
    generators: on a shared machine it says how much the numbers are distorted. ``kernel`` is
    the rest of the machine's busy CPU: interrupts, loopback networking, writeback and journal
    threads, work the load itself causes (it grows with throughput for either server)."""
    cores = os.cpu_count() or 1
    wall = window["wall_s"] or 1e-9
    server = window["server_cpu_s"] / wall
    client = client_cpu_s / wall
    machine = window["machine_cpu_s"] / wall
    other = window.get("foreign_cpu_s", 0.0) / wall
    return {"server_cores": server, "client_cores": client, "machine_cores": machine,
            "other_cores": other, "kernel_cores": max(0.0, machine - server - client - other),
            "server_share": server / cores, "client_share": client / cores,
            "machine_share": machine / cores, "disk_busy": window["disk_busy"]}


# ---------------------------------------------------------------------------- output
def progress(total: int | None, desc: str, quiet: bool = False, unit: str = "it"):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=quiet, file=sys.stderr,
                dynamic_ncols=True, leave=False)


def new_report(scenario: str, opts, workdir: Path) -> dict:
    return {
        "scenario": scenario,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": getattr(opts, "command", ""),
        "quick": bool(getattr(opts, "quick", False)),
        "machine": machine_info(workdir),
        "targets": dict(TARGETS),
        "params": {k: (str(v) if isinstance(v, Path) else v)
                   for k, v in vars(opts).items() if k not in ("func",)},
    }


def header_md(report: dict, title: str) -> list[str]:
    m = report["machine"]
    disk = m.get("disk", {})
    return [
        f"# {title}", "",
        f"Date: {report['date']}  ",
        f"Command: `{report['command']}`"
        + (" (quick: tiny sizes, a format check, not a measurement)  " if report["quick"]
           else "  "),
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory']}, Linux {m['kernel']}; disk "
        f"{disk.get('disk', '?')} ({disk.get('model', '?')}, "
        f"{'rotational' if disk.get('rotational') else 'non-rotational'}, {m['filesystem']}, "
        f"{disk.get('free_gb', '?')} GB free)  ",
        f"Versions: {m['hpacs']}; {m['python']}; {m['orthanc']}; {m['dcmtk']}  ",
        "",
    ]


def write_report(out: Path, scenario: str, report: dict, markdown: str) -> list[Path]:
    """``OUT/<scenario>.json`` and ``OUT/<scenario>.md`` (the plots are written beside)."""
    out.mkdir(parents=True, exist_ok=True)
    j, m = out / f"{scenario}.json", out / f"{scenario}.md"
    j.write_text(json.dumps(report, indent=1, default=str, allow_nan=False))
    m.write_text(markdown)
    return [j, m]


def run_checked(cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
    """``cmd`` with Nagle off (dcmtk) and this repository importable (``-m benchmarks...``)."""
    return subprocess.run(cmd, env=peers_mod.nodelay_env(PYTHONPATH=str(peers_mod.REPO)),
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


# ---------------------------------------------------------------------------- corpus
def corpus(opts, files: int, workdir: Path, seed: int = 1) -> tuple[dict, list[list[Path]]]:
    """A cached ``benchmarks.corpus`` corpus of ``files`` instances in the modality mix,
    sizes and transfer syntax of ``opts``; (manifest, files grouped by study, in order)."""
    cfg = corpus_mod.CorpusConfig(
        seed=seed, studies=None, files=files, mix=dict(opts.mix), syntax=opts.syntax,
        ct_slices=opts.ct_slices, ct_series_per_study=1, mr_slices=opts.mr_slices,
        us_frames=opts.us_frames)
    key = "-".join(f"{k}{v:g}" for k, v in sorted(cfg.mix.items()))
    cdir = Path(workdir) / (f"suite-corpus-{files}-{key}-{cfg.syntax}-ct{cfg.ct_slices}"
                            f"-mr{cfg.mr_slices}-us{cfg.us_frames}-s{seed}")
    manifest = corpus_mod.ensure(cfg, cdir)
    studies: dict[str, list[Path]] = {}
    for rel, _size in manifest["files"]:
        studies.setdefault(rel.split("/", 1)[0], []).append(cdir / rel)
    paths = [p for group in studies.values() for p in group]
    ingest_mod.warm(paths)
    return manifest, list(studies.values())


def deal(studies: list[list[Path]], n: int) -> list[list[Path]]:
    """Studies dealt round-robin to ``n`` senders (each sends whole studies, like a modality)."""
    out: list[list[Path]] = [[] for _ in range(max(1, n))]
    for i, study in enumerate(studies):
        out[i % len(out)].extend(study)
    return [o for o in out if o]


def log(msg: str) -> None:
    """A line on stderr that does not break the progress bars."""
    from tqdm import tqdm

    tqdm.write(msg, file=sys.stderr)
