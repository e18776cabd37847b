"""Acceptor negotiation against what pynetdicom and dcmtk's storescu propose."""

from __future__ import annotations

from pynetdicom.presentation import StoragePresentationContexts, build_context

from hpacs.ul import AcceptorPolicy, AssociateAccept, AssociateReject, decode, encode, negotiate
from hpacs.ul import pdu as U
from hpacs.ul.negotiation import (
    STORAGE_SOP_CLASSES,
    UNCOMPRESSED_TRANSFER_SYNTAXES,
    local_limit_exceeded,
)
from tests.ul._ulref import (
    CT_STORAGE,
    EXPLICIT,
    IMPLICIT,
    JPEG_BASELINE,
    MR_STORAGE,
    VERIFICATION,
    a_associate_rq,
    decode_ref,
)

EXPLICIT_BE = "1.2.840.10008.1.2.2"
JPIP = "1.2.840.10008.1.2.4.94"


def rq(contexts: list, **kw) -> U.AssociateRequest:
    req = decode(a_associate_rq(contexts, **kw))
    assert isinstance(req, U.AssociateRequest)
    return req


def results(ac: object) -> list[tuple[int, int, str]]:
    assert isinstance(ac, AssociateAccept)
    return [
        (r.context_id, r.result, r.transfer_syntax if r.result == 0 else "")
        for r in ac.presentation_contexts
    ]


def test_pynetdicom_storage_scu_proposal() -> None:
    contexts = [build_context(VERIFICATION), *StoragePresentationContexts]
    ac = negotiate(rq(contexts), AcceptorPolicy())
    res = results(ac)
    assert len(res) == 121
    # pynetdicom lists implicit VR LE first: the requestor's preference wins
    assert all(r[1] == 0 and r[2] == IMPLICIT for r in res)
    assert isinstance(ac, AssociateAccept)
    assert ac.implementation_version_name == "HPACS_010"
    assert ac.called_ae == "HPACS" and ac.calling_ae == "STORESCU"
    # and pynetdicom reads our answer back
    ref = decode_ref(encode(ac))
    assert len(ref.presentation_context) == 121


def test_dcmtk_storescu_default_proposal() -> None:
    # storescu (no -x option) proposes explicit LE, explicit BE, implicit for each class
    order = [EXPLICIT, EXPLICIT_BE, IMPLICIT]
    contexts = [build_context(uid, order) for uid in (VERIFICATION, CT_STORAGE, MR_STORAGE)]
    ac = negotiate(rq(contexts), AcceptorPolicy())
    assert results(ac) == [(1, 0, EXPLICIT), (3, 0, EXPLICIT), (5, 0, EXPLICIT)]


def test_compressed_only_for_storage() -> None:
    contexts = [
        build_context(CT_STORAGE, [JPEG_BASELINE]),
        build_context(VERIFICATION, [JPEG_BASELINE]),
        build_context(CT_STORAGE, [JPIP, "1.2.3.4.5"]),
        build_context("1.2.3.999", [IMPLICIT]),
        build_context(VERIFICATION, [JPEG_BASELINE, EXPLICIT]),
    ]
    ac = negotiate(rq(contexts), AcceptorPolicy())
    assert results(ac) == [
        (1, 0, JPEG_BASELINE),
        (3, U.PC_TRANSFER_SYNTAXES_NOT_SUPPORTED, ""),
        (5, U.PC_TRANSFER_SYNTAXES_NOT_SUPPORTED, ""),
        (7, U.PC_ABSTRACT_SYNTAX_NOT_SUPPORTED, ""),
        (9, 0, EXPLICIT),
    ]
    # refused contexts echo a syntax (not significant) so strict peers can parse them
    assert isinstance(ac, AssociateAccept)
    assert ac.presentation_contexts[1].transfer_syntax == JPEG_BASELINE


def test_zero_accepted_contexts_still_accepts() -> None:
    ac = negotiate(rq([build_context("1.2.3.999")]), AcceptorPolicy())
    assert isinstance(ac, AssociateAccept)
    assert ac.accepted_context_ids == frozenset()


def test_rejections() -> None:
    req = rq([build_context(VERIFICATION)], called="NOTME", calling="EVIL")
    assert isinstance(negotiate(req, AcceptorPolicy()), AssociateAccept)
    assert negotiate(req, AcceptorPolicy(check_called_ae=True)) == AssociateReject(1, 1, 7)
    policy = AcceptorPolicy(allowed_calling_aes=frozenset({"STORESCU"}))
    assert negotiate(req, policy) == AssociateReject(1, 1, 3)
    ok = rq([build_context(VERIFICATION)], called="HPACS", calling="STORESCU")
    assert isinstance(
        negotiate(ok, AcceptorPolicy(check_called_ae=True, **{"ae_title": "HPACS"})),
        AssociateAccept,
    )
    assert isinstance(negotiate(ok, policy), AssociateAccept)
    bad_ctx = rq([build_context(VERIFICATION)], app_context="1.2.3.4")
    assert negotiate(bad_ctx, AcceptorPolicy()) == AssociateReject(1, 1, 2)


def test_local_limit() -> None:
    rj = local_limit_exceeded()
    assert (rj.result, rj.source, rj.reason) == (2, 3, 2)
    assert decode_ref(encode(rj)).reason_str.startswith("Local limit")


def test_role_selection_replies() -> None:
    contexts = [build_context(CT_STORAGE), build_context(VERIFICATION)]
    req = rq(
        contexts,
        roles=[(CT_STORAGE, False, True), (VERIFICATION, True, True), (MR_STORAGE, True, True)],
    )
    ac = negotiate(req, AcceptorPolicy())
    assert isinstance(ac, AssociateAccept)
    assert ac.role_selections == (
        U.RoleSelection(CT_STORAGE, False, True),  # C-GET: the requestor is storage SCP
        U.RoleSelection(VERIFICATION, True, False),
    )  # MR was not proposed as a context: no reply
    ui = decode_ref(encode(ac)).user_information
    assert ui.role_selection[CT_STORAGE].scu_role == 0
    assert ui.role_selection[CT_STORAGE].scp_role == 1


def test_even_and_duplicate_context_ids() -> None:
    req = U.AssociateRequest(
        called_ae="HPACS",
        calling_ae="X",
        presentation_contexts=(
            U.PresentationContext(1, CT_STORAGE, (IMPLICIT,)),
            U.PresentationContext(1, MR_STORAGE, (IMPLICIT,)),
            U.PresentationContext(2, MR_STORAGE, (IMPLICIT,)),
        ),
    )
    assert results(negotiate(req, AcceptorPolicy())) == [
        (1, 0, IMPLICIT),
        (2, U.PC_PROVIDER_REJECTION, ""),
    ]


def test_defaults() -> None:
    assert len(STORAGE_SOP_CLASSES) > 100 and CT_STORAGE in STORAGE_SOP_CLASSES
    assert {IMPLICIT, EXPLICIT, EXPLICIT_BE} <= UNCOMPRESSED_TRANSFER_SYNTAXES
    assert JPEG_BASELINE not in UNCOMPRESSED_TRANSFER_SYNTAXES
    policy = AcceptorPolicy()
    assert VERIFICATION in policy.abstract_syntaxes
    assert policy.implementation_class_uid.startswith("1.2.826.0.1.3680043.10.1488")
