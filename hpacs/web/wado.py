"""WADO-RS (PS3.18 10.4): study/series/instance retrieval, and ``/metadata``.

Retrieval streams ``multipart/related; type="application/dicom"`` part by part: each part's
boundary and headers, then the stored Part 10 file by ``sendfile(2)`` (web/sendfile.py; 1 MiB
reads off the loop where sendfile cannot be used) with a Content-Length known from the index
when every instance goes as stored; a transcoded instance is one instance in memory and the
response is chunked. Each part's Content-Type says the ``transfer-syntax=`` actually sent.

Accept: ``*/*``, ``multipart/*`` or ``multipart/related; type="application/dicom"`` with
``transfer-syntax=*`` serve as stored; no ``transfer-syntax`` means Explicit VR Little Endian
(PS3.18 8.7.3.5.2 default, what dicomweb-client sends by default); a named ``transfer-syntax``
(several media ranges: in order of q) is served as stored when the instance is stored in it,
else the instance is transcoded (``hpacs.pixels.transcode``, off the loop) to the syntax
``choose_syntax`` picks among those asked for. Lossy output only when the config allows it
(``pixels.allow_lossy_transcode``) and the Accept names the lossy syntax. 406 Not Acceptable,
with a body naming the stored and asked syntaxes, when an instance cannot be produced.

``/metadata`` (study, series, instance) joins the per-instance PS3.18 F.2 JSON computed at
ingest (store/metadata.py); instances not warmed yet are computed on the spot and cached.
Top-level binary values over 768 bytes are BulkDataURIs ``.../instances/{sop}/bulkdata/{tag}``,
served by web/frames.py (as are ``/frames``; ``/rendered`` and ``/thumbnail`` are in
web/rendered.py). It changes as instances arrive: ``no-cache`` with an ETag, 304 when unchanged.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Iterator

from aiohttp import web

from hpacs.dicom.dicomjson import DicomJSONError
from hpacs.dicom.part10 import Part10Error
from hpacs.dicom.transfer_syntax import EXPLICIT_VR_LE
from hpacs.pixels.transcode import TranscodeError, choose_syntax
from hpacs.pixels.workers import run_transcode, transcoded_part10
from hpacs.store.metadata import absolute_uris, compute_source
from hpacs.store.tiers import as_path_or_bytes, open_source
from hpacs.web.dicomweb import (
    ARCHIVE_KEY,
    DICOM_JSON,
    HTTPProblem,
    base_url,
    check_uid,
    log,
    not_modified,
)
from hpacs.web.sendfile import PeerGone, send_file, source_size

BULK_THRESHOLD = 1024
BULK_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
PIXEL_DATA = 0x7FE00010
ANY = "*"


# -- resolving the resource ----------------------------------------------------------------


def _instances(request: web.Request) -> list:
    """InstanceEntry rows the URL names (404 when any level is unknown or not nested)."""
    db = request.app[ARCHIVE_KEY].db
    info = request.match_info
    study = check_uid(info["study"], "Study Instance UID")
    series = info.get("series")
    sop = info.get("sop")
    if series is not None:
        check_uid(series, "Series Instance UID")
    if sop is not None:
        check_uid(sop, "SOP Instance UID")
    if db.get_study(study) is None:
        raise HTTPProblem(404, f"no study {study}")
    if series is None:
        series_list = db.study_series(study)
    else:
        se = db.get_series(series)
        if se is None or se.study_uid != study:
            raise HTTPProblem(404, f"no series {series} in study {study}")
        series_list = [series]
    if sop is not None:
        entry = db.get_instance(sop)
        if entry is None or entry.series_uid != series:
            raise HTTPProblem(404, f"no instance {sop} in series {series}")
        return [entry]
    out = []
    for se_uid in series_list:
        out += db.series_entries(se_uid)
    if not out:
        raise HTTPProblem(404, "no instances")
    return out


# -- Accept ---------------------------------------------------------------------------------


def _split_accept(header: str) -> list[str]:
    out, cur, quoted = [], [], False
    for ch in header:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return [s.strip() for s in out if s.strip()]


def media_ranges(accept: str) -> Iterator[tuple[str, dict[str, str]]]:
    """(lower-cased media type, parameters) of each Accept media range whose q is above 0."""
    for media_range in _split_accept(accept):
        media, *params = (p.strip() for p in media_range.split(";"))
        opts = {}
        for p in params:
            k, _, v = p.partition("=")
            opts[k.strip().lower()] = v.strip().strip('"')
        try:
            if float(opts.get("q", "1")) <= 0:
                continue
        except ValueError:
            continue
        yield media.lower(), opts


def _q(opts: dict[str, str]) -> float:
    try:
        return float(opts.get("q", "1"))
    except ValueError:
        return 0.0


def ranked_syntaxes(accept: str | None) -> list[tuple[float, str]]:
    """(q, transfer syntax) an Accept header allows for application/dicom parts, highest q
    first (header order within one q); ANY means as stored."""
    if not accept:
        return [(1.0, ANY)]
    ranked: list[tuple[float, str]] = []
    for media, opts in media_ranges(accept):
        if media in ("*/*", "multipart/*"):
            ranked.append((_q(opts), ANY))
        elif media == "multipart/related":
            if opts.get("type", "application/dicom").lower() != "application/dicom":
                continue
            ranked.append((_q(opts), opts.get("transfer-syntax", EXPLICIT_VR_LE)))
    ranked.sort(key=lambda item: -item[0])  # stable
    return ranked


def acceptable_syntaxes(accept: str | None) -> list[str]:
    """Transfer syntaxes an Accept header allows, most preferred first (ANY: as stored)."""
    return list(dict.fromkeys(ts for _, ts in ranked_syntaxes(accept)))


def target_syntaxes(stored: str, ranked: list[tuple[float, str]],
                    allow_lossy: bool) -> list[str]:
    """The syntaxes an instance stored as ``stored`` may be sent in, best first: by q, and
    as stored (``*`` or the stored syntax) before the others of the same q; a syntax other
    than the stored one only if we can produce it. Empty: 406. Later ones are fallbacks when
    transcoding to an earlier one fails."""
    out: list[str] = []
    for _, ts in sorted(ranked, key=lambda item: (-item[0], item[1] not in (ANY, stored))):
        if ts in (ANY, stored):
            ts = stored
        elif choose_syntax(stored, [ts], allow_lossy=allow_lossy) != ts:
            continue
        if ts not in out:
            out.append(ts)
    return out


# -- retrieval ------------------------------------------------------------------------------


async def retrieve(request: web.Request) -> web.StreamResponse:
    entries = _instances(request)
    accept = request.headers.get("Accept")
    ranked = ranked_syntaxes(accept)
    allowed = acceptable_syntaxes(accept)
    archive = request.app[ARCHIVE_KEY]
    allow_lossy = archive.config.pixels.allow_lossy_transcode
    plans = [target_syntaxes(e.transfer_syntax_uid, ranked, allow_lossy) for e in entries]
    refused = sorted({e.transfer_syntax_uid for e, p in zip(entries, plans, strict=True)
                      if not p})
    if refused:
        raise HTTPProblem(
            406, f"cannot serve instances stored as {', '.join(refused)} in the transfer "
                 f"syntax asked for ({', '.join(allowed) or 'none'}): we produce Explicit/"
                 "Implicit VR Little Endian, deflate and lossless RLE/JPEG-LS/JPEG 2000"
                 f"{'' if allow_lossy else ' (lossy output is disabled)'}; ask for "
                 "transfer-syntax=* to get them as stored", accept=accept)
    boundary = uuid.uuid4().hex
    resp = web.StreamResponse(headers={
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'})
    delimiter = f"--{boundary}".encode()
    tail = b"\r\n" + delimiter + b"--\r\n"
    if all(plan[0] == e.transfer_syntax_uid for e, plan in zip(entries, plans, strict=True)):
        # all as stored: the length is known from the index, so no chunk framing and the
        # files can go by sendfile
        heads = [_part_head(i, delimiter, e.transfer_syntax_uid) for i, e in enumerate(entries)]
        resp.content_length = sum(map(len, heads)) + sum(e.size for e in entries) + len(tail)
        await resp.prepare(request)
        if request.method == "HEAD":  # headers only (the files would go around aiohttp)
            await resp.write_eof()
            return resp
        for head, entry in zip(heads, entries, strict=True):
            await resp.write(head)
            await _send_stored(request, resp, archive, entry)
    else:
        workers = archive.config.pixels.transcode_workers
        for i, (entry, plan) in enumerate(zip(entries, plans, strict=True)):
            target, body = await _part(archive, entry, plan, allow_lossy, workers,
                                       resp.prepared)
            if not resp.prepared:
                await resp.prepare(request)
            await resp.write(_part_head(i, delimiter, target))
            if body is not None:
                await resp.write(body)
            else:
                await _send_stored(request, resp, archive, entry)
    await resp.write(tail)
    await resp.write_eof()
    log.debug("wado.retrieved", path=request.path, instances=len(entries))
    return resp


def _part_head(i: int, delimiter: bytes, syntax: str) -> bytes:
    return b"".join((b"\r\n" if i else b"", delimiter,
                     b"\r\nContent-Type: application/dicom; transfer-syntax=",
                     syntax.encode(), b"\r\n\r\n"))


async def _send_stored(request: web.Request, resp: web.StreamResponse, archive, entry) -> None:
    """One stored instance as it is, from whichever tier holds it."""
    try:
        f = open_source(await archive.source(entry))  # an open(2): no thread hop
    except OSError as exc:
        log.error("wado.unreadable", sop=entry.sop_instance_uid, path=entry.path,
                  error=str(exc))
        raise  # headers are out: abort the connection so the client sees a broken body
    try:
        if source_size(f) != entry.size:
            log.error("wado.size_changed", sop=entry.sop_instance_uid, path=entry.path)
            raise PeerGone("stored file changed size during the response")
        await send_file(request, resp, f, entry.size)
    finally:
        f.close()


async def _part(archive, entry, plan: list[str], allow_lossy: bool, workers: int,
                prepared: bool) -> tuple[str, bytes | None]:
    """(syntax, Part 10 bytes) of one part, transcoded off the loop; bytes None: stream the
    stored file. A syntax that fails to transcode falls back to the next one in ``plan``; when
    none is left the response is a 406 if it has not started (``transfer-syntax=*`` still
    works), else the connection is aborted (the body is cut)."""
    error = ""
    for target in plan:
        if target == entry.transfer_syntax_uid:
            return target, None
        try:
            source = as_path_or_bytes(await archive.source(entry))
            return target, await run_transcode(transcoded_part10, source, target,
                                               allow_lossy=allow_lossy, workers=workers)
        except TranscodeError as exc:
            log.warning("wado.transcode_failed", sop=entry.sop_instance_uid,
                        stored=entry.transfer_syntax_uid, target=target, error=str(exc))
            error = str(exc)
        except OSError as exc:
            log.error("wado.unreadable", sop=entry.sop_instance_uid, path=entry.path,
                      error=str(exc))
            if prepared:
                raise
            raise HTTPProblem(500, "a stored instance cannot be read") from None
    if prepared:
        raise ConnectionResetError(f"cannot transcode {entry.sop_instance_uid}: {error}")
    raise HTTPProblem(406, f"instance {entry.sop_instance_uid}: {error}; ask for "
                           "transfer-syntax=* to get it as stored")


# -- metadata -------------------------------------------------------------------------------


def _fill_missing(archive, entries: list, blobs: list, study: str) -> None:
    """Compute (and cache) the JSON of instances the warmer has not done yet (or replaced)."""
    rows = []
    for i, e in enumerate(entries):
        if blobs[i] is None:
            blobs[i] = compute_source(archive.tiers.source(e), study, e.series_uid,
                                      e.sop_instance_uid)
            rows.append((e.sop_instance_uid, e.stored_at, blobs[i]))
    archive.metadata.put_many(rows)
    log.info("wado.metadata_computed", instances=len(rows))


def metadata_etag(entries: list, base: str) -> str:
    h = hashlib.blake2b(base.encode(), digest_size=12)
    for e in entries:
        h.update(f"|{e.sop_instance_uid}|{e.stored_at!r}".encode())
    return f'"{h.hexdigest()}"'


async def metadata(request: web.Request) -> web.Response:
    """Study, series or instance metadata from the per-instance JSON computed at ingest."""
    entries = _instances(request)
    base = base_url(request)
    tag = metadata_etag(entries, base)
    headers = {"ETag": tag, "Cache-Control": "no-cache", "Vary": "Accept-Encoding"}
    if (cached := not_modified(request, tag)) is not None:
        cached.headers.update(headers)
        return cached
    archive = request.app[ARCHIVE_KEY]
    study = request.match_info["study"]
    blobs = archive.metadata.get_many([(e.sop_instance_uid, e.stored_at) for e in entries])
    if None in blobs:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, _fill_missing, archive, entries, blobs, study)
        except (OSError, DicomJSONError, Part10Error) as exc:
            log.error("wado.metadata_unreadable", path=request.path, error=str(exc))
            raise HTTPProblem(500, "a stored instance cannot be read") from None
    body = absolute_uris(b"[" + b",".join(blobs) + b"]", base.encode())
    return web.Response(body=body, content_type=DICOM_JSON, headers=headers)
