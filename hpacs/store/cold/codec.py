"""Record payload codecs: how one instance's bytes become a record payload and back.

Every codec is lossless; the store checks the original checksum after every decode anyway.
Codec ids are written into records and never reused: a new layout gets a new id.

``CODEC_SPLIT`` (what DICOM files get) codes two parts apart, each decodable on its own:

* the *header section*: every byte of the file except the pixel section, one zstd frame with
  the modality's trained dictionary (``Dictionaries``) once there is one;
* the *pixel section*: native pixels through the prediction filter (``hpacs._ext.predict``),
  each residual stream its own zstd frame (its own entropy tables), at ``PIXEL_PARAMS`` (small
  images: all streams in one frame when that is smaller), unless plain zstd of the section is
  smaller;
  encapsulated (already compressed) pixel data as one zstd frame, or raw if zstd does not
  shrink it; other native layouts (1/32-bit, odd sample counts) as one zstd frame.

Split payload::

    SPLIT_HEAD (pixel offset, pixel length, mode, stream count)
    [PREDICT_HEAD + CONTEXTS counts]        when mode is MODE_PREDICT
    (1 + stream count) frame lengths, u32   header frame first
    header frame, stream frames

A stream frame whose length equals its decoded length is stored raw (zstd is only used when it
is strictly smaller, so the two cannot be confused).

Large pixel sections (``STRIPE_BYTES`` and up) are cut into horizontal *stripes* of rows, each
filtered as an image of its own with its own counts and streams (``MODE_STRIPES``)::

    STRIPES_HEAD (width, height, samples, bits, signed, stripe count)
    per stripe: STRIPE (rows, stream count, CONTEXTS counts)

so the stripes encode and decode on several threads at once (the filter and zstd both release
the GIL): restore latency is what a radiologist waits for. The cost is one row predicted from
the left and one set of entropy tables per stripe (real CT: 4.68x -> ~4.6x, see RESULTS.md).
"""

from __future__ import annotations

import os
import struct
import threading
from concurrent.futures import ThreadPoolExecutor

import zstandard

from hpacs._ext import load
from hpacs.store.cold.dicts import Dictionaries
from hpacs.store.cold.layout import PixelLayout, locate

_filter, FILTER_COMPILED = load("predict", "prediction filter")

__all__ = [
    "CODEC_RAW", "CODEC_SPLIT", "CODEC_ZSTD", "FILTER_COMPILED", "Codec", "parse_split",
    "stripe_rows",
]

#: The original bytes as they are (zstd did not shrink them).
CODEC_RAW = 0
#: The whole file as one zstd frame.
CODEC_ZSTD = 1
#: Header section + pixel section, coded apart (module docstring).
CODEC_SPLIT = 2

MODE_RAW, MODE_ZSTD, MODE_PREDICT, MODE_STRIPES = 0, 1, 2, 3
SPLIT_HEAD = struct.Struct("<QQBH")
PREDICT_HEAD = struct.Struct("<IIHBB")  # width, height, samples, bits, signed
STRIPES_HEAD = struct.Struct("<IIHBBH")  # width, height, samples, bits, signed, stripes
K = _filter.CONTEXTS
_COUNTS = struct.Struct(f"<{K}I")
STRIPE = struct.Struct(f"<IH{K}I")  # rows, stream count, counts per context
#: Pixel sections this large or larger are cut into stripes, one per this many bytes ...
STRIPE_BYTES = 256 * 1024
#: ... up to this many (a 512x512x16-bit CT slice: 2; a 2500x2048 DX: 4).
MAX_STRIPES = 4
#: zstd settings for residual streams (``pixel_level=None``): optimal parsing ("btopt", target
#: length 16) is what gains on residuals (real CT: 4.69x vs 4.40x at level 3, 4.44x at 12) and a
#: small search keeps it cheap: 13 ms per 512x512 CT slice vs 22 ms at level 13, 45 ms at 17.
#: Decoding any level costs the same (restores got no slower).
PIXEL_PARAMS = zstandard.ZstdCompressionParameters(
    strategy=zstandard.STRATEGY_BTOPT,
    window_log=17,
    chain_log=14,
    hash_log=14,
    search_log=1,
    min_match=5,
    target_length=16,
    write_content_size=0,
    write_checksum=0,
    write_dict_id=0,
)
#: Residual planes up to this size are also tried as one frame.
SMALL = 64 * 1024


