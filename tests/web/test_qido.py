"""QIDO-RS against a real `hpacs serve`: dicomweb-client for the searches, pynetdicom C-FIND for
the same queries (same engine, same counts), raw HTTP for OHIF-style parameters and errors."""

from __future__ import annotations

import json
import urllib.request
from urllib.error import HTTPError
from urllib.parse import urlsplit

import pytest
import requests
from dicomweb_client import DICOMwebClient
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as STUDY_ROOT

from tests.conftest import start_server
from tests.factories import uid
from tests.interop.helpers import QUERY_CORPUS, load_query_corpus

pytestmark = pytest.mark.interop

# (patient, study, series, number, modality, name, date)
CORPUS = QUERY_CORPUS
STUDY_1_1 = uid("study", 1, 1)
SERIES_1_1_2 = uid("series", 1, 1, 2)
PN, UI = "00100010", "0020000D"


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    base = tmp_path_factory.mktemp("qido")
    server = start_server(base / "data")
    load_query_corpus(server, base / "files", study_descriptions=True)
    yield server
    assert server.stop() == 0, server.log()
    assert "internal_error" not in server.log()


def url(server) -> str:
    return f"http://127.0.0.1:{server.http_port}/dicom-web"


@pytest.fixture(scope="module")
def dw(srv) -> DICOMwebClient:
    return DICOMwebClient(url=url(srv))


def path_of(u: str) -> str:
    return urlsplit(u).path


def values(results, tag) -> list:
    return [r[tag].get("Value", [None])[0] for r in results]


def cfind_count(srv, level: str, **keys) -> int:
    ae = AE(ae_title="QIDOCMP")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(STUDY_ROOT)
    assoc = ae.associate("127.0.0.1", srv.dicom_port, ae_title=srv.ae_title)
    assert assoc.is_established
    ident = Dataset()
    ident.QueryRetrieveLevel = level
    for k, v in keys.items():
        setattr(ident, k, v)
    n, final = 0, None
    for status, _ in assoc.send_c_find(ident, STUDY_ROOT):
        if status.Status in (0xFF00, 0xFF01):
            n += 1
        else:
            final = status.Status
    assoc.release()
    assert final == 0
    return n


# -- matching, every level, same counts as C-FIND -------------------------------------------------
SEARCHES = [
    # (level, QIDO search_filters, equivalent C-FIND keys)
    ("STUDY", {}, {}),
    ("STUDY", {"PatientID": "PAT00001"}, {"PatientID": "PAT00001"}),
    ("STUDY", {"00100020": "PAT00001"}, {"PatientID": "PAT00001"}),
    ("STUDY", {"PatientName": "doe*"}, {"PatientName": "doe*"}),
    ("STUDY", {PN: "DOE^JOH?"}, {"PatientName": "DOE^JOH?"}),
    ("STUDY", {"PatientName": "müller^jürgen"}, {"PatientName": "müller^jürgen"}),
    ("STUDY", {"StudyDate": "20260101-20260228"}, {"StudyDate": "20260101-20260228"}),
    ("STUDY", {"StudyDate": "-20260215"}, {"StudyDate": "-20260215"}),
    ("STUDY", {"StudyDate": "20260301-"}, {"StudyDate": "20260301-"}),
    ("STUDY", {"StudyDate": "20260215"}, {"StudyDate": "20260215"}),
    ("STUDY", {"ModalitiesInStudy": "MR"}, {"ModalitiesInStudy": "MR"}),
    ("STUDY", {"ModalitiesInStudy": "US,MR"}, {"ModalitiesInStudy": "US\\MR"}),
    ("STUDY", {"StudyInstanceUID": f"{STUDY_1_1},{uid('study', 3, 7)}"},
     {"StudyInstanceUID": f"{STUDY_1_1}\\{uid('study', 3, 7)}"}),
    ("STUDY", {UI: f"{STUDY_1_1}\\{uid('study', 2, 1)}"},
     {"StudyInstanceUID": f"{STUDY_1_1}\\{uid('study', 2, 1)}"}),
    ("STUDY", {"AccessionNumber": "ACC0001*"}, {"AccessionNumber": "ACC0001*"}),
    ("STUDY", {"PatientName": "*"}, {"PatientName": "*"}),
    ("STUDY", {"PatientID": "NOBODY"}, {"PatientID": "NOBODY"}),
    ("SERIES", {}, {}),
    ("SERIES", {"Modality": "CT"}, {"Modality": "CT"}),
    ("SERIES", {"00080060": "CT\\US"}, {"Modality": "CT\\US"}),
    ("SERIES", {"PatientName": "DOE*", "Modality": "MR"},
     {"PatientName": "DOE*", "Modality": "MR"}),
    ("SERIES", {"StudyDate": "20260101-20260131"}, {"StudyDate": "20260101-20260131"}),
    ("IMAGE", {}, {}),
    ("IMAGE", {"Modality": "CT", "PatientID": "PAT00001"},
     {"Modality": "CT", "PatientID": "PAT00001"}),
    ("IMAGE", {"InstanceNumber": "2"}, {"InstanceNumber": "2"}),
    ("IMAGE", {"SeriesInstanceUID": SERIES_1_1_2}, {"SeriesInstanceUID": SERIES_1_1_2}),
]


