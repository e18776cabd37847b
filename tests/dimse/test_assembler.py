import pytest

from hpacs.dimse import commands as c
from hpacs.dimse.assembler import CommandReceived, DatasetFragment, DimseError, MessageAssembler

STORE_RQ = c.encode_command({c.COMMAND_FIELD: 1, c.MESSAGE_ID: 1, c.COMMAND_DATA_SET_TYPE: 0,
                             c.AFFECTED_SOP_CLASS_UID: "1.2", c.AFFECTED_SOP_INSTANCE_UID: "1.2.3"})
ECHO_RQ = c.encode_command({c.COMMAND_FIELD: 0x30, c.MESSAGE_ID: 2,
                            c.COMMAND_DATA_SET_TYPE: c.NO_DATASET})


def test_command_split_in_fragments_then_streamed_dataset():
    a = MessageAssembler()
    assert a.receive(1, True, False, STORE_RQ[:5]) is None
    assert not a.idle
    got = a.receive(1, True, True, STORE_RQ[5:])
    assert isinstance(got, CommandReceived) and got.has_dataset
    assert got.command[c.AFFECTED_SOP_INSTANCE_UID] == "1.2.3"
    f1 = a.receive(1, False, False, b"abc")
    f2 = a.receive(1, False, True, b"de")
    assert f1 == DatasetFragment(1, b"abc", False)
    assert f2 == DatasetFragment(1, b"de", True)
    assert a.idle


def test_command_without_dataset_leaves_assembler_idle():
    a = MessageAssembler()
    got = a.receive(3, True, True, ECHO_RQ)
    assert isinstance(got, CommandReceived) and not got.has_dataset
    assert a.idle


@pytest.mark.parametrize("steps", [
    [(1, False, True, b"x")],  # data set with no command
    [(1, True, True, STORE_RQ), (3, False, True, b"x")],  # data set on another context
    [(1, True, True, STORE_RQ), (1, True, True, ECHO_RQ)],  # command while data set expected
    [(1, True, False, STORE_RQ[:4]), (3, True, True, STORE_RQ[4:])],  # command on two contexts
    [(1, True, True, b"\x00\x00\x00\x01")],  # garbage command
    [(1, True, False, b"\0" * 40000), (1, True, False, b"\0" * 40000)],  # oversized command
])
def test_framing_violations_raise(steps):
    a = MessageAssembler()
    with pytest.raises(DimseError):
        for step in steps:
            a.receive(*step)


def test_dataset_run_takes_consecutive_fragments_up_to_the_last():
    a = MessageAssembler()
    pdvs = [(1, True, True, STORE_RQ), (1, False, False, b"ab"), (1, False, False, b"c"),
            (1, False, True, b"d"), (1, True, True, ECHO_RQ)]
    assert a.dataset_run(pdvs, 0) == (0, False)  # no command yet: nothing is a run
    assert isinstance(a.receive(*pdvs[0]), CommandReceived)
    assert a.dataset_run(pdvs, 1) == (4, True) and a.idle  # stops after the last fragment
    assert a.dataset_run(pdvs, 4) == (4, False)
    assert isinstance(a.receive(*pdvs[4]), CommandReceived)


def test_dataset_run_leaves_a_fragment_on_another_context_to_receive():
    a = MessageAssembler()
    a.receive(1, True, True, STORE_RQ)
    pdvs = [(1, False, False, b"ab"), (3, False, True, b"c")]
    assert a.dataset_run(pdvs, 0) == (1, False) and not a.idle
    with pytest.raises(DimseError):
        a.receive(*pdvs[1])
