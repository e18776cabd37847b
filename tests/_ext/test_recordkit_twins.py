"""The compiled record builder equals its pure-Python twin: pydicom's test files (scanned by the
header scanner) and synthetic values (every character set family, padding, backslashes, person
name groups, escape sequences, bytes invalid in the character set, broken UIDs)."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpacs._ext import _recordkit, recordkit
from hpacs.dicom.scan import HeaderScanner
from hpacs.index import db as dbm
from hpacs.index import schema
from hpacs.index.db import IndexDB
from hpacs.index.schema import WANTED_TAGS, InstanceRecord, RecordError
from tests._ext.headscan_corpus import KNOWN_BAD, samples
from tests.index.index_helpers import check_consistent, make_record

PURE = recordkit.RecordBuilder(schema._DECODERS, InstanceRecord, RecordError)
COMPILED = _recordkit.RecordBuilder(schema._DECODERS, InstanceRecord, RecordError)
UIDS = {
    0x00080018: b"1.2.3.4.5\0",
    0x00080016: b"1.2.840.10008.5.1.4.1.1.7\0",
    0x0020000D: b"1.2.3\0",
    0x0020000E: b"1.2.3.4 ",
}


def build(builder, values, little_endian=True):
    """The record as a tuple of its fields, or the error (type and message)."""
    try:
        rec = builder.build(values, "1.2.840.10008.1.2.1", "a/b.dcm", 10, 1.5, little_endian)
    except RecordError as exc:
        return f"RecordError: {exc}"
    out = tuple(getattr(rec, f) for f in rec.__struct_fields__)
    # same values and same types (an int is not a str "1", a list not a tuple)
    types = tuple(
        {k: type(v).__name__ for k, v in level.items()}
        for level in (rec.patient, rec.study, rec.series, rec.instance)
    )
    return out, types


def test_compiled_builder_built_and_selected():
    assert schema.COMPILED
    assert _recordkit.__file__.endswith(".so")
    assert isinstance(schema.BUILDER, _recordkit.RecordBuilder)


GOOD = [s for s in samples() if s.name not in KNOWN_BAD]


@pytest.mark.parametrize("sample", GOOD, ids=[s.name for s in GOOD])
def test_pydicom_files_build_the_same_record(sample):
    sc = HeaderScanner(WANTED_TAGS, sample.explicit_vr, sample.little_endian)
    sc.feed(sample.data)
    values = sc.finish()
    for vals in (values, {**values, **UIDS}):  # as stored, and with the UIDs a record needs
        assert build(COMPILED, vals, sample.little_endian) == build(
            PURE, vals, sample.little_endian
        )


CHARSETS = [
    None, b"", b"ISO_IR 100", b"ISO_IR 192", b"ISO_IR 6", b"ISO_IR 144", b"ISO_IR 13",
    b"ISO 2022 IR 6\\ISO 2022 IR 87", b"\\ISO 2022 IR 149", b"GB18030", b"GBK", b"ISO_IR 166",
    b"ISO_IR 126 ", b"NOT A CHARSET", b"ISO 2022 IR 13\\ISO 2022 IR 87",
]  # fmt: skip
# bytes that matter to the decoders: padding, delimiters, ESC, high bytes, UTF-8 lead bytes
ALPHABET = b"A1.^= \x00\\\x1b\xc3\xa9\xe9\x80\xff\x0e$B"
raw_values = st.binary(max_size=24) | st.lists(st.sampled_from(ALPHABET), max_size=24).map(bytes)
TAGS = sorted(WANTED_TAGS - {schema.SPECIFIC_CHARACTER_SET})
uid_values = st.sampled_from([b"1.2.3\0", b"1.2.840.10008.5.1.4.1.1.2", b"", b" 1.2 ",
                              b"1.2.a", b"1" * 65, b"1" * 64, b"\\1.2", b"1.2\\3.4", b"\xe9"])


@settings(max_examples=1500, deadline=None)
@given(
    charset=st.sampled_from(CHARSETS),
    values=st.dictionaries(st.sampled_from(TAGS), raw_values, max_size=12),
    uids=st.fixed_dictionaries({t: uid_values for t in UIDS}),
    keep_uids=st.booleans(),
    little=st.booleans(),
)
def test_synthetic_values_build_the_same_record(charset, values, uids, keep_uids, little):
    vals = dict(values)
    vals.update(UIDS if keep_uids else uids)
    if charset is not None:
        vals[schema.SPECIFIC_CHARACTER_SET] = charset
    assert build(COMPILED, vals, little) == build(PURE, vals, little)


def test_memoryview_values_read_as_bytes():
    vals = {**UIDS, 0x00100010: memoryview(b"DOE^JOHN=  "), 0x00280010: bytearray(b"\x00\x02")}
    assert build(COMPILED, vals) == build(PURE, {k: bytes(v) for k, v in vals.items()})


# ---------------------------------------------------------------- the index apply fast path
ALL_DBS = (b"meta", b"patients", b"studies", b"series", b"instances", *dbm._DUP_DBS)
SOPS = [f"9.{i}" for i in range(24)]
SERIES = [("1.1.1", "1.1")] * 4 + [("1.1.2", "1.1"), ("1.2.1", "1.2"), ("1.1.1", "1.2")]


def mostly(common, *rare):
    """``common`` three times in four (so that runs of the steady state occur)."""
    return st.sampled_from([common] * 3 * len(rare) + list(rare)) if rare else st.just(common)


apply_op = st.tuples(
    st.just("apply"),
    st.sampled_from(SOPS),
    st.sampled_from(SERIES),
    mostly("P1", "P2"),
    mostly("", "ISS"),
    mostly("CT", "MR", ""),
    mostly("1.2.840.1", "1.2.840.2"),
    st.sampled_from([None, 1, 2, -3, 10**10]),
    st.sampled_from([1000.0, 999.0, 1001.5, 1000]),
    mostly("DOE^JOHN", "DOE^JANE"),
    mostly(False, True),  # cold
)
index_op = st.one_of(
    apply_op,
    st.tuples(st.just("delete"), st.sampled_from(SOPS)),
    st.tuples(st.just("access"), st.sampled_from(["1.1", "1.2"]), st.sampled_from([998.0, 1002.0])),
)


def _dump(db: IndexDB) -> dict:
    out = {}
    with db.env.begin() as txn:
        for name in ALL_DBS:
            with txn.cursor(db=db.dbs[name]) as cur:
                out[name] = list(cur.iternext())
    return out


def _run(db: IndexDB, ops: list[list[tuple]]) -> list:
    results = []
    for batch in ops:  # several ops per transaction: the row cache
        with db.write() as w:
            for o in batch:
                if o[0] == "delete":
                    results.append(db.delete_instance(o[1], w))
                elif o[0] == "access":
                    db.set_last_access(w, {o[1]: o[2]})
                else:
                    _, sop, (series, study), pid, issuer, mod, cls, num, at, name, cold = o
                    rec = make_record(sop, series, study, pid, issuer=issuer, modality=mod,
                                      sop_class=cls, number=num, stored_at=at, name=name)
                    if cold:
                        rec = msgspec.structs.replace(rec, path="", cold=["pack1", 0, 10])
                    results.append(db.apply(w, rec))
    return results


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(st.lists(index_op, min_size=1, max_size=12), min_size=1, max_size=6))
def test_apply_fast_path_writes_what_the_general_apply_writes(tmp_path_factory, ops):
    dbs = {}
    for side in ("general", "compiled", "twin"):
        db = IndexDB(tmp_path_factory.mktemp(side) / "ix", map_size=64 << 20)
        if side == "general":
            db.apply = db.apply_general  # type: ignore[method-assign]
        elif side == "twin":
            db._applier = recordkit.Applier(db.dbs, dbm._DEC, dbm.InstanceEntry, dbm.order_key,
                                            dbm.patient_key, dbm._ENC.encode)
        dbs[side] = db
    try:
        assert isinstance(dbs["compiled"]._applier, _recordkit.Applier)
        results = {side: _run(db, ops) for side, db in dbs.items()}
        assert results["compiled"] == results["general"] == results["twin"]
        dumps = {side: _dump(db) for side, db in dbs.items()}
        assert dumps["compiled"] == dumps["general"] == dumps["twin"]
        check_consistent(dbs["compiled"])
    finally:
        for db in dbs.values():
            db.close()


def test_the_steady_state_takes_the_fast_path(tmp_path):
    db = IndexDB(tmp_path / "ix", map_size=64 << 20)
    try:
        with db.write() as w:
            db.apply(w, make_record("9.1", number=1))  # new rows: the general path
        with db.write() as w:
            rec = make_record("9.2", number=2, stored_at=1001.0)
            assert db._applier.apply(w, rec)  # the next instance of the series
        with db.write() as w:  # a new series: the general path
            assert not db._applier.apply(w, make_record("9.3", series="1.2.3.2"))
            # a re-sent instance: the general path
            assert not db._applier.apply(w, make_record("9.1", number=1))
        check_consistent(db)
    finally:
        db.close()
