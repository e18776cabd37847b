"""The compiled candidate walk keeps the same rows as its pure-Python twin: random archives
(names with case, accents, component groups, several values, padding), random keys at every
level (a literal prefix then ``*`` mostly: the path the compiled kernel decides by itself),
rows gone from under their candidate, page sizes and scan budgets."""

from __future__ import annotations

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from hpacs._ext import _findwalk, findenc, findwalk
from hpacs.index import rowkernels
from hpacs.index.db import (
    _DEC,
    InstanceEntry,
    PatientEntry,
    SeriesEntry,
    StudyEntry,
    patient_key,
)
from hpacs.index.query import Query, _check

_ENC = msgspec.msgpack.Encoder()
_DBS = (b"patients", b"studies", b"series", b"instances")
LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")

name_text = st.text(st.sampled_from("DoEdOeäÄßﬁ^= \\x*?İ\u0131"), max_size=10)
ids = st.text(st.sampled_from("P1Ü\0 x"), max_size=4)
prefixes = st.text(st.sampled_from("DoEdOeäÄß^= x"), min_size=1, max_size=4)


def test_compiled_walk_built_and_selected():
    # a missing build is a failure, not a skip
    assert rowkernels.WALK_COMPILED
    assert _findwalk.__file__.endswith(".so")
    assert rowkernels.RowWalker is _findwalk.RowWalker


@st.composite
def archives(draw: st.DrawFn, depth: int) -> tuple[list[dict[bytes, bytes]], list[bytes]]:
    """Tables (key -> encoded row) for levels 0..depth, and the candidate keys of ``depth``
    (some of them, or one of their ancestors, gone from the tables)."""
    tables: list[dict[bytes, bytes]] = [{} for _ in range(depth + 1)]
    patients = []
    for _ in range(draw(st.integers(1, 4))):
        pid, issuer = draw(ids), draw(st.sampled_from(["", "", "ISS", "Ä"]))
        attrs = {}
        name = draw(st.one_of(name_text, st.integers(0, 9), st.none()))
        if name is not None:
            attrs["PatientName"] = name
        if draw(st.booleans()):
            attrs["PatientSex"] = draw(st.sampled_from(["F", "M", "ö"]))
        patients.append(PatientEntry(pid, issuer, attrs))
    keys: list[list[bytes]] = [[], [], [], []]
    for p in patients:
        k = patient_key(p.patient_id, p.issuer)
        keys[0].append(k)
        if draw(st.integers(0, 9)):  # sometimes gone
            tables[0][k] = _ENC.encode(p)
    parents = patients
    rows_at = [patients]
    for level in range(1, depth + 1):
        made = []
        for i in range(draw(st.integers(1, 5))):
            parent = draw(st.sampled_from(parents))
            uid = f"{level}.{i}"
            attrs = {"StudyDescription": draw(name_text)} if draw(st.booleans()) else {}
            if level == 1:
                row = StudyEntry(uid, parent.patient_id, parent.issuer, attrs)
            elif level == 2:
                row = SeriesEntry(uid, parent.study_uid, attrs)
            else:
                row = InstanceEntry(uid, "1.2", parent.series_uid, "1.2.840.10008.1.2.1", "f", 1,
                                    0.0, attrs)
            made.append(row)
            k = uid.encode()
            keys[level].append(k)
            if draw(st.integers(0, 9)):
                tables[level][k] = _ENC.encode(row)
        parents = made
        rows_at.append(made)
    cands = draw(st.lists(st.sampled_from(keys[depth] + [b"9.9"]), max_size=12))
    return tables, cands


def _query(draw: st.DrawFn, level: str) -> Query:
    values: dict[str, str] = {}
    shape = draw(st.sampled_from(["prefix", "prefix", "prefix", "pattern", "exact", "list"]))
    if shape == "prefix":
        values["PatientName"] = draw(prefixes) + draw(st.sampled_from(["*", "**"]))
    elif shape == "pattern":
        values["PatientName"] = draw(name_text) + "*"
    elif shape == "exact":
        values["PatientName"] = draw(name_text)
    else:
        values["PatientName"] = "\\".join(draw(st.lists(prefixes.map(lambda p: p + "*"),
                                                        min_size=2, max_size=3)))
    if draw(st.booleans()):
        values["PatientSex"] = draw(st.sampled_from(["F", "f*", "M", "ö"]))
    if level != "PATIENT" and draw(st.booleans()):
        values["StudyDescription"] = draw(prefixes) + "*"
    return Query.build(level, values, case_insensitive_names=draw(st.booleans()))


@settings(max_examples=500, deadline=None)
@given(data=st.data(), depth=st.integers(0, 3), size=st.integers(1, 6),
       budget=st.integers(1, 20))
def test_compiled_walk_equals_twin(data, depth, size, budget):
    tables, cands = data.draw(archives(depth))
    query = data.draw(st.composite(lambda draw: _query(draw, LEVELS[depth]))())
    decoders = tuple(_DEC[name].decode for name in _DBS[:depth + 1])
    checks = tuple(_check(m, depth) for m in query.keys.values())
    gets = tuple(t.get for t in tables)
    got = []
    for mod in (_findwalk, findwalk):
        walker = mod.RowWalker(decoders, depth, checks, patient_key, findenc.resolve)
        out: list = []
        done = walker.collect(iter(cands), gets, out, size, budget)
        got.append((done, out))
    assert got[0] == got[1]


def test_the_twin_walk_is_the_engine_loop():
    # what collect keeps: the candidates whose rows are all present and pass every check
    p = PatientEntry("P", "", {"PatientName": "Doe^John"})
    st_ = StudyEntry("1.1", "P", "", {})
    tables = [{patient_key("P"): _ENC.encode(p)}, {b"1.1": _ENC.encode(st_)}]
    q = Query.build("STUDY", {"PatientName": "DOE*"})
    checks = tuple(_check(m, 1) for m in q.keys.values())
    assert checks[0][2] == ("doe", True, True)
    decoders = (_DEC[b"patients"].decode, _DEC[b"studies"].decode)
    for mod in (_findwalk, findwalk):
        walker = mod.RowWalker(decoders, 1, checks, patient_key, findenc.resolve)
        out: list = []
        assert walker.collect(iter([b"1.1", b"1.2"]), (tables[0].get, tables[1].get), out,
                              10, 10)
        assert out == [[p, st_]]
