"""benchmarks/discard_receiver.py against a real hpacs: as C-GET SCU and as C-MOVE destination."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import pydicom

from benchmarks.discard_receiver import STUDY_ROOT_FIND, FindSCU, identifier, response_status
from hpacs.dimse import commands as cmd
from tests.conftest import free_port, start_server
from tests.factories import make_ct, write
from tests.interop.helpers import send_files


def test_discard_receiver_gets_and_receives_a_move(tmp_path):
    dest_port = free_port()
    config = tmp_path / "hpacs.toml"
    config.write_text("[dicom]\nmove_associations = 2\n\n[[remote]]\n"
                      f'ae_title = "FASTDISCARD"\nhost = "127.0.0.1"\nport = {dest_port}\n')
    srv = start_server(tmp_path / "data", "--config", str(config))
    count_file = tmp_path / "count"
    scp = subprocess.Popen([sys.executable, "-m", "benchmarks.discard_receiver", "scp",
                            "--port", str(dest_port), "--ae", "FASTDISCARD", "--window", "8",
                            "--count-file", str(count_file)])
    try:
        paths = [write(make_ct(5, 1, 1, n, size=32), tmp_path / "files") for n in range(1, 6)]
        assert set(send_files(srv, paths).values()) == {0}
        study = pydicom.dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID
        got = subprocess.run(
            [sys.executable, "-m", "benchmarks.discard_receiver", "get", "127.0.0.1",
             str(srv.dicom_port), "--aec", srv.ae_title, "--study", study, "--expect", "5"],
            capture_output=True, text=True, timeout=60)
        assert got.returncode == 0, got.stdout + got.stderr
        result = json.loads(got.stdout.strip().splitlines()[-1])
        assert (result["status"], result["completed"], result["received"]) == ("0x0", 5, 5)
        assert result["window"] == [1, 1]  # proposes none by default: as today
        got = subprocess.run(
            [sys.executable, "-m", "benchmarks.discard_receiver", "get", "127.0.0.1",
             str(srv.dicom_port), "--aec", srv.ae_title, "--study", study, "--expect", "5",
             "--window", "8"], capture_output=True, text=True, timeout=60)
        assert got.returncode == 0, got.stdout + got.stderr
        result = json.loads(got.stdout.strip().splitlines()[-1])
        assert (result["status"], result["completed"], result["received"]) == ("0x0", 5, 5)
        assert result["window"] == [1, 8]
        time.sleep(0.2)
        moved = subprocess.run(
            ["/usr/bin/movescu", "-v", "-S", "-aec", srv.ae_title, "-aem", "FASTDISCARD",
             "127.0.0.1", str(srv.dicom_port), "-k", "QueryRetrieveLevel=STUDY",
             "-k", f"StudyInstanceUID={study}"], capture_output=True, text=True, timeout=60)
        log = moved.stdout + moved.stderr
        assert moved.returncode == 0 and "Received Final Move Response (Success)" in log, log
        assert int(count_file.read_text()) == 5
        # the fast C-MOVE SCU: the same move, its final counts and clock as JSON
        moved = subprocess.run(
            [sys.executable, "-m", "benchmarks.discard_receiver", "move", "127.0.0.1",
             str(srv.dicom_port), "--aec", srv.ae_title, "--dest", "FASTDISCARD",
             "--study", study, "--expect", "5"], capture_output=True, text=True, timeout=60)
        assert moved.returncode == 0, moved.stdout + moved.stderr
        result = json.loads(moved.stdout.strip().splitlines()[-1])
        assert (result["status"], result["completed"], result["failed"]) == ("0x0", 5, 0)
        assert result["received"] == 5 and result["ms"] > 0
        assert int(count_file.read_text()) == 10  # the destination got them all again
        failed = subprocess.run(
            [sys.executable, "-m", "benchmarks.discard_receiver", "move", "127.0.0.1",
             str(srv.dicom_port), "--aec", srv.ae_title, "--dest", "NOSUCHAE",
             "--study", study], capture_output=True, text=True, timeout=60)
        assert failed.returncode == 1  # 0xA801, move destination unknown
        assert json.loads(failed.stdout.strip().splitlines()[-1])["status"] == "0xa801"
    finally:
        scp.terminate()
        scp.wait(10)
        assert srv.stop() == 0, srv.log()
    assert '"move.done"' in srv.log() and '"completed": 5' in srv.log()
    # the destination granted 8 of the server's 16 (two sub-associations, each windowed)
    assert '"window": 8' in srv.log().rsplit('"move.done"', 1)[1].split("\n")[0]


def test_response_status_reads_field_and_status_without_decoding():
    for field, code in ((cmd.CommandField.C_FIND_RSP, 0xFF00), (cmd.CommandField.C_FIND_RSP, 0),
                        (cmd.CommandField.C_GET_RSP, 0xFF01)):
        encoded = cmd.encode_command({
            cmd.COMMAND_FIELD: int(field), cmd.AFFECTED_SOP_CLASS_UID: STUDY_ROOT_FIND,
            cmd.MESSAGE_ID_BEING_RESPONDED_TO: 7, cmd.COMMAND_DATA_SET_TYPE: 0x0101,
            cmd.STATUS: code})
        assert response_status(encoded) == (field, code)
    assert response_status(b"\x08\x00\x00\x01\x02\x00\x00\x00\x20\x80") == (-1, -1)  # not 0000
    assert response_status(b"\x00\x00\x00\x01\x08\x00\x00\x00") == (-1, -1)  # overruns


def test_find_scu_counts_what_findscu_counts(tmp_path):
    srv = start_server(tmp_path / "data")
    try:
        paths = [write(make_ct(s, 1, 1, 1, size=16), tmp_path / "files") for s in range(1, 4)]
        assert set(send_files(srv, paths).values()) == {0}
        ds = pydicom.Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        ds.StudyInstanceUID = ""
        ds.PatientID = ""

        async def run() -> tuple[list[float], list[int]]:
            scu = await FindSCU.connect("127.0.0.1", srv.dicom_port, srv.ae_title)
            try:
                return await scu.timed([identifier(ds)] * 3)
            finally:
                await scu.release()

        times, counts = asyncio.run(run())
        out = tmp_path / "rsp"
        out.mkdir()
        found = subprocess.run(
            ["/usr/bin/findscu", "-S", "-X", "-od", str(out), "-aec", srv.ae_title,
             "127.0.0.1", str(srv.dicom_port), "-k", "QueryRetrieveLevel=STUDY",
             "-k", "StudyInstanceUID", "-k", "PatientID"],
            capture_output=True, text=True, timeout=60)
        assert found.returncode == 0, found.stderr
    finally:
        assert srv.stop() == 0, srv.log()
    assert counts == [3, 3, 3] == [len(list(out.glob("rsp*.dcm")))] * 3
    assert all(t > 0 for t in times)
