"""STOW-RS (PS3.18 10.5): ``POST /studies[/{study}]`` with ``multipart/related;
type="application/dicom"``, through the same durable ingest pipeline as C-STORE.

Each part is streamed from the request body: a prefix is buffered until its Part 10 file meta
parses (that gives the transfer syntax and the SOP class/instance for ``ingestor.begin``), then the
data set bytes go to the receiver chunk by chunk. A part is only finished (made durable and
indexed) once the multipart reader has seen the boundary that ends it; a body cut off inside a part
discards that part. Parts stored before a later error stay stored (the response says which).

Failure reasons (0008,1197) follow the C-STORE statuses: 0xC000 cannot understand (malformed,
truncated, missing UIDs, not Part 10, duplicate refused by policy), 0xA900 data set does not match
(file meta vs data set UIDs; and, for ``POST /studies/{study}``, an instance of another study: it
is refused before it is committed, the spec leaves the code open and 0xA900 is the closest),
0xA700 out of resources. HTTP 200 when all were stored, 202 when some failed, 409 when all failed.
"""

from __future__ import annotations

import zlib

from aiohttp import MultipartReader, web

from hpacs.dicom.part10 import Part10Error, read_file_meta
from hpacs.dicom.scan import HeaderScanner, ScanError
from hpacs.dicom.transfer_syntax import encoding_of
from hpacs.dimse import status
from hpacs.store.ingest import Outcome, Receiver
from hpacs.web.dicomweb import (
    ARCHIVE_KEY,
    HTTPProblem,
    base_url,
    check_uid,
    dicom_json_response,
    log,
)

#: Largest STOW-RS request body accepted (413 above). TODO(config): [web] stow_max_bytes.
MAX_REQUEST_BYTES = 4 << 30
#: Largest Part 10 file meta we buffer before giving up on a part.
MAX_META_BYTES = 1 << 20
READ_CHUNK = 1 << 20
STUDY_UID_TAG = 0x0020000D

_FAILURE_REASON = {
    Outcome.DUPLICATE_REJECTED: status.CANNOT_UNDERSTAND,
    Outcome.INVALID: status.CANNOT_UNDERSTAND,
    Outcome.MISMATCH: status.DATASET_MISMATCH,
    Outcome.OUT_OF_RESOURCES: status.OUT_OF_RESOURCES,
}


class _Aborted(Exception):
    """The request body cannot be read any further (cut off, malformed, too large)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Limited:
    """Counts body bytes and stops the request when it grows past the limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.total = 0

    def add(self, n: int) -> None:
        self.total += n
        if self.total > self.limit:
            raise _Aborted(413, f"request body larger than {self.limit} bytes")


def _check_content_type(request: web.Request) -> None:
    if request.content_type != "multipart/related":
        raise HTTPProblem(415, "STOW-RS takes multipart/related; type=\"application/dicom\"",
                          content_type=request.content_type)
    part_type = _param(request.headers.get("Content-Type", ""), "type")
    if part_type is not None and part_type.lower() != "application/dicom":
        raise HTTPProblem(415, f"unsupported multipart type {part_type!r}: only "
                               "application/dicom is accepted for now")


def _param(header: str, name: str) -> str | None:
    for item in header.split(";")[1:]:
        key, _, value = item.strip().partition("=")
        if key.strip().lower() == name:
            return value.strip().strip('"')
    return None


