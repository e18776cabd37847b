"""Data sets sent by sendfile (page cache to socket) on C-GET and C-MOVE, checked byte for byte
against the stored data sets by real peers: dcmtk getscu at its default 16 KB and its largest
128 KB max PDU, pynetdicom at 1 MiB, getscu behind a proxy that reads slowly (partial sendfile
writes), movescu to storescp. Instance sizes from 1 KB to ~5 MB, none a multiple of a PDU."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from pydicom.uid import CTImageStorage

from tests.conftest import free_port, start_server
from tests.factories import make_ct, uid, write
from tests.interop.helpers import (
    RecordingProxy,
    dataset_bytes,
    pynetdicom_get,
    remotes_config,
    send_files,
    sop_uid_of,
    stored_dataset_bytes,
)

GETSCU = "/usr/bin/getscu"
MOVESCU = "/usr/bin/movescu"
STORESCP = "/usr/bin/storescp"
STUDY = uid("study", 5, 1)
#: Rows = columns of each CT: data sets of ~1 KB to ~5 MB (more than a loopback socket's 4 MB
#: send buffer holds), even lengths not on PDU bounds.
SIZES = [16, 181, 257, 300, 513, 700, 723, 1601]


class Archive:
    def __init__(self, srv, dest_port: int) -> None:
        self.srv = srv
        self.dest_port = dest_port

    def stored(self, sop_uid: str) -> bytes:
        return stored_dataset_bytes(self.srv.data_dir, sop_uid)

    def warm(self) -> None:
        """Read every stored file, so its pages are in the page cache as the retrieve starts:
        sendfile is for cached files only, and this machine's host reclaims idle page cache
        within seconds (session 10: ~20 MB/s with GBs free)."""
        for path in (self.srv.data_dir / "hot").rglob("*.dcm"):
            path.read_bytes()

    def last_done(self, event: str) -> dict:
        """The last ``get.done``/``move.done`` log record of the server."""
        for line in reversed(self.srv.log().splitlines()):
            if f'"event": "{event}"' in line:
                return json.loads(line)
        raise AssertionError(f"no {event} in the log")


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    base = tmp_path_factory.mktemp("sendfile")
    dest_port = free_port()
    # "always": one C-STORE at a time (dcmtk, pynetdicom) "auto" would not use sendfile
    config = remotes_config(base / "hpacs.toml", {"STORESCP": dest_port},
                            head='[dicom]\nsendfile = "always"\n\n')
    srv = start_server(base / "data", "--config", str(config))
    paths = [write(make_ct(5, 1, 1, n, size=size), base / "files")
             for n, size in enumerate(SIZES, 1)]
    statuses = send_files(srv, paths)
    assert all(statuses[p] == 0 for p in paths)
    yield Archive(srv, dest_port)
    assert srv.stop() == 0, srv.log()
    assert "internal_error" not in srv.log()


def _assert_received(archive: Archive, out: Path) -> None:
    """``out`` holds one file per stored instance, each data set byte for byte as stored."""
    files = sorted(out.iterdir())
    assert len(files) == len(SIZES)
    for f in files:
        assert dataset_bytes(f) == archive.stored(sop_uid_of(f))


def _getscu(archive: Archive, out: Path, *extra: str, port: int | None = None) -> None:
    out.mkdir()
    proc = subprocess.run(
        [GETSCU, "-S", "-aec", archive.srv.ae_title, "-od", str(out), *extra, "127.0.0.1",
         str(port or archive.srv.dicom_port), "-k", "QueryRetrieveLevel=STUDY",
         "-k", f"StudyInstanceUID={STUDY}"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _assert_received(archive, out)


@pytest.mark.parametrize("pdu", [None, "131072"], ids=["16k-default", "128k"])
def test_getscu_receives_the_stored_bytes_by_sendfile(archive, tmp_path, pdu):
    archive.warm()
    _getscu(archive, tmp_path / "get", *(("--max-pdu", pdu) if pdu else ()))
    done = archive.last_done("get.done")
    assert (done["completed"], done["failed"]) == (len(SIZES), 0)
    assert done["sendfile"] == len(SIZES)  # none fell back to reading the file


def test_pynetdicom_1mib_pdu_receives_the_stored_bytes(archive):
    archive.warm()
    received, statuses = pynetdicom_get(archive.srv.dicom_port, archive.srv.ae_title, [STUDY],
                                        [CTImageStorage], max_pdu=1 << 20)
    assert statuses[0][-1] == 0x0000
    assert len(received) == len(SIZES)
    for sop, data in received.items():
        assert data == archive.stored(sop)
    assert archive.last_done("get.done")["sendfile"] == len(SIZES)


def test_getscu_behind_a_slow_reader_gets_every_byte(archive, tmp_path):
    # reads 16 KB through an 8 KB receive buffer, then pauses: the archive's socket fills
    proxy = RecordingProxy(archive.srv.dicom_port, slow_delay=0.004)
    archive.warm()
    try:
        started = time.perf_counter()
        _getscu(archive, tmp_path / "get", port=proxy.port)
        assert time.perf_counter() - started > 0.2  # it was indeed slow (~500 pauses)
    finally:
        proxy.close()
    done = archive.last_done("get.done")
    assert (done["completed"], done["failed"]) == (len(SIZES), 0)
    # every file is cached, so each data set goes by sendfile, except one that would start
    # while the transport still holds earlier bytes: that one is read and written to keep the
    # bytes in order (send_instance), and counted apart
    assert done["sendfile"] >= 1
    assert done["sendfile"] + done["sendfile_busy"] == len(SIZES)
    assert done["sendfile_waits"] > 0  # the socket filled: partial sendfile writes waited


def test_movescu_to_storescp_by_sendfile(archive, tmp_path):
    out = tmp_path / "dest"
    out.mkdir()
    dest = subprocess.Popen([STORESCP, "-aet", "STORESCP", "-od", str(out),
                             str(archive.dest_port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(0.3)
        archive.warm()
        proc = subprocess.run(
            [MOVESCU, "-S", "-aec", archive.srv.ae_title, "-aem", "STORESCP", "127.0.0.1",
             str(archive.srv.dicom_port), "-k", "QueryRetrieveLevel=STUDY",
             "-k", f"StudyInstanceUID={STUDY}"],
            capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        _assert_received(archive, out)
    finally:
        dest.terminate()
        dest.wait(10)
    done = archive.last_done("move.done")
    assert (done["completed"], done["failed"], done["sendfile"]) == (len(SIZES), 0, len(SIZES))
