"""Prior selection: same modality and body part first, most recent first, only earlier studies."""

from __future__ import annotations

from hpacs.index.priors import recent_studies, select_priors, summarize
from tests.index.index_helpers import make_record


def _study(db, study, date, modality="CT", body_part="", patient="P1", time="", n=1):
    with db.write() as w:
        for i in range(n):
            rec = make_record(f"{study}.{i}", f"{study}.9", study, patient, modality=modality,
                              study_date=date)
            if body_part:
                rec.series["BodyPartExamined"] = body_part
            if time:
                rec.study["StudyTime"] = time
            db.apply(w, rec)


def test_priors_rank_by_modality_and_body_part_then_recency(db):
    _study(db, "9.1", "20260101", "CT", "CHEST")  # current
    _study(db, "9.2", "20250101", "CT", "CHEST")  # same modality + part, older
    _study(db, "9.3", "20250601", "CT", "CHEST")  # same modality + part, newer
    _study(db, "9.4", "20251201", "CT", "HEAD")   # same modality only
    _study(db, "9.5", "20251101", "MR", "CHEST")  # same body part only
    _study(db, "9.6", "20251215", "US", "ABDOMEN")  # other
    _study(db, "9.7", "20260301", "CT", "CHEST")  # later than current: not a prior
    _study(db, "9.8", "20240101", "CT", "CHEST", patient="P2")  # another patient
    assert select_priors(db, "9.1", 10) == ["9.3", "9.2", "9.4", "9.5", "9.6"]
    assert select_priors(db, "9.1", 2) == ["9.3", "9.2"]
    assert select_priors(db, "9.1", 0) == []
    assert select_priors(db, "unknown", 3) == []


def test_report_only_studies_do_not_count_as_same_modality(db):
    _study(db, "8.1", "20260101", "CT")
    _study(db, "8.2", "20251201", "SR")
    _study(db, "8.3", "20250101", "CT")
    assert select_priors(db, "8.1", 5) == ["8.3", "8.2"]
    assert summarize(db, "8.2").modalities == frozenset()


def test_same_day_uses_time_and_undated_studies_sort_oldest(db):
    _study(db, "7.1", "20260101", time="120000")
    _study(db, "7.2", "20260101", time="080000")
    _study(db, "7.3", "")
    assert select_priors(db, "7.1", 5) == ["7.2", "7.3"]
    assert recent_studies(db, "P1", "", 2) == ["7.1", "7.2"]
    assert recent_studies(db, "nobody", "", 2) == []
