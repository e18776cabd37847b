"""`hpacs` command line: serve, import, reindex, send, migrate, compact, prefetch, verify, bench."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from hpacs import __version__
from hpacs.config import Config, ConfigError, load_config
from hpacs.log import configure_logging

# flag dest -> (config section, key)
_SERVER_FLAGS = {
    "data_dir": ("server", "data_dir"),
    "host": ("server", "host"),
    "dicom_port": ("server", "dicom_port"),
    "http_port": ("server", "http_port"),
    "ae_title": ("server", "ae_title"),
    "max_associations": ("dicom", "max_associations"),
    "max_pdu_length": ("dicom", "max_pdu_length"),
    "duplicate_policy": ("store", "duplicate_policy"),
    "durability": ("index", "durability"),
    "log_level": ("log", "level"),
    "log_format": ("log", "format"),
}


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="TOML config file (flags override it)")
    p.add_argument("--data-dir", type=Path, help="archive directory (default ./hpacs-data)")
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING, ERROR (default INFO)")
    p.add_argument("--log-format", choices=["json", "text"], help="log format (default json)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hpacs", description="hpacs: a high-performance PACS (DICOM and DICOMweb archive).")
    parser.add_argument("--version", action="version", version=f"hpacs {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the archive server (DICOM + HTTP on one loop)")
    _add_common(serve)
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--dicom-port", type=int, help="DICOM port (default 11112)")
    serve.add_argument("--http-port", type=int, help="HTTP port (default 8042)")
    serve.add_argument("--ae-title", help="our AE title (default HPACS)")
    serve.add_argument("--max-associations", type=int, help="concurrent associations (64)")
    serve.add_argument("--max-pdu-length", type=int, help="largest PDU we receive (1048576)")
    serve.add_argument("--duplicate-policy", choices=["keep", "replace", "reject"],
                       help="what a re-sent SOP Instance UID does (default keep)")
    serve.add_argument("--durability", choices=["files", "sync"],
                       help="index durability mode (default files)")

    imp = sub.add_parser("import", help="store files and folders (recursively) into the archive")
    _add_common(imp)
    imp.add_argument("paths", nargs="+", type=Path, help="files or folders")
    imp.add_argument("--no-progress", action="store_true", help="no progress bar")

    rei = sub.add_parser("reindex", help="rebuild the index from the hot files and cold packs")
    _add_common(rei)
    rei.add_argument("--no-progress", action="store_true", help="no progress bar")

    mig = sub.add_parser(
        "migrate", help="move studies hot -> cold by the lifecycle rules (or --older-than)",
        description="Run the [lifecycle] rules once: studies idle for --older-than days (0: "
                    "every study) and, above the hot high watermark, the least recently used "
                    "ones go to the cold packs. Takes the data-dir lock (stop the server, which "
                    "runs the same rules itself when [lifecycle] enabled = true).",
        epilog="exit status: 0 done; 1 some instances could not be migrated; 3 archive in use")
    _add_common(mig)
    mig.add_argument("--older-than", type=float, metavar="DAYS",
                     help="idle days (since last read or store); 0 = every study "
                          "(default: [lifecycle] older_than_days)")
    mig.add_argument("--dry-run", action="store_true", help="list what would move, move nothing")
    mig.add_argument("--rate", type=float, default=0.0, metavar="MB_S",
                     help="rate limit in MB/s (default 0: unlimited)")
    mig.add_argument("--no-progress", action="store_true", help="no progress bar")

    com = sub.add_parser(
        "compact", help="reclaim the space of dead records in the cold packs",
        description="Delete cold packs no instance points into and rewrite those at least "
                    "--min-dead dead (records of promoted or replaced instances): live records "
                    "are copied, verified, into new packs. Takes the data-dir lock (the server "
                    "compacts after each rule run itself, [lifecycle] compact_dead_fraction).",
        epilog="exit status: 0 done; 3 archive in use")
    _add_common(com)
    com.add_argument("--min-dead", type=float, default=0.5, metavar="FRACTION",
                     help="rewrite packs at least this fraction dead (default 0.5)")
    com.add_argument("--dry-run", action="store_true", help="say what would go, change nothing")

    pre = sub.add_parser(
        "prefetch", help="promote a study's priors (or a patient's recent studies) to hot",
        description="Select priors with the same rule as the server (same patient; same "
                    "modality and body part first; most recent first) and promote the cold ones "
                    "to hot. Takes the data-dir lock: while the server runs, use "
                    "POST /api/prefetch instead.")
    _add_common(pre)
    who = pre.add_mutually_exclusive_group(required=True)
    who.add_argument("--study", metavar="UID", help="prefetch this study's priors")
    who.add_argument("--patient-id", metavar="ID", help="prefetch this patient's recent studies")
    pre.add_argument("--issuer", help="IssuerOfPatientID (with --patient-id)")
    pre.add_argument("--priors", type=int, help="how many (default: [prefetch] priors)")

    ver = sub.add_parser(
        "verify", help="scrub hot files and cold records against the index",
        epilog="exit status: 0 all good; 1 something missing, corrupt, unindexed or stale; "
               "3 archive in use")
    _add_common(ver)
    ver.add_argument("--no-progress", action="store_true", help="no progress bar")

    send = sub.add_parser(
        "send", help="send files, or studies/series from the archive, to a remote AE (C-STORE)",
        description="Storage SCU: send Part 10 files (folders recursively; non-DICOM files are "
                    "skipped with a reason) or studies/series from the archive to a remote AE. "
                    "Each instance goes in its own transfer syntax, data set bytes unchanged; "
                    "only when the destination refuses that syntax is an uncompressed "
                    "little-endian instance re-encoded to one it accepted. The archive is read "
                    "through a read-only index: this works while `hpacs serve` runs.",
        epilog="examples:\n"
               "  hpacs send --to STORESCP@10.0.0.5:104 scans/ extra.dcm\n"
               "  hpacs send --to WORKSTATION1 --config hpacs.toml scans/   # a [[remote]] entry\n"
               "  hpacs send --to PACS2@pacs2:11112 --data-dir ./hpacs-data --study 1.2.3 \\\n"
               "      --study 1.2.4 --series 1.2.5.6\n\n"
               "exit status: 0 all sent; 1 something failed, the destination refused or was down; "
               "2 bad arguments or config",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_common(send)
    send.add_argument("--to", required=True, metavar="AE@HOST:PORT|REMOTE",
                      help="destination: AE@host:port, or the AE title of a [[remote]] entry")
    send.add_argument("--calling-ae", help="our AE title (default: server.ae_title, HPACS)")
    send.add_argument("--study", action="append", default=[], metavar="UID",
                      help="send this study from the archive (--data-dir); repeatable")
    send.add_argument("--series", action="append", default=[], metavar="UID",
                      help="send this series from the archive (--data-dir); repeatable")
    send.add_argument("--timeout", type=float, default=30.0,
                      help="seconds to wait for the association and for each response (30)")
    send.add_argument("--no-progress", action="store_true", help="no progress bar")
    send.add_argument("paths", nargs="*", type=Path, metavar="FILES_OR_FOLDERS",
                      help="Part 10 files or folders (recursive)")

    # listed here for `hpacs --help`; main() hands its arguments to benchmarks.suite
    sub.add_parser("bench", add_help=False,
                   help="sizing suite: ingest, query, retrieve, mixed (hpacs bench --help)")
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    overrides: dict[str, dict[str, Any]] = {}
    for dest, (section, key) in _SERVER_FLAGS.items():
        value = getattr(args, dest, None)
        if value is not None:
            overrides.setdefault(section, {})[key] = value
    return load_config(args.config, overrides)


def _bench(argv: list[str]) -> int:
    """`hpacs bench`: the suite lives in the source checkout's benchmarks/ (not installed:
    it is tooling that drives the server from outside; see benchmarks/suite/__init__.py)."""
    root = Path(__file__).resolve().parent.parent
    if not (root / "benchmarks" / "suite" / "cli.py").exists():
        print("hpacs bench: benchmarks/suite not found next to the hpacs package; run it "
              "from a source checkout after `make install`", file=sys.stderr)
        return 2
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from benchmarks.suite.cli import main as bench_main

    return bench_main(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:
        return _bench(list(argv[1:]))
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        print(f"hpacs: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.log.level, config.log.format)
    if args.command == "serve":
        from hpacs.app import run_server

        return run_server(config)
    if args.command == "import":
        return _run(_import(config, args.paths, progress=not args.no_progress))
    if args.command == "reindex":
        return _run(_reindex(config, progress=not args.no_progress))
    if args.command == "send":
        from hpacs.send import run_send

        return run_send(config, args)
    if args.command == "migrate":
        return _run(_migrate(config, args))
    if args.command == "compact":
        return _run(_compact(config, args))
    if args.command == "prefetch":
        return _run(_prefetch(config, args))
    if args.command == "verify":
        return _run(_verify(config, progress=not args.no_progress))
    return 2


def _run(coro) -> int:
    import uvloop

    from hpacs.store.archive import ArchiveLockedError

    try:
        return uvloop.run(coro)
    except ArchiveLockedError as exc:
        print(f"hpacs: {exc} (stop the server first)", file=sys.stderr)
        return 3


async def _import(config: Config, paths: list[Path], progress: bool) -> int:
    from tqdm import tqdm

    from hpacs.store.archive import Archive, iter_input_files

    files = list(iter_input_files(paths))
    missing = [p for p in paths if not Path(p).exists()]
    for p in missing:
        print(f"hpacs: {p}: no such file or folder", file=sys.stderr)
    counts: Counter[str] = Counter()
    rejected: list[tuple[Path, str]] = []
    async with Archive(config) as archive:
        with tqdm(total=len(files), unit="file", disable=not progress, file=sys.stderr) as bar:
            async for path, result in archive.import_paths(files):
                counts[result.outcome.value] += 1
                if not result.outcome.ok and result.outcome.value != "duplicate-rejected":
                    rejected.append((path, result.comment))
                bar.update(1)
    stored = counts["stored"] + counts["replaced"]
    duplicates = counts["duplicate-kept"] + counts["duplicate-rejected"]
    print(f"stored {stored}, duplicate {duplicates}, rejected {len(rejected)}"
          f" (of {len(files)} files)")
    for path, reason in rejected:
        print(f"  rejected {path}: {reason}")
    return 1 if missing else 0


async def _reindex(config: Config, progress: bool) -> int:
    from tqdm import tqdm

    from hpacs.store.archive import Archive

    async with Archive(config) as archive:
        with tqdm(unit="file", disable=not progress, file=sys.stderr) as bar:
            report = await archive.rebuild_index(progress=bar.update)
    print(f"indexed {report.indexed} instances, {len(report.unreadable)} unreadable or orphan")
    for path, reason in report.unreadable:
        print(f"  {path}: {reason}")
    return 1 if report.unreadable else 0


async def _migrate(config: Config, args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from hpacs.store.archive import Archive
    from hpacs.store.lifecycle import RateLimiter

    async with Archive(config) as archive:
        lc = archive.lifecycle
        lc.limiter = RateLimiter(args.rate * 1e6)
        if args.dry_run:
            plan = await lc.plan(args.older_than)
            for c in plan:
                print(f"  would migrate {c.study_uid} ({c.reason}): {c.hot_instances} "
                      f"instances, {c.hot_bytes / 1e6:.1f} MB")
            print(f"dry run: {len(plan)} studies, "
                  f"{sum(c.hot_bytes for c in plan) / 1e6:.1f} MB would migrate")
            return 0
        with tqdm(unit="B", unit_scale=True, disable=args.no_progress, file=sys.stderr) as bar:
            report = await lc.run_rules(
                older_than_days=args.older_than,
                progress=lambda c, r: bar.update(r.bytes))
    mb_s = report.bytes / 1e6 / report.seconds if report.seconds else 0.0
    print(f"migrated {report.studies} studies, {report.instances} instances, "
          f"{report.bytes / 1e6:.1f} MB in {report.seconds:.1f} s ({mb_s:.1f} MB/s); "
          f"{report.skipped} skipped")
    return 1 if report.skipped else 0


async def _compact(config: Config, args: argparse.Namespace) -> int:
    from hpacs.store.archive import Archive

    async with Archive(config) as archive:
        report = await archive.lifecycle.compact(args.min_dead, dry_run=args.dry_run)
    verb = "would free" if args.dry_run else "freed"
    print(f"{verb} {report.bytes_freed / 1e6:.1f} MB: {report.packs_rewritten} packs rewritten "
          f"({report.records_moved} records moved), {report.packs_dropped} packs deleted")
    return 0


async def _prefetch(config: Config, args: argparse.Namespace) -> int:
    from hpacs.store.archive import Archive
    from hpacs.store.prefetch import Prefetcher, PrefetchError

    async with Archive(config) as archive:
        prefetcher = Prefetcher(archive, config.prefetch)
        try:
            studies = prefetcher.select(study_uid=args.study, patient_id=args.patient_id,
                                        issuer=args.issuer, limit=args.priors)
        except PrefetchError as exc:
            print(f"hpacs: {exc}", file=sys.stderr)
            return 1
        plan = prefetcher.plan(studies)
        promoted = 0
        for uid in plan.queued:
            promoted += (await archive.lifecycle.promote_study(uid)).instances
    print(f"priors {len(plan.priors)}: {len(plan.queued)} promoted ({promoted} instances), "
          f"{len(plan.hot)} hot already")
    for uid in plan.priors:
        print(f"  {uid}")
    return 0


async def _verify(config: Config, progress: bool) -> int:
    import asyncio

    from tqdm import tqdm

    from hpacs.store.archive import Archive
    from hpacs.store.verify import verify

    async with Archive(config) as archive:
        total = archive.db.count("instance")
        with tqdm(total=total, unit="inst", disable=not progress, file=sys.stderr) as bar:
            report = await asyncio.get_running_loop().run_in_executor(
                None, verify, archive.db, archive.tiers, bar.update)
    print(f"checked {report.hot_checked} hot, {report.cold_checked} cold instances; "
          f"{report.cold_records} cold records ({report.dead_records} dead); "
          f"missing {len(report.missing)}, corrupt {len(report.corrupt)}, "
          f"unindexed {len(report.unindexed)}, stale {len(report.stale)}")
    for kind in ("missing", "corrupt", "unindexed", "stale"):
        for what, why in getattr(report, kind):
            print(f"  {kind} {what}: {why}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
