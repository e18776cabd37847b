"""C-FIND SCP against real peers: dcmtk findscu and pynetdicom, a real `hpacs serve` process."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import (
    ModalityWorklistInformationFind,
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
)

from hpacs.index.db import IndexDB
from tests.conftest import pydicom_test_dir, start_server
from tests.factories import uid
from tests.index.index_helpers import make_record
from tests.interop.helpers import QUERY_CORPUS, load_query_corpus

FINDSCU = "/usr/bin/findscu"  # not the venv's pynetdicom script of the same name
PATIENT_ROOT = PatientRootQueryRetrieveInformationModelFind
STUDY_ROOT = StudyRootQueryRetrieveInformationModelFind

# synthetic corpus: (patient, study, series, number, modality, name, date)
CORPUS = QUERY_CORPUS


def study_uid(p, s):
    return uid("study", p, s)


def series_uid(p, s, se):
    return uid("series", p, s, se)


@pytest.fixture(scope="module")
def qr(tmp_path_factory):
    base = tmp_path_factory.mktemp("find")
    srv = start_server(base / "data")
    load_query_corpus(srv, base / "files")
    yield srv
    assert srv.stop() == 0, srv.log()
    assert "internal_error" not in srv.log()


def cfind(srv, model, identifier: Dataset, *, assoc=None):
    """(identifiers of pending responses, final status Dataset) through pynetdicom."""
    own = assoc is None
    if own:
        ae = AE(ae_title="PYFIND")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        ae.add_requested_context(model)
        assoc = ae.associate("127.0.0.1", srv.dicom_port, ae_title=srv.ae_title)
        assert assoc.is_established
    results, final = [], None
    for status, ident in assoc.send_c_find(identifier, model):
        assert status is not None, "no response"
        if status.Status in (0xFF00, 0xFF01):
            results.append(ident)
        else:
            final = status
    if own:
        assoc.release()
    return results, final


def q(level: str, **keys) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for k, v in keys.items():
        setattr(ds, k, v)
    return ds


def findscu(srv, tmp_path: Path, model: str, *keys: str):
    """(response data sets, final status text) through dcmtk findscu -X."""
    out = tmp_path / f"out{time.monotonic_ns()}"
    out.mkdir()
    args = [FINDSCU, "-v", model, "-aec", srv.ae_title, "-X", "-od", str(out),
            "127.0.0.1", str(srv.dicom_port)]
    for k in keys:
        args += ["-k", k]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60)
    log = proc.stdout + proc.stderr
    m = re.search(r"Received Final Find Response \(([^)]*)\)", log)
    assert m, log
    return [pydicom.dcmread(p) for p in sorted(out.glob("rsp*.dcm"))], m.group(1)


# ------------------------------------------------------------------------------ levels/models
def test_findscu_study_root_non_ascii_case_insensitive_name(qr, tmp_path):
    rsps, final = findscu(qr, tmp_path, "-S", "QueryRetrieveLevel=STUDY",
                          "SpecificCharacterSet=ISO_IR 192", "PatientName=müller*",
                          "StudyInstanceUID",
                          "NumberOfStudyRelatedInstances", "NumberOfStudyRelatedSeries",
                          "ModalitiesInStudy", "StudyDate", "PatientID")
    assert final == "Success"
    assert len(rsps) == 1
    r = rsps[0]
    assert r.SpecificCharacterSet == "ISO_IR 192"
    assert str(r.PatientName) == "Müller^Jürgen"
    assert r.StudyInstanceUID == study_uid(2, 1)
    assert (r.NumberOfStudyRelatedInstances, r.NumberOfStudyRelatedSeries) == (2, 1)
    assert r.ModalitiesInStudy == "CT" and r.StudyDate == "20260110" and r.PatientID == "PAT00002"


def test_findscu_patient_root_patient_level_counts(qr, tmp_path):
    rsps, final = findscu(qr, tmp_path, "-P", "QueryRetrieveLevel=PATIENT", "PatientID=PAT00001",
                          "PatientName", "NumberOfPatientRelatedStudies",
                          "NumberOfPatientRelatedSeries", "NumberOfPatientRelatedInstances")
    assert final == "Success"
    (r,) = rsps
    assert str(r.PatientName) == "DOE^JOHN"
    assert (r.NumberOfPatientRelatedStudies, r.NumberOfPatientRelatedSeries,
            r.NumberOfPatientRelatedInstances) == (2, 3, 6)
    assert "SpecificCharacterSet" not in r  # ASCII only


def test_findscu_pydicom_test_file_by_name(qr, tmp_path):
    ct = pydicom.dcmread(pydicom_test_dir() / "CT_small.dcm")
    rsps, final = findscu(qr, tmp_path, "-S", "QueryRetrieveLevel=STUDY",
                          f"PatientName={str(ct.PatientName).lower()[:6]}*", "StudyInstanceUID")
    assert final == "Success"
    assert ct.StudyInstanceUID in {r.StudyInstanceUID for r in rsps}


def test_patient_root_every_level_hierarchical(qr):
    studies, final = cfind(qr, PATIENT_ROOT, q("STUDY", PatientID="PAT00001",
                                               StudyInstanceUID="", StudyDate=""))
    assert final.Status == 0
    assert sorted(r.StudyInstanceUID for r in studies) == sorted([study_uid(1, 1),
                                                                  study_uid(1, 2)])
    series, _ = cfind(qr, PATIENT_ROOT, q("SERIES", PatientID="PAT00001",
                                          StudyInstanceUID=study_uid(1, 1), SeriesInstanceUID="",
                                          Modality="", NumberOfSeriesRelatedInstances=""))
    got = {r.SeriesInstanceUID: (r.Modality, r.NumberOfSeriesRelatedInstances) for r in series}
    assert got == {series_uid(1, 1, 1): ("CT", 3), series_uid(1, 1, 2): ("MR", 2)}
    images, _ = cfind(qr, PATIENT_ROOT, q("IMAGE", PatientID="PAT00001",
                                          StudyInstanceUID=study_uid(1, 1),
                                          SeriesInstanceUID=series_uid(1, 1, 1), SOPInstanceUID="",
                                          InstanceNumber="", SOPClassUID=""))
    assert [r.InstanceNumber for r in images] == [1, 2, 3]
    assert [r.SOPInstanceUID for r in images] == [uid("inst", 1, 1, 1, n) for n in (1, 2, 3)]
    assert all(r.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2" for r in images)
    # a higher-level key that contradicts the lower one restricts to nothing
    none, final = cfind(qr, PATIENT_ROOT, q("SERIES", PatientID="PAT00002",
                                            StudyInstanceUID=study_uid(1, 1),
                                            SeriesInstanceUID=""))
    assert none == [] and final.Status == 0


def test_study_root_series_and_image_levels(qr):
    series, final = cfind(qr, STUDY_ROOT, q("SERIES", StudyInstanceUID=study_uid(1, 1),
                                            Modality="MR", SeriesInstanceUID=""))
    assert final.Status == 0 and [r.SeriesInstanceUID for r in series] == [series_uid(1, 1, 2)]
    images, _ = cfind(qr, STUDY_ROOT, q("IMAGE", SeriesInstanceUID=series_uid(1, 1, 2),
                                        SOPInstanceUID=""))
    assert len(images) == 2
    assert all(r.StudyInstanceUID == study_uid(1, 1) for r in images)  # unique keys come back
    studies, _ = cfind(qr, STUDY_ROOT, q("STUDY", ModalitiesInStudy="MR", PatientID="PAT*",
                                         StudyInstanceUID=""))
    assert [r.ModalitiesInStudy for r in studies] == [["CT", "MR"]]


# ------------------------------------------------------------------------------ matching rules
@pytest.mark.parametrize(("dates", "expected"), [
    ("20260201-20260331", [(1, 1), (1, 2)]),          # closed
    ("-20260215", [(1, 1), (2, 1)]),                  # open start
    ("20260301-", [(1, 2), (3, 7)]),                  # open end
    ("20261231", [(3, 7)]),                           # single value
    ("20300101-", []),                                # empty result
])  # fmt: skip
def test_study_date_ranges(qr, dates, expected):
    studies, final = cfind(qr, STUDY_ROOT, q("STUDY", StudyDate=dates, PatientID="PAT*",
                                             StudyInstanceUID=""))
    assert final.Status == 0
    assert sorted(r.StudyInstanceUID for r in studies) == sorted(study_uid(*e) for e in expected)


def test_uid_list_wildcards_and_universal(qr):
    wanted = [study_uid(1, 2), study_uid(3, 7), "1.2.3.4.5.6.7.8.9"]
    studies, _ = cfind(qr, STUDY_ROOT, q("STUDY", StudyInstanceUID="\\".join(wanted)))
    assert sorted(r.StudyInstanceUID for r in studies) == sorted(wanted[:2])
    by_name, _ = cfind(qr, PATIENT_ROOT, q("PATIENT", PatientName="SM?TH^*", PatientID=""))
    assert [r.PatientID for r in by_name] == ["PAT00003"]
    exact, _ = cfind(qr, PATIENT_ROOT, q("PATIENT", PatientName="Smith^Anne", PatientID=""))
    assert [r.PatientID for r in exact] == ["PAT00003"]
    everyone, _ = cfind(qr, PATIENT_ROOT, q("PATIENT", PatientID="*"))
    assert {"PAT00001", "PAT00002", "PAT00003"} <= {r.PatientID for r in everyone}
    accession, _ = cfind(qr, STUDY_ROOT, q("STUDY", AccessionNumber="ACC0001*",
                                           StudyInstanceUID=""))
    assert len(accession) == 2


def test_unheld_keys_come_back_empty_and_sequences_empty(qr):
    studies, final = cfind(qr, STUDY_ROOT, q("STUDY", StudyInstanceUID=study_uid(3, 7),
                                             PatientComments="", ReferencedStudySequence=[],
                                             RetrieveAETitle="", InstanceAvailability=""))
    assert final.Status == 0
    (r,) = studies
    assert r.PatientComments == "" and len(r.ReferencedStudySequence) == 0
    assert r.RetrieveAETitle == qr.ae_title and r.InstanceAvailability == "ONLINE"


def test_matching_on_an_unheld_key_is_pending_warning(qr):
    ae = AE(ae_title="PYFIND")
    ae.add_requested_context(STUDY_ROOT)
    assoc = ae.associate("127.0.0.1", qr.dicom_port, ae_title=qr.ae_title)
    statuses = [s.Status for s, _ in assoc.send_c_find(
        q("STUDY", StudyInstanceUID=study_uid(3, 7), PatientComments="x*"), STUDY_ROOT)]
    # several C-FINDs on one association run one after the other
    again = [s.Status for s, _ in assoc.send_c_find(
        q("STUDY", StudyInstanceUID=study_uid(3, 7)), STUDY_ROOT)]
    assoc.release()
    assert statuses == [0xFF01, 0x0000]
    assert again == [0xFF00, 0x0000]


# ------------------------------------------------------------------------------ bad queries
def _no_level() -> Dataset:
    ds = Dataset()  # (an empty one would make pynetdicom send no data set PDV at all)
    ds.PatientID = ""
    return ds


@pytest.mark.parametrize(("model", "ident", "code"), [
    (STUDY_ROOT, _no_level(), 0xA900),                                # no level
    (STUDY_ROOT, q("PATIENT", PatientID=""), 0xA900),                 # not in Study Root
    (PATIENT_ROOT, q("FRAME", PatientID=""), 0xA900),                 # unknown level
    (STUDY_ROOT, q("STUDY", StudyDate="2026-01-01"), 0xC000),         # malformed range
    (STUDY_ROOT, q("STUDY", StudyDate="20260301-20260101"), 0xC000),  # reversed range
    (STUDY_ROOT, q("STUDY", StudyTime="25AB"), 0xC000),               # malformed time
])  # fmt: skip
def test_bad_queries_fail_with_status_and_comment(qr, model, ident, code):
    results, final = cfind(qr, model, ident)
    assert results == []
    assert final.Status == code
    assert final.ErrorComment


def test_findscu_bad_level(qr, tmp_path):
    rsps, final = findscu(qr, tmp_path, "-S", "QueryRetrieveLevel=PATIENT", "PatientID")
    assert rsps == [] and "DoesNotMatchSOPClass" in final


def test_unsupported_model_is_refused_at_negotiation(qr):
    ae = AE(ae_title="PYFIND")
    ae.add_requested_context(ModalityWorklistInformationFind)
    ae.add_requested_context(STUDY_ROOT)
    assoc = ae.associate("127.0.0.1", qr.dicom_port, ae_title=qr.ae_title)
    accepted = {cx.abstract_syntax for cx in assoc.accepted_contexts}
    assoc.release()
    assert accepted == {STUDY_ROOT}


# ------------------------------------------------------------------------------ cancel, limits
def _prefilled_server(base: Path, n_series: int, per_series: int, **env: str):
    data = base / "data"
    (data / "index").mkdir(parents=True)
    db = IndexDB(data / "index", map_size=1 << 30)
    with db.write() as w:
        for se in range(n_series):
            for i in range(per_series):
                db.apply(w, make_record(f"1.9.{se}.{i}", f"1.8.{se}", f"1.7.{se % 10}",
                                        f"BULK{se % 10}", number=i))
    db.close()
    return start_server(data, env={f"HPACS_QUERY__{k.upper()}": v for k, v in env.items()})


def test_cancel_mid_query(tmp_path):
    # 40,000 instances: ~0.7 s of streaming, so the cancel lands mid-query even when a loaded
    # machine delays pynetdicom's first pending response (10,000 finished first once under load)
    srv = _prefilled_server(tmp_path, 200, 200)
    try:
        ae = AE(ae_title="PYFIND")
        ae.dimse_timeout = 30
        ae.add_requested_context(STUDY_ROOT)
        assoc = ae.associate("127.0.0.1", srv.dicom_port, ae_title=srv.ae_title)
        ctx = assoc.accepted_contexts[0].context_id
        pending, finals = 0, []
        msg_id = 7
        for status, _ in assoc.send_c_find(q("IMAGE", SOPInstanceUID=""), STUDY_ROOT,
                                           msg_id=msg_id):
            if status.Status == 0xFF00:
                pending += 1
                if pending == 1:
                    assoc.send_c_cancel(msg_id, ctx)
            else:
                finals.append(status.Status)
        # the association still works after a cancel
        after = [s.Status for s, _ in assoc.send_c_find(
            q("STUDY", StudyInstanceUID="1.7.3"), STUDY_ROOT)]
        assoc.release()
        assert finals == [0xFE00]
        assert 1 <= pending < 40_000
        assert after == [0xFF00, 0x0000]
    finally:
        assert srv.stop() == 0, srv.log()
        assert "internal_error" not in srv.log()


def test_max_matches_ends_with_out_of_resources(tmp_path):
    srv = _prefilled_server(tmp_path, 4, 5, max_matches="12")
    try:
        results, final = cfind(srv, STUDY_ROOT, q("IMAGE", SOPInstanceUID=""))
        assert len(results) == 12
        assert final.Status == 0xA700 and "narrow the query" in final.ErrorComment
        ok, final = cfind(srv, STUDY_ROOT, q("SERIES", SeriesInstanceUID=""))
        assert len(ok) == 4 and final.Status == 0
    finally:
        assert srv.stop() == 0, srv.log()
        assert "internal_error" not in srv.log()
