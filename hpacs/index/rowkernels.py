"""The row kernels of C-FIND (``hpacs._ext.findenc``): compiled unless ``HPACS_PURE=1`` asks
for the twin.

Picked by ``hpacs._ext.load``: a missing build falls back to the twin, logs a warning and says
so in ``COMPILED``; the test suite treats that as a failure.
"""

from __future__ import annotations

from hpacs._ext import load

__all__ = ["COMPILED", "RowEncoder", "resolve"]

_impl, COMPILED = load("findenc", "C-FIND row kernel")
RowEncoder = _impl.RowEncoder
resolve = _impl.resolve
