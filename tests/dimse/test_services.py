"""What the C-ECHO / C-STORE SCPs answer for each store outcome."""

import pytest

from hpacs.dimse import commands as c
from hpacs.dimse.services import echo_response, store_response, unsupported_response
from hpacs.store.ingest import Outcome, StoreResult

REQUEST = {c.COMMAND_FIELD: 1, c.MESSAGE_ID: 5, c.AFFECTED_SOP_CLASS_UID: "1.2",
           c.AFFECTED_SOP_INSTANCE_UID: "1.2.3", c.COMMAND_DATA_SET_TYPE: 0}


@pytest.mark.parametrize(("outcome", "status"), [
    (Outcome.STORED, 0x0000), (Outcome.REPLACED, 0x0000), (Outcome.DUPLICATE_KEPT, 0x0000),
    (Outcome.DUPLICATE_REJECTED, 0xC000), (Outcome.INVALID, 0xC000),
    (Outcome.MISMATCH, 0xA900), (Outcome.OUT_OF_RESOURCES, 0xA700),
])
def test_store_outcomes_map_to_statuses(outcome, status):
    rsp = c.decode_command(store_response(REQUEST, StoreResult(outcome, "why " * 30)))
    assert rsp[c.COMMAND_FIELD] == 0x8001
    assert rsp[c.MESSAGE_ID_BEING_RESPONDED_TO] == 5
    assert rsp[c.AFFECTED_SOP_INSTANCE_UID] == "1.2.3"
    assert rsp[c.STATUS] == status
    if status:
        assert 0 < len(rsp[c.ERROR_COMMENT]) <= 64  # LO
    else:
        assert c.ERROR_COMMENT not in rsp


def test_mismatch_names_the_offending_element():
    result = StoreResult(Outcome.MISMATCH, "SOP Instance UID differs", offending_tag=0x00080018)
    rsp = c.decode_command(store_response(REQUEST, result))
    assert rsp[c.OFFENDING_ELEMENT] == (0x00080018,)


def test_echo_and_unsupported():
    echo = c.decode_command(echo_response({c.COMMAND_FIELD: 0x30, c.MESSAGE_ID: 9}))
    assert (echo[c.COMMAND_FIELD], echo[c.STATUS], echo[c.MESSAGE_ID_BEING_RESPONDED_TO]) == (
        0x8030, 0, 9)
    study_root_find = "1.2.840.10008.5.1.4.1.2.2.1"
    find = c.decode_command(unsupported_response(
        {c.COMMAND_FIELD: 0x20, c.MESSAGE_ID: 3, c.AFFECTED_SOP_CLASS_UID: study_root_find}))
    assert (find[c.COMMAND_FIELD], find[c.STATUS]) == (0x8020, 0x0211)
