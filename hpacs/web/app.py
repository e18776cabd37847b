"""The aiohttp application: /healthz and Prometheus /metrics (DICOMweb lands here later)."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hpacs import __version__
from hpacs.metrics import Metrics


def build_app(metrics: Metrics, health: Callable[[], dict]) -> web.Application:
    app = web.Application()

    async def healthz(request: web.Request) -> web.Response:
        state = health()
        status = 200 if state.get("status") == "ok" else 503
        return web.json_response({**state, "version": __version__}, status=status)

    async def prometheus(request: web.Request) -> web.Response:
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", prometheus)
    return app
