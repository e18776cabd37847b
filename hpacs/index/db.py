"""The LMDB index: one environment, named sub-databases, msgpack values.

Layout (``max_dbs`` = 16; all keys are bytes; strings UTF-8; integers big-endian)::

    meta              str key -> msgpack value: "schema" (int), "checkpoint" (float, files
                      mode), "clean" (bool: set by a clean writer stop, cleared by start)
    patients          PatientID "\\0" IssuerOfPatientID -> PatientEntry
    studies           StudyInstanceUID  -> StudyEntry   (parent: patient key)
    series            SeriesInstanceUID -> SeriesEntry  (parent: study UID)
    instances         SOPInstanceUID    -> InstanceEntry (parent: series UID, location)
    patient_studies   dupsort: patient key -> StudyInstanceUID
    study_series      dupsort: StudyInstanceUID -> SeriesInstanceUID
    series_instances  dupsort: SeriesInstanceUID -> be32(InstanceNumber + 2**31) + SOP UID
                      (so a series lists in InstanceNumber order; no number sorts last)
    ix_patient_name   dupsort: uppercased PN component group -> patient key (one entry per
                      non-empty alphabetic/ideographic/phonetic group: prefix/wildcard queries)
    ix_study_date     dupsort: StudyDate (YYYYMMDD) -> StudyInstanceUID (range = set_range)
    ix_accession      dupsort: AccessionNumber -> StudyInstanceUID
    ix_series_modality dupsort: Modality -> SeriesInstanceUID
    ix_study_modality dupsort: Modality -> StudyInstanceUID (ModalitiesInStudy)
    ix_hot_activity   dupsort: be64 float of max(last_stored, last_access) -> StudyInstanceUID,
                      for every study with a hot instance (oldest first: the lifecycle rules
                      read what can match, not every instance). A superset: a study gone cold
                      may linger until the rule pass prunes it (``unlist_hot``); built once
                      from the rows when an older index lacks it (meta "hot_activity")

PatientID and the three UIDs need no secondary index: they are (prefixes of) primary keys, so
a PatientID lookup is a ``set_range`` over ``patients`` and UID lists are point lookups.
Keys longer than LMDB's 511-byte limit (only possible with hostile data) are clamped to a
prefix plus a BLAKE2 digest.

Parents are stored only one level up (an instance knows its series, a series its study, a study
its patient), so moving a series or a study rewrites one row, never its children. Derived
counts live on the rows and are maintained incrementally by :meth:`IndexDB.apply` and
:meth:`IndexDB.delete_instance`; a property test recounts them from scratch.

Hierarchy policy for conflicting input (a re-sent or new instance whose parents differ from the
stored ones): the last write wins at each level. An instance whose series differs moves to the
new series; a series whose study differs moves (with all its instances) to the new study; a
study whose patient differs moves to the new patient. Parents left empty are deleted.
Level attributes are last-write-wins per attribute: an attribute the new instance carries
replaces the stored value, one it lacks keeps the stored value (an SR or presentation state
added to a study often lacks StudyDescription or the patient's birth date; it must not erase
them from the study list).
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterator
from typing import Any, Final

import lmdb
import msgspec

from hpacs._ext import load
from hpacs.index.schema import InstanceRecord, Value

_kit, APPLY_COMPILED = load("recordkit", "index apply")

SCHEMA_VERSION: Final = 1
DURABILITY_MODES: Final = ("files", "sync")
_MAX_KEY: Final = 480
_NO_NUMBER: Final = 0xFFFFFFFF


class IndexSchemaError(RuntimeError):
    """The index on disk was written by another schema version: rebuild it (``hpacs reindex``)."""


class PatientEntry(msgspec.Struct, array_like=True, gc=False):
    patient_id: str
    issuer: str
    attrs: dict[str, Value]
    n_studies: int = 0
    n_series: int = 0
    n_instances: int = 0

    def query_attrs(self) -> dict[str, Any]:
        """Level attributes plus the derived ones a C-FIND/QIDO can ask for."""
        return {
            **self.attrs,
            "NumberOfPatientRelatedStudies": self.n_studies,
            "NumberOfPatientRelatedSeries": self.n_series,
            "NumberOfPatientRelatedInstances": self.n_instances,
        }


class StudyEntry(msgspec.Struct, array_like=True, gc=False):
    study_uid: str
    patient_id: str
    issuer: str
    attrs: dict[str, Value]
    n_series: int = 0
    n_instances: int = 0
    modalities: dict[str, int] = msgspec.field(default_factory=dict)  # modality -> n series
    sop_classes: dict[str, int] = msgspec.field(default_factory=dict)  # class -> n instances
    #: Lifecycle clocks (epoch seconds): newest stored_at of its instances, and the last read
    #: (flushed in batches by the tier reader; 0 when never read).
    last_stored: float = 0.0
    last_access: float = 0.0

    def query_attrs(self) -> dict[str, Any]:
        return {
            **self.attrs,
            "NumberOfStudyRelatedSeries": self.n_series,
            "NumberOfStudyRelatedInstances": self.n_instances,
            "ModalitiesInStudy": "\\".join(sorted(self.modalities)),
            "SOPClassesInStudy": "\\".join(sorted(self.sop_classes)),
        }


class SeriesEntry(msgspec.Struct, array_like=True, gc=False):
    series_uid: str
    study_uid: str
    attrs: dict[str, Value]
    n_instances: int = 0
    sop_classes: dict[str, int] = msgspec.field(default_factory=dict)

    def query_attrs(self) -> dict[str, Any]:
        return {**self.attrs, "NumberOfSeriesRelatedInstances": self.n_instances}


class InstanceEntry(msgspec.Struct, array_like=True, gc=False):
    sop_instance_uid: str
    sop_class_uid: str
    series_uid: str
    transfer_syntax_uid: str
    path: str
    size: int
    stored_at: float
    attrs: dict[str, Value]
    #: The cold store's reference (a plain array) when the instance lives in a cold pack;
    #: ``path`` is then "". None for a hot file.
    cold: list[Any] | None = None


class PatientView(msgspec.Struct, array_like=True, gc=False):
    """A :class:`PatientEntry` as the C-FIND walk reads it: ``attrs`` left as msgpack
    (``msgspec.Raw``), so a match costs the values its answer needs, not a dict of every
    attribute (``hpacs._ext.findenc`` looks them up in the raw map). Same fields, same order."""

    patient_id: str
    issuer: str
    attrs: msgspec.Raw
    n_studies: int = 0
    n_series: int = 0
    n_instances: int = 0


class StudyView(msgspec.Struct, array_like=True, gc=False):
    """A :class:`StudyEntry` with ``attrs`` left as msgpack (see :class:`PatientView`)."""

    study_uid: str
    patient_id: str
    issuer: str
    attrs: msgspec.Raw
    n_series: int = 0
    n_instances: int = 0
    modalities: dict[str, int] = msgspec.field(default_factory=dict)
    sop_classes: dict[str, int] = msgspec.field(default_factory=dict)
    # the lifecycle clocks that follow are not read by a query: left undecoded (msgspec skips
    # an array's trailing elements the struct does not name)


class SeriesView(msgspec.Struct, array_like=True, gc=False):
    """A :class:`SeriesEntry` with ``attrs`` left as msgpack (see :class:`PatientView`)."""

    series_uid: str
    study_uid: str
    attrs: msgspec.Raw
    n_instances: int = 0
    sop_classes: dict[str, int] = msgspec.field(default_factory=dict)


class InstanceView(msgspec.Struct, array_like=True, gc=False):
    """An :class:`InstanceEntry` with ``attrs`` left as msgpack (see :class:`PatientView`)."""

    sop_instance_uid: str
    sop_class_uid: str
    series_uid: str
    transfer_syntax_uid: str
    path: str
    size: int
    stored_at: float
    attrs: msgspec.Raw
    cold: list[Any] | None = None


_ENC = msgspec.msgpack.Encoder()
_DEC = {
    b"patients": msgspec.msgpack.Decoder(PatientEntry),
    b"studies": msgspec.msgpack.Decoder(StudyEntry),
    b"series": msgspec.msgpack.Decoder(SeriesEntry),
    b"instances": msgspec.msgpack.Decoder(InstanceEntry),
}
_DEC_ANY = msgspec.msgpack.Decoder()
#: The rows of the C-FIND walk: attrs left raw (:class:`PatientView` ...).
_DEC_VIEW = {
    b"patients": msgspec.msgpack.Decoder(PatientView),
    b"studies": msgspec.msgpack.Decoder(StudyView),
    b"series": msgspec.msgpack.Decoder(SeriesView),
    b"instances": msgspec.msgpack.Decoder(InstanceView),
}

_PLAIN_DBS: Final = (b"meta", b"patients", b"studies", b"series", b"instances")
_DUP_DBS: Final = (
    b"patient_studies", b"study_series", b"series_instances", b"ix_patient_name",
    b"ix_study_date", b"ix_accession", b"ix_series_modality", b"ix_study_modality",
    b"ix_hot_activity",
)  # fmt: skip

LEVEL_DBS: Final = {"patient": b"patients", "study": b"studies", "series": b"series",
                    "instance": b"instances"}  # fmt: skip


def key(s: str) -> bytes:
    """A string as an LMDB key, clamped under the key-size limit."""
    b = s.encode("utf-8", "surrogatepass")
    if len(b) > _MAX_KEY:
        b = b[:440] + b"\xff" + hashlib.blake2b(b, digest_size=16).digest()
    return b


def activity_key(st: StudyEntry) -> bytes:
    """A study's ``ix_hot_activity`` key: its last activity, sorting as bytes (floats >= 0)."""
    return struct.pack(">d", max(st.last_stored, st.last_access, 0.0))


