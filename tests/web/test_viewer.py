"""OHIF served by a real `hpacs serve`: routes, the generated app config, caching and
compression headers, ranges, and what happens when the viewer is absent or disabled."""

from __future__ import annotations

import gzip
import json
import re

import brotli
import pytest
import requests

from hpacs.config import ViewerConfig
from hpacs.web.viewer import (
    IMMUTABLE,
    OHIF_VERSION,
    REVALIDATE,
    app_config,
    app_config_js,
    default_dist_dir,
    install_current,
    is_hashed,
)
from tests.conftest import start_server

DIST = default_dist_dir()


def require_viewer() -> None:
    if not install_current(DIST):
        pytest.fail(f"OHIF {OHIF_VERSION} is not installed in {DIST}: run `make install`")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    require_viewer()
    server = start_server(tmp_path_factory.mktemp("viewer") / "data")
    yield f"http://127.0.0.1:{server.http_port}"
    assert server.stop() == 0, server.log()
    assert "internal_error" not in server.log()


def get(url: str, **headers: str) -> requests.Response:
    # requests decodes gzip itself; ask for raw bytes to see what the server sent
    r = requests.get(url, headers={"Accept-Encoding": "identity", **headers}, stream=True,
                     timeout=30)
    r.raw.decode_content = False
    r._content = r.raw.read()
    return r


def asset(pattern: str) -> str:
    return next(p.name for p in DIST.iterdir() if re.fullmatch(pattern, p.name))


def test_root_is_ohif_index_and_app_routes_fall_back_to_it(base):
    index = (DIST / "index.html").read_bytes()
    for path in ("/", "/viewer", "/viewer/dicomweb", "/local", "/viewer?StudyInstanceUIDs=1.2.3"):
        r = get(base + path)
        assert r.status_code == 200, path
        assert r.content == index, path
        assert r.headers["Cache-Control"] == REVALIDATE
        assert r.headers["Content-Type"].startswith("text/html")
    assert b"/app-config.js" in index and b"app.bundle." in index


def test_hashed_assets_are_immutable_and_precompressed(base):
    name = asset(r"app\.bundle\.[0-9a-f]{16,}\.js")
    raw = (DIST / name).read_bytes()
    plain = get(f"{base}/{name}")
    assert plain.status_code == 200
    assert plain.headers["Cache-Control"] == IMMUTABLE
    assert plain.headers["Content-Type"].startswith("text/javascript")
    assert "Content-Encoding" not in plain.headers
    assert plain.headers["Vary"] == "Accept-Encoding"
    assert plain.content == raw
    sizes = {}
    for accept, coding, decode in (("gzip, deflate, br, zstd", "br", brotli.decompress),
                                   ("gzip, deflate", "gzip", gzip.decompress),
                                   ("br;q=0, gzip", "gzip", gzip.decompress)):
        packed = get(f"{base}/{name}", **{"Accept-Encoding": accept})
        assert packed.headers["Content-Encoding"] == coding, accept
        assert packed.headers["Cache-Control"] == IMMUTABLE
        assert packed.headers["Vary"] == "Accept-Encoding"
        assert decode(packed.content) == raw
        assert len(packed.content) < len(raw) / 3
        sizes[coding] = len(packed.content)
    assert sizes["br"] < sizes["gzip"]


def test_wasm_type_and_byte_ranges(base):
    name = asset(r"[0-9a-f]{16,}\.wasm")
    raw = (DIST / name).read_bytes()
    r = get(f"{base}/{name}", Range="bytes=100-199")
    assert r.status_code == 206
    assert r.headers["Content-Type"] == "application/wasm"
    assert r.headers["Content-Range"] == f"bytes 100-199/{len(raw)}"
    assert r.content == raw[100:200]
    assert get(f"{base}/{name}").headers["Cache-Control"] == IMMUTABLE


def test_unhashed_files_revalidate_with_etag(base):
    r = get(f"{base}/app.bundle.css")
    assert r.status_code == 200 and r.headers["Cache-Control"] == REVALIDATE
    again = get(f"{base}/app.bundle.css", **{"If-None-Match": r.headers["ETag"]})
    assert again.status_code == 304 and again.content == b""


