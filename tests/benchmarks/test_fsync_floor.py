"""benchmarks/fsync_floor.py times the durable-write chain and cleans up after itself."""

from __future__ import annotations

from benchmarks import fsync_floor


def test_fsync_floor_times_every_step_and_removes_its_files(tmp_path):
    report = fsync_floor.run(tmp_path, files=5, size=4096, runs=2)
    ms = report["ms_per_file"]
    for step in fsync_floor.STEPS:
        assert ms[step]["n"] == 2 and 0 < ms[step]["min"] <= ms[step]["max"]
    # the whole chain costs at least its slowest step
    assert ms["total"]["median"] >= ms["fdatasync"]["median"]
    assert report["files_per_s_ceiling"] > 0
    assert list(tmp_path.iterdir()) == []
