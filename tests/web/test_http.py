"""Series metadata served from the ingest-time cache (the instance files are not read), and the
HTTP concerns around it: ETag/304, zstd or gzip when asked, CORS, ``server.public_url``,
``Server-Timing``."""

from __future__ import annotations

import gzip
import re
import time

import pytest
import requests
import zstandard

from hpacs.store.hot import HotStore
from tests.conftest import start_server
from tests.dicom.json_oracle import compare_json, pydicom_reference
from tests.factories import make_ct, write
from tests.interop.helpers import send_files

pytestmark = pytest.mark.interop

PUBLIC = "https://pacs.example.org:9443"
ORIGIN = "https://viewer.example.org"
N = 12


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("http")
    server = start_server(tmp / "data", env={"HPACS_SERVER__PUBLIC_URL": PUBLIC,
                                             "HPACS_SERVER__CORS_ORIGINS": ORIGIN})
    datasets = [make_ct(patient=7, number=n, size=64) for n in range(1, N + 1)]
    files = [write(ds, tmp / "in") for ds in datasets]
    assert set(send_files(server, files).values()) == {0}
    yield server, datasets
    if server.proc.poll() is None:
        assert server.stop() == 0, server.log()


def _url(server, path: str) -> str:
    return f"http://127.0.0.1:{server.http_port}{path}"


def _warmed(server) -> float:
    text = requests.get(_url(server, "/metrics"), timeout=10).text
    return float(re.search(r"^hpacs_metadata_warmed (\S+)$", text, re.M).group(1))


def _series_path(ds) -> str:
    return f"/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/metadata"