@pytest.mark.parametrize(("level", "filters", "cfind"), SEARCHES)
def test_search_counts_equal_c_find(srv, dw, level, filters, cfind):
    search = {"STUDY": dw.search_for_studies, "SERIES": dw.search_for_series,
              "IMAGE": dw.search_for_instances}[level]
    results = search(search_filters=filters)
    assert len(results) == cfind_count(srv, level, **cfind)
    unique = {"STUDY": UI, "SERIES": "0020000E", "IMAGE": "00080018"}[level]
    assert len(set(values(results, unique))) == len(results)
    assert all(r["00081190"]["vr"] == "UR" for r in results)


def test_expected_values(dw):
    assert len(dw.search_for_studies(search_filters={"PatientID": "PAT00001"})) == 2
    assert len(dw.search_for_studies(search_filters={"StudyDate": "20260101-20260228"})) == 2
    ct = dw.search_for_series(search_filters={"Modality": "CT", "PatientID": "PAT00001"})
    assert len(ct) == 2
    assert len(dw.search_for_instances(search_filters={"PatientName": "smith*"})) == 1
    assert dw.search_for_studies(search_filters={"PatientID": "NOBODY"}) == []


def test_study_defaults_and_derived(srv, dw):
    [study] = dw.search_for_studies(search_filters={"StudyInstanceUID": STUDY_1_1})
    assert study[UI] == {"vr": "UI", "Value": [STUDY_1_1]}
    assert study["00080061"] == {"vr": "CS", "Value": ["CT", "MR"]}  # ModalitiesInStudy
    assert study["00201206"] == {"vr": "IS", "Value": [2]}  # NumberOfStudyRelatedSeries
    assert study["00201208"] == {"vr": "IS", "Value": [5]}  # NumberOfStudyRelatedInstances
    assert study[PN] == {"vr": "PN", "Value": [{"Alphabetic": "DOE^JOHN"}]}
    assert study["00080020"] == {"vr": "DA", "Value": ["20260215"]}
    assert study["00080056"] == {"vr": "CS", "Value": ["ONLINE"]}
    assert study["00080090"] == {"vr": "PN"}  # ReferringPhysicianName: empty, still returned
    # dicomweb-client sends ``Host`` without the port; RetrieveURL follows the Host header
    assert path_of(study["00081190"]["Value"][0]) == f"/dicom-web/studies/{STUDY_1_1}"
    raw = requests.get(f"{url(srv)}/studies", params={"StudyInstanceUID": STUDY_1_1},
                       timeout=30).json()
    assert raw[0]["00081190"]["Value"] == [f"{url(srv)}/studies/{STUDY_1_1}"]
    assert list(study) == sorted(study)  # tag order
    ds = Dataset.from_json(study)
    assert ds.PatientID == "PAT00001"


