"""Prefetch of priors: bring a patient's relevant earlier studies back to hot storage before
a radiologist opens them.

Which studies is decided in ONE place, :mod:`hpacs.index.priors` (the viewer's ``/compare`` and
later RIS order triggers use the same rule); this module only turns a trigger into promotions:

- a new study arriving for a patient: the ingest listener notices the first instance of a study
  it has not seen lately and, off the acknowledgement path, queues its priors;
- on demand: ``POST /api/prefetch`` (``{"StudyInstanceUID": ...}`` or ``{"PatientID": ...}``)
  and ``hpacs prefetch``.

Priors already hot are skipped; the others go to the lifecycle's promotion queue (one worker,
so a burst of arrivals never competes with ingest for more than one thread).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hpacs.config import PrefetchConfig
from hpacs.index.priors import recent_studies, select_priors
from hpacs.index.schema import InstanceRecord
from hpacs.log import get_logger

if TYPE_CHECKING:
    from hpacs.metrics import Metrics
    from hpacs.store.archive import Archive

log = get_logger("hpacs.prefetch")

#: Studies remembered as "seen" so their later instances do not trigger again.
SEEN_MAX = 10000


class PrefetchError(ValueError):
    """The request names no known study or patient."""


@dataclass
class PrefetchPlan:
    """What a prefetch selected: the priors, which were queued, which were hot already."""

    priors: list[str] = field(default_factory=list)
    queued: list[str] = field(default_factory=list)
    hot: list[str] = field(default_factory=list)


class Prefetcher:
    def __init__(self, archive: Archive, config: PrefetchConfig,
                 metrics: Metrics | None = None) -> None:
        self.archive = archive
        self.config = config
        self.metrics = metrics
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- selection ---------------------------------------------------------------------------
    def select(self, *, study_uid: str | None = None, patient_id: str | None = None,
               issuer: str | None = None, limit: int | None = None) -> list[str]:
        """The studies to prefetch: priors of a study, or a patient's most recent studies.
        Raises PrefetchError for an unknown study or patient."""
        db = self.archive.db
        n = self.config.priors if limit is None else limit
        if study_uid:
            if db.get_study(study_uid) is None:
                raise PrefetchError(f"no study {study_uid}")
            return select_priors(db, study_uid, n)
        if patient_id:
            keys = ([(patient_id, issuer)] if issuer is not None
                    else db.patients_by_id(patient_id))
            keys = [k for k in keys if db.get_patient(*k) is not None]
            if not keys:
                raise PrefetchError(f"no patient {patient_id}")
            found: list[str] = []
            for pid, iss in keys:
                found += recent_studies(db, pid, iss, n)
            return found
        raise PrefetchError("give a StudyInstanceUID or a PatientID")

    def has_cold(self, study_uid: str) -> bool:
        return any(e.cold is not None for e in self.archive.db.study_instances(study_uid))

    def plan(self, studies: list[str]) -> PrefetchPlan:
        plan = PrefetchPlan(priors=list(studies))
        for uid in studies:
            (plan.queued if self.has_cold(uid) else plan.hot).append(uid)
        return plan

    # -- triggers ---------------------------------------------------------------------------
    async def request(self, **what) -> PrefetchPlan:
        """Select and queue promotions (the server: the lifecycle worker does them)."""
        loop = asyncio.get_running_loop()
        studies = await loop.run_in_executor(None, lambda: self.select(**what))
        plan = await loop.run_in_executor(None, self.plan, studies)
        for uid in plan.queued:
            self.archive.lifecycle.request_promotion(uid)
        if self.metrics is not None:
            self.metrics.prefetch_studies.inc(len(plan.queued))
        log.info("prefetch.requested", **{k: v for k, v in what.items() if v is not None},
                 priors=len(plan.priors), queued=len(plan.queued))
        return plan

    def start(self) -> None:
        """Listen to ingest for new studies (server only)."""
        self._loop = asyncio.get_running_loop()
        if self.config.on_new_study and self.config.priors > 0:
            self.archive.ingestor.listeners.append(self._stored)

    def stop(self) -> None:
        if self._stored in self.archive.ingestor.listeners:
            self.archive.ingestor.listeners.remove(self._stored)

    def _stored(self, record: InstanceRecord) -> None:
        """Ingest listener: cheap, on the loop, after the instance was acknowledged-ready."""
        study = record.study_uid
        if study in self._seen:
            self._seen.move_to_end(study)
            return
        self._seen[study] = None
        if len(self._seen) > SEEN_MAX:
            self._seen.popitem(last=False)
        assert self._loop is not None
        self._loop.create_task(self._new_study(study))

    async def _new_study(self, study_uid: str) -> None:
        try:
            plan = await self.request(study_uid=study_uid)
        except Exception as exc:  # a prefetch must never disturb ingest
            log.error("prefetch.failed", study=study_uid, error=repr(exc))
            return
        if plan.queued:
            log.info("prefetch.new_study", study=study_uid, queued=plan.queued)
