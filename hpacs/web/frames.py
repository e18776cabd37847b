"""WADO-RS ``/frames/{list}`` and ``/bulkdata/{tag}`` (PS3.18 10.4.1.1.4-5), plus the HTTP
caching both share with ``/rendered`` and WADO-URI.

Frames come back as ``multipart/related; type="application/octet-stream"`` (or the image media
type of a compressed stored syntax, when that is what was asked for); every part's Content-Type
carries ``transfer-syntax=`` (OHIF picks its decoder from it).

* Native syntaxes: the frame's bytes, little endian. Implicit/Explicit VR Little Endian are
  sliced from Pixel Data as stored; Explicit VR Big Endian is decoded and re-emitted little
  endian (labelled 1.2.840.10008.1.2.1); Deflated is inflated by the reader (labelled
  1.2.840.10008.1.2.1).
* Encapsulated syntaxes: the frame's compressed bitstream (pydicom.encaps with the Basic or
  Extended Offset Table), labelled with the stored syntax, when the Accept allows the stored
  syntax (``transfer-syntax=*``, the stored UID, ``type="*/*"``, or the image media type of the
  stored syntax); when it asks for ``transfer-syntax=1.2.840.10008.1.2.1`` (the PS3.18 default
  for ``application/octet-stream`` without the parameter) the frame is decoded by
  hpacs.pixels and sent as native little-endian bytes.
* Any stored syntax, asked for as an image media type we can encode (``image/jls`` ->
  JPEG-LS lossless, ``image/jp2`` -> JPEG 2000 lossless, ``image/dicom-rle`` -> RLE, or the
  ``transfer-syntax=`` named with it; lossy ones only when ``pixels.allow_lossy_transcode``):
  each frame is decoded and encoded by ``hpacs.pixels.transcode.encode_frames``.
  Anything else: 406.

Native frames of a hot file go to the socket by ``sendfile(2)`` straight from the page cache,
on the loop: only the element headers are walked (mmap), no frame byte is copied into Python and
there is no thread hop (under load, a hop to the executor cost more than the rest of a frame
request). Anything else is read off the loop.

Stored instances can be replaced (duplicate policy "replace"), so responses are cacheable but
not ``immutable``: ``Cache-Control: private, max-age=3600`` (PHI: never in shared caches), a
strong ETag from the indexed size + store time + representation, and ``If-None-Match`` answered
304.
"""

from __future__ import annotations

import asyncio
import io
import mmap
import os
import re
import uuid

import numpy as np
import pydicom
from aiohttp import web
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames, get_frame

from hpacs.dicom.dicomjson import DicomJSONError
from hpacs.dicom.layout import native_layout
from hpacs.dicom.part10 import Part10Error
from hpacs.dicom.transfer_syntax import (
    DEFLATED_EXPLICIT_VR_LE,
    EXPLICIT_VR_BE,
    EXPLICIT_VR_LE,
    IMPLICIT_VR_LE,
)
from hpacs.pixels import PixelDataError, decode
from hpacs.pixels.transcode import TranscodeError, can_produce, encode_frames
from hpacs.web.dicomweb import HTTPProblem, cache_headers, check_uid, etag, log, not_modified
from hpacs.web.sendfile import can_sendfile, send_file
from hpacs.web.wado import (
    ANY,
    PIXEL_DATA,
    _instances,
    media_ranges,
)

BIG_ENDIAN = EXPLICIT_VR_BE
DEFLATED = DEFLATED_EXPLICIT_VR_LE
NATIVE = frozenset({IMPLICIT_VR_LE, EXPLICIT_VR_LE, BIG_ENDIAN, DEFLATED})
OCTET = "application/octet-stream"
#: Single-frame image media types of compressed syntaxes (PS3.18 Table 8.7.3-x).
IMAGE_TYPES = {
    "1.2.840.10008.1.2.4.50": "image/jpeg", "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg", "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls", "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2", "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx", "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
}
_ALIASES = {"image/x-jls": "image/jls", "image/x-dicom-rle": "image/dicom-rle"}
#: The transfer syntax an image media type means without ``transfer-syntax=`` (PS3.18 8.7.3-x).
DEFAULT_SYNTAX = {"image/jpeg": "1.2.840.10008.1.2.4.50", "image/jls": "1.2.840.10008.1.2.4.80",
                  "image/jp2": "1.2.840.10008.1.2.4.90", "image/jpx": "1.2.840.10008.1.2.4.92",
                  "image/dicom-rle": "1.2.840.10008.1.2.5"}
