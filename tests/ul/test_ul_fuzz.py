"""Property tests: arbitrary and mutated bytes never escape as anything but PDUError/events."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pynetdicom.presentation import StoragePresentationContexts, build_context

from hpacs.ul import AcceptorPolicy, Connection, Role, State, negotiate
from hpacs.ul import events as E
from hpacs.ul import pdu as U
from tests.ul._ulref import (
    CT_STORAGE,
    VERIFICATION,
    a_associate_ac,
    a_associate_rj,
    a_associate_rq,
    abort,
    mutations,
    p_data,
    release_rp,
    release_rq,
)

# the framer_impl fixture only selects a class: sharing it between examples is intended
FUZZ = settings(
    max_examples=300,
    deadline=1000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

SAMPLES = [
    a_associate_rq(
        [build_context(VERIFICATION), *StoragePresentationContexts[:5]],
        roles=[(CT_STORAGE, False, True)],
        identity=(2, b"u", b"p", True),
        async_ops=(1, 1),
    ),
    a_associate_ac([(1, 0, "1.2.840.10008.1.2"), (3, 3, "1.2.840.10008.1.2")]),
    a_associate_rj(1, 1, 7),
    p_data((1, True, True, b"cmd"), (3, False, False, b"data" * 10)),
    release_rq(),
    release_rp(),
    abort(2, 6),
]
EVENT_TYPES = (
    E.AssociationRequested,
    E.AssociationAccepted,
    E.AssociationRejected,
    E.DataReceived,
    E.ReleaseRequested,
    E.ReleaseConfirmed,
    E.Aborted,
    E.ProtocolError,
    E.ConnectionClosed,
)


def mutated() -> st.SearchStrategy[bytes]:
    return mutations(st.sampled_from(SAMPLES))


def _decode_only_pdu_error(data: bytes) -> None:
    with contextlib.suppress(U.PDUError):
        U.decode(data)


@FUZZ
@given(st.binary(max_size=512))
def test_decode_arbitrary_bytes(data: bytes) -> None:
    _decode_only_pdu_error(data)


@FUZZ
@given(mutated())
def test_decode_mutated_pdus(data: bytes) -> None:
    _decode_only_pdu_error(data)


@FUZZ
@given(st.integers(1, 7), st.binary(max_size=300))
def test_decode_any_body_for_every_type(pdu_type: int, body: bytes) -> None:
    with contextlib.suppress(U.PDUError):
        U.decode_body(pdu_type, body)


def _established() -> Connection:
    conn = Connection(Role.ACCEPTOR, max_pdu_length=4096, max_control_pdu=65536)
    (ev,) = conn.receive_data(SAMPLES[0])
    conn.accept(negotiate(ev.request, AcceptorPolicy(max_pdu_length=4096)))  # type: ignore[arg-type]
    return conn


@pytest.mark.usefixtures("framer_impl")
@FUZZ
@given(
    st.booleans(),
    st.lists(st.one_of(mutated(), st.sampled_from(SAMPLES), st.binary(max_size=64)), max_size=6),
    st.lists(st.integers(1, 300), min_size=1, max_size=10),
)
def test_connection_survives_garbage(
    established: bool, parts: list[bytes], cuts: list[int]
) -> None:
    conn = _established() if established else Connection(Role.ACCEPTOR, max_control_pdu=65536)
    stream = b"".join(parts)
    off = 0
    i = 0
    while off < len(stream):
        n = cuts[i % len(cuts)]
        for ev in conn.receive_data(stream[off : off + n]):
            assert isinstance(ev, EVENT_TYPES)
        assert conn.buffered <= 65536 + 6
        out = conn.data_to_send()
        if out:
            assert isinstance(U.decode(out[:10]), U.Abort | U.AssociateReject)
        off += n
        i += 1
    assert isinstance(conn.state, State)
    for ev in conn.receive_data(b""):
        assert isinstance(ev, EVENT_TYPES)
    assert conn.closed


@FUZZ
@given(
    st.lists(st.sampled_from(SAMPLES), min_size=1, max_size=8),
    st.lists(st.integers(1, 200), min_size=1, max_size=10),
)
def test_framer_chunking_invariant(
    framer_impl: type, pdus: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(pdus)
    whole = [(t, bytes(b)) for t, b, _ in framer_impl(1 << 20).feed(stream)]
    framer = framer_impl(1 << 20)
    got: list[tuple[int, bytes]] = []
    off = 0
    i = 0
    while off < len(stream):
        n = cuts[i % len(cuts)]
        got.extend((t, bytes(b)) for t, b, _ in framer.feed(stream[off : off + n]))
        off += n
        i += 1
    assert got == whole == [(p[0], p[6:]) for p in pdus]
    assert framer.buffered == 0 and framer.error is None
