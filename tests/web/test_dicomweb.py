"""STOW-RS and WADO-RS (retrieval as stored, metadata) against a real `hpacs serve`, driven by
dicomweb-client (PyPI) and raw HTTP for the error cases."""

from __future__ import annotations

import functools
import re
import socket
import warnings
from collections import Counter
from io import BytesIO
from pathlib import Path

import pydicom
import pydicom.data
import pytest
import requests
from dicomweb_client import DICOMwebClient
from pydicom.uid import generate_uid

from hpacs.dicom.part10 import read_file_meta
from hpacs.store.hot import HotStore
from tests.conftest import start_server, storage_test_files
from tests.dicom.json_oracle import compare_json, pydicom_reference
from tests.interop.helpers import dataset_bytes, send_files
from tests.interop.test_store_pydicom_files import EXPECTED

pytestmark = pytest.mark.interop

BOUNDARY = "0f3cf5c0-70e0-41ef-baef-c6f9f65ec3e1"
STOW_TYPE = f'multipart/related; type="application/dicom"; boundary="{BOUNDARY}"'
ANY_TS = 'multipart/related; type="application/dicom"; transfer-syntax=*'
CT = Path(pydicom.data.get_testdata_file("CT_small.dcm"))


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("web") / "data")
    yield server
    if server.proc.poll() is None:
        assert server.stop() == 0, server.log()


def base(server) -> str:
    return f"http://127.0.0.1:{server.http_port}/dicom-web"


def client(server) -> DICOMwebClient:
    return DICOMwebClient(url=base(server))


def encode(parts: list[bytes]) -> bytes:
    """The request body as dicomweb-client encodes it."""
    return DICOMwebClient._encode_multipart_message(parts, STOW_TYPE)


def stow(server, parts: list[bytes], study: str | None = None) -> requests.Response:
    url = f"{base(server)}/studies" + (f"/{study}" if study else "")
    return requests.post(url, data=encode(parts), headers={"Content-Type": STOW_TYPE},
                         timeout=60)


def wado_payloads(server, path: str, accept: str = ANY_TS) -> tuple[list[bytes], list[str]]:
    """Part payloads (decoded by dicomweb-client) and each part's transfer-syntax= value."""
    c = client(server)
    response = requests.get(f"{base(server)}{path}", headers={"Accept": accept}, timeout=60)
    assert response.status_code == 200, response.text
    syntaxes = re.findall(rb"\r\nContent-Type: application/dicom; transfer-syntax=([0-9.]+)\r\n",
                          b"\r\n" + response.content)
    return list(c._decode_multipart_message(response, stream=False)), [
        s.decode() for s in syntaxes]


def uids(path: Path) -> tuple[str, str, str]:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


def stored_path(server, path: Path) -> Path:
    return server.data_dir / HotStore.relative_path(*uids(path))


def payload_dataset(part: bytes) -> bytes:
    """The data set bytes of a Part 10 file given as bytes."""
    return bytes(part[read_file_meta(bytes(part)).dataset_offset:])


@functools.cache
def first_copies() -> dict[str, Path]:
    """SOP Instance UID -> first file storing it (pydicom ships a few instances twice)."""
    out: dict[str, Path] = {}
    for path in storage_test_files():
        if EXPECTED[path] == 0:
            out.setdefault(str(read_file_meta(path).sop_instance_uid), path)
    return out


# -- STOW-RS then WADO-RS ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def stowed(srv):
    """Every pydicom storage test file POSTed as-is in one STOW-RS request."""
    files = storage_test_files()
    response = stow(srv, [p.read_bytes() for p in files])
    return files, response


