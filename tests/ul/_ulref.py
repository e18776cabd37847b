"""Reference PDU bytes built with pynetdicom's encoders (the codec we check ourselves against)."""

from __future__ import annotations

import copy

from hypothesis import strategies as st
from pynetdicom import pdu as P
from pynetdicom.pdu_primitives import (
    A_ABORT,
    A_ASSOCIATE,
    P_DATA,
    AsynchronousOperationsWindowNegotiation,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
    UserIdentityNegotiation,
)
from pynetdicom.presentation import PresentationContext, build_context

APP_CONTEXT = "1.2.840.10008.3.1.1.1"
VERIFICATION = "1.2.840.10008.1.1"
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
IMPLICIT = "1.2.840.10008.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"


def numbered(contexts: list[PresentationContext]) -> list[PresentationContext]:
    """Copies of ``contexts`` with IDs 1, 3, 5, ... as an association requestor assigns them."""
    out = []
    for i, cx in enumerate(contexts):
        c = copy.deepcopy(cx)
        c.context_id = 2 * i + 1
        out.append(c)
    return out


def user_info(
    max_length: int = 16382,
    impl_uid: str = "1.2.826.0.1.3680043.9.3811.3.0.4",
    impl_version: str | None = "PYNETDICOM_304",
    roles: list[tuple[str, bool, bool]] = (),
    identity: tuple[int, bytes, bytes, bool] | None = None,
    async_ops: tuple[int, int] | None = None,
) -> list:
    ml = MaximumLengthNotification()
    ml.maximum_length_received = max_length
    ic = ImplementationClassUIDNotification()
    ic.implementation_class_uid = impl_uid
    items: list = [ml, ic]
    if async_ops is not None:
        aw = AsynchronousOperationsWindowNegotiation()
        aw.maximum_number_operations_invoked, aw.maximum_number_operations_performed = async_ops
        items.append(aw)
    for uid, scu, scp in roles:
        rs = SCP_SCU_RoleSelectionNegotiation()
        rs.sop_class_uid = uid
        rs.scu_role = scu
        rs.scp_role = scp
        items.append(rs)
    if impl_version:
        iv = ImplementationVersionNameNotification()
        iv.implementation_version_name = impl_version
        items.append(iv)
    if identity is not None:
        ui = UserIdentityNegotiation()
        ui.user_identity_type, ui.primary_field, ui.secondary_field = identity[:3]
        ui.positive_response_requested = identity[3]
        items.append(ui)
    return items


def a_associate_rq(
    contexts: list[PresentationContext] | None = None,
    *,
    calling: str = "STORESCU",
    called: str = "HPACS",
    app_context: str = APP_CONTEXT,
    **ui,
) -> bytes:
    prim = A_ASSOCIATE()
    prim.application_context_name = app_context
    prim.calling_ae_title = calling
    prim.called_ae_title = called
    prim.presentation_context_definition_list = numbered(
        contexts if contexts is not None else [build_context(VERIFICATION)]
    )
    prim.user_information = user_info(**ui)
    pdu = P.A_ASSOCIATE_RQ()
    pdu.from_primitive(prim)
    return pdu.encode()


def a_associate_ac(
    results: list[tuple[int, int, str]],
    *,
    calling: str = "STORESCU",
    called: str = "HPACS",
    **ui,
) -> bytes:
    """``results``: (context_id, result, transfer_syntax)."""
    prim = A_ASSOCIATE()
    prim.application_context_name = APP_CONTEXT
    prim.calling_ae_title = calling
    prim.called_ae_title = called
    rl = []
    for cid, result, ts in results:
        pc = PresentationContext()
        pc.context_id = cid
        pc.result = result
        pc.transfer_syntax = [ts]
        rl.append(pc)
    prim.presentation_context_definition_results_list = rl
    prim.user_information = user_info(**ui)
    prim.result = 0
    pdu = P.A_ASSOCIATE_AC()
    pdu.from_primitive(prim)
    return pdu.encode()


def a_associate_rj(result: int = 1, source: int = 1, reason: int = 7) -> bytes:
    prim = A_ASSOCIATE()
    prim.result = result
    prim.result_source = source
    prim.diagnostic = reason
    pdu = P.A_ASSOCIATE_RJ()
    pdu.from_primitive(prim)
    return pdu.encode()


def p_data(*pdvs: tuple[int, bool, bool, bytes]) -> bytes:
    """One P-DATA-TF PDU from (context_id, is_command, is_last, data) PDVs."""
    prim = P_DATA()
    prim.presentation_data_value_list = [
        [cid, bytes([(1 if cmd else 0) | (2 if last else 0)]) + data]
        for cid, cmd, last, data in pdvs
    ]
    pdu = P.P_DATA_TF()
    pdu.from_primitive(prim)
    return pdu.encode()


def release_rq() -> bytes:
    return P.A_RELEASE_RQ().encode()


def release_rp() -> bytes:
    return P.A_RELEASE_RP().encode()


def abort(source: int = 0, reason: int = 0) -> bytes:
    pdu = P.A_ABORT_RQ()
    if source == 0:
        prim = A_ABORT()
        prim.abort_source = 0
        pdu.from_primitive(prim)
    else:
        pdu.source = source
        pdu.reason_diagnostic = reason
    return pdu.encode()


def decode_ref(data: bytes):
    """Decode with pynetdicom: the PDU object for ``data``."""
    cls = {
        1: P.A_ASSOCIATE_RQ,
        2: P.A_ASSOCIATE_AC,
        3: P.A_ASSOCIATE_RJ,
        4: P.P_DATA_TF,
        5: P.A_RELEASE_RQ,
        6: P.A_RELEASE_RP,
        7: P.A_ABORT_RQ,
    }[data[0]]
    pdu = cls()
    pdu.decode(data)
    return pdu


@st.composite
def mutations(draw: st.DrawFn, base: st.SearchStrategy[bytes], min_ops: int = 1) -> bytes:
    """Bytes drawn from ``base``, then flipped, cut, grown and shrunk at random places."""
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(min_ops, 6))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and data:
            del data[pos : pos + draw(st.integers(1, 8))]
    return bytes(data)
