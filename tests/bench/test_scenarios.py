"""End to end on tiny sizes: each scenario through `hpacs bench`, against real servers.

The reports must exist and be consistent: instances counted by the bench equal the server's
own count (hpacs's index, Orthanc's REST statistics), percentiles ordered, numbers finite,
every plot the Markdown shows a valid PNG. No timing is asserted (a shared machine).
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

pytestmark = pytest.mark.interop

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("bench-work")  # corpora shared by the tests


def bench(tmp_path: Path, workdir: Path, *args: str) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path / "report"
    proc = subprocess.run(
        [sys.executable, "-m", "hpacs", "bench", *args, "--quick", "--no-progress",
         "--out", str(out), "--workdir", str(workdir)],
        capture_output=True, text=True, timeout=240, cwd=tmp_path)
    return proc, out


def _walk(node, path="$"):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, f"{path}.{k}")
        yield path, node
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{path}[{i}]")
    else:
        yield path, node


def load_report(out: Path, scenario: str) -> tuple[dict, str]:
    """The JSON (every number finite, every percentile summary ordered) and the Markdown
    (every image it shows is a valid PNG in the report directory)."""
    text = (out / f"{scenario}.json").read_text()
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    for path, v in _walk(data):
        if isinstance(v, float):
            assert math.isfinite(v), path
        if isinstance(v, dict) and v.get("n") and "p95" in v:
            assert v["p50"] <= v["p95"] <= v["p99"] <= v["max"], path
    md = (out / f"{scenario}.md").read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert images, "the Markdown shows its plots"
    for name in images:
        png = out / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        with Image.open(png) as im:
            im.verify()
    assert data["machine"]["cores"] >= 1 and "Orthanc" in data["machine"]["orthanc"]
    assert "dcmtk" in data["machine"]["dcmtk"] and data["machine"]["hpacs"].startswith("hpacs")
    return data, md


def test_ingest_quick_against_orthanc(tmp_path, workdir):
    proc, out = bench(tmp_path, workdir, "ingest", "--files", "12", "--modalities", "2",
                      "--against", "orthanc")
    assert proc.returncode == 0, proc.stderr[-3000:]
    data, md = load_report(out, "ingest")
    count = data["corpus"]["count"]
    assert count == 12
    cells = {(c["server"], c["modalities"]): c for c in data["cells"]}
    assert set(cells) == {("hpacs", 2), ("orthanc", 2)}
    for c in cells.values():
        assert c["ok"], c.get("error")
        # the bench's count, the server's own count and the corpus agree
        assert c["acknowledged"] == c["stored"] == count and c["failed"] == 0
        assert len(c["latencies_ms"]) == count == c["latency_ms"]["n"]
        assert sum(c["timeline"]["rates"]) * c["timeline"]["bin_s"] == pytest.approx(count)
        assert c["instances_per_s"] > 0 and c["client_cpu_s"] > 0 and c["server_cpu_s"] > 0
        assert c["bytes"] == data["corpus"]["total_bytes"]
    rows = {(r["server"], r["modalities"]): r for r in data["summary"]}
    assert rows[("hpacs", 2)]["vs_orthanc"] is not None
    assert data["sizing"]["largest_tested"] == 2
    assert data["sizing"]["first_to_saturate"] in ("server CPU", "load generator CPU", "disk")
    assert "## Sizing (ingest)" in md and "| orthanc | 2 |" in md
    # the disk alone, measured on the same file system: one stream and two (the modalities)
    disk = data["disk_ceiling"]
    assert disk["size"] == data["corpus"]["total_bytes"] // count
    assert [d["streams"] for d in disk["streams"]] == [1, 2]
    for d in disk["streams"]:
        steps = d["ms_per_file"]
        assert d["files_per_s"] > 0 and all(steps[k] > 0 for k in ("write", "fdatasync"))
        assert steps["total"] >= steps["fdatasync"]
    assert data["sizing"]["peak_over_disk_ceiling"] == pytest.approx(
        data["sizing"]["instances_per_s"] / max(d["files_per_s"] for d in disk["streams"]))
    assert "Disk ceiling (the disk alone, no server)" in md and "by 2 at once" in md


def test_query_quick(tmp_path, workdir):
    proc, out = bench(tmp_path, workdir, "query", "--sizes", "300,800", "--queries", "5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    data, md = load_report(out, "query")
    assert data["ok"] and not data["errors"]
    assert [h["instances"] for h in data["hpacs"]] == [f["instances"] for f in data["fills"]]
    for h in data["hpacs"]:
        assert h["index_count"] == h["instances"]  # the served index holds the fill
        for shape in h["shapes"].values():
            assert shape["c_find_ms"]["n"] == shape["qido_ms"]["n"] == 5
            assert shape["matches_c_find"] == shape["matches_qido"]  # same engine behind both
            for proto in ("c_find", "qido"):  # the load generator reports its own CPU
                assert 0 < shape["client_cpu_ms"][proto] <= 1.5 * shape[f"{proto}_ms"]["mean"]
                assert 0 < shape["client_cpu_share"][proto] <= 1.5
    assert data["hpacs"][0]["instances"] < data["hpacs"][1]["instances"]
    assert 0 < data["sizing"]["client_cpu_share_max"] <= 1.5
    assert "load generator's own CPU was at most" in md
    assert "## Sizing (query)" in md


def test_query_against_orthanc_keeps_and_reuses_its_fill(tmp_path, workdir):
    args = ("query", "--sizes", "200,500", "--queries", "3", "--against", "orthanc")
    runs = []
    for i in (1, 2):
        (tmp_path / f"run{i}").mkdir()
        proc, out = bench(tmp_path / f"run{i}", workdir, *args)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs.append(load_report(out, "query")[0])
    for data, reused in zip(runs, (False, True), strict=True):
        assert data["ok"] and not data["errors"], data["errors"]
        rows = data["orthanc"]
        assert [r["fill_reused"] for r in rows] == [reused, reused]
        # Orthanc holds exactly the instances the fill sent, the same studies as hpacs
        assert [r["index_count"] for r in rows] == [r["instances"] for r in rows]
        assert [r["studies"] for r in rows] == [h["studies"] for h in data["hpacs"]]
        for r in rows:
            assert all(c["c_find_ms"]["n"] == 3 for c in r["shapes"].values())
    assert [r["instances"] for r in runs[0]["orthanc"]] == \
        [r["instances"] for r in runs[1]["orthanc"]]


def test_retrieve_quick(tmp_path, workdir):
    proc, out = bench(tmp_path, workdir, "retrieve", "--retrieve-files", "8", "--viewers",
                      "1,2", "--sessions", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    data, md = load_report(out, "retrieve")
    res = data["servers"]["hpacs"]
    assert res["ok"], res["errors"]
    assert res["stored"] == data["corpus"]["count"] == 8
    for part in ("c_get", "c_move", "c_get_fast", "c_move_fast", "c_get_fast_w8",
                 "c_move_fast_w8"):  # every instance came back
        assert res[part]["files"] == 8, part
    assert [v["sessions"] for v in res["viewers"]] == [1, 2]
    assert all(v["frames_per_s"] > 0 for v in res["viewers"])
    assert res["dicomweb"]["retrieve_bytes"] > 0
    for part in (res["c_get"], res["c_move"], res["c_get_fast"], res["c_move_fast"],
                 res["dicomweb"]):  # the clients' own CPU
        assert 0 < part["client_cpu_share"] <= 2.5  # getscu/movescu + destination, 2 cores
    assert "Load generators' own CPU" in md
    assert "## Sizing (retrieve)" in md


def test_mixed_quick(tmp_path, workdir):
    proc, out = bench(tmp_path, workdir, "mixed", "--retrieve-files", "8", "--rate", "3",
                      "--mixed-duration", "3", "--mixed-viewers", "1",
                      "--mixed-modalities", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    data, md = load_report(out, "mixed")
    res = data["servers"]["hpacs"]
    assert res["ok"], res["errors"]
    ing = res["ingest"]
    assert 0 < ing["acknowledged"] <= data["corpus"]["new"] and ing["failed"] == 0
    assert res["stored"] == data["corpus"]["priors"] + ing["acknowledged"]
    assert res["baseline"]["sessions"] > 0 and res["under_load"]["sessions"] > 0
    assert "## Sizing (mixed)" in md
