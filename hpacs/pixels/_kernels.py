"""The pixel kernels hpacs uses: compiled, unless ``HPACS_PURE=1`` asks for the twins.

Same scheme as ``hpacs.dicom.scan``: a missing build falls back to the twin, logs a warning
and says so in ``COMPILED`` (a dict per kernel); the test suite treats that as a failure.
"""

from __future__ import annotations

import logging
import os

from hpacs._ext.rle import PixelDataError

__all__ = ["COMPILED", "PixelDataError", "minmax", "rle_decode_frame", "rle_encode_frame",
           "window_u8"]

COMPILED: dict[str, bool] = {"rle": False, "voi": False}

if os.environ.get("HPACS_PURE") == "1":
    from hpacs._ext.rle import decode_frame as rle_decode_frame
    from hpacs._ext.rle import encode_frame as rle_encode_frame
    from hpacs._ext.voi import minmax, window_u8
else:
    try:
        from hpacs._ext._rle import decode_frame as rle_decode_frame
        from hpacs._ext._rle import encode_frame as rle_encode_frame
    except ImportError:  # not built: correct, just slower
        logging.getLogger(__name__).warning("compiled RLE codec not built; using the twin")
        from hpacs._ext.rle import decode_frame as rle_decode_frame
        from hpacs._ext.rle import encode_frame as rle_encode_frame
    else:
        COMPILED["rle"] = True
    try:
        from hpacs._ext._voi import minmax, window_u8
    except ImportError:
        logging.getLogger(__name__).warning("compiled VOI kernel not built; using the twin")
        from hpacs._ext.voi import minmax, window_u8
    else:
        COMPILED["voi"] = True