def test_non_ascii_name(dw):
    [study] = dw.search_for_studies(search_filters={"PatientName": "MÜLLER*"})
    assert study[PN]["Value"] == [{"Alphabetic": "Müller^Jürgen"}]


def test_series_and_instance_levels(srv, dw):
    series = dw.search_for_series(STUDY_1_1)
    assert sorted(values(series, "00080060")) == ["CT", "MR"]
    by_uid = {s["0020000E"]["Value"][0]: s for s in series}
    mr = by_uid[SERIES_1_1_2]
    assert mr["00201209"] == {"vr": "IS", "Value": [2]}  # NumberOfSeriesRelatedInstances
    assert mr["00200011"] == {"vr": "IS", "Value": [2]}  # SeriesNumber
    assert path_of(mr["00081190"]["Value"][0]) == (
        f"/dicom-web/studies/{STUDY_1_1}/series/{SERIES_1_1_2}")
    assert "00080061" not in mr  # study attributes only for /series (all series)
    all_series = dw.search_for_series(search_filters={"StudyInstanceUID": STUDY_1_1})
    assert "00080061" in all_series[0] and len(all_series) == 2

    instances = dw.search_for_instances(STUDY_1_1, SERIES_1_1_2)
    assert values(instances, "00200013") == [1, 2]  # InstanceNumber order
    inst = instances[0]
    assert inst["00280010"] == {"vr": "US", "Value": [8]}  # Rows
    assert inst["00080016"]["Value"] == ["1.2.840.10008.5.1.4.1.1.2"]
    sop = inst["00080018"]["Value"][0]
    assert path_of(inst["00081190"]["Value"][0]) == (
        f"/dicom-web/studies/{STUDY_1_1}/series/{SERIES_1_1_2}/instances/{sop}")
    assert len(dw.search_for_instances(STUDY_1_1)) == 5
    assert "00080060" in dw.search_for_instances(STUDY_1_1)[0]  # series attributes too
    assert dw.search_for_series(uid("study", 9, 9)) == []


def test_includefield_keywords_tags_all(dw):
    [study] = dw.search_for_studies(search_filters={"StudyInstanceUID": STUDY_1_1},
                                    fields=["StudyDescription", "00080080", "SOPClassesInStudy"])
    assert study["00081030"] == {"vr": "LO", "Value": ["STUDY 1.1"]}
    assert study["00080080"] == {"vr": "LO"}  # InstitutionName: not in the data
    assert study["00080062"]["Value"] == ["1.2.840.10008.5.1.4.1.1.2"]
    [full] = dw.search_for_studies(search_filters={"StudyInstanceUID": STUDY_1_1},
                                   fields=["all"])
    assert {"00081030", "00100030", "00100040", "00080062"} <= set(full)
    [inst] = dw.search_for_instances(STUDY_1_1, SERIES_1_1_2, search_filters={
        "InstanceNumber": "1"}, fields=["PhotometricInterpretation", "00280002"])
    assert inst["00280004"]["Value"] == ["MONOCHROME2"]
    assert inst["00280002"] == {"vr": "US", "Value": [1]}


