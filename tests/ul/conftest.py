"""Upper-layer tests run against both P-DATA receive paths: the compiled one and its twin."""

from __future__ import annotations

import pytest

from hpacs._ext import _pdata, pdata
from hpacs.ul import connection


@pytest.fixture(
    params=[pytest.param(pdata.PDataFramer, id="pure"), pytest.param(_pdata.PDataFramer, id="c")]
)
def framer_impl(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> type:
    """Every Connection built during the test uses this PDataFramer implementation."""
    monkeypatch.setattr(connection, "PDataFramer", request.param)
    return request.param
