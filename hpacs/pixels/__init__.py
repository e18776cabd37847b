"""Pixel data: decode (pydicom 3 + pylibjpeg, our RLE), modality/VOI to 8 bits (our kernel)."""

from hpacs.pixels._kernels import COMPILED, PixelDataError
from hpacs.pixels.decode import decode, iter_frames, load, num_frames
from hpacs.pixels.render import RenderOptions, render, thumbnail
from hpacs.pixels.rle import encode_array
from hpacs.pixels.voi import VoiParams, to_uint8, voi_params

__all__ = [
    "COMPILED",
    "PixelDataError",
    "RenderOptions",
    "VoiParams",
    "decode",
    "encode_array",
    "iter_frames",
    "load",
    "num_frames",
    "render",
    "thumbnail",
    "to_uint8",
    "voi_params",
]
