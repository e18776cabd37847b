"""PDU codec for the DICOM Upper Layer (PS3.8 §9.3).

Our own codec rather than pynetdicom's classes: those raise whatever their slicing happens to
raise (IndexError, struct.error, KeyError, AssertionError...) and copy on every field. Here every
malformed input raises the one typed :class:`PDUError`, whose ``reason`` is the A-ABORT
provider reason to send back. pynetdicom's encoders stay the reference in the tests.

P-DATA-TF is the hot path: :func:`decode_pdata` slices PDVs out of a memoryview without
copying, :func:`encode_pdata` returns a header/payload buffer list ready for ``writelines``.
``PDV``, ``PDUError`` and ``decode_pdata`` are defined in ``hpacs._ext.pdata`` (shared with the
compiled receive path, which must not import this package) and re-exported here.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from hpacs._ext.pdata import (  # noqa: F401 (re-exported: users import them from here)
    ABORT_REASON_INVALID_PARAMETER,
    ABORT_REASON_UNRECOGNIZED_PDU,
    P_DATA_TF,
    PDV,
    PDUError,
    decode_pdata,
)

# PDU types (PS3.8 Table 9-11 and following)
A_ASSOCIATE_RQ = 0x01
A_ASSOCIATE_AC = 0x02
A_ASSOCIATE_RJ = 0x03
# P_DATA_TF = 0x04 comes from hpacs._ext.pdata
A_RELEASE_RQ = 0x05
A_RELEASE_RP = 0x06
A_ABORT = 0x07
PDU_TYPES = frozenset(range(1, 8))

#: The only application context name DICOM defines (PS3.7 Annex A.2.1).
DICOM_APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"

# A-ABORT source (PS3.8 Table 9-26)
ABORT_SOURCE_USER = 0
ABORT_SOURCE_PROVIDER = 2
# A-ABORT reasons, meaningful with source 2
ABORT_REASON_NOT_SPECIFIED = 0
# ABORT_REASON_UNRECOGNIZED_PDU = 1 and _INVALID_PARAMETER = 6 come from hpacs._ext.pdata
ABORT_REASON_UNEXPECTED_PDU = 2
ABORT_REASON_UNRECOGNIZED_PARAMETER = 4
ABORT_REASON_UNEXPECTED_PARAMETER = 5

# A-ASSOCIATE-RJ (PS3.8 Table 9-21)
REJECT_PERMANENT = 1
REJECT_TRANSIENT = 2
REJECT_SOURCE_USER = 1
REJECT_SOURCE_ACSE = 2
REJECT_SOURCE_PRESENTATION = 3
REJECT_USER_NO_REASON = 1
REJECT_USER_APP_CONTEXT = 2
REJECT_USER_CALLING_AE = 3
REJECT_USER_CALLED_AE = 7
REJECT_ACSE_NO_REASON = 1
REJECT_ACSE_PROTOCOL_VERSION = 2
REJECT_PRESENTATION_CONGESTION = 1
REJECT_PRESENTATION_LOCAL_LIMIT = 2

# Presentation context results (PS3.8 Table 9-18)
PC_ACCEPTANCE = 0
PC_USER_REJECTION = 1
PC_PROVIDER_REJECTION = 2
PC_ABSTRACT_SYNTAX_NOT_SUPPORTED = 3
PC_TRANSFER_SYNTAXES_NOT_SUPPORTED = 4

_HEADER = struct.Struct(">BxI")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_PDATA_HDR = struct.Struct(">BxIIBB")  # PDU header + one PDV item header
_ITEM_HDR = struct.Struct(">BxH")


# ---------------------------------------------------------------------------------------------
# What the user sees
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PresentationContext:
    """A proposed presentation context (A-ASSOCIATE-RQ item 0x20)."""

    context_id: int
    abstract_syntax: str
    transfer_syntaxes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PresentationContextResult:
    """The acceptor's answer for one context (A-ASSOCIATE-AC item 0x21)."""

    context_id: int
    result: int
    transfer_syntax: str = ""  # only significant when result == PC_ACCEPTANCE


