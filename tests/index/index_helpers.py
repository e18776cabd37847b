"""Shared builders and a from-scratch consistency check for index tests."""

from __future__ import annotations

from hpacs.index.db import IndexDB
from hpacs.index.schema import InstanceRecord


def make_record(
    sop: str,
    series: str = "1.2.3.1",
    study: str = "1.2.3",
    patient: str = "P1",
    *,
    issuer: str = "",
    name: str = "DOE^JOHN",
    modality: str = "CT",
    study_date: str = "20240115",
    accession: str = "ACC1",
    sop_class: str = "1.2.840.10008.5.1.4.1.1.2",
    number: int | None = 1,
    path: str | None = None,
    stored_at: float = 1000.0,
) -> InstanceRecord:
    inst: dict = {"SOPInstanceUID": sop, "SOPClassUID": sop_class, "Rows": 512}
    if number is not None:
        inst["InstanceNumber"] = str(number)
    pat = {"PatientID": patient, "PatientName": name}
    if issuer:
        pat["IssuerOfPatientID"] = issuer
    return InstanceRecord(
        sop_instance_uid=sop,
        sop_class_uid=sop_class,
        study_uid=study,
        series_uid=series,
        patient_id=patient,
        issuer_of_patient_id=issuer,
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        path=path or f"files/{sop}.dcm",
        size=1234,
        stored_at=stored_at,
        patient=pat,
        study={"StudyInstanceUID": study, "StudyDate": study_date, "AccessionNumber": accession},
        series={"SeriesInstanceUID": series, "Modality": modality},
        instance=inst,
    )


def _all(db: IndexDB, name: bytes, dup: bool = False):
    with db.env.begin() as txn, txn.cursor(db=db.dbs[name]) as cur:
        return list(cur.iternext())


def check_consistent(db: IndexDB) -> None:
    """Recount everything from the instance rows and compare with the stored derived data."""
    from collections import Counter, defaultdict

    from hpacs.index import db as dbm

    dec = dbm._DEC
    instances = {k: dec[b"instances"].decode(v) for k, v in _all(db, b"instances")}
    series = {k: dec[b"series"].decode(v) for k, v in _all(db, b"series")}
    studies = {k: dec[b"studies"].decode(v) for k, v in _all(db, b"studies")}
    patients = {k: dec[b"patients"].decode(v) for k, v in _all(db, b"patients")}

    se_n, se_cls = Counter(), defaultdict(Counter)
    for e in instances.values():
        sk = e.series_uid.encode()
        assert sk in series
        se_n[sk] += 1
        se_cls[sk][e.sop_class_uid] += 1
    st_series, st_n, st_cls, st_mod = (
        Counter(),
        Counter(),
        defaultdict(Counter),
        defaultdict(Counter),
    )
    for sk, se in series.items():
        assert se.n_instances == se_n[sk] > 0
        assert se.sop_classes == dict(se_cls[sk])
        stk = se.study_uid.encode()
        assert stk in studies
        st_series[stk] += 1
        st_n[stk] += se.n_instances
        st_cls[stk].update(se.sop_classes)
        if se.attrs.get("Modality"):
            st_mod[stk][se.attrs["Modality"]] += 1
    p_st, p_se, p_n = Counter(), Counter(), Counter()
    for stk, st in studies.items():
        assert st.n_series == st_series[stk] > 0
        assert st.n_instances == st_n[stk]
        assert st.sop_classes == dict(st_cls[stk])
        assert st.modalities == dict(st_mod[stk])
        pk = dbm.patient_key(st.patient_id, st.issuer)
        assert pk in patients
        p_st[pk] += 1
        p_se[pk] += st.n_series
        p_n[pk] += st.n_instances
    for pk, p in patients.items():
        assert (p.n_studies, p.n_series, p.n_instances) == (p_st[pk], p_se[pk], p_n[pk])
        assert p.n_studies > 0

    # child and secondary indexes hold exactly what the rows imply
    def pairs(name):
        return sorted(_all(db, name))

    assert pairs(b"series_instances") == sorted(
        (e.series_uid.encode(), dbm.order_key(e.attrs.get("InstanceNumber")) + k)
        for k, e in instances.items()
    )
    assert pairs(b"study_series") == sorted((se.study_uid.encode(), k) for k, se in series.items())
    assert pairs(b"patient_studies") == sorted(
        (dbm.patient_key(st.patient_id, st.issuer), k) for k, st in studies.items()
    )
    assert pairs(b"ix_series_modality") == sorted(
        (dbm.key(se.attrs["Modality"]), k) for k, se in series.items() if se.attrs.get("Modality")
    )
    assert pairs(b"ix_study_modality") == sorted(
        (dbm.key(m), k) for k, st in studies.items() for m in st.modalities
    )
    for ix, attr in ((b"ix_study_date", "StudyDate"), (b"ix_accession", "AccessionNumber")):
        assert pairs(ix) == sorted(
            (dbm.key(st.attrs[attr]), k) for k, st in studies.items() if st.attrs.get(attr)
        )
    assert pairs(b"ix_patient_name") == sorted(
        (nk, pk) for pk, p in patients.items() for nk in dbm.name_keys(p.attrs.get("PatientName"))
    )
    # the hot list may hold more (pruned by the rules) but never misses a hot study
    hot_listed = set(pairs(b"ix_hot_activity"))
    for e in instances.values():
        if e.cold is None:
            stk = series[e.series_uid.encode()].study_uid.encode()
            assert (dbm.activity_key(studies[stk]), stk) in hot_listed
