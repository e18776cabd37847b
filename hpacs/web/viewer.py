"""The OHIF v3 viewer at the root of the HTTP port, configured for this archive's DICOMweb.

OHIF is a prebuilt single-page app (installed by ``hpacs.web.viewer_install``); its
``index.html`` uses absolute paths, so it lives at ``/`` and every route of the app
(``/viewer``, ``/viewer/...``, ``/local``...) answers ``index.html`` (SPA fallback). Files whose
names carry a content hash never change and are cached for a year (``immutable``); ``index.html``,
the generated ``/app-config.js`` and unhashed files are revalidated (``no-cache`` + ETag).
Precompressed ``.br``/``.gz`` siblings are chosen by Accept-Encoding (Brotli first, a coding
refused with ``q=0`` skipped; with ``Vary``), and byte ranges come from aiohttp's FileResponse.

Without an installed viewer the server runs as before and ``/`` says how to install it.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
import re
import sys
from pathlib import Path, PurePosixPath
from typing import Final

from aiohttp import hdrs, web

from hpacs.config import ViewerConfig
from hpacs.log import get_logger
from hpacs.web.middleware import accepts_coding

log = get_logger("hpacs.viewer")

#: The pinned @ohif/app release (``make install`` installs exactly this one).
OHIF_VERSION: Final = "3.12.10"
#: File in the install directory naming the installed version.
STAMP: Final = ".hpacs-ohif-version"
#: What the stamp says: the version and the precompressed siblings the tree has.
STAMP_TEXT: Final = f"{OHIF_VERSION} gz br"
INSTALL_HINT: Final = "make install  (or: .venv/bin/python -m hpacs.web.viewer_install)"

IMMUTABLE: Final = "public, max-age=31536000, immutable"
REVALIDATE: Final = "no-cache"
#: webpack's content hashes: 16+ hex digits as a name part (app.bundle.096daabbdde29bd8.js).
_HASHED = re.compile(r"(?:^|[.\-_])[0-9a-f]{16,}(?:[.\-_]|$)")
#: A last path segment with one of these suffixes is a file, never an app route.
STATIC_SUFFIXES: Final = frozenset({
    ".js", ".mjs", ".css", ".wasm", ".json", ".html", ".png", ".jpg", ".svg", ".ico", ".gif",
    ".woff", ".woff2", ".ttf", ".xml", ".txt", ".map", ".gz", ".br", ".webmanifest"})
_TYPES: Final = {".js": "text/javascript; charset=utf-8", ".mjs": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".html": "text/html; charset=utf-8",
                 ".wasm": "application/wasm", ".json": "application/json",
                 ".svg": "image/svg+xml", ".woff2": "font/woff2", ".ico": "image/x-icon",
                 ".png": "image/png"}

#: Precompressed siblings, in order of preference.
_CODINGS: Final = (("br", ".br"), ("gzip", ".gz"))
_SUFFIX: Final = dict(_CODINGS)

#: Our own prefixes: a URL under them that no route took is a 404, never the SPA.
_NOT_APP: Final = frozenset({"dicom-web", "wado", "healthz", "metrics", "compare"})

VIEWER_KEY: web.AppKey = web.AppKey("viewer", object)


def default_dist_dir() -> Path:
    return Path(sys.prefix) / "share" / "ohif" / OHIF_VERSION


def dist_dir(config: ViewerConfig) -> Path:
    return Path(config.dist_dir) if config.dist_dir else default_dist_dir()


def install_current(root: Path | None = None) -> bool:
    """Whether ``root`` (default: the default install) holds this build with its precompressed
    siblings, as ``make install`` leaves it."""
    stamp = (root or default_dist_dir()) / STAMP
    return stamp.is_file() and stamp.read_text().strip() == STAMP_TEXT


def is_hashed(name: str) -> bool:
    return _HASHED.search(name) is not None


def data_source() -> dict:
    """OHIF's ``dicomweb`` data source for our own ``/dicom-web`` (roots made absolute,
    same origin, by the config script in the browser)."""
    return {
        "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
        "sourceName": "dicomweb",
        "configuration": {
            "friendlyName": "hpacs",
            "name": "hpacs",
            "qidoRoot": "/dicom-web",
            "wadoRoot": "/dicom-web",
            "wadoUriRoot": "/wado",
            # our QIDO: includefield, wildcards (* ?) and fuzzy PN matching (web/qido.py)
            "qidoSupportsIncludeField": True,
            "supportsWildcard": True,
            "supportsFuzzyMatching": True,
            "supportsReject": False,
            "supportsStow": True,
            "dicomUploadEnabled": True,
            "imageRendering": "wadors",
            "thumbnailRendering": "thumbnailDirect",
            "enableStudyLazyLoad": True,
            # frames as stored: no transcoding on the server's critical path
            "requestTransferSyntaxUID": "*",
            "omitQuotationForMultipartRequest": True,
            "bulkDataURI": {"enabled": True, "relativeResolution": "studies"},
        },
    }


def app_config() -> dict:
    return {
        "routerBasename": "/",
        "extensions": [],
        "modes": [],
        "showStudyList": True,
        "maxNumberOfWebWorkers": 3,
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": True,
        "showLoadingIndicator": True,
        "strictZSpacingForVolumeViewport": True,
        "groupEnabledModesFirst": True,
        "maxNumRequests": {"interaction": 100, "thumbnail": 75, "prefetch": 25},
        "investigationalUseDialog": {"option": "never"},
        # global customization: no onboarding tour on a fresh browser
        "customizationService": {"ohif.tours": []},
        "defaultDataSourceName": "dicomweb",
        "dataSources": [data_source()],
    }


def app_config_js(config: dict | None = None) -> str:
    body = json.dumps(app_config() if config is None else config, indent=2)
    return (
        "/* generated by hpacs: OHIF data source = this server's /dicom-web */\n"
        f"window.config = {body};\n"
        "(function (c) {\n"
        "  var origin = window.location.origin;\n"
        "  c.dataSources.forEach(function (d) {\n"
        "    ['qidoRoot', 'wadoRoot', 'wadoUriRoot'].forEach(function (k) {\n"
        "      var v = d.configuration[k];\n"
        "      if (v && v.charAt(0) === '/') d.configuration[k] = origin + v;\n"
        "    });\n"
        "  });\n"
        "})(window.config);\n"
    )


_ABSENT_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>hpacs</title></head>
<body><h1>hpacs</h1><p>The OHIF viewer is not installed (looked in <code>{where}</code>).</p>
<p>Install it with <code>{hint}</code> and restart the server.</p>
<p>DICOMweb is available at <a href="/dicom-web/studies">/dicom-web</a>.</p></body></html>
"""


