"""C-FIND matches read and encoded straight from their index rows: the twin of ``_findenc.pyx``.

A match is its rows, indexed by level (0 = patient ... 3 = instance; msgspec structs of
``hpacs.index.db``: the entries, or the C-FIND walk's view rows whose ``attrs`` are still
msgpack, ``msgspec.Raw``: the compiled kernel reads their values in place, this twin decodes
them). A value is found by its *sources* (built once per query by
``hpacs.index.query.value_sources``): ``(level, how, name)`` tried in order, the first present
wins; ``how`` is :data:`ATTR` (``row.attrs[name]`` when present), :data:`FIELD` (a row field,
always present), :data:`TRUTHY` (a row field when truthy) or :data:`KEYS` (a dict field's keys,
sorted, joined with backslashes: ModalitiesInStudy). :func:`resolve` is the query engine's
value lookup for matching; :class:`RowEncoder` writes a pending response identifier from a plan
prepared once per C-FIND (``hpacs.dimse.find.MatchEncoder``), without building a merged dict.

Plan entries, in tag order: ``(kind, head, long_len, vr, payload, fast, pad, ascii_only)``;
``head`` is the element header before its length (tag, and VR when explicit), ``long_len`` a
4-byte length (else 2), ``pad`` the padding byte of an odd value. ``kind``:

- :data:`KEY`: a return key, ``payload`` its sources; a ``fast`` VR (text, not a number) takes
  a string value (an int as its decimal string: a count) as it is (encoded ``ascii`` when
  ``ascii_only``, else in the answer's codec, errors replaced); anything else goes through
  ``slow(vr, value, codec, True)``;
- :data:`UNIQUE`: a unique key the level adds; an empty value is no value; non-strings go
  through ``slow(vr, value, codec, False)``;
- :data:`CONST`: ``payload`` = the whole element in the ASCII and in the UTF-8 answer;
- :data:`CHARSET`: ``payload`` = the element with ``ISO_IR 192`` and the empty element (written
  when the answer is not ASCII, else when the request asked for the character set).

``flags``: :data:`LITTLE` (byte order of the lengths), :data:`CHARSET_REQUESTED`, and
:data:`CONST_NON_ASCII`. The answer is UTF-8 (``ISO_IR 192``) when ``flags`` has
:data:`CONST_NON_ASCII` or a value of ``text_sources`` is not ASCII (``non_ascii_of(value)``
decides for non-strings). The compiled kernel gives the same bytes for every input
(tests/_ext/test_findenc_twins.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

__all__ = [
    "ATTR",
    "CHARSET",
    "CHARSET_REQUESTED",
    "CONST",
    "CONST_NON_ASCII",
    "FIELD",
    "KEY",
    "KEYS",
    "LITTLE",
    "TRUTHY",
    "UNIQUE",
    "RowEncoder",
    "raw_attrs",
    "resolve",
]

ATTR, FIELD, TRUTHY, KEYS = 0, 1, 2, 3
KEY, UNIQUE, CONST, CHARSET = 0, 1, 2, 3
LITTLE, CONST_NON_ASCII, CHARSET_REQUESTED = 1, 2, 4

_ABSENT = object()


#: A view row's raw attrs decoded as the entry's own field would be (str | int | list[int]).
_RAW_ATTRS = msgspec.msgpack.Decoder(dict[str, str | int | list[int]])


def raw_attrs(raw: Any) -> dict:
    """The attrs of a view row (``hpacs.index.db.PatientView`` ...: msgpack left raw) as the
    entry's dict; the compiled kernel's fallback for values it does not read in place."""
    return _RAW_ATTRS.decode(raw)


def resolve(rows: list, sources: tuple[tuple[int, int, str], ...]) -> Any:
    """The value ``sources`` point at in ``rows`` (None when there is none). A row's attrs are
    a dict (an entry) or raw msgpack (a view row: decoded here, read in place when compiled)."""
    for level, how, name in sources:
        row = rows[level]
        if how == ATTR:
            attrs = row.attrs
            if attrs.__class__ is not dict:
                attrs = raw_attrs(attrs)
            v = attrs.get(name, _ABSENT)
            if v is not _ABSENT:
                return v
        elif how == FIELD:
            return getattr(row, name)
        elif how == TRUTHY:
            v = getattr(row, name)
            if v:
                return v
        else:
            return "\\".join(sorted(getattr(row, name)))
    return None


class RowEncoder:
    """Encodes the identifier of each match of one C-FIND (see the module docstring)."""

    def __init__(self, plan: tuple, text_sources: tuple, flags: int,
                 slow: Callable[[str, Any, str, bool], bytes],
                 non_ascii_of: Callable[[Any], bool]) -> None:
        self.plan, self.text_sources, self.flags = plan, text_sources, flags
        self.slow, self.non_ascii_of = slow, non_ascii_of

    def encode(self, rows: list) -> bytes:
        """The identifier of the match whose rows are ``rows``."""
        flags, slow = self.flags, self.slow
        non_ascii = bool(flags & CONST_NON_ASCII)
        if not non_ascii:
            for sources in self.text_sources:
                value = resolve(rows, sources)
                if value is None or (value.__class__ is str and value.isascii()):
                    continue
                if self.non_ascii_of(value):
                    non_ascii = True
                    break
        codec = "utf-8" if non_ascii else "ascii"
        order = "little" if flags & LITTLE else "big"
        out: list[bytes] = []
        for kind, head, long_len, vr, payload, fast, pad, ascii_only in self.plan:
            if kind == CONST:
                out.append(payload[non_ascii])
                continue
            if kind == CHARSET:
                if non_ascii:
                    out.append(payload[0])
                elif flags & CHARSET_REQUESTED:
                    out.append(payload[1])
                continue
            value = resolve(rows, payload)
            if fast and value.__class__ is int:
                value = str(value)  # a count (IS): the same bytes as the slow path
            if fast and value.__class__ is str and value:
                raw = value.encode("ascii" if ascii_only else codec, "replace")
                if len(raw) & 1:
                    raw += pad
            elif kind == UNIQUE:
                raw = slow(vr, value, codec, False) if value else b""
            else:
                raw = slow(vr, value, codec, True)
            out.append(head)
            out.append(len(raw).to_bytes(4 if long_len else 2, order))
            out.append(raw)
        return b"".join(out)