AS_STORED, DECODE, ENCODE = "", "decode", "encode"
_FRAME_LIST = re.compile(r"[0-9]+(,[0-9]+)*")
_TAG = re.compile(r"[0-9A-Fa-f]{8}")


# -- multipart ------------------------------------------------------------------------------


def multipart(parts: list[tuple[str, bytes]], media_type: str, headers: dict[str, str],
              extra_type: str = "") -> web.Response:
    """A ``multipart/related`` response of (part Content-Type, payload) with Content-Length."""
    boundary = uuid.uuid4().hex
    delimiter = f"--{boundary}".encode()
    chunks = []
    for i, (ctype, payload) in enumerate(parts):
        chunks += [b"\r\n" if i else b"", delimiter, b"\r\nContent-Type: ", ctype.encode(),
                   b"\r\nContent-Length: ", str(len(payload)).encode(), b"\r\n\r\n", payload]
    chunks.append(b"\r\n" + delimiter + b"--\r\n")
    ctype = f'multipart/related; type="{media_type}"{extra_type}; boundary={boundary}'
    return web.Response(body=b"".join(chunks), headers={**headers, "Content-Type": ctype})


# -- Accept for frames / bulkdata -----------------------------------------------------------


def frame_choices(accept: str | None) -> list[tuple[str, str]]:
    """(part media type, transfer syntax or ANY) pairs the Accept header allows, in order."""
    if not accept:
        return [("*", ANY)]
    out = []
    for media, opts in media_ranges(accept):
        if media in ("*/*", "multipart/*"):
            out.append(("*", ANY))
        elif media == "multipart/related":
            kind = opts.get("type", OCTET).lower()
            kind = _ALIASES.get(kind, kind)
            if kind in ("*/*", "*"):
                out.append(("*", opts.get("transfer-syntax", ANY)))
            elif kind == OCTET:
                out.append((OCTET, opts.get("transfer-syntax", EXPLICIT_VR_LE)))
            elif kind in IMAGE_TYPES.values():
                out.append((kind, opts.get("transfer-syntax", ANY)))
    return out


def frame_plan(stored_ts: str, accept: str | None,
               allow_lossy: bool = False) -> tuple[str, str, str]:
    """(response part media type, label transfer syntax, AS_STORED/DECODE/ENCODE) or 406."""
    for media, ts in frame_choices(accept):
        if stored_ts in NATIVE and media in ("*", OCTET):
            if ts == ANY:  # as stored; big endian and deflated leave as Explicit VR LE
                label = stored_ts if stored_ts == IMPLICIT_VR_LE else EXPLICIT_VR_LE
                return OCTET, label, AS_STORED
            if ts in (EXPLICIT_VR_LE, IMPLICIT_VR_LE):  # the same pixel bytes
                return OCTET, ts, AS_STORED
            if ts == stored_ts:
                return OCTET, EXPLICIT_VR_LE, AS_STORED
        elif stored_ts not in NATIVE:
            image_type = IMAGE_TYPES.get(stored_ts)
            if media == "*" and ts in (ANY, stored_ts):
                return image_type or OCTET, stored_ts, AS_STORED
            if media == OCTET and ts in (ANY, stored_ts):
                return OCTET, stored_ts, AS_STORED
            if media == image_type and ts in (ANY, stored_ts):
                return image_type, stored_ts, AS_STORED
            if media in ("*", OCTET) and ts == EXPLICIT_VR_LE:
                return OCTET, EXPLICIT_VR_LE, DECODE
        # another encapsulated syntax: decode and encode each frame
        target = DEFAULT_SYNTAX.get(media) if ts == ANY else ts
        if target is None or target == stored_ts or target not in IMAGE_TYPES:
            continue
        if media not in ("*", IMAGE_TYPES[target]):
            continue
        if can_produce(target, allow_lossy=allow_lossy and ts == target):
            return IMAGE_TYPES[target], target, ENCODE
    raise HTTPProblem(406, f"cannot serve frames stored as {stored_ts} in the media type asked "
                           "for: ask for transfer-syntax=* (as stored), "
                           f"{EXPLICIT_VR_LE} (decoded), or image/jls, image/jp2, "
                           "image/dicom-rle (lossless, encoded)", accept=accept)


# -- reading frames -------------------------------------------------------------------------


def _int(ds: Dataset, keyword: str, default: int | None = None) -> int:
    try:
        value = ds.get(keyword)
        if value in (None, ""):
            if default is None:
                raise PixelDataError(f"{keyword} is missing")
            return default
        return int(value)
    except (TypeError, ValueError) as exc:
        raise PixelDataError(f"bad {keyword}: {exc}") from exc


