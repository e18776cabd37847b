"""benchmarks/discard_receiver.py against a real hpacs: as C-GET SCU and as C-MOVE destination."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pydicom

from tests.conftest import free_port, start_server
from tests.factories import make_ct, write
from tests.interop.helpers import send_files


def test_discard_receiver_gets_and_receives_a_move(tmp_path):
    dest_port = free_port()
    config = tmp_path / "hpacs.toml"
    config.write_text("[dicom]\nmove_associations = 2\n\n[[remote]]\n"
                      f'ae_title = "FASTDISCARD"\nhost = "127.0.0.1"\nport = {dest_port}\n')
    srv = start_server(tmp_path / "data", "--config", str(config))
    scp = subprocess.Popen([sys.executable, "-m", "benchmarks.discard_receiver", "scp",
                            "--port", str(dest_port), "--ae", "FASTDISCARD"])
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
        time.sleep(0.2)
        moved = subprocess.run(
            ["/usr/bin/movescu", "-v", "-S", "-aec", srv.ae_title, "-aem", "FASTDISCARD",
             "127.0.0.1", str(srv.dicom_port), "-k", "QueryRetrieveLevel=STUDY",
             "-k", f"StudyInstanceUID={study}"], capture_output=True, text=True, timeout=60)
        log = moved.stdout + moved.stderr
        assert moved.returncode == 0 and "Received Final Move Response (Success)" in log, log
    finally:
        scp.terminate()
        scp.wait(10)
        assert srv.stop() == 0, srv.log()
    assert '"move.done"' in srv.log() and '"completed": 5' in srv.log()
