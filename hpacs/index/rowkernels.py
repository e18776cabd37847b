"""The row kernels of C-FIND: the encoder and value lookup (``hpacs._ext.findenc``), the
candidate walk and the framing of a page (``hpacs._ext.findwalk``), each compiled unless
``HPACS_PURE=1`` asks for the twin.

Picked by ``hpacs._ext.load``: a missing build falls back to the twin, logs a warning and says
so in ``COMPILED`` / ``WALK_COMPILED``; the test suite treats that as a failure.
"""

from __future__ import annotations

from hpacs._ext import load

__all__ = ["COMPILED", "WALK_COMPILED", "RowEncoder", "RowWalker", "children", "dedup",
           "frame_matches", "resolve", "scan"]

_impl, COMPILED = load("findenc", "C-FIND row kernel")
RowEncoder = _impl.RowEncoder
resolve = _impl.resolve
_walk, WALK_COMPILED = load("findwalk", "C-FIND candidate walk")
RowWalker = _walk.RowWalker
frame_matches = _walk.frame_matches
scan, dedup, children = _walk.scan, _walk.dedup, _walk.children
