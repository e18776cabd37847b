"""The aiohttp application: /healthz, Prometheus /metrics and DICOMweb under /dicom-web."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hpacs import __version__
from hpacs.config import ViewerConfig
from hpacs.metrics import Metrics


def build_app(metrics: Metrics, health: Callable[[], dict], archive=None,
              prefetcher=None, viewer: ViewerConfig | None = None) -> web.Application:
    """``archive`` (an opened hpacs.store.archive.Archive) adds the DICOMweb routes,
    ``prefetcher`` (hpacs.store.prefetch.Prefetcher) the ``/api`` operations, ``viewer``
    (enabled) OHIF at ``/`` with the links into it (web/viewer.py, web/ihe.py)."""
    from hpacs.web.middleware import add_server_timing, compress_json, cors, server_timing

    origins = archive.config.server.cors_origins if archive is not None else ()
    app = web.Application(middlewares=[server_timing, cors(origins), compress_json])
    app.on_response_prepare.append(add_server_timing)

    async def healthz(request: web.Request) -> web.Response:
        state = health()
        status = 200 if state.get("status") == "ok" else 503
        return web.json_response({**state, "version": __version__}, status=status)

    async def prometheus(request: web.Request) -> web.Response:
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", prometheus)
    if archive is not None:
        from hpacs.web.dicomweb import ARCHIVE_KEY, PREFIX, build_dicomweb
        from hpacs.web.wado_uri import wado

        app.add_subapp(PREFIX, build_dicomweb(archive))
        app[ARCHIVE_KEY] = archive
        app.router.add_get("/wado", wado)  # WADO-URI (PS3.18 Chapter 9)
    if prefetcher is not None:
        from hpacs.web.api import build_api

        app.add_subapp("/api", build_api(prefetcher))
    if viewer is not None and viewer.enabled:
        from hpacs.web import ihe
        from hpacs.web import viewer as ohif

        if archive is not None:
            ihe.add_routes(app, viewer.compare_priors)
        ohif.add_routes(app, viewer)  # last: its SPA catch-all answers what is left
    return app
