"""The `hpacs` command line as a user runs it."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import ROOT, pydicom_test_dir, start_server
from tests.factories import make_ct, write


def hpacs(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hpacs", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def test_help_lists_the_commands_and_flags():
    top = hpacs("--help")
    assert top.returncode == 0
    for command in ("serve", "import", "reindex"):
        assert command in top.stdout
    serve = hpacs("serve", "--help")
    for flag in ("--data-dir", "--host", "--dicom-port", "--http-port", "--ae-title", "--config"):
        assert flag in serve.stdout


def test_import_a_folder_reports_stored_duplicates_and_rejections(tmp_path):
    data = tmp_path / "data"
    first = hpacs("import", "--data-dir", str(data), "--no-progress", str(pydicom_test_dir()))
    assert first.returncode == 0, first.stderr
    summary = re.search(r"stored (\d+), duplicate (\d+), rejected (\d+) \(of (\d+) files\)",
                        first.stdout)
    assert summary, first.stdout
    stored, duplicate, rejected, total = map(int, summary.groups())
    assert stored > 100
    assert stored + duplicate + rejected == total
    assert "rejected" in first.stdout and "README" in first.stdout  # non-DICOM files named
    again = hpacs("import", "--data-dir", str(data), "--no-progress", str(pydicom_test_dir()))
    assert f"stored 0, duplicate {stored + duplicate}, rejected {rejected}" in again.stdout


def test_import_refuses_a_data_dir_in_use(tmp_path):
    srv = start_server(tmp_path / "data")
    try:
        path = write(make_ct(), tmp_path / "in")
        run = hpacs("import", "--data-dir", str(srv.data_dir), str(path))
        assert run.returncode == 3
        assert "in use" in run.stderr
    finally:
        assert srv.stop() == 0


def test_reindex_rebuilds_the_same_index(tmp_path):
    data = tmp_path / "data"
    files = [write(make_ct(number=n, study=n % 3), tmp_path / "in") for n in range(9)]
    assert hpacs("import", "--data-dir", str(data), "--no-progress",
                 *map(str, files)).returncode == 0
    run = hpacs("reindex", "--data-dir", str(data), "--no-progress")
    assert run.returncode == 0, run.stderr
    assert "indexed 9 instances, 0 unreadable" in run.stdout
    (data / "hot" / "stray.dcm").parent.mkdir(exist_ok=True)
    orphan_dir = next((data / "hot").glob("*/*/*/*"))
    (orphan_dir / "9.9.9.dcm").write_bytes(b"\0" * 200)
    run = hpacs("reindex", "--data-dir", str(data), "--no-progress")
    assert run.returncode == 1
    assert "indexed 9 instances, 1 unreadable or orphan" in run.stdout
    assert "9.9.9.dcm" in run.stdout


def test_bad_config_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "hpacs.toml"
    bad.write_text("[server]\ndicom_prot = 1\n")
    run = hpacs("serve", "--config", str(bad))
    assert run.returncode == 2
    assert "unknown key 'dicom_prot'" in run.stderr
