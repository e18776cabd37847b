"""Scanned raw values to an index record: the twin of ``_recordkit.pyx`` (the code that was
``hpacs.index.schema.record_from_scan``, moved here unchanged in behaviour).

:class:`RecordBuilder` is configured once by ``hpacs.index.schema`` (its per-tag decoder table,
the record type, the error type) so this module imports nothing from the index. A decoder
entry is ``tag -> (keyword, kind, vr, level indexes)``; ``kind`` is :data:`PLAIN` (latin-1,
each backslash-separated value stripped of spaces and NULs both sides), :data:`TEXT` (the data
set's character sets; trailing spaces/NULs stripped), :data:`PN` (the same, then trailing ``=``)
or :data:`INT` (US/UL/SS/SL in the data set's byte order: an int, or a list when
multi-valued). Empty values are left out. The four identifying UIDs must be present and match
``[0-9.]{1,64}``, else ``error_type`` is raised with the message below.
"""

from __future__ import annotations

import re
import struct
from typing import Any, Final

from pydicom.valuerep import TEXT_VR_DELIMS

from hpacs.dicom.text import decode_pn, decode_text, encodings_for

__all__ = [
    "INT",
    "PLAIN",
    "PN",
    "SINGLE_VALUED_TEXT",
    "TEXT",
    "RecordBuilder",
    "check_uids",
    "decode_value",
]

PLAIN, TEXT, PN, INT = 0, 1, 2, 3
SINGLE_VALUED_TEXT: Final = frozenset({"ST", "LT", "UT"})  # backslash is data, not a delimiter
INT_FORMATS: Final = {"US": ("H", False), "UL": ("I", False), "SS": ("h", True),
                      "SL": ("i", True)}  # fmt: skip
SPECIFIC_CHARACTER_SET: Final = 0x00080005
#: The identifying UIDs in record order: (keyword, tag, level index, in the record).
UID_KEYS: Final = (("SOPInstanceUID", 0x00080018, 3), ("SOPClassUID", 0x00080016, 3),
                   ("StudyInstanceUID", 0x0020000D, 1), ("SeriesInstanceUID", 0x0020000E, 2))
_UID_RE: Final = re.compile(r"[0-9.]{1,64}")


def decode_value(raw: bytes, kind: int, vr: str, encodings: tuple[str, ...]) -> Any:
    """A non-integer value (kinds PLAIN, TEXT, PN) as the index keeps it."""
    if kind == PLAIN:
        s = raw.decode("latin-1")
        if "\\" in s:
            return "\\".join([p.strip(" \0") for p in s.split("\\")])
        return s.strip(" \0")
    if kind == PN:
        if b"\\" in raw:
            return "\\".join([decode_pn(p.rstrip(b" \0"), encodings) for p in raw.split(b"\\")])
        return decode_pn(raw.rstrip(b" \0"), encodings)
    if vr not in SINGLE_VALUED_TEXT and b"\\" in raw:
        return "\\".join(
            [decode_text(p.rstrip(b" \0"), encodings, TEXT_VR_DELIMS) for p in raw.split(b"\\")]
        )
    return decode_text(raw.rstrip(b" \0"), encodings, TEXT_VR_DELIMS)


def decode_int(raw: bytes, vr: str, little_endian: bool) -> int | list[int] | None:
    code, signed = INT_FORMATS[vr]
    width = 2 if code in "Hh" else 4
    n = len(raw) // width
    if n == 0:
        return None
    if n == 1:
        return int.from_bytes(raw[:width], "little" if little_endian else "big", signed=signed)
    return list(struct.unpack(("<" if little_endian else ">") + code * n, raw[: n * width]))


def check_uids(levels: tuple[dict, ...], error_type: type[Exception]) -> list[str]:
    """The four identifying UIDs (SOP instance, SOP class, study, series); raises
    ``error_type`` naming the first one missing or malformed."""
    out = []
    for keyword, tag, level in UID_KEYS:
        uid = levels[level].get(keyword)
        if not uid:
            raise error_type(f"missing {keyword} ({tag:08X})")
        if not isinstance(uid, str) or _UID_RE.fullmatch(uid) is None:
            raise error_type(f"invalid {keyword} {uid!r}")
        out.append(uid)
    return out


class RecordBuilder:
    """Builds ``record_type`` records from the header scanner's raw values."""

    def __init__(self, decoders: dict[int, tuple[str, int, str, tuple[int, ...]]],
                 record_type: type, error_type: type[Exception]) -> None:
        self.decoders = decoders
        self.record_type = record_type
        self.error_type = error_type

    def build(self, values: dict[int, bytes], transfer_syntax: str, path: str, size: int,
              stored_at: float, little_endian: bool) -> Any:
        """The record of one instance; raises ``error_type`` on missing/bad UIDs."""
        encodings = encodings_for(values.get(SPECIFIC_CHARACTER_SET))
        levels: tuple[dict[str, Any], ...] = ({}, {}, {}, {})
        decoders = self.decoders
        for tag, raw in values.items():
            spec = decoders.get(tag)
            if spec is None or not raw:
                continue
            keyword, kind, vr, where = spec
            if kind == INT:
                value = decode_int(raw, vr, little_endian)
            else:
                value = decode_value(raw, kind, vr, encodings)
            if value is None or value == "":
                continue
            for i in where:
                levels[i][keyword] = value
        patient, study, series, instance = levels
        sop, sop_class, study_uid, series_uid = check_uids(levels, self.error_type)
        pid = patient.get("PatientID", "")
        issuer = patient.get("IssuerOfPatientID", "")
        return self.record_type(
            sop, sop_class, study_uid, series_uid,
            pid if isinstance(pid, str) else str(pid),
            issuer if isinstance(issuer, str) else str(issuer),
            transfer_syntax, path, size, stored_at, patient, study, series, instance,
        )  # fmt: skip


