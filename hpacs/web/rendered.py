"""WADO-RS ``/rendered`` and ``/thumbnail`` (PS3.18 10.4.1.1.3, 10.4.1.1.6) through hpacs.pixels.

* ``.../instances/{i}/rendered`` and ``.../frames/{n}/rendered``: one frame (the first for an
  instance) as ``image/jpeg`` (default) or ``image/png``.
* ``.../series/{se}/rendered`` and ``/studies/{s}/rendered``: ``multipart/related;
  type="image/jpeg"`` (or png), one part per instance: its first frame, streamed.
* ``/thumbnail`` for study, series, instance and frame: one image fitting a 128x128 viewport
  unless ``viewport`` says otherwise; study/series pick the middle instance (index order) of the
  (first) series.

Query parameters: ``window=center,width[,LINEAR|LINEAR_EXACT|SIGMOID]``,
``viewport=vw,vh`` (the crop form is 400), ``quality=1..100``, ``accept=`` (overrides Accept);
others (annotation, charset, iccprofile) are ignored. Bad values: 400. Media types other than
JPEG/PNG: 406. Pixel data that cannot be decoded or rendered (or an instance without any): 422
with a JSON error -- the request is fine and the resource exists, but its content cannot be
processed; 500 would say the server broke and invite retries, 400 would blame the client.
"""

from __future__ import annotations

import asyncio
import uuid

from aiohttp import web

from hpacs.pixels import PixelDataError, RenderOptions, decode, load, num_frames, render
from hpacs.pixels.render import encode_image
from hpacs.pixels.voi import FUNCTIONS, to_uint8
from hpacs.web.dicomweb import ARCHIVE_KEY, HTTPProblem
from hpacs.web.frames import cache_headers, etag, in_executor, not_modified, parse_frame_list
from hpacs.web.wado import _instances, _split_accept

THUMBNAIL = (128, 128)
_FORMATS = {"image/jpeg": "jpeg", "image/png": "png", "image/*": "jpeg", "*/*": "jpeg",
            "image/jpg": "jpeg"}
MEDIA = {"jpeg": "image/jpeg", "png": "image/png"}


def choose_format(request: web.Request) -> str:
    accept = request.query.get("accept") or request.headers.get("Accept")
    if not accept:
        return "jpeg"
    for media_range in _split_accept(accept):
        media, *params = (p.strip() for p in media_range.split(";"))
        q = "1"
        for p in params:
            k, _, v = p.partition("=")
            if k.strip().lower() == "q":
                q = v.strip()
        try:
            if float(q) <= 0:
                continue
        except ValueError:
            continue
        media = media.lower()
        if media == "multipart/related":  # series/study rendered: type= says the image type
            kinds = [p.partition("=")[2].strip().strip('"').lower() for p in params
                     if p.strip().lower().startswith("type=")]
            media = kinds[0] if kinds else "image/jpeg"
        if media in _FORMATS:
            return _FORMATS[media]
    raise HTTPProblem(406, "rendered media types served: image/jpeg, image/png", accept=accept)


