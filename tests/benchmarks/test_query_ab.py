"""The C-FIND A/B benchmark runs end to end on a tiny index: reference tree, index copy, both
servers, findscu, the servers' logs, the fast client, the report; and its work directory is
removed."""

from __future__ import annotations

import json

from benchmarks import query_ab


def test_query_ab_runs_end_to_end(tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    rc = query_ab.main(["--reference", "HEAD", "--instances", "300", "--queries", "2",
                        "--rounds", "1", "--repeat", "1", "--findscu-repeat", "1",
                        "--shapes", "name_prefix,patient_id", "--workdir", str(work),
                        "--out", str(out)])
    assert rc == 0
    report = json.loads(next(out.glob("query-ab-*.json")).read_text())
    assert report["fill"]["instances"] >= 300
    for shape in ("name_prefix", "patient_id"):
        a, b = report["results"][shape]["A"], report["results"][shape]["B"]
        assert a["matches_median"] == b["matches_median"] > 0
        for side in (a, b):
            assert side["findscu_ms"]["p50"] is not None
            assert side["inproc_cpu_ms"]["p50"] > 0
            # every findscu run left its find.done line: 2 + K per query
            assert side["server_ms"]["n"] == 2 * (2 + 1)
            assert side["fast_ms"]["p50"] > 0 and side["fast_client_cpu_ms"] > 0
    assert next(out.glob("query-ab-*.md")).read_text().startswith("# C-FIND A/B")
    assert list(work.iterdir()) == []
