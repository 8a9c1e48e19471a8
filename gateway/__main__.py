"""`python -m gateway`: serve the REST gateway with settings from the environment."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from gateway.app import Gateway
from mesh import logs, metrics, telemetry
from mesh.channels import Upstreams
from mesh.discovery import create_discovery
from mesh.http import serve_http
from mesh.settings import Settings, SettingsError

logger = logging.getLogger("gateway")


async def serve(settings: Settings) -> None:
    discovery = create_discovery(settings)
    upstreams = Upstreams(discovery, settings)
    await upstreams.watch("inventory", "order", "notification")
    gateway = Gateway(settings, upstreams)
    server = await serve_http(gateway.handle, settings.host, settings.port, settings.http_max_body, "shopmesh-gateway",
                              idle_timeout=settings.http_idle_timeout, read_timeout=settings.http_read_timeout)
    logger.info("gateway serving http://%s:%d (%d routes)", settings.host, settings.port, len(gateway.router.routes))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    logger.info("shutting down")
    server.close()
    await asyncio.wait_for(server.wait_closed(), settings.shutdown_grace)
    await upstreams.close()
    await discovery.close()
    logger.info("stopped")


def main() -> None:
    try:
        settings = Settings.from_env("gateway")
    except SettingsError as error:
        print(f"gateway: bad setting: {error}", file=sys.stderr)
        sys.exit(2)
    logs.configure("gateway", settings.instance_id, settings.log_level, settings.log_format)
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
