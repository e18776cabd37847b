"""The header scanner hpacs uses: the compiled one, unless ``HPACS_PURE=1`` asks for the twin.

Both share one ``ScanError`` class (the .pyx imports it from the twin), so callers catch one type
whichever scanner runs. A missing build falls back to the twin and says so in ``COMPILED``;
the test suite treats that as a failure.
"""

from __future__ import annotations

import logging
import os

from hpacs._ext.headscan import MAX_DEPTH, ScanError

__all__ = ["COMPILED", "MAX_DEPTH", "HeaderScanner", "ScanError"]

COMPILED: bool
if os.environ.get("HPACS_PURE") == "1":
    from hpacs._ext.headscan import HeaderScanner

    COMPILED = False
else:
    try:
        from hpacs._ext._headscan import HeaderScanner
    except ImportError:  # not built: correct, just slower
        logging.getLogger(__name__).warning(
            "compiled header scanner not built; using the pure-Python twin"
        )
        from hpacs._ext.headscan import HeaderScanner

        COMPILED = False
    else:
        COMPILED = True
