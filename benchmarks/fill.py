"""Fill an hpacs index with synthetic instances, fast, without writing DICOM files.

``python -m benchmarks.fill DATA_DIR --instances 1000000``

Records are synthesized (no files, no header scans) and applied in large write transactions
(``IndexDB.write()`` + ``IndexDB.apply``, ``--batch`` records per transaction). The data is
deterministic and incremental: study ``i`` is always generated from the seed and ``i`` alone,
so filling to 10k, measuring, then filling on to 100k gives the same first 10k instances as
filling to 100k at once (Orthanc's method: fill, measure, fill more). A fill resumes from the
number of studies already in the index and stops at the first study boundary at or past the
requested instance count.

The data: patients with seeded names (some non-ASCII: Latin-1 accents, and Japanese with
an ideographic group), about 15% of studies belong to an earlier patient; study dates spread
over 10 years (2015-2024); modalities CT/MR/US/DX/CR with per-modality series/instance counts
(CT ~120 instances per study, MR ~100, US ~20, DX/CR 1-4: ~50 on average), accession numbers,
body parts, descriptions. The paths point nowhere: the index is only for querying.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from hpacs.index.db import IndexDB
from hpacs.index.schema import InstanceRecord

UID_ROOT = "1.2.826.0.1.3680043.8.498.77"
EPOCH = dt.date(2015, 1, 1)
DAYS = 3652  # 10 years
SEED = 3

FAMILY = (
    "DOE", "SMITH", "JOHNSON", "WILLIAMS", "BROWN", "JONES", "GARCIA", "MILLER", "DAVIS",
    "MARTIN", "BERNARD", "DUBOIS", "THOMAS", "ROBERT", "RICHARD", "PETIT", "DURAND", "LEROY",
    "MOREAU", "SIMON", "LAURENT", "LEFEBVRE", "MICHEL", "MULLER", "SCHMIDT", "SCHNEIDER",
    "FISCHER", "WEBER", "MEYER", "WAGNER", "BECKER", "SCHULZ", "HOFFMANN", "ROSSI", "RUSSO",
    "FERRARI", "ESPOSITO", "BIANCHI", "ROMANO", "COLOMBO", "NOWAK", "KOWALSKI", "NIELSEN",
    "HANSEN", "JENSEN", "ANDERSEN", "LARSEN", "PEDERSEN", "DOERR", "DOEBLER", "DONOVAN",
    "Müller", "García", "Lefèvre", "Øster", "Ñúñez", "Åberg", "Dœuf", "Çelik",
)  # fmt: skip
GIVEN = (
    "JOHN", "JANE", "MARY", "JAMES", "ROBERT", "PATRICIA", "MICHAEL", "LINDA", "DAVID",
    "ELIZABETH", "MARIE", "JEAN", "PIERRE", "ANNA", "HANS", "LUCA", "SOFIA", "EMMA", "NOAH",
    "OLIVIA", "LIAM", "ADA", "ALAN", "GRACE", "José", "Zoë", "François", "Jürgen", "Søren",
)  # fmt: skip
JAPANESE = (
    ("YAMADA^TAROU", "山田^太郎"), ("SATO^HANAKO", "佐藤^花子"), ("SUZUKI^ICHIRO", "鈴木^一郎"),
    ("TANAKA^YUKI", "田中^由紀"),
)  # fmt: skip

#: modality -> (weight, (min, max) series, (min, max) instances per series, body parts,
#: SOP class, study descriptions)
MODALITIES = {
    "CT": (25, (1, 2), (40, 120), ("CHEST", "ABDOMEN", "HEAD", "PELVIS"),
           "1.2.840.10008.5.1.4.1.1.2", ("CT CHEST W CONTRAST", "CT ABDOMEN", "CT HEAD")),
    "MR": (15, (3, 5), (20, 30), ("BRAIN", "KNEE", "SPINE"),
           "1.2.840.10008.5.1.4.1.1.4", ("MR BRAIN", "MR KNEE LEFT", "MR LUMBAR SPINE")),
    "US": (15, (1, 1), (10, 30), ("ABDOMEN", "PELVIS", "THYROID"),
           "1.2.840.10008.5.1.4.1.1.6.1", ("US ABDOMEN", "US PELVIS")),
    "DX": (25, (1, 2), (1, 2), ("CHEST", "HAND", "FOOT"),
           "1.2.840.10008.5.1.4.1.1.1.1", ("XR CHEST 2 VIEWS", "XR HAND")),
    "CR": (20, (1, 2), (1, 2), ("CHEST", "KNEE", "SKULL"),
           "1.2.840.10008.5.1.4.1.1.1", ("CR CHEST", "CR KNEE")),
}  # fmt: skip
_MOD_NAMES = tuple(MODALITIES)
_MOD_WEIGHTS = tuple(m[0] for m in MODALITIES.values())
NEW_PATIENT_P = 0.85


def _rng(kind: str, i: int, seed: int) -> random.Random:
    return random.Random(f"{seed}:{kind}:{i}")


def patient_of(study: int, seed: int = SEED) -> int:
    """The patient index of study ``study``: a new patient (== the study index), or an earlier
    study's patient."""
    while True:
        rng = _rng("p", study, seed)
        if study == 0 or rng.random() < NEW_PATIENT_P:
            return study
        study = rng.randrange(study)


