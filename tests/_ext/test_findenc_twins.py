"""The compiled C-FIND row kernel equals its pure-Python twin on random requests and rows."""

from __future__ import annotations

import struct

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpacs._ext import _findenc, findenc
from hpacs.dimse import find as f
from hpacs.index import rowkernels
from hpacs.index.db import _DEC_VIEW, PatientEntry, StudyEntry
from hpacs.index.query import value_sources
from tests.dimse.find_requests import DEPTH, find_requests
from tests.index.row_strategies import KEYWORDS, match_rows

_ENC = msgspec.msgpack.Encoder()
_DBS = (b"patients", b"studies", b"series", b"instances")


def test_compiled_kernel_built_and_selected():
    # a missing build is a failure, not a skip
    assert rowkernels.COMPILED
    assert _findenc.__file__.endswith(".so")
    assert rowkernels.RowEncoder is _findenc.RowEncoder


@settings(max_examples=400, deadline=None)
@given(data=st.data(), req=find_requests(), retrieve_ae=st.sampled_from(["", "HPACS"]))
def test_compiled_encoder_equals_twin(data, req, retrieve_ae):
    depth = DEPTH[req.level]
    rows = data.draw(match_rows(depth))
    args = f.MatchEncoder(req, retrieve_ae=retrieve_ae).row_args
    # the same bytes, or the same refusal (a number out of its VR's range: 65536 in a US key)
    assert _outcome(_findenc.RowEncoder(*args).encode, rows) == \
        _outcome(findenc.RowEncoder(*args).encode, rows)
    for kw in KEYWORDS:
        sources = value_sources(depth, kw)
        assert _findenc.resolve(rows, sources) == findenc.resolve(rows, sources)


@settings(max_examples=400, deadline=None)
@given(data=st.data(), req=find_requests(), retrieve_ae=st.sampled_from(["", "HPACS"]))
def test_view_rows_encode_as_their_entries(data, req, retrieve_ae):
    # the C-FIND walk's rows keep attrs as msgpack (PatientView ...): the kernel reads them
    # in place, the twin decodes them; both must answer as for the decoded entries
    depth = DEPTH[req.level]
    rows = data.draw(match_rows(depth))
    views = [_DEC_VIEW[name].decode(_ENC.encode(row))
             for name, row in zip(_DBS[:len(rows)], rows, strict=True)]
    args = f.MatchEncoder(req, retrieve_ae=retrieve_ae).row_args
    expected = _outcome(findenc.RowEncoder(*args).encode, rows)
    assert _outcome(_findenc.RowEncoder(*args).encode, views) == expected
    assert _outcome(findenc.RowEncoder(*args).encode, views) == expected
    for kw in KEYWORDS:
        sources = value_sources(depth, kw)
        want = findenc.resolve(rows, sources)
        assert _findenc.resolve(views, sources) == want
        assert findenc.resolve(views, sources) == want


@pytest.mark.parametrize("n", [0, 1, 15, 16, 63, 64, 65, 66000])
def test_view_attrs_of_every_msgpack_size(n):
    # fixmap / map16 headers, fixstr / str8 / str16 / str32 values, ints and lists between
    # them, more entries than the kernel indexes (the decoding fallback): the same answers
    attrs: dict = {f"K{i}": ("v" * (i * 7 % 300)) if i % 3 else i * 1000 for i in range(n)}
    attrs["PatientName"] = "X" * min(n, 70000)
    attrs["Rows"] = [1, 2, 70000]
    row = PatientEntry("P", "", attrs)
    view = _DEC_VIEW[b"patients"].decode(_ENC.encode(row))
    names = list(attrs)
    for kw in (*names[:70], *names[-3:], "Absent", "K"):
        sources = ((0, findenc.ATTR, kw),)
        assert _findenc.resolve([view], sources) == findenc.resolve([row], sources)


def _outcome(encode, rows) -> tuple:
    try:
        return "bytes", encode(rows)
    except (struct.error, OverflowError) as exc:
        return "error", type(exc)


# lone surrogates cannot come out of the index (msgpack strings are valid UTF-8) but the
# kernel's UTF-8 shortcut must still fall back to the codec's replacement as the twin does
@pytest.mark.parametrize("name", ["A\ud800B", "Ä\udfff", "\ud83d"])
def test_surrogates_are_replaced_like_the_twin(name):
    req = f.parse_find(f.STUDY_ROOT_FIND, _study_query(), "1.2.840.10008.1.2.1")
    rows = [PatientEntry("P", "", {"PatientName": name}),
            StudyEntry("1.2", "P", "", {"StudyDescription": "Ö"})]
    args = f.MatchEncoder(req).row_args
    assert _findenc.RowEncoder(*args).encode(rows) == findenc.RowEncoder(*args).encode(rows)


def _study_query() -> bytes:
    from pydicom.dataset import Dataset
    from pynetdicom.dsutils import encode

    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.PatientName = ""
    ds.StudyDescription = ""
    return encode(ds, False, True)


def test_both_reject_an_overlong_short_length():
    req = f.parse_find(f.STUDY_ROOT_FIND, _study_query(), "1.2.840.10008.1.2.1")
    rows = [PatientEntry("P", "", {"PatientName": "X" * 70000}), StudyEntry("1.2", "P", "", {})]
    args = f.MatchEncoder(req).row_args
    for mod in (_findenc, findenc):
        with pytest.raises(OverflowError):
            mod.RowEncoder(*args).encode(rows)


@pytest.mark.parametrize("count", [0, 7, -1, -(2**63), 2**63 - 1, 2**63, -(2**63) - 1, 10**30])
def test_counts_are_written_as_their_digits_like_the_twin(count):
    # a count goes straight into the answer as digits; beyond 64 bits through str()
    from pydicom.dataset import Dataset
    from pynetdicom.dsutils import encode

    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.NumberOfStudyRelatedSeries = None
    req = f.parse_find(f.STUDY_ROOT_FIND, encode(ds, False, True), "1.2.840.10008.1.2.1")
    rows = [PatientEntry("P", "", {}), StudyEntry("1.2", "P", "", {}, count)]
    args = f.MatchEncoder(req).row_args
    got = _findenc.RowEncoder(*args).encode(rows)
    assert got == findenc.RowEncoder(*args).encode(rows)
    assert str(count).encode() in got
