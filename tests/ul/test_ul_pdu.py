"""PDU codec against pynetdicom's encoders/decoders."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pynetdicom.presentation import StoragePresentationContexts, build_context

from hpacs.ul import pdu as U
from tests.ul._ulref import (
    CT_STORAGE,
    EXPLICIT,
    IMPLICIT,
    JPEG_BASELINE,
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


def test_associate_rq_decodes_pynetdicom_bytes() -> None:
    data = a_associate_rq(
        [build_context(VERIFICATION), build_context(CT_STORAGE, [JPEG_BASELINE, EXPLICIT])],
        roles=[(CT_STORAGE, False, True)],
        identity=(2, b"alice", b"secret", True),
        async_ops=(4, 2),
    )
    rq = U.decode(data)
    assert isinstance(rq, U.AssociateRequest)
    assert rq.called_ae == "HPACS" and rq.calling_ae == "STORESCU"
    assert rq.application_context == U.DICOM_APPLICATION_CONTEXT
    assert rq.max_pdu_length == 16382
    assert rq.implementation_class_uid == "1.2.826.0.1.3680043.9.3811.3.0.4"
    assert rq.implementation_version_name == "PYNETDICOM_304"
    assert rq.presentation_contexts[0] == U.PresentationContext(
        1, VERIFICATION, (IMPLICIT, EXPLICIT, "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2")
    )
    assert rq.presentation_contexts[1] == U.PresentationContext(
        3, CT_STORAGE, (JPEG_BASELINE, EXPLICIT)
    )
    assert rq.role_selections == (U.RoleSelection(CT_STORAGE, False, True),)
    assert rq.user_identity == U.UserIdentity(2, True, b"alice", b"secret")
    assert rq.async_ops_window == (4, 2)


def test_associate_rq_roundtrip_through_pynetdicom() -> None:
    contexts = StoragePresentationContexts[:40]
    data = a_associate_rq(contexts, roles=[(CT_STORAGE, True, True)])
    rq = U.decode(data)
    ours = U.encode(rq)
    assert ours == data  # same field order as pynetdicom for these sub-items
    ref = decode_ref(ours)
    assert [str(c.abstract_syntax) for c in ref.presentation_context] == [
        str(c.abstract_syntax) for c in contexts
    ]
    assert ref.user_information.maximum_length == 16382


def test_associate_ac_both_ways() -> None:
    data = a_associate_ac([(1, 0, IMPLICIT), (3, 3, IMPLICIT), (5, 0, JPEG_BASELINE)])
    ac = U.decode(data)
    assert isinstance(ac, U.AssociateAccept)
    assert ac.presentation_contexts == (
        U.PresentationContextResult(1, 0, IMPLICIT),
        U.PresentationContextResult(3, 3, ""),
        U.PresentationContextResult(5, 0, JPEG_BASELINE),
    )
    assert ac.accepted_context_ids == frozenset({1, 5})
    mine = U.AssociateAccept(
        called_ae="HPACS",
        calling_ae="STORESCU",
        presentation_contexts=(
            U.PresentationContextResult(1, 0, EXPLICIT),
            U.PresentationContextResult(3, 4, IMPLICIT),
        ),
        max_pdu_length=65536,
        implementation_class_uid="1.2.3.4",
        implementation_version_name="HPACS_010",
        role_selections=(U.RoleSelection(CT_STORAGE, False, True),),
        user_identity_response=b"token",
    )
    ref = decode_ref(U.encode(mine))
    assert [(c.context_id, c.result) for c in ref.presentation_context] == [(1, 0), (3, 4)]
    assert ref.presentation_context[0].transfer_syntax == EXPLICIT
    ui = ref.user_information
    assert ui.maximum_length == 65536
    assert ui.implementation_class_uid == "1.2.3.4"
    assert ui.implementation_version_name == "HPACS_010"
    assert ui.role_selection[CT_STORAGE].scp_role == 1
    assert ui.user_identity.response == b"token"
    back = U.decode(U.encode(mine))
    assert isinstance(back, U.AssociateAccept)
    # a refused context's transfer syntax is not significant and decodes as ""
    assert back.presentation_contexts[1] == U.PresentationContextResult(3, 4, "")
    assert back.role_selections == mine.role_selections
    assert back.user_identity_response == b"token"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (a_associate_rj(1, 1, 7), U.AssociateReject(1, 1, 7)),
        (a_associate_rj(2, 3, 2), U.AssociateReject(2, 3, 2)),
        (release_rq(), U.ReleaseRequest()),
        (release_rp(), U.ReleaseReply()),
        (abort(0, 0), U.Abort(0, 0)),
        (abort(2, 6), U.Abort(2, 6)),
    ],
)
def test_small_pdus_both_ways(data: bytes, expected: object) -> None:
    assert U.decode(data) == expected
    assert U.encode(expected) == data  # type: ignore[arg-type]


def test_encode_abort_bytes() -> None:
    assert U.encode_abort(2, 2) == abort(2, 2) == b"\x07\x00\x00\x00\x00\x04\x00\x00\x02\x02"


def test_pdata_decode_many_pdvs_zero_copy() -> None:
    data = p_data((1, True, True, b"cmd"), (3, False, False, b"x" * 1000), (3, False, True, b""))
    pdvs = U.decode(data)
    assert pdvs == [
        U.PDV(1, True, True, memoryview(b"cmd")),
        U.PDV(3, False, False, memoryview(b"x" * 1000)),
        U.PDV(3, False, True, memoryview(b"")),
    ]
    assert all(isinstance(p.data, memoryview) for p in pdvs)
    assert pdvs[1].data.obj is data  # a view into the received bytes, not a copy


@pytest.mark.parametrize("size", [0, 1, 9, 10, 11, 100, 16376, 16377, 100_001])
@pytest.mark.parametrize("max_pdu", [16, 17, 1000, 16382])
def test_pdata_encode_fragments_to_peer_max(size: int, max_pdu: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    bufs = U.encode_pdata(7, False, payload, max_pdu)
    stream = b"".join(bufs)
    got = []
    off = 0
    while off < len(stream):
        length = int.from_bytes(stream[off + 2 : off + 6], "big")
        assert length <= max_pdu
        ref = decode_ref(stream[off : off + 6 + length])
        for item in ref.presentation_data_value_items:
            got.append((item.presentation_context_id, item.presentation_data_value))
        off += 6 + length
    assert b"".join(v[1:] for _, v in got) == payload
    assert all(cid == 7 for cid, _ in got)
    assert [v[0] for _, v in got] == [0] * (len(got) - 1) + [2]  # data set, last on the final


def test_pdata_encode_command_and_not_last() -> None:
    bufs = U.encode_pdata(1, True, b"abc", 100, last=False)
    assert U.decode(b"".join(bufs)) == [U.PDV(1, True, False, memoryview(b"abc"))]
    with pytest.raises(ValueError):
        U.encode_pdata(0, True, b"abc", 100)
    with pytest.raises(ValueError):
        U.encode_pdata(1, True, b"abc", 6)


@settings(max_examples=300, deadline=None)
@given(size=st.integers(0, 300_000), max_pdu=st.integers(7, 140_000), command=st.booleans(),
       last=st.booleans(), context_id=st.integers(1, 255))
def test_pdata_headers_frame_like_encode_pdata(size: int, max_pdu: int, command: bool,
                                               last: bool, context_id: int) -> None:
    """Headers written between fragments an adapter sends itself (sendfile) give the bytes
    encode_pdata gives."""
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    framed = b"".join(U.encode_pdata(context_id, command, payload, max_pdu, last=last))
    headers = U.pdata_headers(context_id, command, size, max_pdu, last=last)
    out, off = [], 0
    for header, n in headers:
        out += [header, payload[off:off + n]]
        off += n
    assert off == size
    assert b"".join(out) == framed


def test_pdata_headers_refuse_what_encode_pdata_refuses() -> None:
    with pytest.raises(ValueError):
        U.pdata_headers(0, False, 10, 100)
    with pytest.raises(ValueError):
        U.pdata_headers(1, False, 10, 6)


def _hdr(t: int, body: bytes) -> bytes:
    return bytes([t, 0]) + len(body).to_bytes(4, "big") + body


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x01\x00\x00", U.ABORT_REASON_INVALID_PARAMETER),  # truncated header
        (_hdr(9, b"1234"), U.ABORT_REASON_UNRECOGNIZED_PDU),
        (_hdr(4, b"\x00\x00\x00\x01\x01"), U.ABORT_REASON_INVALID_PARAMETER),  # PDV len < 2
        (_hdr(4, b"\x00\x00\x00\x09\x01\x03abc"), U.ABORT_REASON_INVALID_PARAMETER),  # overrun
        (_hdr(4, b"\x00\x00"), U.ABORT_REASON_INVALID_PARAMETER),
        (_hdr(5, b"\x00\x00\x00"), U.ABORT_REASON_INVALID_PARAMETER),
        (_hdr(7, b"\x00\x00\x00\x00\x00"), U.ABORT_REASON_INVALID_PARAMETER),
        (_hdr(1, bytes(67)), U.ABORT_REASON_INVALID_PARAMETER),
        (_hdr(1, bytes(68)), U.ABORT_REASON_INVALID_PARAMETER),  # no application context
        (a_associate_rq()[:-1], U.ABORT_REASON_INVALID_PARAMETER),
    ],
)
def test_malformed_raises_pdu_error(data: bytes, reason: int) -> None:
    with pytest.raises(U.PDUError) as info:
        U.decode(data)
    assert info.value.reason == reason
    assert isinstance(info.value, ValueError)


def test_bad_uid_and_bad_subitem() -> None:
    good = a_associate_rq()
    bad = good.replace(b"1.2.840.10008.1.1", b"1.2.840.10008.1.X", 1)
    with pytest.raises(U.PDUError):
        U.decode(bad)
    # an unknown sub-item inside a presentation context
    body = good.replace(b"\x30\x00\x00\x11", b"\x31\x00\x00\x11", 1)
    with pytest.raises(U.PDUError) as info:
        U.decode(body)
    assert info.value.reason == U.ABORT_REASON_UNRECOGNIZED_PARAMETER


def test_unknown_items_are_ignored() -> None:
    data = a_associate_rq()
    extra = b"\x60\x00\x00\x02ab"
    length = int.from_bytes(data[2:6], "big") + len(extra)
    patched = data[:2] + length.to_bytes(4, "big") + data[6:] + extra
    assert U.decode(patched) == U.decode(data)
