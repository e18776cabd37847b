"""benchmarks/ingest_timeline.py: a real hpacs server traced over one storescu association."""

from __future__ import annotations

import json

from benchmarks import ingest_timeline


def test_timeline_of_a_small_send_has_every_stage_in_chain_order(tmp_path):
    code = ingest_timeline.main(["--files", "12", "--rounds", "1", "--workdir",
                                 str(tmp_path / "work"), "--out", str(tmp_path / "out")])
    assert code == 0
    (report_path,) = (tmp_path / "out").glob("ingest-timeline-*.json")
    report = json.loads(report_path.read_text())
    analysis = report["sides"]["hpacs"]["analysis"]
    assert analysis["instances"] == 12
    stages = {s["stage"]: s for s in analysis["stages"]}
    for name, *_ in ingest_timeline.STAGES:
        # the client's share exists for every instance but the last of the association
        assert stages[name]["n"] == (11 if name.startswith("client") else 12), name
        assert stages[name]["median_ms"] >= 0 and stages[name]["p90_ms"] >= 0
    cycle = next(s for s in analysis["summary"] if s["stage"].startswith("cycle"))
    share = next(s for s in analysis["summary"] if s["stage"].startswith("server share"))
    assert 0 < share["median_ms"] < cycle["median_ms"]
    assert "| **cycle: command in -> next command in** | |" in report["markdown"]
    assert not (tmp_path / "work" / "ingest-timeline").exists()


def test_load_links_each_instance_to_the_next_command_of_its_association(tmp_path):
    path = tmp_path / "trace.jsonl"
    recs = [{"assoc": 1, "cmd": 3.0}, {"assoc": 2, "cmd": 1.5}, {"assoc": 1, "cmd": 1.0},
            {"assoc": 1, "cmd": 2.0, "responded": 2.5}]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    loaded = {(r["assoc"], r["cmd"]): r.get("next") for r in ingest_timeline.load(path)}
    assert loaded == {(1, 1.0): 2.0, (1, 2.0): 3.0, (1, 3.0): None, (2, 1.5): None}
    values = ingest_timeline.stage_values(ingest_timeline.load(path), "responded", "next")
    assert [round(v, 6) for v in values] == [500.0]


def test_timeline_over_several_associations_links_instances_per_association(tmp_path):
    code = ingest_timeline.main(["--files", "12", "--rounds", "1", "--assocs", "3", "--workdir",
                                 str(tmp_path / "work"), "--out", str(tmp_path / "out")])
    assert code == 0
    (report_path,) = (tmp_path / "out").glob("ingest-timeline-*.json")
    report = json.loads(report_path.read_text())
    assert report["meta"]["assocs"] == 3
    analysis = report["sides"]["hpacs"]["analysis"]
    assert analysis["instances"] == 12
    client = next(s for s in analysis["stages"] if s["stage"].startswith("client"))
    assert client["n"] == 12 - 3  # every instance but the last of each association
    assert "3 concurrent associations (dcmtk storescu)" in report["markdown"]
