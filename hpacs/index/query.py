"""The query engine: PS3.4 C.2.2.2 attribute matching over the LMDB index, paged.

A :class:`Query` is a level (PATIENT, STUDY, SERIES, IMAGE) plus matching keys by keyword.
:meth:`QueryEngine.pages` yields lists of matches; every ``next()`` opens ONE read transaction,
takes up to ``page_size`` matches (or examines up to ``scan_budget`` candidates), closes it and
remembers where it stopped, so the caller may ``await`` between pages without holding a
transaction (LMDB readers pin pages; a reader held across awaits would stall the writer's
freelist reuse).

Plan: the cheapest available *source* of candidate keys drives the query, then candidates are
expanded down the hierarchy (patient → studies → series → instances through the child dupsort
databases) and every key is checked in Python against the rows. Sources, in order of preference:

1. UID lists (point lookups): SOPInstanceUID, SeriesInstanceUID, StudyInstanceUID.
2. AccessionNumber (exact values) → ``ix_accession``.
3. PatientID (exact value) → prefix range over ``patients``.
4. StudyDate single value → ``ix_study_date``.
5. PatientName with a literal prefix → ``ix_patient_name`` (uppercased component groups).
6. StudyDate range (closed or open) → ``ix_study_date`` range.
7. Modality (series) / ModalitiesInStudy (study) exact values → ``ix_*_modality``.
8. A full scan of the query level's table.

Matching (PS3.4 C.2.2.2): single value, universal (empty, or ``*`` alone), wildcard (``*``,
``?``; not for UI, DA/TM/DT or numbers), range for DA/TM/DT (``a-b``, ``-b``, ``a-``), list of
values (``\\``: a UID list, or any of several values for other VRs). PN matching is
case-insensitive when configured and is tried on the whole value and each component group.
A stored multi-valued attribute matches when any of its values does. Sequence matching is not
supported (sequence keys are returned empty). Unique keys of higher levels are not required
(they restrict when present); keys of higher levels are matched too (as Relational-lite).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from pydicom.datadict import dictionary_VR, tag_for_keyword

from hpacs._ext.findenc import ATTR, FIELD, KEYS, TRUTHY
from hpacs._ext.findwalk import ABOVE, EXACT, NEVER, PREFIX
from hpacs.index.db import _DEC, _DEC_VIEW, IndexDB, key, patient_key
from hpacs.index.rowkernels import RowWalker, children, dedup, resolve, scan
from hpacs.index.schema import LEVEL_KEYWORDS

PATIENT: Final = "PATIENT"
STUDY: Final = "STUDY"
SERIES: Final = "SERIES"
IMAGE: Final = "IMAGE"
QUERY_LEVELS: Final = (PATIENT, STUDY, SERIES, IMAGE)
_DEPTH: Final = {lvl: i for i, lvl in enumerate(QUERY_LEVELS)}
_DBS: Final = (b"patients", b"studies", b"series", b"instances")
_CHILD_DBS: Final = (b"patient_studies", b"study_series", b"series_instances")

#: Attributes computed from the index rather than stored, per level.
DERIVED: Final[dict[str, tuple[str, ...]]] = {
    PATIENT: ("NumberOfPatientRelatedStudies", "NumberOfPatientRelatedSeries",
              "NumberOfPatientRelatedInstances"),
    STUDY: ("NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances", "ModalitiesInStudy",
            "SOPClassesInStudy"),
    SERIES: ("NumberOfSeriesRelatedInstances",),
    IMAGE: (),
}  # fmt: skip

#: Keywords the index can answer at each level (stored plus derived).
LEVEL_ATTRS: Final[dict[str, frozenset[str]]] = {
    q: frozenset(LEVEL_KEYWORDS[s]) | frozenset(DERIVED[q]) - {"SpecificCharacterSet"}
    for q, s in zip(QUERY_LEVELS, ("patient", "study", "series", "instance"), strict=True)
}
UNIQUE_KEYS: Final = {PATIENT: "PatientID", STUDY: "StudyInstanceUID",
                      SERIES: "SeriesInstanceUID", IMAGE: "SOPInstanceUID"}  # fmt: skip

_NO_WILDCARD_VRS: Final = frozenset({"UI", "DA", "TM", "DT", "IS", "DS", "US", "UL", "SS", "SL",
                                      "FL", "FD", "AT", "SQ"})  # fmt: skip
_SINGLE_VALUED_TEXT: Final = frozenset({"ST", "LT", "UT"})
_DA_RE: Final = re.compile(r"\d{8}")
_TM_RE: Final = re.compile(r"\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?")
_DT_RE: Final = re.compile(r"\d{4}(\d{2}(\d{2}(\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?)?)?)?([+-]\d{4})?")


class QueryError(ValueError):
    """A key that cannot be matched (malformed range, bad date...). ``keyword`` names it."""

    def __init__(self, message: str, keyword: str = "") -> None:
        super().__init__(message)
        self.keyword = keyword


# ---------------------------------------------------------------------------------- matchers
def _norm_tm(v: str, high: bool) -> str:
    v = v.replace(":", "").strip()
    whole, _, frac = v.partition(".")
    pad = "595959"[len(whole):] if high else "000000"[len(whole):]
    return whole + pad + "." + (frac + ("9" if high else "0") * 6)[:6]


def _norm_dt(v: str, high: bool) -> str:
    v = v.strip()
    m = re.match(r"([\d.]*)", v)
    body = m.group(1) if m else v  # timezone offsets are ignored
    whole, _, frac = body.partition(".")
    pad = ("99991231235959" if high else "00000101000000")[len(whole):]
    return whole + pad + "." + (frac + ("9" if high else "0") * 6)[:6]


@dataclass(frozen=True, slots=True)
class Matcher:
    """One key's matching rule. ``kind``: single | wildcard | range | list."""

    keyword: str
    vr: str
    kind: str
    values: tuple[str, ...] = ()
    lo: str | None = None
    hi: str | None = None
    pattern: re.Pattern | None = None
    fold: bool = False
    alternatives: tuple[Matcher, ...] = ()
    #: A wildcard that is a literal prefix then ``*`` (``DOE*``): the prefix (casefolded when
    #: ``fold``), matched with ``startswith`` instead of the pattern (the same answer).
    prefix: str | None = None

    def exact_values(self) -> tuple[str, ...] | None:
        """The literal values this key can only equal (for index lookups), else None."""
        if self.kind == "single" and not self.fold:
            return self.values
        if self.kind == "list" and all(
            a.kind == "single" and not a.fold for a in self.alternatives
        ):
            return tuple(a.values[0] for a in self.alternatives)
        return None

    def literal_prefix(self) -> str | None:
        """A prefix every matching value starts with (case-insensitively), or None."""
        if self.kind == "single":
            return self.values[0]
        if self.kind == "wildcard":
            raw = self.values[0]
            cut = min((i for i in (raw.find("*"), raw.find("?")) if i >= 0), default=len(raw))
            return raw[:cut] or None
        return None

    def match(self, stored: Any) -> bool:
        if stored is None or stored == "":
            return False
        if isinstance(stored, list):
            return any(self.match(s) for s in stored)
        s = str(stored)
        if "\\" in s and self.vr not in _SINGLE_VALUED_TEXT:
            return any(self._one(p) for p in s.split("\\"))
        return self._one(s)

    def _candidates(self, s: str) -> Iterator[str]:
        """The forms of a stored value a key is tried on, lazily (most matches are decided by
        the first): a PN's whole value, then each non-empty component group (casefolded when
        the matching is case-insensitive); other VRs: the value without trailing spaces."""
        if self.vr != "PN":
            yield s.rstrip(" ")
            return
        fold = self.fold
        whole = s.rstrip("^ =")
        yield whole.casefold() if fold else whole
        if "=" in s:  # else the only group is the whole value
            for g in s.split("="):
                g = g.rstrip("^ ")
                if g:
                    yield g.casefold() if fold else g

    def _one(self, s: str) -> bool:
        kind = self.kind
        if kind == "list":
            return any(a._one(s) for a in self.alternatives)
        if kind == "range":
            if self.vr == "DA":
                v = s.replace(".", "")
            elif self.vr == "TM":
                v = _norm_tm(s, False)
            else:
                v = _norm_dt(s, False)
            return (self.lo is None or v >= self.lo) and (self.hi is None or v <= self.hi)
        if kind == "wildcard":
            pre = self.prefix
            if pre is not None:
                if self.vr != "PN":
                    return s.rstrip(" ").startswith(pre)
                if "=" not in s:  # the whole value is the only candidate
                    c = s.rstrip("^ =")
                    return (c.casefold() if self.fold else c).startswith(pre)
                return any(c.startswith(pre) for c in self._candidates(s))
            pat = self.pattern
            assert pat is not None
            return any(pat.fullmatch(c) for c in self._candidates(s))
        want = self.values[0]
        if self.vr in ("TM", "DA", "DT"):
            if self.vr == "TM":
                return _norm_tm(s, False) == _norm_tm(want, False)
            return s.replace(".", "") == want if self.vr == "DA" else s == want
        return any(c == want for c in self._candidates(s))


