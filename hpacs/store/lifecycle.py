"""Moving studies between tiers: migration hot -> cold, promotion cold -> hot, and their rules.

Crash safety (kill -9 at any instant of a move leaves every instance readable exactly once,
the index consistent, and the next run finishing the job)
------------------------------------------------------------------------------------------
The index row of an instance is the truth: it names ONE location, a hot path or a cold ref.
A copy the index does not name is dead weight, never a second live instance. A move writes the
new copy durably first, then switches the row, then removes the old copy, so a reader always
finds the copy the row names. A *journal* (meta key ``lifecycle.journal``: study UID -> "migrate"
or "promote"), committed and synced before a move starts and cleared after, tells the next
start which studies may hold a stale copy.

Migration of a study::

  1. journal[study] = "migrate"; commit; env.sync
  2. for each hot instance: read the file, ColdStore.append (rate limited)
  3. ColdStore.sync                        -> every new cold record is durable
  4. under the instances' ingest locks: one index op pointing each row (if still the row we
     read: a re-sent instance replaced meanwhile keeps its new file) at its cold ref; commit;
     env.sync                              -> "files" durability mode commits without sync and
                                              treats hot files as its log: the switch must be
                                              on disk before the log entry (the file) goes
  5. unlink the hot files (still under the locks: a re-send cannot slip a new file in)
  6. del journal[study]; commit

Promotion of a study (a cold read under the promotion rule, or a prior prefetch)::

  1. journal[study] = "promote"; commit; env.sync
  2. under the instances' ingest locks, for each cold instance: restore (checksum verified),
     write the hot file (temp + fsync + rename + dir fsync)
  3. one index op pointing each row (if unchanged) at its hot path; commit
  4. del journal[study]; commit           -> the cold records are dead space (compaction)

A kill at any point, and what the next start (:meth:`Lifecycle.reconcile`) does:

- before 4 of a migration: rows still name the hot files, which are intact; the appended cold
  records (possibly a torn tail, which ColdStore truncates on open) are dead space. The study
  is still hot, so the next run migrates it again.
- between 4 and 5: rows name durable cold records; a hot file still present is a stale copy:
  reconcile deletes it (the journal names the study).
- during a promotion: a hot file renamed into place whose row still names the cold record is a
  complete copy (rename is atomic, the file was fsync'd): reconcile points the row at it,
  finishing the promotion. Temp files are removed by the archive's tmp cleanup.
- after the last step: the journal entry may linger; reconcile finds nothing to do and clears it.

Compaction (:meth:`Lifecycle.compact`) copies the live records of mostly dead packs into new
packs, switches the rows (synced), and deletes a pack only when no row points into it; a kill
at any point leaves either the old or the new copy named by each row, and the other dead.

"files" mode recovery (re-index hot files newer than the checkpoint) runs before reconcile and
may re-point a row at a stale hot copy; that copy is byte-identical to the cold record (both
are the exact original), so either location is right, and a still-hot study is migrated again.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hpacs.config import LifecycleConfig
from hpacs.index.db import IndexDB, InstanceEntry, WriteBatch, activity_key
from hpacs.log import get_logger
from hpacs.store.hot import _fsync_dir
from hpacs.store.tiers import cold_ref, ref_to_index

if TYPE_CHECKING:
    from hpacs.metrics import Metrics
    from hpacs.store.archive import Archive

log = get_logger("hpacs.lifecycle")

JOURNAL = "lifecycle.journal"
MIGRATE = "migrate"
PROMOTE = "promote"
DAY = 86400.0
#: While ingest is busy a migration waits at most this long before each instance.
INGEST_YIELD_MAX_S = 2.0


# -- rules ----------------------------------------------------------------------------------


@dataclass(slots=True)
class StudyUsage:
    """What the rules look at for one study."""

    study_uid: str
    patient_id: str
    last_activity: float  # max(last stored, last read), epoch seconds
    hot_bytes: int = 0
    cold_bytes: int = 0
    hot_instances: int = 0


@dataclass(frozen=True, slots=True)
class Candidate:
    study_uid: str
    reason: str  # "age" or "capacity"
    hot_bytes: int
    hot_instances: int


def hot_study_usage(
    db: IndexDB, until: float | None = None
) -> tuple[list[StudyUsage], list[tuple[str, bytes]]]:
    """Usage of the studies that hold hot instances, least recently active first, up to
    ``until`` (epoch seconds; None: all), from the ``ix_hot_activity`` index: what the rules
    can pick, never the cold archive's rows (blocking). Also the stale index entries seen
    (study gone cold, deleted, or listed under an old activity) for ``unlist_hot``."""
    usage: list[StudyUsage] = []
    stale: list[tuple[str, bytes]] = []
    for activity, study_uid in db.hot_studies(until):
        st = db.get_study(study_uid)
        if st is None or activity_key(st) != activity:
            stale.append((study_uid, activity))
            continue
        u = StudyUsage(study_uid, st.patient_id, max(st.last_stored, st.last_access))
        for e in db.study_instances(study_uid):
            if e.cold is None:
                u.hot_bytes += e.size
                u.hot_instances += 1
            else:
                u.cold_bytes += e.size
        if u.hot_instances:
            usage.append(u)
        else:
            stale.append((study_uid, activity))
    return usage, stale


def select_for_migration(
    usage: Iterable[StudyUsage],
    rules: LifecycleConfig,
    now: float,
    *,
    older_than_days: float | None = None,
    hot_used: int = 0,
    hot_capacity: int = 0,
    keep: Callable[[StudyUsage], bool] | None = None,
) -> list[Candidate]:
    """The studies to migrate, in order: by age (oldest activity first), then, when the hot
    tier is above the high watermark, the least recently used until it would be below the low
    one. ``keep`` is the hook for further exclusions (e.g. an open order from the RIS)."""
    days = rules.older_than_days if older_than_days is None else older_than_days
    eligible = sorted(
        (u for u in usage
         if u.hot_bytes > 0 and not _excluded(u, rules) and not (keep and keep(u))),
        key=lambda u: (u.last_activity, u.study_uid))
    chosen: list[Candidate] = []
    taken: set[str] = set()
    if days >= 0:
        for u in eligible:
            if now - u.last_activity >= days * DAY:
                chosen.append(Candidate(u.study_uid, "age", u.hot_bytes, u.hot_instances))
                taken.add(u.study_uid)
    if rules.high_watermark > 0 and hot_capacity > 0:
        used = hot_used - sum(c.hot_bytes for c in chosen)
        if used > rules.high_watermark * hot_capacity:
            target = rules.low_watermark * hot_capacity
            for u in eligible:
                if used <= target:
                    break
                if u.study_uid in taken:
                    continue
                chosen.append(Candidate(u.study_uid, "capacity", u.hot_bytes, u.hot_instances))
                used -= u.hot_bytes
    return chosen


def _excluded(u: StudyUsage, rules: LifecycleConfig) -> bool:
    return any(fnmatch.fnmatchcase(u.patient_id, p) for p in rules.exclude_patient_ids)


# -- moves ----------------------------------------------------------------------------------


@dataclass
class MoveResult:
    instances: int = 0
    bytes: int = 0
    skipped: int = 0  # changed meanwhile, or unreadable (logged)


@dataclass
class MigrationReport:
    candidates: list[Candidate] = field(default_factory=list)
    studies: int = 0
    instances: int = 0
    bytes: int = 0
    skipped: int = 0
    seconds: float = 0.0


@dataclass
class CompactReport:
    packs_rewritten: int = 0
    packs_dropped: int = 0
    records_moved: int = 0
    bytes_freed: int = 0


class RateLimiter:
    """Bytes per second, as a schedule: each chunk may start once the previous ones' share of
    time has passed (no burst beyond one chunk)."""

    def __init__(self, bytes_per_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = bytes_per_s
        self.clock = clock
        self._next = 0.0

    async def take(self, n: int) -> None:
        if self.rate <= 0:
            return
        now = self.clock()
        start = max(self._next, now)
        self._next = start + n / self.rate
        if start > now:
            await asyncio.sleep(start - now)


class Lifecycle:
    """Tier moves for one archive, the rules, and (in a server) the background task."""

    def __init__(self, archive: Archive, rules: LifecycleConfig, *,
                 clock: Callable[[], float] = time.time, metrics: Metrics | None = None) -> None:
        self.archive = archive
        self.rules = rules
        self.clock = clock
        self.metrics = metrics
        self.limiter = RateLimiter(rules.rate_mb_s * 1e6)
        #: Extra exclusion hook (e.g. "patient has an open order"): True keeps a study hot.
        self.keep: Callable[[StudyUsage], bool] | None = None
        self._study_locks: dict[str, asyncio.Lock] = {}
        self._promotions: asyncio.Queue[str | None] | None = None
        self._stopping = asyncio.Event()
        self._queued: set[str] = set()
        self._tasks: list[asyncio.Task] = []
        self.yield_to_ingest = True
        #: Held by migrations (append, then switch rows) and compaction (which deletes packs no
        #: row points into): a pack a migration has appended to but not yet switched to must
        #: never look empty to a compaction.
        self._cold_writes = asyncio.Lock()

    @property
    def db(self) -> IndexDB:
        return self.archive.db

    # -- journal ----------------------------------------------------------------------------
    def journal(self) -> dict[str, str]:
        return dict(self.db.meta_get(JOURNAL) or {})

    async def _journal_set(self, study_uid: str, op: str | None, *, sync: bool) -> None:
        db = self.db

        def update(w: WriteBatch) -> None:
            journal = dict(db.meta_get(JOURNAL, txn=w.txn) or {})
            if op is None:
                journal.pop(study_uid, None)
            else:
                journal[study_uid] = op
            db.meta_set(JOURNAL, journal, txn=w.txn)

        await self.archive.writer.run(update)
        if sync:
            await self.archive.writer.sync()

    # -- helpers ------------------------------------------------------------------------------
    def _study_lock(self, study_uid: str) -> asyncio.Lock:
        lock = self._study_locks.get(study_uid)
        if lock is None:
            lock = self._study_locks[study_uid] = asyncio.Lock()
        return lock

    @contextlib.asynccontextmanager
    async def _instance_locks(self, sops: Iterable[str]):
        async with contextlib.AsyncExitStack() as stack:
            for sop in sorted(set(sops)):  # one order everywhere: no deadlock between moves
                await stack.enter_async_context(self.archive.ingestor.instance_lock(sop))
            yield

    async def _in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    async def _yield_to_ingest(self) -> None:
        if not self.yield_to_ingest:
            return
        waited = 0.0
        while self.archive.ingestor.in_flight > 0 and waited < INGEST_YIELD_MAX_S:
            await asyncio.sleep(0.05)
            waited += 0.05

    def _modality(self, series_uid: str) -> str:
        se = self.db.get_series(series_uid)
        m = se.attrs.get("Modality") if se is not None else None
        return m if isinstance(m, str) else ""

    def _append(self, entry: InstanceEntry) -> tuple[Any, int] | None:
        """Copy one hot file into the cold store (blocking); None if it cannot be read."""
        path = self.archive.hot.absolute(entry.path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            log.error("lifecycle.hot_unreadable", sop=entry.sop_instance_uid, path=entry.path,
                      error=str(exc))
            return None
        if len(data) != entry.size:
            log.error("lifecycle.hot_size_mismatch", sop=entry.sop_instance_uid,
                      path=entry.path, size=len(data), indexed=entry.size)
            return None
        ref = self.archive.tiers.cold.append(data, key=entry.sop_instance_uid,
                                             modality=self._modality(entry.series_uid))
        return ref, len(data)

    def _unlink(self, relatives: list[str]) -> None:
        dirs = set()
        for rel in relatives:
            path = self.archive.hot.absolute(rel)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            dirs.add(path.parent)
        if self.archive.hot.fsync:
            for d in dirs:
                with contextlib.suppress(OSError):
                    _fsync_dir(d)
        self.archive.hot.prune_dirs(relatives)  # (rmdir: safe while ingest writes there)

    # -- migration ----------------------------------------------------------------------------
    async def migrate_study(self, study_uid: str) -> MoveResult:
        """Move a study's hot instances into the cold store (see the module docstring)."""
        async with self._study_lock(study_uid), self._cold_writes:
            return await self._migrate(study_uid)

    async def _migrate(self, study_uid: str) -> MoveResult:
        result = MoveResult()
        entries = [e for e in await self._in_thread(self.db.study_instances, study_uid)
                   if e.cold is None]
        if not entries:
            return result
        await self._journal_set(study_uid, MIGRATE, sync=True)
        moved: list[tuple[InstanceEntry, Any, int]] = []
        for e in entries:
            await self._yield_to_ingest()
            await self.limiter.take(e.size)
            got = await self._in_thread(self._append, e)
            if got is None:
                result.skipped += 1
                continue
            moved.append((e, *got))
        if moved:
            await self._in_thread(self.archive.tiers.cold.sync)
            async with self._instance_locks(e.sop_instance_uid for e, _, _ in moved):
                db = self.db

                def switch(w: WriteBatch) -> list[bool]:
                    done = [db.set_location(w, e.sop_instance_uid, "", ref_to_index(ref),
                                            expect=e) for e, ref, _ in moved]
                    db.unlist_hot(w, study_uid)  # (kept if anything hot is left)
                    return done

                switched = await self.archive.writer.run(switch)
                await self.archive.writer.sync()
                gone = [e.path for (e, _, _), ok in zip(moved, switched, strict=True) if ok]
                await self._in_thread(self._unlink, gone)
            for (_, _, size), ok in zip(moved, switched, strict=True):
                if ok:
                    result.instances += 1
                    result.bytes += size
                else:
                    result.skipped += 1
        await self._journal_set(study_uid, None, sync=False)
        if self.metrics is not None:
            self.metrics.tier_migrated_instances.inc(result.instances)
            self.metrics.tier_migrated_bytes.inc(result.bytes)
        log.info("lifecycle.migrated", study=study_uid, instances=result.instances,
                 bytes=result.bytes, skipped=result.skipped)
        return result

    # -- promotion ----------------------------------------------------------------------------
    async def promote_study(self, study_uid: str) -> MoveResult:
        """Bring a study's cold instances back to hot files (see the module docstring)."""
        async with self._study_lock(study_uid):
            return await self._promote(study_uid)

    def _write_hot(self, entry: InstanceEntry, study_uid: str) -> str:
        hot = self.archive.hot
        data = self.archive.tiers.restore(entry)
        rel = hot.relative_path(study_uid, entry.series_uid, entry.sop_instance_uid)
        fd, temp = hot.open_temp()
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        except BaseException:
            hot.discard(fd, temp)
            raise
        try:
            hot.commit(fd, temp, rel)
        except BaseException:
            hot.discard(None, temp)
            raise
        return rel

    async def _promote(self, study_uid: str) -> MoveResult:
        result = MoveResult()
        entries = [e for e in await self._in_thread(self.db.study_instances, study_uid)
                   if e.cold is not None]
        if not entries:
            return result
        await self._journal_set(study_uid, PROMOTE, sync=True)
        async with self._instance_locks(e.sop_instance_uid for e in entries):
            written: list[tuple[InstanceEntry, str]] = []
            for e in entries:
                current = self.db.get_instance(e.sop_instance_uid)
                if current != e:  # re-sent meanwhile: its new copy stands
                    result.skipped += 1
                    continue
                try:
                    rel = await self._in_thread(self._write_hot, e, study_uid)
                except OSError as exc:
                    log.error("lifecycle.promote_failed", sop=e.sop_instance_uid, error=str(exc))
                    result.skipped += 1
                    continue
                written.append((e, rel))
            db = self.db

            def switch(w: WriteBatch) -> list[bool]:
                return [db.set_location(w, e.sop_instance_uid, rel, None, expect=e)
                        for e, rel in written]

            switched = await self.archive.writer.run(switch) if written else []
        for (e, _), ok in zip(written, switched, strict=True):
            if ok:
                result.instances += 1
                result.bytes += e.size
        await self._journal_set(study_uid, None, sync=False)
        if self.metrics is not None:
            self.metrics.tier_promoted_instances.inc(result.instances)
        log.info("lifecycle.promoted", study=study_uid, instances=result.instances,
                 bytes=result.bytes, skipped=result.skipped)
        return result

    # -- recovery -----------------------------------------------------------------------------
    async def reconcile(self) -> int:
        """Finish the moves a crash interrupted (journal); returns the copies fixed."""
        journal = self.journal()
        fixed = 0
        for study_uid, op in journal.items():
            entries = await self._in_thread(self.db.study_instances, study_uid)
            stale: list[str] = []
            adopt: list[tuple[InstanceEntry, str]] = []
            for e in entries:
                if e.cold is None:
                    continue
                rel = self.archive.hot.relative_path(study_uid, e.series_uid,
                                                     e.sop_instance_uid)
                path = self.archive.hot.absolute(rel)
                if not path.exists():
                    continue
                ref = cold_ref(e)
                if op == PROMOTE and ref is not None and path.stat().st_size == ref.size:
                    adopt.append((e, rel))
                else:
                    stale.append(rel)
            if adopt:
                def switch(w: WriteBatch, adopt=adopt, db=self.db) -> list[bool]:
                    return [db.set_location(w, e.sop_instance_uid, rel, None, expect=e)
                            for e, rel in adopt]

                await self.archive.writer.run(switch)
            if stale:
                await self._in_thread(self._unlink, stale)
            fixed += len(adopt) + len(stale)
            await self._journal_set(study_uid, None, sync=False)
            log.warning("lifecycle.reconciled", study=study_uid, op=op, adopted=len(adopt),
                        removed=len(stale))
        return fixed

    # -- rules ----------------------------------------------------------------------------------
    def hot_usage(self, usage: dict[str, StudyUsage]) -> tuple[int, int]:
        """(used, capacity) bytes of the hot tier for the watermarks."""
        if self.rules.hot_capacity_gb > 0:
            return (sum(u.hot_bytes for u in usage.values()),
                    int(self.rules.hot_capacity_gb * (1 << 30)))
        du = shutil.disk_usage(self.archive.hot.root)
        return du.used, du.total

    async def plan(self, older_than_days: float | None = None) -> list[Candidate]:
        """Proportional to the hot tier: the age rule reads the hot studies old enough only,
        the watermarks (when on) every hot study; never the cold archive's rows."""
        now = self.clock()
        days = self.rules.older_than_days if older_than_days is None else older_than_days
        watermarks = self.rules.high_watermark > 0
        if not watermarks and days < 0:
            return []
        until = None if watermarks else now - days * DAY
        hot, stale = await self._in_thread(hot_study_usage, self.db, until)
        if stale:
            def prune(w: WriteBatch, db: IndexDB = self.db) -> None:
                for study_uid, activity in stale:
                    db.unlist_hot(w, study_uid, activity)

            await self.archive.writer.run(prune)
        usage = {u.study_uid: u for u in hot}
        used, capacity = await self._in_thread(self.hot_usage, usage)
        return select_for_migration(usage.values(), self.rules, now,
                                    older_than_days=older_than_days, hot_used=used,
                                    hot_capacity=capacity, keep=self.keep)

    async def run_rules(self, *, older_than_days: float | None = None, dry_run: bool = False,
                        progress: Callable[[Candidate, MoveResult], None] | None = None,
                        ) -> MigrationReport:
        """One pass of the rules: plan, then migrate study by study."""
        started = time.monotonic()
        report = MigrationReport(await self.plan(older_than_days))
        if self.metrics is not None:
            self.metrics.tier_pending_studies.set(len(report.candidates))
        log.info("lifecycle.planned", studies=len(report.candidates), dry_run=dry_run,
                 bytes=sum(c.hot_bytes for c in report.candidates))
        for i, c in enumerate(report.candidates):
            if dry_run or self._stopping.is_set():  # a stop lets the current study finish
                continue
            r = await self.migrate_study(c.study_uid)
            report.studies += 1 if r.instances else 0
            report.instances += r.instances
            report.bytes += r.bytes
            report.skipped += r.skipped
            if self.metrics is not None:
                self.metrics.tier_pending_studies.set(len(report.candidates) - i - 1)
            if progress is not None:
                progress(c, r)
        if not dry_run and self.rules.compact_dead_fraction > 0 and not self._stopping.is_set():
            await self.compact(self.rules.compact_dead_fraction)
        report.seconds = time.monotonic() - started
        log.info("lifecycle.pass_done", studies=report.studies, instances=report.instances,
                 bytes=report.bytes, skipped=report.skipped, seconds=round(report.seconds, 2))
        return report

    # -- compaction ---------------------------------------------------------------------------
    def _cold_rows_by_pack(self) -> dict[int, list[InstanceEntry]]:
        by_pack: dict[int, list[InstanceEntry]] = {}
        for e in self.db.iter_instances():
            ref = cold_ref(e)
            if ref is not None:
                by_pack.setdefault(ref.pack, []).append(e)
        return by_pack

    async def compact(self, min_dead_fraction: float = 0.5, *,
                      dry_run: bool = False) -> CompactReport:
        """Reclaim the space of dead cold records (promoted or replaced instances).

        Packs no row points into are deleted; packs at least ``min_dead_fraction`` dead have
        their live records copied (verified, not re-encoded) into new packs, the rows switched
        under the instances' ingest locks and synced, then the old packs deleted only if no row
        points into them any more. A kill -9 before the switch leaves the old packs the truth
        and the copies dead space; after it, the old packs are unreferenced and the next
        compaction deletes them: every instance stays readable exactly once."""
        async with self._cold_writes:
            return await self._compact(min_dead_fraction, dry_run)

    async def _compact(self, min_dead_fraction: float, dry_run: bool) -> CompactReport:
        report = CompactReport()
        cold = self.archive.tiers.cold
        by_pack = await self._in_thread(self._cold_rows_by_pack)
        empty, rewrite = [], []
        for pack in cold.packs():
            size = cold.pack_bytes(pack)
            rows = by_pack.get(pack, [])
            live = sum(cold_ref(e).length for e in rows)  # type: ignore[union-attr]
            if not rows:
                empty.append(pack)
                report.bytes_freed += size
            elif size and (size - live) / size >= min_dead_fraction:
                rewrite.append(pack)
                report.bytes_freed += size - live
        log.info("lifecycle.compact_planned", empty=len(empty), rewrite=len(rewrite),
                 bytes=report.bytes_freed, dry_run=dry_run)
        if dry_run:
            return report
        if empty:  # first, so the copies below never land in a pack about to go
            await self._in_thread(cold.drop_packs, empty)
            report.packs_dropped += len(empty)
        if rewrite:
            rows = [e for pack in rewrite for e in by_pack[pack]]
            moved = await self._in_thread(cold.compact, [cold_ref(e) for e in rows])
            async with self._instance_locks(e.sop_instance_uid for e in rows):
                db = self.db

                def switch(w: WriteBatch) -> list[bool]:
                    return [db.set_location(w, e.sop_instance_uid, "",
                                            ref_to_index(moved[cold_ref(e)]), expect=e)
                            for e in rows]

                switched = await self.archive.writer.run(switch)
                await self.archive.writer.sync()
            report.records_moved = sum(switched)
            report.packs_rewritten = len(rewrite)
            still = await self._in_thread(self._cold_rows_by_pack)
            gone = [p for p in rewrite if p not in still]  # a row changed meanwhile keeps its
            await self._in_thread(cold.drop_packs, gone)  # pack until the next compaction
            report.packs_dropped += len(gone)
        log.info("lifecycle.compacted", packs_rewritten=report.packs_rewritten,
                 packs_dropped=report.packs_dropped, records=report.records_moved,
                 bytes=report.bytes_freed)
        return report

    # -- access times and promotion queue ---------------------------------------------------------
    async def flush_access(self) -> int:
        """Write the series read since the last flush as their studies' last access."""
        reads = self.archive.tiers.take_reads()
        if not reads:
            return 0
        times: dict[str, float] = {}
        for series_uid, t in reads.items():
            se = self.db.get_series(series_uid)
            if se is not None and t > times.get(se.study_uid, 0.0):
                times[se.study_uid] = t
        db = self.db
        await self.archive.writer.run(lambda w: db.set_last_access(w, times))
        return len(times)

    def request_promotion(self, study_uid: str) -> bool:
        """Queue a study for promotion (loop thread); False if already queued."""
        if self._promotions is None or study_uid in self._queued:
            return False
        self._queued.add(study_uid)
        self._promotions.put_nowait(study_uid)
        return True

    def _on_cold_read(self, loop: asyncio.AbstractEventLoop) -> Callable[[str], None]:
        def noticed(series_uid: str) -> None:  # any thread
            loop.call_soon_threadsafe(self._promote_series, series_uid)

        return noticed

    def _promote_series(self, series_uid: str) -> None:
        se = self.db.get_series(series_uid)
        if se is not None:
            self.request_promotion(se.study_uid)

    # -- background ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the promotion worker, the access flusher and (if enabled) the rules task."""
        loop = asyncio.get_running_loop()
        self._promotions = asyncio.Queue()
        self._stopping.clear()
        if self.rules.promote_on_read:
            self.archive.tiers.on_cold_read = self._on_cold_read(loop)
        self._tasks = [asyncio.create_task(self._promotion_worker(), name="hpacs-promote"),
                       asyncio.create_task(self._access_flusher(), name="hpacs-access")]
        if self.rules.enabled:
            self._tasks.append(asyncio.create_task(self._rules_loop(), name="hpacs-migrate"))

    async def stop(self) -> None:
        """Let the move under way finish (a study is never left half moved by a clean stop),
        drop queued promotions, flush access times."""
        self.archive.tiers.on_cold_read = None
        self._stopping.set()
        if self._promotions is not None:
            self._promotions.put_nowait(None)  # wake an idle worker
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks = []
        with contextlib.suppress(Exception):
            await self.flush_access()

    async def drain_promotions(self) -> None:
        """Wait until every queued promotion is done (tests, CLI)."""
        if self._promotions is not None:
            await self._promotions.join()

    async def _promotion_worker(self) -> None:
        assert self._promotions is not None
        while not self._stopping.is_set():
            study_uid = await self._promotions.get()
            if study_uid is None or self._stopping.is_set():
                self._promotions.task_done()
                break
            try:
                await self.promote_study(study_uid)
            except Exception as exc:
                log.error("lifecycle.promote_failed", study=study_uid, error=repr(exc))
            finally:
                self._queued.discard(study_uid)
                self._promotions.task_done()

    async def _idle(self, seconds: float) -> bool:
        """Sleep, or return early (True) when stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
        return self._stopping.is_set()

    async def _access_flusher(self) -> None:
        while not await self._idle(self.rules.access_flush_interval):
            try:
                await self.flush_access()
            except Exception as exc:
                log.error("lifecycle.access_flush_failed", error=repr(exc))

    async def _rules_loop(self) -> None:
        while not await self._idle(self.rules.interval):
            try:
                await self.flush_access()
                await self.run_rules()
            except Exception as exc:
                log.error("lifecycle.pass_failed", error=repr(exc))

