"""The C-FIND walk's row views mirror the index entries field for field.

Rows are msgpack arrays (``array_like``): a view decodes an entry's bytes by position, so a field
added to, removed from or moved in an entry and not in its view would make the walk read the
wrong values. Only ``attrs`` differs (left raw), and a view may stop early (StudyView leaves the
lifecycle clocks undecoded).
"""

from __future__ import annotations

import msgspec
import pytest

from hpacs.index import db

PAIRS = [
    (db.PatientEntry, db.PatientView),
    (db.StudyEntry, db.StudyView),
    (db.SeriesEntry, db.SeriesView),
    (db.InstanceEntry, db.InstanceView),
]


@pytest.mark.parametrize(("entry", "view"), PAIRS, ids=lambda c: c.__name__)
def test_view_fields_are_a_prefix_of_the_entry_fields(entry, view):
    entry_fields = msgspec.structs.fields(entry)
    view_fields = msgspec.structs.fields(view)
    assert [f.name for f in view_fields] == [f.name for f in entry_fields[:len(view_fields)]]
    for ef, vf in zip(entry_fields, view_fields, strict=False):
        if vf.name == "attrs":
            assert vf.type is msgspec.Raw
        else:
            assert vf.type == ef.type, vf.name
            assert (vf.default, vf.default_factory) == (ef.default, ef.default_factory), vf.name


@pytest.mark.parametrize(("entry", "view"), PAIRS, ids=lambda c: c.__name__)
def test_view_decodes_an_encoded_entry(entry, view):
    values = {}
    for f in msgspec.structs.fields(entry):
        if f.required:
            values[f.name] = {"PatientName": "DOE^J"} if f.name == "attrs" else (
                1 if f.type is int else 1.5 if f.type is float else f"v-{f.name}")
    row = msgspec.msgpack.encode(entry(**values))
    decoded = msgspec.msgpack.decode(row, type=view)
    for f in msgspec.structs.fields(view):
        got = getattr(decoded, f.name)
        if f.name == "attrs":
            assert msgspec.msgpack.decode(got) == values["attrs"]
        else:
            assert got == getattr(msgspec.msgpack.decode(row, type=entry), f.name)
