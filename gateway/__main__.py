"""`python -m gateway`: serve the REST gateway with settings from the environment."""

from __future__ import annotations

import asyncio
import logging
import sys

from gateway.app import Gateway
from gateway.errors import own_error
from mesh import lifecycle, logs, metrics, telemetry, workers
from mesh.channels import Upstreams
from mesh.discovery import create_discovery
from mesh.http import HttpServer
from mesh.settings import Settings, SettingsError

logger = logging.getLogger("gateway")


class Running:
    """The gateway's HTTP server with what it calls, as `mesh.lifecycle` stops it."""

    not_ready_means = "/readyz 503"

    def __init__(self, gateway: Gateway, server: HttpServer, upstreams: Upstreams):
        self.gateway, self.server, self.upstreams = gateway, server, upstreams

    async def not_ready(self) -> None:
        self.gateway.draining = True  # /readyz 503: the balancer stops sending new requests

    async def stop(self, grace: float) -> None:
        await self.server.shutdown(grace)  # requests in flight finish, streams end cleanly

    async def close(self) -> None:
        await self.upstreams.close()


async def serve(settings: Settings) -> None:
    discovery = create_discovery(settings)
    upstreams = Upstreams(discovery, settings)
    await upstreams.watch("inventory", "order", "notification")
    gateway = Gateway(settings, upstreams)
    server = await HttpServer().start(gateway.handle, settings.host, settings.port, settings.http_max_body,
                                      "shopmesh-gateway", idle_timeout=settings.http_idle_timeout,
                                      read_timeout=settings.http_read_timeout, errors=own_error,
                                      reuse_port=settings.reuse_port)
    logger.info("gateway serving http://%s:%d (%d routes)", settings.host, settings.port, len(gateway.routes))
    await lifecycle.until_signalled()
    await lifecycle.shut_down(Running(gateway, server, upstreams), settings, discovery)


def main() -> None:
    try:
        settings = Settings.from_env("gateway")
    except SettingsError as error:
        print(f"gateway: bad setting: {error}", file=sys.stderr)
        sys.exit(2)
    logs.configure("gateway", settings.instance_id, settings.log_level, settings.log_format)
    if settings.workers > 1:
        sys.exit(workers.supervise("gateway", settings))
    telemetry.setup(settings)
    metrics.setup(settings.metrics)
    try:
        asyncio.run(serve(settings))
    except OSError as error:
        logger.error("cannot start: %s", error)
        sys.exit(1)
    finally:
        telemetry.shutdown()


if __name__ == "__main__":
    main()