async def store(request: web.Request) -> web.Response:
    archive = request.app[ARCHIVE_KEY]
    study = request.match_info.get("study")
    if study is not None:
        check_uid(study, "Study Instance UID")
    _check_content_type(request)
    length = request.content_length
    if length is not None and length > MAX_REQUEST_BYTES:
        raise HTTPProblem(413, f"request body larger than {MAX_REQUEST_BYTES} bytes",
                          content_length=length)
    try:
        reader = await request.multipart()
    except (ValueError, AssertionError) as exc:
        raise HTTPProblem(400, f"malformed multipart request: {exc}") from None
    assert isinstance(reader, MultipartReader)

    base = base_url(request)
    referenced: list[dict] = []
    failed: list[dict] = []
    limit = _Limited(MAX_REQUEST_BYTES)
    source = f"stow:{request.remote}"
    abort: _Aborted | None = None
    try:
        while True:
            try:
                part = await reader.next()
            except Exception as exc:  # malformed, or the body was cut off
                raise _Aborted(400, f"malformed multipart body: {exc}") from None
            if part is None:
                break
            if isinstance(part, MultipartReader):
                raise _Aborted(400, "nested multipart bodies are not supported")
            item_failed, item = await _store_part(archive, part, study, limit, source, base)
            (failed if item_failed else referenced).append(item)
    except _Aborted as exc:
        abort = exc
    except (ConnectionError, OSError) as exc:  # the client went away; nothing to answer
        log.warning("stow.aborted", error=str(exc), stored=len(referenced), peer=request.remote)
        raise
    if abort is not None:
        log.warning("stow.aborted", status=abort.status, error=abort.message,
                    stored=len(referenced), peer=request.remote)
        body: dict = {"error": abort.message}
        if referenced:
            body["stored"] = [i["00081155"]["Value"][0] for i in referenced]
        return web.json_response(body, status=abort.status)
    if not referenced and not failed:
        raise HTTPProblem(400, "the request holds no instances")

    response: dict = {}
    if study is not None:
        response["00081190"] = {"vr": "UR", "Value": [f"{base}/studies/{study}"]}
    if failed:
        response["00081198"] = {"vr": "SQ", "Value": failed}
    if referenced:
        response["00081199"] = {"vr": "SQ", "Value": referenced}
    code = 200 if not failed else 202 if referenced else 409
    log.info("stow.done", stored=len(referenced), failed=len(failed), status=code,
             peer=request.remote)
    return dicom_json_response(response, status=code)


def _uids(sop_class: str | None, sop_instance: str | None) -> dict:
    out = {}
    if sop_class:
        out["00081150"] = {"vr": "UI", "Value": [sop_class]}
    if sop_instance:
        out["00081155"] = {"vr": "UI", "Value": [sop_instance]}
    return out


def _failure(sop_class: str | None, sop_instance: str | None, reason: int,
             comment: str) -> tuple[bool, dict]:
    log.warning("stow.refused", sop=sop_instance, reason=hex(reason), comment=comment)
    return True, {**_uids(sop_class, sop_instance),
                  "00081197": {"vr": "US", "Value": [reason]}}


async def _read(part, limit: _Limited) -> bytes:
    try:
        chunk = await part.read_chunk(READ_CHUNK)
    except (ValueError, AssertionError) as exc:
        raise _Aborted(400, f"malformed multipart body: {exc}") from None
    except Exception as exc:  # the body was cut off (content length unmet, connection lost)
        raise _Aborted(400, f"request body cut off: {exc or type(exc).__name__}") from None
    if not chunk and not part.at_eof():
        # aiohttp yields b"" at the end of the stream even when no boundary closed the part
        raise _Aborted(400, "request body ends inside a part")
    limit.add(len(chunk))
    return chunk


async def _drain(part, limit: _Limited) -> None:
    while await _read(part, limit):
        pass


