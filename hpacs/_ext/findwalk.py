"""The candidates of a query page turned into matches: the twin of ``_findwalk.pyx``.

:meth:`RowWalker.collect` runs inside ONE read transaction of
``hpacs.index.query.QueryEngine.row_pages``: for each candidate key of the query level it reads
the rows of the candidate and of its ancestors (``gets[level](key)``: a cursor's ``get`` per
level's table, ``decoders[level]`` decodes the row; the parents of a candidate are cached for the
call, since many candidates share them) and keeps the rows that pass every check.

A check is ``(match, sources, prefix)``: the value ``resolve(rows, sources)`` must satisfy
``match`` (``Matcher.match``). ``prefix`` is ``(literal, fold, pn)`` when the key is a literal
prefix followed by ``*`` (``DOE*``, the name-prefix query), else None: the compiled kernel then
decides an ASCII string value without a call (strip, casefold and compare in place) and leaves
everything else (non-ASCII, multiple values, PN component groups) to ``match``; the twin always
calls ``match``. The compiled kernel keeps the same rows, in the same order, for every input
(tests/_ext/test_findwalk_twins.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["CACHE_MAX", "RowWalker"]

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
                budget: int) -> bool:
        """Append to ``out`` the rows (patient first) of each candidate of ``keys`` that
        passes every check, until ``out`` holds ``size`` matches or ``budget`` candidates were
        examined (False: more may follow) or ``keys`` ends (True)."""
        caches: list[dict[bytes, Any]] = [{} for _ in range(self.depth + 1)]
        resolve, checks = self.resolve, self.checks
        for examined, k in enumerate(keys, 1):
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
