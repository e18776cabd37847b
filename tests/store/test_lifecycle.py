"""Tier moves in-process: migration and promotion byte-exact, rules with a fake clock, access
times, crash leftovers reconciled, reindex from hot + cold, prefetch of priors."""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace
from pathlib import Path

import pydicom
from pydicom.uid import MRImageStorage

from hpacs.config import Config, LifecycleConfig, PrefetchConfig, ServerConfig
from hpacs.store.archive import Archive
from hpacs.store.lifecycle import DAY, JOURNAL, StudyUsage, select_for_migration
from hpacs.store.prefetch import Prefetcher
from hpacs.store.verify import verify
from tests.conftest import storage_test_files
from tests.factories import make_ct, uid, write


def config(data_dir: Path, **lifecycle) -> Config:
    return replace(Config(), server=ServerConfig(data_dir=data_dir),
                   lifecycle=replace(LifecycleConfig(rate_mb_s=0), **lifecycle))


def make_mr(patient: int, study: int, number: int, body_part: str = "HEAD", date: str = ""):
    ds = make_ct(patient=patient, study=study, series=1, number=number, size=32)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    ds.Modality = "MR"
    ds.BodyPartExamined = body_part
    if date:
        ds.StudyDate = date
    return ds


def make_dx(patient: int, study: int, number: int):
    ds = make_ct(patient=patient, study=study, series=2, number=number, size=48)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.Modality = "DX"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 14, 13
    return ds


def corpus(directory: Path) -> list[Path]:
    """pydicom's storage test files plus a synthetic CT/MR/DX corpus."""
    paths = list(storage_test_files())
    for n in range(1, 4):
        paths.append(write(make_ct(patient=1, study=1, number=n), directory))
        paths.append(write(make_mr(patient=2, study=1, number=n), directory))
        paths.append(write(make_dx(patient=3, study=1, number=n), directory))
    return paths


async def import_all(archive: Archive, paths: list[Path]) -> dict[str, bytes]:
    """Import; the stored bytes by SOP Instance UID (what every read must return)."""
    originals = {}
    async for _path, result in archive.import_paths(paths):
        if result.outcome.ok and result.record is not None:
            rec = result.record
            originals[rec.sop_instance_uid] = archive.hot.absolute(rec.path).read_bytes()
    return originals


def locations(archive: Archive) -> dict[str, str]:
    return {e.sop_instance_uid: ("cold" if e.cold is not None else "hot")
            for e in archive.db.iter_instances()}


def all_read_back(archive: Archive, originals: dict[str, bytes]) -> None:
    for sop, data in originals.items():
        entry = archive.db.get_instance(sop)
        assert entry is not None, sop
        assert archive.tiers.read_bytes(entry) == data, sop


async def test_migrate_every_study_round_trips_byte_exact(tmp_path):
    paths = corpus(tmp_path / "in")
    async with Archive(config(tmp_path / "data")) as archive:
        originals = await import_all(archive, paths)
        assert len(originals) >= 20
        report = await archive.lifecycle.run_rules(older_than_days=0)
        assert report.instances == len(originals) and report.skipped == 0
        assert set(locations(archive).values()) == {"cold"}
        assert list(archive.hot.iter_files()) == []
        assert list(archive.hot.root.iterdir()) == []  # no empty directories left behind
        all_read_back(archive, originals)
        assert archive.lifecycle.journal() == {}
        assert verify(archive.db, archive.tiers).ok
    async with Archive(config(tmp_path / "data")) as archive:  # durable across a restart
        assert set(locations(archive).values()) == {"cold"}
        all_read_back(archive, originals)
        assert await archive.lifecycle.run_rules(older_than_days=0) is not None
        assert archive.db.count("instance") == len(originals)


async def test_promotion_brings_a_study_back_hot(tmp_path):
    paths = corpus(tmp_path / "in")
    async with Archive(config(tmp_path / "data")) as archive:
        originals = await import_all(archive, paths)
        await archive.lifecycle.run_rules(older_than_days=0)
        study = uid("study", 2, 1)
        result = await archive.lifecycle.promote_study(study)
        assert result.instances == 3
        entries = archive.db.study_instances(study)
        assert all(e.cold is None for e in entries)
        for e in entries:
            assert archive.hot.absolute(e.path).read_bytes() == originals[e.sop_instance_uid]
        report = verify(archive.db, archive.tiers)
        assert report.ok and report.dead_records == 3  # the cold copies, until compaction
        # the next migration moves it again, without duplicates
        await archive.lifecycle.migrate_study(study)
        assert archive.db.count("instance") == len(originals)
        all_read_back(archive, originals)