def test_stow_pydicom_files_reports_each_instance(srv, stowed):
    files, response = stowed
    assert response.status_code == 202, response.text  # some stored, some refused
    assert response.headers["Content-Type"] == "application/dicom+json"
    result = pydicom.Dataset.from_json(response.json())
    failed = Counter((str(i.ReferencedSOPInstanceUID), i.FailureReason)
                     for i in result.FailedSOPSequence)
    expected_failed = Counter((str(read_file_meta(p).sop_instance_uid), EXPECTED[p])
                              for p in files if EXPECTED[p] != 0)
    assert failed == expected_failed
    assert {0xC000, 0xA900} <= set(EXPECTED.values())
    referenced = [(str(i.ReferencedSOPClassUID), str(i.ReferencedSOPInstanceUID), i.RetrieveURL)
                  for i in result.ReferencedSOPSequence]
    expected_ok = [p for p in files if EXPECTED[p] == 0]
    assert [r[1] for r in referenced] == [str(read_file_meta(p).sop_instance_uid)
                                          for p in expected_ok]
    for (sop_class, sop, url), path in zip(referenced, expected_ok, strict=True):
        study, series, _ = uids(first_copies()[sop])
        assert sop_class == read_file_meta(path).sop_class_uid
        assert url == f"{base(srv)}/studies/{study}/series/{series}/instances/{sop}"
    # what STOW-RS stored is the data set as sent, byte for byte
    for path in first_copies().values():
        stored = stored_path(srv, path)
        assert dataset_bytes(stored) == dataset_bytes(path), path.name
        assert read_file_meta(stored).transfer_syntax_uid == read_file_meta(
            path).transfer_syntax_uid


def test_wado_instances_byte_exact(srv, stowed):
    for path in first_copies().values():
        study, series, sop = uids(path)
        payloads, syntaxes = wado_payloads(srv, f"/studies/{study}/series/{series}"
                                                f"/instances/{sop}")
        assert len(payloads) == 1
        assert syntaxes == [read_file_meta(path).transfer_syntax_uid]
        assert payload_dataset(payloads[0]) == dataset_bytes(path), path.name


def test_wado_series_and_study_byte_exact(srv, stowed):
    copies = first_copies()
    by_series: dict[tuple[str, str], set[str]] = {}
    for sop, path in copies.items():
        study, series, _ = uids(path)
        by_series.setdefault((study, series), set()).add(sop)
    for (study, series), sops in by_series.items():
        payloads, syntaxes = wado_payloads(srv, f"/studies/{study}/series/{series}")
        assert len(payloads) == len(syntaxes) == len(sops)
        got = {str(read_file_meta(bytes(p)).sop_instance_uid): p for p in payloads}
        assert set(got) == sops
        for sop in sops:
            assert payload_dataset(got[sop]) == dataset_bytes(copies[sop])
    studies = Counter(study for study, _ in by_series)
    study = max(studies, key=lambda s: sum(len(by_series[k]) for k in by_series if k[0] == s))
    n = sum(len(v) for k, v in by_series.items() if k[0] == study)
    payloads, _ = wado_payloads(srv, f"/studies/{study}", accept="*/*")
    assert len(payloads) == n


def test_dicomweb_client_retrieve(srv, stowed):
    c = client(srv)
    study, series, sop = uids(CT)
    original = pydicom.dcmread(CT)
    # CT_small is Explicit VR LE: the client's default Accept (no transfer-syntax) is served
    assert c.retrieve_instance(study, series, sop) == original
    assert c.retrieve_series(study, series) == [original]
    assert original in c.retrieve_study(study)
    mr = Path(pydicom.data.get_testdata_file("MR_small.dcm"))
    assert c.retrieve_instance(*uids(mr), media_types=(("application/dicom", "*"),)) == \
        pydicom.dcmread(mr)


def _pydicom_json(path: Path) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom_reference(pydicom.dcmread(path))


def _instance_uri(study: str, series: str, sop: str) -> str:
    return f"/dicom-web/studies/{study}/series/{series}/instances/{sop}"


def test_instance_metadata_matches_pydicom(srv, stowed):
    c = client(srv)
    for path in first_copies().values():
        study, series, sop = uids(path)
        meta = c.retrieve_instance_metadata(study, series, sop)
        # dicomweb-client sends "Host: 127.0.0.1" (no port): compare BulkDataURI paths only
        assert compare_json(meta, _pydicom_json(path), _instance_uri(study, series, sop)) == [], \
            path.name


