"""The P-DATA receive path the Connection uses: compiled, unless ``HPACS_PURE=1`` asks for the twin.

:class:`PDataFramer` cuts whole PDUs out of an arbitrarily chunked byte stream and splits each
P-DATA-TF into PDVs in the same call (``hpacs/_ext/pdata.py`` has the contract). Same scheme as
``hpacs.dicom.scan``: a missing build falls back to the twin, logs a warning and says so in
``COMPILED``; the test suite treats that as a failure.
"""

from __future__ import annotations

import logging
import os

from hpacs._ext.pdata import MAX_CONTROL_PDU, Entry, split_pdata

__all__ = ["COMPILED", "MAX_CONTROL_PDU", "Entry", "PDataFramer", "split_pdata"]

COMPILED = False

if os.environ.get("HPACS_PURE") == "1":
    from hpacs._ext.pdata import PDataFramer
else:
    try:
        from hpacs._ext._pdata import PDataFramer
    except ImportError:  # not built: correct, just slower
        logging.getLogger(__name__).warning("compiled P-DATA path not built; using the twin")
        from hpacs._ext.pdata import PDataFramer
    else:
        COMPILED = True
