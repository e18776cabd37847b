"""/compare/{study} and IHE Invoke Image Display against a real `hpacs serve` holding a patient
with a current CT, a CT prior and a more recent MR of another body part."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from hpacs.web.ihe import parse_patient_id
from tests.conftest import start_server
from tests.web.viewer_data import CURRENT, OTHER_PRIOR, PRIOR, load_viewer_studies, patient_id

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ihe")
    server = start_server(tmp / "data")
    try:
        uids = load_viewer_studies(server, tmp / "files", slices=2)
    except BaseException:
        server.stop()
        raise
    yield f"http://127.0.0.1:{server.http_port}", uids, server
    assert server.stop() == 0, server.log()


def redirect(url: str) -> tuple[str, dict[str, list[str]]]:
    r = requests.get(url, allow_redirects=False, timeout=10)
    assert r.status_code == 302, (r.status_code, r.text[:300])
    target = urlsplit(r.headers["Location"])
    return target.path, parse_qs(target.query)


def test_compare_opens_the_study_beside_its_most_relevant_prior(env):
    base, uids, _ = env
    path, query = redirect(f"{base}/compare/{uids[CURRENT]}")
    assert path == "/viewer"
    # the CT chest prior, not the more recent MR head study
    assert query["StudyInstanceUIDs"] == [f"{uids[CURRENT]},{uids[PRIOR]}"]
    assert query["hangingProtocolId"] == ["@ohif/hpCompare"]


def test_compare_without_a_prior_opens_the_study_alone(env):
    base, uids, _ = env
    path, query = redirect(f"{base}/compare/{uids[PRIOR]}")  # the oldest study
    assert path == "/viewer"
    assert query["StudyInstanceUIDs"] == [uids[PRIOR]]
    assert "hangingProtocolId" not in query


def test_compare_errors(env):
    base, _, server = env
    assert requests.get(f"{base}/compare/1.2.3.4", timeout=10).status_code == 404
    assert requests.get(f"{base}/compare/not-a-uid", timeout=10).status_code == 400
    assert '"viewer.link_error"' in server.log()


def test_invoke_study_by_uid_list_and_accession(env):
    base, uids, _ = env
    url = f"{base}/IHEInvokeImageDisplay?requestType=STUDY&studyUID={uids[CURRENT]}"
    assert redirect(url) == ("/viewer", {"StudyInstanceUIDs": [uids[CURRENT]]})
    both = f"{uids[CURRENT]},{uids[PRIOR]}"
    url = f"{base}/IHEInvokeImageDisplay?requestType=STUDY&studyUID={both}"
    assert redirect(url)[1]["StudyInstanceUIDs"] == [both]
    url = (f"{base}/IHEInvokeImageDisplay?requestType=STUDY&studyUID={uids[CURRENT]}"
           f"&studyUID={uids[PRIOR]}&studyUID=1.2.3.999")  # repeated; an unknown one is left out
    assert redirect(url)[1]["StudyInstanceUIDs"] == [both]
    url = f"{base}/IHEInvokeImageDisplay?requestType=STUDY&accessionNumber=ACC0007001"
    assert redirect(url)[1]["StudyInstanceUIDs"] == [uids[PRIOR]]


def test_invoke_patient_opens_the_most_recent_studies(env):
    base, uids, _ = env
    for pid in (patient_id(), f"{patient_id()}^^^"):
        url = f"{base}/IHEInvokeImageDisplay?requestType=PATIENT&patientID={pid}"
        assert redirect(url) == ("/viewer", {"StudyInstanceUIDs": [uids[CURRENT]]})
    url = (f"{base}/IHEInvokeImageDisplay?requestType=PATIENT&patientID={patient_id()}"
           "&mostRecentResults=2")
    assert redirect(url)[1]["StudyInstanceUIDs"] == [f"{uids[CURRENT]},{uids[OTHER_PRIOR]}"]


def test_invoke_errors(env):
    base, _, _ = env
    cases = {
        "": 400,
        "?requestType=SERIES": 400,
        "?requestType=STUDY": 400,
        "?requestType=STUDY&studyUID=1.2.3.999": 404,
        "?requestType=PATIENT": 400,
        "?requestType=PATIENT&patientID=NOBODY": 404,
        f"?requestType=PATIENT&patientID={patient_id()}&mostRecentResults=x": 400,
    }
    for query, status in cases.items():
        r = requests.get(f"{base}/IHEInvokeImageDisplay{query}", timeout=10,
                         allow_redirects=False)
        assert r.status_code == status, query
        assert r.headers["Content-Type"].startswith("text/html")


def test_parse_patient_id():
    assert parse_patient_id("123") == ("123", None)
    assert parse_patient_id("123^^^HOSP") == ("123", "HOSP")
    assert parse_patient_id("123^^^&1.2.3.4&ISO") == ("123", "1.2.3.4")
    assert parse_patient_id("123^^^HOSP&1.2.3&ISO") == ("123", "HOSP")
    assert parse_patient_id("123^^^") == ("123", None)
