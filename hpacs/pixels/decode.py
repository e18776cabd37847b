"""Decode the pixel data of a stored instance into numpy arrays equal to ``ds.pixel_array``.

Native syntaxes, deflate and the JPEG family go through pydicom 3's pixel framework (with the
pylibjpeg plugins); RLE Lossless through the same framework with hpacs's compiled RLE decoder
plugged in as the ``"hpacs"`` plugin. pydicom therefore does the Bits Stored correction, planar
configuration, byte order and YBR->RGB conversion exactly as ``ds.pixel_array`` does.

Single-frame access (``frame=i``) decodes only that frame (pydicom's ``pixel_array(ds,
index=i)``: the frame's bytes for native data, its fragment(s) for encapsulated data).

Every problem with the pixel data (missing tags, truncated data or fragments, wrong lengths,
undecodable streams, no decoder for the syntax) raises ``PixelDataError``.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Iterator

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import iter_pixels, pixel_array
from pydicom.pixels.decoders import RLELosslessDecoder
from pydicom.uid import RLELossless

from hpacs.pixels._kernels import PixelDataError

__all__ = ["PLUGIN", "PixelDataError", "Source", "decode", "decoding_plugin", "iter_frames", "load",
           "num_frames"]

#: Name of hpacs's RLE decoder among pydicom's RLE Lossless plugins.
PLUGIN = "hpacs"
Source = bytes | bytearray | memoryview | Dataset | str | os.PathLike

if PLUGIN not in RLELosslessDecoder.available_plugins:
    RLELosslessDecoder.add_plugin(PLUGIN, ("hpacs.pixels.rle", "decode_frame_plugin"))

_ERRORS = (ValueError, AttributeError, KeyError, IndexError, TypeError, EOFError, OSError,
           NotImplementedError, RuntimeError, struct.error, InvalidDicomError)


def load(source: Source) -> Dataset:
    """A Dataset for ``source`` (bytes of a Part 10 file, a path, or a Dataset as is)."""
    if isinstance(source, Dataset):
        return source
    try:
        if isinstance(source, bytes | bytearray | memoryview):
            return pydicom.dcmread(io.BytesIO(bytes(source)), force=True)
        return pydicom.dcmread(source, force=True)
    except _ERRORS as exc:
        raise PixelDataError(f"not a readable DICOM data set: {exc}") from exc


def decoding_plugin(ds: Dataset) -> str:
    """The pydicom decoding plugin hpacs uses for ``ds`` ("" lets pydicom pick)."""
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    return PLUGIN if ts == RLELossless else ""


_plugin = decoding_plugin


def num_frames(source: Source) -> int:
    """Number of frames (1 when Number of Frames is absent or empty)."""
    ds = load(source)
    try:
        return int(ds.get("NumberOfFrames") or 1)
    except (TypeError, ValueError) as exc:
        raise PixelDataError(f"bad Number of Frames: {exc}") from exc


def decode(source: Source, frame: int | None = None) -> np.ndarray:
    """All frames (``frame=None``, the shape of ``ds.pixel_array``) or frame ``frame`` (0-based).

    One frame has shape (rows, cols) or (rows, cols, samples).
    """
    if frame is not None and frame < 0:
        raise PixelDataError(f"frame index {frame} is negative")
    ds = load(source)
    try:
        return pixel_array(ds, index=frame, decoding_plugin=_plugin(ds))
    except _ERRORS as exc:
        raise PixelDataError(f"cannot decode pixel data: {exc}") from exc


def iter_frames(source: Source) -> Iterator[np.ndarray]:
    """Yield the frames one by one (each decoded when reached)."""
    ds = load(source)
    try:
        yield from iter_pixels(ds, decoding_plugin=_plugin(ds))
    except _ERRORS as exc:
        raise PixelDataError(f"cannot decode pixel data: {exc}") from exc
