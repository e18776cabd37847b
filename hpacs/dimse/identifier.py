"""A C-FIND identifier read into ``(tag, VR, keyword, text)`` elements.

pydicom's ``read_dataset`` plus the conversion of every element cost ~0.4-0.5 ms per query
(more than a hundred matches' worth of the SCP's work); nearly every identifier is plain: a
dozen short ASCII elements, most of them empty. :func:`read_plain` reads those directly and
answers None for anything else (sequences, undefined lengths, a character set other than the
ASCII-compatible ones, non-ASCII text, non-empty numbers, private or unknown tags, ambiguous
VRs, malformed input...), which :func:`read_pydicom` then reads as before. Both give the same
elements for every identifier :func:`read_plain` accepts (tests/dimse/test_identifier.py holds
it to pydicom on random identifiers): the text of a value is what ``parse_find`` used to make
of pydicom's converted value (multiple values joined by backslashes, padding stripped by the
VR's rule).
"""

from __future__ import annotations

import struct
from io import BytesIO
from typing import Any, Final

from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.filereader import read_dataset
from pydicom.multival import MultiValue

__all__ = ["Element", "read_plain", "read_pydicom"]

#: (tag, VR, keyword or "", value as text)
Element = tuple[int, str, str, str]

_QR_LEVEL: Final = 0x00080052
_CHARSET: Final = 0x00080005
#: Explicit-VR headers with 2 reserved bytes and a 4-byte length (PS3.5 7.1.2).
_LONG_VRS: Final = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR",
                              "UT", "UV"})
_SHORT_VRS: Final = frozenset({"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO",
                               "LT", "PN", "SH", "SL", "SS", "ST", "TM", "UI", "UL", "US"})
#: Character sets under which ASCII bytes decode as ASCII in pydicom (no escape handling).
_PLAIN_CHARSETS: Final = frozenset({"", "ISO_IR 6", "ISO_IR 100", "ISO_IR 192",
                                    "ISO 2022 IR 6", "ISO 2022 IR 100"})
#: VRs whose non-empty ASCII values are read here, by how pydicom converts them.
_RSTRIP_WHOLE: Final = frozenset({"AS", "CS", "DA", "DT", "TM", "LT", "ST", "UT"})
_RSTRIP_EACH: Final = frozenset({"LO", "SH", "UC"})
_TEXT_VRS: Final = _RSTRIP_WHOLE | _RSTRIP_EACH | {"AE", "PN", "UI", "UR"}


def _text(vr: str, raw: bytes) -> str | None:
    """The text pydicom's conversion of the ASCII value ``raw`` comes to, or None."""
    if not raw:
        return ""  # every empty non-sequence value: "", None, b"" or PersonName("")
    if vr not in _TEXT_VRS or not raw.isascii() or b"\x1b" in raw:
        return None
    s = raw.decode("ascii")
    if vr in _RSTRIP_WHOLE:  # convert_string / convert_single_string
        return s.rstrip(" \x00")
    if vr == "UI":  # convert_UI: pydicom's UID strips each value
        return "\\".join(v.strip() for v in s.rstrip("\x00 ").split("\\"))
    if vr in _RSTRIP_EACH:  # convert_text
        return "\\".join(v.rstrip("\x00 ") for v in s.split("\\"))
    if vr == "AE":  # convert_AE_string
        return "\\".join(v.strip() for v in s.split("\\"))
    if vr == "UR":  # convert_UR_string
        return s.rstrip()
    # PN: the value without trailing NULs and spaces; a name with component groups is left to
    # pydicom (PersonName drops empty trailing groups)
    s = raw.rstrip(b"\x00 ").decode("ascii")
    return None if "=" in s else s


def read_plain(identifier: bytes, explicit_vr: bool, little_endian: bool) -> list[Element] | None:
    """The elements of a plain identifier in tag order, or None (see the module docstring)."""
    end = "<" if little_endian else ">"
    u16 = struct.Struct(end + "H").unpack_from
    u32 = struct.Struct(end + "I").unpack_from
    n = len(identifier)
    if n >= 6 and (0x40 < identifier[4] < 0x5B and 0x40 < identifier[5] < 0x5B) != explicit_vr:
        return None  # pydicom reads the first element's VR bytes and switches syntax
    pos = 0
    out: dict[int, Element] = {}
    while pos < n:
        if pos + 8 > n:
            return None
        tag = (u16(identifier, pos)[0] << 16) | u16(identifier, pos + 2)[0]
        if explicit_vr:
            try:
                vr = identifier[pos + 4:pos + 6].decode("ascii")
            except UnicodeDecodeError:
                return None
            if vr in _SHORT_VRS:
                length = u16(identifier, pos + 6)[0]
                pos += 8
            elif vr in _LONG_VRS and vr not in ("SQ", "UN"):
                if pos + 12 > n:
                    return None
                length = u32(identifier, pos + 8)[0]
                pos += 12
            else:  # sequences, UN (pydicom may replace it), unknown VRs
                return None
        else:
            length = u32(identifier, pos + 4)[0]
            pos += 8
            vr = ""
        if length == 0xFFFFFFFF or pos + length > n or tag in out or tag >> 16 == 0xFFFE:
            return None
        keyword = keyword_for_tag(tag) if (tag >> 16) & 1 == 0 else ""
        if not keyword:
            return None  # private, unknown or item tags
        if not explicit_vr:
            try:
                vr = dictionary_VR(tag)
            except KeyError:
                return None
            if (vr not in _SHORT_VRS and vr not in _LONG_VRS) or vr in ("SQ", "UN"):
                return None  # ambiguous ("US or SS"), sequences, UN
        text = _text(vr, identifier[pos:pos + length])
        if text is None:
            return None
        if tag == _CHARSET and any(t.strip() not in _PLAIN_CHARSETS for t in text.split("\\")):
            return None
        if tag == _QR_LEVEL and "\\" in text:
            return None  # pydicom gives a MultiValue, whose str() parse_find used
        out[tag] = (tag, vr, keyword, text)
        pos += length
    return [out[t] for t in sorted(out)]


def read_pydicom(identifier: bytes, explicit_vr: bool, little_endian: bool) -> list[Element]:
    """Every identifier, through pydicom; raises what pydicom raises on garbage."""
    ds = read_dataset(BytesIO(identifier), not explicit_vr, little_endian)
    out: list[Element] = []
    for e in list(ds):  # converts the raw elements: may raise
        tag = int(e.tag)
        vr = e.VR if e.VR not in ("UN", None) else _dictionary_vr(tag)
        keyword = e.keyword or keyword_for_tag(tag) or ""
        if vr == "SQ":
            text = ""
        elif tag == _QR_LEVEL:
            text = str(e.value or "")
        else:
            text = _as_text(e.value)
        out.append((tag, vr, keyword, text))
    return out


def _dictionary_vr(tag: int) -> str:
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return "UN"
    return vr.split(" or ")[0]


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, list | tuple | MultiValue):
        return "\\".join(_as_text(v) for v in value)
    return str(value)