@dataclass(frozen=True, slots=True)
class RoleSelection:
    """SCP/SCU role selection sub-item (0x54), PS3.7 D.3.3.4."""

    sop_class_uid: str
    scu_role: bool
    scp_role: bool


@dataclass(frozen=True, slots=True)
class UserIdentity:
    """User identity negotiation request (0x58), PS3.7 D.3.3.7."""

    identity_type: int
    response_requested: bool
    primary: bytes
    secondary: bytes = b""


@dataclass(frozen=True, slots=True)
class ExtendedNegotiation:
    """SOP class extended negotiation sub-item (0x56): opaque application info."""

    sop_class_uid: str
    app_info: bytes


@dataclass(frozen=True, slots=True)
class CommonExtendedNegotiation:
    """SOP class common extended negotiation sub-item (0x57), request only."""

    sop_class_uid: str
    service_class_uid: str
    related_general_sop_classes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class AssociateRequest:
    """A-ASSOCIATE-RQ: what a requestor proposes."""

    called_ae: str
    calling_ae: str
    presentation_contexts: tuple[PresentationContext, ...]
    application_context: str = DICOM_APPLICATION_CONTEXT
    max_pdu_length: int = 0  # 0 = no limit (PS3.8 D.1)
    implementation_class_uid: str = ""
    implementation_version_name: str = ""
    role_selections: tuple[RoleSelection, ...] = ()
    async_ops_window: tuple[int, int] | None = None  # (invoked, performed)
    user_identity: UserIdentity | None = None
    extended_negotiation: tuple[ExtendedNegotiation, ...] = ()
    common_extended_negotiation: tuple[CommonExtendedNegotiation, ...] = ()
    protocol_version: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class AssociateAccept:
    """A-ASSOCIATE-AC: the acceptor's answer (AE titles echo the request)."""

    called_ae: str
    calling_ae: str
    presentation_contexts: tuple[PresentationContextResult, ...]
    application_context: str = DICOM_APPLICATION_CONTEXT
    max_pdu_length: int = 0
    implementation_class_uid: str = ""
    implementation_version_name: str = ""
    role_selections: tuple[RoleSelection, ...] = ()
    async_ops_window: tuple[int, int] | None = None
    user_identity_response: bytes | None = None
    extended_negotiation: tuple[ExtendedNegotiation, ...] = ()
    protocol_version: int = 1

    @property
    def accepted_context_ids(self) -> frozenset[int]:
        return frozenset(
            pc.context_id for pc in self.presentation_contexts if pc.result == PC_ACCEPTANCE
        )


@dataclass(frozen=True, slots=True)
class AssociateReject:
    """A-ASSOCIATE-RJ: result (1 permanent, 2 transient), source, reason/diag."""

    result: int
    source: int
    reason: int


@dataclass(frozen=True, slots=True)
class ReleaseRequest:
    """A-RELEASE-RQ."""


@dataclass(frozen=True, slots=True)
class ReleaseReply:
    """A-RELEASE-RP."""


@dataclass(frozen=True, slots=True)
class Abort:
    """A-ABORT: source 0 service-user, 2 service-provider; reason meaningful for source 2."""

    source: int = ABORT_SOURCE_USER
    reason: int = ABORT_REASON_NOT_SPECIFIED


AssociationPDU = (
    AssociateRequest | AssociateAccept | AssociateReject | ReleaseRequest | ReleaseReply | Abort
)

# ---------------------------------------------------------------------------------------------
# P-DATA-TF fast path
# ---------------------------------------------------------------------------------------------


