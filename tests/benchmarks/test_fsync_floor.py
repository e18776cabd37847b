"""benchmarks/fsync_floor.py times the durable-write chain and cleans up after itself."""

from __future__ import annotations

import os

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


def test_writeback_mode_with_concurrent_writers_times_every_file_and_cleans_up(tmp_path):
    size = 3 * fsync_floor.STEP_BYTES + 100  # four write steps, the last one short
    report = fsync_floor.run(tmp_path, files=3, size=size, runs=1, writeback=True, writers=3)
    assert report["writeback"] is True and report["writers"] == 3
    ms = report["ms_per_file"]
    for step in fsync_floor.STEPS:
        assert ms[step]["n"] == 1 and ms[step]["median"] > 0
    # three chains at once: the ceiling counts every writer's files
    assert report["files_per_s_ceiling"] == 3 * 1000 / ms["total"]["median"]
    assert list(tmp_path.iterdir()) == []


def test_writeback_write_leaves_the_bytes_exactly(tmp_path):
    data = bytes(range(256)) * 1500  # 384,000 bytes: three steps, the last one partial
    path = tmp_path / "f"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        fsync_floor._write(fd, data, writeback=True)
    finally:
        os.close(fd)
    assert path.read_bytes() == data
