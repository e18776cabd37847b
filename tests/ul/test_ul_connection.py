"""Connection state machine flows, replaying pynetdicom-encoded byte streams (no sockets)."""

from __future__ import annotations

import random

import pytest
from pynetdicom.fsm import TRANSITION_TABLE
from pynetdicom.presentation import build_context

from hpacs.ul import (
    Aborted,
    AcceptorPolicy,
    AssociateReject,
    AssociateRequest,
    AssociationAccepted,
    AssociationRejected,
    AssociationRequested,
    Connection,
    ConnectionClosed,
    DataReceived,
    LocalProtocolError,
    PresentationContext,
    ProtocolError,
    ReleaseConfirmed,
    ReleaseRequested,
    Role,
    State,
    decode,
    negotiate,
)
from hpacs.ul import pdu as U
from hpacs.ul.connection import MAX_SEND_PDU
from hpacs.ul.states import TABLE, TRANSITIONS
from tests.ul._ulref import (
    CT_STORAGE,
    EXPLICIT,
    IMPLICIT,
    VERIFICATION,
    a_associate_ac,
    a_associate_rj,
    a_associate_rq,
    abort,
    decode_ref,
    p_data,
    release_rp,
    release_rq,
)

pytestmark = pytest.mark.usefixtures("framer_impl")

CMD = b"\x02\x00\x00\x00" * 20
DATASET = bytes(range(256)) * 40


def collect(conn: Connection, data: bytes, chunks: list[int] | None = None) -> list:
    """Feed ``data`` cut at ``chunks`` sizes (cycled); all events."""
    events: list = []
    if chunks is None:
        return conn.receive_data(data)
    off = 0
    i = 0
    while off < len(data):
        n = chunks[i % len(chunks)]
        events.extend(conn.receive_data(data[off : off + n]))
        off += n
        i += 1
    return events


def merged_pdvs(events: list) -> list[tuple[int, bool, bool, bytes]]:
    return [
        (p.context_id, p.is_command, p.is_last, bytes(p.data))
        for ev in events
        if isinstance(ev, DataReceived)
        for p in ev.pdvs
    ]


def established_acceptor(max_pdu: int = 16384) -> Connection:
    conn = Connection(Role.ACCEPTOR, max_pdu_length=max_pdu)
    (ev,) = conn.receive_data(
        a_associate_rq([build_context(VERIFICATION), build_context(CT_STORAGE)])
    )
    assert isinstance(ev, AssociationRequested)
    ac = negotiate(ev.request, AcceptorPolicy(max_pdu_length=max_pdu))
    conn.accept(ac)  # type: ignore[arg-type]
    assert conn.state is State.Sta6
    return conn


STORE_STREAM = (
    p_data((3, True, False, CMD[:30]))
    + p_data((3, True, True, CMD[30:]), (3, False, False, DATASET[:1000]))
    + p_data((3, False, False, DATASET[1000:9000]))
    + p_data((3, False, True, DATASET[9000:]))
)
STORE_PDVS = [
    (3, True, False, CMD[:30]),
    (3, True, True, CMD[30:]),
    (3, False, False, DATASET[:1000]),
    (3, False, False, DATASET[1000:9000]),
    (3, False, True, DATASET[9000:]),
]


# -- the table --------------------------------------------------------------------------------


def test_table_matches_pynetdicom() -> None:
    ours = {(evt.name, st.value): action for (st, evt), action in TRANSITIONS.items()}
    assert ours == TRANSITION_TABLE
    assert all(len(v) == 2 for v in TABLE.values())


# -- acceptor ---------------------------------------------------------------------------------


