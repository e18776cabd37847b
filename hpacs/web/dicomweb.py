"""DICOMweb (PS3.18) under ``/dicom-web``: routes and the bits STOW-RS and WADO-RS share.

First slice of issue 4: STOW-RS (web/stow.py), WADO-RS retrieval as stored and ``/metadata``
(web/wado.py), QIDO-RS search (web/qido.py) over the C-FIND query engine (index/query.py).
"""

from __future__ import annotations

import hashlib
import re
import time

import msgspec
from aiohttp import web

from hpacs.log import get_logger

log = get_logger("hpacs.web")

PREFIX = "/dicom-web"
DICOM_JSON = "application/dicom+json"
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
ARCHIVE_KEY: web.AppKey = web.AppKey("archive", object)
CACHE_CONTROL = "private, max-age=3600"


class HTTPProblem(Exception):
    """An error answered as ``{"error": ...}`` with an HTTP status (and logged)."""

    def __init__(self, status: int, message: str, **details: object) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details


def error_response(request: web.Request, problem: HTTPProblem) -> web.Response:
    log.warning("dicomweb.error", method=request.method, path=request.path,
                status=problem.status, error=problem.message, peer=request.remote,
                **problem.details)
    return web.json_response({"error": problem.message}, status=problem.status)


def check_uid(value: str, what: str) -> str:
    if len(value) > 64 or not _UID.fullmatch(value):
        raise HTTPProblem(400, f"malformed {what}: {value[:80]!r}")
    return value


def base_url(request: web.Request) -> str:
    """The DICOMweb root as clients reach it: ``server.public_url`` when set (behind a proxy, or
    clients such as dicomweb-client that send a Host without the port), else from the request."""
    public = request.app[ARCHIVE_KEY].config.server.public_url
    if public:
        return public.rstrip("/") + PREFIX
    return f"{request.scheme}://{request.host}{PREFIX}"


# -- caching (instance resources carry PHI: private; strong ETags answered with 304) ------


def etag(entry, variant: str = "") -> str:
    key = f"{entry.sop_instance_uid}|{entry.size}|{entry.stored_at!r}|{variant}"
    return '"' + hashlib.blake2b(key.encode(), digest_size=12).hexdigest() + '"'


def not_modified(request: web.Request, tag: str) -> web.Response | None:
    """A 304 when ``If-None-Match`` names ``tag`` (or ``*``)."""
    header = request.headers.get("If-None-Match")
    if header is None:
        return None
    names = {t.strip().removeprefix("W/") for t in header.split(",")}
    if tag in names or "*" in names:
        return web.Response(status=304, headers=cache_headers(tag))
    return None


def cache_headers(tag: str) -> dict[str, str]:
    return {"Cache-Control": CACHE_CONTROL, "ETag": tag, "Vary": "Accept"}


def _enc_hook(obj: object) -> object:
    # pydicom's to_json_dict leaves str/int/float subclasses (UID, IS, DSfloat) in its output
    for kind in (str, int, float):
        if isinstance(obj, kind):
            return kind(obj)
    raise TypeError(f"cannot encode {type(obj).__name__} as JSON")


_ENCODER = msgspec.json.Encoder(enc_hook=_enc_hook)


def dicom_json_response(body: object, status: int = 200) -> web.Response:
    return web.Response(body=_ENCODER.encode(body), status=status,
                        content_type=DICOM_JSON)


@web.middleware
async def problems(request: web.Request, handler):
    start = time.perf_counter()
    try:
        return await handler(request)
    except HTTPProblem as problem:
        return error_response(request, problem)
    finally:
        log.debug("dicomweb.request", method=request.method, path=request.path,
                  ms=round((time.perf_counter() - start) * 1000, 3))


def build_dicomweb(archive) -> web.Application:
    """The ``/dicom-web`` sub-application over an opened Archive."""
    from hpacs.web import frames, qido, rendered, stow, wado

    app = web.Application(middlewares=[problems])
    app[ARCHIVE_KEY] = archive
    qido.add_routes(app)
    app.router.add_post("/studies", stow.store)
    app.router.add_post("/studies/{study}", stow.store)
    app.router.add_get("/studies/{study}", wado.retrieve)
    app.router.add_get("/studies/{study}/series/{series}", wado.retrieve)
    app.router.add_get("/studies/{study}/series/{series}/instances/{sop}", wado.retrieve)
    app.router.add_get("/studies/{study}/metadata", wado.metadata)
    app.router.add_get("/studies/{study}/series/{series}/metadata", wado.metadata)
    app.router.add_get("/studies/{study}/series/{series}/instances/{sop}/metadata",
                       wado.metadata)
    frames.add_routes(app)
    rendered.add_routes(app)
    return app
