"""IndexDB: idempotent upsert, counts, moves, delete, secondary lookups, reopen."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from hpacs.index.db import IndexDB
from tests.index.index_helpers import check_consistent, make_record


def apply(db, *records):
    with db.write() as w:
        return [db.apply(w, r) for r in records]


def counts(db):
    return tuple(db.count(lv) for lv in ("patient", "study", "series", "instance"))


def test_counts_across_levels(db):
    apply(
        db,
        make_record("1.1.1.1", "1.1.1", "1.1", "P1", number=1),
        make_record("1.1.1.2", "1.1.1", "1.1", "P1", number=2),
        make_record(
            "1.1.2.1",
            "1.1.2",
            "1.1",
            "P1",
            modality="SR",
            sop_class="1.2.840.10008.5.1.4.1.1.88.11",
        ),
        make_record("1.2.1.1", "1.2.1", "1.2", "P1", modality="MR"),
        make_record("2.1.1.1", "2.1.1", "2.1", "P2", name="ROE^JANE"),
    )
    assert counts(db) == (2, 3, 4, 5)
    p1 = db.get_patient("P1")
    assert (p1.n_studies, p1.n_series, p1.n_instances) == (2, 3, 4)
    st = db.get_study("1.1").query_attrs()
    assert st["NumberOfStudyRelatedSeries"] == 2
    assert st["NumberOfStudyRelatedInstances"] == 3
    assert st["ModalitiesInStudy"] == "CT\\SR"
    assert st["SOPClassesInStudy"] == "1.2.840.10008.5.1.4.1.1.2\\1.2.840.10008.5.1.4.1.1.88.11"
    assert db.get_series("1.1.1").query_attrs()["NumberOfSeriesRelatedInstances"] == 2
    assert db.get_patient("P1").query_attrs()["NumberOfPatientRelatedInstances"] == 4
    assert sorted(db.patient_studies("P1")) == ["1.1", "1.2"]
    assert sorted(db.study_series("1.1")) == ["1.1.1", "1.1.2"]
    check_consistent(db)


def test_apply_is_idempotent(db):
    r = make_record("1.2.3.1.1")
    assert apply(db, r) == [None]
    with db.env.begin() as txn:
        before = txn.stat(db.dbs[b"instances"]), txn.id()
    prev = apply(db, r)[0]
    assert prev == r
    with db.env.begin() as txn:
        # an empty commit does not advance the txn id: nothing was written
        assert txn.id() == before[1]
    apply(db, r, r, r)
    assert counts(db) == (1, 1, 1, 1)
    assert db.get_series("1.2.3.1").n_instances == 1
    check_consistent(db)


def test_resend_updates_location_and_attributes(db):
    apply(db, make_record("1.2.3.1.1", path="old.dcm", number=5))
    prev = apply(
        db,
        make_record(
            "1.2.3.1.1",
            path="new.dcm",
            number=1,
            study_date="20230101",
            accession="ACC2",
            name="DOE^JOHNNY",
        ),
    )[0]
    assert prev.path == "old.dcm"
    assert db.get_instance("1.2.3.1.1").path == "new.dcm"
    assert db.studies_by_date("20230101", "20230101") == ["1.2.3"]
    assert db.studies_by_date("20240115", "20240115") == []
    assert db.studies_by_accession("ACC1") == [] and db.studies_by_accession("ACC2") == ["1.2.3"]
    assert db.patients_by_name("DOE^JOHNN") == [("P1", "")]
    assert counts(db) == (1, 1, 1, 1)
    check_consistent(db)


def test_instance_moves_to_other_series_study_patient(db):
    apply(db, make_record("9.1", "1.1.1", "1.1", "P1"), make_record("9.2", "1.1.1", "1.1", "P1"))
    # re-sent under a new series of a new study of a new patient
    prev = apply(db, make_record("9.2", "2.2.2", "2.2", "P2", modality="MR"))[0]
    assert (prev.series_uid, prev.study_uid, prev.patient_id) == ("1.1.1", "1.1", "P1")
    assert counts(db) == (2, 2, 2, 2)
    assert db.get_series("1.1.1").n_instances == 1
    assert db.series_instances("2.2.2") == ["9.2"]
    assert db.get_record("9.2").patient_id == "P2"
    check_consistent(db)
    # the last instance leaves: the old series, study and patient disappear
    apply(db, make_record("9.1", "2.2.2", "2.2", "P2", modality="MR"))
    assert counts(db) == (1, 1, 1, 2)
    assert db.get_patient("P1") is None and db.get_study("1.1") is None
    assert db.studies_by_modality("CT") == [] and db.series_by_modality("CT") == []
    assert db.patients_by_name("DOE") == [("P2", "")]
    check_consistent(db)


def test_series_moves_to_other_study(db):
    apply(
        db,
        *(make_record(f"9.{i}", "1.1.1", "1.1") for i in range(3)),
        make_record("8.1", "1.1.2", "1.1", modality="PT"),
    )
    # a new instance claims series 1.1.1 belongs to study 1.2: the whole series follows
    apply(db, make_record("9.9", "1.1.1", "1.2"))
    assert db.get_series("1.1.1").study_uid == "1.2"
    assert db.get_study("1.2").n_instances == 4
    assert db.get_study("1.1").n_instances == 1
    assert db.get_study("1.1").modalities == {"PT": 1}
    assert db.get_patient("P1").n_studies == 2
    check_consistent(db)


def test_study_moves_to_other_patient(db):
    apply(db, make_record("9.1", "1.1.1", "1.1", "P1"), make_record("9.2", "1.2.1", "1.2", "P1"))
    apply(db, make_record("9.3", "1.1.1", "1.1", "P2", name="NEW^NAME"))  # patient correction
    assert db.get_study("1.1").patient_id == "P2"
    assert db.get_patient("P2").n_instances == 2
    assert db.get_patient("P1").n_instances == 1
    assert db.patient_studies("P2") == ["1.1"]
    check_consistent(db)


def test_issuer_distinguishes_patients(db):
    apply(
        db,
        make_record("9.1", "1.1.1", "1.1", "P1", issuer="A"),
        make_record("9.2", "1.2.1", "1.2", "P1", issuer="B"),
    )
    assert sorted(db.patients_by_id("P1")) == [("P1", "A"), ("P1", "B")]
    assert db.get_patient("P1", "A").n_studies == 1
    assert db.patients_by_id("P") == []
    check_consistent(db)


def test_delete(db):
    apply(db, make_record("9.1", number=2), make_record("9.2", number=1))
    assert db.delete_instance("9.2").sop_instance_uid == "9.2"
    assert db.delete_instance("9.2") is None
    assert counts(db) == (1, 1, 1, 1)
    check_consistent(db)
    db.delete_instance("9.1")
    assert counts(db) == (0, 0, 0, 0)
    assert db.patients_by_name("DOE") == [] and db.studies_by_date() == []
    check_consistent(db)


def test_secondary_lookups(db):
    apply(
        db,
        make_record("9.1", "1.1.1", "1.1", "P1", name="Smith^John", study_date="20240101"),
        make_record(
            "9.2",
            "1.2.1",
            "1.2",
            "P2",
            name="SMITHERS^W=スミス",
            study_date="20240215",
            modality="MR",
            accession="X",
        ),
        make_record("9.3", "1.3.1", "1.3", "P3", name="SMYTHE^A", study_date="20240301"),
        make_record("9.4", "1.4.1", "1.4", "P4", name="JONES", study_date="20231231"),
    )
    assert db.patients_by_name("smith") == [("P2", ""), ("P1", "")]  # "SMITHE" < "SMITH^"
    assert db.patients_by_name("SMITH^JOHN", prefix=False) == [("P1", "")]
    assert db.patients_by_name("SMITH", prefix=False) == []
    assert db.patients_by_name("スミ") == [("P2", "")]  # any component group
    assert db.studies_by_date("20240101", "20240229") == ["1.1", "1.2"]
    assert db.studies_by_date(None, "20240101") == ["1.4", "1.1"]
    assert db.studies_by_date("20240215") == ["1.2", "1.3"]
    assert db.studies_by_date() == ["1.4", "1.1", "1.2", "1.3"]
    # paging re-opens at the last key returned
    page1 = db.studies_by_date("2024", None, limit=2)
    assert page1 == ["1.1", "1.2"]
    assert db.studies_by_date("2024", None, after=page1[-1], limit=2) == ["1.3"]
    assert db.studies_by_modality("MR") == ["1.2"] and db.series_by_modality("MR") == ["1.2.1"]
    assert db.studies_by_accession("X") == ["1.2"]
    assert sorted(db.studies_by_modality("CT")) == ["1.1", "1.3", "1.4"]


def test_same_date_paging(db):
    apply(db, *(make_record(f"9.{i}", f"1.{i}.1", f"1.{i}") for i in range(5)))
    seen, after = [], None
    while page := db.studies_by_date("20240115", "20240115", after=after, limit=2):
        seen += page
        after = page[-1]
    assert seen == [f"1.{i}" for i in range(5)]


def test_series_instances_order_and_paging(db):
    apply(db, *(make_record(f"9.{i}", number=n) for i, n in enumerate([3, -1, None, 10, 2])))
    order = db.series_instances("1.2.3.1")
    assert order == ["9.1", "9.4", "9.0", "9.3", "9.2"]
    assert db.series_instances("1.2.3.1", limit=2) == order[:2]
    assert db.series_instances("1.2.3.1", after="9.4", limit=2) == order[2:4]
    assert db.series_instances("1.2.3.1", after="9.2") == []
    # renumbering moves it in the order
    apply(db, make_record("9.2", number=0))
    assert db.series_instances("1.2.3.1")[:2] == ["9.1", "9.2"]
    check_consistent(db)


def test_meta_and_reopen(tmp_path):
    d = IndexDB(tmp_path / "ix", map_size=64 << 20)
    apply(d, *(make_record(f"9.{i}") for i in range(10)))
    d.meta_set("checkpoint", 12.5)
    d.close()
    d = IndexDB(tmp_path / "ix", map_size=64 << 20)
    assert d.meta_get("checkpoint") == 12.5
    assert d.meta_get("nope", "dflt") == "dflt"
    assert d.meta_get("schema") == 1
    assert counts(d) == (1, 1, 1, 10)
    assert d.get_record("9.3") == make_record("9.3")
    check_consistent(d)
    d.close()


def test_long_patient_id_key_clamped(db):
    long_id = "X" * 2000
    apply(db, make_record("9.1", patient=long_id, name="N" * 1000))
    assert db.get_patient(long_id).n_instances == 1
    assert db.patients_by_name("NNN") == [db.patients_by_name("N" * 1000)[0]]
    check_consistent(db)


# ---------------------------------------------------------------- property: counts == recount
SOPS = [f"9.{i}" for i in range(8)]
SERIES = [("1.1.1", "1.1"), ("1.1.2", "1.1"), ("1.2.1", "1.2"), ("1.1.1", "1.2"), ("2.1.1", "2.1")]
op = hs.one_of(
    hs.tuples(
        hs.just("apply"),
        hs.sampled_from(SOPS),
        hs.sampled_from(SERIES),
        hs.sampled_from(["P1", "P2", "P3"]),
        hs.sampled_from(["CT", "MR", ""]),
        hs.sampled_from(["1.2.840.1", "1.2.840.2"]),
        hs.sampled_from([None, 1, 2]),
        hs.sampled_from(["20240101", "20230101", ""]),
    ),
    hs.tuples(hs.just("delete"), hs.sampled_from(SOPS)),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=hs.lists(hs.lists(op, min_size=1, max_size=6), min_size=1, max_size=6))
def test_random_sequences_keep_counts_exact(tmp_path_factory, ops):
    db = IndexDB(tmp_path_factory.mktemp("h") / "ix", map_size=64 << 20)
    try:
        for batch in ops:  # several ops per transaction exercises the row cache
            with db.write() as w:
                for o in batch:
                    if o[0] == "delete":
                        db.delete_instance(o[1], w)
                        continue
                    _, sop, (series, study), pid, mod, cls, num, date = o
                    db.apply(
                        w,
                        make_record(
                            sop,
                            series,
                            study,
                            pid,
                            modality=mod,
                            sop_class=cls,
                            number=num,
                            study_date=date,
                        ),
                    )
            check_consistent(db)
    finally:
        db.close()


def test_an_instance_lacking_an_attribute_keeps_the_stored_value(db):
    """An SR saved by a viewer often lacks StudyDescription: the study list must keep it."""
    ct = make_record("1.9.1", study_date="20260101")
    ct.study["StudyDescription"] = "CT CHEST"
    ct.patient["PatientBirthDate"] = "19700101"
    ct.series["BodyPartExamined"] = "CHEST"
    sr = make_record("1.9.2", study_date="20260101")  # same series, no description, no birth date
    later = make_record("1.9.3", study_date="20260102")
    later.study["StudyDescription"] = "CT CHEST W/O"
    with db.write() as w:
        db.apply(w, ct)
        db.apply(w, sr)
    st = db.get_study("1.2.3")
    assert st.attrs["StudyDescription"] == "CT CHEST"
    assert db.get_patient("P1").attrs["PatientBirthDate"] == "19700101"
    assert db.get_series("1.2.3.1").attrs["BodyPartExamined"] == "CHEST"
    with db.write() as w:
        db.apply(w, later)  # a value the new instance carries replaces the stored one
    st = db.get_study("1.2.3")
    assert st.attrs["StudyDescription"] == "CT CHEST W/O"
    assert db.studies_by_date("20260102", "20260102") == ["1.2.3"]
    assert db.studies_by_date("20260101", "20260101") == []
    check_consistent(db)


def test_series_entries_are_the_rows_in_instance_number_order(db):
    with db.write() as w:
        for sop, number in (("1.5.3", 3), ("1.5.1", 1), ("1.5.2", 2), ("1.5.9", None)):
            db.apply(w, make_record(sop, number=number))
    rows = db.series_entries("1.2.3.1")
    assert [e.sop_instance_uid for e in rows] == db.series_instances("1.2.3.1") == [
        "1.5.1", "1.5.2", "1.5.3", "1.5.9"]
    assert rows == [db.get_instance(e.sop_instance_uid) for e in rows]
    assert db.study_instances("1.2.3") == rows
    assert db.series_entries("9.9") == []
