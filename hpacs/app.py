"""Wires the layers on ONE asyncio loop (uvloop): archive, DICOM server, HTTP server.

Start-up opens the archive (and recovers the index after a crash) before accepting anything;
SIGTERM/SIGINT stop accepting, let in-flight instances finish, commit the index and exit 0.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from aiohttp import web

from hpacs.config import Config
from hpacs.log import get_logger
from hpacs.metrics import Metrics
from hpacs.net.dimse_server import DimseServer
from hpacs.store.archive import Archive, ArchiveLockedError
from hpacs.store.prefetch import Prefetcher
from hpacs.web.app import build_app

log = get_logger("hpacs.app")

#: How long a shutdown waits for associations to finish the message they are in.
SHUTDOWN_GRACE_S = 10.0


class Server:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.metrics = Metrics()
        self.archive = Archive(config)
        self.dimse: DimseServer | None = None
        self.prefetcher: Prefetcher | None = None
        self._http: web.AppRunner | None = None
        self.stopping = False

    def health(self) -> dict:
        dimse = self.dimse
        return {
            "status": "stopping" if self.stopping else "ok",
            "associations": len(dimse.associations) if dimse else 0,
            "instances_in_flight": self.archive.ingestor.in_flight,
        }

    async def start(self) -> None:
        cfg = self.config.server
        await self.archive.open()
        warmer = self.archive.warmer
        self.metrics.metadata_warmed.set_function(lambda: warmer.warmed)
        self.metrics.metadata_pending.set_function(lambda: warmer.pending)
        self.archive.lifecycle.metrics = self.metrics
        await self.archive.lifecycle.start()  # promotion worker, access times, migration rules
        self.prefetcher = Prefetcher(self.archive, self.config.prefetch, self.metrics)
        self.prefetcher.start()
        self.dimse = DimseServer(self.config, self.archive.ingestor, self.metrics,
                                 tiers=self.archive.tiers)
        await self.dimse.start(cfg.host, cfg.dicom_port)
        app = build_app(self.metrics, self.health, archive=self.archive,
                        prefetcher=self.prefetcher, viewer=self.config.viewer)
        self._http = web.AppRunner(app, access_log=None)
        await self._http.setup()
        await web.TCPSite(self._http, cfg.host, cfg.http_port).start()
        log.info("server.started", host=cfg.host, dicom_port=cfg.dicom_port,
                 http_port=cfg.http_port, ae_title=cfg.ae_title, data_dir=str(cfg.data_dir))
        print(f"hpacs ready: DICOM {cfg.ae_title}@{cfg.host}:{cfg.dicom_port}, "
              f"HTTP http://{cfg.host}:{cfg.http_port}, data {cfg.data_dir}", flush=True)

    async def stop(self) -> None:
        self.stopping = True
        if self.dimse is not None:
            await self.dimse.stop(grace=SHUTDOWN_GRACE_S)
        if self._http is not None:
            await self._http.cleanup()
        if self.prefetcher is not None:
            self.prefetcher.stop()
        if hasattr(self.archive, "lifecycle"):
            await self.archive.lifecycle.stop()
        await self.archive.close()
        log.info("server.stopped")


async def serve(config: Config) -> int:
    # Signal handlers first: a SIGTERM right after the ready line must stop us cleanly.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = Server(config)
    try:
        await server.start()
    except ArchiveLockedError as exc:
        print(f"hpacs: {exc}", file=sys.stderr)
        return 3
    except OSError as exc:
        print(f"hpacs: cannot start: {exc}", file=sys.stderr)
        await server.stop()
        return 1
    await stop.wait()
    log.info("server.stopping")
    await server.stop()
    return 0


def run_server(config: Config) -> int:
    import uvloop

    return uvloop.run(serve(config))