@dataclass(frozen=True)
class Patient:
    patient_id: str
    attrs: dict


def make_patient(p: int, seed: int = SEED) -> Patient:
    rng = _rng("n", p, seed)
    pid = f"P{p:07d}"
    r = rng.random()
    if r < 0.02:
        alpha, ideo = rng.choice(JAPANESE)
        name = f"{alpha}={ideo}"
    else:
        name = f"{rng.choice(FAMILY)}^{rng.choice(GIVEN)}"
        if rng.random() < 0.3:
            name += f"^{rng.choice('ABCDEFGHJKLMNPRSTW')}"
    birth = EPOCH - dt.timedelta(days=rng.randrange(365 * 5, 365 * 90))
    attrs = {
        "PatientName": name,
        "PatientID": pid,
        "PatientBirthDate": birth.strftime("%Y%m%d"),
        "PatientSex": rng.choice("MFFMO"[:4] if rng.random() < 0.99 else "O"),
    }
    return Patient(pid, attrs)


def study_uid(i: int) -> str:
    return f"{UID_ROOT}.{i + 1}"


def accession(i: int) -> str:
    return f"A{(i * 7919) % 10_000_000:07d}{i % 10}"


def study_records(i: int, seed: int = SEED, stored_at: float = 0.0) -> list[InstanceRecord]:
    """Every instance of study ``i`` (deterministic)."""
    rng = _rng("s", i, seed)
    patient = make_patient(patient_of(i, seed), seed)
    modality = rng.choices(_MOD_NAMES, _MOD_WEIGHTS)[0]
    _w, (smin, smax), (imin, imax), parts, sop_class, descriptions = MODALITIES[modality]
    date = (EPOCH + dt.timedelta(days=rng.randrange(DAYS))).strftime("%Y%m%d")
    time_ = f"{rng.randrange(7, 20):02d}{rng.randrange(60):02d}{rng.randrange(60):02d}"
    suid = study_uid(i)
    charset = "ISO_IR 192" if not patient.attrs["PatientName"].isascii() else ""
    study = {
        "StudyInstanceUID": suid,
        "StudyDate": date,
        "StudyTime": time_,
        "StudyID": str(i % 100000),
        "AccessionNumber": accession(i),
        "StudyDescription": rng.choice(descriptions),
        "ReferringPhysicianName": f"{rng.choice(FAMILY[:20])}^{rng.choice(GIVEN[:10])}",
        "InstitutionName": rng.choice(("GENERAL HOSPITAL", "CITY CLINIC", "UNIV MED CENTER")),
    }
    out: list[InstanceRecord] = []
    for s in range(rng.randint(smin, smax)):
        seuid = f"{suid}.{s + 1}"
        series = {
            "SeriesInstanceUID": seuid,
            "Modality": modality,
            "SeriesNumber": str(s + 1),
            "SeriesDate": date,
            "SeriesDescription": f"{modality} SERIES {s + 1}",
            "BodyPartExamined": rng.choice(parts),
            "Manufacturer": rng.choice(("ACME", "GE MEDICAL SYSTEMS", "SIEMENS", "Philips")),
            "StationName": f"{modality}{rng.randrange(1, 4):02d}",
        }
        for k in range(rng.randint(imin, imax)):
            sop = f"{seuid}.{k + 1}"
            inst = {
                "SOPInstanceUID": sop,
                "SOPClassUID": sop_class,
                "InstanceNumber": str(k + 1),
                "Rows": 512,
                "Columns": 512,
                "BitsAllocated": 16,
            }
            if charset:
                inst["SpecificCharacterSet"] = charset
            out.append(
                InstanceRecord(
                    sop_instance_uid=sop,
                    sop_class_uid=sop_class,
                    study_uid=suid,
                    series_uid=seuid,
                    patient_id=patient.patient_id,
                    issuer_of_patient_id="",
                    transfer_syntax_uid="1.2.840.10008.1.2.1",
                    path=f"synthetic/{sop}.dcm",
                    size=525_000,
                    stored_at=stored_at,
                    patient=patient.attrs,
                    study=study,
                    series=series,
                    instance=inst,
                )
            )
    return out


