"""The P-DATA receive path the Connection uses: compiled, unless ``HPACS_PURE=1`` asks for the twin.

:class:`PDataFramer` cuts whole PDUs out of an arbitrarily chunked byte stream and splits each
P-DATA-TF into PDVs in the same call (``hpacs/_ext/pdata.py`` has the contract). Picked by
``hpacs._ext.load``: a missing build falls back to the twin, logs a warning and says so in
``COMPILED``; the test suite treats that as a failure.
"""

from __future__ import annotations

from hpacs._ext import load
from hpacs._ext.pdata import MAX_CONTROL_PDU, Entry, split_pdata

__all__ = ["COMPILED", "MAX_CONTROL_PDU", "Entry", "PDataFramer", "split_pdata"]

_impl, COMPILED = load("pdata", "P-DATA path")
PDataFramer = _impl.PDataFramer
