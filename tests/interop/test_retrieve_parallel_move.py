"""C-MOVE over several sub-associations (``dicom.move_associations``): dcmtk and pynetdicom.

The instances are split between the associations; every one must arrive exactly once and the
C-MOVE responses must count (and list the failures of) the whole set.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage, StudyRootQueryRetrieveInformationModelMove

from tests.conftest import free_port, start_server
from tests.factories import make_ct, uid, write
from tests.interop.helpers import (
    dataset_bytes,
    remotes_config,
    send_files,
    sop_uid_of,
    stored_dataset_bytes,
)

MOVESCU = "/usr/bin/movescu"
STORESCP = "/usr/bin/storescp"
STUDY_MOVE = StudyRootQueryRetrieveInformationModelMove
STUDY = uid("study", 7, 1)
ASSOCIATIONS = 3


class Setup:
    def __init__(self, srv, ports: dict[str, int], paths: list[Path]) -> None:
        self.srv = srv
        self.ports = ports
        self.paths = paths

    def stored(self, sop_uid: str) -> bytes:
        return stored_dataset_bytes(self.srv.data_dir, sop_uid)


@pytest.fixture(scope="module")
def pm(tmp_path_factory):
    base = tmp_path_factory.mktemp("parallel-move")
    ports = {ae: free_port() for ae in ("FORKSCP", "ONESCP", "PYSCP", "DOWN")}
    config = remotes_config(base / "hpacs.toml", ports,
                            head=f"[dicom]\nmove_associations = {ASSOCIATIONS}\n\n")
    srv = start_server(base / "data", "--config", str(config))
    paths = [write(make_ct(7, 1, se, n, size=16), base / "files")
             for se in (1, 2) for n in range(1, 11)]
    statuses = send_files(srv, paths)
    assert all(statuses[p] == 0 for p in paths)
    yield Setup(srv, ports, paths)
    assert srv.stop() == 0, srv.log()
    assert "internal_error" not in srv.log()


def movescu(pm: Setup, destination: str) -> str:
    proc = subprocess.run(
        [MOVESCU, "-v", "-S", "-aec", pm.srv.ae_title, "-aem", destination, "127.0.0.1",
         str(pm.srv.dicom_port), "-k", "QueryRetrieveLevel=STUDY",
         "-k", f"StudyInstanceUID={STUDY}"],
        capture_output=True, text=True, timeout=120)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    return log


@pytest.mark.parametrize("ae, fork", [("FORKSCP", True), ("ONESCP", False)])
def test_movescu_to_storescp_over_several_associations(pm, tmp_path, ae, fork):
    """storescp --fork takes the associations in parallel; without it, one after the other
    (each sub-association is released as soon as it runs out of instances)."""
    out = tmp_path / "dest"
    out.mkdir()
    dest = subprocess.Popen([STORESCP, "-aet", ae, "-od", str(out), "+B",
                             *(["--fork"] if fork else []), str(pm.ports[ae])],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(0.3)
        log = movescu(pm, ae)
        assert re.search(r"Received Final Move Response \(Success\)", log), log
        files = sorted(out.iterdir())
        assert len(files) == len(pm.paths), log
        for f in files:
            assert dataset_bytes(f) == pm.stored(sop_uid_of(f))
    finally:
        dest.terminate()
        dest.wait(10)


def c_move(pm: Setup, destination: str, *,
           cancel_after: int | None = None) -> list[tuple[Dataset, Dataset | None]]:
    ae = AE(ae_title="PYMOVE")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(STUDY_MOVE)
    ident = Dataset()
    ident.QueryRetrieveLevel = "STUDY"
    ident.StudyInstanceUID = STUDY
    assoc = ae.associate("127.0.0.1", pm.srv.dicom_port, ae_title=pm.srv.ae_title)
    assert assoc.is_established
    ctx = next(c.context_id for c in assoc.accepted_contexts if c.abstract_syntax == STUDY_MOVE)
    results = []
    try:
        for status, identifier in assoc.send_c_move(ident, destination, STUDY_MOVE, msg_id=21):
            results.append((status, identifier))
            pending = sum(s.Status == 0xFF00 for s, _ in results)
            if status.Status == 0xFF00 and pending == cancel_after:
                assoc.send_c_cancel(21, ctx)
        return results
    finally:
        assoc.release()


def pynetdicom_destination(port: int, on_store):
    scp = AE(ae_title="PYSCP")
    scp.add_supported_context(CTImageStorage, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
    return scp.start_server(("127.0.0.1", port), block=False,
                            evt_handlers=[(evt.EVT_C_STORE, on_store)])


def test_cancel_stops_every_sub_association(pm):
    """C-CANCEL: the instances in flight on the 3 associations finish, no new one starts, and
    the 0xFE00 response counts add up to the total."""
    received: list[str] = []
    lock = threading.Lock()

    def on_store(event):
        time.sleep(0.05)
        with lock:
            received.append(event.request.AffectedSOPInstanceUID)
        return 0

    server = pynetdicom_destination(pm.ports["PYSCP"], on_store)
    try:
        results = c_move(pm, "PYSCP", cancel_after=2)
        time.sleep(0.3)
    finally:
        server.shutdown()
    status, _ = results[-1]
    assert status.Status == 0xFE00
    done = status.NumberOfCompletedSuboperations
    assert done + status.NumberOfRemainingSuboperations == len(pm.paths)
    assert 2 <= done < len(pm.paths)
    assert len(received) == len(set(received)) == done
    # the server still moves everything afterwards
    assert c_move(pm, "DOWN")[-1][0].Status == 0xA702


def test_pynetdicom_destination_counts_and_failed_list(pm):
    """A pynetdicom destination refusing 3 instances: every instance offered exactly once over
    3 associations, pending counts add up, the final 0xB000 lists exactly the refused ones."""
    uids = [sop_uid_of(p) for p in pm.paths]
    refused = set(uids[::7])
    received: list[str] = []
    associations: set[int] = set()
    lock = threading.Lock()

    def on_store(event):
        with lock:
            received.append(event.request.AffectedSOPInstanceUID)
            associations.add(id(event.assoc))
        time.sleep(0.01)  # keep the associations busy at the same time
        return 0xA700 if event.request.AffectedSOPInstanceUID in refused else 0

    server = pynetdicom_destination(pm.ports["PYSCP"], on_store)
    try:
        results = c_move(pm, "PYSCP")
    finally:
        server.shutdown()
    assert sorted(received) == sorted(uids)
    assert len(associations) == ASSOCIATIONS
    pendings = [s for s, _ in results[:-1]]
    assert all(s.Status == 0xFF00 for s in pendings)
    for s in pendings:
        done = (s.NumberOfCompletedSuboperations + s.NumberOfFailedSuboperations
                + s.NumberOfWarningSuboperations)
        assert done + s.NumberOfRemainingSuboperations == len(uids)
    status, identifier = results[-1]
    assert status.Status == 0xB000
    assert status.NumberOfCompletedSuboperations == len(uids) - len(refused)
    assert status.NumberOfFailedSuboperations == len(refused)
    assert status.NumberOfWarningSuboperations == 0
    failed = identifier.FailedSOPInstanceUIDList
    assert set([failed] if isinstance(failed, str) else failed) == refused


def test_destination_down_fails_every_instance(pm):
    results = c_move(pm, "DOWN")
    assert len(results) == 1
    status, identifier = results[0]
    assert status.Status == 0xA702
    assert status.NumberOfFailedSuboperations == len(pm.paths)
    assert len(identifier.FailedSOPInstanceUIDList) == len(pm.paths)
    assert "DOWN" in status.ErrorComment
