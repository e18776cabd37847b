"""The archive: one data directory (lock, hot and cold tiers, LMDB index, writer, ingest) and
its recovery.

Only one process owns a data directory at a time (``hpacs serve``, ``hpacs import`` and
``hpacs reindex`` take the same lock), so the single-writer index stays single-writer.
"""

from __future__ import annotations

import asyncio
import fcntl
import io
import os
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from hpacs.config import Config
from hpacs.dicom.part10 import Part10Error, read_file_meta, scan_part10
from hpacs.dicom.scan import ScanError
from hpacs.dicom.transfer_syntax import encoding_of
from hpacs.index.db import IndexDB
from hpacs.index.schema import WANTED_TAGS, InstanceRecord, RecordError, record_from_scan
from hpacs.index.writer import IndexWriter
from hpacs.log import get_logger
from hpacs.store.cold import ColdError
from hpacs.store.hot import SUFFIX, HotStore
from hpacs.store.ingest import Ingestor, Outcome, StoreResult
from hpacs.store.lifecycle import Lifecycle
from hpacs.store.metadata import METADATA_DIR, MetadataCache, MetadataWarmer
from hpacs.store.tiers import Source, Tiers, ref_to_index

log = get_logger("hpacs.archive")

INDEX_DIR = "index"
LOCK_FILE = "LOCK"
#: Directory mtimes and our checkpoint clock may differ a little: scan a bit further back.
RECOVERY_SLACK_S = 5.0
READ_CHUNK = 1 << 20


class ArchiveLockedError(RuntimeError):
    """Another process owns this data directory."""


@dataclass
class RebuildReport:
    indexed: int = 0
    unreadable: list[tuple[str, str]] = field(default_factory=list)


