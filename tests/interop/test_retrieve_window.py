"""The asynchronous operations window on real peers: pynetdicom proposing it, C-GET with up to
8 C-STORE sub-operations outstanding (refusals, C-CANCEL, abort mid-window), C-MOVE and
``hpacs send`` from one hpacs to another (both real servers), a pynetdicom destination that
answers no window, and the C-STORE SCP facing more outstanding stores than it granted."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.pdu_primitives import AsynchronousOperationsWindowNegotiation
from pynetdicom.presentation import build_role
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from benchmarks.discard_receiver import MAX_PDU, Receiver
from benchmarks.discard_receiver import identifier as encode_identifier
from hpacs.dimse import commands as cmd
from hpacs.net.storage_scu import StorageSCU, StoredInstance, open_instance
from hpacs.ul import (
    AcceptorPolicy,
    AssociateRequest,
    Connection,
    PresentationContext,
    Role,
    RoleSelection,
)
from tests.conftest import free_port, start_server
from tests.factories import make_ct, uid, write
from tests.interop.helpers import (
    dataset_bytes,
    open_index,
    remotes_config,
    send_files,
    sop_uid_of,
)
from tests.test_cli import hpacs

STUDY_GET = StudyRootQueryRetrieveInformationModelGet
STUDY_MOVE = StudyRootQueryRetrieveInformationModelMove
STUDY = uid("study", 9, 1)
N = 20
WINDOW = 8
SERVER_WINDOW = 16  # the config default


class Setup:
    def __init__(self, srv, dest, py_port: int, drop_port: int, paths: list[Path]) -> None:
        self.srv = srv
        self.dest = dest
        self.py_port = py_port
        self.drop_port = drop_port
        self.paths = paths
        self.uids = [sop_uid_of(p) for p in paths]


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    base = tmp_path_factory.mktemp("window")
    dest = start_server(base / "dest", ae_title="HPACSB")
    py_port, drop_port = free_port(), free_port()
    config = remotes_config(base / "hpacs.toml", {"HPACSB": dest.dicom_port, "PYSCP": py_port,
                                                   "DROPPER": drop_port})
    srv = start_server(base / "data", "--config", str(config))
    paths = [write(make_ct(9, 1, se, n, size=16), base / "files")
             for se in (1, 2) for n in range(1, N // 2 + 1)]
    assert set(send_files(srv, paths).values()) == {0}
    yield Setup(srv, dest, py_port, drop_port, paths)
    for server in (srv, dest):
        assert server.stop() == 0, server.log()
        assert "internal_error" not in server.log()


def study_identifier(study: str = STUDY) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = study
    return ds


def window_item(invoked: int, performed: int) -> AsynchronousOperationsWindowNegotiation:
    item = AsynchronousOperationsWindowNegotiation()
    item.maximum_number_operations_invoked = invoked
    item.maximum_number_operations_performed = performed
    return item


def pyget_assoc(srv, on_store, window: tuple[int, int] | None, timeout: float = 30):
    ae = AE(ae_title="PYGET")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.add_requested_context(STUDY_GET)
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    ext = [build_role(CTImageStorage, scp_role=True)]
    if window is not None:
        ext.append(window_item(*window))
    assoc = ae.associate("127.0.0.1", srv.dicom_port, ae_title=srv.ae_title, ext_neg=ext,
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    return assoc


MSG_ID = 21


def pyget(srv, on_store, window: tuple[int, int] | None = (1, WINDOW)):
    """(pending responses, final (status, identifier), C-ECHO status after) of one C-GET."""
    assoc = pyget_assoc(srv, on_store, window)
    pendings, final = [], None
    for rsp, identifier in assoc.send_c_get(study_identifier(), STUDY_GET, msg_id=MSG_ID):
        assert rsp is not None, "no response"
        if rsp.Status == 0xFF00:
            pendings.append(rsp)
        else:
            final = (rsp, identifier)
    echo = assoc.send_c_echo()
    assoc.release()
    return pendings, final, echo.Status


def test_pynetdicom_proposal_is_answered(ws):
    for proposed, answered in (((5, 40), (5, SERVER_WINDOW)), ((0, 0), (16, 16)),
                               ((1, WINDOW), (1, WINDOW)), (None, None)):
        ae = AE(ae_title="PYWIN")
        ae.add_requested_context(Verification)
        ext = [window_item(*proposed)] if proposed else []
        assoc = ae.associate("127.0.0.1", ws.srv.dicom_port, ae_title=ws.srv.ae_title,
                             ext_neg=ext)
        assert assoc.is_established
        items = [i for i in assoc.acceptor.user_information
                 if isinstance(i, AsynchronousOperationsWindowNegotiation)]
        got = [(i.maximum_number_operations_invoked, i.maximum_number_operations_performed)
               for i in items]
        assert got == ([answered] if answered else [])  # answered only when proposed
        assert assoc.acceptor.asynchronous_operations == (answered or (1, 1))
        assert assoc.send_c_echo().Status == 0
        assoc.release()


@pytest.mark.parametrize("window,outstanding", [((1, WINDOW), WINDOW), (None, 1)])
def test_get_keeps_the_window_outstanding(ws, window, outstanding):
    received: list[str] = []
    queued: list[int] = []

    def on_store(event):
        received.append(str(event.request.AffectedSOPInstanceUID))
        if len(received) == 1:
            time.sleep(0.5)  # while this one is unanswered, the server invokes the others
            queued.append(event.assoc.dimse.msg_queue.qsize())
        return 0x0000

    pendings, final, echo = pyget(ws.srv, on_store, window)
    status, _ = final
    assert status.Status == 0x0000 and status.NumberOfCompletedSuboperations == N
    assert status.NumberOfFailedSuboperations == status.NumberOfWarningSuboperations == 0
    assert sorted(received) == sorted(ws.uids)  # every instance, each once
    assert queued == [outstanding - 1]  # the C-STORE-RQs that came in behind the first
    assert echo == 0
    # one pending response per sub-operation without a window; under one, the sub-operations
    # answered together share one (PS3.4 C.4.3.3: pending responses are optional), the counts
    # of each exact and strictly advancing
    assert len(pendings) == N - 1 if outstanding == 1 else 1 <= len(pendings) <= N - 1
    remaining = [p.NumberOfRemainingSuboperations for p in pendings]
    assert remaining == sorted(set(remaining), reverse=True) and min(remaining) >= 1
    assert all(p.NumberOfCompletedSuboperations + p.NumberOfRemainingSuboperations == N
               for p in pendings)
    done = ws.srv.log().rsplit('"get.done"', 1)[1].split("\n")[0]
    assert f'"window": {outstanding}' in done
    # dicom.sendfile = "auto": data sets by sendfile only while several may be outstanding
    assert f'"sendfile": {N if outstanding > 1 else 0},' in done


def test_get_refusals_mid_window_are_listed_exactly(ws):
    refused = {ws.uids[i] for i in (2, 7, 8, 15)}
    received: list[str] = []

    def on_store(event):
        sop = str(event.request.AffectedSOPInstanceUID)
        received.append(sop)
        return 0xA700 if sop in refused else 0x0000

    _, final, echo = pyget(ws.srv, on_store)
    status, identifier = final
    assert status.Status == 0xB000
    assert status.NumberOfCompletedSuboperations == N - len(refused)
    assert status.NumberOfFailedSuboperations == len(refused)
    listed = identifier.FailedSOPInstanceUIDList
    assert set([listed] if isinstance(listed, str) else listed) == refused
    assert sorted(received) == sorted(ws.uids) and echo == 0


def test_get_cancel_mid_window_awaits_the_outstanding(ws):
    received: list[str] = []

    def on_store(event):
        received.append(str(event.request.AffectedSOPInstanceUID))
        if len(received) == 1:
            time.sleep(0.3)  # the window is full by now
            ctx = next(c.context_id for c in event.assoc.accepted_contexts
                       if c.abstract_syntax == STUDY_GET)
            event.assoc.send_c_cancel(MSG_ID, ctx)
        return 0x0000

    _, final, echo = pyget(ws.srv, on_store)
    status, _ = final
    assert status.Status == 0xFE00
    # no new sub-operation after the cancel; the 8 invoked before it were answered and count
    assert status.NumberOfCompletedSuboperations == WINDOW == len(received)
    assert status.NumberOfRemainingSuboperations == N - WINDOW
    assert status.NumberOfFailedSuboperations == 0 and echo == 0
    # the association's next C-GET runs in full
    _, final, _ = pyget(ws.srv, lambda event: 0x0000)
    assert final[0].Status == 0 and final[0].NumberOfCompletedSuboperations == N


def test_get_abort_mid_window_leaves_the_server_healthy(ws):
    received: list[str] = []
    assoc_box: list = []

    def on_store(event):
        received.append(str(event.request.AffectedSOPInstanceUID))
        if len(received) == 3:
            threading.Thread(target=assoc_box[0].abort).start()
            time.sleep(0.2)
        return 0x0000

    assoc = pyget_assoc(ws.srv, on_store, (1, WINDOW), timeout=3)  # pynetdicom's wait after
    assoc_box.append(assoc)
    responses = list(assoc.send_c_get(study_identifier(), STUDY_GET, msg_id=MSG_ID))
    assert assoc.is_aborted
    # no final response (pynetdicom yields an empty status once aborted)
    assert all(r is None or r.get("Status", 0xFF00) == 0xFF00 for r, _ in responses)
    before = ws.srv.log().count('"assoc.aborted_by_peer"')
    _, final, echo = pyget(ws.srv, lambda event: 0x0000)
    assert final[0].Status == 0 and final[0].NumberOfCompletedSuboperations == N
    assert echo == 0 and before >= 1


def _index_has(data_dir: Path, uids: list[str]) -> list[str]:
    db = open_index(data_dir)
    try:
        return [u for u in uids if db.get_instance(u) is None]
    finally:
        db.close()


def test_move_to_a_second_hpacs_with_the_window(ws):
    ae = AE(ae_title="PYMOVE")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(STUDY_MOVE)
    assoc = ae.associate("127.0.0.1", ws.srv.dicom_port, ae_title=ws.srv.ae_title)
    assert assoc.is_established
    results = list(assoc.send_c_move(study_identifier(), "HPACSB", STUDY_MOVE))
    assoc.release()
    status, _ = results[-1]
    assert status.Status == 0 and status.NumberOfCompletedSuboperations == N
    # under the window, the sub-operations answered together share one pending response
    # (optional, PS3.4 C.4.2.1.5), each with exact, advancing counts
    pendings = [r for r, _ in results[:-1]]
    assert pendings and all(r.Status == 0xFF00 for r in pendings) and len(pendings) <= N - 1
    remaining = [r.NumberOfRemainingSuboperations for r in pendings]
    assert remaining == sorted(set(remaining), reverse=True) and min(remaining) >= 1
    assert all(r.NumberOfCompletedSuboperations + r.NumberOfRemainingSuboperations == N
               for r in pendings)
    done = ws.srv.log().rsplit('"move.done"', 1)[1].split("\n")[0]
    assert f'"window": {SERVER_WINDOW}' in done
    assert f'"sendfile": {N},' in done  # "auto" under the granted window
    # acknowledged means durable and indexed on the destination, bytes unchanged
    assert _index_has(ws.dest.data_dir, ws.uids) == []
    from tests.interop.helpers import stored_dataset_bytes
    for path in ws.paths:
        assert stored_dataset_bytes(ws.dest.data_dir, sop_uid_of(path)) == dataset_bytes(path)


def test_move_to_pynetdicom_answering_no_window_gets_everything(ws):
    got: list[str] = []

    def on_store(event):
        got.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    ended: list[str] = []
    scp = AE(ae_title="PYSCP")
    scp.add_supported_context(CTImageStorage, [ExplicitVRLittleEndian])
    server = scp.start_server(("127.0.0.1", ws.py_port), block=False,
                              evt_handlers=[(evt.EVT_C_STORE, on_store),
                                            (evt.EVT_RELEASED, lambda e: ended.append("release")),
                                            (evt.EVT_ABORTED, lambda e: ended.append("abort"))])
    try:
        ae = AE(ae_title="PYMOVE")
        ae.add_requested_context(STUDY_MOVE)
        assoc = ae.associate("127.0.0.1", ws.srv.dicom_port, ae_title=ws.srv.ae_title)
        results = list(assoc.send_c_move(study_identifier(), "PYSCP", STUDY_MOVE))
        assoc.release()
        deadline = time.monotonic() + 10
        while not ended and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        server.shutdown()
    assert results[-1][0].Status == 0 and sorted(got) == sorted(ws.uids)
    # one C-STORE at a time: a pending response after each sub-operation
    assert [r.NumberOfRemainingSuboperations for r, _ in results[:-1]] == list(range(N - 1, 0, -1))
    done = ws.srv.log().rsplit('"move.done"', 1)[1].split("\n")[0]
    assert '"window": 1' in done
    # the sub-association is released (not aborted) after the final response went out
    assert '"released_after": 1' in done and ended == ["release"]


def test_hpacs_send_to_hpacs_with_the_window(ws, tmp_path):
    paths = [write(make_ct(9, 2, 1, n, size=16), tmp_path / "files") for n in range(1, 13)]
    config = tmp_path / "send.toml"
    config.write_text(f"[dicom]\nasync_window = {WINDOW}\n")
    run = hpacs("send", "--config", str(config), "--to",
                f"HPACSB@127.0.0.1:{ws.dest.dicom_port}", "--no-progress", *map(str, paths))
    assert run.returncode == 0, run.stdout + run.stderr
    assert re.search(r"sent 12, failed 0 \(of 12 instances", run.stdout), run.stdout
    assert f"up to {WINDOW} C-STOREs outstanding" in run.stdout
    assert _index_has(ws.dest.data_dir, [sop_uid_of(p) for p in paths]) == []


def _stored(path: Path) -> StoredInstance:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return StoredInstance(str(ds.SOPClassUID), str(ds.SOPInstanceUID),
                          str(ds.file_meta.TransferSyntaxUID), path)


async def _store_windowed(port: int, items: list[StoredInstance], window: int,
                          durable_check) -> tuple[int, list[int]]:
    """Invoke every store at once (up to ``len(items)`` outstanding whatever was granted);
    each response is checked against the destination's index the moment it arrives."""
    scu = StorageSCU("127.0.0.1", port, called_ae="HPACSB", calling_ae="WINSCU",
                     contexts=[(CTImageStorage, (ExplicitVRLittleEndian,))],
                     async_window=window)
    await scu.connect()
    try:
        granted = scu.window
        responses = []
        for item in items:
            opened = await open_instance(item, ExplicitVRLittleEndian)
            responses.append(await scu.invoke(item, 1, opened))
            opened.close()

        async def checked(item, response):
            code = await response
            durable_check(item.sop_instance_uid)
            return code

        codes = await asyncio.gather(*(checked(i, r) for i, r in zip(items, responses,
                                                                       strict=True)))
    finally:
        await scu.release()
    return granted, list(codes)


