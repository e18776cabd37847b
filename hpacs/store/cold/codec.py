"""Record payload codecs: how one instance's bytes become a record payload and back.

Every codec is lossless; the store checks the original checksum after every decode anyway.
Codec ids are written into records and never reused: a new layout gets a new id.
"""

from __future__ import annotations

import threading

import zstandard

__all__ = ["CODEC_RAW", "CODEC_ZSTD", "Codec"]

#: The original bytes as they are (zstd did not shrink them).
CODEC_RAW = 0
#: The whole file as one zstd frame.
CODEC_ZSTD = 1


class Codec:
    """Encodes on the appending thread; decodes on any thread (one decompressor per thread)."""

    def __init__(self, *, level: int = 3) -> None:
        self.level = level
        self._cctx = zstandard.ZstdCompressor(level=level)
        self._local = threading.local()

    def _dctx(self) -> zstandard.ZstdDecompressor:
        d = getattr(self._local, "dctx", None)
        if d is None:
            d = self._local.dctx = zstandard.ZstdDecompressor()
        return d

    def encode(self, data: bytes, *, modality: str = "") -> tuple[int, int, bytes]:
        """(codec, dictionary id, payload) for ``data``."""
        z = self._cctx.compress(data)
        if len(z) < len(data):
            return CODEC_ZSTD, 0, z
        return CODEC_RAW, 0, bytes(data)

    def decode(self, codec: int, dict_id: int, payload: bytes, size: int) -> bytes:
        """The original bytes; ValueError/zstandard.ZstdError on a payload that does not decode."""
        if codec == CODEC_RAW:
            return bytes(payload)
        if codec == CODEC_ZSTD:
            return self._dctx().decompress(payload, max_output_size=size)
        raise ValueError(f"unknown codec {codec}")
