"""WADO-RS (PS3.18 10.4): study/series/instance retrieval, and ``/metadata``.

Retrieval streams ``multipart/related; type="application/dicom"`` part by part: each part's
boundary and headers, then the stored Part 10 file in 1 MiB reads done off the loop; never more
than one chunk of one file in memory (a transcoded instance is one instance in memory). Each
part's Content-Type says the ``transfer-syntax=`` actually sent.

Accept: ``*/*``, ``multipart/*`` or ``multipart/related; type="application/dicom"`` with
``transfer-syntax=*`` serve as stored; no ``transfer-syntax`` means Explicit VR Little Endian
(PS3.18 8.7.3.5.2 default, what dicomweb-client sends by default); a named ``transfer-syntax``
(several media ranges: in order of q) is served as stored when the instance is stored in it,
else the instance is transcoded (``hpacs.pixels.transcode``, off the loop) to the syntax
``choose_syntax`` picks among those asked for. Lossy output only when the config allows it
(``pixels.allow_lossy_transcode``) and the Accept names the lossy syntax. 406 Not Acceptable,
with a body naming the stored and asked syntaxes, when an instance cannot be produced.

``/metadata`` is PS3.18 F.2 JSON from pydicom's ``Dataset.to_json_dict`` read off the loop
(not yet precomputed at ingest); binary values over 1 KiB become BulkDataURIs
``.../instances/{sop}/bulkdata/{tag}``, served by web/frames.py (as are ``/frames``;
``/rendered`` and ``/thumbnail`` are in web/rendered.py).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pydicom
from aiohttp import web
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement

from hpacs.dicom.transfer_syntax import (
    DEFLATED_EXPLICIT_VR_LE as DEFLATED,
)
from hpacs.dicom.transfer_syntax import EXPLICIT_VR_LE, IMPLICIT_VR_LE
from hpacs.pixels.transcode import TranscodeError, choose_syntax
from hpacs.pixels.workers import run_transcode, transcoded_part10
from hpacs.web.dicomweb import (
    ARCHIVE_KEY,
    HTTPProblem,
    base_url,
    check_uid,
    dicom_json_response,
    log,
)

READ_CHUNK = 1 << 20
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
    loop = asyncio.get_running_loop()
    delimiter = f"--{boundary}".encode()
    sent = 0
    for i, (entry, plan) in enumerate(zip(entries, plans, strict=True)):
        path = archive.hot.absolute(entry.path)
        target, body = await _part(path, entry, plan, allow_lossy,
                                   archive.config.pixels.transcode_workers, resp.prepared)
        if not resp.prepared:
            await resp.prepare(request)
        head = b"".join((b"\r\n" if i else b"", delimiter,
                         b"\r\nContent-Type: application/dicom; transfer-syntax=",
                         target.encode(), b"\r\n\r\n"))
        await resp.write(head)
        if body is not None:
            await resp.write(body)
            sent += len(body)
            continue
        try:
            f = await loop.run_in_executor(None, open, path, "rb")
        except OSError as exc:
            log.error("wado.unreadable", sop=entry.sop_instance_uid, path=entry.path,
                      error=str(exc))
            raise  # headers are out: abort the connection so the client sees a broken body
        try:
            while chunk := await loop.run_in_executor(None, f.read, READ_CHUNK):
                await resp.write(chunk)
                sent += len(chunk)
        finally:
            f.close()
    await resp.write(b"\r\n" + delimiter + b"--\r\n")
    await resp.write_eof()
    log.debug("wado.retrieved", path=request.path, instances=len(entries), bytes=sent)
    return resp


async def _part(path, entry, plan: list[str], allow_lossy: bool, workers: int,
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
            return target, await run_transcode(transcoded_part10, path, target,
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


def instance_json(path: Path, transfer_syntax: str, uri_base: str) -> dict:
    """PS3.18 F.2 JSON of one stored instance, large binary values as BulkDataURIs."""
    defer = None if transfer_syntax == DEFLATED else BULK_THRESHOLD
    ds = pydicom.dcmread(path, defer_size=defer)
    implicit = transfer_syntax == IMPLICIT_VR_LE
    bulk: dict[int, str] = {}
    for tag in list(ds.keys()):
        raw = ds.get_item(tag, keep_deferred=True)
        if (not isinstance(raw, RawDataElement) or raw.value is not None
                or not BULK_THRESHOLD < raw.length < 0xFFFFFFFF):
            continue  # not deferred: small, or already read
        vr = raw.VR
        if vr is None or implicit or vr == "UN":  # as pydicom would resolve it
            if tag == PIXEL_DATA and vr != "UN":
                vr = "OW"
            else:
                try:
                    vr = dictionary_VR(tag)
                except KeyError:
                    vr = "UN"
        if vr in BULK_VRS:  # other deferred values are read when converted below
            bulk[int(tag)] = vr
            del ds[tag]

    def handler(elem) -> str:
        return f"{uri_base}/bulkdata/{int(elem.tag):08X}"

    out = ds.to_json_dict(bulk_data_threshold=BULK_THRESHOLD,
                          bulk_data_element_handler=handler, suppress_invalid_tags=True)
    for tag, vr in bulk.items():
        out[f"{tag:08X}"] = {"vr": vr, "BulkDataURI": f"{uri_base}/bulkdata/{tag:08X}"}
    return dict(sorted(out.items()))


def _metadata_of(entries: list, hot, base: str, study: str) -> list[dict]:
    out = []
    for e in entries:
        uri = f"{base}/studies/{study}/series/{e.series_uid}/instances/{e.sop_instance_uid}"
        out.append(instance_json(hot.absolute(e.path), e.transfer_syntax_uid, uri))
    return out


async def metadata(request: web.Request) -> web.Response:
    entries = _instances(request)
    archive = request.app[ARCHIVE_KEY]
    loop = asyncio.get_running_loop()
    try:
        body = await loop.run_in_executor(None, _metadata_of, entries, archive.hot,
                                          base_url(request), request.match_info["study"])
    except OSError as exc:
        log.error("wado.metadata_unreadable", path=request.path, error=str(exc))
        raise HTTPProblem(500, "a stored instance cannot be read") from None
    return dicom_json_response(body)
