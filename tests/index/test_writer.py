"""IndexWriter: group commit, failures, drain on stop, checkpoint and clean-shutdown flag."""

from __future__ import annotations

import asyncio
import time

import lmdb
import pytest

from hpacs.index.db import IndexDB
from hpacs.index.writer import CommitResult, IndexWriteError, IndexWriter
from tests.index.index_helpers import check_consistent, make_record


def _poison(db, monkeypatch, uid):
    """Applying the record of ``uid`` fails as a full map would."""
    real_apply = db.apply

    def poisoned(txn, rec):
        if rec.sop_instance_uid == uid:
            raise lmdb.MapFullError("simulated")
        return real_apply(txn, rec)

    monkeypatch.setattr(db, "apply", poisoned)


async def test_group_commit_1000_concurrent(db):
    w = IndexWriter(db, max_batch=512)
    await w.start()
    recs = [
        make_record(f"9.{i}", f"1.{i % 7}.1", f"1.{i % 7}", f"P{i % 7 % 3}") for i in range(1000)
    ]
    results = await asyncio.gather(*(w.submit(r) for r in recs))
    assert all(isinstance(r, CommitResult) and r.previous is None for r in results)
    # few transactions: 1000 records in at most a handful of commits (+1 for start)
    assert w.stats.records == 1000
    assert w.stats.commits <= 6, w.stats
    # visible through a fresh read transaction as soon as the futures resolved
    assert db.count("instance") == 1000
    check_consistent(db)
    again = await asyncio.gather(*(w.submit(r) for r in recs[:10]))
    assert [r.previous for r in again] == recs[:10]
    assert db.count("instance") == 1000
    await w.stop()


async def test_each_future_resolves_after_its_commit(db):
    w = IndexWriter(db)
    await w.start()

    async def one(i):
        await w.submit(make_record(f"9.{i}"))
        assert db.get_instance(f"9.{i}") is not None  # committed before resolution

    await asyncio.gather(*(one(i) for i in range(50)))
    await w.stop()


async def test_failed_batch_fails_with_index_write_error_and_writer_survives(db, monkeypatch):
    w = IndexWriter(db)
    await w.start()
    _poison(db, monkeypatch, "9.13")
    res = await asyncio.gather(
        *(w.submit(make_record(f"9.{i}")) for i in range(20)), return_exceptions=True
    )
    errors = [r for r in res if isinstance(r, Exception)]
    assert len(errors) == 1 and isinstance(errors[0], IndexWriteError)
    assert isinstance(errors[0].__cause__, lmdb.MapFullError)
    assert db.count("instance") == 19  # the others were retried alone and committed
    assert w.stats.failed_batches >= 1
    await w.submit(make_record("9.100"))
    assert db.get_instance("9.100") is not None
    await w.stop()
    check_consistent(db)


async def test_map_full_fails_batch_then_writer_keeps_going(tmp_path):
    db = IndexDB(tmp_path / "ix", map_size=1 << 20)  # 1 MiB: a few hundred instances at most
    w = IndexWriter(db)
    await w.start()
    big = {"ImageComments": "x" * 900}
    recs = []
    for i in range(3000):
        r = make_record(f"9.{i}", f"1.{i}.1", f"1.{i}")
        r.instance.update(big)
        recs.append(r)
    res = await asyncio.gather(*(w.submit(r) for r in recs), return_exceptions=True)
    failed = [r for r in res if isinstance(r, IndexWriteError)]
    assert failed, "the map should have filled up"
    assert all(isinstance(e.__cause__, lmdb.MapFullError) for e in failed)
    ok = len(res) - len(failed)
    assert db.count("instance") == ok
    # an operator grows the map (no transaction open in this process): the same writer goes on
    db.env.set_mapsize(64 << 20)
    await w.submit(make_record("7.1", "7.1.1", "7.1"))
    assert db.get_instance("7.1") is not None
    await w.stop()
    check_consistent(db)
    db.close()


async def test_stop_drains_and_marks_clean(tmp_path):
    db = IndexDB(tmp_path / "ix", map_size=64 << 20)
    assert db.meta_get("clean") is None
    w = IndexWriter(db)
    await w.start()
    assert w.was_clean is None
    assert db.meta_get("clean") is False
    tasks = [asyncio.create_task(w.submit(make_record(f"9.{i}"))) for i in range(300)]
    await asyncio.sleep(0)  # the submits are queued, none necessarily committed
    await w.stop()
    assert all(t.done() and not t.exception() for t in tasks)
    assert db.count("instance") == 300
    assert db.meta_get("clean") is True
    with pytest.raises(IndexWriteError):
        await w.submit(make_record("9.999"))
    db.close()
    # a restarted writer sees the clean flag, then clears it until its own stop
    db = IndexDB(tmp_path / "ix", map_size=64 << 20)
    w = IndexWriter(db)
    await w.start()
    assert w.was_clean is True and db.meta_get("clean") is False
    await w.stop()
    db.close()


