"""The suite's small pieces: percentiles, dealing studies to modalities, plots, the CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from benchmarks.suite import cli, common, plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@given(st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=300))
def test_latency_summary_matches_numpy_and_is_ordered(values):
    s = common.latency_summary(values)
    assert s["n"] == len(values)
    for q in (50, 95, 99):
        assert math.isclose(s[f"p{q}"], float(np.percentile(values, q)), rel_tol=1e-9,
                            abs_tol=1e-6)
    assert min(values) <= s["p50"] <= s["p95"] <= s["p99"] <= s["max"] == max(values)


def test_latency_summary_of_nothing():
    assert common.latency_summary([]) == {"n": 0}


def test_deal_sends_whole_studies_once():
    studies = [[Path(f"s{i}/{k}") for k in range(i + 1)] for i in range(7)]
    groups = common.deal(studies, 3)
    assert len(groups) == 3
    flat = [p for g in groups for p in g]
    assert sorted(flat) == sorted(p for s in studies for p in s)
    for s in studies:  # a study never split between two modalities
        assert sum(any(p in g for p in s) for g in groups) == 1
    assert len(common.deal(studies[:2], 5)) == 2  # no empty modality


def _valid_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 100


def test_plots_are_valid_pngs(tmp_path):
    line = plots.lines(tmp_path / "a.png", "t", "x", "y",
                       {"hpacs": ([1, 2, 4], [1.0, 2.0, 3.0]), "orthanc": ([1, 2], [0.5, 1.0])},
                       hline=(2.5, "target"))
    bar = plots.bars(tmp_path / "b.png", "t", "y", ["a", "b"], {"hpacs": [1, 2],
                                                                "orthanc": [2, 1]})
    for p in (line, bar):
        _valid_png(p)


def test_quick_preset_fills_what_was_not_given(tmp_path):
    argv = ["ingest", "--quick", "--files", "7", "--out", str(tmp_path)]
    args = cli.resolve(cli.build_parser().parse_args(argv), argv, "hpacs bench")
    assert args.files == 7 and args.modalities == cli.QUICK["modalities"]
    assert args.servers == ["hpacs"] and args.command.startswith("hpacs bench ingest")
    argv = ["query", "--against", "orthanc"]
    args = cli.resolve(cli.build_parser().parse_args(argv), argv, "hpacs bench")
    assert args.sizes == [10_000, 100_000, 1_000_000] and args.servers == ["hpacs", "orthanc"]
    assert args.out.parent == common.REPO / "benchmarks" / "reports"


def test_hpacs_cli_lists_and_delegates_bench():
    out = subprocess.run([sys.executable, "-m", "hpacs", "--help"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and "bench" in out.stdout
    out = subprocess.run([sys.executable, "-m", "hpacs", "bench", "--help"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "--against" in out.stdout and "mixed" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "hpacs", "bench", "nosuch"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def test_sizing_page_collects_every_scenario(tmp_path):
    from benchmarks.suite import sizing

    base = common.new_report("ingest", cli.resolve(
        cli.build_parser().parse_args(["all", "--quick"]), ["all", "--quick"], "hpacs bench"),
        tmp_path)
    reports = {
        "ingest": {**base, "sizing": {
            "instances_per_s": 300.0, "mb_per_s": 150.0, "instances_per_s_per_core": 150.0,
            "instances_per_day": 25.92e6, "gb_per_day": 12960.0, "hot_store_days_per_tb": 0.08,
            "modalities_within_target": 8, "modalities_target_open_ended": False,
            "first_to_saturate": "server CPU", "peak_over_disk_ceiling": 0.5},
            "disk_ceiling": {"size": 526000, "files": 200, "streams": [
                {"streams": 1, "files_per_s": 400.0, "ms_per_file": {}},
                {"streams": 8, "files_per_s": 600.0, "ms_per_file": {}}]}},
        "retrieve": {**base, "sizing": {"viewers_within_target": 4, "open_ended": True,
                                        "first_to_saturate": "disk"}},
        "mixed": {**base, "sizing": {"viewers": 4, "rate_achieved": 49.5,
                                     "series_open_p95_ms": 1200.0, "within_target": False}},
        "query": {**base, "sizing": {"largest_size_within_target": 100000,
                                     "largest_size": 1000000}},
    }
    text = sizing.write(tmp_path, reports).read_text()
    assert "| modalities sending at once within target | 8 | ingest |" in text
    assert ("| the disk's durable-write ceiling | 400 files/s of 526 KB by one stream, 600 by 8; "
            "ingest peak = 50 % of it | ingest |") in text
    assert "| concurrent viewers within target | >= 4 | retrieve |" in text
    assert "OVER target" in text and "25.92 M" in text and "100000 instances" in text
    assert "[ingest](ingest.md)" in text and "Quick mode" in text


def test_sizing_page_compares_hpacs_with_orthanc(tmp_path):
    """The ratios come from each scenario's own hpacs/Orthanc numbers (> 1: hpacs better)."""
    from benchmarks.suite import sizing

    reports = {
        "ingest": {"summary": [{"server": "hpacs", "modalities": 4, "vs_orthanc": 1.5},
                               {"server": "orthanc", "modalities": 4, "vs_orthanc": 1.0}]},
        "query": {"orthanc": [{"instances": 1000, "hpacs_speedup_p95": {
            "patient_id": {"c_find_ms": 2.0, "qido_ms": 8.0}}}]},
        "retrieve": {"params": {"parallel": 4}, "servers": {
            name: {"c_get": {"instances_per_s": ips, "mb_per_s": 1.0,
                             "study_ms": {"p95": p95}},
                   "c_move": {"instances_per_s": 1.0, "study_ms": {"p95": 1.0}},
                   "dicomweb": {"qido_studies_ms": 1.0, "metadata_first_ms": 1.0,
                                "metadata_ms": meta, "retrieve_mb_s": 1.0,
                                "frames_per_s": 1.0}}
            for name, ips, p95, meta in (("hpacs", 300.0, 100.0, 2.0),
                                         ("orthanc", 200.0, 150.0, 60.0))}},
        "mixed": {"servers": {name: {"baseline": {"series_open_ms": {"p95": v}},
                                     "under_load": {"series_open_ms": {"p95": 2 * v}}}
                              for name, v in (("hpacs", 50.0), ("orthanc", 200.0))}},
    }
    text = "\n".join(sizing.versus(reports))
    assert "| ingest instances/s, 4 modalities | 1.50x | ingest |" in text
    assert "orthanc" not in text.split("|---|")[1].lower()  # Orthanc's own 1.0 row is left out
    assert "| query p95 at 1000 instances, patient_id: C-FIND | 2.00x | query |" in text
    assert "| C-GET study: instances/s | 1.50x | retrieve |" in text
    assert "| C-GET study p95 ms | 1.50x | retrieve |" in text  # latency: Orthanc / hpacs
    assert "| series /metadata ms | 30.00x | retrieve |" in text
    assert "| viewer series open p95, under load | 4.00x | mixed |" in text


