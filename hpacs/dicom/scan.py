"""The header scanner hpacs uses: the compiled one, unless ``HPACS_PURE=1`` asks for the twin.

Both share one ``ScanError`` class (the .pyx imports it from the twin), so callers catch one type
whichever scanner runs. A missing build falls back to the twin (``hpacs._ext.load``) and says
so in ``COMPILED``; the test suite treats that as a failure.
"""

from __future__ import annotations

from hpacs._ext import load
from hpacs._ext.headscan import MAX_DEPTH, ScanError

__all__ = ["COMPILED", "MAX_DEPTH", "HeaderScanner", "ScanError"]

_impl, COMPILED = load("headscan", "header scanner")
HeaderScanner = _impl.HeaderScanner
