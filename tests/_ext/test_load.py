"""hpacs._ext.load: the one place that picks a compiled module or its twin."""

from __future__ import annotations

import importlib
import logging

from hpacs import _ext
from hpacs._ext import _fileio, fileio


def test_compiled_unless_pure_is_asked(monkeypatch):
    monkeypatch.delenv("HPACS_PURE", raising=False)
    assert _ext.load("fileio", "file I/O") == (_fileio, True)
    monkeypatch.setenv("HPACS_PURE", "1")
    assert _ext.load("fileio", "file I/O") == (fileio, False)


def test_a_missing_build_falls_back_to_the_twin_with_a_warning(monkeypatch, caplog):
    monkeypatch.delenv("HPACS_PURE", raising=False)
    real = importlib.import_module

    def no_build(name: str, *args):
        if name == "hpacs._ext._fileio":
            raise ImportError("not built")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", no_build)
    with caplog.at_level(logging.WARNING, logger="hpacs._ext"):
        assert _ext.load("fileio", "file I/O") == (fileio, False)
    assert "compiled file I/O not built; using the twin" in caplog.text