def test_acceptor_full_flow() -> None:
    conn = Connection(Role.ACCEPTOR, max_pdu_length=16384)
    assert conn.state is State.Sta2 and conn.artim_running
    (ev,) = conn.receive_data(
        a_associate_rq([build_context(VERIFICATION), build_context(CT_STORAGE)])
    )
    assert isinstance(ev, AssociationRequested)
    assert conn.state is State.Sta3 and not conn.artim_running
    ac = negotiate(ev.request, AcceptorPolicy(max_pdu_length=16384))
    out = conn.accept(ac)  # type: ignore[arg-type]
    ref = decode_ref(out)
    assert [(c.context_id, c.result) for c in ref.presentation_context] == [(1, 0), (3, 0)]
    assert conn.state is State.Sta6 and conn.established
    assert conn.accepted_contexts == {1: (VERIFICATION, IMPLICIT), 3: (CT_STORAGE, IMPLICIT)}
    assert conn.peer_max_pdu_length == 16382

    events = conn.receive_data(STORE_STREAM)
    assert len(events) == 1 and isinstance(events[0], DataReceived)
    assert merged_pdvs(events) == STORE_PDVS

    # the response goes out fragmented to the peer's max (16382)
    rsp = conn.send_data(3, False, DATASET * 5)
    assert max(int.from_bytes(rsp[o + 2 : o + 6], "big") for o in _pdu_offsets(rsp)) <= 16382

    (ev,) = conn.receive_data(release_rq())
    assert ev == ReleaseRequested(collision=False) and conn.state is State.Sta8
    assert conn.release_reply() == release_rp()
    assert conn.state is State.Sta13 and conn.artim_running and conn.awaiting_close
    assert not conn.closed
    assert conn.receive_data(b"") == [ConnectionClosed()]
    assert conn.closed and conn.state is State.Sta1 and not conn.artim_running
    assert conn.receive_data(b"more") == []


def _pdu_offsets(stream: bytes) -> list[int]:
    offs, off = [], 0
    while off < len(stream):
        offs.append(off)
        off += 6 + int.from_bytes(stream[off + 2 : off + 6], "big")
    assert off == len(stream)
    return offs


@pytest.mark.parametrize("seed", range(8))
def test_acceptor_random_chunking(seed: int) -> None:
    rng = random.Random(seed)
    sizes = [1, 2, 3, 5, 6, 7, 64, 1000, 70000]
    rq = a_associate_rq([build_context(VERIFICATION), build_context(CT_STORAGE)])
    conn = Connection(Role.ACCEPTOR, max_pdu_length=16384)
    events = collect(conn, rq, [rng.choice(sizes) for _ in range(50)])
    (ev,) = events
    # a real requestor sends nothing more until it has our A-ASSOCIATE-AC
    conn.accept(negotiate(ev.request, AcceptorPolicy()))  # type: ignore[arg-type]
    events = collect(conn, STORE_STREAM + release_rq(), [rng.choice(sizes) for _ in range(50)])
    assert merged_pdvs(events) == STORE_PDVS
    assert isinstance(events[-1], ReleaseRequested) and conn.state is State.Sta8


def test_every_split_point_of_each_pdu() -> None:
    rq = a_associate_rq([build_context(VERIFICATION), build_context(CT_STORAGE)])
    for cut in range(1, len(rq)):
        conn = Connection(Role.ACCEPTOR)
        assert conn.receive_data(rq[:cut]) == []
        assert conn.buffered == cut
        (ev,) = conn.receive_data(rq[cut:])
        assert isinstance(ev, AssociationRequested)
    base = established_acceptor()
    pdu = p_data((3, True, True, CMD), (3, False, True, b"odd-size!"))
    for cut in range(1, len(pdu)):
        conn = established_acceptor()
        events = conn.receive_data(pdu[:cut]) + conn.receive_data(pdu[cut:])
        assert merged_pdvs(events) == [(3, True, True, CMD), (3, False, True, b"odd-size!")]
        assert conn.buffered == 0
    assert base.state is State.Sta6


def test_one_byte_chunks_and_one_huge_chunk() -> None:
    many = b"".join(p_data((3, False, i == 499, bytes([i % 256]) * (i + 1))) for i in range(500))
    expect = [(3, False, i == 499, bytes([i % 256]) * (i + 1)) for i in range(500)]
    conn = established_acceptor()
    events = collect(conn, many)
    assert len(events) == 1  # consecutive P-DATA merged into one DataReceived
    assert merged_pdvs(events) == expect
    conn = established_acceptor()
    assert merged_pdvs(collect(conn, many[:5000], [1])) == [
        p for p in expect if sum(len(x[3]) + 12 for x in expect[: expect.index(p) + 1]) <= 5000
    ]


def test_pdu_longer_than_our_max_aborts_from_header() -> None:
    conn = established_acceptor(max_pdu=4096)
    header = bytes([4, 0]) + (4097).to_bytes(4, "big")
    events = conn.receive_data(header)  # no body sent: detected from the header alone
    (ev,) = events
    assert isinstance(ev, ProtocolError) and ev.reason == U.ABORT_REASON_INVALID_PARAMETER
    assert "exceeds" in ev.message
    assert decode(conn.data_to_send()) == U.Abort(2, U.ABORT_REASON_INVALID_PARAMETER)
    assert conn.state is State.Sta13 and conn.artim_running
    assert conn.receive_data(b"\x00" * 100000) == []  # stream is dead, nothing buffered
    assert conn.buffered == 0
    # a PDU of exactly the max is fine
    conn = established_acceptor(max_pdu=4096)
    events = conn.receive_data(p_data((3, False, True, b"y" * (4096 - 6))))
    assert merged_pdvs(events)[0][3] == b"y" * 4090