@pytest.mark.parametrize("window,count", [(WINDOW, WINDOW), (1, 10)])
def test_store_scp_answers_outstanding_stores_once_durable(ws, tmp_path, window, count):
    paths = [write(make_ct(9, 3 + window, 1, n, size=16), tmp_path / "files")
             for n in range(1, count + 1)]
    exceeded = ws.dest.log().count('"store.window_exceeded"')
    items = [_stored(p) for p in paths]
    db = open_index(ws.dest.data_dir)
    seen: list[str] = []

    def durable(sop: str) -> None:
        assert db.get_instance(sop) is not None, f"{sop} answered before it was indexed"
        seen.append(sop)

    try:
        granted, codes = asyncio.run(_store_windowed(ws.dest.dicom_port, items, window,
                                                     durable))
    finally:
        db.close()
    assert codes == [0] * len(items) and sorted(seen) == sorted(i.sop_instance_uid
                                                                for i in items)
    assert granted == window
    log = ws.dest.log()
    if window == 1:  # 10 invoked at once where 1 was granted: served, and said once
        assert log.count('"store.window_exceeded"') == exceeded + 1
        assert '"window": 1' in log.rsplit('"store.window_exceeded"', 1)[1].split("\n")[0]
    else:  # as many as granted, all at once: within the window
        assert log.count('"store.window_exceeded"') == exceeded