def encode_pdata(
    context_id: int,
    is_command: bool,
    payload: bytes | bytearray | memoryview,
    max_pdu_length: int,
    *,
    last: bool = True,
) -> list[bytes | memoryview]:
    """Fragment ``payload`` into P-DATA-TF PDUs of at most ``max_pdu_length`` body bytes.

    Returns [header, data, header, data, ...] so the transport can ``writelines`` without a
    copy; ``b"".join()`` it for one buffer. ``last`` sets the last-fragment bit on the final
    PDV (clear it to stream a data set in several calls).
    """
    if not 0 < context_id < 256:
        raise ValueError(f"presentation context ID {context_id} out of range")
    chunk = max_pdu_length - 6
    if chunk < 1:
        raise ValueError(f"max PDU length {max_pdu_length} too small to carry data")
    mv = payload if isinstance(payload, memoryview) else memoryview(payload)
    if mv.itemsize != 1 or mv.ndim != 1:
        mv = mv.cast("B")
    n = len(mv)
    mch = 1 if is_command else 0
    pack = _PDATA_HDR.pack
    out: list[bytes | memoryview] = []
    if n <= chunk:
        out.append(pack(P_DATA_TF, n + 6, n + 2, context_id, mch | (2 if last else 0)))
        if n:
            out.append(mv)
        return out
    off = 0
    while off < n:
        end = min(off + chunk, n)
        size = end - off
        flag = mch | (2 if last and end == n else 0)
        out.append(pack(P_DATA_TF, size + 6, size + 2, context_id, flag))
        out.append(mv[off:end])
        off = end
    return out


def pdata_headers(
    context_id: int, is_command: bool, length: int, max_pdu_length: int, *, last: bool = True
) -> list[tuple[bytes, int]]:
    """The framing :func:`encode_pdata` gives ``length`` payload bytes, without the payload:
    [(PDU+PDV header, payload bytes after it), ...]. For an adapter that puts the payload on
    the wire itself (``sendfile`` from the stored file) with each header written before its
    fragment; the bytes on the wire are those of ``encode_pdata``."""
    if not 0 < context_id < 256:
        raise ValueError(f"presentation context ID {context_id} out of range")
    chunk = max_pdu_length - 6
    if chunk < 1:
        raise ValueError(f"max PDU length {max_pdu_length} too small to carry data")
    mch = 1 if is_command else 0
    pack = _PDATA_HDR.pack
    if length <= chunk:
        return [(pack(P_DATA_TF, length + 6, length + 2, context_id, mch | (2 if last else 0)),
                 length)]
    out: list[tuple[bytes, int]] = []
    off = 0
    while off < length:
        size = min(chunk, length - off)
        off += size
        flag = mch | (2 if last and off == length else 0)
        out.append((pack(P_DATA_TF, size + 6, size + 2, context_id, flag), size))
    return out


# ---------------------------------------------------------------------------------------------
# Association PDUs: decoding
# ---------------------------------------------------------------------------------------------


def _ae(raw: memoryview) -> str:
    return bytes(raw).decode("latin-1").strip(" \x00")


def _uid(raw: memoryview | bytes, what: str) -> str:
    try:
        text = bytes(raw).decode("ascii")
    except UnicodeDecodeError:
        raise PDUError(f"{what} is not ASCII") from None
    text = text.rstrip("\x00 ")
    if len(text) > 64 or not text or any(c not in "0123456789." for c in text):
        raise PDUError(f"{what} {text!r} is not a valid UID")
    return text


def _items(mv: memoryview, what: str) -> list[tuple[int, memoryview]]:
    """Cut a run of (type, reserved, 2-byte length) items; their bodies as memoryviews."""
    out = []
    off = 0
    n = len(mv)
    while off < n:
        if n - off < 4:
            raise PDUError(f"truncated item header in {what}")
        itype, length = _ITEM_HDR.unpack_from(mv, off)
        end = off + 4 + length
        if end > n:
            raise PDUError(f"item 0x{itype:02X} overruns {what}")
        out.append((itype, mv[off + 4 : end]))
        off = end
    return out