def test_generated_app_config(base):
    r = get(f"{base}/app-config.js")
    assert r.status_code == 200
    assert r.headers["Cache-Control"] == REVALIDATE
    assert r.headers["Content-Type"].startswith("text/javascript")
    assert r.content.decode() == app_config_js()
    assert get(f"{base}/app-config.js", **{"If-None-Match": r.headers["ETag"]}).status_code == 304
    body = r.content.decode()
    config = json.loads(body[body.index("window.config = ") + 16: body.index("};\n") + 1])
    assert config == app_config()
    source = config["dataSources"][0]
    assert config["defaultDataSourceName"] == source["sourceName"]
    c = source["configuration"]
    assert c["qidoRoot"] == c["wadoRoot"] == "/dicom-web"  # made absolute, same origin, in JS
    assert "window.location.origin" in body
    assert c["qidoSupportsIncludeField"] and c["supportsWildcard"] and c["supportsFuzzyMatching"]
    assert c["supportsStow"] and c["bulkDataURI"]["enabled"]
    assert c["requestTransferSyntaxUID"] == "*"
    assert c["thumbnailRendering"] == "thumbnailDirect"
    assert config["investigationalUseDialog"] == {"option": "never"}
    assert config["customizationService"] == {"ohif.tours": []}


def test_own_routes_are_not_the_spa(base):
    assert requests.get(f"{base}/healthz", timeout=10).json()["status"] == "ok"
    assert requests.get(f"{base}/metrics", timeout=10).text.startswith("#")
    assert requests.get(f"{base}/dicom-web/studies", timeout=10).status_code in (200, 204)
    for path in ("/dicom-web/nothing/here", "/missing.bundle.0123456789abcdef0123.js",
                 "/assets/none.png", "/.hpacs-ohif-version", "/%2e%2e/%2e%2e/etc/passwd.txt"):
        r = get(base + path)
        assert r.status_code == 404, path
        assert b"<html" not in r.content[:200].lower(), path


def test_absent_viewer_still_serves_dicomweb_and_says_how_to_install(tmp_path):
    empty = tmp_path / "no-ohif"
    empty.mkdir()
    server = start_server(tmp_path / "data", env={"HPACS_VIEWER__DIST_DIR": str(empty)})
    try:
        base = f"http://127.0.0.1:{server.http_port}"
        for path in ("/", "/viewer"):
            r = requests.get(base + path, timeout=10)
            assert r.status_code == 503
            assert "make install" in r.text and "hpacs.web.viewer_install" in r.text
        assert requests.get(f"{base}/app.bundle.0123456789abcdef0123.js",
                            timeout=10).status_code == 404
        assert requests.get(f"{base}/dicom-web/studies", timeout=10).status_code in (200, 204)
        assert requests.get(f"{base}/healthz", timeout=10).status_code == 200
    finally:
        assert server.stop() == 0
    log = server.log()
    assert '"viewer.absent"' in log and str(empty) in log and "make install" in log


def test_disabled_viewer_leaves_root_alone(tmp_path):
    server = start_server(tmp_path / "data", env={"HPACS_VIEWER__ENABLED": "false"})
    try:
        base = f"http://127.0.0.1:{server.http_port}"
        assert requests.get(base + "/", timeout=10).status_code == 404
        assert requests.get(base + "/app-config.js", timeout=10).status_code == 404
        assert requests.get(f"{base}/dicom-web/studies", timeout=10).status_code in (200, 204)
    finally:
        assert server.stop() == 0


def test_hash_detection():
    assert is_hashed("app.bundle.096daabbdde29bd851ab.js")
    assert is_hashed("17dd54813d5acc10bf8f.wasm")
    assert not is_hashed("app.bundle.css")
    assert not is_hashed("1608.css")
    assert not is_hashed("index.html")


def test_default_dist_dir_follows_config(tmp_path):
    from hpacs.web.viewer import dist_dir

    assert dist_dir(ViewerConfig()) == DIST
    assert dist_dir(ViewerConfig(dist_dir=str(tmp_path))) == tmp_path
