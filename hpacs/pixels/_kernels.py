"""The pixel kernels hpacs uses: compiled, unless ``HPACS_PURE=1`` asks for the twins.

Picked by ``hpacs._ext.load``: a missing build falls back to the twin, logs a warning and says
so in ``COMPILED`` (a dict per kernel); the test suite treats that as a failure.
"""

from __future__ import annotations

from hpacs._ext import load
from hpacs._ext.rle import PixelDataError

__all__ = ["COMPILED", "PixelDataError", "minmax", "rle_decode_frame", "rle_encode_frame",
           "window_u8"]

_rle, _rle_compiled = load("rle", "RLE codec")
_voi, _voi_compiled = load("voi", "VOI kernel")
COMPILED: dict[str, bool] = {"rle": _rle_compiled, "voi": _voi_compiled}
rle_decode_frame = _rle.decode_frame
rle_encode_frame = _rle.encode_frame
minmax = _voi.minmax
window_u8 = _voi.window_u8