def _u16_field(mv: memoryview, off: int, what: str) -> tuple[memoryview, int]:
    """A 2-byte-length-prefixed field at ``off``: (value, offset after it)."""
    if off + 2 > len(mv):
        raise PDUError(f"truncated {what}")
    length = _U16.unpack_from(mv, off)[0]
    end = off + 2 + length
    if end > len(mv):
        raise PDUError(f"{what} overruns its item")
    return mv[off + 2 : end], end


class _UserInfo:
    __slots__ = (
        "async_ops",
        "common_ext",
        "ext_neg",
        "identity",
        "identity_response",
        "impl_uid",
        "impl_version",
        "max_length",
        "roles",
    )

    def __init__(self) -> None:
        self.max_length = 0
        self.impl_uid = ""
        self.impl_version = ""
        self.async_ops: tuple[int, int] | None = None
        self.roles: list[RoleSelection] = []
        self.ext_neg: list[ExtendedNegotiation] = []
        self.common_ext: list[CommonExtendedNegotiation] = []
        self.identity: UserIdentity | None = None
        self.identity_response: bytes | None = None


def _decode_user_info(mv: memoryview) -> _UserInfo:
    ui = _UserInfo()
    for itype, body in _items(mv, "user information"):
        if itype == 0x51:
            if len(body) != 4:
                raise PDUError("maximum length sub-item must be 4 bytes")
            ui.max_length = _U32.unpack_from(body)[0]
        elif itype == 0x52:
            ui.impl_uid = _uid(body, "implementation class UID")
        elif itype == 0x55:
            ui.impl_version = bytes(body).decode("latin-1").strip(" \x00")
        elif itype == 0x53:
            if len(body) != 4:
                raise PDUError("asynchronous operations window sub-item must be 4 bytes")
            ui.async_ops = (_U16.unpack_from(body)[0], _U16.unpack_from(body, 2)[0])
        elif itype == 0x54:
            uid, off = _u16_field(body, 0, "role selection UID")
            if off + 2 != len(body):
                raise PDUError("role selection sub-item has the wrong length")
            ui.roles.append(
                RoleSelection(_uid(uid, "role selection UID"), bool(body[off]), bool(body[off + 1]))
            )
        elif itype == 0x56:
            uid, off = _u16_field(body, 0, "extended negotiation UID")
            ui.ext_neg.append(
                ExtendedNegotiation(_uid(uid, "extended negotiation UID"), bytes(body[off:]))
            )
        elif itype == 0x57:
            sop, off = _u16_field(body, 0, "common extended negotiation SOP class")
            svc, off = _u16_field(body, off, "common extended negotiation service class")
            rel, off = _u16_field(body, off, "related general SOP classes")
            if off != len(body):
                raise PDUError("common extended negotiation sub-item has trailing bytes")
            related = []
            roff = 0
            while roff < len(rel):
                one, roff = _u16_field(rel, roff, "related general SOP class")
                related.append(_uid(one, "related general SOP class"))
            ui.common_ext.append(
                CommonExtendedNegotiation(
                    _uid(sop, "SOP class UID"), _uid(svc, "service class UID"), tuple(related)
                )
            )
        elif itype == 0x58:
            if len(body) < 2:
                raise PDUError("truncated user identity sub-item")
            primary, off = _u16_field(body, 2, "user identity primary field")
            secondary, off = _u16_field(body, off, "user identity secondary field")
            if off != len(body):
                raise PDUError("user identity sub-item has trailing bytes")
            ui.identity = UserIdentity(body[0], bool(body[1]), bytes(primary), bytes(secondary))
        elif itype == 0x59:
            resp, off = _u16_field(body, 0, "user identity server response")
            if off != len(body):
                raise PDUError("user identity response sub-item has trailing bytes")
            ui.identity_response = bytes(resp)
        # Unknown sub-items are ignored (PS3.7 D.3.3: not-understood items are not an error).
    return ui


