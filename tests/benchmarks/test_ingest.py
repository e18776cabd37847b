"""A tiny end-to-end ingest run against dcmtk storescp (Orthanc is for the benchmark only)."""

import json
import os
import time

import pytest

from benchmarks import ingest, peers

pytestmark = pytest.mark.interop


def test_split_disjoint_and_balanced():
    items = list(range(10))
    parts = ingest.split(items, 4)
    assert [len(p) for p in parts] == [3, 3, 2, 2]
    assert [x for p in parts for x in p] == items
    assert ingest.split(items[:2], 8) == [[0], [1]]


def test_storescu_uses_dcmtk():
    assert "dcmtk" in peers.dcmtk_version()


def test_end_to_end_storescp(tmp_path):
    report = ingest.run_benchmark(
        files=6,
        runs=1,
        assocs=[1, 2],
        peer_names=["storescp", "storescp-ignore"],
        out=tmp_path / "reports",
        workdir=tmp_path / "work",
        timeout=60,
        retries=0,
        log=lambda s: None,
    )
    rows = {(r["peer"], r["assocs"]): r for r in report["summary"]}
    assert set(rows) == {
        ("storescp", 1),
        ("storescp", 2),
        ("storescp-ignore", 1),
        ("storescp-ignore", 2),
    }
    for row in rows.values():
        assert row["ok_runs"] == 1, row["errors"]
        assert row["files_per_s"]["median"] > 0
    assert rows[("storescp", 2)]["vs_storescp"] == pytest.approx(1.0)
    stored = [r for r in report["runs"] if r["peer"] == "storescp"]
    assert all(r["stored"] == 6 and r["client_cpu_s"] > 0 for r in stored)
    (md_path,) = (tmp_path / "reports").glob("ingest-*.md")
    assert "| storescp | 2 |" in md_path.read_text()
    data = json.loads(next((tmp_path / "reports").glob("ingest-*.json")).read_text())
    assert data["meta"]["corpus"]["count"] == 6
    assert not list((tmp_path / "work" / "runs").iterdir()), "run data must be cleaned up"


def test_peer_that_cannot_start_is_reported(tmp_path, monkeypatch):
    def broken(workdir):
        raise peers.PeerError("no such peer here")

    monkeypatch.setitem(peers.PEERS, "broken", broken)
    report = ingest.run_benchmark(
        files=2,
        runs=2,
        assocs=[1],
        peer_names=["broken", "storescp"],
        out=None,
        workdir=tmp_path,
        timeout=60,
        retries=0,
        log=lambda s: None,
    )
    rows = {r["peer"]: r for r in report["summary"]}
    assert rows["broken"]["ok_runs"] == 0 and "no such peer here" in rows["broken"]["errors"][0]
    assert rows["storescp"]["ok_runs"] == 2
    assert "| broken | 1 | failed |" in report["markdown"]


def test_stored_count_mismatch_fails_the_run(tmp_path, monkeypatch):
    real = peers.PEERS["storescp"]

    def lying(workdir):
        cm = real(workdir)

        class Wrap:
            def __enter__(self):
                peer = cm.__enter__()
                peer.counter = lambda p: 0
                return peer

            def __exit__(self, *exc):
                return cm.__exit__(*exc)

        return Wrap()

    monkeypatch.setitem(peers.PEERS, "lying", lying)
    report = ingest.run_benchmark(
        files=2,
        runs=1,
        assocs=[1],
        peer_names=["lying"],
        out=None,
        workdir=tmp_path,
        timeout=60,
        retries=0,
        log=lambda s: None,
    )
    assert report["summary"][0]["ok_runs"] == 0
    assert "holds 0 instances" in report["summary"][0]["errors"][0]


def test_load_probes_are_bounded():
    assert ingest.machine_cpu_seconds() > 0
    assert ingest.foreign_cpu_seconds({os.getsid(0)}) >= 0
    assert 0 <= ingest.background_load(0.05) <= (os.cpu_count() or 1) + 0.5
    t0 = time.monotonic()
    ingest.wait_quiet(0.2, threshold=-1)  # never quiet enough: gives up after max_wait
    assert time.monotonic() - t0 < 2


def test_disturbed_runs_are_repeated(tmp_path, monkeypatch):
    monkeypatch.setattr(ingest, "MAX_OTHER", -1.0)  # every run looks disturbed
    busy = iter(range(0, 10**6, 100))
    monkeypatch.setattr(ingest, "foreign_cpu_seconds", lambda exclude: next(busy))
    report = ingest.run_benchmark(
        files=2,
        runs=1,
        assocs=[1],
        peer_names=["storescp"],
        out=None,
        workdir=tmp_path,
        timeout=60,
        retries=1,
        log=lambda s: None,
    )
    (row,) = report["summary"]
    assert row["runs"] == 1 and row["attempts"] == 2
    assert row["ok_runs"] == 1 and row["disturbed_runs"] == 1  # no clean attempt: the last
    assert "| storescp | 1 |" in report["markdown"]
