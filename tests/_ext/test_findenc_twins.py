"""The compiled C-FIND row kernel equals its pure-Python twin on random requests and rows."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpacs._ext import _findenc, findenc
from hpacs.dimse import find as f
from hpacs.index import rowkernels
from hpacs.index.db import PatientEntry, StudyEntry
from hpacs.index.query import value_sources
from tests.dimse.find_requests import DEPTH, find_requests
from tests.index.row_strategies import KEYWORDS, match_rows


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
