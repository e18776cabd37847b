"""Acceptor-side association negotiation as a pure function of (request, policy).

Per presentation context we take the FIRST proposed transfer syntax we support: the requestor
lists them in its order of preference (dcmtk and pynetdicom both rely on this). An association
with no acceptable context is still accepted; the peer decides what to do (what dcmtk and
pynetdicom expect). Only our own user-level checks (application context, AE titles) reject.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pynetdicom.presentation import AllStoragePresentationContexts, StoragePresentationContexts
from pynetdicom.sop_class import _STORAGE_CLASSES

from hpacs.dicom.part10 import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from hpacs.dicom.transfer_syntax import STORABLE
from hpacs.ul.async_window import answer_window
from hpacs.ul.connection import DEFAULT_MAX_PDU_LENGTH
from hpacs.ul.pdu import (
    DICOM_APPLICATION_CONTEXT,
    PC_ABSTRACT_SYNTAX_NOT_SUPPORTED,
    PC_ACCEPTANCE,
    PC_PROVIDER_REJECTION,
    PC_TRANSFER_SYNTAXES_NOT_SUPPORTED,
    REJECT_PERMANENT,
    REJECT_PRESENTATION_LOCAL_LIMIT,
    REJECT_SOURCE_PRESENTATION,
    REJECT_SOURCE_USER,
    REJECT_TRANSIENT,
    REJECT_USER_APP_CONTEXT,
    REJECT_USER_CALLED_AE,
    REJECT_USER_CALLING_AE,
    AssociateAccept,
    AssociateReject,
    AssociateRequest,
    PresentationContextResult,
    RoleSelection,
)

VERIFICATION_SOP_CLASS = "1.2.840.10008.1.1"
#: Query/Retrieve FIND information models we serve (Patient Root, Study Root).
FIND_SOP_CLASSES: frozenset[str] = frozenset(
    {"1.2.840.10008.5.1.4.1.2.1.1", "1.2.840.10008.5.1.4.1.2.2.1"}
)
#: Query/Retrieve MOVE and GET information models we serve (Patient Root, Study Root).
RETRIEVE_SOP_CLASSES: frozenset[str] = frozenset(
    {
        "1.2.840.10008.5.1.4.1.2.1.2",  # Patient Root MOVE
        "1.2.840.10008.5.1.4.1.2.1.3",  # Patient Root GET
        "1.2.840.10008.5.1.4.1.2.2.2",  # Study Root MOVE
        "1.2.840.10008.5.1.4.1.2.2.3",  # Study Root GET
    }
)

#: Every storage SOP class pynetdicom knows (it tracks the current standard), plus the retired
#: ones its default SCU contexts still propose (old US/NM/standalone classes real modalities send).
STORAGE_SOP_CLASSES: frozenset[str] = frozenset(
    [str(uid) for uid in _STORAGE_CLASSES.values()]
    + [
        str(cx.abstract_syntax)
        for cx in (*StoragePresentationContexts, *AllStoragePresentationContexts)
    ]
)

#: Syntaxes for services without pixel data (Verification, queries...): no compression.
UNCOMPRESSED_TRANSFER_SYNTAXES: frozenset[str] = frozenset(
    uid for uid, enc in STORABLE.items() if not enc.encapsulated
)
#: Query identifiers: the uncompressed syntaxes without deflate (identifiers are tiny).
QUERY_TRANSFER_SYNTAXES: frozenset[str] = frozenset(
    uid for uid, enc in STORABLE.items() if not enc.encapsulated and not enc.deflated
)


@dataclass(frozen=True, kw_only=True)
class AcceptorPolicy:
    """What we accept. Storage classes may use any syntax in ``transfer_syntaxes``; every other
    abstract syntax only its uncompressed subset."""

    ae_title: str = "HPACS"
    check_called_ae: bool = False
    #: None accepts any calling AE title.
    allowed_calling_aes: frozenset[str] | None = None
    abstract_syntaxes: frozenset[str] = field(
        default_factory=lambda: (
            STORAGE_SOP_CLASSES | {VERIFICATION_SOP_CLASS} | FIND_SOP_CLASSES | RETRIEVE_SOP_CLASSES
        )
    )
    storage_sop_classes: frozenset[str] = STORAGE_SOP_CLASSES
    transfer_syntaxes: frozenset[str] = field(default_factory=lambda: frozenset(STORABLE))
    max_pdu_length: int = DEFAULT_MAX_PDU_LENGTH
    implementation_class_uid: str = IMPLEMENTATION_CLASS_UID
    implementation_version_name: str = IMPLEMENTATION_VERSION_NAME
    #: Most operations outstanding each way when the requestor proposes an asynchronous
    #: operations window (PS3.7 D.3.3.3); 1 = synchronous, what no proposal gets anyway.
    async_window: int = 1


def negotiate(
    request: AssociateRequest, policy: AcceptorPolicy
) -> AssociateAccept | AssociateReject:
    """The A-ASSOCIATE response to ``request`` under ``policy``."""
    if request.application_context != DICOM_APPLICATION_CONTEXT:
        return AssociateReject(REJECT_PERMANENT, REJECT_SOURCE_USER, REJECT_USER_APP_CONTEXT)
    if policy.check_called_ae and request.called_ae != policy.ae_title:
        return AssociateReject(REJECT_PERMANENT, REJECT_SOURCE_USER, REJECT_USER_CALLED_AE)
    if (
        policy.allowed_calling_aes is not None
        and request.calling_ae not in policy.allowed_calling_aes
    ):
        return AssociateReject(REJECT_PERMANENT, REJECT_SOURCE_USER, REJECT_USER_CALLING_AE)

    results: list[PresentationContextResult] = []
    seen: set[int] = set()
    accepted_classes: set[str] = set()
    uncompressed = policy.transfer_syntaxes & UNCOMPRESSED_TRANSFER_SYNTAXES
    for pc in request.presentation_contexts:
        first = pc.transfer_syntaxes[0] if pc.transfer_syntaxes else ""
        if pc.context_id in seen:
            continue  # a duplicate ID cannot be answered twice; the first one stands
        seen.add(pc.context_id)
        if not pc.context_id & 1:
            # PS3.8 9.3.2.2: context IDs are odd; refuse an even one without failing the rest
            results.append(PresentationContextResult(pc.context_id, PC_PROVIDER_REJECTION, first))
            continue
        if pc.abstract_syntax not in policy.abstract_syntaxes:
            results.append(
                PresentationContextResult(pc.context_id, PC_ABSTRACT_SYNTAX_NOT_SUPPORTED, first)
            )
            continue
        if pc.abstract_syntax in policy.storage_sop_classes:
            supported = policy.transfer_syntaxes
        elif pc.abstract_syntax in FIND_SOP_CLASSES or pc.abstract_syntax in RETRIEVE_SOP_CLASSES:
            supported = uncompressed & QUERY_TRANSFER_SYNTAXES
        else:
            supported = uncompressed
        chosen = next((ts for ts in pc.transfer_syntaxes if ts in supported), None)
        if chosen is None:
            results.append(
                PresentationContextResult(pc.context_id, PC_TRANSFER_SYNTAXES_NOT_SUPPORTED, first)
            )
            continue
        results.append(PresentationContextResult(pc.context_id, PC_ACCEPTANCE, chosen))
        accepted_classes.add(pc.abstract_syntax)

    roles = []
    replied: set[str] = set()
    for role in request.role_selections:
        uid = role.sop_class_uid
        if uid in replied or uid not in accepted_classes:
            continue
        replied.add(uid)
        if uid in policy.storage_sop_classes:
            # accept the proposed roles: a C-GET requestor acts as storage SCP on this link
            # (PS3.7 D.3.3.4), and our C-GET SCP sends C-STORE-RQs only where it was accepted
            roles.append(RoleSelection(uid, role.scu_role, role.scp_role))
        else:
            roles.append(RoleSelection(uid, role.scu_role, False))

    return AssociateAccept(
        called_ae=request.called_ae,
        calling_ae=request.calling_ae,
        presentation_contexts=tuple(results),
        application_context=DICOM_APPLICATION_CONTEXT,
        max_pdu_length=policy.max_pdu_length,
        implementation_class_uid=policy.implementation_class_uid,
        implementation_version_name=policy.implementation_version_name,
        role_selections=tuple(roles),
        async_ops_window=answer_window(request.async_ops_window, policy.async_window),
    )


def local_limit_exceeded() -> AssociateReject:
    """Reject for "too many associations": transient, presentation provider, local limit."""
    return AssociateReject(
        REJECT_TRANSIENT, REJECT_SOURCE_PRESENTATION, REJECT_PRESENTATION_LOCAL_LIMIT
    )
