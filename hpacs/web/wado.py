"""WADO-RS (PS3.18 10.4): study/series/instance retrieval as stored, and ``/metadata``.

Retrieval streams ``multipart/related; type="application/dicom"`` part by part: each part's
boundary and headers, then the stored Part 10 file in 1 MiB reads done off the loop; never more
than one chunk of one file in memory. Each part says its ``transfer-syntax=``.

Accept: ``*/*``, ``multipart/*`` or ``multipart/related; type="application/dicom"`` with
``transfer-syntax=*`` serve as stored; a named ``transfer-syntax`` is served when the instances are
stored in it; no ``transfer-syntax`` means Explicit VR Little Endian (PS3.18 default), served
when stored that way. Anything else is 406: transcoding comes with the pixels work.

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
from hpacs.store.tiers import open_source
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
    resp = web.StreamResponse(headers={
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'})
    await resp.prepare(request)
    loop = asyncio.get_running_loop()
    delimiter = f"--{boundary}".encode()
    sent = 0
    for i, entry in enumerate(entries):
        head = b"".join((b"\r\n" if i else b"", delimiter,
                         b"\r\nContent-Type: application/dicom; transfer-syntax=",
                         entry.transfer_syntax_uid.encode(), b"\r\n\r\n"))
        await resp.write(head)
        try:
            f = await loop.run_in_executor(None, open_source, await archive.source(entry))
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


def _metadata_of(entries: list, tiers, base: str, study: str) -> list[dict]:
    out = []
    for e in entries:
        uri = f"{base}/studies/{study}/series/{e.series_uid}/instances/{e.sop_instance_uid}"
        out.append(instance_json(tiers.source(e), e.transfer_syntax_uid, uri))
    return out


async def metadata(request: web.Request) -> web.Response:
    entries = _instances(request)
    archive = request.app[ARCHIVE_KEY]
    loop = asyncio.get_running_loop()
    try:
        body = await loop.run_in_executor(None, _metadata_of, entries, archive.tiers,
                                          base_url(request), request.match_info["study"])
    except OSError as exc:
        log.error("wado.metadata_unreadable", path=request.path, error=str(exc))
        raise HTTPProblem(500, "a stored instance cannot be read") from None
    return dicom_json_response(body)