async def test_cold_read_promotes_and_stamps_access(tmp_path):
    clock = [1_000_000.0]
    async with Archive(config(tmp_path / "data", access_flush_interval=3600)) as archive:
        archive.tiers.clock = lambda: clock[0]
        originals = await import_all(archive, [write(make_ct(number=n), tmp_path / "in")
                                               for n in (1, 2)])
        await archive.lifecycle.run_rules(older_than_days=0)
        await archive.lifecycle.start()
        try:
            entry = archive.db.get_instance(next(iter(originals)))
            src = await archive.source(entry)
            assert src.getvalue() == originals[entry.sop_instance_uid]
            for _ in range(100):
                await archive.lifecycle.drain_promotions()
                if all(e.cold is None for e in archive.db.study_instances(uid("study", 1, 1))):
                    break
                await asyncio.sleep(0.02)
            assert set(locations(archive).values()) == {"hot"}
            assert await archive.lifecycle.flush_access() == 1
            assert archive.db.get_study(uid("study", 1, 1)).last_access == clock[0]
        finally:
            await archive.lifecycle.stop()
        all_read_back(archive, originals)


def usage(uid_: str, pid: str, idle_days: float, mb: int, now: float) -> StudyUsage:
    return StudyUsage(uid_, pid, now - idle_days * DAY, hot_bytes=mb << 20, hot_instances=1)


def test_rules_age_watermark_and_exclusions():
    now = 1e9
    studies = [usage("1.1", "A", 100, 10, now), usage("1.2", "B", 50, 10, now),
               usage("1.3", "VIP7", 200, 10, now), usage("1.4", "C", 1, 10, now),
               usage("1.5", "D", 0.1, 10, now)]
    rules = LifecycleConfig(older_than_days=30, exclude_patient_ids=("VIP*",))
    picked = select_for_migration(studies, rules, now)
    assert [(c.study_uid, c.reason) for c in picked] == [("1.1", "age"), ("1.2", "age")]
    # 0 days: every study but the excluded one, oldest first
    assert [c.study_uid for c in select_for_migration(studies, rules, now, older_than_days=0)] \
        == ["1.1", "1.2", "1.4", "1.5"]
    # watermarks: 50 MB used of 60 (83%) > 80%: age takes 20 MB (-> 50%), nothing more
    rules = LifecycleConfig(older_than_days=30, high_watermark=0.8, low_watermark=0.4,
                            exclude_patient_ids=("VIP*",))
    cap = 60 << 20
    picked = select_for_migration(studies, rules, now, hot_used=50 << 20, hot_capacity=cap)
    assert [c.study_uid for c in picked] == ["1.1", "1.2"]
    # no age rule: least recently used until below the low watermark (24 MB)
    rules = replace(rules, older_than_days=-1)
    picked = select_for_migration(studies, rules, now, hot_used=50 << 20, hot_capacity=cap)
    assert [(c.study_uid, c.reason) for c in picked] == [("1.1", "capacity"),
                                                        ("1.2", "capacity"), ("1.4", "capacity")]
    # below the high watermark nothing moves; a keep hook (open order) protects a study
    assert select_for_migration(studies, rules, now, hot_used=40 << 20, hot_capacity=cap) == []
    picked = select_for_migration(studies, rules, now, hot_used=50 << 20, hot_capacity=cap,
                                  keep=lambda u: u.study_uid == "1.1")
    assert [c.study_uid for c in picked] == ["1.2", "1.4", "1.5"]


async def test_age_rule_uses_last_access_and_store_times(tmp_path):
    now = [0.0]
    async with Archive(config(tmp_path / "data", older_than_days=30)) as archive:
        archive.lifecycle.clock = lambda: now[0]
        archive.tiers.clock = lambda: now[0]
        await import_all(archive, [write(make_ct(patient=p, number=1), tmp_path / "in")
                                   for p in (1, 2)])
        stored = max(st.last_stored for st in archive.db.iter_studies())
        now[0] = stored + 29 * DAY
        entry = archive.db.get_instance(uid("inst", 2, 1, 1, 1))
        await archive.source(entry)  # patient 2's study is read on day 29
        await archive.lifecycle.flush_access()
        now[0] = stored + 31 * DAY
        plan = await archive.lifecycle.plan()
        assert [c.study_uid for c in plan] == [uid("study", 1, 1)]
        now[0] = stored + 60 * DAY
        assert len(await archive.lifecycle.plan()) == 2


