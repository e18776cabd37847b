"""The command set codec against pynetdicom's (the reference encoder/decoder)."""

import contextlib
from io import BytesIO

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pynetdicom.dsutils import decode, encode

from hpacs.dimse import commands as c


def _reference(**kw) -> bytes:
    ds = Dataset()
    for k, v in kw.items():
        setattr(ds, k, v)
    return encode(ds, True, True)


def test_decodes_a_pynetdicom_c_store_rq():
    raw = _reference(CommandGroupLength=0, AffectedSOPClassUID="1.2.840.10008.5.1.4.1.1.2",
                     CommandField=1, MessageID=7, Priority=2, CommandDataSetType=0,
                     AffectedSOPInstanceUID="1.2.3.4.5", MoveOriginatorApplicationEntityTitle="ME",
                     MoveOriginatorMessageID=3)
    cmd = c.decode_command(raw)
    assert cmd[c.COMMAND_FIELD] == c.CommandField.C_STORE_RQ
    assert cmd[c.MESSAGE_ID] == 7
    assert cmd[c.PRIORITY] == 2
    assert cmd[c.AFFECTED_SOP_CLASS_UID] == "1.2.840.10008.5.1.4.1.1.2"
    assert cmd[c.AFFECTED_SOP_INSTANCE_UID] == "1.2.3.4.5"
    assert cmd[c.MOVE_ORIGINATOR_AE_TITLE] == "ME"
    assert cmd[c.COMMAND_DATA_SET_TYPE] != c.NO_DATASET


def test_response_is_read_back_by_pynetdicom():
    request = {c.COMMAND_FIELD: 1, c.MESSAGE_ID: 9, c.AFFECTED_SOP_CLASS_UID: "1.2.3",
               c.AFFECTED_SOP_INSTANCE_UID: "1.2.3.4", c.COMMAND_DATA_SET_TYPE: 0}
    raw = c.response_to(request, c.CommandField.C_STORE_RSP, 0xA900,
                        {c.ERROR_COMMENT: "mismatch", c.OFFENDING_ELEMENT: (0x00080018,)})
    ds = decode(BytesIO(raw), True, True)
    assert ds.CommandGroupLength == len(raw) - 12
    assert ds.CommandField == 0x8001
    assert ds.MessageIDBeingRespondedTo == 9
    assert ds.CommandDataSetType == 0x0101
    assert ds.Status == 0xA900
    assert ds.ErrorComment == "mismatch"
    assert ds.OffendingElement == 0x00080018
    assert ds.AffectedSOPInstanceUID == "1.2.3.4"
    assert c.decode_command(raw)[c.STATUS] == 0xA900


@pytest.mark.parametrize("raw", [
    b"\x00\x00\x00\x01\x02",  # header cut short
    b"\x00\x00\x00\x01\x02\x00\x00\x00\x01",  # value overruns
    b"\x08\x00\x18\x00\x00\x00\x00\x00",  # wrong group
    b"\x00\x00\x10\x01\x02\x00\x00\x00\x01\x00",  # no CommandField
    b"\x00\x00\x00\x01\x03\x00\x00\x00\x01\x00\x00",  # US of length 3
])
def test_malformed_command_sets_raise_command_error(raw):
    with pytest.raises(c.CommandError):
        c.decode_command(raw)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_only_raise_command_error(raw):
    with contextlib.suppress(c.CommandError):
        c.decode_command(raw)


_uids = st.one_of(st.none(), st.just(""),
                  st.from_regex(r"[0-9]{1,3}(\.[0-9]{1,8}){0,6}", fullmatch=True))


@settings(max_examples=300, deadline=None)
@given(msg_id=st.integers(0, 0xFFFF), sop_class=_uids, sop_instance=_uids,
       field=st.sampled_from([c.CommandField.C_STORE_RSP, c.CommandField.C_ECHO_RSP, 0x8020]),
       code=st.integers(0, 0xFFFF))
def test_plain_response_packs_what_encode_command_encodes(msg_id, sop_class, sop_instance, field,
                                                          code):
    request = {c.COMMAND_FIELD: 1, c.MESSAGE_ID: msg_id}
    if sop_class is not None:
        request[c.AFFECTED_SOP_CLASS_UID] = sop_class
    if sop_instance is not None:
        request[c.AFFECTED_SOP_INSTANCE_UID] = sop_instance
    command = {c.COMMAND_FIELD: int(field), c.MESSAGE_ID_BEING_RESPONDED_TO: msg_id,
               c.COMMAND_DATA_SET_TYPE: c.NO_DATASET, c.STATUS: code}
    if sop_class:
        command[c.AFFECTED_SOP_CLASS_UID] = sop_class
    if sop_instance:
        command[c.AFFECTED_SOP_INSTANCE_UID] = sop_instance
    assert c.response_to(request, field, code) == c.encode_command(command)


def test_success_response_is_read_back_by_pynetdicom():
    request = {c.COMMAND_FIELD: c.CommandField.C_STORE_RQ, c.MESSAGE_ID: 7,
               c.AFFECTED_SOP_CLASS_UID: "1.2.840.10008.5.1.4.1.1.2",
               c.AFFECTED_SOP_INSTANCE_UID: "1.2.3.45"}
    ds = decode(BytesIO(c.response_to(request, c.CommandField.C_STORE_RSP, 0)), True, True)
    assert (ds.CommandField, ds.MessageIDBeingRespondedTo, ds.Status) == (0x8001, 7, 0)
    assert ds.AffectedSOPInstanceUID == "1.2.3.45"
    assert ds.AffectedSOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert ds.CommandDataSetType == 0x0101
