"""WADO-URI (PS3.18 Chapter 9): ``GET /wado?requestType=WADO&studyUID=&seriesUID=&objectUID=``.

``contentType`` (a comma list; first one we serve wins; default ``image/jpeg``):

* ``application/dicom``: the stored Part 10 file. ``transferSyntax`` absent, ``*`` or the
  stored syntax is served as stored; another syntax we can produce (Explicit/Implicit VR LE,
  deflate, RLE, JPEG-LS / JPEG 2000 lossless; lossy ones only with
  ``pixels.allow_lossy_transcode``) is transcoded off the loop (``hpacs.pixels.transcode``);
  any other is 406. PS3.18 makes Explicit VR Little Endian the default when the parameter is
  absent; we serve as stored instead (what viewers expect and what stays byte-exact) -- a
  documented deviation.
* ``image/jpeg`` / ``image/png``: one frame rendered through hpacs.pixels: ``frameNumber``
  (1-based, default 1), ``windowCenter`` + ``windowWidth`` (both or neither), ``rows`` /
  ``columns`` (fit inside, aspect kept), ``imageQuality`` 1..100.

Missing/invalid parameters: 400; unknown object (or not in the series/study named): 404; a
content type we do not serve: 406; pixel data that cannot be rendered: 422 (see rendered.py).
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from hpacs.pixels import RenderOptions
from hpacs.pixels.transcode import TranscodeError, can_produce
from hpacs.pixels.workers import run_transcode, transcoded_part10
from hpacs.store.tiers import as_path_or_bytes
from hpacs.web.dicomweb import ARCHIVE_KEY, HTTPProblem, check_uid, error_response, log
from hpacs.web.frames import cache_headers, etag, in_executor, not_modified
from hpacs.web.rendered import MEDIA, render_frame

DICOM = "application/dicom"
_RENDER = {"image/jpeg": "jpeg", "image/jpg": "jpeg", "image/png": "png", "image/*": "jpeg",
           "*/*": "jpeg"}


def _int(q, name: str, lo: int, hi: int) -> int | None:
    if name not in q:
        return None
    try:
        value = int(q[name])
    except ValueError:
        raise HTTPProblem(400, f"malformed {name}: {q[name][:20]!r}") from None
    if not lo <= value <= hi:
        raise HTTPProblem(400, f"{name} must be {lo}..{hi}")
    return value


def _float(q, name: str) -> float | None:
    if name not in q:
        return None
    try:
        value = float(q[name])
    except ValueError:
        raise HTTPProblem(400, f"malformed {name}: {q[name][:20]!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise HTTPProblem(400, f"malformed {name}")
    return value


def _entry(request: web.Request):
    q = request.query
    if q.get("requestType") != "WADO":
        raise HTTPProblem(400, "requestType=WADO is required")
    missing = [k for k in ("studyUID", "seriesUID", "objectUID") if not q.get(k)]
    if missing:
        raise HTTPProblem(400, f"missing {', '.join(missing)}")
    study = check_uid(q["studyUID"], "studyUID")
    series = check_uid(q["seriesUID"], "seriesUID")
    sop = check_uid(q["objectUID"], "objectUID")
    db = request.app[ARCHIVE_KEY].db
    entry = db.get_instance(sop)
    se = db.get_series(series)
    if entry is None or entry.series_uid != series or se is None or se.study_uid != study:
        raise HTTPProblem(404, f"no object {sop} in series {series} of study {study}")
    return entry


def _content_type(request: web.Request) -> str:
    for media in request.query.get("contentType", "image/jpeg").split(","):
        media = media.split(";")[0].strip().lower()
        if media == DICOM or media in _RENDER:
            return media
    raise HTTPProblem(406, "contentType served: application/dicom, image/jpeg, image/png")


async def _wado(request: web.Request) -> web.StreamResponse:
    entry = _entry(request)
    media = _content_type(request)
    q = request.query
    archive = request.app[ARCHIVE_KEY]
    if media == DICOM:
        ts = q.get("transferSyntax")
        if ts in (None, "", "*"):
            ts = entry.transfer_syntax_uid
        check_uid(ts, "transferSyntax")
        allow_lossy = archive.config.pixels.allow_lossy_transcode
        if ts != entry.transfer_syntax_uid and not can_produce(ts, allow_lossy=allow_lossy):
            raise HTTPProblem(406, f"the object is stored as {entry.transfer_syntax_uid} and "
                                   f"cannot be produced in {ts}"
                                   f"{'' if allow_lossy else ' (lossy output is disabled)'}")
        tag = etag(entry, f"dicom/{ts}")
        if (cached := not_modified(request, tag)) is not None:
            return cached
        loop = asyncio.get_running_loop()
        try:
            if ts == entry.transfer_syntax_uid:
                body = await loop.run_in_executor(None, archive.tiers.read_bytes, entry)
            else:
                source = as_path_or_bytes(await archive.source(entry))
                body = await run_transcode(transcoded_part10, source, ts, allow_lossy=allow_lossy,
                                           workers=archive.config.pixels.transcode_workers)
        except OSError:
            raise HTTPProblem(500, "the stored object cannot be read") from None
        except TranscodeError as exc:
            log.warning("wado_uri.transcode_failed", sop=entry.sop_instance_uid,
                        stored=entry.transfer_syntax_uid, target=ts, error=str(exc))
            raise HTTPProblem(406, f"{exc}; transferSyntax=* gives it as stored") from None
        return web.Response(body=body, content_type=DICOM, headers=cache_headers(tag))
    frame = _int(q, "frameNumber", 1, 1 << 31) or 1
    center, width = _float(q, "windowCenter"), _float(q, "windowWidth")
    if (center is None) != (width is None):
        raise HTTPProblem(400, "windowCenter and windowWidth go together")
    if width is not None and width <= 0:
        raise HTTPProblem(400, "windowWidth must be > 0")
    rows, columns = _int(q, "rows", 1, 16384), _int(q, "columns", 1, 16384)
    viewport = None if rows is None and columns is None else (columns or 1 << 20,
                                                               rows or 1 << 20)
    quality = _int(q, "imageQuality", 1, 100) or 90
    options = RenderOptions(fmt=_RENDER[media], quality=quality, viewport=viewport,
                            window=None if center is None else (center, width))
    tag = etag(entry, f"{request.query_string}")
    if (cached := not_modified(request, tag)) is not None:
        return cached
    body = await in_executor(render_frame, await archive.source(entry), frame, options, None)
    return web.Response(body=body, content_type=MEDIA[options.fmt], headers=cache_headers(tag))


async def wado(request: web.Request) -> web.StreamResponse:
    try:
        return await _wado(request)
    except HTTPProblem as problem:
        return error_response(request, problem)
