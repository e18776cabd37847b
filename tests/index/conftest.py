"""Fixtures for index tests."""

from __future__ import annotations

import pytest

from hpacs.index.db import IndexDB


@pytest.fixture
def db(tmp_path):
    d = IndexDB(tmp_path / "index", map_size=256 << 20)
    yield d
    d.close()
