"""The compiled P-DATA receive path behaves exactly like its pure-Python twin."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpacs._ext import _pdata, pdata
from hpacs.ul import framer as selected
from hpacs.ul import pdu as U
from tests.ul._ulref import a_associate_rq, abort, mutations, p_data, release_rq

TWINS = [pytest.param(pdata.PDataFramer, id="pure"), pytest.param(_pdata.PDataFramer, id="c")]
PROPS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_pdata_is_compiled() -> None:
    assert _pdata.__file__.endswith(".so")
    if os.environ.get("HPACS_PURE") == "1":
        assert selected.PDataFramer is pdata.PDataFramer and not selected.COMPILED
    else:
        assert selected.PDataFramer is _pdata.PDataFramer and selected.COMPILED


def _norm(entries: list) -> list:
    """Entries as plain comparable values (errors by type, message and A-ABORT reason)."""
    out = []
    for pdu_type, body, pdvs in entries:
        assert type(body) is memoryview
        if isinstance(pdvs, list):
            for pdv in pdvs:
                assert type(pdv) is U.PDV and type(pdv.data) is memoryview
            pdvs = [(p.context_id, p.is_command, p.is_last, bytes(p.data)) for p in pdvs]
        elif pdvs is not None:
            assert type(pdvs) is U.PDUError
            pdvs = ("error", str(pdvs), pdvs.reason)
        out.append((pdu_type, bytes(body), pdvs))
    return out


def _err(framer) -> tuple | None:
    e = framer.error
    return None if e is None else (type(e), str(e), e.reason)


def _run(stream: bytes, cuts: list[int], contexts, max_pdata: int, max_control: int) -> list:
    """Feed ``stream`` to both implementations in the same pieces; they must agree on every
    call (entries, error, bytes buffered). Returns the twin's entries."""
    twin = pdata.PDataFramer(max_pdata, max_control, contexts)
    comp = _pdata.PDataFramer(max_pdata, max_control, contexts)
    got = []
    off = i = 0
    while off < len(stream):
        n = cuts[i % len(cuts)]
        piece = stream[off : off + n]
        a, b = _norm(twin.feed(piece)), _norm(comp.feed(piece))
        assert a == b
        assert _err(twin) == _err(comp)
        assert twin.buffered == comp.buffered <= max(max_pdata, max_control) + 6
        got += a
        off += n
        i += 1
    return got


PDV_ST = st.tuples(st.integers(1, 255), st.booleans(), st.booleans(), st.binary(max_size=300))
PDU_ST = st.one_of(
    st.lists(PDV_ST, max_size=4).map(lambda pdvs: p_data(*pdvs)),
    st.sampled_from([release_rq(), abort(2, 6), a_associate_rq()]),
    st.binary(max_size=40),
)
CONTEXTS_ST = st.one_of(
    st.none(), st.frozensets(st.integers(0, 255), max_size=8), st.just(frozenset({1, 3, 5}))
)
CUTS_ST = st.lists(st.integers(1, 400), min_size=1, max_size=8)


def mutated() -> st.SearchStrategy[bytes]:
    return mutations(st.lists(PDU_ST, min_size=1, max_size=5).map(b"".join), min_ops=0)


@PROPS
@given(st.binary(max_size=2000), CUTS_ST, CONTEXTS_ST, st.integers(0, 600), st.integers(0, 600))
def test_arbitrary_bytes(stream, cuts, contexts, max_pdata, max_control) -> None:
    _run(stream, cuts, contexts, max_pdata, max_control)


@PROPS
@given(mutated(), CUTS_ST, CONTEXTS_ST, st.integers(0, 2000))
def test_mutated_streams(stream, cuts, contexts, max_pdata) -> None:
    _run(stream, cuts, contexts, max_pdata, 1 << 16)


@PROPS
@given(
    st.lists(PDU_ST.filter(lambda b: len(b) >= 6 and b[0] in range(1, 8)), max_size=6),
    CUTS_ST,
    CONTEXTS_ST,
)
def test_rechunking_changes_nothing(pdus, cuts, contexts) -> None:
    """Valid framing: whatever the chunking, the same entries as one whole-stream feed."""
    pdus = [p for p in pdus if int.from_bytes(p[2:6], "big") == len(p) - 6]
    stream = b"".join(pdus)
    whole = _run(stream, [len(stream) or 1], contexts, 1 << 20, 1 << 20)
    assert _run(stream, cuts, contexts, 1 << 20, 1 << 20) == whole
    assert [(t, b) for t, b, _ in whole] == [(p[0], p[6:]) for p in pdus]


@pytest.mark.parametrize("impl", TWINS)
def test_pdvs_reference_the_chunk_and_errors_are_returned(impl) -> None:
    first = p_data((1, True, True, b"cmd"), (3, False, False, b"x" * 100))
    stream = first + p_data((7, False, True, b"y")) + p_data((1, False, True, b"zz"))
    framer = impl(4096, contexts={1: "a", 3: "b"})
    (t1, b1, pdvs1), (t2, _, err), (_, _, pdvs3) = framer.feed(stream)
    assert t1 == t2 == U.P_DATA_TF and bytes(b1) == first[6:]
    assert pdvs1 == [
        U.PDV(1, True, True, memoryview(b"cmd")),
        U.PDV(3, False, False, memoryview(b"x" * 100)),
    ]
    assert pdvs1[1].data.obj is stream  # a view of the chunk, not a copy
    assert isinstance(err, U.PDUError) and err.reason == U.ABORT_REASON_INVALID_PARAMETER
    assert str(err) == "PDV for presentation context 7, not accepted"
    assert pdvs3 == [U.PDV(1, False, True, memoryview(b"zz"))]
    assert framer.error is None and framer.buffered == 0


@pytest.mark.parametrize("impl", TWINS)
def test_limits_from_the_header_alone(impl) -> None:
    framer = impl(100, 50)
    assert framer.feed(b"\x04\x00\x00\x00\x00") == [] and framer.buffered == 5
    assert framer.feed(b"\x65") == []  # 101 > 100: refused before any body byte
    assert framer.error.reason == U.ABORT_REASON_INVALID_PARAMETER and framer.buffered == 0
    assert framer.feed(b"\x00" * 1000) == [] and framer.buffered == 0
    framer = impl(100, 50)
    assert framer.feed(b"\x09\x00\x00\x00\x00\x00") == []
    assert framer.error.reason == U.ABORT_REASON_UNRECOGNIZED_PDU
    assert str(framer.error) == "unrecognized PDU type 0x09"


@pytest.mark.parametrize("impl", TWINS)
def test_straddling_pdu_is_assembled_once(impl) -> None:
    pdu = p_data((3, False, True, bytes(range(200))))
    framer = impl(4096)
    assert framer.feed(pdu[:50]) == [] and framer.buffered == 50
    ((_, body, pdvs),) = framer.feed(pdu[50:])
    assert isinstance(body.obj, bytearray) and pdvs[0].data.obj is body.obj
    assert bytes(pdvs[0].data) == bytes(range(200))
    assert len(framer.feed(memoryview(bytearray(pdu)))) == 1  # any bytes-like chunk