def frame_count(ds: Dataset) -> int:
    return _int(ds, "NumberOfFrames", 1) or 1


def _native_frame(ds: Dataset, data: bytes, index: int) -> bytes:
    rows, cols = _int(ds, "Rows"), _int(ds, "Columns")
    samples, bits = _int(ds, "SamplesPerPixel", 1), _int(ds, "BitsAllocated")
    pixels = rows * cols * samples
    if bits % 8 == 0:
        size = pixels * bits // 8
        start = index * size
        if start + size > len(data):
            raise PixelDataError(f"Pixel Data too short for frame {index + 1}")
        return bytes(data[start:start + size])
    if bits != 1:
        raise PixelDataError(f"Bits Allocated {bits} is not supported")
    if (index * pixels) % 8 == 0 and pixels % 8 == 0:
        start = index * pixels // 8
        if start + pixels // 8 > len(data):
            raise PixelDataError(f"Pixel Data too short for frame {index + 1}")
        return bytes(data[start:start + pixels // 8])
    bits_arr = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")
    chunk = bits_arr[index * pixels:(index + 1) * pixels]
    if len(chunk) < pixels:
        raise PixelDataError(f"Pixel Data too short for frame {index + 1}")
    return np.packbits(chunk, bitorder="little").tobytes()


def _little_endian_frame(ds: Dataset, index: int) -> bytes:
    """A frame decoded by hpacs.pixels, as native little-endian bytes in the stored layout."""
    arr = decode(ds, index)
    if arr.ndim == 3 and int(ds.get("PlanarConfiguration", 0) or 0) == 1 and (
            ds.file_meta.TransferSyntaxUID in NATIVE):
        arr = arr.transpose(2, 0, 1)
    bits = _int(ds, "BitsAllocated")
    if bits == 1:
        return np.packbits(arr.astype(np.uint8).ravel(), bitorder="little").tobytes()
    dtype = np.dtype(f"<{'i' if arr.dtype.kind == 'i' else 'u'}{max(bits // 8, 1)}")
    return np.ascontiguousarray(arr).astype(dtype, copy=False).tobytes()


def _offsets(ds: Dataset):
    eot = ds.get("ExtendedOffsetTable")
    lengths = ds.get("ExtendedOffsetTableLengths")
    return (eot, lengths) if eot and lengths else None


def read_frames(path, numbers: list[int], accept: str | None,
                allow_lossy: bool = False) -> tuple[str, str, list[bytes]]:
    """(part media type, transfer syntax label, frames) for 1-based ``numbers``."""
    try:
        ds = pydicom.dcmread(path)
    except OSError:
        raise
    except Exception as exc:
        raise PixelDataError(f"not a readable DICOM data set: {exc}") from exc
    stored_ts = str(ds.file_meta.get("TransferSyntaxUID", EXPLICIT_VR_LE))
    if PIXEL_DATA not in ds:
        raise HTTPProblem(404, "the instance has no pixel data (no frames)")
    n = frame_count(ds)
    bad = [k for k in numbers if not 1 <= k <= n]
    if bad:
        raise HTTPProblem(404, f"frame(s) {', '.join(map(str, bad))} out of range 1..{n}")
    media, label, action = frame_plan(stored_ts, accept, allow_lossy)
    if action == ENCODE:
        try:
            return media, label, encode_frames(ds, numbers, label, allow_lossy=allow_lossy)
        except TranscodeError as exc:  # the representation asked for cannot be produced
            log.warning("frames.transcode_failed", target=label, error=str(exc))
            raise HTTPProblem(406, f"cannot produce frames in {label}: {exc}; ask for "
                                   f"transfer-syntax=* (as stored) or {EXPLICIT_VR_LE} "
                                   "(decoded)") from None
    data = ds.PixelData
    out = []
    for k in numbers:
        if stored_ts in NATIVE:
            if stored_ts == BIG_ENDIAN:
                out.append(_little_endian_frame(ds, k - 1))
            else:
                out.append(_native_frame(ds, data, k - 1))
        elif action == DECODE:
            out.append(_little_endian_frame(ds, k - 1))
        else:
            try:
                out.append(get_frame(data, k - 1, number_of_frames=n,
                                     extended_offsets=_offsets(ds)))
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                raise PixelDataError(f"cannot extract frame {k}: {exc}") from exc
    return media, label, out


def read_native_frames(src, numbers: list[int]) -> list[bytes] | None:
    """Frames of native little-endian byte-aligned pixel data sliced straight out of the stored
    bytes (no data set parsing beyond element headers); None when the layout is anything else.
    ``src`` is what the tier-aware read gives: a hot file's path or restored cold bytes."""
    if isinstance(src, io.BytesIO):
        return _slice_frames(src.getbuffer(), numbers)
    with open(src, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return None
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            return _slice_frames(m, numbers)


def frame_spans(buf, numbers: list[int]) -> list[tuple[int, int] | None] | None:
    """(start, end) in ``buf`` of each 1-based frame (None: Pixel Data cut short), or None when
    the layout is not native little endian; 404 for a frame out of range."""
    try:
        layout = native_layout(buf)
    except (DicomJSONError, Part10Error):
        return None
    if layout is None:
        return None
    bad = [k for k in numbers if not 1 <= k <= layout.frames]
    if bad:
        raise HTTPProblem(404, f"frame(s) {', '.join(map(str, bad))} out of range "
                               f"1..{layout.frames}")
    return [layout.frame_span(k) for k in numbers]


def _slice_frames(buf, numbers: list[int]) -> list[bytes] | None:
    spans = frame_spans(buf, numbers)
    if spans is None:
        return None
    out = []
    for k, span in zip(numbers, spans, strict=True):
        if span is None:
            raise PixelDataError(f"Pixel Data too short for frame {k}")
        out.append(bytes(buf[span[0]:span[1]]))
    return out


def parse_frame_list(text: str) -> list[int]:
    if not _FRAME_LIST.fullmatch(text) or len(text) > 10000:
        raise HTTPProblem(400, f"malformed frame list: {text[:80]!r}")
    numbers = [int(k) for k in text.split(",")]
    if 0 in numbers:
        raise HTTPProblem(400, "frame numbers start at 1")
    return numbers


async def in_executor(func, *args):
    """Run ``func`` off the loop; PixelDataError -> 422, unreadable file -> 500."""
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(None, func, *args)
    except PixelDataError as exc:
        raise HTTPProblem(422, f"pixel data cannot be processed: {exc}") from None
    except OSError as exc:
        log.error("wado.unreadable", error=str(exc))
        raise HTTPProblem(500, "a stored instance cannot be read") from None


def _entry(request: web.Request):
    return _instances(request)[0]


def _native_spans(f, numbers: list[int]) -> list[tuple[int, int]] | None:
    """(start, end) in the open file ``f`` of each frame, None when the general path must
    answer (not native little endian, or cut short: it reports that); 404 out of range."""
    if os.fstat(f.fileno()).st_size == 0:
        return None
    with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        spans = frame_spans(m, numbers)
    if spans is None or None in spans:
        return None
    return spans  # type: ignore[return-value]


async def send_native_frames(request: web.Request, path, entry, numbers: list[int],
                             media: str, label: str,
                             headers: dict[str, str]) -> web.StreamResponse | None:
    """The frames of a hot file as a multipart answer whose payloads go by sendfile; None when
    this path does not apply (no plain socket, a file changed or not native)."""
    if not isinstance(path, os.PathLike | str) or not can_sendfile(request):
        return None
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below; an open(2) on the loop
    except OSError:
        return None  # the general path reports it
    try:
        if os.fstat(f.fileno()).st_size != entry.size:
            return None
        spans = _native_spans(f, numbers)
        if spans is None:
            return None
        boundary = uuid.uuid4().hex
        delimiter = f"--{boundary}".encode()
        part_type = f"{media}; transfer-syntax={label}".encode()
        heads = [b"".join((b"\r\n" if i else b"", delimiter, b"\r\nContent-Type: ", part_type,
                           b"\r\nContent-Length: ", str(end - start).encode(), b"\r\n\r\n"))
                 for i, (start, end) in enumerate(spans)]
        tail = b"\r\n" + delimiter + b"--\r\n"
        resp = web.StreamResponse(headers={
            **headers, "Content-Type": f'multipart/related; type="{media}"; '
                                       f"transfer-syntax={label}; boundary={boundary}"})
        resp.content_length = (sum(map(len, heads)) + sum(e - s for s, e in spans)
                               + len(tail))
        await resp.prepare(request)
        if request.method != "HEAD":
            for head, (start, end) in zip(heads, spans, strict=True):
                await resp.write(head)
                await send_file(request, resp, f, end - start, start, wait_in_thread=False)
            await resp.write(tail)
        await resp.write_eof()
        return resp
    finally:
        f.close()


async def frames(request: web.Request) -> web.StreamResponse:
    numbers = parse_frame_list(request.match_info["frames"])
    entry = _entry(request)
    accept = request.headers.get("Accept")
    tag = etag(entry, f"frames/{request.match_info['frames']}/{accept}")
    if (cached := not_modified(request, tag)) is not None:
        return cached
    archive = _archive(request)
    allow_lossy = archive.config.pixels.allow_lossy_transcode
    src = await archive.source(entry)
    if entry.transfer_syntax_uid in (EXPLICIT_VR_LE, IMPLICIT_VR_LE):
        media, label, mode = frame_plan(entry.transfer_syntax_uid, accept, allow_lossy)
        if mode == AS_STORED:
            sent = await send_native_frames(request, src, entry, numbers, media, label,
                                            cache_headers(tag))
            if sent is not None:
                return sent
            payloads = await in_executor(read_native_frames, src, numbers)
            if payloads is not None:
                return multipart([(f"{media}; transfer-syntax={label}", p) for p in payloads],
                                 media, cache_headers(tag), f"; transfer-syntax={label}")
    media, label, payloads = await in_executor(read_frames, src, numbers, accept, allow_lossy)
    part_type = f"{media}; transfer-syntax={label}"
    return multipart([(part_type, p) for p in payloads], media, cache_headers(tag),
                     f"; transfer-syntax={label}")


def _archive(request: web.Request):
    from hpacs.web.dicomweb import ARCHIVE_KEY

    return request.app[ARCHIVE_KEY]


# -- bulkdata -------------------------------------------------------------------------------


_SWAP = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}


def _find(ds: Dataset, tag: int):
    if tag in ds:
        return ds[tag]
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value or ():
                found = _find(item, tag)
                if found is not None:
                    return found
    return None


def read_bulkdata(path, tag: int) -> tuple[str, list[bytes]]:
    """(transfer syntax label, payloads) of element ``tag`` (the first, depth-first)."""
    try:
        ds = pydicom.dcmread(path)
    except OSError:
        raise
    except Exception as exc:
        raise PixelDataError(f"not a readable DICOM data set: {exc}") from exc
    stored_ts = str(ds.file_meta.get("TransferSyntaxUID", EXPLICIT_VR_LE))
    elem = _find(ds, tag)
    if elem is None or elem.value is None:
        raise HTTPProblem(404, f"no element {tag:08X} in the instance")
    if tag == PIXEL_DATA and stored_ts not in NATIVE:
        try:
            frames_ = list(generate_frames(elem.value, number_of_frames=frame_count(ds),
                                           extended_offsets=_offsets(ds)))
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise PixelDataError(f"cannot split the fragments into frames: {exc}") from exc
        return stored_ts, frames_
    value = elem.value
    if isinstance(value, str):
        value = value.encode("utf-8")
    elif isinstance(value, list | tuple):
        value = "\\".join(str(v) for v in value).encode("utf-8")
    elif not isinstance(value, bytes | bytearray):
        value = str(value).encode("utf-8")
    value = bytes(value)
    if stored_ts == BIG_ENDIAN:
        width = 1 if tag == PIXEL_DATA and _int(ds, "BitsAllocated", 16) <= 8 else \
            _SWAP.get(elem.VR, 1)
        if width > 1 and len(value) % width == 0:
            value = np.frombuffer(value, f">u{width}").astype(f"<u{width}").tobytes()
    label = EXPLICIT_VR_LE if stored_ts in (BIG_ENDIAN, DEFLATED) else stored_ts
    return label, [value]


async def bulkdata(request: web.Request) -> web.Response:
    text = request.match_info["tag"]
    if not _TAG.fullmatch(text):
        raise HTTPProblem(400, f"malformed tag: {text[:80]!r} (8 hex digits)")
    entry = _entry(request)
    tag = etag(entry, f"bulk/{text.upper()}")
    if (cached := not_modified(request, tag)) is not None:
        return cached
    path = await _archive(request).source(entry)
    label, payloads = await in_executor(read_bulkdata, path, int(text, 16))
    part_type = f"{OCTET}; transfer-syntax={label}"
    return multipart([(part_type, p) for p in payloads], OCTET, cache_headers(tag))


def add_routes(app: web.Application) -> None:
    inst = "/studies/{study}/series/{series}/instances/{sop}"
    app.router.add_get(inst + "/frames/{frames}", frames)
    app.router.add_get(inst + "/bulkdata/{tag}", bulkdata)


__all__ = ["add_routes", "bulkdata", "check_uid", "frames"]
