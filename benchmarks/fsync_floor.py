"""The durable-write floor of one association: what this disk takes to make one instance durable.

``python -m benchmarks.fsync_floor [--files 200] [--size 526000] [--runs 3] [--writeback]
[--writers N]``

On one association a storage SCU waits for each C-STORE-RSP, and an archive that acks only
durable data (ours: PS3.4 allows a success only for what it keeps) pays, per instance and in
sequence: write the file, ``fdatasync``, rename it into place, ``fsync`` the directory. This
times exactly that chain with nothing else (no network, no DICOM, no index) in the work
directory, so the ingest benchmark's one-association figures can be read against it: dcmtk
``storescp`` pays none of it. Median (min-max) over ``--runs`` of each run's median ms per
file, after a warm-up of 10 files; the files are removed at the end.

``--writeback`` writes each file the way hpacs receives it: in 128 KiB steps, starting the
kernel's writeback of each step at once (``sync_file_range``), so that what is left after the
last byte (fdatasync + rename + directory fsync) is the durable step an archive cannot hide
behind the network. ``--writers N`` runs N such chains at once (N associations): then each
fdatasync also waits for the journal commits of the others.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.stats import summarize

DEFAULT_WORKDIR = Path(__file__).resolve().parent / "work"
STEPS = ("write", "fdatasync", "rename_dirfsync", "total")
#: The write step of ``--writeback`` (what one read of the network hands over, at most).
STEP_BYTES = 128 * 1024
SYNC_FILE_RANGE_WRITE = 2
_libc = ctypes.CDLL(None, use_errno=True)


def _write(fd: int, data: bytes, writeback: bool) -> None:
    view = memoryview(data)
    if not writeback:
        while view:
            view = view[os.write(fd, view):]
        return
    for offset in range(0, len(data), STEP_BYTES):
        chunk = view[offset:offset + STEP_BYTES]
        while chunk:
            chunk = chunk[os.write(fd, chunk):]
        _libc.sync_file_range(fd, ctypes.c_longlong(offset),
                              ctypes.c_longlong(min(STEP_BYTES, len(data) - offset)),
                              SYNC_FILE_RANGE_WRITE)


def one_run(directory: Path, files: int, size: int, writeback: bool = False,
            name: str = "") -> dict[str, float]:
    """Median ms per file of each step over ``files`` files (after 10 untimed)."""
    data = os.urandom(size)
    dirfd = os.open(directory, os.O_RDONLY)
    times: dict[str, list[float]] = {s: [] for s in STEPS}
    try:
        for i in range(files + 10):
            temp, final = directory / f"t{name}{i}", directory / f"f{name}{i}"
            t0 = time.perf_counter()
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                _write(fd, data, writeback)
                t1 = time.perf_counter()
                os.fdatasync(fd)
                t2 = time.perf_counter()
            finally:
                os.close(fd)
            os.rename(temp, final)
            os.fsync(dirfd)
            t3 = time.perf_counter()
            if i >= 10:
                for step, seconds in zip(STEPS, (t1 - t0, t2 - t1, t3 - t2, t3 - t0),
                                         strict=True):
                    times[step].append(seconds * 1000)
    finally:
        os.close(dirfd)
    return {s: statistics.median(v) for s, v in times.items()}


def _concurrent(d: Path, files: int, size: int, writeback: bool, writers: int) -> dict:
    """``writers`` chains at once in one directory: each step's median over every file."""
    results: list[dict[str, float]] = [{} for _ in range(writers)]
    threads = [threading.Thread(target=lambda k=k: results.__setitem__(
        k, one_run(d, files, size, writeback, name=f"w{k}-"))) for k in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {s: statistics.median(r[s] for r in results) for s in STEPS}


def run(workdir: Path, files: int, size: int, runs: int, writeback: bool = False,
        writers: int = 1) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    rounds = []
    for _ in range(runs):
        d = Path(tempfile.mkdtemp(prefix="fsync-floor-", dir=workdir))
        try:
            rounds.append(_concurrent(d, files, size, writeback, writers) if writers > 1
                          else one_run(d, files, size, writeback))
        finally:
            shutil.rmtree(d, ignore_errors=True)
    total = statistics.median(r["total"] for r in rounds)
    return {"files": files, "size": size, "runs": runs, "workdir": str(workdir),
            "writeback": writeback, "writers": writers,
            "ms_per_file": {s: summarize([r[s] for r in rounds]).to_json() for s in STEPS},
            "files_per_s_ceiling": writers * 1000 / total}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--size", type=int, default=526_000, help="bytes per file (a CT slice)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    ap.add_argument("--writeback", action="store_true",
                    help="write in 128 KiB steps, each one's writeback started at once")
    ap.add_argument("--writers", type=int, default=1, help="chains at once (associations)")
    args = ap.parse_args(argv)
    report = run(args.workdir, args.files, args.size, args.runs, args.writeback, args.writers)
    for step in STEPS:
        s = report["ms_per_file"][step]
        print(f"{step:16s} {s['median']:.3f} ({s['min']:.3f}-{s['max']:.3f}) ms per file",
              file=sys.stderr)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
