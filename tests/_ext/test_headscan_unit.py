"""Hand-built data sets for each framing rule, the build check, and fuzzing of both twins."""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpacs._ext import _headscan, headscan
from hpacs.dicom import scan
from tests._ext.headscan_corpus import WANTED, samples

TWINS = [pytest.param(headscan, id="pure"), pytest.param(_headscan, id="compiled")]
LONG = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
U = 0xFFFFFFFF


def el(tag: int, vr: str, value: bytes, explicit=True, little=True, length=None) -> bytes:
    e = "<" if little else ">"
    n = len(value) if length is None else length
    head = struct.pack(e + "HH", tag >> 16, tag & 0xFFFF)
    if not explicit:
        return head + struct.pack(e + "L", n) + value
    if vr in LONG:
        return head + vr.encode() + b"\0\0" + struct.pack(e + "L", n) + value
    return head + vr.encode() + struct.pack(e + "H", n) + value


def item(body: bytes, little=True, length=None) -> bytes:
    e = "<" if little else ">"
    n = len(body) if length is None else length
    return struct.pack(e + "HHL", 0xFFFE, 0xE000, n) + body


def delim(elem: int, little=True) -> bytes:
    return struct.pack("<HHL" if little else ">HHL", 0xFFFE, elem, 0)


ITEM_END, SEQ_END = 0xE00D, 0xE0DD
PN = el(0x00100010, "PN", b"Doe^John")
PID = el(0x00100020, "LO", b"ID1 ")


def run(mod, data: bytes, explicit=True, little=True, wanted=WANTED, max_len=1024, step=None):
    sc = mod.HeaderScanner(wanted, explicit, little, max_len)
    try:
        if step is None:
            sc.feed(data)
        else:
            for i in range(0, len(data), step):
                sc.feed(data[i : i + step])
        return sc.finish()
    except headscan.ScanError as exc:
        return f"ScanError: {exc}"


def both(data: bytes, **kw):
    results = [run(m, data, **kw, step=s) for m in (headscan, _headscan) for s in (None, 1, 5)]
    assert all(r == results[0] for r in results), results
    return results[0]


def test_compiled_scanner_is_built_and_used():
    """In CI a missing build is a failure: the compiled module must exist and be chosen."""
    assert _headscan.HeaderScanner is not headscan.HeaderScanner
    assert _headscan.__file__.endswith((".so", ".pyd"))
    if os.environ.get("HPACS_PURE") == "1":
        assert scan.HeaderScanner is headscan.HeaderScanner and not scan.COMPILED
    else:
        assert scan.HeaderScanner is _headscan.HeaderScanner and scan.COMPILED
    assert _headscan.MAX_DEPTH == headscan.MAX_DEPTH


def test_explicit_le_values_and_skips():
    pixels = el(0x7FE00010, "OW", bytes(500_000))
    data = PN + PID + el(0x00280010, "US", b"\x00\x02") + pixels
    assert both(data) == {0x00100010: b"Doe^John", 0x00100020: b"ID1 ", 0x00280010: b"\x00\x02"}
    assert both(data, max_len=5) == {0x00100020: b"ID1 ", 0x00280010: b"\x00\x02"}


def test_big_endian_and_implicit():
    be = el(0x00100010, "PN", b"A^B ", little=False)
    be += el(0x00280010, "US", b"\x02\x00", little=False)
    assert both(be, little=False) == {0x00100010: b"A^B ", 0x00280010: b"\x02\x00"}
    imp = el(0x00100010, "", b"A^B ", explicit=False)
    assert both(imp, explicit=False) == {0x00100010: b"A^B "}


def test_nested_sequences_all_forms():
    inner = el(0x00100010, "PN", b"IN^NER ")  # a wanted tag, but not top-level: not collected
    seq_undef = el(0x00081111, "SQ", b"", length=U) + item(inner, length=U) + delim(ITEM_END)
    seq_undef += item(inner) + delim(SEQ_END)
    seq_def_body = item(inner) + item(b"")
    seq_def = el(0x00081115, "SQ", seq_def_body)
    # undefined-length UN: an implicit VR LE sequence even inside explicit VR
    un = el(0x00091010, "UN", b"", length=U) + item(el(0x00100010, "", b"X ", explicit=False))
    un += delim(SEQ_END)
    frags = el(0x7FE00010, "OB", b"", length=U) + item(b"") + item(b"\xff\xd8ab") + delim(SEQ_END)
    data = el(0x00080005, "CS", b"ISO_IR 100") + seq_undef + seq_def + un + PN + frags
    assert both(data) == {0x00080005: b"ISO_IR 100", 0x00100010: b"Doe^John"}


def test_big_endian_nested():
    inner = el(0x00100010, "PN", b"IN", little=False)
    seq = el(0x00081111, "SQ", b"", little=False, length=U) + item(inner, little=False, length=U)
    seq += delim(ITEM_END, little=False) + delim(SEQ_END, little=False)
    assert both(seq + el(0x00100020, "LO", b"P1", little=False), little=False) == {
        0x00100020: b"P1"
    }