def stripe_rows(height: int, length: int) -> list[int]:
    """Rows of each stripe of a pixel section (one stripe: the single-image layout)."""
    n = max(1, min(MAX_STRIPES, length // STRIPE_BYTES, height))
    return [height * (i + 1) // n - height * i // n for i in range(n)]


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _stripe_pool() -> ThreadPoolExecutor:
    """Threads for stripes 1.. (the caller codes stripe 0 itself). Stripe tasks never submit
    more work, so callers on any thread (a study restore runs files in parallel) cannot
    deadlock on it."""
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = ThreadPoolExecutor(
                    max_workers=max(1, min(MAX_STRIPES, os.cpu_count() or 1)),
                    thread_name_prefix="hpacs-stripe",
                )
    return _pool


def _map(fn, items: list, threads: bool = True) -> list:
    """[fn(x) for x in items], items 1.. on the stripe pool, item 0 on this thread (and any
    item still queued when this thread is done)."""
    if len(items) == 1 or not threads:
        return [fn(x) for x in items]
    futures = [_stripe_pool().submit(fn, x) for x in items[1:]]
    out = [fn(items[0])]
    for f, x in zip(futures, items[1:], strict=True):
        # a stripe no pool thread has started yet (a busy machine) is coded here rather
        # than waited for
        out.append(fn(x) if f.cancel() else f.result())
    return out


def _decompress(dctx: zstandard.ZstdDecompressor, frame, size: int) -> bytes:
    """One zstd frame that must decode to exactly ``size`` bytes. A content size in the frame
    header is checked first: zstandard would allocate whatever a damaged header declares."""
    declared = zstandard.frame_content_size(frame)
    if declared not in (-1, size):
        raise ValueError(f"frame declares {declared} bytes, not {size}")
    out = dctx.decompress(frame, max_output_size=size)
    if len(out) != size:
        raise ValueError(f"frame decodes to {len(out)} bytes, not {size}")
    return out


def parse_split(payload: bytes | memoryview):
    """(pixel offset, pixel length, mode, predict parameters or None, frames) of a split
    payload; frames[0] is the header frame. ValueError/struct.error when malformed."""
    view = memoryview(payload)
    offset, length, mode, nstreams = SPLIT_HEAD.unpack_from(view)
    pos = SPLIT_HEAD.size
    pixel = None
    if mode == MODE_PREDICT:
        width, height, samples, bits, signed = PREDICT_HEAD.unpack_from(view, pos)
        pos += PREDICT_HEAD.size
        counts = list(_COUNTS.unpack_from(view, pos))
        pos += _COUNTS.size
        if bits not in (8, 16) or nstreams not in (1, K * (bits // 8)):
            raise ValueError("stream count does not match the pixel layout")
        if width * height * samples * (bits // 8) != length or sum(counts) * (bits // 8) != length:
            raise ValueError("pixel parameters do not match the pixel section")
        pixel = (counts, width, height, samples, bits, bool(signed))
    elif mode == MODE_STRIPES:
        width, height, samples, bits, signed, nstripes = STRIPES_HEAD.unpack_from(view, pos)
        pos += STRIPES_HEAD.size
        if bits not in (8, 16) or not 1 <= nstripes <= height:
            raise ValueError("bad stripe layout")
        if width * height * samples * (bits // 8) != length:
            raise ValueError("pixel parameters do not match the pixel section")
        stripes = []
        for _ in range(nstripes):
            rows, ns, *counts = STRIPE.unpack_from(view, pos)
            pos += STRIPE.size
            if ns not in (1, K * (bits // 8)) or sum(counts) != rows * width * samples:
                raise ValueError("stripe counts do not match the pixel layout")
            stripes.append((rows, ns, counts))
        if sum(r for r, _, _ in stripes) != height or sum(n for _, n, _ in stripes) != nstreams:
            raise ValueError("stripes do not match the pixel section")
        pixel = (stripes, width, samples, bits, bool(signed))
    elif not (
        (mode == MODE_RAW and nstreams == (1 if length else 0))
        or (mode == MODE_ZSTD and nstreams == 1 and length > 0)
    ):
        raise ValueError(f"bad pixel mode {mode} with {nstreams} streams")
    lengths = struct.unpack_from(f"<{1 + nstreams}I", view, pos)
    pos += 4 * (1 + nstreams)
    if pos + sum(lengths) != len(view):
        raise ValueError("frame lengths do not match the payload")
    frames = []
    for n in lengths:
        frames.append(view[pos : pos + n])
        pos += n
    return offset, length, mode, pixel, frames


class Codec:
    """Encodes on the appending thread; decodes on any thread (one decompressor per thread)."""

    def __init__(
        self,
        dicts: Dictionaries | None = None,
        *,
        level: int = 3,
        pixel_level: int | None = None,
        threads: bool = True,
    ) -> None:
        """``threads``: code the stripes of an image in parallel (False: all on the caller's
        thread, e.g. to measure the single-thread speed)."""
        self.threads = threads
        self.dicts = dicts
        self.level = level
        self.pixel_level = pixel_level
        self._cctx = zstandard.ZstdCompressor(level=level)
        # stream frames: sizes are in the payload already, the record has its own hashes
        self._bare = bare = {
            "write_content_size": False, "write_checksum": False, "write_dict_id": False
        }
        self._fast = zstandard.ZstdCompressor(level=level, **bare)
        self._dict_cctx: dict[int, zstandard.ZstdCompressor] = {}
        self._local = threading.local()

    # -- helpers ------------------------------------------------------------------------------

    def _dctx(self, dict_id: int = 0) -> zstandard.ZstdDecompressor:
        cache = getattr(self._local, "dctx", None)
        if cache is None:
            cache = self._local.dctx = {}
        d = cache.get(dict_id)
        if d is None:
            if dict_id:
                d = zstandard.ZstdDecompressor(dict_data=self.dicts.get(dict_id))
            else:
                d = zstandard.ZstdDecompressor()
            cache[dict_id] = d
        return d

    def _pctx(self) -> zstandard.ZstdCompressor:
        """This thread's compressor of residual streams (stripes encode on several threads)."""
        c = getattr(self._local, "pctx", None)
        if c is None:
            if self.pixel_level is None:
                c = zstandard.ZstdCompressor(compression_params=PIXEL_PARAMS)
            else:
                c = zstandard.ZstdCompressor(level=self.pixel_level, **self._bare)
            self._local.pctx = c
        return c

    def _header_cctx(self, dict_id: int) -> zstandard.ZstdCompressor:
        if not dict_id:
            return self._fast
        c = self._dict_cctx.get(dict_id)
        if c is None:
            c = self._dict_cctx[dict_id] = zstandard.ZstdCompressor(
                level=self.level, dict_data=self.dicts.get(dict_id), **self._bare
            )
        return c

    def _frame(self, cctx: zstandard.ZstdCompressor, data: bytes | memoryview) -> bytes:
        """zstd frame of ``data``, or ``data`` itself when zstd does not shrink it."""
        if not len(data):
            return b""
        z = cctx.compress(data)
        return z if len(z) < len(data) else bytes(data)

    def _unframe(self, dctx: zstandard.ZstdDecompressor, frame, size: int):
        """A stream frame (raw when it is as long as its contents) decoded to ``size`` bytes."""
        if len(frame) == size:
            return frame
        return _decompress(dctx, frame, size)

    # -- encode -------------------------------------------------------------------------------

    def encode(self, data: bytes, *, modality: str = "") -> tuple[int, int, bytes]:
        """(codec, dictionary id, payload) for ``data``."""
        data = bytes(data)
        layout = locate(data)
        if layout is None:
            z = self._cctx.compress(data)
            if len(z) < len(data):
                return CODEC_ZSTD, 0, z
            return CODEC_RAW, 0, data
        header = data[: layout.offset] + data[layout.offset + layout.length :]
        dict_id = 0
        if self.dicts is not None:
            dict_id = self.dicts.for_modality(modality or layout.modality, header)
        head_frame = self._header_cctx(dict_id).compress(header)
        pixels = memoryview(data)[layout.offset : layout.offset + layout.length]
        extra = b""
        # plain zstd of the pixel section: the answer for compressed pixels, and the yardstick
        # the filter must beat (graphics-like or tiny images can do better without it)
        frame = self._frame(self._fast, pixels)
        mode = MODE_ZSTD if len(frame) < layout.length else MODE_RAW
        streams = [frame] if layout.length else []
        if layout.filter:
            p_mode, p_streams, p_extra = self._predict(layout, pixels)
            if sum(map(len, p_streams)) + 4 * len(p_streams) + len(p_extra) < len(frame) + 4:
                mode, streams, extra = p_mode, p_streams, p_extra
        frames = [head_frame, *streams]
        payload = b"".join(
            [
                SPLIT_HEAD.pack(layout.offset, layout.length, mode, len(streams)),
                extra,
                struct.pack(f"<{len(frames)}I", *map(len, frames)),
                *frames,
            ]
        )
        return CODEC_SPLIT, dict_id, payload

    def _predict(self, layout: PixelLayout, pixels: memoryview) -> tuple[int, list[bytes], bytes]:
        rows = stripe_rows(layout.height, layout.length)
        if len(rows) == 1:
            streams, counts = self._predict_image(layout, pixels, layout.height)
            extra = PREDICT_HEAD.pack(
                layout.width, layout.height, layout.samples, layout.bits, layout.signed
            ) + _COUNTS.pack(*counts)
            return MODE_PREDICT, streams, extra
        row_bytes = layout.width * layout.samples * (layout.bits // 8)
        jobs, y = [], 0
        for r in rows:
            jobs.append((pixels[y * row_bytes : (y + r) * row_bytes], r))
            y += r
        coded = _map(lambda job: self._predict_image(layout, *job), jobs, self.threads)
        parts = [STRIPES_HEAD.pack(layout.width, layout.height, layout.samples, layout.bits,
                                   layout.signed, len(rows))]
        streams = []
        for r, (s_streams, counts) in zip(rows, coded, strict=True):
            parts.append(STRIPE.pack(r, len(s_streams), *counts))
            streams.extend(s_streams)
        return MODE_STRIPES, streams, b"".join(parts)

    def _predict_image(
        self, layout: PixelLayout, pixels: memoryview, height: int
    ) -> tuple[list[bytes], list[int]]:
        """(stream frames, counts) of ``height`` rows through the filter (any thread)."""
        planes, counts = _filter.encode(
            pixels, layout.width, height, layout.samples, layout.bits, layout.signed
        )
        n = sum(counts)
        starts = [0]
        for c in counts:
            starts.append(starts[-1] + c)
        view = memoryview(planes)
        pctx = self._pctx()
        streams = []
        for plane in range(layout.bits // 8):
            base = plane * n
            for k in range(K):
                chunk = view[base + starts[k] : base + starts[k + 1]]
                streams.append(self._frame(pctx, chunk))
        if len(planes) <= SMALL:  # per-stream frame overheads may outweigh what they gain
            one = self._frame(pctx, planes)
            if len(one) + 4 < sum(map(len, streams)) + 4 * len(streams):
                streams = [one]
        return streams, counts

    # -- decode -------------------------------------------------------------------------------

    def decode(self, codec: int, dict_id: int, payload: bytes, size: int) -> bytes:
        """The original bytes; ValueError/KeyError/zstandard.ZstdError on a payload that does not
        decode (the caller reports corruption)."""
        if codec == CODEC_RAW:
            return bytes(payload)
        if codec == CODEC_ZSTD:
            return _decompress(self._dctx(), payload, size)
        if codec != CODEC_SPLIT:
            raise ValueError(f"unknown codec {codec}")
        offset, length, mode, pixel, frames = parse_split(payload)
        if length > size:
            raise ValueError("pixel section larger than the record")
        header = _decompress(self._dctx(dict_id), frames[0], size - length)
        if offset > len(header):
            raise ValueError("header section does not match the record")
        if mode == MODE_PREDICT:
            pixels = self._unpredict(frames[1:], *pixel)
        elif mode == MODE_STRIPES:
            pixels = self._unstripe(frames[1:], *pixel)
        elif mode == MODE_ZSTD:
            pixels = self._unframe(self._dctx(), frames[1], length)
        else:
            pixels = frames[1] if len(frames) > 1 else b""
        parts = pixels if isinstance(pixels, list) else [pixels]  # stripes: joined once
        if sum(map(len, parts)) != length:
            raise ValueError("pixel section does not match the record")
        return b"".join((header[:offset], *parts, header[offset:]))

    def _unpredict(self, frames, counts, width, height, samples, bits, signed) -> bytes:
        """Pixels of one filtered image (any thread: each has its own decompressor)."""
        n = sum(counts)
        planes = bytearray(n * (bits // 8))
        dctx = self._dctx()
        if len(frames) == 1:
            planes[:] = self._unframe(dctx, frames[0], len(planes))
            frames = []
        pos = 0
        for i, frame in enumerate(frames):
            size = counts[i % K]
            planes[pos : pos + size] = self._unframe(dctx, frame, size)
            pos += size
        return _filter.decode(planes, counts, width, height, samples, bits, bool(signed))

    def _unstripe(self, frames, stripes, width, samples, bits, signed) -> list[bytes]:
        """Pixels of each stripe, decoded on the stripe threads (list, in order)."""
        jobs, pos = [], 0
        for rows, ns, counts in stripes:
            jobs.append((frames[pos : pos + ns], counts, rows))
            pos += ns
        return _map(
            lambda job: self._unpredict(job[0], job[1], width, job[2], samples, bits, signed),
            jobs,
            self.threads,
        )
