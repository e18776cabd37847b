"""``hpacs verify``: scrub both tiers against the index.

Three passes, each a plain scan (blocking; run it in a thread or the CLI):

1. every index entry: a hot instance's file exists and its header names the same instance
   (SOP Instance, series, study UIDs, transfer syntax) with the indexed size; a cold instance's
   record restores (checksum verified by the cold store) to a header naming the same instance;
2. every hot file: indexed, at the path its index entry names (a hot copy of an instance the
   index places in cold is *stale*: a leftover the lifecycle's reconcile removes);
3. every cold record: its instance is indexed (a record whose instance lives elsewhere is dead
   space, counted but not an error: promotions and re-run migrations leave those until
   compaction).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field

from hpacs.dicom.part10 import Part10Error
from hpacs.dicom.scan import ScanError
from hpacs.index.db import IndexDB, InstanceEntry
from hpacs.index.schema import RecordError
from hpacs.log import get_logger
from hpacs.store.cold import ColdCorruptError, ColdError, ColdMissingError
from hpacs.store.hot import SUFFIX
from hpacs.store.tiers import Tiers, cold_ref

log = get_logger("hpacs.verify")


@dataclass
class VerifyReport:
    hot_checked: int = 0
    cold_checked: int = 0
    cold_records: int = 0
    dead_records: int = 0
    missing: list[tuple[str, str]] = field(default_factory=list)  # (what, why)
    corrupt: list[tuple[str, str]] = field(default_factory=list)
    unindexed: list[tuple[str, str]] = field(default_factory=list)
    stale: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.corrupt or self.unindexed or self.stale)


def _header_problem(entry: InstanceEntry, study_uid: str | None, source, size: int) -> str | None:
    from hpacs.store.archive import record_of

    try:
        rec = record_of(source, path=entry.path, size=size, stored_at=0.0)
    except (OSError, Part10Error, ScanError, RecordError, KeyError) as exc:
        return f"unreadable header: {exc}"
    expected = (entry.sop_instance_uid, entry.series_uid, entry.transfer_syntax_uid, entry.size)
    found = (rec.sop_instance_uid, rec.series_uid, rec.transfer_syntax_uid, size)
    if expected != found or (study_uid is not None and rec.study_uid != study_uid):
        return f"does not match the index: index {expected}, stored {found}"
    return None


def verify(db: IndexDB, tiers: Tiers, progress: Callable[[int], None] | None = None
           ) -> VerifyReport:
    report = VerifyReport()
    hot = tiers.hot
    studies: dict[str, str | None] = {}

    def study_of(series_uid: str) -> str | None:
        if series_uid not in studies:
            se = db.get_series(series_uid)
            studies[series_uid] = se.study_uid if se is not None else None
        return studies[series_uid]

    # 1. index -> tiers
    for e in db.iter_instances():
        what = e.sop_instance_uid
        if e.cold is None:
            report.hot_checked += 1
            path = hot.absolute(e.path)
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                report.missing.append((what, f"hot file {e.path} is missing"))
                continue
            except OSError as exc:
                report.corrupt.append((what, f"hot file {e.path}: {exc}"))
                continue
            problem = _header_problem(e, study_of(e.series_uid), path, size)
            if problem is not None:
                report.corrupt.append((what, f"hot file {e.path}: {problem}"))
        else:
            report.cold_checked += 1
            ref = cold_ref(e)
            assert ref is not None
            where = f"cold record {ref.pack}:{ref.offset}"
            try:
                data = tiers.cold.read(ref)
            except ColdMissingError as exc:
                report.missing.append((what, f"{where}: {exc}"))
                continue
            except ColdCorruptError as exc:
                report.corrupt.append((what, str(exc)))
                continue
            except (ColdError, OSError) as exc:
                report.corrupt.append((what, f"{where}: {exc}"))
                continue
            problem = _header_problem(e, study_of(e.series_uid), io.BytesIO(data), len(data))
            if problem is not None:
                report.corrupt.append((what, f"{where}: {problem}"))
        if progress is not None:
            progress(1)

    # 2. hot files -> index
    for rel in hot.iter_files():
        sop_uid = rel.rsplit("/", 1)[-1][: -len(SUFFIX)]
        e = db.get_instance(sop_uid)
        if e is None:
            report.unindexed.append((rel, "hot file not in the index"))
        elif e.cold is not None:
            report.stale.append((rel, "hot copy of an instance the index places in cold"))
        elif e.path != rel:
            report.unindexed.append((rel, f"the index places this instance at {e.path}"))

    # 3. cold records -> index
    for key, ref in tiers.cold.scan():
        report.cold_records += 1
        e = db.get_instance(key)
        if e is None:
            report.unindexed.append((f"cold record {ref.pack}:{ref.offset}",
                                     f"instance {key} not in the index"))
        elif cold_ref(e) != ref:
            report.dead_records += 1

    for kind in ("missing", "corrupt", "unindexed", "stale"):
        for what, why in getattr(report, kind):
            log.error(f"verify.{kind}", what=what, reason=why)
    log.info("verify.done", hot=report.hot_checked, cold=report.cold_checked,
             cold_records=report.cold_records, dead_records=report.dead_records,
             missing=len(report.missing), corrupt=len(report.corrupt),
             unindexed=len(report.unindexed), stale=len(report.stale))
    return report
