"""WADO-RS (PS3.18 10.4): study/series/instance retrieval as stored, and ``/metadata``.

Retrieval streams ``multipart/related; type="application/dicom"`` part by part: each part's
boundary and headers, then the stored Part 10 file by ``sendfile(2)`` (web/sendfile.py; 1 MiB
reads off the loop where sendfile cannot be used); the Content-Length is known from the index,
nothing is held in memory. Each part says its ``transfer-syntax=``.

Accept: ``*/*``, ``multipart/*`` or ``multipart/related; type="application/dicom"`` with
``transfer-syntax=*`` serve as stored; a named ``transfer-syntax`` is served when the instances are
stored in it; no ``transfer-syntax`` means Explicit VR Little Endian (PS3.18 default), served
when stored that way. Anything else is 406: transcoding comes with the pixels work.

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
from hpacs.store.metadata import absolute_uris, compute_source
from hpacs.store.tiers import open_source
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
        for uid in db.series_instances(se_uid):
            entry = db.get_instance(uid)
            if entry is not None:
                out.append(entry)
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


def acceptable_syntaxes(accept: str | None) -> set[str]:
    """Transfer syntaxes an Accept header allows for application/dicom parts (ANY: as stored)."""
    if not accept:
        return {ANY}
    allowed: set[str] = set()
    for media, opts in media_ranges(accept):
        if media in ("*/*", "multipart/*"):
            allowed.add(ANY)
        elif media == "multipart/related":
            if opts.get("type", "application/dicom").lower() != "application/dicom":
                continue
            allowed.add(opts.get("transfer-syntax", EXPLICIT_VR_LE))
    return allowed


# -- retrieval ------------------------------------------------------------------------------


async def retrieve(request: web.Request) -> web.StreamResponse:
    entries = _instances(request)
    allowed = acceptable_syntaxes(request.headers.get("Accept"))
    if ANY not in allowed:
        refused = sorted({e.transfer_syntax_uid for e in entries} - allowed)
        if refused:
            raise HTTPProblem(
                406, "cannot serve the instances in the transfer syntax asked for (stored as "
                     f"{', '.join(refused)}; transcoding is not available yet): ask for "
                     "transfer-syntax=* to get them as stored",
                accept=request.headers.get("Accept"))
    archive = request.app[ARCHIVE_KEY]
    boundary = uuid.uuid4().hex
    delimiter = f"--{boundary}".encode()
    heads = [b"".join((b"\r\n" if i else b"", delimiter,
                       b"\r\nContent-Type: application/dicom; transfer-syntax=",
                       entry.transfer_syntax_uid.encode(), b"\r\n\r\n"))
             for i, entry in enumerate(entries)]
    tail = b"\r\n" + delimiter + b"--\r\n"
    resp = web.StreamResponse(headers={
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'})
    # the length is known from the index: no chunk framing, so files can go by sendfile
    resp.content_length = sum(map(len, heads)) + sum(e.size for e in entries) + len(tail)
    await resp.prepare(request)
    loop = asyncio.get_running_loop()
    for head, entry in zip(heads, entries, strict=True):
        await resp.write(head)
        try:
            f = await loop.run_in_executor(None, open_source, await archive.source(entry))
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
    await resp.write(tail)
    await resp.write_eof()
    log.debug("wado.retrieved", path=request.path, instances=len(entries),
              bytes=resp.content_length)
    return resp


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