def test_one_scenario_run_again_keeps_the_others_in_the_summary(tmp_path):
    (tmp_path / "ingest.json").write_text(json.dumps({"scenario": "ingest", "old": True}))
    (tmp_path / "query.json").write_text(json.dumps({"scenario": "query", "old": True}))
    fresh = {"query": {"scenario": "query", "old": False}}
    got = cli.with_saved_reports(tmp_path, fresh)
    assert list(got) == ["ingest", "query"]  # scenario order
    assert got["ingest"]["old"] and not got["query"]["old"]  # the new run wins


def test_sizing_page_says_when_each_scenario_ran(tmp_path):
    """A scenario run again into the directory is dated on the page, and a distortion is
    traced to the scenario it came from."""
    from benchmarks.suite import sizing

    def report(date, version, sizing_):
        m = common.machine_info(tmp_path)
        return {"date": date, "command": "hpacs bench x", "quick": False,
                "machine": {**m, "hpacs": version}, "sizing": sizing_}

    reports = {
        "retrieve": report("2026-11-29T17:31:17+00:00", "hpacs 0.1.0 (aaa)", {
            "viewers_within_target": 4, "open_ended": True, "first_to_saturate": "disk",
            "other_cores": 0.4}),
        "query": report("2026-11-29T20:48:20+00:00", "hpacs 0.1.0 (bbb)", {
            "largest_size_within_target": 10000, "largest_size": 1000000})}
    text = "\n".join(sizing.lines(reports))
    assert "- retrieve: 2026-11-29T17:31:17+00:00, hpacs 0.1.0 (aaa)" in text
    assert "- query: 2026-11-29T20:48:20+00:00, hpacs 0.1.0 (bbb)" in text
    assert "**Distorted** (retrieve): other processes used 0.40" in text
    same = {"retrieve": reports["retrieve"], "mixed": {**reports["retrieve"], "sizing": {}}}
    assert "separate runs" not in "\n".join(sizing.lines(same))
