"""C-MOVE/C-GET logic without I/O: identifier validation, context choice, counts and statuses."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset

from hpacs.dicom.transfer_syntax import EXPLICIT_VR_BE, EXPLICIT_VR_LE, IMPLICIT_VR_LE
from hpacs.dimse import commands as cmd
from hpacs.dimse.find import FindError
from hpacs.dimse.retrieve import (
    PATIENT_ROOT_GET,
    STUDY_ROOT_MOVE,
    SubOperations,
    choose_context,
    parse_retrieve,
    store_outcome,
    store_request,
    store_request_generic,
)

JPEG = "1.2.840.10008.1.2.4.50"
JPEG_LS = "1.2.840.10008.1.2.4.80"
RLE = "1.2.840.10008.1.2.5"
J2K = "1.2.840.10008.1.2.4.91"
CT = "1.2.840.10008.5.1.4.1.1.2"


def encode(**keys) -> bytes:
    ds = Dataset()
    for k, v in keys.items():
        setattr(ds, k, v)
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, True
    write_dataset(fp, ds)
    return fp.getvalue()


def test_parse_retrieve_builds_an_image_level_query():
    rq = parse_retrieve(STUDY_ROOT_MOVE, encode(QueryRetrieveLevel="SERIES",
                                                SeriesInstanceUID="1.2\\1.3"), IMPLICIT_VR_LE)
    assert rq.level == "SERIES" and rq.query.level == "IMAGE"
    assert rq.query.keys["SeriesInstanceUID"].exact_values() == ("1.2", "1.3")


@pytest.mark.parametrize("model,keys,code", [
    (STUDY_ROOT_MOVE, {"QueryRetrieveLevel": "STUDY"}, 0xA900),
    (STUDY_ROOT_MOVE, {"QueryRetrieveLevel": "PATIENT", "PatientID": "X"}, 0xA900),
    (PATIENT_ROOT_GET, {"QueryRetrieveLevel": "PATIENT", "PatientID": "X*"}, 0xA900),
    (PATIENT_ROOT_GET, {"StudyInstanceUID": "1.2"}, 0xA900),
    ("1.2.3", {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "1.2"}, 0x0122),
])
def test_parse_retrieve_refusals(model, keys, code):
    with pytest.raises(FindError) as info:
        parse_retrieve(model, encode(**keys), IMPLICIT_VR_LE)
    assert info.value.status == code


def test_choose_context_prefers_stored_syntax_then_native_then_encodable():
    accepted = {1: (CT, JPEG), 3: (CT, IMPLICIT_VR_LE), 5: ("other", EXPLICIT_VR_LE)}
    assert choose_context(accepted, CT, JPEG) == (1, JPEG)
    assert choose_context(accepted, CT, EXPLICIT_VR_LE) == (3, IMPLICIT_VR_LE)
    assert choose_context(accepted, CT, EXPLICIT_VR_BE) == (3, IMPLICIT_VR_LE)  # byte-swapped
    assert choose_context({3: (CT, IMPLICIT_VR_LE)}, CT, JPEG) == (3, IMPLICIT_VR_LE)  # decoded
    assert choose_context(accepted, CT, JPEG, allowed={3}) == (3, IMPLICIT_VR_LE)
    assert choose_context(accepted, CT, JPEG, allowed={5}) is None  # not the SOP class
    # explicit before implicit whatever the context order; else the peer's order
    both = {1: (CT, IMPLICIT_VR_LE), 3: (CT, EXPLICIT_VR_LE)}
    assert choose_context(both, CT, JPEG) == (3, EXPLICIT_VR_LE)
    compressed = {1: (CT, JPEG_LS), 3: (CT, RLE), 5: (CT, JPEG)}
    assert choose_context(compressed, CT, EXPLICIT_VR_LE) == (1, JPEG_LS)
    # lossy only when allowed (JPEG baseline: no encoder at all)
    lossy = {1: (CT, JPEG), 3: (CT, J2K)}
    assert choose_context(lossy, CT, EXPLICIT_VR_LE) is None
    assert choose_context(lossy, CT, EXPLICIT_VR_LE, allow_lossy=True) == (3, J2K)


@pytest.mark.parametrize("code,outcome", [(0, "completed"), (0xB000, "warning"),
                                          (0xB007, "warning"), (0x0001, "warning"),
                                          (0xA700, "failed"), (0xC000, "failed")])
def test_store_outcome(code, outcome):
    assert store_outcome(code) == outcome


def response(raw: bytes) -> dict:
    return cmd.decode_command(raw)


def test_suboperation_counts_and_final_statuses():
    request = {cmd.MESSAGE_ID: 9, cmd.AFFECTED_SOP_CLASS_UID: STUDY_ROOT_MOVE}
    s = SubOperations(request, cmd.CommandField.C_MOVE_RSP, total=3)
    s.record("1.1", "completed")
    p = response(s.pending())
    assert p[cmd.STATUS] == 0xFF00 and p[cmd.REMAINING_SUBOPERATIONS] == 2
    assert p[cmd.MESSAGE_ID_BEING_RESPONDED_TO] == 9
    s.record("1.2", "failed")
    s.record("1.3", "warning")
    final, ident = s.final()
    f = response(final)
    assert f[cmd.STATUS] == 0xB000 and cmd.REMAINING_SUBOPERATIONS not in f
    assert (f[cmd.COMPLETED_SUBOPERATIONS], f[cmd.FAILED_SUBOPERATIONS],
            f[cmd.WARNING_SUBOPERATIONS]) == (1, 1, 1)
    assert f[cmd.COMMAND_DATA_SET_TYPE] != cmd.NO_DATASET
    ds = read_dataset(DicomBytesIO(ident), True, True)
    assert ds.FailedSOPInstanceUIDList == "1.2"

    all_failed = SubOperations(request, cmd.CommandField.C_GET_RSP, total=2)
    all_failed.fail_remaining(["1.1", "1.2"])
    final, ident = all_failed.final()
    assert response(final)[cmd.STATUS] == 0xA702
    assert list(read_dataset(DicomBytesIO(ident), True, True).FailedSOPInstanceUIDList) == [
        "1.1", "1.2"]

    cancelled = SubOperations(request, cmd.CommandField.C_GET_RSP, total=5)
    cancelled.record("1.1", "completed")
    final, ident = cancelled.final(cancelled=True)
    assert response(final)[cmd.STATUS] == 0xFE00 and ident is None
    assert response(final)[cmd.REMAINING_SUBOPERATIONS] == 4

    none = SubOperations(request, cmd.CommandField.C_GET_RSP, total=0)
    assert response(none.final()[0])[cmd.STATUS] == 0


def test_store_request_carries_move_originator():
    c = response(store_request(70000, CT, "1.2.3", move_originator=("ORIG", 5)))
    assert c[cmd.COMMAND_FIELD] == cmd.CommandField.C_STORE_RQ
    assert c[cmd.MESSAGE_ID] == 70000 & 0xFFFF
    assert c[cmd.MOVE_ORIGINATOR_AE_TITLE] == "ORIG" and c[cmd.MOVE_ORIGINATOR_MESSAGE_ID] == 5
    assert c[cmd.AFFECTED_SOP_INSTANCE_UID] == "1.2.3"


# ----------------------------------------------------- packed sub-operation commands (oracle)
_UIDS = st.text("0123456789.", min_size=1, max_size=64)


@settings(max_examples=200, deadline=None)
@given(mid=st.integers(0, 0x1FFFF), sop_class=_UIDS, sop=_UIDS,
       originator=st.none() | st.tuples(st.text("ABCDEFGHIJKLMNOP _-0123", min_size=1,
                                                max_size=16), st.integers(0, 0xFFFF)))
def test_store_request_packed_is_the_generic_encoding(mid, sop_class, sop, originator):
    packed = store_request(mid, sop_class, sop, move_originator=originator)
    assert packed == store_request_generic(mid, sop_class, sop, move_originator=originator)
    decoded = cmd.decode_command(packed)
    assert decoded[cmd.MESSAGE_ID] == mid & 0xFFFF
    assert decoded[cmd.AFFECTED_SOP_INSTANCE_UID] == sop


@settings(max_examples=200, deadline=None)
@given(field=st.sampled_from([cmd.CommandField.C_GET_RSP, cmd.CommandField.C_MOVE_RSP]),
       mid=st.integers(0, 0xFFFF), sop_class=_UIDS, total=st.integers(0, 70_000),
       outcomes=st.lists(st.sampled_from(["completed", "failed", "warning"]), max_size=40))
def test_pending_packed_is_the_generic_encoding(field, mid, sop_class, total, outcomes):
    request = {cmd.COMMAND_FIELD: int(field) & 0x0FFF, cmd.MESSAGE_ID: mid,
               cmd.AFFECTED_SOP_CLASS_UID: sop_class}
    subops = SubOperations(request, field, total=total + len(outcomes))
    for i, outcome in enumerate(outcomes):
        subops.record(f"1.2.{i}", outcome)
        assert subops.pending() == cmd.response_to(request, field, 0xFF00,
                                                   subops._counts(True))
