"""Compiled hot paths (Cython), each beside the pure-Python twin it must match.

``hpacs._ext._NAME`` is the compiled module, ``hpacs._ext.NAME`` its twin; :func:`load` is the
one place that picks between them for the modules that use a kernel.
"""

from __future__ import annotations

import importlib
import logging
import os
from types import ModuleType


def load(name: str, what: str) -> tuple[ModuleType, bool]:
    """The compiled ``_NAME`` unless ``HPACS_PURE=1`` asks for the twin ``NAME``; and whether
    the compiled one was loaded. A missing build falls back to the twin (correct, just slower)
    with a warning; the test suite treats that as a failure."""
    if os.environ.get("HPACS_PURE") != "1":
        try:
            return importlib.import_module(f"{__name__}._{name}"), True
        except ImportError:
            logging.getLogger(__name__).warning("compiled %s not built; using the twin", what)
    return importlib.import_module(f"{__name__}.{name}"), False