def test_oversized_control_pdu() -> None:
    conn = Connection(Role.ACCEPTOR)
    (ev,) = conn.receive_data(bytes([1, 0]) + (2 << 20).to_bytes(4, "big"))
    assert isinstance(ev, ProtocolError)
    assert decode(conn.data_to_send()) == U.Abort(2, U.ABORT_REASON_INVALID_PARAMETER)


def test_unknown_pdu_type() -> None:
    conn = established_acceptor()
    (ev,) = conn.receive_data(b"\x0a\x00\x00\x00\x00\x02ab")
    assert ev.reason == U.ABORT_REASON_UNRECOGNIZED_PDU
    assert decode(conn.data_to_send()) == U.Abort(2, U.ABORT_REASON_UNRECOGNIZED_PDU)
    assert conn.state is State.Sta13


def test_events_before_a_framing_error_are_kept() -> None:
    conn = established_acceptor()
    events = conn.receive_data(p_data((3, False, True, b"ok")) + b"\x0b\x00\x00\x00\x00\x00")
    assert isinstance(events[0], DataReceived) and isinstance(events[1], ProtocolError)


def test_pdata_in_wrong_state_aborts() -> None:
    conn = Connection(Role.ACCEPTOR)  # Sta2: AA-1
    (ev,) = conn.receive_data(p_data((1, True, True, b"x")))
    assert isinstance(ev, ProtocolError) and ev.reason == U.ABORT_REASON_UNEXPECTED_PDU
    assert decode(conn.data_to_send()) == U.Abort(2, U.ABORT_REASON_UNEXPECTED_PDU)
    assert conn.state is State.Sta13 and conn.artim_running
    # Sta3 (RQ not answered yet): AA-8
    conn = Connection(Role.ACCEPTOR)
    events = conn.receive_data(a_associate_rq() + p_data((1, True, True, b"x")))
    assert isinstance(events[0], AssociationRequested) and isinstance(events[1], ProtocolError)
    assert conn.state is State.Sta13
    with pytest.raises(LocalProtocolError):
        conn.accept(negotiate(events[0].request, AcceptorPolicy()))  # type: ignore[arg-type]


def test_pdv_for_unaccepted_context_aborts() -> None:
    conn = established_acceptor()
    (ev,) = conn.receive_data(p_data((5, True, True, b"x")))
    assert isinstance(ev, ProtocolError) and ev.reason == U.ABORT_REASON_INVALID_PARAMETER


def test_malformed_pdata_aborts() -> None:
    conn = established_acceptor()
    (ev,) = conn.receive_data(b"\x04\x00\x00\x00\x00\x03\x00\x00\x00")
    assert isinstance(ev, ProtocolError)


def test_reject_path() -> None:
    conn = Connection(Role.ACCEPTOR)
    (ev,) = conn.receive_data(a_associate_rq(called="OTHER"))
    res = negotiate(ev.request, AcceptorPolicy(ae_title="HPACS", check_called_ae=True))
    assert res == AssociateReject(1, 1, 7)
    assert conn.reject(res) == a_associate_rj(1, 1, 7)  # type: ignore[arg-type]
    assert conn.state is State.Sta13 and conn.artim_running
    epoch = conn.artim_epoch
    assert conn.timeout() == b""
    assert conn.closed and not conn.artim_running and conn.artim_epoch == epoch


def test_protocol_version_unsupported_is_rejected_by_provider() -> None:
    rq = bytearray(a_associate_rq())
    rq[6:8] = b"\x00\x02"
    conn = Connection(Role.ACCEPTOR)
    assert conn.receive_data(bytes(rq)) == []
    assert decode(conn.data_to_send()) == U.AssociateReject(1, 2, 2)
    assert conn.state is State.Sta13 and conn.artim_running


def test_artim_in_sta2() -> None:
    conn = Connection(Role.ACCEPTOR)
    assert conn.artim_running and conn.artim_epoch == 1
    assert conn.timeout() == b""
    assert conn.closed and conn.state is State.Sta1
    assert conn.timeout() == b""  # stale timer: ignored


