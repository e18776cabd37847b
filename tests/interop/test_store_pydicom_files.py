"""Every storage instance among pydicom's own test files, sent by real SCUs, is stored exactly."""

from __future__ import annotations

import re
import subprocess
from collections import defaultdict
from pathlib import Path

import pydicom
import pytest

from hpacs.dicom.part10 import read_file_meta
from hpacs.store.hot import HotStore
from tests.conftest import require_tool, storage_test_files
from tests.interop.helpers import (
    RecordingProxy,
    dataset_bytes,
    open_index,
    send_files,
    sent_datasets,
)

pytestmark = pytest.mark.interop

#: pydicom test files whose element framing is broken (pydicom reads them leniently).
MALFORMED = {
    "MR_truncated.dcm",  # pixel data cut short
    "rtplan_truncated.dcm",  # cut inside a sequence
    "SC_rgb_jpeg.dcm",  # meta says explicit VR, the data set is implicit VR
}


def expected_status(path: Path) -> int:
    """What a conformant archive answers, judged by pydicom independently of hpacs."""
    if path.name in MALFORMED:
        return 0xC000
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    uids = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
    if any(not ds.get(k) for k in uids):
        return 0xC000  # cannot be indexed: a Type 1 UID is missing
    meta = ds.file_meta
    if (meta.MediaStorageSOPInstanceUID != ds.SOPInstanceUID
            or meta.MediaStorageSOPClassUID != ds.SOPClassUID):
        return 0xA900  # the command (from the file meta) does not match the data set
    return 0x0000


EXPECTED = {p: expected_status(p) for p in storage_test_files()}


def _stored_path(data_dir: Path, path: Path) -> Path:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    rel = HotStore.relative_path(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    return data_dir / rel


def test_pynetdicom_stores_every_test_file_byte_exact(server):
    files = storage_test_files()
    assert len(files) > 100
    statuses = send_files(server, files)
    assert {p.name: hex(s) for p, s in statuses.items()} == {
        p.name: hex(s) for p, s in EXPECTED.items()}
    assert sum(1 for s in EXPECTED.values() if s == 0) > 120

    by_uid: dict[str, list[Path]] = defaultdict(list)
    for path in statuses:  # in the order they were sent
        if EXPECTED[path] == 0:
            by_uid[str(read_file_meta(path).sop_instance_uid)].append(path)
    for paths in by_uid.values():
        # pydicom ships some instances twice (same UID); the first copy is kept (policy "keep")
        first = paths[0]
        stored = _stored_path(server.data_dir, first)
        assert stored.is_file(), first
        meta = read_file_meta(stored)
        assert meta.transfer_syntax_uid == read_file_meta(first).transfer_syntax_uid
        assert dataset_bytes(stored) == dataset_bytes(first), first.name
        # what pydicom reads back is the same data set
        assert pydicom.dcmread(stored) == pydicom.dcmread(first)

    assert server.stop() == 0
    db = open_index(server.data_dir)
    try:
        assert db.count("instance") == len(by_uid)
        for uid, paths in by_uid.items():
            entry = db.get_instance(uid)
            assert entry is not None, paths[0].name
            assert (server.data_dir / entry.path).is_file()
    finally:
        db.close()
    assert not list((server.data_dir / "tmp").iterdir())


# dcmtk storescu proposes an encapsulated syntax only when told which one.
STORESCU_FLAGS = {
    "1.2.840.10008.1.2": "-xi",
    "1.2.840.10008.1.2.1": "-xe",
    "1.2.840.10008.1.2.2": "-xb",
    "1.2.840.10008.1.2.1.99": "-xd",
    "1.2.840.10008.1.2.4.50": "-xy",
    "1.2.840.10008.1.2.4.51": "-xx",
    "1.2.840.10008.1.2.4.70": "-xs",
    "1.2.840.10008.1.2.4.80": "-xt",
    "1.2.840.10008.1.2.4.81": "-xu",
    "1.2.840.10008.1.2.4.90": "-xv",
    "1.2.840.10008.1.2.4.91": "-xw",
    "1.2.840.10008.1.2.5": "-xr",
}


def test_dcmtk_storescu_stores_test_files_in_their_own_syntax(server):
    storescu = require_tool("storescu")
    groups: dict[str, list[Path]] = defaultdict(list)
    for path in storage_test_files():
        if EXPECTED[path] != 0:
            continue
        groups[str(read_file_meta(path).transfer_syntax_uid)].append(path)
    proxy = RecordingProxy(server.dicom_port)
    sent: dict[str, Path] = {}
    seen: set[str] = set()
    for ts, all_paths in sorted(groups.items()):
        flag = STORESCU_FLAGS.get(ts)
        if flag is None:
            continue  # dcmtk cannot propose it (e.g. JPEG process 14 SV>1); pynetdicom covers it
        # pydicom ships some instances in several syntaxes under one UID: send each UID once
        paths = []
        for path in all_paths:
            uid = str(read_file_meta(path).sop_instance_uid)
            if uid not in seen:
                seen.add(uid)
                paths.append(path)
        if not paths:
            continue
        run = subprocess.run(
            [storescu, "-aec", server.ae_title, "-R", "-nh", flag, "127.0.0.1", str(proxy.port),
             *map(str, paths)],
            capture_output=True, text=True, timeout=120)
        # files dcmtk itself cannot read are skipped on its side (-nh), and said so
        unreadable = set(re.findall(r"in file: ([^,\s]+)", run.stderr))
        if unreadable >= set(map(str, paths)):
            continue
        assert run.returncode == 0, (ts, run.stdout, run.stderr)
        assert "E:" not in run.stderr, (ts, run.stderr)
        for path in paths:
            if str(path) not in unreadable:
                sent[str(read_file_meta(path).sop_instance_uid)] = path
    proxy.close()
    # dcmtk re-encodes what it read (drops padding, even rewrites bytes of some JPEG streams),
    # so compare the archive with the bytes dcmtk actually put on the wire
    on_wire: dict[str, bytes] = {}
    for stream in proxy.streams:
        on_wire.update(sent_datasets(bytes(stream)))
    assert set(on_wire) == set(sent)
    for uid, path in sent.items():
        stored = _stored_path(server.data_dir, path)
        assert stored.is_file(), path.name
        wire_syntax = str(read_file_meta(path).transfer_syntax_uid)
        assert read_file_meta(stored).transfer_syntax_uid == wire_syntax
        assert dataset_bytes(stored) == on_wire[uid], path.name
    assert len(sent) > 100