class Archive:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.data_dir = Path(config.server.data_dir)
        self._lock_fd: int | None = None
        self.hot: HotStore
        self.db: IndexDB
        self.writer: IndexWriter
        self.ingestor: Ingestor
        self.tiers: Tiers
        self.lifecycle: Lifecycle

    # -- life cycle ---------------------------------------------------------------------------
    async def open(self, *, recover: bool = True) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        self.hot = HotStore(self.data_dir, fsync=self.config.store.fsync)
        lc = self.config.lifecycle
        self.tiers = Tiers(self.hot, fsync=self.config.store.fsync,
                           pack_size=lc.pack_size_mb << 20, level=lc.level)
        leftovers = self.hot.clean_tmp()
        if leftovers:
            log.info("archive.tmp_cleaned", files=leftovers)
        self._open_index()
        self.metadata = MetadataCache(self.data_dir / METADATA_DIR)
        self.warmer = MetadataWarmer(self.data_dir / METADATA_DIR, self.hot.absolute,
                                     self.config.store.metadata_workers,
                                     quiet_for=self.ingestor.quiet_for)
        self.ingestor.listeners.append(self._warm_metadata)
        checkpoint = self.db.meta_get("checkpoint")
        await self.writer.start()
        # was_clean is None on the very first start, False after a crash.
        if recover and self.writer.was_clean is False:
            since = float(checkpoint or 0.0) - RECOVERY_SLACK_S
            recovered = await self.recover(since)
            log.warning("archive.recovered", since=since, reindexed=recovered)
        if recover:
            await self.lifecycle.reconcile()  # moves a crash interrupted (see lifecycle.py)

    def _open_index(self) -> None:
        cfg = self.config.index
        self.db = IndexDB(self.data_dir / INDEX_DIR, map_size=cfg.map_size_gb << 30,
                          durability=cfg.durability)
        self.ingestor = Ingestor(self.hot, self.db, self.config.store.duplicate_policy)
        self.writer = IndexWriter(self.db, sync_interval=cfg.sync_interval,
                                  max_batch=cfg.max_batch, floor=self.ingestor.oldest_unindexed)
        self.ingestor.writer = self.writer
        self.lifecycle = Lifecycle(self, self.config.lifecycle)

    async def close(self) -> None:
        """Stop the writer (drain, commit, sync), the I/O threads and the index; safe to call
        after a failed or partial open."""
        if hasattr(self, "warmer"):
            await self.warmer.close()
            self.metadata.close()
        if hasattr(self, "writer"):
            await self.writer.stop()
            self.ingestor.close()
            self.db.close()
        if hasattr(self, "tiers"):
            self.tiers.close()
        self._release_lock()

    def _warm_metadata(self, record: InstanceRecord) -> None:
        self.warmer.enqueue(record.path, record.study_uid, record.series_uid,
                            record.sop_instance_uid, record.stored_at)

    async def __aenter__(self) -> Archive:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _take_lock(self) -> None:
        fd = os.open(self.data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ArchiveLockedError(
                f"{self.data_dir} is in use by another hpacs process") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- recovery and rebuild -----------------------------------------------------------------
    async def recover(self, since: float) -> int:
        """Index every stored file in series directories changed since ``since`` that the index
        lacks: the fsync'd files are the log of what the unsynced index may have lost."""
        count = 0
        pending: list[asyncio.Future] = []
        for relative in self.hot.iter_files(modified_since=since):
            sop_uid = relative.rsplit("/", 1)[-1][: -len(SUFFIX)]
            existing = self.db.get_instance(sop_uid)
            if existing is not None and existing.path == relative:
                continue
            record = self._record_of_file(relative)
            if record is None:
                continue
            pending.append(asyncio.ensure_future(self.writer.submit(record)))
            count += 1
        if pending:
            await asyncio.gather(*pending)
        return count

    def _record_of_file(self, relative: str, report: RebuildReport | None = None):
        path = self.hot.absolute(relative)
        try:
            stat = path.stat()
            record = record_of(path, path=relative, size=stat.st_size,
                               stored_at=stat.st_mtime)
        except (OSError, Part10Error, ScanError, RecordError, KeyError) as exc:
            log.error("archive.unreadable_file", path=relative, error=str(exc))
            if report is not None:
                report.unreadable.append((relative, str(exc)))
            return None
        expected = self.hot.relative_path(record.study_uid, record.series_uid,
                                          record.sop_instance_uid)
        if expected != relative:
            reason = f"misplaced: its UIDs belong at {expected}"
            log.error("archive.orphan_file", path=relative, reason=reason)
            if report is not None:
                report.unreadable.append((relative, reason))
            return None
        return record

    async def rebuild_index(self, progress=None) -> RebuildReport:
        """Rebuild the index from the hot files and the cold packs (``hpacs reindex``).

        A hot file wins over cold records of the same instance (they are dead copies: a
        promotion or an interrupted migration); among cold records the last appended wins."""
        report = RebuildReport()
        await self.writer.stop()
        self.ingestor.close()
        self.db.close()
        index_dir = self.data_dir / INDEX_DIR
        for entry in index_dir.iterdir() if index_dir.exists() else ():
            entry.unlink()
        self._open_index()
        await self.writer.start()
        batch: list[asyncio.Future] = []

        async def index(record) -> None:
            batch.append(asyncio.ensure_future(self.writer.submit(record)))
            if len(batch) >= 256:
                await asyncio.gather(*batch)
                report.indexed += len(batch)
                batch.clear()

        hot_sops: set[str] = set()
        for relative in self.hot.iter_files():
            record = self._record_of_file(relative, report)
            if progress is not None:
                progress(1)
            if record is None:
                continue
            hot_sops.add(record.sop_instance_uid)
            await index(record)
        loop = asyncio.get_running_loop()
        latest = await loop.run_in_executor(None, self._latest_cold_records)
        for sop_uid, ref in latest.items():
            if progress is not None:
                progress(1)
            if sop_uid in hot_sops:
                continue
            record = await loop.run_in_executor(None, self._record_of_cold, sop_uid, ref, report)
            if record is not None:
                await index(record)
        if batch:
            await asyncio.gather(*batch)
            report.indexed += len(batch)
        return report

    def _latest_cold_records(self) -> dict:
        latest: dict = {}
        for sop_uid, ref in self.tiers.cold.scan():  # pack order: a later record wins
            latest[sop_uid] = ref
        return latest

    def _record_of_cold(self, sop_uid: str, ref, report: RebuildReport):
        where = f"cold:{ref.pack}:{ref.offset}"
        try:
            src = io.BytesIO(self.tiers.cold.read(ref))
            record = record_of(src, path="", size=ref.size, stored_at=0.0,
                               cold=ref_to_index(ref))
        except (ColdError, Part10Error, ScanError, RecordError, KeyError) as exc:
            log.error("archive.unreadable_cold_record", where=where, sop=sop_uid, error=str(exc))
            report.unreadable.append((where, str(exc)))
            return None
        if record.sop_instance_uid != sop_uid:
            reason = f"record key {sop_uid} holds instance {record.sop_instance_uid}"
            log.error("archive.orphan_cold_record", where=where, reason=reason)
            report.unreadable.append((where, reason))
            return None
        return record

    # -- reading ------------------------------------------------------------------------------
    async def source(self, entry) -> Source:
        """The one read path: an instance's hot file, or its restored cold bytes."""
        return await self.tiers.asource(entry)

    # -- import -------------------------------------------------------------------------------
    async def import_file(self, path: Path) -> StoreResult:
        """Store one Part 10 file through the same pipeline as C-STORE."""
        try:
            with open(path, "rb") as f:
                meta = read_file_meta(f)
                if not meta.transfer_syntax_uid or not meta.sop_instance_uid:
                    return StoreResult(Outcome.INVALID, "no Part 10 file meta information")
                receiver = self.ingestor.begin(
                    meta.sop_class_uid, meta.sop_instance_uid, meta.transfer_syntax_uid,
                    source=f"import:{path}")
                f.seek(meta.dataset_offset)
                while chunk := f.read(READ_CHUNK):
                    receiver.write(chunk)
        except (OSError, Part10Error) as exc:
            return StoreResult(Outcome.INVALID, f"not a DICOM Part 10 file: {exc}")
        return await receiver.finish()

    async def import_paths(self, paths: Iterable[Path], concurrency: int = 8
                           ) -> AsyncIterator[tuple[Path, StoreResult]]:
        """Import many files, a few at a time so their index records share commits."""
        queue: asyncio.Queue = asyncio.Queue(maxsize=concurrency * 2)
        results: asyncio.Queue = asyncio.Queue()

        async def worker() -> None:
            while (path := await queue.get()) is not None:
                results.put_nowait((path, await self.import_file(path)))
            results.put_nowait(None)

        async def feed() -> None:
            for path in paths:
                await queue.put(path)
            for _ in range(concurrency):
                await queue.put(None)

        tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
        feeder = asyncio.create_task(feed())
        done = 0
        while done < concurrency:
            item = await results.get()
            if item is None:
                done += 1
            else:
                yield item
        await feeder
        await asyncio.gather(*tasks)


def record_of(source: Path | io.BytesIO, *, path: str, size: int, stored_at: float,
              cold: list | None = None) -> InstanceRecord:
    """The index record of a stored instance (hot file or restored cold bytes), from its
    header. Raises OSError, Part10Error, ScanError, RecordError, KeyError."""
    meta, values = scan_part10(source, WANTED_TAGS)
    record = record_from_scan(
        values,
        little_endian=encoding_of(meta.transfer_syntax_uid).little_endian,
        transfer_syntax=meta.transfer_syntax_uid,
        path=path,
        size=size,
        stored_at=stored_at,
    )
    if cold is not None:
        record = msgspec.structs.replace(record, cold=cold)
    return record


def iter_input_files(paths: Iterable[Path]) -> Iterable[Path]:
    """Files named, and files under folders named (recursively), in a stable order."""
    for path in paths:
        path = Path(path)
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    yield Path(root) / name
        else:
            yield path

