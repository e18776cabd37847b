"""The query benchmark's pieces: the synthetic fill and each query shape, in-process."""

from __future__ import annotations

import pydicom
import pytest

from benchmarks import fill as fill_mod
from benchmarks import query as qb
from hpacs.index.query import Query, QueryEngine


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    db = fill_mod.open_index(tmp_path_factory.mktemp("fill"), map_size_gb=1)
    res = fill_mod.fill(db, 200, batch=64)
    yield db, res
    db.close()


def _run(db, keys: dict[str, str]) -> list[dict]:
    return QueryEngine(db).find(Query.build("STUDY", qb._full(keys)))


def test_fill_whole_studies_and_counts(filled):
    db, res = filled
    assert res.instances >= 200
    assert res.added == res.instances == db.count("instance")
    assert res.studies == db.count("study") and res.patients == db.count("patient")
    # every study is complete: its instance count is what the generator makes
    for i in range(res.studies):
        st = db.get_study(fill_mod.study_uid(i))
        assert st is not None and st.n_instances == len(fill_mod.study_records(i))


def test_fill_is_incremental_and_deterministic(tmp_path):
    a = fill_mod.open_index(tmp_path / "a", map_size_gb=1)
    b = fill_mod.open_index(tmp_path / "b", map_size_gb=1)
    try:
        fill_mod.fill(a, 100, batch=50)
        again = fill_mod.fill(a, 100)  # already there: adds nothing
        assert again.added == 0
        fill_mod.fill(a, 250, batch=50)
        fill_mod.fill(b, 250, batch=1000)
        assert a.count("instance") == b.count("instance")
        assert sorted(a.iter_keys("study")) == sorted(b.iter_keys("study"))
    finally:
        a.close()
        b.close()


def test_patient_id_returns_exactly_that_patients_studies(filled):
    db, res = filled
    for keys in qb.make_queries("patient_id", res.studies, 5):
        pid = keys["PatientID"]
        matches = _run(db, keys)
        assert matches and {m["PatientID"] for m in matches} == {pid}
        assert len(matches) == db.get_patient(pid).n_studies
        assert len(matches) == len(db.patient_studies(pid))


def test_accession_and_uid_list(filled):
    db, res = filled
    for keys in qb.make_queries("accession", res.studies, 5):
        matches = _run(db, keys)
        assert [m["AccessionNumber"] for m in matches] == [keys["AccessionNumber"]]
    for keys in qb.make_queries("uid_list", res.studies, 3):
        uids = set(keys["StudyInstanceUID"].split("\\"))
        assert len(keys["StudyInstanceUID"].split("\\")) == 10
        assert {m["StudyInstanceUID"] for m in _run(db, keys)} == uids


def test_name_prefix_and_date_shapes(filled):
    db, res = filled
    studies = [db.get_study(fill_mod.study_uid(i)) for i in range(res.studies)]
    for keys in qb.make_queries("name_prefix", res.studies, 5):
        prefix = keys["PatientName"][:-1].upper()
        matches = _run(db, keys)
        assert matches  # drawn from an existing patient
        assert all(m["PatientName"].upper().startswith(prefix) for m in matches)
    for keys in qb.make_queries("date_month", res.studies, 5):
        lo, hi = keys["StudyDate"].split("-")
        expected = {s.study_uid for s in studies if lo <= s.attrs["StudyDate"] <= hi}
        assert {m["StudyInstanceUID"] for m in _run(db, keys)} == expected
    for keys in qb.make_queries("modality_date", res.studies, 5):
        lo, hi = keys["StudyDate"].split("-")
        mod = keys["ModalitiesInStudy"]
        expected = {s.study_uid for s in studies
                    if lo <= s.attrs["StudyDate"] <= hi and mod in s.modalities}
        assert {m["StudyInstanceUID"] for m in _run(db, keys)} == expected


def test_time_engine_and_p99(filled):
    db, res = filled
    queries = qb.make_queries("accession", res.studies, 4)
    times, counts = qb.time_engine(QueryEngine(db), queries)
    assert len(times) == 4 and counts == [1, 1, 1, 1]
    assert qb.p99([float(i) for i in range(1, 201)]) == 198.0
    assert qb.p99([3.0]) == 3.0


def test_part10_for_orthanc_round_trips():
    rec = fill_mod.study_records(0)[0]
    ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(qb.part10(rec)))
    assert ds.SOPInstanceUID == rec.sop_instance_uid
    assert ds.StudyInstanceUID == rec.study_uid and ds.PatientID == rec.patient_id
    assert ds.AccessionNumber == rec.study["AccessionNumber"]
    assert "PixelData" not in ds


def test_query_datasets_carry_level_and_charset():
    ds = qb.to_dataset({"PatientName": "Mül*"})
    assert ds.QueryRetrieveLevel == "STUDY" and ds.SpecificCharacterSet == "ISO_IR 192"
    assert ds.PatientName == "Mül*" and "ModalitiesInStudy" in ds