def test_stale_timeout_is_ignored() -> None:
    conn = established_acceptor()
    assert not conn.artim_running
    conn.timeout()
    assert conn.state is State.Sta6


def test_peer_abort_and_local_abort() -> None:
    conn = established_acceptor()
    assert conn.receive_data(abort(0, 0)) == [Aborted(0, 0)]
    assert conn.closed
    conn = established_acceptor()
    assert conn.receive_data(abort(2, 6)) == [Aborted(2, 6)]
    conn = established_acceptor()
    out = conn.abort()
    assert decode(out) == U.Abort(0, 0)
    assert conn.state is State.Sta13 and conn.artim_running
    assert conn.receive_data(p_data((3, False, True, b"late"))) == []  # AA-6: ignored
    assert conn.receive_data(abort()) == []  # AA-2
    assert conn.closed


def test_transport_closed_mid_association() -> None:
    conn = established_acceptor()
    assert conn.receive_data(b"") == [Aborted(2, 0, transport_closed=True)]
    assert conn.closed
    conn = Connection(Role.ACCEPTOR)
    assert conn.receive_data(b"") == [ConnectionClosed()]
    assert conn.closed


def test_local_protocol_errors() -> None:
    conn = Connection(Role.ACCEPTOR)
    with pytest.raises(LocalProtocolError):
        conn.send_data(1, True, b"x")
    with pytest.raises(LocalProtocolError):
        conn.release_request()
    with pytest.raises(LocalProtocolError):
        conn.abort()  # Sta2: not in the table; the adapter simply closes the socket
    with pytest.raises(LocalProtocolError):
        conn.request_association(
            AssociateRequest(called_ae="A", calling_ae="B", presentation_contexts=())
        )
    conn = established_acceptor()
    with pytest.raises(LocalProtocolError):
        conn.send_data(5, True, b"x")  # context not accepted
    with pytest.raises(LocalProtocolError):
        conn.release_reply()
    assert conn.state is State.Sta6


def test_sta13_rq_gets_another_abort() -> None:
    conn = established_acceptor()
    conn.abort()
    events = conn.receive_data(a_associate_rq())
    assert isinstance(events[0], ProtocolError)
    assert decode(conn.data_to_send()) == U.Abort(2, U.ABORT_REASON_UNEXPECTED_PDU)
    assert conn.state is State.Sta13


# -- requestor --------------------------------------------------------------------------------


def requestor_request(max_pdu: int = 32768) -> AssociateRequest:
    return AssociateRequest(
        called_ae="ANY-SCP",
        calling_ae="HPACS",
        presentation_contexts=(
            PresentationContext(1, VERIFICATION, (IMPLICIT,)),
            PresentationContext(3, CT_STORAGE, (EXPLICIT, IMPLICIT)),
        ),
        max_pdu_length=max_pdu,
        implementation_class_uid="1.2.826.0.1.3680043.10.1488.1",
        implementation_version_name="HPACS_010",
    )


def established_requestor() -> Connection:
    conn = Connection(Role.REQUESTOR)
    conn.request_association(requestor_request())
    conn.receive_data(a_associate_ac([(1, 0, IMPLICIT), (3, 0, EXPLICIT)], max_length=1000))
    assert conn.state is State.Sta6
    return conn


def test_requestor_full_flow() -> None:
    conn = Connection(Role.REQUESTOR)
    assert conn.state is State.Sta1 and not conn.closed
    out = conn.request_association(requestor_request())
    ref = decode_ref(out)
    assert ref.called_ae_title == "ANY-SCP" and ref.calling_ae_title == "HPACS"
    assert [str(c.abstract_syntax) for c in ref.presentation_context] == [VERIFICATION, CT_STORAGE]
    assert ref.user_information.maximum_length == 32768
    assert conn.state is State.Sta5 and not conn.artim_running
    (ev,) = conn.receive_data(a_associate_ac([(1, 0, IMPLICIT), (3, 0, EXPLICIT)], max_length=1000))
    assert isinstance(ev, AssociationAccepted)
    assert conn.accepted_contexts == {1: (VERIFICATION, IMPLICIT), 3: (CT_STORAGE, EXPLICIT)}
    out = conn.send_data(3, False, DATASET * 5)
    assert all(int.from_bytes(out[o + 2 : o + 6], "big") <= 1000 for o in _pdu_offsets(out))
    events = conn.receive_data(p_data((3, True, True, CMD)))
    assert merged_pdvs(events) == [(3, True, True, CMD)]
    assert conn.release_request() == release_rq()
    assert conn.state is State.Sta7
    # data still arrives in Sta7 (AR-6), then the reply
    events = conn.receive_data(p_data((1, True, True, CMD)) + release_rp())
    assert merged_pdvs(events) == [(1, True, True, CMD)]
    assert isinstance(events[-1], ReleaseConfirmed)
    assert conn.closed