def _floats(text: str, what: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise HTTPProblem(400, f"malformed {what}: {text[:80]!r}") from None


def parse_options(request: web.Request, fmt: str, viewport=None, quality: int = 90,
                  ) -> tuple[RenderOptions, str | None]:
    q = request.query
    window = function = None
    if "window" in q:
        parts = q["window"].split(",")
        if len(parts) not in (2, 3):
            raise HTTPProblem(400, "window is center,width[,function]")
        center, width = _floats(",".join(parts[:2]), "window")
        if len(parts) == 3:
            function = parts[2].strip().upper()
            if function not in FUNCTIONS:
                raise HTTPProblem(400, f"window function {parts[2]!r} is not one of "
                                       f"{', '.join(FUNCTIONS)}")
        if not width > 0 or width != width or center != center:
            raise HTTPProblem(400, "window width must be > 0")
        window = (center, width)
    if "viewport" in q:
        parts = q["viewport"].split(",")
        if len(parts) != 2:
            raise HTTPProblem(400, "viewport is vw,vh (the crop form is not supported)")
        try:
            vw, vh = (int(v) for v in parts)
        except ValueError:
            raise HTTPProblem(400, f"malformed viewport: {q['viewport'][:80]!r}") from None
        if not (0 < vw <= 16384 and 0 < vh <= 16384):
            raise HTTPProblem(400, "viewport sizes must be 1..16384")
        viewport = (vw, vh)
    if "quality" in q:
        try:
            quality = int(q["quality"])
        except ValueError:
            raise HTTPProblem(400, f"malformed quality: {q['quality'][:20]!r}") from None
        if not 1 <= quality <= 100:
            raise HTTPProblem(400, "quality is 1..100")
    return RenderOptions(fmt=fmt, quality=quality, viewport=viewport, window=window), function


def render_frame(path, frame: int, options: RenderOptions, function: str | None) -> bytes:
    """Frame ``frame`` (1-based) of the stored file at ``path`` as JPEG/PNG bytes."""
    ds = load(path)
    if "PixelData" not in ds and "FloatPixelData" not in ds and \
            "DoubleFloatPixelData" not in ds:
        raise PixelDataError("the instance has no pixel data")
    n = num_frames(ds)
    if not 1 <= frame <= n:
        raise HTTPProblem(404, f"frame {frame} out of range 1..{n}")
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    if function is not None and options.window is not None and samples == 1 \
            and photometric != "PALETTE COLOR":
        image8 = to_uint8(decode(ds, frame - 1), ds, center=options.window[0],
                          width=options.window[1], function=function)
        return encode_image(image8, options)
    try:
        return render(ds, frame - 1, options)
    except ValueError as exc:  # e.g. an image Pillow cannot take
        raise PixelDataError(str(exc)) from exc


def _one_image(body: bytes, fmt: str, tag: str) -> web.Response:
    return web.Response(body=body, content_type=MEDIA[fmt], headers=cache_headers(tag))


async def _single(request: web.Request, entry, frame: int, options, function) -> web.Response:
    tag = etag(entry, f"{request.path}?{request.query_string}/{options.fmt}")
    if (cached := not_modified(request, tag)) is not None:
        return cached
    path = await request.app[ARCHIVE_KEY].source(entry)
    body = await in_executor(render_frame, path, frame, options, function)
    return _one_image(body, options.fmt, tag)


def _frame_number(request: web.Request) -> int:
    numbers = parse_frame_list(request.match_info.get("frames", "1"))
    if len(numbers) != 1:
        raise HTTPProblem(400, "rendered/thumbnail take one frame number (multi-frame media "
                               "types are not served)")
    return numbers[0]


async def instance_rendered(request: web.Request) -> web.Response:
    frame = _frame_number(request)
    entry = _instances(request)[0]
    options, function = parse_options(request, choose_format(request))
    return await _single(request, entry, frame, options, function)


def _representative(entries: list):
    first_series = [e for e in entries if e.series_uid == entries[0].series_uid]
    return first_series[len(first_series) // 2]


async def thumbnail(request: web.Request) -> web.Response:
    frame = _frame_number(request)
    entries = _instances(request)
    entry = entries[0] if "sop" in request.match_info else _representative(entries)
    options, function = parse_options(request, choose_format(request), THUMBNAIL, 80)
    return await _single(request, entry, frame, options, function)


async def series_rendered(request: web.Request) -> web.StreamResponse:
    """Each instance's first frame as one part of ``multipart/related; type=image/...``."""
    entries = _instances(request)
    options, function = parse_options(request, choose_format(request))
    media = MEDIA[options.fmt]
    archive = request.app[ARCHIVE_KEY]
    loop = asyncio.get_running_loop()
    # render the first before answering so a bad image can still be a clean 422
    first = await in_executor(render_frame, await archive.source(entries[0]), 1, options,
                              function)
    boundary = uuid.uuid4().hex
    resp = web.StreamResponse(headers={
        "Content-Type": f'multipart/related; type="{media}"; boundary={boundary}',
        "Cache-Control": "private, max-age=60"})
    await resp.prepare(request)
    delimiter = f"--{boundary}".encode()
    for i, entry in enumerate(entries):
        if i == 0:
            body = first
        else:
            try:
                body = await loop.run_in_executor(None, render_frame,
                                                  await archive.source(entry), 1, options,
                                                  function)
            except (PixelDataError, HTTPProblem, OSError):
                continue  # headers are out: leave out an instance that cannot be rendered
        await resp.write(b"".join((b"\r\n" if i else b"", delimiter, b"\r\nContent-Type: ",
                                   media.encode(), b"\r\n\r\n", body)))
    await resp.write(b"\r\n" + delimiter + b"--\r\n")
    await resp.write_eof()
    return resp


def add_routes(app: web.Application) -> None:
    study = "/studies/{study}"
    series = study + "/series/{series}"
    inst = series + "/instances/{sop}"
    app.router.add_get(inst + "/rendered", instance_rendered)
    app.router.add_get(inst + "/frames/{frames}/rendered", instance_rendered)
    app.router.add_get(series + "/rendered", series_rendered)
    app.router.add_get(study + "/rendered", series_rendered)
    for prefix in (study, series, inst, inst + "/frames/{frames}"):
        app.router.add_get(prefix + "/thumbnail", thumbnail)