def _decode_associate(pdu_type: int, mv: memoryview) -> AssociateRequest | AssociateAccept:
    if len(mv) < 68:
        raise PDUError("A-ASSOCIATE PDU shorter than its fixed fields")
    version = _U16.unpack_from(mv)[0]
    called = _ae(mv[4:20])
    calling = _ae(mv[20:36])
    app_context: str | None = None
    rq_contexts: list[PresentationContext] = []
    ac_contexts: list[PresentationContextResult] = []
    ui: _UserInfo | None = None
    for itype, body in _items(mv[68:], "A-ASSOCIATE PDU"):
        if itype == 0x10:
            if app_context is not None:
                raise PDUError("more than one application context item")
            app_context = _uid(body, "application context name")
        elif itype == 0x20 and pdu_type == A_ASSOCIATE_RQ:
            if len(body) < 4:
                raise PDUError("truncated presentation context item")
            abstract: str | None = None
            syntaxes: list[str] = []
            for stype, sbody in _items(body[4:], "presentation context item"):
                if stype == 0x30:
                    if abstract is not None:
                        raise PDUError("more than one abstract syntax in a context")
                    abstract = _uid(sbody, "abstract syntax")
                elif stype == 0x40:
                    syntaxes.append(_uid(sbody, "transfer syntax"))
                else:
                    raise PDUError(
                        f"unknown sub-item 0x{stype:02X} in presentation context",
                        ABORT_REASON_UNRECOGNIZED_PARAMETER,
                    )
            if abstract is None or not syntaxes:
                raise PDUError("presentation context without abstract or transfer syntax")
            rq_contexts.append(PresentationContext(body[0], abstract, tuple(syntaxes)))
        elif itype == 0x21 and pdu_type == A_ASSOCIATE_AC:
            if len(body) < 4:
                raise PDUError("truncated presentation context item")
            result = body[2]
            ts = ""
            for stype, sbody in _items(body[4:], "presentation context item"):
                if stype != 0x40:
                    raise PDUError(
                        f"unknown sub-item 0x{stype:02X} in presentation context",
                        ABORT_REASON_UNRECOGNIZED_PARAMETER,
                    )
                if result == PC_ACCEPTANCE:  # the value is not significant otherwise
                    ts = _uid(sbody, "transfer syntax")
            if result > 4:
                raise PDUError(f"presentation context result {result} is not defined")
            if result == PC_ACCEPTANCE and not ts:
                raise PDUError("accepted presentation context without a transfer syntax")
            ac_contexts.append(PresentationContextResult(body[0], result, ts))
        elif itype == 0x50:
            if ui is not None:
                raise PDUError("more than one user information item")
            ui = _decode_user_info(body)
        elif itype in (0x20, 0x21):
            raise PDUError(
                f"item 0x{itype:02X} not allowed in this PDU", ABORT_REASON_UNEXPECTED_PARAMETER
            )
        # other item types: ignored
    if app_context is None:
        raise PDUError("A-ASSOCIATE PDU without an application context")
    if ui is None:
        ui = _UserInfo()
    if pdu_type == A_ASSOCIATE_RQ:
        return AssociateRequest(
            called_ae=called,
            calling_ae=calling,
            presentation_contexts=tuple(rq_contexts),
            application_context=app_context,
            max_pdu_length=ui.max_length,
            implementation_class_uid=ui.impl_uid,
            implementation_version_name=ui.impl_version,
            role_selections=tuple(ui.roles),
            async_ops_window=ui.async_ops,
            user_identity=ui.identity,
            extended_negotiation=tuple(ui.ext_neg),
            common_extended_negotiation=tuple(ui.common_ext),
            protocol_version=version,
        )
    return AssociateAccept(
        called_ae=called,
        calling_ae=calling,
        presentation_contexts=tuple(ac_contexts),
        application_context=app_context,
        max_pdu_length=ui.max_length,
        implementation_class_uid=ui.impl_uid,
        implementation_version_name=ui.impl_version,
        role_selections=tuple(ui.roles),
        async_ops_window=ui.async_ops,
        user_identity_response=ui.identity_response,
        extended_negotiation=tuple(ui.ext_neg),
        protocol_version=version,
    )


