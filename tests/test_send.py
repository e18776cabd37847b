"""`hpacs send` (storage SCU CLI) against dcmtk storescp: files, folders, archive studies."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from collections import defaultdict
from pathlib import Path

import pydicom.data
import pytest

from tests.conftest import free_port, start_server
from tests.factories import make_ct, uid, write
from tests.interop.helpers import dataset_bytes, sop_uid_of
from tests.test_cli import hpacs

STORESCP = "/usr/bin/storescp"  # not the venv's pynetdicom script of the same name
# One file per transfer syntax family: explicit/implicit LE, big endian, deflate, JPEG, J2K, RLE.
PYDICOM_FILES = ["CT_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm",
                 "image_dfl.dcm", "JPEG-lossy.dcm", "JPEG2000.dcm", "SC_rgb_rle.dcm"]
SUMMARY = re.compile(r"sent (\d+), failed (\d+)")


class StoreSCP:
    def __init__(self, out: Path, ae_title: str = "STORESCP", accept_all: bool = True) -> None:
        self.out = out
        self.ae_title = ae_title
        self.port = free_port()
        out.mkdir(parents=True, exist_ok=True)
        # +xa accept every syntax (default: uncompressed only), +B write data sets
        # bit-preserved, +uf never overwrite
        syntaxes = ["+xa"] if accept_all else []
        self.proc = subprocess.Popen(
            [STORESCP, "-aet", ae_title, *syntaxes, "+B", "+uf", "-od", str(out),
             str(self.port)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env={**os.environ, "TCP_NODELAY": "1"})
        deadline = time.monotonic() + 10
        while True:  # listening?
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise AssertionError("storescp did not start") from None
                time.sleep(0.05)

    @property
    def to(self) -> str:
        return f"{self.ae_title}@127.0.0.1:{self.port}"

    def received(self) -> dict[str, list[bytes]]:
        """SOP Instance UID -> data set bytes of each file received."""
        out: dict[str, list[bytes]] = defaultdict(list)
        for f in self.out.iterdir():
            out[sop_uid_of(f)].append(dataset_bytes(f))
        return out

    def stop(self) -> str:
        self.proc.terminate()
        stdout, _ = self.proc.communicate(timeout=10)
        return stdout.decode(errors="replace") if stdout else ""


@pytest.fixture
def storescp(tmp_path):
    if shutil.which(STORESCP) is None:
        pytest.fail("dcmtk storescp not found: `make test` installs dcmtk")
    scp = StoreSCP(tmp_path / "received")
    yield scp
    scp.stop()


def summary(run: subprocess.CompletedProcess) -> tuple[int, int]:
    match = SUMMARY.search(run.stdout)
    assert match, run.stdout + run.stderr
    return int(match[1]), int(match[2])


def test_help_has_examples():
    run = hpacs("send", "--help")
    assert run.returncode == 0
    for text in ("--to", "--calling-ae", "--study", "--series", "--no-progress", "examples:",
                 "AE@host:port"):
        assert text in run.stdout
    assert "send" in hpacs("--help").stdout


def test_send_files_and_a_folder_bytes_unchanged(tmp_path, storescp):
    files = [Path(pydicom.data.get_testdata_file(name)) for name in PYDICOM_FILES]
    folder = tmp_path / "folder"
    cts = [write(make_ct(7, 1, 1, n, size=16), folder / "sub") for n in range(1, 6)]
    (folder / "README.txt").write_text("not DICOM\n")
    run = hpacs("send", "--to", storescp.to, "--calling-ae", "SENDER", "--no-progress",
                *map(str, files), str(folder), timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert summary(run) == (len(files) + len(cts), 0)
    assert re.search(r"skipped .*README\.txt: not a DICOM", run.stdout), run.stdout
    received = storescp.received()
    for path in files + cts:
        expected = dataset_bytes(path)
        if path.name == "image_dfl.dcm" and len(expected) % 2:
            expected += b"\0"  # odd deflated stream: sent with its PS3.5 A.5 pad byte
        assert expected in received[sop_uid_of(path)], path
    meta = pydicom.dcmread(next(storescp.out.iterdir()), stop_before_pixels=True).file_meta
    assert meta.SourceApplicationEntityTitle.strip() == "SENDER"


def test_send_studies_and_a_series_from_the_archive_while_the_server_runs(tmp_path, storescp):
    data = tmp_path / "data"
    paths = [write(make_ct(1, st, se, n, size=16), tmp_path / "in")
             for st in (1, 2, 3) for se in (1, 2) for n in range(1, 4)]
    assert hpacs("import", "--data-dir", str(data), "--no-progress",
                 str(tmp_path / "in")).returncode == 0
    srv = start_server(data)
    try:
        run = hpacs("send", "--to", storescp.to, "--data-dir", str(data), "--no-progress",
                    "--study", uid("study", 1, 1), "--study", uid("study", 1, 2),
                    "--series", uid("series", 1, 3, 2), "--series", uid("series", 1, 1, 1),
                    timeout=60)
        assert run.returncode == 0, run.stdout + run.stderr
        wanted = [p for p in paths if sop_uid_of(p) in {
            uid("inst", 1, st, se, n) for st in (1, 2) for se in (1, 2) for n in (1, 2, 3)
        } | {uid("inst", 1, 3, 2, n) for n in (1, 2, 3)}]
        assert summary(run) == (len(wanted), 0) == (15, 0)
        received = storescp.received()
        assert set(received) == {sop_uid_of(p) for p in wanted}
        for path in wanted:
            assert received[sop_uid_of(path)] == [dataset_bytes(path)]
        missing = hpacs("send", "--to", storescp.to, "--data-dir", str(data), "--no-progress",
                        "--study", "1.2.3.4.5")
        assert missing.returncode == 1
        assert "study 1.2.3.4.5: not in the archive" in missing.stderr
    finally:
        assert srv.stop() == 0, srv.log()


def test_unreachable_destination_fails_clearly(tmp_path):
    path = write(make_ct(size=16), tmp_path / "in")
    port = free_port()
    run = hpacs("send", "--to", f"NOBODY@127.0.0.1:{port}", "--no-progress", str(path))
    assert run.returncode == 1
    assert summary(run) == (0, 1)
    assert sop_uid_of(path) in run.stdout
    assert f"NOBODY@127.0.0.1:{port}: cannot connect" in run.stderr


def test_named_remote_from_the_config(tmp_path, storescp):
    config = tmp_path / "hpacs.toml"
    config.write_text(f'[[remote]]\nae_title = "DEST"\nhost = "127.0.0.1"\n'
                      f"port = {storescp.port}\n")
    path = write(make_ct(size=16), tmp_path / "in")
    run = hpacs("send", "--config", str(config), "--to", "DEST", "--no-progress", str(path))
    assert run.returncode == 0, run.stdout + run.stderr
    assert summary(run) == (1, 0)
    assert f"to DEST@127.0.0.1:{storescp.port}" in run.stdout
    assert storescp.received()[sop_uid_of(path)] == [dataset_bytes(path)]
    unknown = hpacs("send", "--config", str(config), "--to", "ELSEWHERE", str(path))
    assert unknown.returncode == 2
    assert "not AE@host:port and not a [[remote]] AE title (known: DEST)" in unknown.stderr
    bad = hpacs("send", "--to", "X@host", str(path))
    assert bad.returncode == 2 and "expected AE@host:port" in bad.stderr


def test_send_transcodes_for_a_destination_that_accepts_uncompressed_only(tmp_path):
    """storescp with its default syntaxes (uncompressed only): compressed files are decoded
    (the same choice as C-MOVE) and decode to pydicom's decode of the original."""
    import numpy as np

    scp = StoreSCP(tmp_path / "received", accept_all=False)
    names = ["SC_rgb_rle.dcm", "JPEG2000.dcm", "MR_small_jpeg_ls_lossless.dcm",
             "SC_rgb_dcmtk_+eb+cy+s2.dcm", "image_dfl.dcm", "JPEG-lossy.dcm"]
    files = [Path(pydicom.data.get_testdata_file(name)) for name in names]
    try:
        run = hpacs("send", "--to", scp.to, "--no-progress", *map(str, files), timeout=60)
    finally:
        scp.stop()
    # JPEG-lossy.dcm: pydicom cannot decode it, so it cannot be transcoded: a clear failure
    assert run.returncode == 1, run.stdout + run.stderr
    assert summary(run) == (len(files) - 1, 1)
    lossy_uid = sop_uid_of(files[-1])
    assert re.search(rf"failed {re.escape(lossy_uid)}: unreadable: .*1\.2\.840\.10008\.1\.2\.4\.51",
                     run.stdout), run.stdout
    received = {sop_uid_of(f): f for f in scp.out.iterdir()}
    for path in files[:-1]:
        got = pydicom.dcmread(received[sop_uid_of(path)])
        assert got.file_meta.TransferSyntaxUID in ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2"), path
        assert np.array_equal(got.pixel_array, pydicom.dcmread(path).pixel_array), path
