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
"""

from __future__ import annotations

import logging
import os
import struct
import threading

import zstandard

from hpacs.store.cold.dicts import Dictionaries
from hpacs.store.cold.layout import PixelLayout, locate

if os.environ.get("HPACS_PURE") == "1":
    from hpacs._ext import predict as _filter

    FILTER_COMPILED = False
else:
    try:
        from hpacs._ext import _predict as _filter
    except ImportError:  # not built: correct, just slower
        logging.getLogger(__name__).warning("compiled prediction filter not built; using twin")
        from hpacs._ext import predict as _filter

        FILTER_COMPILED = False
    else:
        FILTER_COMPILED = True

__all__ = [
    "CODEC_RAW", "CODEC_SPLIT", "CODEC_ZSTD", "FILTER_COMPILED", "Codec", "parse_split"
]

#: The original bytes as they are (zstd did not shrink them).
CODEC_RAW = 0
#: The whole file as one zstd frame.
CODEC_ZSTD = 1
#: Header section + pixel section, coded apart (module docstring).
CODEC_SPLIT = 2

MODE_RAW, MODE_ZSTD, MODE_PREDICT = 0, 1, 2
SPLIT_HEAD = struct.Struct("<QQBH")
PREDICT_HEAD = struct.Struct("<IIHBB")  # width, height, samples, bits, signed
K = _filter.CONTEXTS
_COUNTS = struct.Struct(f"<{K}I")
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
        self, dicts: Dictionaries | None = None, *, level: int = 3, pixel_level: int | None = None
    ) -> None:
        self.dicts = dicts
        self.level = level
        self.pixel_level = pixel_level
        self._cctx = zstandard.ZstdCompressor(level=level)
        # stream frames: sizes are in the payload already, the record has its own hashes
        self._bare = bare = {
            "write_content_size": False, "write_checksum": False, "write_dict_id": False
        }
        self._fast = zstandard.ZstdCompressor(level=level, **bare)
        if pixel_level is None:
            self._pctx = zstandard.ZstdCompressor(compression_params=PIXEL_PARAMS)
        else:
            self._pctx = zstandard.ZstdCompressor(level=pixel_level, **bare)
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

    def _unframe(self, dctx: zstandard.ZstdDecompressor, frame: bytes, size: int) -> bytes:
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
        planes, counts = _filter.encode(
            pixels, layout.width, layout.height, layout.samples, layout.bits, layout.signed
        )
        n = sum(counts)
        starts = [0]
        for c in counts:
            starts.append(starts[-1] + c)
        view = memoryview(planes)
        streams = []
        for plane in range(layout.bits // 8):
            base = plane * n
            for k in range(K):
                chunk = view[base + starts[k] : base + starts[k + 1]]
                streams.append(self._frame(self._pctx, chunk))
        if len(planes) <= SMALL:  # per-stream frame overheads may outweigh what they gain
            one = self._frame(self._pctx, planes)
            if len(one) + 4 < sum(map(len, streams)) + 4 * len(streams):
                streams = [one]
        extra = PREDICT_HEAD.pack(
            layout.width, layout.height, layout.samples, layout.bits, layout.signed
        ) + _COUNTS.pack(*counts)
        return MODE_PREDICT, streams, extra

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
        elif mode == MODE_ZSTD:
            pixels = self._unframe(self._dctx(), bytes(frames[1]), length)
        else:
            pixels = bytes(frames[1]) if len(frames) > 1 else b""
        if len(pixels) != length:
            raise ValueError("pixel section does not match the record")
        return b"".join((header[:offset], pixels, header[offset:]))

    def _unpredict(self, frames, counts, width, height, samples, bits, signed) -> bytes:
        n = sum(counts)
        planes = bytearray(n * (bits // 8))
        dctx = self._dctx()
        if len(frames) == 1:
            planes[:] = self._unframe(dctx, bytes(frames[0]), len(planes))
            frames = []
        pos = 0
        for i, frame in enumerate(frames):
            size = counts[i % K]
            planes[pos : pos + size] = self._unframe(dctx, bytes(frame), size)
            pos += size
        return _filter.decode(planes, counts, width, height, samples, bits, bool(signed))