def decode_body(pdu_type: int, body: memoryview | bytes) -> AssociationPDU | list[PDV]:
    """Decode one PDU body (the bytes after its 6-byte header). Raises only PDUError."""
    mv = body if isinstance(body, memoryview) else memoryview(body)
    if pdu_type == P_DATA_TF:
        return decode_pdata(mv)
    if pdu_type in (A_ASSOCIATE_RQ, A_ASSOCIATE_AC):
        return _decode_associate(pdu_type, mv)
    if pdu_type in (A_ASSOCIATE_RJ, A_RELEASE_RQ, A_RELEASE_RP, A_ABORT):
        if len(mv) != 4:
            raise PDUError(f"PDU type 0x{pdu_type:02X} must have a 4-byte body")
        if pdu_type == A_ASSOCIATE_RJ:
            return AssociateReject(mv[1], mv[2], mv[3])
        if pdu_type == A_RELEASE_RQ:
            return ReleaseRequest()
        if pdu_type == A_RELEASE_RP:
            return ReleaseReply()
        return Abort(mv[2], mv[3])
    raise PDUError(f"unrecognized PDU type 0x{pdu_type:02X}", ABORT_REASON_UNRECOGNIZED_PDU)


def decode(data: bytes | bytearray | memoryview) -> AssociationPDU | list[PDV]:
    """Decode one whole PDU (header included). Raises only PDUError."""
    mv = memoryview(data)
    if len(mv) < 6:
        raise PDUError("truncated PDU header")
    pdu_type, length = _HEADER.unpack_from(mv)
    if len(mv) != 6 + length:
        raise PDUError(f"PDU length field {length} does not match {len(mv) - 6} body bytes")
    return decode_body(pdu_type, mv[6:])


# ---------------------------------------------------------------------------------------------
# Association PDUs: encoding
# ---------------------------------------------------------------------------------------------


def _item(itype: int, value: bytes) -> bytes:
    if len(value) > 0xFFFF:
        raise ValueError(f"item 0x{itype:02X} too long ({len(value)} bytes)")
    return _ITEM_HDR.pack(itype, len(value)) + value


def _ae_bytes(ae: str) -> bytes:
    raw = ae.encode("ascii")
    if len(raw) > 16:
        raise ValueError(f"AE title {ae!r} longer than 16 characters")
    return raw.ljust(16)


def _uid_bytes(uid: str) -> bytes:
    return uid.encode("ascii")


def _u16_prefixed(value: bytes) -> bytes:
    return _U16.pack(len(value)) + value


def _encode_user_info(
    max_length: int,
    impl_uid: str,
    impl_version: str,
    async_ops: tuple[int, int] | None,
    roles: tuple[RoleSelection, ...],
    ext_neg: tuple[ExtendedNegotiation, ...],
    common_ext: tuple[CommonExtendedNegotiation, ...] = (),
    identity: UserIdentity | None = None,
    identity_response: bytes | None = None,
) -> bytes:
    parts = [_item(0x51, _U32.pack(max_length))]
    if impl_uid:
        parts.append(_item(0x52, _uid_bytes(impl_uid)))
    if async_ops is not None:
        parts.append(_item(0x53, _U16.pack(async_ops[0]) + _U16.pack(async_ops[1])))
    for role in roles:
        parts.append(
            _item(
                0x54,
                _u16_prefixed(_uid_bytes(role.sop_class_uid))
                + bytes((int(role.scu_role), int(role.scp_role))),
            )
        )
    if impl_version:
        parts.append(_item(0x55, impl_version.encode("ascii")))
    for ext in ext_neg:
        parts.append(_item(0x56, _u16_prefixed(_uid_bytes(ext.sop_class_uid)) + ext.app_info))
    for cext in common_ext:
        related = b"".join(_u16_prefixed(_uid_bytes(u)) for u in cext.related_general_sop_classes)
        parts.append(
            _item(
                0x57,
                _u16_prefixed(_uid_bytes(cext.sop_class_uid))
                + _u16_prefixed(_uid_bytes(cext.service_class_uid))
                + _u16_prefixed(related),
            )
        )
    if identity is not None:
        parts.append(
            _item(
                0x58,
                bytes((identity.identity_type, int(identity.response_requested)))
                + _u16_prefixed(identity.primary)
                + _u16_prefixed(identity.secondary),
            )
        )
    if identity_response is not None:
        parts.append(_item(0x59, _u16_prefixed(identity_response)))
    return _item(0x50, b"".join(parts))