class Viewer:
    """Serves one installed OHIF build (or, when absent, a page saying how to install it)."""

    def __init__(self, config: ViewerConfig, ohif_config: dict | None = None) -> None:
        """``ohif_config`` replaces the generated OHIF config (the benchmark's Orthanc front)."""
        self.root = dist_dir(config)
        self.installed = (self.root / "index.html").is_file()
        #: served file (relative POSIX path) -> its precompressed siblings' codings; scanned once
        self.files: dict[str, tuple[str, ...]] = self._scan() if self.installed else {}
        self.config_js = app_config_js(ohif_config).encode()
        self.config_etag = '"' + hashlib.sha256(self.config_js).hexdigest()[:20] + '"'

    def _scan(self) -> dict[str, tuple[str, ...]]:
        names = {p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file()}
        return {n: tuple(c for c, suffix in _CODINGS if n + suffix in names)
                for n in names if not n.endswith((".gz", ".br")) and not n.startswith(".")}

    def log_state(self) -> None:
        if self.installed:
            log.info("viewer.ready", dist_dir=str(self.root), version=OHIF_VERSION)
        else:
            log.warning("viewer.absent", dist_dir=str(self.root), install=INSTALL_HINT)

    async def config_script(self, request: web.Request) -> web.Response:
        headers = {"Cache-Control": REVALIDATE, "ETag": self.config_etag}
        if request.headers.get("If-None-Match") == self.config_etag:
            return web.Response(status=304, headers=headers)
        return web.Response(body=self.config_js, content_type="text/javascript",
                            charset="utf-8", headers=headers)

    async def static(self, request: web.Request) -> web.StreamResponse:
        tail = request.match_info.get("tail", "")
        rel = PurePosixPath(tail)
        if any(part in ("..", "") or part.startswith(".") for part in rel.parts):
            raise web.HTTPNotFound()
        if rel.parts and rel.parts[0] in _NOT_APP:  # e.g. an unknown /dicom-web/... URL
            raise web.HTTPNotFound()
        is_file = rel.suffix.lower() in STATIC_SUFFIXES
        if not self.installed:
            if is_file:
                raise web.HTTPNotFound()
            page = _ABSENT_PAGE.format(where=self.root, hint=INSTALL_HINT)
            return web.Response(text=page, content_type="text/html", status=503,
                                headers={"Cache-Control": "no-store"})
        if not is_file or rel.name == "index.html":  # an app route (or "/"): the SPA
            name, cache = "index.html", REVALIDATE
        elif rel.as_posix() in self.files:
            name = rel.as_posix()
            cache = IMMUTABLE if is_hashed(rel.name) else REVALIDATE
        else:
            raise web.HTTPNotFound()
        headers = {"Cache-Control": cache}
        suffix = PurePosixPath(name).suffix.lower()
        headers["Content-Type"] = _TYPES.get(suffix) or (
            mimetypes.guess_type(name)[0] or "application/octet-stream")
        path = self.root / name
        if codings := self.files.get(name):
            headers["Vary"] = "Accept-Encoding"  # also on the identity answer, for caches
            accept = request.headers.get(hdrs.ACCEPT_ENCODING, "")
            # chosen here rather than by FileResponse, which matches codings as substrings
            # (``br;q=0`` would get Brotli)
            coding = next((c for c in codings if accepts_coding(accept, c)), None)
            if coding is not None:
                path = self.root / (name + _SUFFIX[coding])
                headers["Content-Encoding"] = coding
        return web.FileResponse(path, headers=headers)


def add_routes(app: web.Application, config: ViewerConfig) -> Viewer:
    """Register the viewer last: its catch-all must not shadow /dicom-web, /healthz..."""
    viewer = Viewer(config)
    viewer.log_state()
    app[VIEWER_KEY] = viewer
    app.router.add_get("/app-config.js", viewer.config_script)
    app.router.add_get("/{tail:.*}", viewer.static)
    return viewer