def test_series_and_study_metadata(srv, stowed):
    c = client(srv)
    study, series, sop = uids(CT)
    series_meta = c.retrieve_series_metadata(study, series)
    assert [m["00080018"]["Value"][0] for m in series_meta] == [sop]
    assert compare_json(series_meta[0], _pydicom_json(CT), _instance_uri(study, series, sop)) == []
    study_meta = c.retrieve_study_metadata(study)
    assert sop in {m["00080018"]["Value"][0] for m in study_meta}


# -- C-STORE <-> DICOMweb ----------------------------------------------------------------------


def test_cstore_then_wado_and_stow_then_cstore_peer_view(server):
    files = [CT, Path(pydicom.data.get_testdata_file("MR_small.dcm")),
             Path(pydicom.data.get_testdata_file("JPEG2000.dcm"))]
    assert set(send_files(server, files).values()) == {0}
    for path in files:
        study, series, sop = uids(path)
        payloads, syntaxes = wado_payloads(server, f"/studies/{study}/series/{series}"
                                                   f"/instances/{sop}")
        assert payload_dataset(payloads[0]) == dataset_bytes(path)
        assert syntaxes == [read_file_meta(path).transfer_syntax_uid]
    # STOW-RS with dicomweb-client's own encoding, then the stored file holds what it sent
    ds = pydicom.dcmread(CT)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    sent = BytesIO()
    pydicom.dcmwrite(sent, ds)
    result = client(server).store_instances([ds])
    assert str(result.ReferencedSOPSequence[0].ReferencedSOPInstanceUID) == ds.SOPInstanceUID
    stored = server.data_dir / HotStore.relative_path(ds.StudyInstanceUID,
                                                      ds.SeriesInstanceUID, ds.SOPInstanceUID)
    assert dataset_bytes(stored) == payload_dataset(sent.getvalue())


# -- errors ------------------------------------------------------------------------------------


def fresh_ct() -> tuple[pydicom.Dataset, bytes]:
    ds = pydicom.dcmread(CT)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    out = BytesIO()
    pydicom.dcmwrite(out, ds)
    return ds, out.getvalue()


def raw_request(server, head: bytes, body: bytes, *, shut: bool = True) -> int:
    """Send a request (maybe shorter than its Content-Length) and return the status code."""
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=30) as s:
        s.sendall(head + body)
        if shut:
            s.shutdown(socket.SHUT_WR)
        data = b""
        while b"\r\n" not in data:
            more = s.recv(65536)
            if not more:
                break
            data += more
    return int(data.split(b" ", 2)[1]) if data else 0


def not_stored(server, ds: pydicom.Dataset) -> None:
    path = server.data_dir / HotStore.relative_path(ds.StudyInstanceUID, ds.SeriesInstanceUID,
                                                    ds.SOPInstanceUID)
    assert not path.exists()
    url = (f"{base(server)}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
           f"/instances/{ds.SOPInstanceUID}")
    assert requests.get(url, timeout=10).status_code == 404


def test_stow_content_type_and_multipart_errors(srv):
    _, raw = fresh_ct()
    url = f"{base(srv)}/studies"
    r = requests.post(url, data=raw, headers={"Content-Type": "application/dicom"}, timeout=10)
    assert r.status_code == 415 and "error" in r.json()
    r = requests.post(url, data=encode([raw]), timeout=10, headers={
        "Content-Type": f'multipart/related; type="application/dicom+xml"; boundary={BOUNDARY}'})
    assert r.status_code == 415
    r = requests.post(url, data=b"this is not multipart", timeout=10,
                      headers={"Content-Type": STOW_TYPE})
    assert r.status_code == 400 and "error" in r.json()
    r = requests.post(url, data=b"", timeout=10,
                      headers={"Content-Type": 'multipart/related; type="application/dicom"'})
    assert r.status_code == 400


