"""The archive in-process: ingest outcomes, recovery of an index that lost its tail, reindex."""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from pynetdicom.dsutils import encode

from hpacs.config import Config, IndexConfig, ServerConfig
from hpacs.store.archive import INDEX_DIR, Archive, ArchiveLockedError
from hpacs.store.ingest import Outcome
from tests.factories import make_ct, write

EXPLICIT = "1.2.840.10008.1.2.1"


def config(data_dir: Path, **index) -> Config:
    return replace(Config(), server=ServerConfig(data_dir=data_dir),
                   index=replace(IndexConfig(), **index))


async def store(archive: Archive, ds, chunks: int = 3):
    raw = encode(ds, False, True)
    step = max(1, len(raw) // chunks)
    parts = [raw[i:i + step] for i in range(0, len(raw), step)]
    return await archive.ingestor.store_bytes(ds.SOPClassUID, ds.SOPInstanceUID, EXPLICIT, parts)


async def test_store_then_reopen_keeps_everything(tmp_path):
    async with Archive(config(tmp_path)) as archive:
        results = await asyncio.gather(*(store(archive, make_ct(number=n)) for n in range(20)))
        assert {r.outcome for r in results} == {Outcome.STORED}
        assert archive.ingestor.in_flight == 0
    async with Archive(config(tmp_path)) as archive:
        assert archive.db.count("instance") == 20
        assert archive.writer.was_clean is True


async def test_a_second_process_cannot_open_the_same_data_dir(tmp_path):
    async with Archive(config(tmp_path)):
        with pytest.raises(ArchiveLockedError):
            await Archive(config(tmp_path)).open()


async def test_recovery_reindexes_files_the_index_lost(tmp_path):
    """Simulate an OS crash in "files" mode: the index on disk is the last synced one."""
    snapshot = tmp_path / "snapshot"
    archive = Archive(config(tmp_path / "data", sync_interval=0.05))
    await archive.open()
    early = [make_ct(number=n) for n in range(5)]
    for ds in early:
        assert (await store(archive, ds)).outcome is Outcome.STORED
    await asyncio.sleep(0.3)  # a checkpoint + sync happens
    snapshot.mkdir()
    archive.db.env.copy(str(snapshot))  # what survived the "crash"
    late = [make_ct(number=n) for n in range(5, 12)]
    for ds in late:
        assert (await store(archive, ds)).outcome is Outcome.STORED
    # crash: the process dies without closing anything
    archive.writer._task.cancel()
    archive._release_lock()
    archive.metadata.close()  # a dead process holds no LMDB environment open
    index = tmp_path / "data" / INDEX_DIR
    shutil.rmtree(index)
    shutil.copytree(snapshot, index)

    async with Archive(config(tmp_path / "data")) as recovered:
        assert recovered.writer.was_clean is False
        assert recovered.db.count("instance") == 12
        for ds in early + late:
            entry = recovered.db.get_instance(ds.SOPInstanceUID)
            assert entry is not None
            assert (recovered.data_dir / entry.path).is_file()


async def test_reindex_rebuilds_and_reports_unreadable_files(tmp_path):
    async with Archive(config(tmp_path)) as archive:
        for n in range(6):
            await store(archive, make_ct(number=n, study=n % 2))
        levels = ("patient", "study", "series", "instance")
        counts = {lvl: archive.db.count(lvl) for lvl in levels}
        entry = archive.db.get_instance(make_ct(number=0, study=0).SOPInstanceUID)
        broken = archive.data_dir / Path(entry.path).parent / "1.2.3.4.dcm"
        broken.write_bytes(b"not dicom at all")
        report = await archive.rebuild_index()
        assert report.indexed == 6
        assert [p for p, _ in report.unreadable] == [str(broken.relative_to(archive.data_dir))]
        assert {lvl: archive.db.count(lvl) for lvl in counts} == counts


async def test_import_file_goes_through_the_same_pipeline(tmp_path):
    path = write(make_ct(number=1), tmp_path / "in")
    async with Archive(config(tmp_path / "data")) as archive:
        assert (await archive.import_file(path)).outcome is Outcome.STORED
        assert (await archive.import_file(path)).outcome is Outcome.DUPLICATE_KEPT
        junk = tmp_path / "junk.txt"
        junk.write_text("hello")
        result = await archive.import_file(junk)
        assert result.outcome is Outcome.INVALID
        assert "Part 10" in result.comment or "DICOM" in result.comment
