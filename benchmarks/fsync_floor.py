"""The durable-write floor of one association: what this disk takes to make one instance durable.

``python -m benchmarks.fsync_floor [--files 200] [--size 526000] [--runs 3]``

On one association a storage SCU waits for each C-STORE-RSP, and an archive that acks only
durable data (ours: PS3.4 allows a success only for what it keeps) pays, per instance and in
sequence: write the file, ``fdatasync``, rename it into place, ``fsync`` the directory. This
times exactly that chain with nothing else (no network, no DICOM, no index) in the work
directory, so the ingest benchmark's one-association figures can be read against it: dcmtk
``storescp`` pays none of it. Median (min-max) over ``--runs`` of each run's median ms per
file, after a warm-up of 10 files; the files are removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.stats import summarize

DEFAULT_WORKDIR = Path(__file__).resolve().parent / "work"
STEPS = ("write", "fdatasync", "rename_dirfsync", "total")


def one_run(directory: Path, files: int, size: int) -> dict[str, float]:
    """Median ms per file of each step over ``files`` files (after 10 untimed)."""
    data = os.urandom(size)
    dirfd = os.open(directory, os.O_RDONLY)
    times: dict[str, list[float]] = {s: [] for s in STEPS}
    try:
        for i in range(files + 10):
            temp, final = directory / f"t{i}", directory / f"f{i}"
            t0 = time.perf_counter()
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
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


def run(workdir: Path, files: int, size: int, runs: int) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    rounds = []
    for _ in range(runs):
        d = Path(tempfile.mkdtemp(prefix="fsync-floor-", dir=workdir))
        try:
            rounds.append(one_run(d, files, size))
        finally:
            shutil.rmtree(d, ignore_errors=True)
    return {"files": files, "size": size, "runs": runs, "workdir": str(workdir),
            "ms_per_file": {s: summarize([r[s] for r in rounds]).to_json() for s in STEPS},
            "files_per_s_ceiling": 1000 / statistics.median(r["total"] for r in rounds)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--size", type=int, default=526_000, help="bytes per file (a CT slice)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    args = ap.parse_args(argv)
    report = run(args.workdir, args.files, args.size, args.runs)
    for step in STEPS:
        s = report["ms_per_file"][step]
        print(f"{step:16s} {s['median']:.3f} ({s['min']:.3f}-{s['max']:.3f}) ms per file",
              file=sys.stderr)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