def test_requestor_rejected() -> None:
    conn = Connection(Role.REQUESTOR)
    conn.request_association(requestor_request())
    (ev,) = conn.receive_data(a_associate_rj(2, 3, 2))
    assert ev == AssociationRejected(AssociateReject(2, 3, 2))
    assert conn.closed


def test_requestor_bad_reply_aborts() -> None:
    conn = Connection(Role.REQUESTOR)
    conn.request_association(requestor_request())
    (ev,) = conn.receive_data(release_rp())
    assert isinstance(ev, ProtocolError)
    assert decode(conn.data_to_send()) == U.Abort(2, U.ABORT_REASON_UNEXPECTED_PDU)


def test_requestor_receives_more_than_it_advertised() -> None:
    conn = Connection(Role.REQUESTOR)
    conn.request_association(requestor_request(max_pdu=2048))
    conn.receive_data(a_associate_ac([(1, 0, IMPLICIT)]))
    (ev,) = conn.receive_data(p_data((1, False, True, b"z" * 3000)))
    assert isinstance(ev, ProtocolError)


# -- release collision (PS3.8 §7.2.2) ---------------------------------------------------------


def test_release_collision_requestor_side() -> None:
    conn = established_requestor()
    conn.release_request()
    (ev,) = conn.receive_data(release_rq())
    assert ev == ReleaseRequested(collision=True) and conn.state is State.Sta9
    assert conn.release_reply() == release_rp()
    assert conn.state is State.Sta11
    (ev,) = conn.receive_data(release_rp())
    assert isinstance(ev, ReleaseConfirmed) and conn.closed


def test_release_collision_acceptor_side() -> None:
    conn = established_acceptor()
    conn.release_request()
    (ev,) = conn.receive_data(release_rq())
    assert ev == ReleaseRequested(collision=True) and conn.state is State.Sta10
    (ev,) = conn.receive_data(release_rp())
    assert isinstance(ev, ReleaseConfirmed) and conn.state is State.Sta12
    assert conn.release_reply() == release_rp()
    assert conn.state is State.Sta13 and conn.artim_running
    conn.timeout()
    assert conn.closed


def test_send_after_peer_release_request_allowed() -> None:
    conn = established_acceptor()
    conn.receive_data(release_rq())
    assert conn.state is State.Sta8
    assert conn.send_data(3, True, CMD)  # AR-7: pending responses still go out
    conn.release_reply()


def test_send_data_buffers_zero_copy() -> None:
    conn = established_requestor()
    payload = bytes(5000)
    bufs = conn.send_data_buffers(3, False, payload)
    assert any(isinstance(b, memoryview) and b.obj is payload for b in bufs)
    assert b"".join(bufs) == conn.send_data(3, False, payload)


@pytest.mark.parametrize(("peer_max", "sent_max"), [
    (16382, 16382),  # the peer's limit rules when it is smaller
    (1 << 20, MAX_SEND_PDU),  # a larger one: we still send at most MAX_SEND_PDU
    (0, MAX_SEND_PDU),  # "no limit"
])
def test_sent_pdus_never_exceed_the_peer_max_nor_our_cap(peer_max, sent_max) -> None:
    conn = Connection(Role.ACCEPTOR, max_pdu_length=16384)
    (ev,) = conn.receive_data(a_associate_rq([build_context(CT_STORAGE)], max_length=peer_max))
    conn.accept(negotiate(ev.request, AcceptorPolicy(max_pdu_length=16384)))  # type: ignore[arg-type]
    payload = bytes(600_000)
    bufs = conn.send_data_buffers(1, False, payload)
    wire = b"".join(bytes(b) for b in bufs)
    sizes, off = [], 0
    while off < len(wire):
        length = int.from_bytes(wire[off + 2 : off + 6], "big")
        sizes.append(length)
        off += 6 + length
    assert max(sizes) == sent_max
    assert sum(s - 6 for s in sizes) == len(payload)  # each PDU: one PDV (4 + 2 header bytes)
