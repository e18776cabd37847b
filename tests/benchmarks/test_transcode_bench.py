"""benchmarks/transcode.py runs and reports every codec (numbers are not asserted: no timing in
tests)."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import ROOT


def test_transcode_benchmark_reports_every_codec():
    run = subprocess.run([sys.executable, "-m", "benchmarks.transcode", "--runs", "1"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    rows = [line for line in run.stdout.splitlines()
            if line.startswith("| ") and "->" in line and not line.startswith("| from")]
    assert len(rows) == 7, run.stdout
    for row in rows:
        ratio = float(row.rstrip(" |").rsplit("|", 1)[1])
        assert ratio > 1.5, row  # a CT slice compresses losslessly by more than 1.5x
    assert re.search(r"RLE Lossless -> Explicit VR Little Endian", run.stdout)
