"""Decoding DICOM text values: Specific Character Set terms to Python codecs, then text and PN.

Shared by the index (decoding the scanned keys of every instance) and the DICOM JSON encoder.
ASCII and single-codec values take a fast path; ISO 2022 code extensions (escape sequences) go
through pydicom's ``decode_bytes``. Hostile or unknown charsets never raise: they fall back.
"""

from __future__ import annotations

import warnings
from typing import Final

from pydicom.charset import convert_encodings, decode_bytes
from pydicom.valuerep import PN_DELIMS

DEFAULT_ENCODINGS: Final = ("iso8859",)  # what pydicom uses for ISO_IR 6 (ASCII + latin-1)
_ESC: Final = b"\x1b"
_encodings_cache: dict[bytes, tuple[str, ...]] = {}


def encodings_for(raw: bytes | None) -> tuple[str, ...]:
    """Python codecs for a raw (0008,0005) value; unknown/bad terms fall back, never raise."""
    if not raw:
        return DEFAULT_ENCODINGS
    cached = _encodings_cache.get(raw)
    if cached is not None:
        return cached
    terms = [t.strip(" \0") for t in raw.decode("latin-1").split("\\")]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = tuple(convert_encodings(terms)) or DEFAULT_ENCODINGS
    except Exception:  # pydicom raises in strict validation mode: tolerate bad charsets
        result = DEFAULT_ENCODINGS
    if len(_encodings_cache) < 256:  # charsets seen in practice are few; never grow unbounded
        _encodings_cache[raw] = result
    return result


def decode_text(raw: bytes, encodings: tuple[str, ...], delims: set[int]) -> str:
    """One text value (no backslash splitting here) in the data set's character sets."""
    if _ESC not in raw:
        try:
            return raw.decode(encodings[0])
        except (UnicodeDecodeError, LookupError):
            pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return decode_bytes(raw, list(encodings), delims)
        except Exception:  # never let a hostile value stop the caller
            return raw.decode("latin-1")


def decode_pn(raw: bytes, encodings: tuple[str, ...]) -> str:
    """One person name value, component groups joined by ``=`` (trailing empty groups dropped)."""
    if _ESC not in raw:
        try:
            return raw.decode(encodings[0]).rstrip("=")
        except (UnicodeDecodeError, LookupError):
            pass
    groups = [decode_text(g, encodings, PN_DELIMS) for g in raw.split(b"=")]
    while groups and not groups[-1]:
        groups.pop()
    return "=".join(groups)
