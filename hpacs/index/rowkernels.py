"""The row kernels of C-FIND (``hpacs._ext.findenc``): compiled unless ``HPACS_PURE=1`` asks
for the twin.

Same scheme as ``hpacs.pixels._kernels``: a missing build falls back to the twin, logs a
warning and says so in ``COMPILED``; the test suite treats that as a failure.
"""

from __future__ import annotations

import logging
import os

__all__ = ["COMPILED", "RowEncoder", "resolve"]

COMPILED = False

if os.environ.get("HPACS_PURE") == "1":
    from hpacs._ext.findenc import RowEncoder, resolve
else:
    try:
        from hpacs._ext._findenc import RowEncoder, resolve
    except ImportError:  # not built: correct, just slower
        logging.getLogger(__name__).warning("compiled C-FIND row kernel not built; using the twin")
        from hpacs._ext.findenc import RowEncoder, resolve
    else:
        COMPILED = True
