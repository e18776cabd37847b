"""RLE Lossless for whole frames and arrays, on hpacs's own codec (``hpacs/_ext/_rle.pyx``).

The module is also a pydicom decoder and encoder plugin (``is_available``, ``*_DEPENDENCIES``,
``decode_frame_plugin`` / ``encode_frame_plugin``): ``hpacs.pixels.decode`` registers it as
``"hpacs"`` on pydicom's RLE Lossless decoder (``hpacs.pixels.transcode`` on its encoder), so
pydicom's own pipeline (frame access, Bits Stored correction, colour conversion) runs with our
decoder inside it and the result is ``ds.pixel_array`` exactly.
"""

from __future__ import annotations

import numpy as np
from pydicom.uid import RLELossless

from hpacs.pixels._kernels import PixelDataError, rle_decode_frame, rle_encode_frame

__all__ = ["DECODER_DEPENDENCIES", "ENCODER_DEPENDENCIES", "decode_frame_plugin",
           "encode_array", "encode_frame_plugin", "is_available"]

DECODER_DEPENDENCIES: dict[str, tuple[str, ...]] = {RLELossless: ()}
ENCODER_DEPENDENCIES: dict[str, tuple[str, ...]] = {RLELossless: ()}


def is_available(uid: str) -> bool:
    return uid in DECODER_DEPENDENCIES


def decode_frame_plugin(src: bytes, runner) -> bytearray:
    """pydicom decoder-plugin entry point: one frame, sample-interleaved little-endian."""
    if runner.get_option("rle_segment_order", ">") != ">":
        raise PixelDataError("little-endian RLE segment order is not supported")
    out = rle_decode_frame(
        src, runner.rows, runner.columns, runner.samples_per_pixel, runner.bits_allocated
    )
    runner.set_option("planar_configuration", 0)
    return out


def encode_frame_plugin(src: bytes, runner) -> bytes:
    """pydicom encoder-plugin entry point: one frame, sample-interleaved little-endian."""
    if runner.get_option("byteorder", "<") != "<":
        raise PixelDataError("big-endian input to the RLE encoder is not supported")
    return rle_encode_frame(
        bytes(src), runner.rows, runner.columns, runner.samples_per_pixel, runner.bits_allocated
    )


def encode_array(arr: np.ndarray, *, frames: bool | None = None) -> list[bytes]:
    """RLE-encode an array of shape (rows, cols[, samples]) or (frames, rows, cols[, samples]).

    ``frames`` says whether the first axis is frames (default: a 4-D array, or 3-D with a last
    axis that is not 1 or 3 samples). Returns one encoded frame per frame, each byte-for-byte
    what pydicom's native RLE encoder produces for the same data.
    """
    a = np.asarray(arr)
    if a.dtype.kind not in "iub" or a.dtype.itemsize not in (1, 2, 4, 8):
        raise PixelDataError(f"cannot RLE-encode dtype {a.dtype}")
    if frames is None:
        frames = a.ndim == 4 or (a.ndim == 3 and a.shape[-1] not in (1, 3))
    if not frames:
        a = a[None]
    if a.ndim == 3:
        a = a[..., None]
    if a.ndim != 4:
        raise PixelDataError(f"cannot RLE-encode an array of shape {np.shape(arr)}")
    _, rows, cols, spp = a.shape
    le = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
    bits = le.dtype.itemsize * 8
    return [rle_encode_frame(f.tobytes(), rows, cols, spp, bits) for f in le]