class _Silent(Receiver):
    """A C-GET SCU on hpacs's own upper layer (window (1, 4)) that never answers one
    C-STORE sub-operation and answers every other at once."""

    def __init__(self, conn: Connection, silent_uid: str, identifier: bytes) -> None:
        super().__init__(conn, get_identifier=identifier)
        self.silent_uid = silent_uid
        self.answered: list[str] = []

    def _reply(self, context_id: int, response: bytes) -> None:
        sop = cmd.decode_command(response).get(cmd.AFFECTED_SOP_INSTANCE_UID, "")
        if sop == self.silent_uid:
            return
        self.answered.append(sop)
        super()._reply(context_id, response)


async def _get_with_a_silent_store(port: int, study: str,
                                   silent_uid: str) -> tuple[dict, float, list]:
    loop = asyncio.get_running_loop()
    conn = Connection(Role.REQUESTOR, max_pdu_length=MAX_PDU)
    receiver = _Silent(conn, silent_uid, encode_identifier(study_identifier(study)))
    transport, _ = await loop.create_connection(lambda: receiver, "127.0.0.1", port)
    t0 = time.perf_counter()
    transport.write(conn.request_association(AssociateRequest(
        called_ae="HPACS", calling_ae="SILENT", max_pdu_length=MAX_PDU,
        presentation_contexts=(PresentationContext(1, STUDY_GET, (ExplicitVRLittleEndian,)),
                               PresentationContext(3, CTImageStorage,
                                                   (ExplicitVRLittleEndian,))),
        role_selections=(RoleSelection(CTImageStorage, False, True),),
        async_ops_window=(1, 4))))
    try:
        final = await asyncio.wait_for(receiver.done, 30)
        seconds = time.perf_counter() - t0
        transport.write(conn.release_request())
        await asyncio.wait_for(receiver.closed, 5)
    finally:
        transport.close()
    return final, seconds, receiver.answered