def _range_bound(vr: str, v: str, high: bool, keyword: str) -> str | None:
    v = v.strip()
    if not v:
        return None
    if vr == "DA":
        v = v.replace(".", "")  # ACR-NEMA style YYYY.MM.DD is tolerated
        if not _DA_RE.fullmatch(v):
            raise QueryError(f"malformed date {v!r} in {keyword}", keyword)
        return v
    if vr == "TM":
        if not _TM_RE.fullmatch(v.replace(":", "")):
            raise QueryError(f"malformed time {v!r} in {keyword}", keyword)
        return _norm_tm(v, high)
    if not _DT_RE.fullmatch(v):
        raise QueryError(f"malformed datetime {v!r} in {keyword}", keyword)
    return _norm_dt(v, high)


def make_matcher(
    keyword: str, value: str, *, vr: str | None = None, case_insensitive_names: bool = True
) -> Matcher | None:
    """The matcher for one identifier key; None means universal matching."""
    if vr is None:
        tag = tag_for_keyword(keyword)
        vr = dictionary_VR(tag) if tag is not None else "UN"
    value = value.strip(" \0") if vr not in _SINGLE_VALUED_TEXT else value.rstrip(" \0")
    if vr == "SQ" or value == "" or value == "*":
        return None
    if "\\" in value and vr not in _SINGLE_VALUED_TEXT:
        parts = [p.strip(" ") for p in value.split("\\")]
        alts = []
        for p in parts:
            if p in ("", "*"):
                return None  # one universal alternative makes the whole list universal
            m = make_matcher(keyword, p, vr=vr, case_insensitive_names=case_insensitive_names)
            if m is not None:
                alts.append(m)
        return Matcher(keyword, vr, "list", alternatives=tuple(alts))
    fold = vr == "PN" and case_insensitive_names
    if vr in ("DA", "TM", "DT") and "-" in value and not (vr == "DT" and _DT_RE.fullmatch(value)):
        lo_s, _, hi_s = value.partition("-")
        if "-" in hi_s and not (vr == "DT" and _DT_RE.fullmatch(hi_s)):
            raise QueryError(f"malformed range {value!r} in {keyword}", keyword)
        lo = _range_bound(vr, lo_s, False, keyword)
        hi = _range_bound(vr, hi_s, True, keyword)
        if lo is None and hi is None:
            raise QueryError(f"malformed range {value!r} in {keyword}", keyword)
        if lo is not None and hi is not None and lo > hi:
            raise QueryError(f"range {value!r} in {keyword} is empty (start after end)", keyword)
        return Matcher(keyword, vr, "range", values=(value,), lo=lo, hi=hi)
    if vr in ("DA", "TM", "DT"):
        _range_bound(vr, value, False, keyword)  # validates
        if vr == "DA":
            value = value.replace(".", "")
        return _single(keyword, vr, value.replace(":", "") if vr == "TM" else value, fold)
    if vr not in _NO_WILDCARD_VRS and ("*" in value or "?" in value):
        src = value.casefold() if fold else value  # the data side is casefolded too
        rx = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in src)
        pattern = re.compile(rx, re.DOTALL)
        head = src.rstrip("*")
        prefix = head if head and "*" not in head and "?" not in head else None
        return Matcher(keyword, vr, "wildcard", values=(value,), pattern=pattern, fold=fold,
                       prefix=prefix)
    return _single(keyword, vr, value, fold)