async def test_rule_pass_reads_only_the_hot_studies_that_can_match(tmp_path, monkeypatch):
    """The plan reads ix_hot_activity, not every instance: cold studies and hot studies too
    young for the age rule cost nothing; a migrated study leaves the index; a promoted one,
    a re-sent instance and an index built before the hot list (rebuilt at open) come back."""
    now = [0.0]
    data = tmp_path / "data"
    async with Archive(config(data, older_than_days=30)) as archive:
        archive.lifecycle.clock = lambda: now[0]
        await import_all(archive, [write(make_ct(patient=p, number=n), tmp_path / "in")
                                   for p in (1, 2, 3, 4) for n in (1, 2)])
        db = archive.db
        stored = max(st.last_stored for st in db.iter_studies())
        now[0] = stored + 31 * DAY
        await archive.lifecycle.run_rules()
        assert set(locations(archive).values()) == {"cold"}
        assert list(db.hot_studies()) == []  # migrated studies left the hot list
        await import_all(archive, [write(make_ct(patient=5, number=1), tmp_path / "in2")])
        now[0] = db.get_study(uid("study", 5, 1)).last_stored + DAY
        read: list[str] = []
        real = type(db).study_instances

        def counting(self, study_uid):
            read.append(study_uid)
            return real(self, study_uid)

        monkeypatch.setattr(type(db), "study_instances", counting)
        monkeypatch.setattr(type(db), "iter_instances", None)  # a full scan would fail
        assert await archive.lifecycle.plan() == []  # patient 5's study is young
        assert read == []  # nothing read: no hot study old enough
        now[0] += 40 * DAY
        assert [c.study_uid for c in await archive.lifecycle.plan()] == [uid("study", 5, 1)]
        assert read == [uid("study", 5, 1)]  # the four cold studies were never looked at
        monkeypatch.undo()
        await archive.lifecycle.promote_study(uid("study", 2, 1))
        assert [s for _, s in db.hot_studies()] == [uid("study", 2, 1), uid("study", 5, 1)]
    # an index from before ix_hot_activity: rebuilt from the rows at the next open
    import lmdb

    env = lmdb.open(str(data / "index"), max_dbs=16)
    with env.begin(write=True) as txn:
        txn.drop(env.open_db(b"ix_hot_activity", txn=txn, dupsort=True), delete=False)
        txn.delete(b"hot_activity", db=env.open_db(b"meta", txn=txn))
    env.close()
    async with Archive(config(data, older_than_days=30)) as archive:
        assert sorted(s for _, s in archive.db.hot_studies()) == sorted(
            [uid("study", 2, 1), uid("study", 5, 1)])


async def test_reconcile_finishes_interrupted_moves(tmp_path):
    """The two crash leftovers: a hot copy after a migration switched the index, and a
    promoted hot file the index never pointed at."""
    paths = [write(make_ct(study=s, number=n), tmp_path / "in") for s in (1, 2) for n in (1, 2)]
    async with Archive(config(tmp_path / "data")) as archive:
        originals = await import_all(archive, paths)
        await archive.lifecycle.run_rules(older_than_days=0)
        for s, op in ((1, "migrate"), (2, "promote")):
            study = uid("study", 1, s)
            for e in archive.db.study_instances(study):
                rel = archive.hot.relative_path(study, e.series_uid, e.sop_instance_uid)
                path = archive.hot.absolute(rel)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(originals[e.sop_instance_uid])
            journal = archive.lifecycle.journal()
            journal[study] = op
            archive.db.meta_set(JOURNAL, journal)
        assert not verify(archive.db, archive.tiers).ok  # stale hot copies
    async with Archive(config(tmp_path / "data")) as archive:
        assert archive.lifecycle.journal() == {}
        assert all(e.cold is not None for e in archive.db.study_instances(uid("study", 1, 1)))
        assert all(e.cold is None for e in archive.db.study_instances(uid("study", 1, 2)))
        report = verify(archive.db, archive.tiers)
        assert report.ok, report
        all_read_back(archive, originals)


async def test_reindex_from_hot_files_and_cold_packs(tmp_path):
    paths = corpus(tmp_path / "in")
    async with Archive(config(tmp_path / "data")) as archive:
        originals = await import_all(archive, paths)
        await archive.lifecycle.run_rules(older_than_days=0)
        await archive.lifecycle.promote_study(uid("study", 2, 1))  # leaves dead cold records
        before = locations(archive)
        counts = {lv: archive.db.count(lv) for lv in ("patient", "study", "series", "instance")}
        report = await archive.rebuild_index()
        assert report.unreadable == []
        assert locations(archive) == before
        assert {lv: archive.db.count(lv) for lv in counts} == counts
        all_read_back(archive, originals)
        assert verify(archive.db, archive.tiers).ok