def test_get_outstanding_response_times_out_alone(tmp_path):
    """Each outstanding C-STORE response has its own idle timeout: the one never answered
    fails after ``dicom.idle_timeout``, the others complete, and the C-GET ends with the
    exact Failed SOP Instance UID List."""
    config = tmp_path / "hpacs.toml"
    config.write_text("[dicom]\nidle_timeout = 1.5\n")
    srv = start_server(tmp_path / "data", "--config", str(config))
    try:
        paths = [write(make_ct(9, 9, 1, n, size=16), tmp_path / "files") for n in range(1, 7)]
        assert set(send_files(srv, paths).values()) == {0}
        silent = sop_uid_of(paths[2])
        study = str(pydicom.dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID)
        final, seconds, answered = asyncio.run(
            _get_with_a_silent_store(srv.dicom_port, study, silent))
    finally:
        assert srv.stop() == 0, srv.log()
    assert final.get(cmd.STATUS) == 0xB000, final
    assert (final.get(cmd.COMPLETED_SUBOPERATIONS), final.get(cmd.FAILED_SUBOPERATIONS)) == (5, 1)
    assert sorted(answered) == sorted(sop_uid_of(p) for p in paths if sop_uid_of(p) != silent)
    assert 1.5 <= seconds < 10
    assert '"failed": 1' in srv.log().rsplit('"get.done"', 1)[1].split("\n")[0]