def make_fuzzy_name_matcher(keyword: str, value: str) -> Matcher | None:
    """QIDO-RS ``fuzzymatching=true`` for a PN key (PS3.18 8.3.4.2): case-insensitive, and a
    match when the whole name or any of its components (family, given, middle... in any component
    group) starts with ``value``; ``*`` and ``?`` in ``value`` keep their wildcard meaning.
    ``doe`` matches ``DOE^JOHN``, ``jo`` matches it too, ``ohn`` does not. No literal prefix is
    offered to the planner (a component match can start anywhere), so another key or a scan
    drives the query."""
    if "\\" in value:
        alts = [make_fuzzy_name_matcher(keyword, p) for p in value.split("\\")]
        if any(a is None for a in alts):
            return None  # one universal alternative makes the whole list universal
        return Matcher(keyword, "PN", "list", alternatives=tuple(a for a in alts if a))
    value = value.strip(" \0").rstrip("^ =")
    if value == "" or value.strip("*") == "":
        return None
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c)
                   for c in value.casefold())
    pattern = re.compile(r"(?:.*[\^ =])?" + body + ".*", re.DOTALL)
    return Matcher(keyword, "PN", "wildcard", values=("*" + value,), pattern=pattern, fold=True)


def _single(keyword: str, vr: str, value: str, fold: bool) -> Matcher:
    if vr == "PN":
        value = value.rstrip("^ =")
    return Matcher(keyword, vr, "single", values=(value.casefold() if fold else value,), fold=fold)