async def test_verify_finds_corrupt_missing_and_unindexed(tmp_path):
    paths = [write(make_ct(study=s, number=n), tmp_path / "in") for s in (1, 2) for n in (1, 2)]
    async with Archive(config(tmp_path / "data")) as archive:
        await import_all(archive, paths)
        await archive.lifecycle.migrate_study(uid("study", 1, 1))
        cold_entry = archive.db.study_instances(uid("study", 1, 1))[0]
        hot_entries = archive.db.study_instances(uid("study", 1, 2))
        ref = cold_entry.cold
        pack = archive.tiers.cold_root / "packs" / f"{ref[0]:08d}.pack"
        with open(pack, "r+b") as f:  # flip one byte in the middle of the record's payload
            f.seek(ref[1] + ref[2] - 10)
            b = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([b[0] ^ 0xFF]))
        archive.hot.absolute(hot_entries[0].path).unlink()
        stray = make_ct(patient=9, number=1)
        rel = archive.hot.relative_path(stray.StudyInstanceUID, stray.SeriesInstanceUID,
                                        stray.SOPInstanceUID)
        archive.hot.absolute(rel).parent.mkdir(parents=True)
        stray.save_as(archive.hot.absolute(rel), enforce_file_format=True)
        report = verify(archive.db, archive.tiers)
    assert not report.ok
    assert [w for w, _ in report.corrupt] == [cold_entry.sop_instance_uid]
    assert [w for w, _ in report.missing] == [hot_entries[0].sop_instance_uid]
    assert [w for w, _ in report.unindexed] == [rel]


async def test_prefetch_selects_priors_and_promotes_them(tmp_path):
    files = []
    dates = {1: "20200101", 2: "20210101", 3: "20220101", 4: "20230101"}
    parts = {1: "HEAD", 2: "KNEE", 3: "HEAD", 4: "HEAD"}
    for s in dates:
        files.append(write(make_mr(5, s, 1, parts[s], dates[s]), tmp_path / "in"))
    cfg = replace(config(tmp_path / "data"), prefetch=PrefetchConfig(priors=2))
    async with Archive(cfg) as archive:
        await import_all(archive, files)
        await archive.lifecycle.run_rules(older_than_days=0)
        await archive.lifecycle.start()
        try:
            prefetcher = Prefetcher(archive, cfg.prefetch)
            plan = await prefetcher.request(study_uid=uid("study", 5, 4))
            # same modality and body part first, most recent first: 3, 1 (not the knee)
            assert plan.priors == [uid("study", 5, 3), uid("study", 5, 1)]
            assert plan.queued == plan.priors and plan.hot == []
            await archive.lifecycle.drain_promotions()
            hot = {uid("study", 5, s) for s in (1, 3)}
            for st in archive.db.iter_studies():
                cold = {e.cold is not None for e in archive.db.study_instances(st.study_uid)}
                assert cold == ({False} if st.study_uid in hot else {True})
            again = await prefetcher.request(patient_id="PAT00005")
            assert again.priors == [uid("study", 5, s) for s in (4, 3)]
            assert again.queued == [uid("study", 5, 4)] and again.hot == [uid("study", 5, 3)]
        finally:
            await archive.lifecycle.stop()


async def test_new_study_triggers_prefetch_of_its_priors(tmp_path):
    cfg = replace(config(tmp_path / "data"), prefetch=PrefetchConfig(priors=1))
    old = write(make_mr(6, 1, 1, "HEAD", "20200101"), tmp_path / "in")
    new = write(make_mr(6, 2, 1, "HEAD", "20240101"), tmp_path / "in")
    async with Archive(cfg) as archive:
        await import_all(archive, [old])
        await archive.lifecycle.run_rules(older_than_days=0)
        await archive.lifecycle.start()
        prefetcher = Prefetcher(archive, cfg.prefetch)
        prefetcher.start()
        try:
            await import_all(archive, [new])
            for _ in range(200):
                if all(e.cold is None for e in archive.db.study_instances(uid("study", 6, 1))):
                    break
                await asyncio.sleep(0.02)
            assert all(e.cold is None for e in archive.db.study_instances(uid("study", 6, 1)))
            assert pydicom.dcmread(await archive.source(
                archive.db.study_instances(uid("study", 6, 1))[0])).PatientID == "PAT00006"
        finally:
            prefetcher.stop()
            await archive.lifecycle.stop()