def patient_key(patient_id: str, issuer: str = "") -> bytes:
    return key(patient_id + "\0" + issuer)


def name_keys(name: Value | None) -> set[bytes]:
    """Index keys of a PN value: each non-empty component group, uppercased."""
    if not isinstance(name, str) or not name:
        return set()
    return {key(g.upper()) for v in name.split("\\") for g in v.split("=") if g.strip("^ ")}


def order_key(instance_number: Value | None) -> bytes:
    """The 4-byte big-endian sort prefix of an instance inside its series."""
    if isinstance(instance_number, str):
        try:
            n = int(instance_number.split("\\", 1)[0])
        except ValueError:
            return _NO_NUMBER.to_bytes(4, "big")
        return min(max(n + 2**31, 0), _NO_NUMBER - 1).to_bytes(4, "big")
    return _NO_NUMBER.to_bytes(4, "big")


def _str_attr(attrs: dict[str, Value], name: str) -> str:
    v = attrs.get(name)
    return v if isinstance(v, str) else ""


_MISSING: Final = object()


class WriteBatch:
    """One write transaction with a row cache: rows touched many times in a batch (the series
    and study of a burst of instances) are decoded and encoded once, at :meth:`flush`."""

    __slots__ = ("_cache", "_dirty", "db", "txn")

    def __init__(self, db: IndexDB, txn: lmdb.Transaction) -> None:
        self.db = db
        self.txn = txn
        self._cache: dict[bytes, dict[bytes, Any]] = {
            b"patients": {}, b"studies": {}, b"series": {}, b"instances": {}}
        self._dirty: set[tuple[bytes, bytes]] = set()

    def __enter__(self) -> WriteBatch:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        """Flush and commit on success; abort on an exception (nothing of it is visible).
        A class, not a generator context manager: one per transaction (per instance on one
        association), ~3 µs less."""
        if exc_type is not None:
            self.txn.abort()
            return
        try:
            self.flush()
        except BaseException:
            self.txn.abort()
            raise
        self.txn.commit()

    def get(self, dbname: bytes, k: bytes) -> Any:
        cache = self._cache[dbname]
        row = cache.get(k, _MISSING)
        if row is _MISSING:
            raw = self.txn.get(k, db=self.db.dbs[dbname])
            row = None if raw is None else _DEC[dbname].decode(raw)
            cache[k] = row
        return row

    def put(self, dbname: bytes, k: bytes, row: Any) -> None:
        self._cache[dbname][k] = row
        self._dirty.add((dbname, k))

    def delete(self, dbname: bytes, k: bytes) -> None:
        self.put(dbname, k, None)

    def dup_put(self, dbname: bytes, k: bytes, v: bytes) -> None:
        self.txn.put(k, v, db=self.db.dbs[dbname], dupdata=True)

    def dup_delete(self, dbname: bytes, k: bytes, v: bytes) -> None:
        self.txn.delete(k, v, db=self.db.dbs[dbname])

    def flush(self) -> None:
        """Encode and put every dirty row (None: delete it); compiled (``hpacs._ext``)."""
        self.db._applier.flush(self)