@dataclass
class Query:
    """A C-FIND/QIDO query: the level and its matching keys (keyword -> Matcher)."""

    level: str
    keys: dict[str, Matcher] = field(default_factory=dict)

    @classmethod
    def build(
        cls, level: str, values: dict[str, str], *, case_insensitive_names: bool = True
    ) -> Query:
        """From keyword -> raw string value (empty for return-only keys)."""
        if level not in _DEPTH:
            raise QueryError(f"unknown QueryRetrieveLevel {level!r}", "QueryRetrieveLevel")
        keys = {}
        for kw, raw in values.items():
            if home_level(kw, level) is None:
                continue  # not held by the index at or above this level: returned empty
            m = make_matcher(kw, raw, case_insensitive_names=case_insensitive_names)
            if m is not None:
                keys[kw] = m
        return cls(level, keys)


def home_level(keyword: str, level: str) -> str | None:
    """The level (at or above ``level``) whose rows hold ``keyword``, lowest first."""
    for lvl in reversed(QUERY_LEVELS[: _DEPTH[level] + 1]):
        if keyword in LEVEL_ATTRS[lvl]:
            return lvl
    return None


# ---------------------------------------------------------------------------------- sources
class _Source:
    """Resumable candidate keys: :meth:`run` yields keys in a transaction and resumes after the
    last key it yielded when run again in a later transaction."""

    depth: int  # level of the keys it yields

    def run(self, txn: Any, dbs: dict[bytes, Any]) -> Iterator[bytes]:  # pragma: no cover
        raise NotImplementedError

    def describe(self) -> str:  # pragma: no cover
        raise NotImplementedError


class _Points(_Source):
    def __init__(self, depth: int, keys: list[bytes], name: str) -> None:
        self.depth, self.keys, self.pos, self.name = depth, list(dict.fromkeys(keys)), 0, name

    def run(self, txn: Any, dbs: dict[bytes, Any]) -> Iterator[bytes]:
        db = dbs[_DBS[self.depth]]
        while self.pos < len(self.keys):
            k = self.keys[self.pos]
            self.pos += 1
            if txn.get(k, db=db) is not None:
                yield k

    def describe(self) -> str:
        return f"points:{self.name}"


class _Scan(_Source):
    """A key range of one database. Over a dupsort index it yields the values (primary keys of
    ``depth``); over a primary table the keys. ``stop`` / ``bound``: where the range ends
    (``hpacs._ext.findwalk``: NEVER, PREFIX, EXACT, ABOVE); the walk itself is
    ``rowkernels.scan``, which records its position here."""

    def __init__(self, depth: int, dbname: bytes, lo: bytes, stop: int = NEVER,
                 bound: bytes | None = None, *, dup: bool, name: str) -> None:
        self.depth, self.dbname, self.lo, self.stop, self.bound = depth, dbname, lo, stop, bound
        self.dup, self.name = dup, name
        self.last: tuple[bytes, bytes] | None = None
        self.done = False

    def run(self, txn: Any, dbs: dict[bytes, Any]) -> Iterator[bytes]:
        if self.done:
            return iter(())
        return scan(self, txn.cursor(db=dbs[self.dbname]))

    def describe(self) -> str:
        return f"scan:{self.name}"