async def _store_part(archive, part, study: str | None, limit: _Limited, source: str,
                      base: str) -> tuple[bool, dict]:
    part_type = (part.headers.get("Content-Type") or "application/dicom").split(";")[0]
    if part_type.strip().lower() != "application/dicom":
        await _drain(part, limit)
        return _failure(None, None, status.CANNOT_UNDERSTAND, f"part type {part_type}")

    # 1. Buffer the head of the part until its file meta parses.
    head = bytearray()
    at_end = False
    meta = None
    while meta is None:
        chunk = await _read(part, limit)
        if chunk:
            head += chunk
        else:
            at_end = True
        if len(head) < 65536 and not at_end:
            continue
        try:
            meta = read_file_meta(bytes(head))
        except Part10Error as exc:
            if at_end or len(head) > MAX_META_BYTES:
                await _drain(part, limit)
                return _failure(None, None, status.CANNOT_UNDERSTAND,
                                f"not a DICOM Part 10 file: {exc}")
    if not meta.transfer_syntax_uid or not meta.sop_instance_uid or not meta.sop_class_uid:
        await _drain(part, limit)
        return _failure(meta.sop_class_uid, meta.sop_instance_uid, status.CANNOT_UNDERSTAND,
                        "no Part 10 file meta information")

    # 2. Stream the data set into the ingest pipeline.
    receiver: Receiver = archive.ingestor.begin(
        meta.sop_class_uid, meta.sop_instance_uid, meta.transfer_syntax_uid, source=source)
    study_check = _StudyCheck(meta.transfer_syntax_uid) if study is not None else None
    try:
        first = bytes(head[meta.dataset_offset:])
        del head
        if first:
            receiver.write(first)
            if study_check is not None:
                study_check.feed(first)
        while not at_end:
            chunk = await _read(part, limit)
            if not chunk:
                break
            receiver.write(chunk)
            if study_check is not None:
                study_check.feed(chunk)
    except BaseException:
        receiver.discard()  # cut off or malformed: nothing of this part is kept
        raise
    if study_check is not None:
        found = study_check.study()
        if found is not None and found != study:
            receiver.discard()
            return _failure(meta.sop_class_uid, meta.sop_instance_uid, status.DATASET_MISMATCH,
                            f"instance of study {found}, not of {study}")

    # 3. Make it durable and indexed.
    result = await receiver.finish()
    if not result.outcome.ok:
        return _failure(meta.sop_class_uid, meta.sop_instance_uid,
                        _FAILURE_REASON[result.outcome], result.comment)
    item = _uids(meta.sop_class_uid, meta.sop_instance_uid)
    url = _retrieve_url(archive, result.record, meta.sop_instance_uid, base)
    if url is not None:
        item["00081190"] = {"vr": "UR", "Value": [url]}
    return False, item


def _retrieve_url(archive, record, sop: str, base: str) -> str | None:
    if record is not None:
        study, series = record.study_uid, record.series_uid
    else:  # a duplicate kept: the instance already stored is the one to retrieve
        entry = archive.db.get_instance(sop)
        series_entry = entry and archive.db.get_series(entry.series_uid)
        if series_entry is None:
            return None
        study, series = series_entry.study_uid, series_entry.series_uid
    return f"{base}/studies/{study}/series/{series}/instances/{sop}"


class _StudyCheck:
    """Finds the Study Instance UID of a data set as it streams (for ``POST /studies/{study}``),
    so an instance of another study is refused before it is committed."""

    def __init__(self, transfer_syntax: str) -> None:
        self.scanner: HeaderScanner | None = None
        self.inflater = None
        try:
            enc = encoding_of(transfer_syntax)
        except KeyError:
            return  # the receiver refuses it anyway
        self.little = enc.little_endian
        self.scanner = HeaderScanner(frozenset({STUDY_UID_TAG}), enc.explicit_vr,
                                     enc.little_endian)
        if enc.deflated:
            self.inflater = zlib.decompressobj(-zlib.MAX_WBITS)

    def feed(self, data: bytes) -> None:
        if self.scanner is None:
            return
        try:
            if self.inflater is not None:
                data = self.inflater.decompress(data)
            self.scanner.feed(data)
        except (ScanError, zlib.error):
            self.scanner = None  # malformed: the receiver reports it

    def study(self) -> str | None:
        if self.scanner is None:
            return None
        try:
            if self.inflater is not None:
                self.scanner.feed(self.inflater.flush())
            raw = self.scanner.finish().get(STUDY_UID_TAG)
        except (ScanError, zlib.error):
            return None
        if raw is None:
            return None
        return raw.decode("ascii", "replace").rstrip("\0 ").strip() or None
