"""The metadata cache: freshness by stored_at, relative BulkDataURIs made absolute, and the
worker process warming it from stored files."""

from __future__ import annotations

import asyncio
import json

from hpacs.dicom.dicomjson import part10_json
from hpacs.store import metadata as metadata_module
from hpacs.store.metadata import (
    MetadataCache,
    MetadataWarmer,
    absolute_uris,
    compute_file,
    instance_uri,
)
from tests.factories import make_ct, write


def test_cache_is_fresh_only_for_the_same_stored_at(tmp_path):
    cache = MetadataCache(tmp_path / "meta", map_size=16 << 20)
    cache.put_many([("1.2", 10.0, b'{"a":1}')])
    assert cache.get_many([("1.2", 10.0), ("1.2", 11.0), ("9.9", 10.0)]) == [
        b'{"a":1}', None, None]
    cache.delete("1.2")
    assert cache.get_many([("1.2", 10.0)]) == [None]
    cache.close()


def test_bulk_uris_become_absolute_and_only_them(tmp_path):
    ds = make_ct(size=32)
    ds.ImageComments = '"BulkDataURI":"/studies/ in a value stays as it is'
    path = write(ds, tmp_path)
    uids = (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    blob = compute_file(path, *uids)
    out = json.loads(absolute_uris(blob, b"http://pacs:8042/dicom-web"))
    assert out["7FE00010"] == {"vr": "OW", "BulkDataURI":
                               f"http://pacs:8042/dicom-web{instance_uri(*uids)}/bulkdata/7FE00010"}
    assert out["00204000"]["Value"] == [ds.ImageComments]
    assert out == json.loads(json.dumps(part10_json(
        path.read_bytes(), bulk_base=f"http://pacs:8042/dicom-web{instance_uri(*uids)}")))


async def test_warmer_fills_the_cache_from_a_worker_process(tmp_path):
    files = []
    for n in range(1, 6):
        ds = make_ct(number=n, size=32)
        files.append((write(ds, tmp_path / "hot"), ds))
    directory = tmp_path / "meta"
    cache = MetadataCache(directory, map_size=16 << 20)
    warmer = MetadataWarmer(directory, lambda rel: tmp_path / "hot" / rel, workers=1)
    for path, ds in files:
        warmer.enqueue(path.name, ds.StudyInstanceUID, ds.SeriesInstanceUID,
                       ds.SOPInstanceUID, 5.0)
    warmer.enqueue("missing.dcm", "1.2", "1.2.3", "1.2.3.4", 5.0)  # gone: skipped, logged
    await asyncio.wait_for(warmer.drain(), 120)
    await warmer.close()
    assert warmer.warmed == 5
    blobs = cache.get_many([(ds.SOPInstanceUID, 5.0) for _, ds in files])
    for (path, ds), blob in zip(files, blobs, strict=True):
        assert blob == compute_file(path, ds.StudyInstanceUID, ds.SeriesInstanceUID,
                                    ds.SOPInstanceUID)
    cache.close()


async def test_no_workers_means_no_warming(tmp_path):
    warmer = MetadataWarmer(tmp_path / "meta", lambda rel: tmp_path / rel, workers=0)
    warmer.enqueue("x.dcm", "1", "2", "3", 1.0)
    assert warmer.pending == 0
    await warmer.close()


async def test_warming_waits_for_ingest_to_be_quiet(tmp_path):
    ds = make_ct(number=1, size=32)
    path = write(ds, tmp_path / "hot")
    busy = True
    warmer = MetadataWarmer(tmp_path / "meta", lambda rel: tmp_path / "hot" / rel, workers=1,
                            quiet_for=lambda: 0.0 if busy else 60.0)
    warmer.enqueue(path.name, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, 5.0)
    await asyncio.sleep(1.5)  # three QUIET_S periods of a busy ingest
    assert warmer.warmed == 0 and warmer.pending == 1
    busy = False
    await asyncio.wait_for(warmer.drain(), 120)
    assert warmer.warmed == 1
    await warmer.close()


async def test_a_full_backlog_drops_new_instances(tmp_path, monkeypatch):
    monkeypatch.setattr(metadata_module, "MAX_BACKLOG", 3)
    warmer = MetadataWarmer(tmp_path / "meta", lambda rel: tmp_path / rel, workers=1,
                            quiet_for=lambda: 0.0)  # never quiet: nothing leaves the queue
    for n in range(5):
        warmer.enqueue(f"{n}.dcm", "1", "2", f"3.{n}", 1.0)
    assert warmer.pending == 3 and warmer.dropped == 2  # computed on demand when asked for
    await warmer.close()