class _Chain(_Source):
    def __init__(self, sources: list[_Source]) -> None:
        self.sources, self.pos, self.depth = sources, 0, sources[0].depth

    def run(self, txn: Any, dbs: dict[bytes, Any]) -> Iterator[bytes]:
        while self.pos < len(self.sources):
            yield from self.sources[self.pos].run(txn, dbs)
            self.pos += 1

    def describe(self) -> str:
        return "+".join(s.describe() for s in self.sources)


class _Dedup(_Source):
    def __init__(self, inner: _Source) -> None:
        self.inner, self.depth, self.seen = inner, inner.depth, set()

    def run(self, txn: Any, dbs: dict[bytes, Any]) -> Iterator[bytes]:
        return dedup(self.seen, self.inner.run(txn, dbs))

    def describe(self) -> str:
        return self.inner.describe()


class _Children(_Source):
    """Expands each parent key into its children (one level down) through a child dupsort db
    (``rowkernels.children``, which records here the parent it is in and the child it gave
    last)."""

    def __init__(self, parent: _Source) -> None:
        self.parent, self.depth = parent, parent.depth + 1
        self.current: bytes | None = None
        self.last: bytes | None = None  # last child dup value taken under ``current``

    def run(self, txn: Any, dbs: dict[bytes, Any]) -> Iterator[bytes]:
        # one cursor for the transaction, repositioned for each parent
        cur = txn.cursor(db=dbs[_CHILD_DBS[self.depth - 1]])
        # series_instances values: be32 order + SOP UID
        return children(self, cur, self.parent.run(txn, dbs), self.depth == 3)

    def describe(self) -> str:
        return self.parent.describe() + ">children"


