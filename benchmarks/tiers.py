"""Tiered storage benchmark (a script, not a test):

    .venv/bin/python -m benchmarks.tiers [--runs 3] [--studies 4] [--slices 40] [--out FILE]

Per run, on a fresh archive (in-process, one uvloop loop, fsync on, like the server):

1. migration alone: ``Lifecycle.run_rules(older_than_days=0)`` of corpus A (synthetic CT/MR/DX
   from benchmarks.corpus), MB/s of original bytes; then promotion of every study back (MB/s);
2. ingest alone (corpus B imported through the C-STORE pipeline, files/s) and ingest of the
   same files as new instances (corpus C) while corpus A migrates (the migration yields to
   ingest, unlimited rate): both rates, side by side;
3. opening a study: every instance through the one read path + a full ``pydicom.dcmread``
   (what series metadata and frames cost), for the same study cold and after its promotion
   (a prefetched prior). Files and packs were just written: both are read from the page cache;
4. the rule pass (``Lifecycle.plan``, age 0) with every study cold (it reads the hot-study
   index only) and with every study hot (it reads them all), and opening the cold store
   (after the archive closed) with its CHECKPOINT (validates the tail) vs without (walks and
   hashes every record of the last pack).

Medians (min-max) of ``--runs``; the machine is shared, so compare columns of one run only.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

from benchmarks.corpus import CorpusConfig, iter_files
from benchmarks.stats import fmt_summary, summarize
from hpacs.config import Config, LifecycleConfig, ServerConfig
from hpacs.store.archive import Archive
from hpacs.store.cold import ColdStore


def write_corpus(cfg: CorpusConfig, out: Path) -> list[Path]:
    paths = []
    for rel, _modality, data in iter_files(cfg):
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        paths.append(path)
    return paths


def with_new_uids(paths: list[Path], out: Path) -> list[Path]:
    """The same files as new instances (same sizes and pixels): a fair second ingest load."""
    new: dict[str, str] = {}
    result = []
    for i, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        for kw in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            old = str(getattr(ds, kw))
            new.setdefault(old, generate_uid(entropy_srcs=["tiers-bench", old]))
            setattr(ds, kw, new[old])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        out.mkdir(parents=True, exist_ok=True)
        result.append(out / f"{i:05d}.dcm")
        ds.save_as(result[-1], enforce_file_format=True)
    return result


async def ingest(archive: Archive, paths: list[Path]) -> float:
    """Seconds to import ``paths`` (all must be stored)."""
    t = time.perf_counter()
    async for path, result in archive.import_paths(paths):
        assert result.outcome.ok, (path, result.comment)
    return time.perf_counter() - t


def open_study(archive: Archive, study_uid: str) -> float:
    t = time.perf_counter()
    for entry in archive.db.study_instances(study_uid):
        ds = pydicom.dcmread(archive.tiers.source(entry))
        ds.PixelData  # noqa: B018 - force the read of the pixel data
    return time.perf_counter() - t


async def migrate_all(archive: Archive, studies: list[str]) -> int:
    return sum([(await archive.lifecycle.migrate_study(s)).bytes for s in studies])


async def one_run(corpus_a: list[Path], corpus_b: list[Path], corpus_c: list[Path]
                  ) -> dict[str, float]:
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="hpacs-tiers-") as tmp:
        config = replace(Config(), server=ServerConfig(data_dir=Path(tmp)),
                         lifecycle=LifecycleConfig(rate_mb_s=0))
        async with Archive(config) as archive:
            lc = archive.lifecycle
            await ingest(archive, corpus_a)
            studies = [st.study_uid for st in archive.db.iter_studies()]
            a_bytes = sum(e.size for e in archive.db.iter_instances())
            t = time.perf_counter()
            assert len(await lc.plan(older_than_days=0)) == len(studies)
            out["rule pass, all hot, ms"] = (time.perf_counter() - t) * 1000
            report = await lc.run_rules(older_than_days=0)
            assert report.bytes == a_bytes and report.skipped == 0
            out["migrate MB/s"] = report.bytes / 1e6 / report.seconds
            t = time.perf_counter()
            assert await lc.plan(older_than_days=0) == []
            out["rule pass, all cold, ms"] = (time.perf_counter() - t) * 1000
            probe = studies[0]
            out["open cold study ms"] = open_study(archive, probe) * 1000
            t = time.perf_counter()
            promoted = sum([(await lc.promote_study(s)).bytes for s in studies])
            out["promote MB/s"] = promoted / 1e6 / (time.perf_counter() - t)
            out["open prefetched study ms"] = open_study(archive, probe) * 1000
            # ingest alone, then ingest while the (now hot again) corpus A migrates
            out["ingest alone files/s"] = len(corpus_b) / await ingest(archive, corpus_b)
            t = time.perf_counter()
            migration = asyncio.create_task(migrate_all(archive, studies))
            seconds = await ingest(archive, corpus_c)
            out["ingest during migration files/s"] = len(corpus_c) / seconds
            assert await migration == a_bytes
            out["migrate during ingest MB/s"] = a_bytes / 1e6 / (time.perf_counter() - t)
            cold_root = archive.tiers.cold.root
        out.update(cold_open(cold_root))
    return out


def cold_open(root: Path) -> dict[str, float]:
    """ms to open the cold store with its checkpoint, and without (a full walk)."""
    out = {}
    for label, drop in (("with checkpoint", False), ("full walk", True)):
        if drop:
            (root / "CHECKPOINT").unlink()
        t = time.perf_counter()
        ColdStore(root).close()
        out[f"open cold store, {label}, ms"] = (time.perf_counter() - t) * 1000
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--studies", type=int, default=4)
    ap.add_argument("--slices", type=int, default=40)
    ap.add_argument("--out", type=Path, help="also write the report to this file")
    args = ap.parse_args(argv)
    lines: list[str] = []

    def emit(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    import uvloop

    with tempfile.TemporaryDirectory(prefix="hpacs-tiers-corpus-") as tmp:
        base = Path(tmp)
        corpora = []
        for seed in (1, 2):
            cfg = CorpusConfig(seed=seed, studies=args.studies, ct_slices=args.slices,
                               ct_series_per_study=1, mr_slices=args.slices // 2,
                               mix={"CT": 2.0, "MR": 1.0, "DX": 1.0})
            corpora.append(write_corpus(cfg, base / str(seed)))
        corpora.append(with_new_uids(corpora[1], base / "3"))  # B again, other instances
        a_size = sum(p.stat().st_size for p in corpora[0])
        emit(f"corpus A: {len(corpora[0])} files, {a_size / 1e6:.1f} MB; "
             f"ingest corpora B, C: {len(corpora[1])}, {len(corpora[2])} files")
        runs = [uvloop.run(one_run(*corpora)) for _ in range(args.runs)]
    for key in runs[0]:
        emit(f"{key:38s} {fmt_summary(summarize([r[key] for r in runs]), 1)}")
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