async def test_background_rules_migrate_and_count_in_metrics(tmp_path):
    from hpacs.metrics import Metrics

    cfg = config(tmp_path / "data", enabled=True, interval=0.05, older_than_days=0)
    async with Archive(cfg) as archive:
        originals = await import_all(archive, [write(make_ct(study=s, number=1), tmp_path / "in")
                                               for s in (1, 2)])
        metrics = archive.lifecycle.metrics = Metrics()
        await archive.lifecycle.start()
        try:
            for _ in range(200):
                if set(locations(archive).values()) == {"cold"}:
                    break
                await asyncio.sleep(0.02)
        finally:
            await archive.lifecycle.stop()
        assert set(locations(archive).values()) == {"cold"}
        sample = metrics.registry.get_sample_value
        assert sample("hpacs_tier_migrated_instances_total") == 2
        assert sample("hpacs_tier_migrated_bytes_total") == sum(map(len, originals.values()))
        assert sample("hpacs_tier_pending_studies") == 0
        all_read_back(archive, originals)


async def test_a_resent_instance_replaces_its_cold_copy(tmp_path):
    cfg = config(tmp_path / "data")
    cfg = replace(cfg, store=replace(cfg.store, duplicate_policy="replace"))
    ds = make_ct(number=1)
    async with Archive(cfg) as archive:
        await import_all(archive, [write(ds, tmp_path / "in")])
        await archive.lifecycle.run_rules(older_than_days=0)
        ds.PatientName = "NEW^NAME"
        originals = await import_all(archive, [write(ds, tmp_path / "in2")])
        assert locations(archive) == {ds.SOPInstanceUID: "hot"}
        all_read_back(archive, originals)
        report = verify(archive.db, archive.tiers)
        assert report.ok and report.dead_records == 1


async def test_compaction_reclaims_dead_records_and_keeps_every_instance(tmp_path):
    paths = corpus(tmp_path / "in")
    cfg = config(tmp_path / "data", compact_dead_fraction=0)
    async with Archive(cfg) as archive:
        originals = await import_all(archive, paths)
        await archive.lifecycle.run_rules(older_than_days=0)
        cold = archive.tiers.cold
        (first,) = cold.packs()
        # promote most studies: their cold records become dead space in the one pack
        studies = {e.series_uid for e in archive.db.iter_instances()}
        promoted = 0
        for study in list(archive.db.iter_studies())[1:]:
            promoted += (await archive.lifecycle.promote_study(study.study_uid)).instances
        before = verify(archive.db, archive.tiers)
        assert before.ok and before.dead_records == promoted > 0
        plan = await archive.lifecycle.compact(0.3, dry_run=True)
        assert plan.bytes_freed > 0 and cold.packs() == [first]
        report = await archive.lifecycle.compact(0.3)
        assert report.packs_rewritten == 1 and report.packs_dropped == 1
        assert report.records_moved == len(originals) - promoted
        assert first not in cold.packs()
        after = verify(archive.db, archive.tiers)
        assert after.ok and after.dead_records == 0
        all_read_back(archive, originals)
        assert studies  # the corpus had series to move
    async with Archive(cfg) as archive:  # and after a restart
        all_read_back(archive, originals)
        assert verify(archive.db, archive.tiers).ok


async def test_compaction_interrupted_before_the_switch_loses_nothing(tmp_path):
    paths = corpus(tmp_path / "in")
    cfg = config(tmp_path / "data", compact_dead_fraction=0)
    async with Archive(cfg) as archive:
        originals = await import_all(archive, paths)
        await archive.lifecycle.run_rules(older_than_days=0)
        study = next(iter(archive.db.iter_studies())).study_uid
        await archive.lifecycle.promote_study(study)
        cold = archive.tiers.cold
        live = [e for e in archive.db.iter_instances() if e.cold is not None]
        from hpacs.store.tiers import cold_ref

        cold.compact([cold_ref(e) for e in live])  # copied... and the process "dies" here
        assert len(cold.packs()) == 2
    async with Archive(cfg) as archive:
        all_read_back(archive, originals)  # the rows still name the old records
        assert verify(archive.db, archive.tiers).ok
        report = await archive.lifecycle.compact(0.0)  # the next run finishes the job
        assert report.packs_dropped >= 1
        all_read_back(archive, originals)
        after = verify(archive.db, archive.tiers)
        assert after.ok and after.dead_records == 0