# ---------------------------------------------------------------------------------- engine
class QueryEngine:
    """Runs :class:`Query` objects against an :class:`IndexDB`, page by page."""

    def __init__(self, db: IndexDB, *, page_size: int = 64, scan_budget: int = 2048) -> None:
        self.db = db
        self.page_size = page_size
        self.scan_budget = scan_budget

    def plan(self, query: Query) -> _Source:
        """The candidate source for ``query``: the cheapest index, expanded to its level."""
        depth = _DEPTH[query.level]
        k = query.keys
        source: _Source | None = None

        def uids(kw: str) -> list[bytes] | None:
            m = k.get(kw)
            vals = m.exact_values() if m is not None else None
            return [v.encode() for v in vals] if vals else None

        for kw, d in (("SOPInstanceUID", 3), ("SeriesInstanceUID", 2), ("StudyInstanceUID", 1)):
            if d <= depth and (vals := uids(kw)):
                source = _Points(d, vals, kw)
                break
        if source is None and depth >= 1 and (m := k.get("AccessionNumber")) is not None:
            vals = m.exact_values()
            if vals:
                source = _Chain([_Scan(1, b"ix_accession", key(v), EXACT, key(v), dup=True,
                                       name="ix_accession") for v in vals])
        if source is None and (m := k.get("PatientID")) is not None:
            vals = m.exact_values()
            if vals:
                source = _Chain([
                    _Scan(0, b"patients", p, PREFIX, p, dup=False, name="patients")
                    for p in (key(v + "\0") for v in vals)
                ])
        date = k.get("StudyDate") if depth >= 1 else None
        if source is None and date is not None and date.kind == "single":
            dk = key(date.values[0])
            source = _Scan(1, b"ix_study_date", dk, EXACT, dk, dup=True, name="ix_study_date")
        if source is None and (m := k.get("PatientName")) is not None:
            prefix = m.literal_prefix()
            if prefix and "=" not in prefix:
                pk = key(prefix.upper())
                source = _Dedup(_Scan(0, b"ix_patient_name", pk, PREFIX, pk, dup=True,
                                      name="ix_patient_name"))
        if source is None and date is not None and date.kind == "range":
            lo = (date.lo or "").encode()
            hi = date.hi.encode() if date.hi else None
            source = _Scan(1, b"ix_study_date", lo, ABOVE if hi else NEVER, hi, dup=True,
                           name="ix_study_date")
        if source is None and depth >= 2 and (m := k.get("Modality")) is not None:
            vals = m.exact_values()
            if vals:
                source = _Chain([_Scan(2, b"ix_series_modality", key(v), EXACT, key(v),
                                       dup=True, name="ix_series_modality") for v in vals])
        if source is None and depth == 1 and (m := k.get("ModalitiesInStudy")) is not None:
            vals = m.exact_values()
            if vals:
                scans: list[_Source] = [
                    _Scan(1, b"ix_study_modality", key(v), EXACT, key(v), dup=True,
                          name="ix_study_modality") for v in vals]
                source = _Dedup(_Chain(scans)) if len(scans) > 1 else scans[0]
        if source is None:
            source = _Scan(depth, _DBS[depth], b"", dup=False, name=_DBS[depth].decode())
        while source.depth < depth:
            source = _Children(source)
        return source

    def having(self, query: Query, source: _Source) -> tuple[bytes, tuple[bytes, ...]] | None:
        """A filter for the candidates of ``source`` (``RowWalker.collect``'s ``having``): the
        index listing the query level's keys by the value of a key of the query (the studies
        by modality for ModalitiesInStudy, the series by modality for Modality), and the index
        keys whose value the key's matcher accepts. A candidate under none of them cannot
        pass that check, so it is dropped for one probe per key instead of reading its rows
        (a month's studies of one modality: most candidates are of another). Exact, multi-
        valued index keys included: a candidate passes the check iff one of its index keys
        matches. None when no such key, when ``source`` is that index already, or when a key
        of the index is not a plain UTF-8 value (clamped)."""
        depth = _DEPTH[query.level]
        spec = _FILTERS.get(depth)
        if spec is None:
            return None
        keyword, dbname = spec
        m = query.keys.get(keyword)
        if m is None or dbname.decode() in source.describe():
            return None
        with self.db.env.begin() as txn:
            cur = txn.cursor(db=self.db.dbs[dbname])
            keys = list(cur.iternext_nodup(keys=True, values=False))
        values = []
        for k in keys:
            try:
                v = k.decode("utf-8")
            except UnicodeDecodeError:
                return None
            if key(v) != k:
                return None
            if m.match(v):
                values.append(k)
        return dbname, tuple(values)

    def row_pages(self, query: Query, page_size: int | None = None, *,
                  views: bool = True) -> Iterator[list[Rows]]:
        """Lists of matches as their rows (index = level: patient first, the match last); each
        ``next()`` runs in its own short read transaction. A page may be empty (scan budget
        spent). Keys are matched straight on the rows (:func:`resolve` of each key's
        :func:`value_sources`): no merged dict is built for a candidate, so the C-FIND encoder
        can take the rows of a match as they are. ``views``: the rows are the view structs
        (``hpacs.index.db.PatientView`` ...: attrs left as msgpack, read in place by the
        kernels, ~2 µs less per study row than decoding every attribute); else the entries."""
        size = page_size or self.page_size
        source = self.plan(query)
        depth = _DEPTH[query.level]
        decoders = _DEC_VIEW if views else _DEC
        walker = RowWalker(tuple(decoders[name].decode for name in _DBS[:depth + 1]), depth,
                           tuple(_check(m, depth) for m in query.keys.values()), patient_key,
                           resolve)
        env, dbs = self.db.env, self.db.dbs
        tables = [dbs[name] for name in _DBS[:depth + 1]]
        budget = self.scan_budget
        having = self.having(query, source)
        while True:
            out: list[Rows] = []
            with env.begin() as txn:
                # a cursor per level: its get() takes the key alone (no keyword argument)
                gets = tuple(txn.cursor(db=db).get for db in tables)
                probe = None if having is None else (
                    txn.cursor(db=dbs[having[0]]).set_key_dup, having[1])
                exhausted = walker.collect(source.run(txn, dbs), gets, out, size, budget,
                                           probe)
            if out or not exhausted:
                yield out
            if exhausted:
                return

    def pages(self, query: Query, page_size: int | None = None) -> Iterator[list[dict[str, Any]]]:
        """As :meth:`row_pages`, each match as the merged attributes of the match and its
        ancestors (:func:`merge_rows`)."""
        pages = self.row_pages(query, page_size, views=False)
        try:
            for page in pages:
                yield [merge_rows(rows) for rows in page]
        finally:
            pages.close()

    def find(self, query: Query) -> list[dict[str, Any]]:
        """Every match at once (tests, small queries)."""
        return [m for page in self.pages(query) for m in page]


