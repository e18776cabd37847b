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
    having = None
    if data.draw(st.booleans()):  # a filter: (value, key) pairs an index would hold
        pairs = data.draw(st.sets(st.tuples(st.sampled_from([b"CT", b"MR", b"US"]),
                                            st.sampled_from([*cands, b"9.9"]))))
        values = tuple(data.draw(st.lists(st.sampled_from([b"CT", b"MR", b"US"]),
                                          max_size=3, unique=True)))
        having = (lambda v, k: (v, k) in pairs, values)
    got = []
    for mod in (_findwalk, findwalk):
        walker = mod.RowWalker(decoders, depth, checks, patient_key, findenc.resolve)
        out: list = []
        done = walker.collect(iter(cands), gets, out, size, budget, having)
        got.append((done, out))
    assert got[0] == got[1]
    if having is not None:  # the filter only drops candidates: the kept ones are a subset
        walker = findwalk.RowWalker(decoders, depth, checks, patient_key, findenc.resolve)
        unfiltered: list = []
        walker.collect(iter(cands), gets, unfiltered, len(cands) + 1, len(cands) + 1)
        assert all(rows in unfiltered for rows in got[1][1])


def test_a_filtered_candidate_counts_against_the_budget():
    # a page that only rejects still ends at the budget (the read transaction stays short)
    decoders = (_DEC[b"patients"].decode, _DEC[b"studies"].decode)
    for mod in (_findwalk, findwalk):
        walker = mod.RowWalker(decoders, 1, (), patient_key, findenc.resolve)
        out: list = []
        keys = iter([b"1", b"2", b"3", b"4"])
        assert not walker.collect(keys, ({}.get, {}.get), out, 10, 3,
                                  (lambda v, k: False, (b"CT",)))
        assert out == [] and next(keys) == b"4"


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


@settings(max_examples=300, deadline=None)
@given(idents=st.lists(st.binary(max_size=300), max_size=6), pending=st.binary(max_size=40),
       context_id=st.integers(1, 255), pdu_limit=st.integers(7, 400))
def test_compiled_framing_equals_twin_and_encode_pdata(idents, pending, context_id, pdu_limit):
    # a page of pending responses: the command PDU, then the identifier as encode_pdata frames
    # it (fragmented when it exceeds the peer's PDU size, the last fragment flagged)
    from hpacs.ul.pdu import encode_pdata

    expected = b"".join(pending + b"".join(encode_pdata(context_id, False, i, pdu_limit))
                        for i in idents)
    for mod in (_findwalk, findwalk):
        assert mod.frame_matches(bytes, idents, pending, context_id, pdu_limit) == expected


def test_framing_refuses_what_encode_pdata_refuses():
    import pytest

    for mod in (_findwalk, findwalk):
        for context_id, limit in ((0, 100), (256, 100), (1, 6)):
            with pytest.raises(ValueError):
                mod.frame_matches(bytes, [b"x"], b"", context_id, limit)


small_keys = st.binary(min_size=1, max_size=3).map(lambda b: bytes(97 + c % 3 for c in b))


def _walk_pages(mod, env, dbs, spec, page_sizes):
    """Run a source chain (scan, maybe dedup, maybe children) page by page, each page in its
    own read transaction, resuming from the states as the query engine does."""
    from types import SimpleNamespace

    dbname, dup, lo, stop, bound, deduped, child, strip = spec
    scan_state = SimpleNamespace(lo=lo, stop=stop, bound=bound, dup=dup, last=None, done=False)
    child_state = SimpleNamespace(current=None, last=None)
    seen: set = set()
    pages = []
    sizes = iter(page_sizes)
    while True:
        size = next(sizes, 3)
        with env.begin() as txn:
            keys = mod.scan(scan_state, txn.cursor(db=dbs[dbname])) if not scan_state.done \
                else iter(())
            if deduped:
                keys = mod.dedup(seen, keys)
            if child:
                keys = mod.children(child_state, txn.cursor(db=dbs[b"child"]), keys, strip)
            page, ended = [], True
            for k in keys:
                page.append(k)
                if len(page) >= size:
                    ended = False
                    break
        pages.append(page)
        if ended:
            return pages


@settings(max_examples=200, deadline=None)
@given(ix=st.lists(st.tuples(small_keys, small_keys), max_size=12),
       child=st.lists(st.tuples(small_keys, st.binary(min_size=4, max_size=6)), max_size=12),
       use_table=st.booleans(), lo=st.binary(max_size=2).map(lambda b: bytes(97 + c % 3
                                                                           for c in b)),
       stop=st.sampled_from([findwalk.NEVER, findwalk.PREFIX, findwalk.EXACT, findwalk.ABOVE]),
       bound=small_keys, deduped=st.booleans(), children=st.booleans(), strip=st.booleans(),
       page_sizes=st.lists(st.integers(1, 4), max_size=8))
def test_compiled_sources_equal_twin_and_resume_exactly(tmp_path_factory, ix, child, use_table,
                                                        lo, stop, bound, deduped, children,
                                                        strip, page_sizes):
    import lmdb

    env = lmdb.open(str(tmp_path_factory.mktemp("walk")), max_dbs=4, map_size=1 << 22)
    try:
        dbs = {b"ix": env.open_db(b"ix", dupsort=True), b"tbl": env.open_db(b"tbl"),
               b"child": env.open_db(b"child", dupsort=True)}
        with env.begin(write=True) as txn:
            for k, v in ix:
                txn.put(k, v, db=dbs[b"ix"], dupdata=True)
                txn.put(k, v, db=dbs[b"tbl"])
            for k, v in child:
                txn.put(k, v, db=dbs[b"child"], dupdata=True)
        spec = (b"tbl" if use_table else b"ix", not use_table, lo, stop,
                None if stop == findwalk.NEVER else bound, deduped, children, strip)
        twin = _walk_pages(findwalk, env, dbs, spec, page_sizes)
        assert _walk_pages(_findwalk, env, dbs, spec, page_sizes) == twin
        # paging changes nothing but where the pages end
        assert [k for p in twin for k in p] == _walk_pages(findwalk, env, dbs, spec, [10**6])[0]
    finally:
        env.close()