async def test_crash_is_detectable(tmp_path):
    db = IndexDB(tmp_path / "ix", map_size=64 << 20)
    w = IndexWriter(db)
    await w.start()
    await w.submit(make_record("9.1"))
    # simulate a crash: no stop(); the env is simply closed and reopened
    w._task.cancel()
    w._executor.shutdown(wait=True)
    db.close()
    db = IndexDB(tmp_path / "ix", map_size=64 << 20)
    assert db.meta_get("clean") is False
    assert db.get_instance("9.1") is not None
    db.close()


async def test_files_mode_checkpoint(db):
    w = IndexWriter(db, durability="files", sync_interval=0.05)
    await w.start()
    t0 = time.time()
    await w.submit(make_record("9.1", stored_at=t0 - 100))
    syncs = w.stats.syncs
    await asyncio.sleep(0.3)  # idle: the dirty index gets one checkpoint + sync
    assert w.stats.syncs == syncs + 1
    cp = db.meta_get("checkpoint")
    assert t0 <= cp <= time.time()
    await asyncio.sleep(0.2)
    assert w.stats.syncs == syncs + 1  # nothing new committed: no further sync

    # a checkpoint never passes a record still waiting in the queue
    old = time.time() - 50
    fut = asyncio.get_running_loop().create_future()
    w._pending.append((make_record("9.2", stored_at=old), fut))
    assert w._checkpoint_value() == old
    w._pending.clear()
    assert w._checkpoint_value() >= t0
    await w.stop()
    assert db.meta_get("checkpoint") >= t0


async def test_floor_callback_bounds_checkpoint(db):
    w = IndexWriter(db, sync_interval=0.01, floor=lambda: 42.0)
    await w.start()
    await w.submit(make_record("9.1"))
    await asyncio.sleep(0.1)
    assert db.meta_get("checkpoint") == 42.0
    await w.stop()


async def test_sync_mode(tmp_path):
    db = IndexDB(tmp_path / "ix", map_size=64 << 20, durability="sync")
    w = IndexWriter(db)
    assert w.durability == "sync"
    await w.start()
    t = time.time()
    await asyncio.gather(*(w.submit(make_record(f"9.{i}", stored_at=t)) for i in range(64)))
    assert db.count("instance") == 64
    assert db.meta_get("checkpoint") >= t  # written with every durable commit
    await w.stop()
    db.close()


async def test_backpressure_bounded_queue(db):
    w = IndexWriter(db, max_queue=8, max_batch=4)
    await w.start()
    await asyncio.gather(*(w.submit(make_record(f"9.{i}")) for i in range(100)))
    assert db.count("instance") == 100
    assert w.stats.commits >= 100 // 4
    await w.stop()


async def test_commit_now_commits_at_once_and_stays_inside_the_checkpoint_contract(db, monkeypatch):
    w = IndexWriter(db, durability="files", sync_interval=0.05)
    assert w.commit_now(make_record("9.0")) is None  # not started
    await w.start()
    rec = make_record("9.1", stored_at=time.time() - 100)
    result = w.commit_now(rec)
    assert result == CommitResult(None)
    assert db.get_instance("9.1") is not None  # visible before any await
    assert w.commit_now(rec) == CommitResult(rec)  # a re-sent record: the previous one
    # committed work makes the index dirty: the next checkpoint comes, and does not pass it
    syncs = w.stats.syncs
    await asyncio.sleep(0.3)
    assert w.stats.syncs == syncs + 1
    assert db.meta_get("checkpoint") >= rec.stored_at

    # queued records go first: then it declines and the caller submits
    queued = asyncio.ensure_future(w.submit(make_record("9.2")))
    await asyncio.sleep(0)
    assert w.commit_now(make_record("9.3")) is None
    await queued

    _poison(db, monkeypatch, "9.13")
    with pytest.raises(IndexWriteError) as info:
        w.commit_now(make_record("9.13"))
    assert isinstance(info.value.__cause__, lmdb.MapFullError)
    assert db.get_instance("9.13") is None and w.stats.failed_records == 1
    assert w.commit_now(make_record("9.14")) is not None  # the writer goes on
    await w.stop()
    check_consistent(db)


async def test_commit_now_declines_in_sync_mode(tmp_path):
    db = IndexDB(tmp_path / "idx", durability="sync")
    w = IndexWriter(db)
    await w.start()
    assert w.commit_now(make_record("9.1")) is None
    await w.submit(make_record("9.1"))
    await w.stop()
    db.close()