#: Per query level: the key whose index lists that level's keys by value (QueryEngine.having).
_FILTERS: Final = {1: ("ModalitiesInStudy", b"ix_study_modality"),
                   2: ("Modality", b"ix_series_modality")}

#: A match's rows, indexed by level (0 = PatientEntry ... 3 = InstanceEntry).
Rows = list

#: Derived attributes per level (DERIVED): the row field they come from and how.
_DERIVED_FIELDS: Final[tuple[dict[str, tuple[int, str]], ...]] = (
    {"NumberOfPatientRelatedStudies": (FIELD, "n_studies"),
     "NumberOfPatientRelatedSeries": (FIELD, "n_series"),
     "NumberOfPatientRelatedInstances": (FIELD, "n_instances")},
    {"NumberOfStudyRelatedSeries": (FIELD, "n_series"),
     "NumberOfStudyRelatedInstances": (FIELD, "n_instances"),
     "ModalitiesInStudy": (KEYS, "modalities"), "SOPClassesInStudy": (KEYS, "sop_classes")},
    {"NumberOfSeriesRelatedInstances": (FIELD, "n_instances")},
    {},
)  # fmt: skip
_INSTANCE_FIELDS: Final = {"SOPClassUID": "sop_class_uid", "SOPInstanceUID": "sop_instance_uid"}


def value_sources(depth: int, keyword: str) -> tuple[tuple[int, int, str], ...]:
    """Where ``keyword``'s value is in the rows of a match at ``depth``: ``(level, how, name)``
    tried in order, the first present wins (:func:`resolve`); none present: no value.

    The same answer as :func:`merge_rows` (a test holds them equal): the identifying fields of
    the rows win over the attributes, then the lowest level holding the keyword (derived
    attributes included) wins, up to the patient."""
    out: list[tuple[int, int, str]] = []
    if keyword == "PatientID":
        return ((0, FIELD, "patient_id"),)
    if keyword == "IssuerOfPatientID":
        out.append((0, TRUTHY, "issuer"))
    elif keyword == "SeriesInstanceUID" and depth >= 2:
        return ((2, FIELD, "series_uid"),)
    elif keyword == "StudyInstanceUID" and depth >= 1:
        return ((1, FIELD, "study_uid"),)
    elif keyword == "SpecificCharacterSet" and depth == 3:
        return ()  # dropped from the merge: a match's character set is the answer's own
    for level in range(depth, -1, -1):
        if level == 3 and keyword in _INSTANCE_FIELDS:
            out.append((3, FIELD, _INSTANCE_FIELDS[keyword]))
            break
        derived = _DERIVED_FIELDS[level].get(keyword)
        if derived is not None:
            out.append((level, *derived))
            break
        out.append((level, ATTR, keyword))
    return tuple(out)


def _check(m: Matcher, depth: int) -> tuple:
    """A key as ``RowWalker`` checks it: ``(match, sources, prefix)`` (hpacs._ext.findwalk);
    ``prefix`` lets the compiled walk decide a ``DOE*`` key on an ASCII value by itself."""
    prefix = (m.prefix, m.fold, m.vr == "PN") if m.kind == "wildcard" and m.prefix else None
    return m.match, value_sources(depth, m.keyword), prefix


def merge_rows(rows: Rows) -> dict[str, Any]:
    """The attributes of a match's rows merged (lower levels win), derived ones included."""
    depth = len(rows) - 1
    out: dict[str, Any] = {}
    for i, row in enumerate(rows):
        if i == 3:
            out.update(row.attrs)
            out["SOPClassUID"] = row.sop_class_uid
            out["SOPInstanceUID"] = row.sop_instance_uid
            out.pop("SpecificCharacterSet", None)
        else:
            out.update(row.query_attrs())
    if depth >= 1:
        out["StudyInstanceUID"] = rows[1].study_uid
    if depth >= 2:
        out["SeriesInstanceUID"] = rows[2].series_uid
    p = rows[0]
    out["PatientID"] = p.patient_id
    if p.issuer:
        out["IssuerOfPatientID"] = p.issuer
    return out
