"""``hpacs bench SCENARIO [--quick] [--out DIR] [--against orthanc]`` (also
``python -m benchmarks.suite``): argument parsing and the scenario table."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import sys
from pathlib import Path

from benchmarks.suite import common

SCENARIOS = ("ingest", "query", "retrieve", "mixed")

#: Tiny sizes of --quick (every scenario well under 2 minutes): a smoke run / format check.
QUICK = {"files": 60, "ct_slices": 4, "mr_slices": 2, "us_frames": 2, "modalities": [1, 2],
         "runs": 1, "sizes": [500, 1500], "queries": 20, "viewers": [1, 2], "sessions": 3,
         "retrieve_files": 24, "rate": 4.0, "mixed_viewers": 2, "mixed_modalities": 2,
         "mixed_duration": 6.0, "orthanc_max": 1500, "quiet_wait": 0.0,
         "requests": 5}
FULL = {"files": 1000, "ct_slices": 120, "mr_slices": 24, "us_frames": 30,
        "modalities": [1, 2, 4, 8, 16], "runs": 3, "sizes": [10_000, 100_000, 1_000_000],
        "queries": 200, "viewers": [1, 2, 4, 8, 16], "sessions": 10, "retrieve_files": 400,
        "rate": 50.0, "mixed_viewers": 4, "mixed_modalities": 4, "mixed_duration": 60.0,
        "orthanc_max": 1_000_000, "quiet_wait": 60.0, "requests": 30}


def _ints(text: str) -> list[int]:
    vals = [int(x) for x in text.split(",") if x.strip()]
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError("a comma-separated list of positive integers")
    return vals


def _mix(text: str) -> dict[str, float]:
    from benchmarks.corpus import MODALITIES

    mix = {}
    for part in text.split(","):
        name, _, weight = part.partition("=")
        name = name.strip().upper()
        if name not in MODALITIES:
            raise argparse.ArgumentTypeError(f"modality {name!r}: one of {MODALITIES}")
        mix[name] = float(weight or 1)
    return mix


def build_parser(prog: str = "hpacs bench") -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog=prog, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Sizing suite: how many modalities, instances per day and concurrent "
                    "viewers this machine carries, with what latency. Writes DIR/SCENARIO.json "
                    "and DIR/SCENARIO.md with PNG plots and a sizing summary.",
        epilog="scenarios:\n"
               "  ingest    N modalities (concurrent associations) storing a CT/MR/DX/US mix\n"
               "  query     C-FIND and QIDO latency per query shape as the index grows\n"
               "  retrieve  C-GET/C-MOVE study throughput, WADO-RS, N parallel viewers\n"
               "  mixed     ingest at a fixed rate while K viewers open priors\n\n"
               "examples:\n"
               "  hpacs bench ingest --quick\n"
               "  hpacs bench retrieve --against orthanc --out /tmp/sizing\n"
               "  hpacs bench all --against orthanc    # every scenario, full sizes")
    ap.add_argument("scenario", choices=(*SCENARIOS, "all"))
    ap.add_argument("--quick", action="store_true",
                    help="tiny sizes (each scenario < 2 min): a smoke run, not a measurement")
    ap.add_argument("--out", type=Path, default=None,
                    help="report directory (default benchmarks/reports/bench-DATE)")
    ap.add_argument("--against", choices=["orthanc"], default=None,
                    help="also run the scenario against Orthanc in the same session")
    ap.add_argument("--workdir", type=Path, default=common.DEFAULT_WORKDIR,
                    help="corpus cache and server data (benchmarks/work, git-ignored)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
    g = ap.add_argument_group("corpus (ingest, retrieve, mixed)")
    g.add_argument("--files", type=int, help="instances in the ingest corpus (1000)")
    g.add_argument("--mix", type=_mix, default={"CT": 4.0, "MR": 3.0, "DX": 2.0, "US": 1.0},
                   help="modality weights of the studies (CT=4,MR=3,DX=2,US=1)")
    g.add_argument("--syntax", default="explicit",
                   choices=["explicit", "implicit", "big", "deflated"],
                   help="transfer syntax of the corpus (explicit VR little endian)")
    g.add_argument("--ct-slices", type=int, help="slices per CT series (120)")
    g.add_argument("--mr-slices", type=int, help="slices per MR series (24)")
    g.add_argument("--us-frames", type=int, help="frames per US cine (30)")
    g = ap.add_argument_group("ingest")
    g.add_argument("--modalities", type=_ints, help="modality counts to sweep (1,2,4,8,16)")
    g.add_argument("--runs", type=int, help="runs per cell, fresh server each (3)")
    g.add_argument("--duration", type=float, default=0.0,
                   help="stop each run after this many seconds (0: send the whole corpus)")
    g = ap.add_argument_group("query")
    g.add_argument("--sizes", type=_ints, help="index sizes, filled in turn (10000,100000,1000000)")
    g.add_argument("--queries", type=int, help="queries per shape and size (200)")
    g.add_argument("--orthanc-max", type=int,
                   help="largest index size Orthanc is filled to through its REST API "
                        "(1000000: ~1 h at ~400 instances/s; lower it for a shorter run)")
    g = ap.add_argument_group("retrieve and mixed")
    g.add_argument("--retrieve-files", type=int, help="instances loaded for retrieval (400)")
    g.add_argument("--viewers", type=_ints, help="viewer counts to sweep (1,2,4,8,16)")
    g.add_argument("--sessions", type=int, help="series opened per viewer (10)")
    g.add_argument("--requests", type=int,
                   help="sequential requests per DICOMweb latency (benchmarks.dicomweb; 30)")
    g.add_argument("--parallel", type=int, default=4,
                   help="concurrent frame requests per viewer, like a browser (4)")
    g.add_argument("--rate", type=float, help="mixed: ingest rate, instances/s (50)")
    g.add_argument("--mixed-viewers", type=int, help="mixed: viewers during ingest (4)")
    g.add_argument("--mixed-modalities", type=int,
                   help="mixed: modalities sharing the ingest rate (4)")
    g.add_argument("--mixed-duration", type=float, help="mixed: seconds of load (60)")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds allowed per load run")
    ap.add_argument("--quiet-wait", type=float,
                    help="before each measured phase, wait up to this many seconds for other "
                         "load on the machine to drop (60; --quick: 0)")
    return ap


def resolve(args: argparse.Namespace, argv: list[str], prog: str) -> argparse.Namespace:
    """Fill the size options not given from the quick or full presets."""
    preset = QUICK if args.quick else FULL
    for key, value in preset.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    args.servers = ["hpacs"] + ([args.against] if args.against else [])
    if args.out is None:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
        args.out = common.REPO / "benchmarks" / "reports" / f"bench-{stamp}"
    args.command = " ".join([prog, *map(shlex.quote, argv)])
    return args


def run_scenario(name: str, opts) -> tuple[dict, list[Path]]:
    """Run one scenario; (its report, the JSON and Markdown files written)."""
    import importlib

    module = importlib.import_module(f"benchmarks.suite.{name}")
    Path(opts.workdir).mkdir(parents=True, exist_ok=True)
    report = module.run(opts)
    return report, common.write_report(Path(opts.out), name, report, module.markdown(report))


def with_saved_reports(out: Path, reports: dict[str, dict]) -> dict[str, dict]:
    """``reports`` plus the other scenarios' reports saved in ``out``, in scenario order: the
    sizing summary covers the whole directory, so one scenario run again (e.g. ``query`` once
    Orthanc's fill is kept) refreshes it together with the others."""
    found = dict(reports)
    for name in SCENARIOS:
        path = out / f"{name}.json"
        if name not in found and path.exists():
            found[name] = json.loads(path.read_text())
    return {name: found[name] for name in SCENARIOS if name in found}


def main(argv: list[str] | None = None, prog: str = "hpacs bench") -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = resolve(build_parser(prog).parse_args(argv), argv, prog)
    os.environ.setdefault("TCP_NODELAY", "1")
    names = SCENARIOS if args.scenario == "all" else (args.scenario,)
    failed = False
    reports = {}
    for name in names:
        report, written = run_scenario(name, args)
        reports[name] = report
        for path in written:
            print(f"wrote {path}")
        failed |= not report["ok"]
    reports = with_saved_reports(Path(args.out), reports)
    if len(reports) > 1:
        from benchmarks.suite import sizing

        print(f"wrote {sizing.write(Path(args.out), reports)}")
    return 1 if failed else 0