class _Dropping(Receiver):
    """A storage SCP (hpacs's upper layer) granting a window of 8 that closes the
    association right after answering its third C-STORE."""

    def __init__(self, conn: Connection, policy: AcceptorPolicy, answered: list[str]) -> None:
        super().__init__(conn, policy)
        self.answered = answered

    def _reply(self, context_id: int, response: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        super()._reply(context_id, response)
        self.answered.append(cmd.decode_command(response).get(cmd.AFFECTED_SOP_INSTANCE_UID))
        if len(self.answered) == 3:
            self.flush_batch()
            self.transport.close()  # after the three responses, which go out first


def test_move_destination_lost_mid_window(ws):
    loop = asyncio.new_event_loop()
    answered: list[str] = []
    policy = AcceptorPolicy(ae_title="DROPPER", max_pdu_length=MAX_PDU, async_window=WINDOW)
    server = loop.run_until_complete(loop.create_server(
        lambda: _Dropping(Connection(Role.ACCEPTOR, max_pdu_length=MAX_PDU), policy, answered),
        "127.0.0.1", ws.drop_port))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        ae = AE(ae_title="PYMOVE")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        ae.add_requested_context(STUDY_MOVE)
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", ws.srv.dicom_port, ae_title=ws.srv.ae_title)
        results = list(assoc.send_c_move(study_identifier(), "DROPPER", STUDY_MOVE))
        echo = assoc.send_c_echo()
        assoc.release()
    finally:
        loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
    status, identifier = results[-1]
    assert len(answered) == 3
    # the three answered count as completed; the ones in flight when it went and the ones
    # never invoked fail, each listed once
    assert status.Status == 0xB000
    assert (status.NumberOfCompletedSuboperations, status.NumberOfFailedSuboperations) == \
        (3, N - 3)
    listed = identifier.FailedSOPInstanceUIDList
    assert sorted(listed) == sorted(set(ws.uids) - set(answered))
    assert "DROPPER" in status.ErrorComment and echo.Status == 0
    lost = [line for line in ws.srv.log().splitlines() if '"move.association_lost"' in line]
    assert len(lost) == 1  # once per lost association, however many were in flight


class _Mute(Receiver):
    """A storage SCP (hpacs's upper layer) granting a window of 8 that never answers one
    C-STORE and answers every other at once."""

    def __init__(self, conn: Connection, policy: AcceptorPolicy, mute_uid: str,
                 answered: list[str]) -> None:
        super().__init__(conn, policy)
        self.mute_uid = mute_uid
        self.answered = answered

    def _reply(self, context_id: int, response: bytes) -> None:
        sop = cmd.decode_command(response).get(cmd.AFFECTED_SOP_INSTANCE_UID, "")
        if sop != self.mute_uid:
            self.answered.append(sop)
            super()._reply(context_id, response)


def test_move_destination_response_timeout_under_the_window(ws, tmp_path):
    """A destination that leaves one C-STORE unanswered: after ``dicom.acse_timeout`` with
    no response the sub-association is aborted (the responses are awaited as plain futures,
    one timeout per wait), the unanswered ones fail, and the counts add up."""
    port = free_port()
    config = remotes_config(tmp_path / "hpacs.toml", {"MUTE": port})
    config.write_text("[dicom]\nacse_timeout = 1.5\n\n" + config.read_text())
    srv = start_server(tmp_path / "data", "--config", str(config))
    loop = asyncio.new_event_loop()
    answered: list[str] = []
    mute = ws.uids[N // 2]
    policy = AcceptorPolicy(ae_title="MUTE", max_pdu_length=MAX_PDU, async_window=WINDOW)
    server = loop.run_until_complete(loop.create_server(
        lambda: _Mute(Connection(Role.ACCEPTOR, max_pdu_length=MAX_PDU), policy, mute,
                      answered), "127.0.0.1", port))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        assert set(send_files(srv, ws.paths).values()) == {0}
        ae = AE(ae_title="PYMOVE")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        ae.add_requested_context(STUDY_MOVE)
        assoc = ae.associate("127.0.0.1", srv.dicom_port, ae_title=srv.ae_title)
        started = time.monotonic()
        results = list(assoc.send_c_move(study_identifier(), "MUTE", STUDY_MOVE))
        seconds = time.monotonic() - started
        assoc.release()
    finally:
        loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        assert srv.stop() == 0, srv.log()
    status, identifier = results[-1]
    assert status.Status == 0xB000 and 1.5 <= seconds < 15
    completed, failed = status.NumberOfCompletedSuboperations, status.NumberOfFailedSuboperations
    assert completed == len(answered) and completed + failed == N and failed >= 1
    listed = identifier.FailedSOPInstanceUIDList
    listed = [listed] if isinstance(listed, str) else list(listed)
    assert mute in listed and sorted(listed) == sorted(set(ws.uids) - set(answered))
    assert "no C-STORE response in time" in status.ErrorComment
