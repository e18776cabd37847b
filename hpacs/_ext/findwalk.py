"""The candidates of a query page, and their rows turned into matches: the twin of
``_findwalk.pyx``.

The candidate keys come from :func:`scan` (a key range of one database), :func:`dedup` and
:func:`children` (each parent key expanded through a child dupsort database), chained as
``hpacs.index.query.QueryEngine.plan`` says. Each gets the cursor of the page's read transaction
and a *state* (the plan's ``_Scan`` / ``_Children`` object) where it records how far it went,
so the next page, in a new transaction, resumes after the last key it yielded.

:meth:`RowWalker.collect` runs inside ONE read transaction of
``hpacs.index.query.QueryEngine.row_pages``: for each candidate key of the query level it reads
the rows of the candidate and of its ancestors (``gets[level](key)``: a cursor's ``get`` per
level's table, ``decoders[level]`` decodes the row; the parents of a candidate are cached for the
call, since many candidates share them) and keeps the rows that pass every check.

A ``having`` filter (``(probe, values)``) may drop a candidate before its rows are read: the
modality index probed for the candidate's key (``hpacs.index.query.QueryEngine.having``).

A check is ``(match, sources, prefix)``: the value ``resolve(rows, sources)`` must satisfy
``match`` (``Matcher.match``). ``prefix`` is ``(literal, fold, pn)`` when the key is a literal
prefix followed by ``*`` (``DOE*``, the name-prefix query), else None: the compiled kernel then
decides an ASCII string value without a call (strip, casefold and compare in place) and leaves
everything else (non-ASCII, multiple values, PN component groups) to ``match``; the twin always
calls ``match``. The compiled kernel keeps the same rows, in the same order, for every input
(tests/_ext/test_findwalk_twins.py).

:func:`frame_matches` writes a page of C-FIND pending responses as the bytes that go on the
wire, in one buffer: per match the pending command's P-DATA-TF PDU (the same for every match)
and the identifier framed as ``hpacs.ul.pdu.encode_pdata`` frames a data set.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator
from typing import Any

__all__ = ["ABOVE", "CACHE_MAX", "EXACT", "NEVER", "PREFIX", "RowWalker", "children", "dedup",
           "frame_matches", "scan"]

#: How a scan's key range ends (``state.stop``, with ``state.bound``): never, at the first key
#: without the prefix, at the first key that differs, at the first key above the bound.
NEVER, PREFIX, EXACT, ABOVE = 0, 1, 2, 3

#: Parent rows cached per call before the cache is cleared (bounded memory on wide scans).
CACHE_MAX = 4096

_ABSENT = object()


class RowWalker:
    """The rows of the matches among a query's candidates (see the module docstring).

    ``decoders``: a row decoder per level, 0 (patient) .. ``depth``; ``patient_key(id, issuer)``:
    the patients table's key of a study row's patient; ``resolve``: the value lookup of
    ``hpacs._ext.findenc``."""

    def __init__(self, decoders: tuple, depth: int, checks: tuple,
                 patient_key: Callable[[str, str], bytes],
                 resolve: Callable[[list, tuple], Any]) -> None:
        self.decoders, self.depth, self.checks = decoders, depth, checks
        self.patient_key, self.resolve = patient_key, resolve

    def collect(self, keys: Iterable[bytes], gets: tuple, out: list, size: int,
                budget: int, having: tuple | None = None) -> bool:
        """Append to ``out`` the rows (patient first) of each candidate of ``keys`` that
        passes every check, until ``out`` holds ``size`` matches or ``budget`` candidates were
        examined (False: more may follow) or ``keys`` ends (True).

        ``having``: ``(probe, values)``, a filter tried before any row is read: a candidate
        ``k`` is kept when ``probe(v, k)`` is true for one of ``values`` (a cursor's
        ``set_key_dup`` on an index whose values are the candidates' keys: the studies of a
        modality). It must keep every candidate that can pass the checks (the checks still
        decide); a rejected candidate costs one probe per value instead of its rows."""
        caches: list[dict[bytes, Any]] = [{} for _ in range(self.depth + 1)]
        resolve, checks = self.resolve, self.checks
        for examined, k in enumerate(keys, 1):
            if having is not None and not any(having[0](v, k) for v in having[1]):
                if examined >= budget:
                    return False
                continue
            rows = self._rows(gets, k, caches)
            if rows is not None:
                for match, sources, _prefix in checks:
                    if not match(resolve(rows, sources)):
                        break
                else:
                    out.append(rows)
            if len(out) >= size or examined >= budget:
                return False
        return True

    def _rows(self, gets: tuple, k: bytes, caches: list[dict[bytes, Any]]) -> list | None:
        """The rows of ``k`` and of its ancestors, by level; None when one is gone."""
        depth = self.depth
        rows: list = [None] * (depth + 1)
        d, rk = depth, k
        while d >= 0:
            cache = caches[d]
            row = cache.get(rk, _ABSENT)
            if row is _ABSENT:
                raw = gets[d](rk)
                row = None if raw is None else self.decoders[d](raw)
                if d < 3:  # instance rows are never shared: not cached
                    if len(cache) > CACHE_MAX:
                        cache.clear()
                    cache[rk] = row
            if row is None:
                return None
            rows[d] = row
            if d == 3:
                rk = row.series_uid.encode()
            elif d == 2:
                rk = row.study_uid.encode()
            elif d == 1:
                rk = self.patient_key(row.patient_id, row.issuer)
            d -= 1
        return rows


def scan(state: Any, cur: Any) -> Iterator[bytes]:
    """The rest of a key range of one database: over a dupsort index its values (keys of the
    level below), over a table its keys. ``state``: ``lo`` (first key), ``stop`` and ``bound``
    (where it ends), ``dup``, ``last`` ((key, value) yielded last, None before the first) and
    ``done`` (set when the range is exhausted)."""
    if state.done:
        return
    if state.last is None:
        ok = cur.set_range(state.lo)
    elif state.dup:
        k, v = state.last
        ok = cur.set_range_dup(k, v)
        if ok and cur.value() == v:
            ok = cur.next()
        elif not ok:
            ok = cur.set_range(k + b"\0")
    else:
        ok = cur.set_range(state.last[0])
        if ok and cur.key() == state.last[0]:
            ok = cur.next()
    stop, bound, dup = state.stop, state.bound, state.dup
    while ok:
        k = cur.key()
        if (stop == PREFIX and not k.startswith(bound)) or (stop == EXACT and k != bound) or (
                stop == ABOVE and k > bound):
            break
        v = cur.value() if dup else k
        state.last = (k, v)
        yield v
        ok = cur.next()
    state.done = True


def dedup(seen: set, keys: Iterable[bytes]) -> Iterator[bytes]:
    """``keys`` without those in ``seen`` (which it extends)."""
    for k in keys:
        if k not in seen:
            seen.add(k)
            yield k


def children(state: Any, cur: Any, parents: Iterable[bytes], strip: bool) -> Iterator[bytes]:
    """The children of each parent key, through ``cur`` on a child dupsort database; first
    the rest of ``state.current``'s (after ``state.last``, the child dup value yielded last) when
    a page stopped inside them. ``strip``: the values carry a 4-byte order prefix (the
    instances of a series) to cut. ``state.current`` is None once the parents are exhausted."""
    if state.current is not None:
        yield from _children_of(state, cur, strip)
    for parent in parents:
        state.current, state.last = parent, None
        yield from _children_of(state, cur, strip)
    state.current = None


def _children_of(state: Any, cur: Any, strip: bool) -> Iterator[bytes]:
    if state.last is None:
        ok = cur.set_key(state.current)
    else:
        ok = cur.set_range_dup(state.current, state.last)
        if ok and cur.value() == state.last:
            ok = cur.next_dup()
    while ok:
        v = cur.value()
        state.last = v
        yield v[4:] if strip else v
        ok = cur.next_dup()


_PDATA_HDR = struct.Struct(">BxIIBB")  # P-DATA-TF PDU header + one PDV item header
_P_DATA_TF = 0x04


def frame_matches(encode: Callable[[list], bytes], matches: list, pending_pdu: bytes,
                  context_id: int, pdu_limit: int) -> bytes:
    """For each match: ``pending_pdu``, then ``encode(rows)`` in P-DATA-TF PDUs of at most
    ``pdu_limit`` body bytes (data set PDVs, the last one flagged last); all in one buffer."""
    chunk = pdu_limit - 6
    if chunk < 1 or not 0 < context_id < 256:
        raise ValueError("P-DATA-TF framing: bad PDU limit or presentation context ID")
    pack = _PDATA_HDR.pack
    out: list[bytes] = []
    for rows in matches:
        out.append(pending_pdu)
        data = encode(rows)
        n = len(data)
        if n <= chunk:
            out.append(pack(_P_DATA_TF, n + 6, n + 2, context_id, 2))
            out.append(data)
            continue
        for off in range(0, n, chunk):
            part = data[off:off + chunk]
            last = 2 if off + chunk >= n else 0
            out.append(pack(_P_DATA_TF, len(part) + 6, len(part) + 2, context_id, last))
            out.append(part)
    return b"".join(out)