def test_stow_body_cut_mid_part_stores_nothing(srv):
    ds, raw = fresh_ct()
    body = encode([raw])
    cut = body[: len(body) // 2]
    head = (f"POST /dicom-web/studies HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: {STOW_TYPE}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    status = raw_request(srv, head, cut)
    assert status == 0 or status >= 400
    not_stored(srv, ds)
    # the HTTP message complete, but the multipart body ends inside the part (no boundary)
    ds, raw = fresh_ct()
    body = encode([raw])[:-len(f"\r\n--{BOUNDARY}--")]
    r = requests.post(f"{base(srv)}/studies", data=body, headers={"Content-Type": STOW_TYPE},
                      timeout=10)
    assert r.status_code == 400, r.text
    not_stored(srv, ds)
    # cut exactly at an element boundary inside the data set: still not stored
    ds, raw = fresh_ct()
    body = encode([raw[:-len(ds.PixelData) - 12]])[:-len(f"\r\n--{BOUNDARY}--")]
    r = requests.post(f"{base(srv)}/studies", data=body, headers={"Content-Type": STOW_TYPE},
                      timeout=10)
    assert r.status_code == 400
    not_stored(srv, ds)


def test_stow_too_large_and_all_failed(srv):
    head = (f"POST /dicom-web/studies HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: {STOW_TYPE}\r\nContent-Length: {1 << 40}\r\n\r\n").encode()
    assert raw_request(srv, head, b"", shut=False) == 413
    r = stow(srv, [b"garbage" * 40, CT.read_bytes()[:400]])
    assert r.status_code == 409
    reasons = [i.FailureReason for i in pydicom.Dataset.from_json(r.json()).FailedSOPSequence]
    assert reasons == [0xC000, 0xC000]


def test_stow_study_in_path(srv):
    ds, raw = fresh_ct()
    r = stow(srv, [raw], study="1.2.3.4")
    assert r.status_code == 409
    result = pydicom.Dataset.from_json(r.json())
    assert result.FailedSOPSequence[0].FailureReason == 0xA900
    assert result.RetrieveURL == f"{base(srv)}/studies/1.2.3.4"
    not_stored(srv, ds)
    r = stow(srv, [raw], study=ds.StudyInstanceUID)
    assert r.status_code == 200
    assert requests.post(f"{base(srv)}/studies/1.2.x", data=encode([raw]), timeout=10,
                         headers={"Content-Type": STOW_TYPE}).status_code == 400


def test_wado_errors(srv, stowed):
    study, series, sop = uids(CT)
    b = base(srv)
    for path in ("/studies/1.2.3.999", f"/studies/{study}/series/1.2.3.999",
                 f"/studies/{study}/series/{series}/instances/1.2.3.999",
                 f"/studies/1.2.3.999/series/{series}/instances/{sop}",
                 f"/studies/{study}/series/{series}/instances/1.2.3.999/metadata"):
        r = requests.get(b + path, timeout=10)
        assert r.status_code == 404, path
        assert "error" in r.json()
    for path in ("/studies/1.2.abc", f"/studies/{study}/series/x.y",
                 f"/studies/{study}/series/{series}/instances/1..2/metadata"):
        assert requests.get(b + path, timeout=10).status_code == 400, path
    jpeg = Path(pydicom.data.get_testdata_file("JPEG2000.dcm"))
    url = b + "/studies/{}/series/{}/instances/{}".format(*uids(jpeg))
    # pydicom cannot decode this J2K stream, so it cannot be transcoded: 406, as stored works
    for accept in ('multipart/related; type="application/dicom"',  # default: Explicit VR LE
                   'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2',
                   "application/json"):
        r = requests.get(url, headers={"Accept": accept}, timeout=10)
        assert r.status_code == 406, accept
        assert "transfer-syntax=*" in r.json()["error"]
    ts = read_file_meta(jpeg).transfer_syntax_uid
    r = requests.get(url, timeout=10, headers={
        "Accept": f'multipart/related; type="application/dicom"; transfer-syntax={ts}'})
    assert r.status_code == 200
