"""The asynchronous operations window (PS3.7 D.3.3.3): acceptor answer, window in force, and
the negotiated values on both ends of a Connection."""

from __future__ import annotations

import dataclasses

import pytest
from pynetdicom.presentation import build_context

from hpacs.ul import (
    AcceptorPolicy,
    AssociationAccepted,
    AssociationRequested,
    Connection,
    PresentationContext,
    Role,
    decode,
    encode,
    negotiate,
)
from hpacs.ul import pdu as U
from hpacs.ul.async_window import answer_window, window_in_force
from tests.ul._ulref import CT_STORAGE, EXPLICIT, VERIFICATION, a_associate_rq


@pytest.mark.parametrize("proposed,ours,answer", [
    (None, 16, None),            # never answered unless proposed
    ((1, 1), 16, (1, 1)),
    ((8, 1), 16, (8, 1)),
    ((1, 8), 16, (1, 8)),
    ((32, 64), 16, (16, 16)),    # at most what we allow
    ((0, 0), 16, (16, 16)),      # 0 proposed = unlimited: ours
    ((0, 3), 4, (4, 3)),
    ((5, 0), 1, (1, 1)),         # window off: 1/1
    ((5, 5), 0, (1, 1)),         # ours below 1 counts as 1
])
def test_acceptor_answer(proposed, ours, answer) -> None:
    assert answer_window(proposed, ours) == answer


@pytest.mark.parametrize("proposed,answered,in_force", [
    (None, None, (1, 1)),
    ((8, 1), None, (1, 1)),      # acceptor without the item (dcmtk, Orthanc): 1/1
    (None, (8, 8), (1, 1)),      # an answer to nothing proposed is ignored
    ((8, 1), (4, 1), (4, 1)),
    ((8, 1), (0, 1), (8, 1)),    # "unlimited" above a bounded proposal: the proposal
    ((8, 1), (20, 3), (8, 1)),   # above the proposal: the proposal
    ((0, 0), (0, 0), (0, 0)),    # unlimited both ways when both say so
    ((0, 2), (7, 2), (7, 2)),
])
def test_window_in_force(proposed, answered, in_force) -> None:
    assert window_in_force(proposed, answered) == in_force


def test_negotiate_answers_only_a_proposed_window() -> None:
    contexts = [build_context(VERIFICATION), build_context(CT_STORAGE)]
    plain = decode(a_associate_rq(contexts))
    assert isinstance(plain, U.AssociateRequest)
    ac = negotiate(plain, AcceptorPolicy(async_window=16))
    assert isinstance(ac, U.AssociateAccept) and ac.async_ops_window is None
    assert b"\x53\x00\x00\x04" not in encode(ac)  # no sub-item on the wire either
    proposing = dataclasses.replace(plain, async_ops_window=(0, 8))
    ac = negotiate(proposing, AcceptorPolicy(async_window=16))
    assert isinstance(ac, U.AssociateAccept) and ac.async_ops_window == (16, 8)
    decoded = decode(encode(ac))
    assert isinstance(decoded, U.AssociateAccept) and decoded.async_ops_window == (16, 8)
    # the default policy is synchronous (the server passes dicom.async_window)
    ac = negotiate(proposing, AcceptorPolicy())
    assert isinstance(ac, U.AssociateAccept) and ac.async_ops_window == (1, 1)


def _associate(proposed, ours) -> tuple[Connection, Connection]:
    requestor = Connection(Role.REQUESTOR)
    acceptor = Connection(Role.ACCEPTOR)
    rq = U.AssociateRequest(
        called_ae="HPACS", calling_ae="SCU", max_pdu_length=16384,
        presentation_contexts=(PresentationContext(1, CT_STORAGE, (EXPLICIT,)),),
        async_ops_window=proposed)
    (ev,) = acceptor.receive_data(requestor.request_association(rq))
    assert isinstance(ev, AssociationRequested)
    answer = negotiate(ev.request, AcceptorPolicy(async_window=ours))
    (ev,) = requestor.receive_data(acceptor.accept(answer))  # type: ignore[arg-type]
    assert isinstance(ev, AssociationAccepted)
    return requestor, acceptor


def test_connections_expose_the_window_each_from_its_side() -> None:
    requestor, acceptor = _associate((8, 2), 16)
    assert requestor.async_window == acceptor.async_window == (8, 2)
    assert (requestor.we_may_invoke, requestor.peer_may_invoke) == (8, 2)
    assert (acceptor.we_may_invoke, acceptor.peer_may_invoke) == (2, 8)
    requestor, acceptor = _associate(None, 16)
    assert requestor.async_window == acceptor.async_window == (1, 1)
    assert requestor.we_may_invoke == acceptor.we_may_invoke == 1
    assert Connection(Role.REQUESTOR).async_window == (1, 1)  # before any association
