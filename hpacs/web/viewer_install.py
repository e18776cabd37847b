"""Install the pinned OHIF viewer build: ``python -m hpacs.web.viewer_install [--dest DIR]``.

Only the npm package tarball of ``@ohif/app`` is fetched (``npm pack``, no dependency tree): it
ships the prebuilt static app in ``dist/``. We keep what the browser loads and drop the rest
(the onnx runtime ``dist/ort`` alone is 136 MB, source maps 39 MB), then precompress the text
assets once so the server answers them as stored bytes (``.gz`` and ``.br``: aiohttp's
FileResponse picks the sibling the client accepts, Brotli first; Chromium asks for ``br`` even
over plain HTTP). The install is idempotent: a stamp names the version and the precompressed
layout, and a new tree is built beside the old one and renamed into place, so a server never sees
half a viewer; a tree of the same version without ``.br`` siblings gets them in place (each
sibling written to a temporary name and renamed).
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

import brotli

from hpacs.web.viewer import OHIF_VERSION, STAMP, STAMP_TEXT, default_dist_dir

#: npm's integrity of @ohif/app@OHIF_VERSION: a changed tarball is refused, not installed.
OHIF_INTEGRITY = ("sha512-0kuF66Mq9c9dMD++bUsTjMrJpXJwaZhz9B4uS244DawAjSkTwIYFU93pxPuRUQixaR"
                  "i7QAHlF3Fe1qudBlZrmA==")

#: Not served: the AI runtime, Netlify/serve files, and the stock config (hpacs generates it).
_DROP_DIRS = ("ort/",)
_DROP_FILES = frozenset({"_headers", "_redirects", "serve.json", "app-config.js"})
_DROP_SUFFIXES = (".map", ".LICENSE.txt", ".d.ts")
#: Brotli's best quality costs ~4 s a MB here (61 s for the 15 MB app bundle, 25% under gzip-9);
#: quality 9 takes ~0.2 s a MB for a 10% bigger file: best quality for files up to this size.
BROTLI_MAX_QUALITY_BYTES = 1 << 20
#: Worth compressing; images and fonts are compressed already.
COMPRESSIBLE = frozenset({".js", ".mjs", ".css", ".html", ".json", ".svg", ".wasm", ".txt",
                          ".xml", ".ico", ".webmanifest"})


def _wanted(rel: str) -> bool:
    name = PurePosixPath(rel).name
    return not (rel.startswith(_DROP_DIRS) or name in _DROP_FILES
                or name.endswith(_DROP_SUFFIXES))


def fetch_tarball(workdir: Path) -> Path:
    """``npm pack`` the pinned package into ``workdir`` (npm checks the registry's integrity)."""
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("viewer install: npm not found (apt-get install npm)")
    out = subprocess.run([npm, "pack", f"@ohif/app@{OHIF_VERSION}", "--silent",
                          "--pack-destination", str(workdir)],
                         check=True, capture_output=True, text=True, cwd=workdir)
    return workdir / out.stdout.strip().splitlines()[-1]


def check_integrity(tarball: Path) -> None:
    digest = hashlib.sha512()
    with tarball.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    got = "sha512-" + base64.b64encode(digest.digest()).decode()
    if got != OHIF_INTEGRITY:
        raise SystemExit(f"viewer install: {tarball.name} has integrity {got}, "
                         f"expected {OHIF_INTEGRITY}")


def unpack(tarball: Path, target: Path) -> int:
    """Extract the served part of ``package/dist`` into ``target``; returns the file count."""
    count = 0
    with tarfile.open(tarball, "r:gz") as tar:
        for member in tar.getmembers():
            if not member.isfile() or not member.name.startswith("package/dist/"):
                continue
            rel = member.name[len("package/dist/"):]
            if not _wanted(rel) or ".." in PurePosixPath(rel).parts:
                continue
            dest = target / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(member)
            assert src is not None
            with src, dest.open("wb") as out:
                shutil.copyfileobj(src, out)
            count += 1
    return count


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def precompress(root: Path) -> int:
    """Write ``.gz`` and ``.br`` siblings of text assets when they save at least 10% (those
    already there are kept: an install of the same version only adds what is missing)."""
    written = 0
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.suffix not in COMPRESSIBLE or path.name.startswith("."):
            continue
        data = b""
        for suffix in (".gz", ".br"):
            sibling = path.with_name(path.name + suffix)
            if sibling.exists():
                continue
            data = data or path.read_bytes()
            if suffix == ".gz":
                packed = gzip.compress(data, compresslevel=9, mtime=0)
            else:
                quality = 11 if len(data) <= BROTLI_MAX_QUALITY_BYTES else 9
                packed = brotli.compress(data, quality=quality)
            if len(packed) <= 0.9 * len(data):
                _write_atomic(sibling, packed)
                written += 1
    return written


def install(dest: Path, tarball: Path | None = None) -> bool:
    """Install into ``dest`` unless its stamp already names this version; True if installed."""
    stamp = dest / STAMP
    installed = stamp.read_text().strip() if stamp.is_file() else ""
    if installed == STAMP_TEXT:
        return False
    if installed == OHIF_VERSION and tarball is None:  # same build, gzip only: add Brotli
        compressed = precompress(dest)
        _write_atomic(stamp, (STAMP_TEXT + "\n").encode())
        print(f"OHIF {OHIF_VERSION}: {compressed} precompressed files added in {dest}")
        return True
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".ohif-") as tmp:
        work = Path(tmp)
        if tarball is None:
            tarball = fetch_tarball(work)
        check_integrity(tarball)
        tree = work / "tree"
        files = unpack(tarball, tree)
        if not (tree / "index.html").is_file():
            raise SystemExit(f"viewer install: no dist/index.html in {tarball}")
        compressed = precompress(tree)
        (tree / STAMP).write_text(STAMP_TEXT + "\n")
        old = work / "old"
        if dest.exists():
            os.rename(dest, old)
        os.rename(tree, dest)
    print(f"OHIF {OHIF_VERSION}: {files} files, {compressed} precompressed, in {dest}")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=default_dist_dir(),
                        help="install directory (default: %(default)s)")
    parser.add_argument("--tarball", type=Path, help="use this npm tarball instead of npm pack")
    args = parser.parse_args(argv)
    install(args.dest, args.tarball)
    return 0


if __name__ == "__main__":
    sys.exit(main())