def _inc(counts: dict[str, int], k: str, n: int = 1) -> bool:
    """Add n to counts[k]; True when the key appeared or disappeared."""
    old = counts.get(k, 0)
    new = old + n
    if new <= 0:
        counts.pop(k, None)
    else:
        counts[k] = new
    return (old <= 0) != (new <= 0)


class IndexDB:
    """The LMDB environment and every index read; writes go through :meth:`write`/:meth:`apply`.

    Each read method opens and closes its own read transaction: never hold one across an await.
    ``durability`` fixes the env flags: "sync" fsyncs data then meta on every commit (LMDB's
    ordering keeps the file consistent across power loss); "files" commits without fsync (safe
    against a process kill: pages sit in the page cache) and relies on the writer's periodic
    ``env.sync`` plus re-indexing files newer than the checkpoint. After a power loss in "files"
    mode the env may be corrupt: rebuild it from the files.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        map_size: int = 64 << 30,
        *,
        durability: str = "files",
        writemap: bool = True,
        readonly: bool = False,
    ) -> None:
        if durability not in DURABILITY_MODES:
            raise ValueError(f"durability must be one of {DURABILITY_MODES}")
        self.path = os.fspath(path)
        self.durability = durability
        sync = durability == "sync"
        self.env = lmdb.open(
            self.path,
            map_size=map_size,
            subdir=True,
            max_dbs=16,
            writemap=writemap and not readonly,
            sync=sync,
            metasync=sync,
            readahead=False,  # random access over an index that may outgrow RAM
            max_readers=512,
            readonly=readonly,
        )
        self.dbs: dict[bytes, Any] = {}
        if readonly:
            # DBI handles opened inside a read-only transaction die with it: let py-lmdb
            # open (and commit) them on its own.
            for name in _PLAIN_DBS:
                self.dbs[name] = self.env.open_db(name, create=False)
            for name in _DUP_DBS:
                try:
                    self.dbs[name] = self.env.open_db(name, dupsort=True, create=False)
                except lmdb.NotFoundError:  # an index from before it (only the rules read it)
                    if name != b"ix_hot_activity":
                        raise
        with self.env.begin(write=not readonly) as txn:
            for name in _PLAIN_DBS if not readonly else ():
                self.dbs[name] = self.env.open_db(name, txn=txn)
            for name in _DUP_DBS if not readonly else ():
                self.dbs[name] = self.env.open_db(name, txn=txn, dupsort=True)
            raw = txn.get(b"schema", db=self.dbs[b"meta"])
            if raw is None and not readonly:
                txn.put(b"schema", _ENC.encode(SCHEMA_VERSION), db=self.dbs[b"meta"])
            elif raw is not None and _DEC_ANY.decode(raw) != SCHEMA_VERSION:
                raise IndexSchemaError(f"index schema {_DEC_ANY.decode(raw)} != {SCHEMA_VERSION}")
            if not readonly and txn.get(b"hot_activity", db=self.dbs[b"meta"]) is None:
                self._build_hot_activity(txn)
        self._applier = _kit.Applier(self.dbs, _DEC, InstanceEntry, order_key, patient_key,
                                     _ENC.encode)

    def _build_hot_activity(self, txn: lmdb.Transaction) -> None:
        """Fill ``ix_hot_activity`` from the rows (once, for an index that predates it)."""
        hot_series: set[bytes] = set()
        for _, raw in txn.cursor(db=self.dbs[b"instances"]):
            e: InstanceEntry = _DEC[b"instances"].decode(raw)
            if e.cold is None:
                hot_series.add(e.series_uid.encode())
        studies: set[bytes] = set()
        for sk in hot_series:
            raw = txn.get(sk, db=self.dbs[b"series"])
            if raw is not None:
                studies.add(_DEC[b"series"].decode(raw).study_uid.encode())
        for study_k in studies:
            raw = txn.get(study_k, db=self.dbs[b"studies"])
            if raw is not None:
                st = _DEC[b"studies"].decode(raw)
                txn.put(activity_key(st), study_k, db=self.dbs[b"ix_hot_activity"],
                        dupdata=True)
        txn.put(b"hot_activity", _ENC.encode(True), db=self.dbs[b"meta"])

    # ------------------------------------------------------------------ lifecycle / meta
    def close(self) -> None:
        self.env.close()

    def sync(self) -> None:
        """Force every committed transaction to disk."""
        self.env.sync(True)

    def meta_get(self, name: str, default: Any = None, txn: lmdb.Transaction | None = None
                 ) -> Any:
        if txn is not None:
            raw = txn.get(name.encode(), db=self.dbs[b"meta"])
        else:
            with self.env.begin() as t:
                raw = t.get(name.encode(), db=self.dbs[b"meta"])
        return default if raw is None else _DEC_ANY.decode(raw)

    def meta_set(self, name: str, value: Any, txn: lmdb.Transaction | None = None) -> None:
        if txn is not None:
            txn.put(name.encode(), _ENC.encode(value), db=self.dbs[b"meta"])
            return
        with self.env.begin(write=True) as t:
            t.put(name.encode(), _ENC.encode(value), db=self.dbs[b"meta"])

    # ------------------------------------------------------------------ writes
    def write(self) -> WriteBatch:
        """``with db.write() as w``: a write transaction for :meth:`apply`; commits (after
        flushing rows) on success, aborts on an exception."""
        return WriteBatch(self, self.env.begin(write=True))

    def apply(self, w: WriteBatch, rec: InstanceRecord) -> InstanceRecord | None:
        """Upsert ``rec`` by SOP Instance UID; returns what was stored before (None if new).

        Idempotent: re-applying an identical record writes nothing. The steady state of an
        ingest (a new instance of a series already indexed, nothing new about its parents) is
        applied by the compiled ``Applier`` (``hpacs._ext._recordkit``), which writes exactly
        what :meth:`apply_general` would; everything else goes to :meth:`apply_general`.
        """
        if self._applier.apply(w, rec):
            return None
        return self.apply_general(w, rec)

    def apply_general(self, w: WriteBatch, rec: InstanceRecord) -> InstanceRecord | None:
        """:meth:`apply` for every case: new rows, moves, re-sent instances."""
        sop = rec.sop_instance_uid.encode()
        old: InstanceEntry | None = w.get(b"instances", sop)
        previous = self._assemble(w, old) if old is not None else None
        pkey = patient_key(rec.patient_id, rec.issuer_of_patient_id)
        study_k = rec.study_uid.encode()
        series_k = rec.series_uid.encode()

        linked = old is not None
        if old is not None and old.series_uid != rec.series_uid:
            self._unlink_instance(w, old)
            linked = False

        # patient
        p: PatientEntry | None = w.get(b"patients", pkey)
        if p is None:
            p = PatientEntry(rec.patient_id, rec.issuer_of_patient_id, {})
            w.put(b"patients", pkey, p)
        self._set_patient_attrs(w, pkey, p, rec.patient)

        # study
        st: StudyEntry | None = w.get(b"studies", study_k)
        if st is None:
            st = StudyEntry(rec.study_uid, rec.patient_id, rec.issuer_of_patient_id, {})
            w.put(b"studies", study_k, st)
            p.n_studies += 1
            w.put(b"patients", pkey, p)
            w.dup_put(b"patient_studies", pkey, study_k)
        elif (st.patient_id, st.issuer) != (rec.patient_id, rec.issuer_of_patient_id):
            self._move_study(w, st, p, pkey)
        self._set_study_attrs(w, study_k, st, rec.study)
        listed = False
        if rec.stored_at > st.last_stored:
            listed = w.txn.delete(activity_key(st), study_k, db=self.dbs[b"ix_hot_activity"])
            st.last_stored = rec.stored_at
            w.put(b"studies", study_k, st)
        if rec.cold is None or listed:  # listed: it may hold hot instances, keep it listed
            self._list_hot(w, st)

        # series
        se: SeriesEntry | None = w.get(b"series", series_k)
        if se is None:
            se = SeriesEntry(rec.series_uid, rec.study_uid, {})
            w.put(b"series", series_k, se)
            st.n_series += 1
            p.n_series += 1
            w.put(b"studies", study_k, st)
            w.put(b"patients", pkey, p)
            w.dup_put(b"study_series", study_k, series_k)
        elif se.study_uid != rec.study_uid:
            self._move_series(w, se, st, p)
        self._set_series_attrs(w, series_k, se, st, rec.series)

        # instance
        entry = InstanceEntry(
            rec.sop_instance_uid, rec.sop_class_uid, rec.series_uid, rec.transfer_syntax_uid,
            rec.path, rec.size, rec.stored_at, rec.instance, rec.cold,
        )  # fmt: skip
        new_order = order_key(rec.instance.get("InstanceNumber")) + sop
        if linked:
            assert old is not None
            if entry == old:
                return previous
            if old.sop_class_uid != rec.sop_class_uid:
                _inc(se.sop_classes, old.sop_class_uid, -1)
                _inc(se.sop_classes, rec.sop_class_uid)
                _inc(st.sop_classes, old.sop_class_uid, -1)
                _inc(st.sop_classes, rec.sop_class_uid)
                w.put(b"series", series_k, se)
                w.put(b"studies", study_k, st)
            old_order = order_key(old.attrs.get("InstanceNumber")) + sop
            if old_order != new_order:
                w.dup_delete(b"series_instances", series_k, old_order)
                w.dup_put(b"series_instances", series_k, new_order)
        else:
            se.n_instances += 1
            _inc(se.sop_classes, rec.sop_class_uid)
            st.n_instances += 1
            _inc(st.sop_classes, rec.sop_class_uid)
            p.n_instances += 1
            w.put(b"series", series_k, se)
            w.put(b"studies", study_k, st)
            w.put(b"patients", pkey, p)
            w.dup_put(b"series_instances", series_k, new_order)
        w.put(b"instances", sop, entry)
        return previous

    def delete_instance(self, sop_uid: str, w: WriteBatch | None = None) -> InstanceRecord | None:
        """Remove one instance (and parents left empty); returns what was removed."""
        if w is None:
            with self.write() as batch:
                return self.delete_instance(sop_uid, batch)
        sop = sop_uid.encode()
        old: InstanceEntry | None = w.get(b"instances", sop)
        if old is None:
            return None
        previous = self._assemble(w, old)
        self._unlink_instance(w, old)
        return previous

    def set_location(self, w: WriteBatch, sop_uid: str, path: str, cold: list[Any] | None,
                     *, expect: InstanceEntry) -> bool:
        """Point an instance at a hot path or a cold reference (migration, promotion).

        Only if the row is still ``expect`` (a re-sent instance replaced meanwhile keeps its new
        location); returns whether it changed. Counts and parents are unaffected."""
        sop = sop_uid.encode()
        row: InstanceEntry | None = w.get(b"instances", sop)
        if row is None or row != expect:
            return False
        w.put(b"instances", sop, msgspec.structs.replace(row, path=path, cold=cold))
        if cold is None:  # hot again: the rules must see the study (going cold: unlist_hot)
            se: SeriesEntry | None = w.get(b"series", row.series_uid.encode())
            st: StudyEntry | None = w.get(b"studies", se.study_uid.encode()) if se else None
            if st is not None:
                self._list_hot(w, st)
        return True

    def _list_hot(self, w: WriteBatch, st: StudyEntry) -> None:
        """Add a study to ``ix_hot_activity`` (no write when it is there: re-applying an
        identical record must not dirty the transaction)."""
        k, v = activity_key(st), st.study_uid.encode()
        with w.txn.cursor(db=self.dbs[b"ix_hot_activity"]) as cur:
            if not cur.set_key_dup(k, v):
                w.dup_put(b"ix_hot_activity", k, v)

    def unlist_hot(self, w: WriteBatch, study_uid: str, activity: bytes | None = None) -> bool:
        """Drop a study's ``ix_hot_activity`` entry (under ``activity``, default its current
        one) unless, in this transaction, it is the current entry of a study that has a hot
        instance (an ingest may have raced the caller's look). Returns whether it went."""
        sk = study_uid.encode()
        st: StudyEntry | None = w.get(b"studies", sk)
        if st is not None:
            current = activity_key(st)
            if activity is None:
                activity = current
            if activity == current and self._has_hot(w, sk):
                return False
        if activity is None:
            return False
        return bool(w.txn.delete(activity, sk, db=self.dbs[b"ix_hot_activity"]))

    def _has_hot(self, w: WriteBatch, study_k: bytes) -> bool:
        with w.txn.cursor(db=self.dbs[b"study_series"]) as series:
            ok = series.set_key(study_k)
            while ok:
                sk = series.value()
                with w.txn.cursor(db=self.dbs[b"series_instances"]) as inst:
                    found = inst.set_key(sk)
                    while found:
                        e: InstanceEntry | None = w.get(b"instances", inst.value()[4:])
                        if e is not None and e.cold is None:
                            return True
                        found = inst.next_dup()
                ok = series.next_dup()
        return False

    def hot_studies(self, until: float | None = None) -> Iterator[tuple[bytes, str]]:
        """(activity key, study UID) of ``ix_hot_activity``, oldest first, up to ``until``
        (epoch seconds; None: all); paged, no read transaction held between pages."""
        dbi = self.dbs.get(b"ix_hot_activity")
        if dbi is None:
            return
        limit = None if until is None else struct.pack(">d", max(until, 0.0))
        after: tuple[bytes, bytes] | None = None
        while True:
            page: list[tuple[bytes, bytes]] = []
            with self.env.begin() as txn, txn.cursor(db=dbi) as cur:
                if after is None:
                    ok = cur.first()
                else:
                    ok = cur.set_range_dup(*after)
                    if ok and (cur.key(), cur.value()) == after:
                        ok = cur.next()
                    elif not ok:
                        ok = cur.set_range(after[0])
                        if ok and cur.key() == after[0]:
                            ok = cur.next_nodup()
                while ok and len(page) < 512:
                    k = cur.key()
                    if limit is not None and k > limit:
                        break
                    page.append((k, cur.value()))
                    ok = cur.next()
            for k, v in page:
                yield k, v.decode()
            if len(page) < 512:
                return
            after = page[-1]

    def set_last_access(self, w: WriteBatch, times: dict[str, float]) -> None:
        """Record studies' last read times (never moves a clock backwards)."""
        for study_uid, t in times.items():
            sk = study_uid.encode()
            st: StudyEntry | None = w.get(b"studies", sk)
            if st is not None and t > st.last_access:
                listed = w.txn.delete(activity_key(st), sk, db=self.dbs[b"ix_hot_activity"])
                st.last_access = t
                w.put(b"studies", sk, st)
                if listed:
                    w.dup_put(b"ix_hot_activity", activity_key(st), sk)

    # ------------------------------------------------------------------ write helpers
    def _assemble(self, w: WriteBatch, e: InstanceEntry) -> InstanceRecord:
        se: SeriesEntry = w.get(b"series", e.series_uid.encode())
        st: StudyEntry = w.get(b"studies", se.study_uid.encode())
        p: PatientEntry = w.get(b"patients", patient_key(st.patient_id, st.issuer))
        return _record(e, se, st, p)

    def _set_patient_attrs(
        self, w: WriteBatch, pkey: bytes, p: PatientEntry, attrs: dict[str, Value]
    ) -> None:
        attrs = {**p.attrs, **attrs}
        if p.attrs == attrs:
            return
        old_names = name_keys(p.attrs.get("PatientName"))
        new_names = name_keys(attrs.get("PatientName"))
        for k in old_names - new_names:
            w.dup_delete(b"ix_patient_name", k, pkey)
        for k in new_names - old_names:
            w.dup_put(b"ix_patient_name", k, pkey)
        p.attrs = attrs
        w.put(b"patients", pkey, p)

    def _set_study_attrs(
        self, w: WriteBatch, sk: bytes, st: StudyEntry, attrs: dict[str, Value]
    ) -> None:
        attrs = {**st.attrs, **attrs}
        if st.attrs == attrs:
            return
        for name, db in (("StudyDate", b"ix_study_date"), ("AccessionNumber", b"ix_accession")):
            old, new = _str_attr(st.attrs, name), _str_attr(attrs, name)
            if old != new:
                if old:
                    w.dup_delete(db, key(old), sk)
                if new:
                    w.dup_put(db, key(new), sk)
        st.attrs = attrs
        w.put(b"studies", sk, st)

    def _set_series_attrs(
        self, w: WriteBatch, sk: bytes, se: SeriesEntry, st: StudyEntry, attrs: dict[str, Value]
    ) -> None:
        attrs = {**se.attrs, **attrs}
        if se.attrs == attrs:
            return
        old, new = _str_attr(se.attrs, "Modality"), _str_attr(attrs, "Modality")
        if old != new:
            if old:
                w.dup_delete(b"ix_series_modality", key(old), sk)
                self._study_modality(w, st, old, -1)
            if new:
                w.dup_put(b"ix_series_modality", key(new), sk)
                self._study_modality(w, st, new, 1)
        se.attrs = attrs
        w.put(b"series", sk, se)

    def _study_modality(self, w: WriteBatch, st: StudyEntry, modality: str, n: int) -> None:
        sk = st.study_uid.encode()
        if _inc(st.modalities, modality, n):
            if n > 0:
                w.dup_put(b"ix_study_modality", key(modality), sk)
            else:
                w.dup_delete(b"ix_study_modality", key(modality), sk)
        w.put(b"studies", sk, st)

    def _move_study(self, w: WriteBatch, st: StudyEntry, p: PatientEntry, pkey: bytes) -> None:
        sk = st.study_uid.encode()
        old_pkey = patient_key(st.patient_id, st.issuer)
        po: PatientEntry = w.get(b"patients", old_pkey)
        po.n_studies -= 1
        po.n_series -= st.n_series
        po.n_instances -= st.n_instances
        w.dup_delete(b"patient_studies", old_pkey, sk)
        self._save_or_drop_patient(w, old_pkey, po)
        p.n_studies += 1
        p.n_series += st.n_series
        p.n_instances += st.n_instances
        w.put(b"patients", pkey, p)
        w.dup_put(b"patient_studies", pkey, sk)
        st.patient_id, st.issuer = p.patient_id, p.issuer
        w.put(b"studies", sk, st)

    def _move_series(self, w: WriteBatch, se: SeriesEntry, st: StudyEntry, p: PatientEntry) -> None:
        sk = se.series_uid.encode()
        old_sk = se.study_uid.encode()
        so: StudyEntry = w.get(b"studies", old_sk)
        old_pkey = patient_key(so.patient_id, so.issuer)
        po: PatientEntry = w.get(b"patients", old_pkey)
        self._detach_series(w, se, so, po, old_pkey)
        # its instances may be hot: list the new study (a superset is fine, the rules prune)
        self._list_hot(w, st)
        modality = _str_attr(se.attrs, "Modality")
        st.n_series += 1
        st.n_instances += se.n_instances
        for c, n in se.sop_classes.items():
            _inc(st.sop_classes, c, n)
        if modality:
            self._study_modality(w, st, modality, 1)
        p.n_series += 1
        p.n_instances += se.n_instances
        w.dup_put(b"study_series", st.study_uid.encode(), sk)
        w.put(b"studies", st.study_uid.encode(), st)
        w.put(b"patients", patient_key(p.patient_id, p.issuer), p)
        se.study_uid = st.study_uid
        w.put(b"series", sk, se)

    def _detach_series(
        self, w: WriteBatch, se: SeriesEntry, st: StudyEntry, p: PatientEntry, pkey: bytes
    ) -> None:
        """Take a series (with its current counts) out of its study and patient."""
        sk = se.series_uid.encode()
        study_k = st.study_uid.encode()
        st.n_series -= 1
        st.n_instances -= se.n_instances
        for c, n in se.sop_classes.items():
            _inc(st.sop_classes, c, -n)
        modality = _str_attr(se.attrs, "Modality")
        if modality:
            self._study_modality(w, st, modality, -1)
        p.n_series -= 1
        p.n_instances -= se.n_instances
        w.dup_delete(b"study_series", study_k, sk)
        w.put(b"patients", pkey, p)
        if st.n_series <= 0:
            self._drop_study(w, st, p, pkey)
        else:
            w.put(b"studies", study_k, st)

    def _drop_study(self, w: WriteBatch, st: StudyEntry, p: PatientEntry, pkey: bytes) -> None:
        sk = st.study_uid.encode()
        for name, db in (("StudyDate", b"ix_study_date"), ("AccessionNumber", b"ix_accession")):
            v = _str_attr(st.attrs, name)
            if v:
                w.dup_delete(db, key(v), sk)
        for m in st.modalities:  # empty when counts are right; defensive
            w.dup_delete(b"ix_study_modality", key(m), sk)
        w.dup_delete(b"ix_hot_activity", activity_key(st), sk)
        w.delete(b"studies", sk)
        p.n_studies -= 1
        w.dup_delete(b"patient_studies", pkey, sk)
        self._save_or_drop_patient(w, pkey, p)

    def _save_or_drop_patient(self, w: WriteBatch, pkey: bytes, p: PatientEntry) -> None:
        if p.n_studies > 0:
            w.put(b"patients", pkey, p)
            return
        for k in name_keys(p.attrs.get("PatientName")):
            w.dup_delete(b"ix_patient_name", k, pkey)
        w.delete(b"patients", pkey)

    def _unlink_instance(self, w: WriteBatch, old: InstanceEntry) -> None:
        sop = old.sop_instance_uid.encode()
        sk = old.series_uid.encode()
        se: SeriesEntry = w.get(b"series", sk)
        study_k = se.study_uid.encode()
        st: StudyEntry = w.get(b"studies", study_k)
        pkey = patient_key(st.patient_id, st.issuer)
        p: PatientEntry = w.get(b"patients", pkey)
        w.dup_delete(b"series_instances", sk, order_key(old.attrs.get("InstanceNumber")) + sop)
        w.delete(b"instances", sop)
        se.n_instances -= 1
        _inc(se.sop_classes, old.sop_class_uid, -1)
        st.n_instances -= 1
        _inc(st.sop_classes, old.sop_class_uid, -1)
        p.n_instances -= 1
        if se.n_instances > 0:
            w.put(b"series", sk, se)
            w.put(b"studies", study_k, st)
            w.put(b"patients", pkey, p)
            return
        modality = _str_attr(se.attrs, "Modality")
        if modality:
            w.dup_delete(b"ix_series_modality", key(modality), sk)
        w.delete(b"series", sk)
        self._detach_series(w, se, st, p, pkey)

    # ------------------------------------------------------------------ reads
    def _get(self, dbname: bytes, k: bytes) -> Any:
        with self.env.begin() as txn:
            raw = txn.get(k, db=self.dbs[dbname])
        return None if raw is None else _DEC[dbname].decode(raw)

    def get_instance(self, sop_uid: str) -> InstanceEntry | None:
        return self._get(b"instances", sop_uid.encode())

    def get_series(self, series_uid: str) -> SeriesEntry | None:
        return self._get(b"series", series_uid.encode())

    def get_study(self, study_uid: str) -> StudyEntry | None:
        return self._get(b"studies", study_uid.encode())

    def get_patient(self, patient_id: str, issuer: str = "") -> PatientEntry | None:
        return self._get(b"patients", patient_key(patient_id, issuer))

    def get_record(self, sop_uid: str) -> InstanceRecord | None:
        """The full record of an instance (level attributes as currently stored)."""
        with self.env.begin() as txn:
            raw = txn.get(sop_uid.encode(), db=self.dbs[b"instances"])
            if raw is None:
                return None
            e: InstanceEntry = _DEC[b"instances"].decode(raw)
            se = _DEC[b"series"].decode(txn.get(e.series_uid.encode(), db=self.dbs[b"series"]))
            st = _DEC[b"studies"].decode(txn.get(se.study_uid.encode(), db=self.dbs[b"studies"]))
            pk = patient_key(st.patient_id, st.issuer)
            p = _DEC[b"patients"].decode(txn.get(pk, db=self.dbs[b"patients"]))
        return _record(e, se, st, p)

    def _dups(self, dbname: bytes, k: bytes, after: bytes | None, limit: int | None) -> list[bytes]:
        out: list[bytes] = []
        with self.env.begin() as txn, txn.cursor(db=self.dbs[dbname]) as cur:
            if after is None:
                ok = cur.set_key(k)
            else:
                ok = cur.set_range_dup(k, after)
                if ok and cur.value() == after:
                    ok = cur.next_dup()
            while ok:
                out.append(cur.value())
                if limit is not None and len(out) >= limit:
                    break
                ok = cur.next_dup()
        return out

    def series_instances(
        self, series_uid: str, *, after: str | None = None, limit: int | None = None
    ) -> list[str]:
        """SOP Instance UIDs of a series in InstanceNumber order; page with ``after``."""
        after_v = None
        if after is not None:
            e = self.get_instance(after)
            if e is None:
                raise KeyError(after)
            after_v = order_key(e.attrs.get("InstanceNumber")) + after.encode()
        vals = self._dups(b"series_instances", series_uid.encode(), after_v, limit)
        return [v[4:].decode() for v in vals]

    def study_series(self, study_uid: str) -> list[str]:
        return [v.decode() for v in self._dups(b"study_series", study_uid.encode(), None, None)]

    def patient_studies(self, patient_id: str, issuer: str = "") -> list[str]:
        vals = self._dups(b"patient_studies", patient_key(patient_id, issuer), None, None)
        return [v.decode() for v in vals]

    def patients_by_id(self, patient_id: str) -> list[tuple[str, str]]:
        """(PatientID, Issuer) of every patient with this PatientID, whatever the issuer."""
        prefix = key(patient_id + "\0")
        out = []
        with self.env.begin() as txn, txn.cursor(db=self.dbs[b"patients"]) as cur:
            ok = cur.set_range(prefix)
            while ok and cur.key().startswith(prefix):
                out.append((patient_id, cur.key()[len(prefix) :].decode("utf-8", "replace")))
                ok = cur.next()
        return out

    def _range(
        self, dbname: bytes, lo: bytes, stop: Any, limit: int | None, start_after: tuple | None
    ) -> list[bytes]:
        out: list[bytes] = []
        with self.env.begin() as txn, txn.cursor(db=self.dbs[dbname]) as cur:
            if start_after is not None:
                ok = cur.set_range_dup(*start_after)
                if ok and (cur.key(), cur.value()) == start_after:
                    ok = cur.next()
                elif not ok:
                    ok = cur.set_range(start_after[0] + b"\0")
            else:
                ok = cur.set_range(lo)
            while ok and not stop(cur.key()):
                out.append(cur.value())
                if limit is not None and len(out) >= limit:
                    break
                ok = cur.next()
        return out

    def patients_by_name(self, name: str, *, prefix: bool = True) -> list[tuple[str, str]]:
        """Patients whose name (any component group, case-insensitive) starts with / equals
        ``name``. Distinct (PatientID, Issuer) pairs, in name order."""
        k = key(name.upper())
        stop = (lambda kk: not kk.startswith(k)) if prefix else (lambda kk: kk != k)
        seen: dict[bytes, None] = {}
        for v in self._range(b"ix_patient_name", k, stop, None, None):
            seen.setdefault(v, None)
        return [_split_pkey(v) for v in seen]

    def studies_by_date(
        self,
        lo: str | None = None,
        hi: str | None = None,
        *,
        after: str | None = None,
        limit: int | None = None,
    ) -> list[str]:
        """Study UIDs with lo <= StudyDate <= hi (YYYYMMDD, either bound open), in date order.
        Page by passing the last UID returned as ``after``."""
        hi_b = hi.encode() if hi else None
        start = None
        if after is not None:
            st = self.get_study(after)
            if st is None:
                raise KeyError(after)
            start = (key(_str_attr(st.attrs, "StudyDate")), after.encode())
        stop = (lambda kk: kk > hi_b) if hi_b else (lambda kk: False)
        vals = self._range(b"ix_study_date", (lo or "").encode(), stop, limit, start)
        return [v.decode() for v in vals]

    def _exact(self, dbname: bytes, value: str) -> list[str]:
        return [v.decode() for v in self._dups(dbname, key(value), None, None)]

    def studies_by_accession(self, accession: str) -> list[str]:
        return self._exact(b"ix_accession", accession)

    def studies_by_modality(self, modality: str) -> list[str]:
        return self._exact(b"ix_study_modality", modality)

    def series_by_modality(self, modality: str) -> list[str]:
        return self._exact(b"ix_series_modality", modality)

    def study_instances(self, study_uid: str) -> list[InstanceEntry]:
        """Every instance row of a study (series by series, InstanceNumber order)."""
        out = []
        for series_uid in self.study_series(study_uid):
            out += self.series_entries(series_uid)
        return out

    def series_entries(self, series_uid: str) -> list[InstanceEntry]:
        """Every instance row of a series in InstanceNumber order, in one read transaction
        (a viewer opening a series asks for all of them: one transaction, not one per row)."""
        out = []
        dec = _DEC[b"instances"]
        with self.env.begin() as txn, txn.cursor(db=self.dbs[b"series_instances"]) as cur:
            instances = self.dbs[b"instances"]
            ok = cur.set_key(series_uid.encode())
            while ok:
                raw = txn.get(cur.value()[4:], db=instances)
                if raw is not None:
                    out.append(dec.decode(raw))
                ok = cur.next_dup()
        return out

    def _iter_rows(self, dbname: bytes, page_size: int) -> Iterator[Any]:
        """Every row of a level in key order, a page per read transaction (never held long)."""
        after = b""
        while True:
            page: list[Any] = []
            with self.env.begin() as txn, txn.cursor(db=self.dbs[dbname]) as cur:
                ok = cur.set_range(after) if after else cur.first()
                if ok and after and cur.key() == after:
                    ok = cur.next()
                while ok and len(page) < page_size:
                    page.append(_DEC[dbname].decode(cur.value()))
                    after = cur.key()
                    ok = cur.next()
            yield from page
            if len(page) < page_size:
                return

    def iter_studies(self) -> Iterator[StudyEntry]:
        """Every study row, in UID order."""
        return self._iter_rows(b"studies", 512)

    def iter_instances(self) -> Iterator[InstanceEntry]:
        """Every instance row, in SOP UID order."""
        return self._iter_rows(b"instances", 1024)

    def count(self, level: str) -> int:
        """Number of patients / studies / series / instances."""
        with self.env.begin() as txn:
            return txn.stat(self.dbs[LEVEL_DBS[level]])["entries"]

    def iter_keys(self, level: str) -> list[str]:
        """Every primary key of a level (tests, reindex checks); patient keys as ID\\0Issuer."""
        with self.env.begin() as txn, txn.cursor(db=self.dbs[LEVEL_DBS[level]]) as cur:
            return [k.decode("utf-8", "replace") for k in cur.iternext(values=False)]


def _split_pkey(v: bytes) -> tuple[str, str]:
    pid, _, issuer = v.decode("utf-8", "replace").partition("\0")
    return pid, issuer


def _record(e: InstanceEntry, se: SeriesEntry, st: StudyEntry, p: PatientEntry) -> InstanceRecord:
    return InstanceRecord(
        sop_instance_uid=e.sop_instance_uid,
        sop_class_uid=e.sop_class_uid,
        study_uid=st.study_uid,
        series_uid=se.series_uid,
        patient_id=p.patient_id,
        issuer_of_patient_id=p.issuer,
        transfer_syntax_uid=e.transfer_syntax_uid,
        path=e.path,
        size=e.size,
        stored_at=e.stored_at,
        patient=p.attrs,
        study=st.attrs,
        series=se.attrs,
        instance=e.attrs,
        cold=e.cold,
    )