@dataclass
class FillResult:
    instances_before: int
    instances: int
    studies: int
    patients: int
    added: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.added / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict:
        return {**self.__dict__, "records_per_s": self.rate}


def open_index(data_dir: Path, map_size_gb: int = 64) -> IndexDB:
    """The index of an hpacs data dir, as ``hpacs serve`` opens it (``DATA_DIR/index``)."""
    path = Path(data_dir) / "index"
    path.mkdir(parents=True, exist_ok=True)
    return IndexDB(path, map_size=map_size_gb << 30, durability="files")


def fill(
    db: IndexDB,
    target: int,
    *,
    batch: int = 5000,
    seed: int = SEED,
    time_budget: float | None = None,
    progress: bool = False,
) -> FillResult:
    """Add whole studies until the index holds at least ``target`` instances (or the time
    budget runs out: checked between transactions). Resumes after the studies present."""
    before = db.count("instance")
    study = db.count("study")  # studies are added whole and in order: resume after them
    n = before
    now = time.time()
    t0 = time.perf_counter()
    while n < target:
        pending: list[InstanceRecord] = []
        while len(pending) < batch and n < target:
            recs = study_records(study, seed, now)
            pending.extend(recs)
            n += len(recs)
            study += 1
        with db.write() as w:
            for rec in pending:
                db.apply(w, rec)
        if progress:
            el = time.perf_counter() - t0
            print(f"  {n:>9} instances  {(n - before) / el:8.0f} rec/s", file=sys.stderr)
        if time_budget is not None and time.perf_counter() - t0 > time_budget:
            break
    db.sync()
    seconds = time.perf_counter() - t0
    after = db.count("instance")
    return FillResult(before, after, db.count("study"), db.count("patient"), after - before,
                      seconds)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data_dir", type=Path, help="hpacs data directory (index in DATA_DIR/index)")
    ap.add_argument("--instances", type=int, required=True, help="fill up to this many")
    ap.add_argument("--batch", type=int, default=5000, help="records per write transaction")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--time-budget", type=float, default=None, help="seconds, then stop")
    args = ap.parse_args(argv)
    db = open_index(args.data_dir)
    try:
        res = fill(db, args.instances, batch=args.batch, seed=args.seed,
                   time_budget=args.time_budget, progress=True)
    finally:
        db.close()
    print(
        f"{res.added} instances added in {res.seconds:.1f} s ({res.rate:.0f} records/s); "
        f"index: {res.instances} instances, {res.studies} studies, {res.patients} patients"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
