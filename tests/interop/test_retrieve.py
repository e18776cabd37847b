"""C-GET and C-MOVE SCP against real peers: dcmtk getscu/movescu/storescp and pynetdicom."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
)
from pynetdicom import AE, evt
from pynetdicom.presentation import build_role
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from tests.conftest import free_port, start_server, storage_test_files
from tests.factories import make_ct, uid, write
from tests.interop.helpers import (
    dataset_bytes,
    open_index,
    remotes_config,
    send_files,
    sop_uid_of,
    stored_dataset_bytes,
)

GETSCU = "/usr/bin/getscu"  # not the venv's pynetdicom scripts of the same names
MOVESCU = "/usr/bin/movescu"
STORESCP = "/usr/bin/storescp"
STUDY_GET = StudyRootQueryRetrieveInformationModelGet
PATIENT_GET = PatientRootQueryRetrieveInformationModelGet
STUDY_MOVE = StudyRootQueryRetrieveInformationModelMove
PATIENT_MOVE = PatientRootQueryRetrieveInformationModelMove

STUDY = uid("study", 1, 1)
SERIES = [uid("series", 1, 1, se) for se in (1, 2)]


class QR:
    def __init__(self, srv, base: Path, dest_port: int, paths: list[Path], test_files):
        self.srv = srv
        self.base = base
        self.dest_port = dest_port
        self.paths = paths
        self.test_files = test_files

    def stored(self, sop_uid: str) -> bytes:
        """The stored data set bytes of an instance (after its Part 10 meta)."""
        return stored_dataset_bytes(self.srv.data_dir, sop_uid)

    def stored_entry(self, sop_uid: str):
        db = open_index(self.srv.data_dir)
        try:
            return db.get_instance(sop_uid)
        finally:
            db.close()


@pytest.fixture(scope="module")
def qr(tmp_path_factory):
    base = tmp_path_factory.mktemp("retrieve")
    dest_port, down_port = free_port(), free_port()
    config = remotes_config(base / "hpacs.toml", {"STORESCP": dest_port, "DOWN": down_port})
    srv = start_server(base / "data", "--config", str(config))
    paths = [write(make_ct(1, 1, se, n, size=16), base / "files")
             for se in (1, 2) for n in range(1, 11)]
    test_files = storage_test_files()
    statuses = send_files(srv, paths + test_files)
    assert all(statuses[p] == 0 for p in paths)
    yield QR(srv, base, dest_port, paths, test_files)
    assert srv.stop() == 0, srv.log()
    assert "internal_error" not in srv.log()


def ident(level: str, **keys) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for k, v in keys.items():
        setattr(ds, k, v)
    return ds


def sop_uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def c_get(srv, model, identifier: Dataset, storage: list[tuple[str, list[str]]], *,
          cancel_after: int | None = None, store_status: int = 0x0000):
    """(received sop uid -> data set bytes, pending statuses, final status) via pynetdicom."""
    received: dict[str, bytes] = {}

    def on_store(event):
        received[str(event.request.AffectedSOPInstanceUID)] = event.request.DataSet.getvalue()
        return store_status

    ae = AE(ae_title="PYGET")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(model)
    roles = []
    for sop_class, syntaxes in storage:
        ae.add_requested_context(sop_class, syntaxes)
        roles.append(build_role(sop_class, scp_role=True))
    assoc = ae.associate("127.0.0.1", srv.dicom_port, ae_title=srv.ae_title,
                         ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    pendings, final = [], None
    msg_id = 11
    ctx = next(c.context_id for c in assoc.accepted_contexts if c.abstract_syntax == model)
    for status, identifier_rsp in assoc.send_c_get(identifier, model, msg_id=msg_id):
        assert status is not None, "no response"
        if status.Status == 0xFF00:
            pendings.append(status)
            if cancel_after is not None and len(pendings) == cancel_after:
                assoc.send_c_cancel(msg_id, ctx)
        else:
            final = (status, identifier_rsp)
    echo = assoc.send_c_echo() if any(
        c.abstract_syntax == Verification for c in assoc.accepted_contexts) else None
    assoc.release()
    return received, pendings, final, echo


CT_AS_STORED = [(CTImageStorage, [ExplicitVRLittleEndian])]


# ---------------------------------------------------------------------------- C-GET pynetdicom
@pytest.mark.parametrize("model,level,keys,expected", [
    (STUDY_GET, "STUDY", {"StudyInstanceUID": STUDY}, 20),
    (PATIENT_GET, "STUDY", {"PatientID": "PAT00001", "StudyInstanceUID": STUDY}, 20),
    (PATIENT_GET, "PATIENT", {"PatientID": "PAT00001"}, 20),
    (STUDY_GET, "SERIES", {"StudyInstanceUID": STUDY, "SeriesInstanceUID": SERIES[1]}, 10),
    (STUDY_GET, "SERIES", {"SeriesInstanceUID": "\\".join(SERIES)}, 20),
    (STUDY_GET, "IMAGE", {"StudyInstanceUID": STUDY, "SeriesInstanceUID": SERIES[0],
                          "SOPInstanceUID": uid("inst", 1, 1, 1, 3)}, 1),
])
def test_get_levels_byte_identical_with_counts(qr, model, level, keys, expected):
    received, pendings, final, _ = c_get(qr.srv, model, ident(level, **keys), CT_AS_STORED)
    status, _ = final
    assert status.Status == 0x0000
    assert status.NumberOfCompletedSuboperations == expected
    assert status.NumberOfFailedSuboperations == 0
    assert status.NumberOfWarningSuboperations == 0
    assert len(received) == expected
    for sop, data in received.items():
        assert data == qr.stored(sop)
    # a pending response after every sub-operation but the last, counts adding up
    assert len(pendings) == expected - 1
    for i, p in enumerate(pendings, 1):
        assert p.NumberOfCompletedSuboperations == i
        assert p.NumberOfRemainingSuboperations == expected - i
        assert p.NumberOfFailedSuboperations == p.NumberOfWarningSuboperations == 0


def test_get_pydicom_test_files_in_their_stored_syntax(qr):
    by_uid = {}
    for path in qr.test_files:
        entry = qr.stored_entry(sop_uid_of(path))
        if entry is not None:
            by_uid[entry.sop_instance_uid] = entry
    contexts: dict[str, set[str]] = {}
    for entry in by_uid.values():
        contexts.setdefault(entry.sop_class_uid, set()).add(entry.transfer_syntax_uid)
    # one context per (class, syntax): an acceptor picks one syntax per context
    storage = [(sc, [ts]) for sc, tss in sorted(contexts.items()) for ts in sorted(tss)]
    assert len(storage) < 120
    received, _, final, _ = c_get(
        qr.srv, STUDY_GET, ident("IMAGE", SOPInstanceUID="\\".join(sorted(by_uid))), storage)
    assert final[0].Status == 0x0000, final
    assert set(received) == set(by_uid)
    for sop, data in received.items():
        assert data == qr.stored(sop), sop


def test_get_reencodes_uncompressed_and_transcodes_compressed(qr):
    jpeg = next(p for p in qr.test_files
                if pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID
                == JPEGBaseline8Bit)
    jpeg_ds = pydicom.dcmread(jpeg, stop_before_pixels=True)
    ct = uid("inst", 1, 1, 1, 4)
    sops = "\\".join([ct, str(jpeg_ds.SOPInstanceUID)])
    storage = [(CTImageStorage, [ImplicitVRLittleEndian]),
               (str(jpeg_ds.SOPClassUID), [ExplicitVRLittleEndian])]
    received, _, final, _ = c_get(qr.srv, STUDY_GET, ident("IMAGE", SOPInstanceUID=sops),
                                  storage)
    status, _ = final
    assert status.Status == 0x0000
    assert status.NumberOfCompletedSuboperations == 2
    # the JPEG was decoded for a peer that accepts Explicit VR LE only (tests/interop/
    # test_retrieve_transcode.py covers every compressed syntax)
    got_jpeg = pydicom.dcmread(pydicom.filebase.DicomBytesIO(received[str(jpeg_ds.SOPInstanceUID)]),
                               force=True)
    got_jpeg.file_meta = pydicom.dataset.FileMetaDataset()
    got_jpeg.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    assert (got_jpeg.pixel_array == pydicom.dcmread(jpeg).pixel_array).all()
    # the Explicit VR LE CT was re-encoded to Implicit VR LE: same elements, same values
    got = pydicom.dcmread(pydicom.filebase.DicomBytesIO(received[ct]), force=True)
    got.file_meta = pydicom.dataset.FileMetaDataset()
    got.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    want = pydicom.dcmread(qr.paths[3])
    assert [e.tag for e in got] == [e.tag for e in want]
    assert got.PixelData == want.PixelData and got.PatientName == want.PatientName


def test_get_everything_failed_is_a702_with_list(qr):
    # peer stores nothing: every C-STORE-RSP is a failure
    received, _, final, _ = c_get(
        qr.srv, STUDY_GET, ident("SERIES", SeriesInstanceUID=SERIES[0]), CT_AS_STORED,
        store_status=0xA700)
    status, identifier = final
    assert status.Status == 0xA702
    assert status.NumberOfFailedSuboperations == 10
    assert len(identifier.FailedSOPInstanceUIDList) == 10
    assert len(received) == 10


def test_get_without_scp_role_or_context_fails_every_suboperation(qr):
    ae = AE(ae_title="PYGET")
    ae.add_requested_context(STUDY_GET)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)  # no SCP role proposed
    assoc = ae.associate("127.0.0.1", qr.srv.dicom_port, ae_title=qr.srv.ae_title)
    assert assoc.is_established
    results = list(assoc.send_c_get(ident("SERIES", SeriesInstanceUID=SERIES[1]), STUDY_GET))
    assoc.release()
    status, identifier = results[-1]
    assert status.Status == 0xA702 and status.NumberOfFailedSuboperations == 10
    assert len(identifier.FailedSOPInstanceUIDList) == 10


@pytest.mark.parametrize("identifier,code", [
    (ident("STUDY"), 0xA900),                       # unique key missing
    (ident("STUDY", StudyInstanceUID=""), 0xA900),  # unique key without a value
    (ident("WARD", StudyInstanceUID=STUDY), 0xA900),
    (ident("STUDY", StudyInstanceUID=STUDY, StudyDate="2026-"), 0xC000),
])
def test_get_bad_identifiers(qr, identifier, code):
    _, pendings, final, _ = c_get(qr.srv, STUDY_GET, identifier, CT_AS_STORED)
    assert final[0].Status == code and not pendings


def test_get_nothing_matches_is_success_with_zero_counts(qr):
    received, _, final, _ = c_get(qr.srv, STUDY_GET, ident("STUDY", StudyInstanceUID="1.2.3"),
                                  CT_AS_STORED)
    assert final[0].Status == 0 and final[0].NumberOfCompletedSuboperations == 0
    assert not received


def test_get_cancel_midway(qr):
    received, pendings, final, _ = c_get(
        qr.srv, STUDY_GET, ident("STUDY", StudyInstanceUID=STUDY), CT_AS_STORED,
        cancel_after=2)
    assert len(pendings) >= 2
    status, _ = final
    assert status.Status == 0xFE00
    assert status.NumberOfRemainingSuboperations > 0
    done = status.NumberOfCompletedSuboperations
    assert done + status.NumberOfRemainingSuboperations == 20
    assert 2 <= done < 20 and len(received) == done
    # the association and the server still work afterwards
    received, _, final, _ = c_get(qr.srv, STUDY_GET, ident("SERIES", SeriesInstanceUID=SERIES[0]),
                                  CT_AS_STORED)
    assert final[0].Status == 0 and len(received) == 10


# ------------------------------------------------------------------------------ C-GET getscu
def test_getscu_study_root_study_level(qr, tmp_path):
    out = tmp_path / "get"
    out.mkdir()
    proc = subprocess.run(
        [GETSCU, "-v", "-S", "-aec", qr.srv.ae_title, "-od", str(out), "+B",
         "127.0.0.1", str(qr.srv.dicom_port),
         "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={STUDY}"],
        capture_output=True, text=True, timeout=60)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    files = sorted(out.iterdir())
    assert len(files) == 20, log
    for f in files:
        assert dataset_bytes(f) == qr.stored(sop_uid(f))


def test_getscu_patient_root_series_level(qr, tmp_path):
    out = tmp_path / "get"
    out.mkdir()
    proc = subprocess.run(
        [GETSCU, "-P", "-aec", qr.srv.ae_title, "-od", str(out), "127.0.0.1",
         str(qr.srv.dicom_port), "-k", "QueryRetrieveLevel=SERIES", "-k", "PatientID=PAT00001",
         "-k", f"StudyInstanceUID={STUDY}", "-k", f"SeriesInstanceUID={SERIES[0]}"],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    files = sorted(out.iterdir())
    assert len(files) == 10
    for f in files:
        assert dataset_bytes(f) == qr.stored(sop_uid(f))


# ------------------------------------------------------------------------------------ C-MOVE
def test_movescu_to_storescp(qr, tmp_path):
    out = tmp_path / "dest"
    out.mkdir()
    dest = subprocess.Popen([STORESCP, "-aet", "STORESCP", "-od", str(out), "+B",
                             str(qr.dest_port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(0.3)
        proc = subprocess.run(
            [MOVESCU, "-v", "-S", "-aec", qr.srv.ae_title, "-aem", "STORESCP", "127.0.0.1",
             str(qr.srv.dicom_port), "-k", "QueryRetrieveLevel=STUDY",
             "-k", f"StudyInstanceUID={STUDY}"],
            capture_output=True, text=True, timeout=60)
        log = proc.stdout + proc.stderr
        assert proc.returncode == 0, log
        assert re.search(r"Received Final Move Response \(Success\)", log), log
        files = sorted(out.iterdir())
        assert len(files) == 20, log
        for f in files:
            assert dataset_bytes(f) == qr.stored(sop_uid(f))
            meta = pydicom.dcmread(f, stop_before_pixels=True).file_meta
            assert meta.SourceApplicationEntityTitle.strip() == qr.srv.ae_title
    finally:
        dest.terminate()
        dest.wait(10)


def c_move(srv, model, destination: str, identifier: Dataset):
    ae = AE(ae_title="PYMOVE")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(model)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", srv.dicom_port, ae_title=srv.ae_title)
    assert assoc.is_established
    results = list(assoc.send_c_move(identifier, destination, model))
    echo = assoc.send_c_echo()
    assoc.release()
    return results, echo


def test_move_to_unknown_destination_is_a801(qr):
    results, echo = c_move(qr.srv, STUDY_MOVE, "NOWHERE",
                           ident("STUDY", StudyInstanceUID=STUDY))
    assert [s.Status for s, _ in results] == [0xA801]
    assert echo.Status == 0


def test_move_to_destination_down_fails_and_server_stays_healthy(qr):
    results, echo = c_move(qr.srv, PATIENT_MOVE, "DOWN",
                           ident("SERIES", PatientID="PAT00001", StudyInstanceUID=STUDY,
                                 SeriesInstanceUID=SERIES[1]))
    status, identifier = results[-1]
    assert len(results) == 1
    assert status.Status == 0xA702
    assert status.NumberOfFailedSuboperations == 10
    assert status.NumberOfCompletedSuboperations == 0
    assert len(identifier.FailedSOPInstanceUIDList) == 10
    assert echo.Status == 0