def test_implicit_undefined_length_is_a_sequence():
    inner = el(0x00100010, "", b"IN", explicit=False)
    seq = el(0x00291010, "", b"", explicit=False, length=U) + item(inner, length=U)
    seq += delim(ITEM_END) + delim(SEQ_END)
    assert both(seq + el(0x00100020, "", b"P1", explicit=False), explicit=False) == {
        0x00100020: b"P1"
    }


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x10\x00\x10\x00XX\x02\x00ab", "invalid VR bytes 0x5858 in (0010,0010) at offset 0"),
        (PN[:-1], "stream ends inside the value of (0010,0010): 1 bytes missing"),
        (PN + PN[:5], "stream ends inside an element header at offset 16"),
        (el(0x00081111, "SQ", b"", length=U) + item(b"", length=U), "open sequence or item"),
        (delim(ITEM_END), "unexpected (FFFE,E00D) at offset 0"),
        (delim(SEQ_END), "unexpected (FFFE,E0DD) at offset 0"),
        (el(0x00081111, "SQ", PN), "expected an item, found (0010,0010) at offset 12"),
        (el(0x00081111, "SQ", item(PN, length=10)), "value of (0010,0010) at offset 20 overruns"),
        (el(0x00081111, "SQ", item(PN), length=10), "item at offset 12 overruns"),
        (el(0x00081111, "SQ", item(PN)) + delim(SEQ_END), "unexpected (FFFE,E0DD)"),
        (el(0x00081111, "SQ", item(b"")) + delim(SEQ_END), "unexpected (FFFE,E0DD) at offset 20"),
        (el(0x00081111, "SQ", item(delim(ITEM_END))), "unexpected (FFFE,E00D) at offset 20"),
        (el(0x00081111, "SQ", delim(SEQ_END)), "sequence delimiter in a defined-length"),
        (el(0x00104000, "UT", b"", length=U), "undefined length for (0010,4000)"),
        (el(0x7FE00010, "OB", b"", length=U) + item(b"", length=U), "undefined-length fragment"),
        (el(0x7FE00010, "OB", b"", length=U) + PN, "expected an item, found (0010,0010)"),
        (el(0x00081111, "SQ", b"", length=U) + struct.pack("<HHL", 0xFFFE, 0xE0DD, 4),
         "sequence delimiter with non-zero length"),
    ],
)
def test_structural_errors(data: bytes, message: str):
    got = both(data)
    assert isinstance(got, str)
    assert message in got


def test_nesting_cap():
    deep = (el(0x00081111, "SQ", b"", length=U) + item(b"", length=U)) * 70
    assert "nesting deeper than 128" in both(deep)
    ok = (el(0x00081111, "SQ", b"", length=U) + item(b"", length=U)) * 60
    ok += (delim(ITEM_END) + delim(SEQ_END)) * 60
    assert both(ok) == {}


def test_collection_stops_after_highest_wanted_tag_but_walk_continues():
    data = PN + PID + el(0x00100010, "PN", b"AGAIN ") + el(0x00200010, "SH", b"x", length=5)
    assert "stream ends inside the value of (0020,0010)" in both(data, wanted={0x00100010})
    assert both(PN + PID + PN, wanted={0x00100010}) == {0x00100010: b"Doe^John"}  # order broken


@pytest.mark.parametrize("mod", TWINS)
def test_inputs_errors_sticky_and_bytes_seen(mod):
    sc = mod.HeaderScanner(WANTED, True, True)
    sc.feed(bytearray(PN[:3]))
    sc.feed(memoryview(PN)[3:])
    sc.feed(memoryview(struct.pack("<4H", 0x0010, 0x0020, 0x4F4C, 0x0004)).cast("H"))
    sc.feed(b"")
    sc.feed(b"ID1 ")
    assert sc.bytes_seen == len(PN) + 12
    assert sc.finish() == {0x00100010: b"Doe^John", 0x00100020: b"ID1 "}
    sc.feed(b"\x10\x00\x10\x00XX")
    with pytest.raises(headscan.ScanError, match=r"invalid VR bytes 0x5858 in .* offset 28"):
        sc.feed(b"\x02\x00")  # known bad once 8 header bytes are in
    with pytest.raises(headscan.ScanError, match="invalid VR"):
        sc.feed(PN)
    with pytest.raises(headscan.ScanError, match="invalid VR"):
        sc.finish()
    with pytest.raises(ValueError):
        mod.HeaderScanner({-1}, True, True)


# -- fuzzing: only ScanError, twins identical, chunking irrelevant -------------------------------

SMALL = [s for s in samples() if len(s.data) < 40_000]
FUZZ = settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])


def _agree(data: bytes, explicit: bool, little: bool, step: int) -> None:
    a = run(headscan, data, explicit=explicit, little=little)
    b = run(_headscan, data, explicit=explicit, little=little)
    c = run(_headscan, data, explicit=explicit, little=little, step=step)
    d = run(headscan, data, explicit=explicit, little=little, step=step)
    assert a == b == c == d


@FUZZ
@given(st.binary(max_size=600), st.booleans(), st.booleans(), st.integers(1, 40))
def test_fuzz_arbitrary_bytes(data, explicit, little, step):
    _agree(data, explicit, little, step)


@FUZZ
@given(
    st.sampled_from(SMALL),
    st.lists(st.tuples(st.integers(0, 1 << 30), st.integers(0, 255)), min_size=1, max_size=8),
    st.integers(0, 1 << 30),
    st.integers(1, 4096),
)
def test_fuzz_mutated_real_files(s, flips, cut, step):
    data = bytearray(s.data)
    for pos, byte in flips:
        data[pos % len(data)] = byte
    data = bytes(data[: len(data) - cut % 64])
    _agree(data, s.explicit_vr, s.little_endian, step)


@FUZZ
@given(st.lists(st.sampled_from([
    PN, PID, el(0x00081111, "SQ", b"", length=U), item(b"", length=U), item(PN), delim(ITEM_END),
    delim(SEQ_END), el(0x7FE00010, "OB", b"", length=U), item(b"ab"), el(0x00091010, "UN", b"",
    length=U), el(0x00081115, "SQ", item(PID)), b"\x00",
]), max_size=30), st.integers(1, 16))
def test_fuzz_structured(parts, step):
    _agree(b"".join(parts), True, True, step)