def test_ohif_style_comma_includefield_raw(srv):
    query = ("includefield=00081030%2C00080060%2CStudyDescription&includefield=00100030"
             "&PatientID=PAT00001&limit=101&offset=0&fuzzymatching=false")
    req = urllib.request.Request(f"{url(srv)}/studies?{query}",
                                 headers={"Accept": "application/dicom+json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("application/dicom+json")
        body = json.loads(resp.read())
    assert len(body) == 2
    for study in body:
        assert study["00081030"]["vr"] == "LO" and study["00100030"]["vr"] == "DA"
        assert study["00080060"] == {"vr": "CS"}


def test_fuzzymatching_person_names(srv, dw):
    assert dw.search_for_studies(search_filters={"PatientName": "jo"}) == []
    fuzzy = dw.search_for_studies(search_filters={"PatientName": "jo"}, fuzzymatching=True)
    assert set(values(fuzzy, "00100020")) == {"PAT00001"}
    doe = dw.search_for_studies(search_filters={"PatientName": "doe"}, fuzzymatching=True)
    assert values(doe, "00100020").count("PAT00001") == 2
    for name in values(doe, PN):  # pydicom's test files hold a few more Does
        parts = name["Alphabetic"].lower().replace("^", " ").split()
        assert any(p.startswith("doe") for p in parts), name
    assert len(doe) == cfind_count(srv, "STUDY", PatientName="doe*") < len(
        dw.search_for_studies())
    assert values(dw.search_for_studies(search_filters={"PatientName": "jür"},
                                        fuzzymatching=True), "00100020") == ["PAT00002"]
    assert dw.search_for_studies(search_filters={"PatientName": "ohn"}, fuzzymatching=True) == []


def test_paging_concatenates_to_full_result(dw):
    for search in (dw.search_for_studies, dw.search_for_series, dw.search_for_instances):
        full = search()
        assert len(full) > 5
        pages, offset = [], 0
        while page := search(limit=3, offset=offset):
            assert len(page) <= 3
            pages += page
            offset += 3
        assert pages == full
        assert search(offset=len(full)) == []
        assert search(limit=2, offset=len(full) - 1) == full[-1:]


def test_no_match_is_204(srv):
    r = requests.get(f"{url(srv)}/studies", params={"PatientID": "NOBODY"}, timeout=30)
    assert r.status_code == 204 and r.content == b""


@pytest.mark.parametrize("query", [
    {"NoSuchKeyword": "x"}, {"limit": "-1"}, {"limit": "abc"}, {"limit": "0"},
    {"offset": "-3"}, {"offset": "1.5"}, {"StudyDate": "2026-13-01-x"}, {"StudyDate": "2026"},
    {"StudyInstanceUID": "1.2.abc"}, {"includefield": "Bogus"}, {"fuzzymatching": "maybe"},
    {"00081032.00080100": "X"}, {"ReferencedSeriesSequence": "1"},
    {"StudyDate": "20260301-20260101"},
])
def test_bad_requests_are_400_json(srv, query):
    r = requests.get(f"{url(srv)}/studies", params=query, timeout=30)
    assert r.status_code == 400, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.json()["error"]


def test_bad_path_uid_and_accept(srv):
    assert requests.get(f"{url(srv)}/studies/1.x/series", timeout=30).status_code == 400
    r = requests.get(f"{url(srv)}/studies", headers={"Accept": "application/dicom+xml"},
                     timeout=30)
    assert r.status_code == 406


def test_unsupported_matching_key_warns(srv):
    r = requests.get(f"{url(srv)}/studies", params={"SOPInstanceUID": "1.2.3"}, timeout=30)
    assert r.status_code == 200  # a lower-level key is not used for matching
    assert "not supported for matching: 00080018" in r.headers["Warning"]
    assert len(r.json()) == cfind_count(srv, "STUDY")


def test_truncated_at_max_matches_warns(tmp_path):
    from tests.interop.test_find import _prefilled_server

    server = _prefilled_server(tmp_path, 4, 5, max_matches="7")
    try:
        base = url(server)
        r = requests.get(f"{base}/instances", timeout=30)
        assert r.status_code == 200 and len(r.json()) == 7
        assert "additional results" in r.headers["Warning"]
        r = requests.get(f"{base}/instances", params={"offset": "14"}, timeout=30)
        assert len(r.json()) == 6 and "Warning" not in r.headers
        r = requests.get(f"{base}/instances", params={"limit": "5"}, timeout=30)
        assert len(r.json()) == 5 and "Warning" not in r.headers
        r = requests.get(f"{base}/series", timeout=30)
        assert len(r.json()) == 4 and "Warning" not in r.headers
        try:
            urllib.request.urlopen(f"{base}/instances?limit=x", timeout=30)
        except HTTPError as exc:
            assert exc.code == 400
    finally:
        assert server.stop() == 0, server.log()
        assert "internal_error" not in server.log()


def test_head_like_get_without_body(srv):
    r = requests.head(f"{url(srv)}/studies", params={"PatientID": "PAT00001"}, timeout=30)
    assert r.status_code == 200 and r.content == b""
    assert r.headers["Content-Type"].startswith("application/dicom+json")
