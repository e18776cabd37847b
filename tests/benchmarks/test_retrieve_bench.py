"""benchmarks/retrieve.py's report: dcmtk's storescu pair and the floor sender are shown as the
C-MOVE yardsticks, never as servers with an advantage over Orthanc."""

from benchmarks.retrieve import FLOOR, STORESCU, markdown


def test_markdown_shows_the_storescu_floor_beside_the_servers():
    rounds = [{"server": s, "round": r, "mode": m, "receiver": "ignore", "ms": ms}
              for r in (1, 2)
              for s, m, ms in (("hpacs", "get", 100.0), ("orthanc", "get", 150.0),
                               ("hpacs", "move", 110.0), ("orthanc", "move", 140.0),
                               (STORESCU, "move", 120.0), (FLOOR, "move", 90.0))]
    text = markdown({"rounds": rounds})
    head, _, *rows = text.splitlines()
    assert head.startswith("| operation | receiver | hpacs ms | orthanc ms | dcmtk-storescu ms"
                           " | floor-sender ms |")
    get = next(r for r in rows if r.startswith("| C-GET study | ignore |"))
    move = next(r for r in rows if r.startswith("| C-MOVE study | ignore |"))
    assert get.endswith("| 100 (100-100) | 150 (150-150) | - | - | hpacs 1.50x |")
    assert move.endswith(
        "| 110 (110-110) | 140 (140-140) | 120 (120-120) | 90 (90-90) | hpacs 1.27x |")


def test_markdown_labels_the_fast_move_scu_cells_apart():
    rounds = [{"server": s, "round": 1, "mode": m, "receiver": "discard-w8", "ms": ms,
               "server_cpu_ms": 10.0}
              for s, m, ms in (("hpacs", "move", 70.0), ("orthanc", "move", 90.0),
                               ("hpacs", "fmove", 30.0), ("orthanc", "fmove", 60.0))]
    rows = markdown({"rounds": rounds}).splitlines()
    assert "| C-MOVE study | discard-w8 | 70 (70-70) | 90 (90-90) | hpacs 1.29x |" in rows
    assert ("| C-MOVE study (fast SCU) | discard-w8 | 30 (30-30) | 60 (60-60) | hpacs 2.00x |"
            in rows)
    assert "| C-MOVE study (fast SCU) | discard-w8 | 10 (10-10) | 10 (10-10) |" in rows
