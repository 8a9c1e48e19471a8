"""`python -m gateway`: serve the gateway with settings from the environment.

    python -m gateway                                       # the shop's contracts, its upstreams by discovery
    python -m gateway --descriptors api.protoset \
        --upstream pkg.v1.Service=host:port [...]            # any gRPC service's (gateway/descriptors.py)
    python -m gateway --upstream pkg.v1.Service=host:port    # its descriptors from its gRPC reflection

Either way REST (its google.api.http rules), SSE, Connect, gRPC-Web and /openapi.json, behind the
same layers; the shop's gateway is the second form with the shop's contracts and discovery.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from gateway.app import Gateway
from gateway.descriptors import Contracts, DescriptorError, load
from gateway.ratelimit import within
from mesh.client.channels import Upstreams
from mesh.client.discovery import StaticDiscovery, create_discovery
from mesh.observe import telemetry
from mesh.server import lifecycle
from mesh.server.bootstrap import start_process
from mesh.server.http import HttpServer, Limits
from mesh.settings import Settings

logger = logging.getLogger("gateway")


class Running:
    """The gateway's HTTP server with what it calls, as `mesh.server.lifecycle` stops it."""

    not_ready_means = "/readyz 503"

    def __init__(self, gateway: Gateway, server: HttpServer, upstreams: Upstreams):
        self.gateway, self.server, self.upstreams = gateway, server, upstreams

    async def not_ready(self) -> None:
        self.gateway.draining = True  # /readyz 503: the balancer stops sending new requests

    async def stop(self, grace: float) -> None:
        await self.server.shutdown(grace)  # requests in flight finish, streams end cleanly

    async def close(self) -> None:
        await self.upstreams.close()


async def serve(settings: Settings, contracts: Contracts | None = None) -> None:
    if contracts is None:
        discovery = create_discovery(settings)
        upstreams = Upstreams(discovery, settings)
        await upstreams.watch("inventory", "order", "notification")
        gateway = Gateway(settings, upstreams)
    else:
        discovery = StaticDiscovery(contracts.addresses)
        upstreams = Upstreams(discovery, settings)
        gateway = Gateway(settings, upstreams, contracts.files, contracts.services)
    limits = Limits.of(settings, shared=lambda address: within(address, settings.trusted_proxies))
    server = await HttpServer(limits).start(gateway.handle, settings.host, settings.port, "shopmesh-gateway",
                                            errors=gateway.own_error, reuse_port=settings.reuse_port)
    logger.info("gateway serving http://%s:%d (%d routes)", settings.host, settings.port, len(gateway.routes))
    await lifecycle.until_signalled()
    await lifecycle.shut_down(Running(gateway, server, upstreams), settings, discovery)


def _arguments(argv: list[str] | None) -> Contracts | None:
    parser = argparse.ArgumentParser(prog="python -m gateway", description=__doc__.splitlines()[0])
    parser.add_argument("--descriptors", type=Path, action="append", default=[], metavar="FILE",
                        help="a FileDescriptorSet (protoc --include_imports --descriptor_set_out); repeatable; "
                             "without it, each upstream's gRPC reflection is asked")
    parser.add_argument("--upstream", action="append", default=[], metavar="package.Service=host:port",
                        help="a service of the descriptors and where it answers; repeatable")
    args = parser.parse_args(argv)
    if not args.descriptors and not args.upstream:
        return None
    try:
        return load(args.descriptors, args.upstream)
    except DescriptorError as error:
        parser.error(str(error))
    raise AssertionError  # parser.error exits


def main(argv: list[str] | None = None) -> None:
    contracts = _arguments(argv)
    settings = start_process("gateway")
    try:
        asyncio.run(serve(settings, contracts))
    except OSError as error:
        logger.error("cannot start: %s", error)
        sys.exit(1)
    finally:
        telemetry.shutdown()


if __name__ == "__main__":
    main()