def test_series_metadata_comes_from_the_cache_not_the_files(loaded):
    server, datasets = loaded
    deadline = time.monotonic() + 60
    while _warmed(server) < N:
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.1)
    # overwrite every stored file with zeros (same size): only the cache can still answer
    for ds in datasets:
        path = server.data_dir / HotStore.relative_path(
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
        path.write_bytes(b"\0" * path.stat().st_size)
    response = requests.get(_url(server, _series_path(datasets[0])), timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/dicom+json"
    body = response.json()
    assert [m["00200013"]["Value"][0] for m in body] == list(range(1, N + 1))  # series order
    for meta, ds in zip(body, datasets, strict=True):
        uri = (f"{PUBLIC}/dicom-web/studies/{ds.StudyInstanceUID}/series/"
               f"{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}")
        assert meta["7FE00010"] == {"vr": "OW", "BulkDataURI": f"{uri}/bulkdata/7FE00010"}
        assert compare_json(meta, pydicom_reference(ds), uri) == []


def test_metadata_etag_and_304(loaded):
    server, datasets = loaded
    url = _url(server, _series_path(datasets[0]))
    first = requests.get(url, timeout=30)
    tag = first.headers["ETag"]
    assert first.headers["Cache-Control"] == "no-cache"
    again = requests.get(url, headers={"If-None-Match": tag}, timeout=30)
    assert again.status_code == 304 and again.content == b""


def test_json_is_compressed_only_when_asked(loaded):
    server, datasets = loaded
    url = _url(server, _series_path(datasets[0]))
    plain = requests.get(url, headers={"Accept-Encoding": "identity"}, timeout=30)
    assert "Content-Encoding" not in plain.headers
    raw = requests.get(url, headers={"Accept-Encoding": "gzip"}, timeout=30, stream=True)
    assert raw.headers["Content-Encoding"] == "gzip"
    assert "Accept-Encoding" in raw.headers["Vary"]
    body = raw.raw.read()
    assert len(body) < len(plain.content) / 3
    assert gzip.decompress(body) == plain.content
    qido = requests.get(_url(server, "/dicom-web/studies?PatientID=PAT00007&includefield=all"),
                        headers={"Accept-Encoding": "gzip"}, timeout=30)
    assert qido.status_code == 200 and qido.json()[0]["00100020"]["Value"] == ["PAT00007"]


def test_json_is_zstd_when_the_client_accepts_it(loaded):
    server, datasets = loaded
    url = _url(server, _series_path(datasets[0]))
    plain = requests.get(url, headers={"Accept-Encoding": "identity"}, timeout=30)
    for accept in ("gzip, deflate, br, zstd", "zstd", "ZSTD;q=0.5, gzip"):
        raw = requests.get(url, headers={"Accept-Encoding": accept}, timeout=30, stream=True)
        assert raw.headers["Content-Encoding"] == "zstd", accept
        assert "Accept-Encoding" in raw.headers["Vary"]
        body = raw.raw.read()
        assert len(body) < len(plain.content) / 3
        assert zstandard.ZstdDecompressor().decompressobj().decompress(body) == plain.content
    refused = requests.get(url, headers={"Accept-Encoding": "zstd;q=0, gzip"}, timeout=30,
                           stream=True)
    assert refused.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(refused.raw.read()) == plain.content


def test_server_timing_names_the_servers_own_time(loaded):
    server, datasets = loaded
    for path in (_series_path(datasets[0]), "/dicom-web/studies?PatientID=PAT00007",
                 "/healthz"):
        r = requests.get(_url(server, path), timeout=30)
        assert r.status_code == 200
        m = re.fullmatch(r"app;dur=([0-9.]+)", r.headers["Server-Timing"])
        assert m is not None and 0 < float(m.group(1)) < 30_000, r.headers["Server-Timing"]


def test_cors_preflight_and_response_headers(loaded):
    server, datasets = loaded
    url = _url(server, _series_path(datasets[0]))
    pre = requests.options(url, headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "accept, authorization"}, timeout=10)
    assert pre.status_code == 204
    assert pre.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "GET" in pre.headers["Access-Control-Allow-Methods"]
    assert pre.headers["Access-Control-Allow-Headers"] == "accept, authorization"
    got = requests.get(url, headers={"Origin": ORIGIN}, timeout=30)
    assert got.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "ETag" in got.headers["Access-Control-Expose-Headers"]
    missing = requests.get(_url(server, "/dicom-web/studies/1.2.3/metadata"),
                           headers={"Origin": ORIGIN}, timeout=10)
    assert missing.status_code == 404  # errors carry the header too: the page can read them
    assert missing.headers["Access-Control-Allow-Origin"] == ORIGIN
    other = requests.get(url, headers={"Origin": "https://evil.example"}, timeout=30)
    assert "Access-Control-Allow-Origin" not in other.headers
    denied = requests.options(url, headers={"Origin": "https://evil.example",
                                            "Access-Control-Request-Method": "GET"}, timeout=10)
    assert "Access-Control-Allow-Origin" not in denied.headers


def test_metadata_of_an_instance_not_yet_warmed_is_computed(tmp_path):
    server = start_server(tmp_path / "data", env={"HPACS_STORE__METADATA_WORKERS": "0"})
    try:
        ds = make_ct(patient=8, size=32)
        assert set(send_files(server, [write(ds, tmp_path / "in")]).values()) == {0}
        response = requests.get(_url(server, _series_path(ds)), timeout=30)
        assert response.status_code == 200
        (meta,) = response.json()
        assert meta["00080018"]["Value"] == [ds.SOPInstanceUID]
        assert _warmed(server) == 0
        assert "metadata_computed" in server.log()
    finally:
        assert server.stop() == 0




def test_head_answers_headers_without_a_body(loaded):
    server, datasets = loaded
    ds = datasets[0]
    series = f"/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    got = requests.get(_url(server, series), headers={"Accept": accept}, timeout=30)
    head = requests.head(_url(server, series), headers={"Accept": accept}, timeout=30)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["Content-Length"] == got.headers["Content-Length"] == str(len(got.content))
    assert head.headers["Content-Type"].startswith('multipart/related; type="application/dicom"')
    for path in (f"{series}/metadata", f"/dicom-web/studies?PatientID={ds.PatientID}"):
        head = requests.head(_url(server, path), timeout=30)
        assert head.status_code == 200 and head.content == b""
        assert head.headers["Content-Type"] == "application/dicom+json"
    # the connection stays usable after a HEAD (no stray body bytes on it)
    with requests.Session() as s:
        assert s.head(_url(server, series), headers={"Accept": accept}, timeout=30).ok
        again = s.get(_url(server, f"{series}/metadata"), timeout=30)
        assert again.status_code == 200 and len(again.json()) == N