def _frame(pdu_type: int, body: bytes) -> bytes:
    return _HEADER.pack(pdu_type, len(body)) + body


def encode(pdu: AssociationPDU) -> bytes:
    """Encode an association-control PDU (everything but P-DATA-TF) to bytes."""
    if isinstance(pdu, AssociateRequest):
        items = [_item(0x10, _uid_bytes(pdu.application_context))]
        for pc in pdu.presentation_contexts:
            sub = [_item(0x30, _uid_bytes(pc.abstract_syntax))]
            sub.extend(_item(0x40, _uid_bytes(ts)) for ts in pc.transfer_syntaxes)
            items.append(_item(0x20, bytes((pc.context_id, 0, 0, 0)) + b"".join(sub)))
        items.append(
            _encode_user_info(
                pdu.max_pdu_length,
                pdu.implementation_class_uid,
                pdu.implementation_version_name,
                pdu.async_ops_window,
                pdu.role_selections,
                pdu.extended_negotiation,
                pdu.common_extended_negotiation,
                identity=pdu.user_identity,
            )
        )
        fixed = (
            _U16.pack(pdu.protocol_version)
            + b"\x00\x00"
            + _ae_bytes(pdu.called_ae)
            + _ae_bytes(pdu.calling_ae)
            + bytes(32)
        )
        return _frame(A_ASSOCIATE_RQ, fixed + b"".join(items))
    if isinstance(pdu, AssociateAccept):
        items = [_item(0x10, _uid_bytes(pdu.application_context))]
        for res in pdu.presentation_contexts:
            # PS3.8 9.3.3.2: the sub-item is always present; for a refused context its value
            # is not significant (negotiate() echoes the first proposal, as pynetdicom does).
            ts = _uid_bytes(res.transfer_syntax)
            items.append(_item(0x21, bytes((res.context_id, 0, res.result, 0)) + _item(0x40, ts)))
        items.append(
            _encode_user_info(
                pdu.max_pdu_length,
                pdu.implementation_class_uid,
                pdu.implementation_version_name,
                pdu.async_ops_window,
                pdu.role_selections,
                pdu.extended_negotiation,
                identity_response=pdu.user_identity_response,
            )
        )
        fixed = (
            _U16.pack(pdu.protocol_version)
            + b"\x00\x00"
            + _ae_bytes(pdu.called_ae)
            + _ae_bytes(pdu.calling_ae)
            + bytes(32)
        )
        return _frame(A_ASSOCIATE_AC, fixed + b"".join(items))
    if isinstance(pdu, AssociateReject):
        return _frame(A_ASSOCIATE_RJ, bytes((0, pdu.result, pdu.source, pdu.reason)))
    if isinstance(pdu, ReleaseRequest):
        return _frame(A_RELEASE_RQ, bytes(4))
    if isinstance(pdu, ReleaseReply):
        return _frame(A_RELEASE_RP, bytes(4))
    if isinstance(pdu, Abort):
        return _frame(A_ABORT, bytes((0, 0, pdu.source, pdu.reason)))
    raise TypeError(f"cannot encode {type(pdu).__name__}")


def encode_abort(
    source: int = ABORT_SOURCE_USER, reason: int = ABORT_REASON_NOT_SPECIFIED
) -> bytes:
    """The 10 bytes of an A-ABORT PDU."""
    return _frame(A_ABORT, bytes((0, 0, source, reason)))
