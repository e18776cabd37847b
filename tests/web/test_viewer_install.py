"""The OHIF installer on a small tarball shaped like @ohif/app's: what is kept, what is
dropped, precompression, the integrity pin and idempotence."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import tarfile

import brotli
import pytest

from hpacs.web import viewer_install
from hpacs.web.viewer import OHIF_VERSION, STAMP, STAMP_TEXT

FILES = {
    "package/package.json": b"{}",
    "package/dist/index.html": b"<!doctype html>" + b"<script src=/app.js></script>" * 50,
    "package/dist/app.bundle.0123456789abcdef0123.js": b"console.log(1);\n" * 500,
    "package/dist/app.bundle.0123456789abcdef0123.js.map": b"{}",
    "package/dist/app-config.js": b"window.config = {};",
    "package/dist/ort/ort-wasm.wasm": b"\0asm" * 100,
    "package/dist/_headers": b"x",
    "package/dist/_redirects": b"/* /index.html 200",
    "package/dist/serve.json": b"{}",
    "package/dist/assets/favicon.png": b"\x89PNG" + bytes(range(256)),
    "package/dist/tiny.css": b"a{}",
}


def make_tarball(path, files=FILES):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    digest = hashlib.sha512(path.read_bytes()).digest()
    return "sha512-" + base64.b64encode(digest).decode()


def test_install_keeps_what_is_served_and_precompresses(tmp_path, monkeypatch):
    tarball = tmp_path / "app.tgz"
    monkeypatch.setattr(viewer_install, "OHIF_INTEGRITY", make_tarball(tarball))
    dest = tmp_path / "share" / "ohif" / OHIF_VERSION
    assert viewer_install.install(dest, tarball) is True
    served = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert served == sorted([
        STAMP, "index.html", "index.html.gz", "index.html.br", "assets/favicon.png",
        "tiny.css", "app.bundle.0123456789abcdef0123.js",
        "app.bundle.0123456789abcdef0123.js.gz", "app.bundle.0123456789abcdef0123.js.br"])
    js = FILES["package/dist/app.bundle.0123456789abcdef0123.js"]
    assert gzip.decompress((dest / "app.bundle.0123456789abcdef0123.js.gz").read_bytes()) == js
    assert brotli.decompress((dest / "app.bundle.0123456789abcdef0123.js.br").read_bytes()) == js
    assert (dest / STAMP).read_text().strip() == STAMP_TEXT
    # a second run sees the stamp and leaves the tree alone
    marker = dest / "index.html"
    mtime = marker.stat().st_mtime_ns
    assert viewer_install.install(dest, tarball) is False
    assert marker.stat().st_mtime_ns == mtime


def test_a_tarball_that_does_not_match_the_pin_is_refused(tmp_path):
    tarball = tmp_path / "app.tgz"
    make_tarball(tarball)
    dest = tmp_path / "ohif"
    with pytest.raises(SystemExit, match="integrity"):
        viewer_install.install(dest, tarball)
    assert not dest.exists()


def test_an_old_version_is_replaced_whole(tmp_path, monkeypatch):
    tarball = tmp_path / "app.tgz"
    monkeypatch.setattr(viewer_install, "OHIF_INTEGRITY", make_tarball(tarball))
    dest = tmp_path / "ohif"
    dest.mkdir()
    (dest / STAMP).write_text("0.0.1\n")
    (dest / "stale.js").write_text("old")
    assert viewer_install.install(dest, tarball) is True
    assert not (dest / "stale.js").exists()
    assert (dest / "index.html").is_file()


def test_a_gzip_only_tree_of_this_version_gets_brotli_in_place(tmp_path, monkeypatch):
    tarball = tmp_path / "app.tgz"
    monkeypatch.setattr(viewer_install, "OHIF_INTEGRITY", make_tarball(tarball))
    dest = tmp_path / "ohif"
    assert viewer_install.install(dest, tarball) is True
    for br in dest.rglob("*.br"):
        br.unlink()
    (dest / STAMP).write_text(OHIF_VERSION + "\n")  # as installed before .br siblings
    gz = dest / "index.html.gz"
    mtime = gz.stat().st_mtime_ns
    assert viewer_install.install(dest) is True  # no tarball, no npm: only the siblings
    html = FILES["package/dist/index.html"]
    assert brotli.decompress((dest / "index.html.br").read_bytes()) == html
    assert gz.stat().st_mtime_ns == mtime
    assert (dest / STAMP).read_text().strip() == STAMP_TEXT
    assert not [p for p in dest.rglob("*") if p.name.endswith(".tmp")]
