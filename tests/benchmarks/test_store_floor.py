"""benchmarks/store_floor.py against real receivers: dcmtk storescp and hpacs itself."""

from __future__ import annotations

import json
import subprocess
import sys

import pydicom
import pytest

from benchmarks import peers
from benchmarks.store_floor import FloorError, send
from hpacs.dicom.part10 import read_file_meta
from hpacs.store.hot import HotStore
from tests.conftest import start_server
from tests.factories import make_ct, write


def _files(tmp_path, n=4):
    return [write(make_ct(7, 1, 1, k, size=64), tmp_path / "files") for k in range(1, n + 1)]


def _dataset(path):
    data = path.read_bytes()
    return data[read_file_meta(data).dataset_offset:]


def test_stores_every_file_at_storescp_as_sent(tmp_path):
    paths = _files(tmp_path)
    with peers.storescp(tmp_path / "scp", fork=False, bit_preserving=True, ae="FLOORDEST") as scp:
        result = send(scp.host, scp.port, "FLOORDEST", paths)
        assert (result["sent"], result["failed"]) == (4, 0)
        assert result["bytes"] == sum(len(_dataset(p)) for p in paths)
        assert 0 < result["transfer_ms"] <= result["ms"]
        written = sorted(scp.data_dir.rglob("*.*"))
        assert len(written) == 4
        sent = {pydicom.dcmread(p).SOPInstanceUID: _dataset(p) for p in paths}
        # storescp +B writes the data set bytes exactly as received
        assert {pydicom.dcmread(p).SOPInstanceUID: _dataset(p) for p in written} == sent


def test_stores_at_hpacs_and_reports_a_refused_context(tmp_path):
    srv = start_server(tmp_path / "data")
    paths = _files(tmp_path, 2)
    result = send("127.0.0.1", srv.dicom_port, srv.ae_title, paths)
    assert (result["sent"], result["failed"]) == (2, 0)
    hot = HotStore(tmp_path / "data")
    stored = sorted(hot.root.rglob("*.dcm"))
    assert sorted(_dataset(p) for p in stored) == sorted(_dataset(p) for p in paths)
    # an SOP class hpacs does not keep: its context is refused, and the sender says so
    odd = pydicom.dcmread(paths[0])
    odd.SOPClassUID = odd.file_meta.MediaStorageSOPClassUID = "1.2.826.0.1.3680043.10.1488.99.1"
    odd.save_as(tmp_path / "odd.dcm")
    with pytest.raises(FloorError, match="was not accepted"):
        send("127.0.0.1", srv.dicom_port, srv.ae_title, [tmp_path / "odd.dcm"])


def test_command_line_prints_json_and_fails_on_a_refused_association(tmp_path):
    paths = _files(tmp_path, 2)
    with peers.storescp(tmp_path / "scp", fork=False, ignore=True, ae="FLOORDEST") as scp:
        run = subprocess.run([sys.executable, "-m", "benchmarks.store_floor", scp.host,
                              str(scp.port), "--aec", "FLOORDEST", *map(str, paths)],
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        assert json.loads(run.stdout)["sent"] == 2
    srv = start_server(tmp_path / "data")
    run = subprocess.run([sys.executable, "-m", "benchmarks.store_floor", "127.0.0.1",
                          str(srv.dicom_port), "--aec", "NOT_HPACS", *map(str, paths)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert "rejected" in json.loads(run.stdout)["error"]