# ------------------------------------------------------------------ the index apply fast path
_MISSING: Final = object()


def _covers(have: dict, new: dict) -> bool:
    """Merging ``new`` into ``have`` would change nothing."""
    for k, v in new.items():
        old = have.get(k, _MISSING)
        if old is _MISSING or (old is not v and v != old):  # str, int, list[int]
            return False
    return True


def _inc(counts: dict[str, int], k: str) -> None:
    new = counts.get(k, 0) + 1
    if new <= 0:
        counts.pop(k, None)
    else:
        counts[k] = new


class Applier:
    """The steady state of ``hpacs.index.db.IndexDB.apply``, for one index environment: a new
    instance whose patient, study and series rows exist, with the parents it names and every
    attribute it carries already stored (the 2nd..Nth instance of a series). ``apply`` then
    writes exactly what the general method writes (last-stored clock and ``ix_hot_activity``
    entry, counts, the series order entry, the instance row) and returns True; in any other
    case it writes nothing and returns False: the caller runs the general method. ``flush``
    is ``WriteBatch.flush``: the dirty cached rows encoded and put (None: deleted).

    ``dbs``: the environment's DBI handles by name; ``decoders``: msgpack decoders of the four
    level rows by db name; ``entry_type``: the instance row (``InstanceEntry``);
    ``order_key`` and ``patient_key``: the index's key functions; ``encode``: the row encoder.
    """

    def __init__(self, dbs: dict[bytes, Any], decoders: dict[bytes, Any], entry_type: type,
                 order_key: Any, patient_key: Any, encode: Any) -> None:
        self.dbs = dbs
        self.decoders = decoders
        self.entry_type = entry_type
        self.order_key = order_key
        self.patient_key = patient_key
        self.encode = encode

    def _get(self, w: Any, name: bytes, k: bytes) -> Any:
        cache = w._cache[name]
        row = cache.get(k, _MISSING)
        if row is _MISSING:
            raw = w.txn.get(k, db=self.dbs[name])
            row = None if raw is None else self.decoders[name].decode(raw)
            cache[k] = row
        return row

    def apply(self, w: Any, rec: Any) -> bool:
        if b"ix_hot_activity" not in self.dbs:  # a read-only index from before it
            return False
        sop = rec.sop_instance_uid.encode()
        if self._get(w, b"instances", sop) is not None:
            return False
        pkey = self.patient_key(rec.patient_id, rec.issuer_of_patient_id)
        p = self._get(w, b"patients", pkey)
        if p is None or not _covers(p.attrs, rec.patient):
            return False
        study_k = rec.study_uid.encode()
        st = self._get(w, b"studies", study_k)
        if (st is None or st.patient_id != rec.patient_id
                or st.issuer != rec.issuer_of_patient_id or not _covers(st.attrs, rec.study)):
            return False
        series_k = rec.series_uid.encode()
        se = self._get(w, b"series", series_k)
        if se is None or se.study_uid != rec.study_uid or not _covers(se.attrs, rec.series):
            return False
        txn, dbs, dirty = w.txn, self.dbs, w._dirty
        listed = False
        if rec.stored_at > st.last_stored:
            listed = txn.delete(_activity(st), study_k, db=dbs[b"ix_hot_activity"])
            st.last_stored = rec.stored_at
        if rec.cold is None or listed:  # put without duplicates: a no-op when it is there
            txn.put(_activity(st), study_k, db=dbs[b"ix_hot_activity"], dupdata=False)
        se.n_instances += 1
        _inc(se.sop_classes, rec.sop_class_uid)
        st.n_instances += 1
        _inc(st.sop_classes, rec.sop_class_uid)
        p.n_instances += 1
        txn.put(series_k, self.order_key(rec.instance.get("InstanceNumber")) + sop,
                db=dbs[b"series_instances"], dupdata=True)
        w._cache[b"instances"][sop] = self.entry_type(
            rec.sop_instance_uid, rec.sop_class_uid, rec.series_uid, rec.transfer_syntax_uid,
            rec.path, rec.size, rec.stored_at, rec.instance, rec.cold,
        )  # fmt: skip
        dirty.add((b"series", series_k))
        dirty.add((b"studies", study_k))
        dirty.add((b"patients", pkey))
        dirty.add((b"instances", sop))
        return True

    def flush(self, w: Any) -> None:
        txn, dbs, cache, encode = w.txn, self.dbs, w._cache, self.encode
        for dbname, k in w._dirty:
            row = cache[dbname][k]
            if row is None:
                txn.delete(k, db=dbs[dbname])
            else:
                txn.put(k, encode(row), db=dbs[dbname])
        w._dirty.clear()


def _activity(st: Any) -> bytes:
    """``hpacs.index.db.activity_key``: the study's last activity as a sortable key."""
    return struct.pack(">d", max(st.last_stored, st.last_access, 0.0))
