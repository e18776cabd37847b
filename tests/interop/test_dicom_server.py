"""The DICOM server against real peers: echo, concurrency, limits, timeouts and bad input."""

from __future__ import annotations

import socket
import struct
import subprocess
import threading
import time

import pydicom
import pytest
from pynetdicom import build_context
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE
from pynetdicom.sop_class import CTImageStorage, Verification

from hpacs.store.hot import HotStore
from tests.conftest import require_tool, start_server, wait_for
from tests.factories import make_ct, write
from tests.interop.helpers import associate, open_index

pytestmark = pytest.mark.interop

CT = build_context(CTImageStorage, "1.2.840.10008.1.2.1")


def test_echoscu_and_pynetdicom_echo(server):
    echoscu = require_tool("echoscu")
    run = subprocess.run([echoscu, "-aec", "HPACS", "127.0.0.1", str(server.dicom_port)],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    assoc = associate(server, [build_context(Verification)])
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0
    assoc.release()


def test_healthz_and_metrics(server):
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{server.http_port}/healthz") as r:
        assert r.status == 200
        assert b'"status": "ok"' in r.read()
    assoc = associate(server, [CT])
    assert assoc.send_c_store(make_ct()).Status == 0
    assoc.release()
    with urllib.request.urlopen(f"http://127.0.0.1:{server.http_port}/metrics") as r:
        text = r.read().decode()
    assert 'hpacs_instances_total{outcome="stored"} 1.0' in text
    assert 'hpacs_associations_total{result="accepted"} 1.0' in text


def test_wrong_called_ae_is_rejected(server):
    assoc = associate(server, [CT], called="NOT_HPACS")
    assert assoc.is_rejected
    wait_for(lambda: '"reason": 7' in server.log())  # called AE title not recognized


def test_unknown_sop_class_context_is_rejected_but_others_accepted(server):
    unknown = build_context("1.2.826.0.1.3680043.10.1488.99.12345", "1.2.840.10008.1.2.1")
    assoc = associate(server, [unknown, CT])
    assert assoc.is_established
    results = {cx.abstract_syntax: cx.result for cx in assoc.rejected_contexts}
    assert results == {"1.2.826.0.1.3680043.10.1488.99.12345": 0x03}
    assert assoc.send_c_store(make_ct()).Status == 0
    assoc.release()


def test_eight_concurrent_associations_index_every_instance_once(server, tmp_path):
    per_assoc, assocs = 25, 8
    statuses: list[int] = []
    errors: list[BaseException] = []

    def send(k: int) -> None:
        try:
            assoc = associate(server, [CT])
            for n in range(per_assoc):
                statuses.append(assoc.send_c_store(make_ct(patient=k, study=k, number=n)).Status)
            assoc.release()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(k,)) for k in range(assocs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert statuses == [0] * (per_assoc * assocs)
    assert server.stop() == 0
    db = open_index(server.data_dir)
    try:
        assert db.count("instance") == per_assoc * assocs
        assert db.count("study") == assocs
        assert db.count("patient") == assocs
        for k in range(assocs):
            study = make_ct(patient=k, study=k).StudyInstanceUID
            attrs = db.get_study(study).query_attrs()
            assert attrs["NumberOfStudyRelatedInstances"] == per_assoc
            assert len(db.series_instances(make_ct(patient=k, study=k).SeriesInstanceUID)) == \
                per_assoc
    finally:
        db.close()


def test_association_limit_rejects_the_extra_one(tmp_path):
    # raw sockets, not pynetdicom: its requestor now and then loses the A-ASSOCIATE-RJ
    srv = start_server(tmp_path / "data", "--max-associations", "2")
    try:
        first, second = _raw_associate(srv.dicom_port), _raw_associate(srv.dicom_port)
        third, header = _raw_request(srv.dicom_port)
        assert header[0] == 0x03, header  # A-ASSOCIATE-RJ
        body = _recv_exact(third, struct.unpack(">I", header[2:6])[0])
        # PS3.8 9.3.4: result 2 (transient), source 3 (presentation), reason 2 (local limit)
        assert tuple(body[1:4]) == (2, 3, 2), body
        third.close()
        _raw_release(first)
        wait_for(lambda: associate_and_release(srv))
        _raw_release(second)
    finally:
        assert srv.stop() == 0


def associate_and_release(srv) -> bool:
    assoc = associate(srv, [CT])
    ok = assoc.is_established
    if ok:
        assoc.release()
    return ok


def _raw_request(port: int, called: str = "HPACS") -> tuple[socket.socket, bytes]:
    """Open a socket, send an A-ASSOCIATE-RQ (pynetdicom's PDU encoder) and read the
    6-byte header of the answer."""
    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title = "RAW"
    primitive.called_ae_title = called
    cx = build_context(Verification)
    cx.context_id = 1
    cx2 = build_context(CTImageStorage, "1.2.840.10008.1.2.1")
    cx2.context_id = 3
    primitive.presentation_context_definition_list = [cx, cx2]
    from pynetdicom.pdu_primitives import MaximumLengthNotification

    ml = MaximumLengthNotification()
    ml.maximum_length_received = 16384
    primitive.user_information = [ml]
    from pynetdicom.pdu_primitives import ImplementationClassUIDNotification

    ic = ImplementationClassUIDNotification()
    ic.implementation_class_uid = "1.2.3.4"
    primitive.user_information.append(ic)
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(pdu.encode())
    return sock, _recv_exact(sock, 6)


def _raw_associate(port: int, called: str = "HPACS") -> socket.socket:
    """Open a socket and get an association accepted."""
    sock, header = _raw_request(port, called)
    assert header[0] == 0x02, header  # A-ASSOCIATE-AC
    _recv_exact(sock, struct.unpack(">I", header[2:6])[0])
    return sock


def _raw_release(sock: socket.socket) -> None:
    """A-RELEASE-RQ, wait for the A-RELEASE-RP, close."""
    sock.sendall(b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00")
    header = _recv_exact(sock, 6)
    assert header[0] == 0x06, header  # A-RELEASE-RP
    _recv_exact(sock, struct.unpack(">I", header[2:6])[0])
    sock.close()


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def _expect_abort(sock: socket.socket) -> bytes:
    header = _recv_exact(sock, 6)
    assert header[0] == 0x07, header  # A-ABORT
    body = _recv_exact(sock, 4)
    return body


def _echo_works(server) -> bool:
    assoc = associate(server, [build_context(Verification)])
    ok = assoc.is_established and assoc.send_c_echo().Status == 0
    assoc.release()
    return ok


def test_garbage_before_association_gets_abort_and_server_keeps_serving(server):
    sock = socket.create_connection(("127.0.0.1", server.dicom_port), timeout=10)
    sock.sendall(b"\x42\x00\x00\x00\x00\x04GARBAGE!")
    body = _expect_abort(sock)
    assert body[2] == 2  # source: service provider
    sock.close()
    assert _echo_works(server)
    assert "assoc.protocol_error" in server.log()


def test_oversized_pdu_is_aborted_from_its_header(server):
    sock = _raw_associate(server.dicom_port)
    # a P-DATA-TF announcing 1 GiB: refused before any of it is buffered
    sock.sendall(b"\x04\x00" + struct.pack(">I", 1 << 30) + b"\x00" * 64)
    body = _expect_abort(sock)
    assert body[2] == 2
    sock.close()
    assert _echo_works(server)


def test_malformed_pdata_is_aborted(server):
    sock = _raw_associate(server.dicom_port)
    # PDV item whose length runs past its PDU
    sock.sendall(b"\x04\x00" + struct.pack(">I", 10) + struct.pack(">I", 200) + b"\x01\x03"
                 + b"\x00" * 4)
    _expect_abort(sock)
    sock.close()
    assert _echo_works(server)


def _pdata(context_id: int, control: int, payload: bytes) -> bytes:
    item = struct.pack(">IBB", len(payload) + 2, context_id, control) + payload
    return b"\x04\x00" + struct.pack(">I", len(item)) + item


def _store_command(sop_uid: str, message_id: int = 1) -> bytes:
    from hpacs.dimse import commands as c

    return c.encode_command({
        c.COMMAND_FIELD: 1, c.MESSAGE_ID: message_id, c.PRIORITY: 0,
        c.COMMAND_DATA_SET_TYPE: 0, c.AFFECTED_SOP_CLASS_UID: CTImageStorage,
        c.AFFECTED_SOP_INSTANCE_UID: sop_uid})


def _read_response(sock: socket.socket) -> dict:
    """The next DIMSE response (one PDU, one command PDV), decoded by pynetdicom."""
    from io import BytesIO

    from pynetdicom.dsutils import decode

    header = _recv_exact(sock, 6)
    assert header[0] == 0x04, header
    body = _recv_exact(sock, struct.unpack(">I", header[2:6])[0])
    assert body[5] & 0x03 == 0x03  # one last command fragment
    return decode(BytesIO(body[6:]), True, True)


def _read_response_status(sock: socket.socket) -> tuple[int, str]:
    rsp = _read_response(sock)
    return rsp.Status, rsp.get("ErrorComment", "")


def _dataset_bytes(ds: pydicom.Dataset) -> bytes:
    from pynetdicom.dsutils import encode

    return encode(ds, False, True)  # explicit VR little endian


@pytest.fixture
def raw_assoc(server):
    sock = _raw_associate(server.dicom_port)
    yield sock
    sock.close()


def _no_partial_files(server) -> None:
    """Temp files of refused or broken transfers are removed (by the I/O thread, right after
    the answer); nothing of them ever reaches the hot store."""
    wait_for(lambda: list((server.data_dir / "tmp").iterdir()) == [], timeout=5)


def test_truncated_dataset_is_refused_and_nothing_is_kept(server, raw_assoc):
    ds = make_ct(number=7)
    raw = _dataset_bytes(ds)
    raw_assoc.sendall(_pdata(3, 0x03, _store_command(ds.SOPInstanceUID)))
    raw_assoc.sendall(_pdata(3, 0x00, raw[:1000]) + _pdata(3, 0x02, raw[1000:len(raw) - 10]))
    status, comment = _read_response_status(raw_assoc)
    assert status == 0xC000
    assert "truncated" in comment or "malformed" in comment
    _no_partial_files(server)
    rel = HotStore.relative_path(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    assert not (server.data_dir / rel).exists()
    # the association is still usable
    raw_assoc.sendall(_pdata(3, 0x03, _store_command(ds.SOPInstanceUID, 2)))
    raw_assoc.sendall(_pdata(3, 0x02, raw))
    assert _read_response_status(raw_assoc)[0] == 0
    assert (server.data_dir / rel).is_file()


def test_dataset_that_does_not_match_its_command_is_refused(server, raw_assoc):
    ds = make_ct(number=8)
    raw_assoc.sendall(_pdata(3, 0x03, _store_command("1.2.3.4.5.6.7.8")))
    raw_assoc.sendall(_pdata(3, 0x02, _dataset_bytes(ds)))
    rsp = _read_response(raw_assoc)
    assert rsp.Status == 0xA900
    assert "differs" in rsp.ErrorComment
    assert rsp.OffendingElement == 0x00080018  # SOP Instance UID
    assert rsp.AffectedSOPInstanceUID == "1.2.3.4.5.6.7.8"
    _no_partial_files(server)


def test_dataset_without_sop_instance_uid_is_refused(server, raw_assoc):
    ds = make_ct(number=9)
    uid = ds.SOPInstanceUID
    del ds.SOPInstanceUID
    raw_assoc.sendall(_pdata(3, 0x03, _store_command(uid)))
    raw_assoc.sendall(_pdata(3, 0x02, _dataset_bytes(ds)))
    status, comment = _read_response_status(raw_assoc)
    assert status == 0xC000
    assert "SOPInstanceUID" in comment
    _no_partial_files(server)


def test_abort_in_the_middle_of_a_dataset_leaves_nothing(server, raw_assoc):
    ds = make_ct(number=10, size=256)
    raw = _dataset_bytes(ds)
    raw_assoc.sendall(_pdata(3, 0x03, _store_command(ds.SOPInstanceUID)))
    raw_assoc.sendall(_pdata(3, 0x00, raw[:5000]))
    time.sleep(0.2)
    raw_assoc.sendall(b"\x07\x00\x00\x00\x00\x04\x00\x00\x00\x00")  # A-ABORT
    raw_assoc.close()
    wait_for(lambda: "assoc.aborted_by_peer" in server.log())
    _no_partial_files(server)
    assert _echo_works(server)


def test_connection_dropped_mid_dataset_leaves_nothing(server, raw_assoc):
    ds = make_ct(number=11, size=256)
    raw = _dataset_bytes(ds)
    raw_assoc.sendall(_pdata(3, 0x03, _store_command(ds.SOPInstanceUID)))
    raw_assoc.sendall(_pdata(3, 0x00, raw[:5000]))
    raw_assoc.close()
    time.sleep(0.3)
    _no_partial_files(server)
    assert _echo_works(server)


def test_artim_closes_a_silent_connection(tmp_path):
    srv = start_server(tmp_path / "data", env={"HPACS_DICOM__ACSE_TIMEOUT": "0.5"})
    try:
        sock = socket.create_connection(("127.0.0.1", srv.dicom_port), timeout=10)
        started = time.monotonic()
        assert sock.recv(100) == b""  # closed by the server, nothing sent
        assert time.monotonic() - started < 5
        assert "assoc.artim_timeout" in srv.log()
    finally:
        assert srv.stop() == 0


def test_idle_association_is_aborted(tmp_path):
    srv = start_server(tmp_path / "data", env={"HPACS_DICOM__IDLE_TIMEOUT": "0.5"})
    try:
        sock = _raw_associate(srv.dicom_port)
        _expect_abort(sock)
        assert "assoc.idle_timeout" in srv.log()
    finally:
        assert srv.stop() == 0


def test_duplicate_policy_reject(tmp_path):
    srv = start_server(tmp_path / "data", "--duplicate-policy", "reject")
    try:
        assoc = associate(srv, [CT])
        ds = make_ct(number=1)
        assert assoc.send_c_store(ds).Status == 0
        second = assoc.send_c_store(ds)
        assert second.Status == 0xC000
        assert "duplicate" in second.ErrorComment
        assoc.release()
    finally:
        assert srv.stop() == 0


def test_duplicate_policy_replace_moves_a_resent_instance(tmp_path):
    srv = start_server(tmp_path / "data", "--duplicate-policy", "replace")
    try:
        assoc = associate(srv, [CT])
        ds = make_ct(number=1)
        assert assoc.send_c_store(ds).Status == 0
        moved = make_ct(number=1, study=2)
        moved.SOPInstanceUID = ds.SOPInstanceUID
        assert assoc.send_c_store(moved).Status == 0
        assoc.release()
    finally:
        assert srv.stop() == 0
    old = HotStore.relative_path(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    new = HotStore.relative_path(moved.StudyInstanceUID, moved.SeriesInstanceUID,
                                 ds.SOPInstanceUID)
    assert not (srv.data_dir / old).exists()
    assert (srv.data_dir / new).is_file()
    db = open_index(srv.data_dir)
    try:
        assert db.count("instance") == 1
        assert db.get_instance(ds.SOPInstanceUID).path == new
        assert db.get_study(ds.StudyInstanceUID) is None
    finally:
        db.close()


def test_sigterm_lets_the_instance_in_flight_finish(tmp_path):
    srv = start_server(tmp_path / "data")
    ds = make_ct(number=1, size=512)
    raw = _dataset_bytes(ds)
    sock = _raw_associate(srv.dicom_port)
    sock.sendall(_pdata(3, 0x03, _store_command(ds.SOPInstanceUID)))
    sock.sendall(_pdata(3, 0x00, raw[:10000]))
    time.sleep(0.2)
    srv.proc.terminate()
    time.sleep(0.2)
    sock.sendall(_pdata(3, 0x02, raw[10000:]))
    assert _read_response_status(sock)[0] == 0
    assert srv.proc.wait(30) == 0
    rel = HotStore.relative_path(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    assert (srv.data_dir / rel).is_file()


def test_disk_full_answers_out_of_resources_and_stays_consistent(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)], check=True)
    try:
        srv = start_server(mount / "data", env={"HPACS_INDEX__MAP_SIZE_GB": "1"})
        try:
            assoc = associate(srv, [CT, build_context(Verification)])
            statuses = []
            acked = []
            for n in range(80):
                ds = make_ct(number=n, size=256)  # ~130 KB each: the disk fills up
                status = assoc.send_c_store(ds).Status
                statuses.append(status)
                if status == 0:
                    acked.append(ds)
            assert 0xA700 in statuses
            assert acked
            assert assoc.send_c_echo().Status == 0  # still serving
            assoc.release()
        finally:
            srv.stop()
        assert list((srv.data_dir / "tmp").iterdir()) == []
        for ds in acked:
            rel = HotStore.relative_path(ds.StudyInstanceUID, ds.SeriesInstanceUID,
                                         ds.SOPInstanceUID)
            assert pydicom.dcmread(srv.data_dir / rel).SOPInstanceUID == ds.SOPInstanceUID
        assert "store.write_failed" in srv.log() or "store.index_failed" in srv.log()
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_storescu_file_sent_twice_with_keep_policy(server, tmp_path):
    storescu = require_tool("storescu")
    path = write(make_ct(number=3), tmp_path / "in")
    for _ in range(2):
        run = subprocess.run([storescu, "-aec", "HPACS", "127.0.0.1", str(server.dicom_port),
                              str(path)], capture_output=True, text=True, timeout=30)
        assert run.returncode == 0, run.stderr
    assert "store.duplicate_kept" in server.log()



def test_reading_pauses_for_the_disk_and_resumes(tmp_path):
    """Fragments larger than INLINE_MAX are written by an I/O thread; with a 1-byte disk
    backlog each one pauses reading until that thread caught up: the instances must still
    arrive whole. (A 4 MiB maximum PDU lets the peer send 2 MB fragments.)"""
    import urllib.request

    srv = start_server(tmp_path / "data", env={"HPACS_DICOM__DISK_BACKLOG_BYTES": "1",
                                               "HPACS_DICOM__MAX_PDU_LENGTH": str(4 << 20)})
    try:
        assoc = associate(srv, [CT], max_pdu=16384)
        big = [make_ct(number=n, size=1024) for n in range(3)]
        assert [assoc.send_c_store(ds).Status for ds in big] == [0, 0, 0]
        assoc.release()
        with urllib.request.urlopen(f"http://127.0.0.1:{srv.http_port}/metrics") as r:
            text = r.read().decode()
        import re

        pauses = float(re.search(r"^hpacs_disk_pauses_total (\S+)$", text, re.M).group(1))
        assert pauses > 0
    finally:
        assert srv.stop() == 0
    for ds in big:
        rel = HotStore.relative_path(ds.StudyInstanceUID, ds.SeriesInstanceUID,
                                     ds.SOPInstanceUID)
        assert pydicom.dcmread(srv.data_dir / rel).PixelData == ds.PixelData
