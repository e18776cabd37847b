"""The plain identifier reader gives pydicom's elements whenever it answers: random element
lists (every VR family, ASCII and not, padding, several values, empty values, sequences,
private tags, character sets) in the three transfer syntaxes, garbage, and the identifiers
SCUs actually send (which it must read itself)."""

from __future__ import annotations

import struct
import warnings

from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pynetdicom.dsutils import encode

from hpacs.dimse.identifier import read_plain, read_pydicom
from tests.dimse.find_requests import RETURN_KEYS

#: (tag, VR) of elements an identifier may carry, the odd ones included
TAGS = [
    (0x00080005, "CS"), (0x00080020, "DA"), (0x00080030, "TM"), (0x00080050, "SH"),
    (0x00080052, "CS"), (0x00080054, "AE"), (0x00080056, "CS"), (0x00080061, "CS"),
    (0x00080060, "CS"), (0x00081030, "LO"), (0x00100010, "PN"), (0x00100020, "LO"),
    (0x00100021, "LO"), (0x00100030, "DA"), (0x00100040, "CS"), (0x00104000, "LT"),
    (0x0020000D, "UI"), (0x00201206, "IS"), (0x00201208, "IS"), (0x00280010, "US"),
    (0x00081110, "SQ"), (0x00091010, "LO"), (0x00080000, "UL"), (0x00080015, "DT"),
    (0x00280030, "DS"), (0x0040A120, "DT"), (0x00081190, "UR"), (0x00400280, "ST"),
    (0x00080201, "SH"), (0x00189516, "DT"), (0x00321060, "LO"), (0x00082111, "ST"),
    (0x00101002, "SQ"), (0x7FE00010, "OB"), (0x00080016, "UI"),
]  # fmt: skip
CHARSETS = [b"ISO_IR 192", b"ISO_IR 100", b"ISO_IR 6", b"", b"ISO 2022 IR 87",
            b"\\ISO 2022 IR 87", b"ISO_IR 13", b"GB18030", b"ISO_IR 100\\ISO_IR 192"]
_LONG = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}

text_bytes = st.one_of(
    st.text(st.sampled_from("AZaz09 ^=\\*?.-:\0\t"), max_size=20).map(str.encode),
    st.text(st.sampled_from("AbÄé=^ \\"), max_size=8).map(lambda s: s.encode("utf-8")),
    st.binary(max_size=8),
    st.just(b""),
)


@st.composite
def elements(draw: st.DrawFn) -> list[tuple[int, str, bytes]]:
    out = []
    for tag, vr in draw(st.lists(st.sampled_from(TAGS), unique=True, max_size=10)):
        if tag == 0x00080005:
            value = draw(st.sampled_from(CHARSETS))
        elif tag == 0x00080052:
            value = draw(st.sampled_from([b"STUDY", b"STUDY ", b"PATIENT\\STUDY", b"", b"x"]))
        elif vr in ("US", "UL"):
            value = draw(st.sampled_from([b"", b"\x01\x00", b"\x01\x00\x00\x00"]))
        elif vr == "SQ":
            value = b""
        else:
            value = draw(text_bytes)
        if draw(st.integers(0, 9)) == 0:  # sometimes the wire VR differs from the dictionary
            vr = draw(st.sampled_from(["UN", "LO", "OB", "XX"]))
        out.append((tag, vr, value))
    return out


def write(elems: list[tuple[int, str, bytes]], explicit: bool, little: bool,
          undefined_sq: bool) -> bytes:
    end = "<" if little else ">"
    out = []
    for tag, vr, value in sorted(elems):
        head = struct.pack(end + "HH", tag >> 16, tag & 0xFFFF)
        length = 0xFFFFFFFF if vr == "SQ" and undefined_sq else len(value)
        if not explicit:
            out.append(head + struct.pack(end + "I", length))
        elif vr in _LONG:
            out.append(head + vr.encode() + b"\0\0" + struct.pack(end + "I", length))
        else:
            out.append(head + vr.encode() + struct.pack(end + "H", length & 0xFFFF))
        out.append(value)
        if length == 0xFFFFFFFF:  # an empty sequence, then its delimitation item
            out.append(struct.pack(end + "HHI", 0xFFFE, 0xE0DD, 0))
    return b"".join(out)


def _same_as_pydicom(data: bytes, explicit: bool, little: bool) -> list | None:
    plain = read_plain(data, explicit, little)
    if plain is not None:  # pydicom must read it too, and to the same elements
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert read_pydicom(data, explicit, little) == plain
    return plain


@settings(max_examples=1500, deadline=None)
@given(elems=elements(), explicit=st.booleans(), little=st.booleans(),
       undefined_sq=st.booleans())
def test_plain_reads_equal_pydicom(elems, explicit, little, undefined_sq):
    _same_as_pydicom(write(elems, explicit, little or not explicit, undefined_sq), explicit,
                     little or not explicit)


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=64), explicit=st.booleans(), little=st.booleans())
def test_garbage_is_read_plain_only_when_pydicom_agrees(data, explicit, little):
    _same_as_pydicom(data, explicit, little or not explicit)  # implicit VR is little endian


@settings(max_examples=300, deadline=None)
@given(keys=st.lists(st.sampled_from([k for k in RETURN_KEYS if not k.endswith("Sequence")]),
                     unique=True, max_size=14),
       syntax=st.sampled_from([(False, True), (True, True), (True, False)]),
       charset=st.booleans())
def test_what_scus_send_is_read_plain(keys, syntax, charset):
    # empty return keys and ASCII matching values, as findscu / pynetdicom / OHIF's
    # gateways send them: never left to pydicom
    ds = Dataset()
    if charset:
        ds.SpecificCharacterSet = "ISO_IR 192"
    ds.QueryRetrieveLevel = "STUDY"
    for kw in keys:
        setattr(ds, kw, None)
    ds.PatientName = "DOE*"
    ds.StudyDate = "20240101-20240131"
    ds.ModalitiesInStudy = "CT\\MR"
    explicit, little = syntax
    assert _same_as_pydicom(encode(ds, not explicit, little), explicit, little) is not None
