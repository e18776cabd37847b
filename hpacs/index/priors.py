"""Which earlier studies of a patient a radiologist wants beside the current one.

One place for the rule, because prefetch (promote priors to hot storage when a study arrives or
on demand), the viewer's ``/compare`` link and, later, RIS order triggers must all agree on it.

Relevance, best first: a prior sharing the current study's image modality *and* body part, then
one sharing the modality, then one sharing the body part, then any other study of the patient;
within a tier the most recent first. A prior is a study of the same patient (PatientID and
issuer) taken before the current one; studies without a date count as older than any dated one.
"""

from __future__ import annotations

from typing import Final

import msgspec

from hpacs.index.db import IndexDB, StudyEntry

#: Modalities that carry no images to compare (reports, presentation states, key objects...).
NON_IMAGE_MODALITIES: Final = frozenset({"SR", "PR", "KO", "DOC", "REG", "SEG", "RWV", "AU"})


class StudySummary(msgspec.Struct, frozen=True):
    """What the selection looks at for one study."""

    study_uid: str
    when: str  # StudyDate + StudyTime, "" when unknown: sorts oldest
    modalities: frozenset[str]
    body_parts: frozenset[str]


def summarize(db: IndexDB, study_uid: str) -> StudySummary | None:
    """The selection's view of one study, or None when the study is unknown."""
    st = db.get_study(study_uid)
    if st is None:
        return None
    return _summary(db, st)


def _summary(db: IndexDB, st: StudyEntry) -> StudySummary:
    parts = set()
    for series_uid in db.study_series(st.study_uid):
        se = db.get_series(series_uid)
        part = se.attrs.get("BodyPartExamined") if se is not None else None
        if isinstance(part, str) and part.strip():
            parts.add(part.strip().upper())
    when = f"{st.attrs.get('StudyDate', '')}{st.attrs.get('StudyTime', '')}"
    modalities = frozenset(m for m in st.modalities if m not in NON_IMAGE_MODALITIES)
    return StudySummary(st.study_uid, when, modalities, frozenset(parts))


def _tier(current: StudySummary, prior: StudySummary) -> int:
    same_modality = bool(current.modalities & prior.modalities)
    same_part = bool(current.body_parts & prior.body_parts)
    if same_modality and same_part:
        return 0
    if same_modality:
        return 1
    if same_part:
        return 2
    return 3


def select_priors(db: IndexDB, study_uid: str, limit: int) -> list[str]:
    """The ``limit`` most relevant prior studies of ``study_uid``'s patient, best first."""
    st = db.get_study(study_uid)
    if st is None or limit <= 0:
        return []
    current = _summary(db, st)
    priors = []
    for uid in db.patient_studies(st.patient_id, st.issuer):
        if uid == study_uid:
            continue
        other = db.get_study(uid)
        if other is None:
            continue
        summary = _summary(db, other)
        if current.when and summary.when and summary.when >= current.when:
            continue  # taken at the same time or later: not a prior
        priors.append(summary)
    # best tier first, then most recent first (reverse sort on "when"; "" is oldest)
    priors.sort(key=lambda p: p.when, reverse=True)
    priors.sort(key=lambda p: _tier(current, p))
    return [p.study_uid for p in priors[:limit]]


def recent_studies(db: IndexDB, patient_id: str, issuer: str, limit: int) -> list[str]:
    """A patient's ``limit`` most recent studies (prefetch by patient, with no current study)."""
    if limit <= 0:
        return []
    summaries = []
    for uid in db.patient_studies(patient_id, issuer):
        st = db.get_study(uid)
        if st is not None:
            summaries.append(_summary(db, st))
    summaries.sort(key=lambda p: p.when, reverse=True)
    return [p.study_uid for p in summaries[:limit]]
