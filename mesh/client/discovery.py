"""Where the other services are, behind one small interface: static addresses, DNS or Consul.

Static (the default) reads fixed addresses from settings. DNS hands each `name:port` to gRPC's
own DNS resolver (`dns:///name:port`): on Kubernetes a headless Service's name resolves to every
ready pod, and gRPC resolves it again whenever a connection ends, which the servers' maximum
connection age makes happen often enough for new pods to get calls. Consul registers this
process with a native gRPC health check against our grpc.health.v1 service and
follows each upstream's passing instances with blocking queries; if Consul is
unreachable it keeps the last set it knew, says so once per outage, and
re-registers by itself when the agent comes back without us.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Protocol
from urllib.parse import urlparse

from mesh.settings import Settings

logger = logging.getLogger(__name__)

Listener = Callable[[str, Sequence[str]], None]


class Discovery(Protocol):
    async def watch(self, service: str) -> None:
        """Starts following `service`; returns once its first answer is known (or timed out)."""

    def addresses(self, service: str) -> Sequence[str]:
        """`host:port` of every instance of `service` that may take calls now."""

    def subscribe(self, listener: Listener) -> None:
        """Calls `listener(service, addresses)` on the event loop whenever a set changes."""

    async def register(self, service: str, grpc_service: str, port: int) -> None:
        """Announces this process as an instance of `service`, checked on `grpc_service`."""

    async def deregister(self) -> None: ...

    async def wait_unhealthy(self, timeout: float) -> None:
        """Returns once the registry sees this instance failing its check (or after `timeout`)."""

    async def close(self) -> None: ...


# The Consul service meta key naming an instance's /metrics port.
METRICS_PORT_META = "metrics_port"


class StaticDiscovery:
    """Fixed addresses from settings: the zero-setup local mesh (`ip:port,ip:port` for several instances)."""

    def __init__(self, addresses: dict[str, str] | Settings):
        source = addresses.addresses if isinstance(addresses, Settings) else addresses
        self._addresses = {name: addr.split(",") for name, addr in source.items()}

    async def watch(self, service: str) -> None:
        return None

    def addresses(self, service: str) -> Sequence[str]:
        try:
            return self._addresses[service]
        except KeyError:
            raise LookupError(f"no address configured for service {service!r}") from None

    def subscribe(self, listener: Listener) -> None:
        return None

    async def register(self, service: str, grpc_service: str, port: int) -> None:
        return None

    async def deregister(self) -> None:
        return None

    async def wait_unhealthy(self, timeout: float) -> None:
        return None

    async def close(self) -> None:
        return None


class ConsulDiscovery:
    """Consul through py-consul; its blocking calls run on daemon threads, never on the loop."""

    def __init__(self, settings: Settings):
        import consul

        parsed = urlparse(settings.consul_addr if "://" in settings.consul_addr else f"http://{settings.consul_addr}")
        self._consul = consul.Consul(host=parsed.hostname, port=parsed.port or 8500, scheme=parsed.scheme)
        self._settings = settings
        self._sets: dict[str, list[str]] = {}
        self._listeners: list[Listener] = []
        self._stop = threading.Event()
        self._registration: dict | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._outage: set[str] = set()

    # --- following upstreams ---

    async def watch(self, service: str) -> None:
        if service in self._sets:
            return
        self._loop = asyncio.get_running_loop()
        self._sets[service] = []
        first = asyncio.Event()
        thread = threading.Thread(target=self._follow, args=(service, first), name=f"consul-watch-{service}", daemon=True)
        thread.start()
        try:
            await asyncio.wait_for(first.wait(), self._settings.consul_wait_seconds)
        except TimeoutError:
            logger.warning("no answer from Consul about %s yet; calls to it fail until one comes", service)

    def _follow(self, service: str, first: asyncio.Event) -> None:
        import consul

        index = None
        failures = 0
        while not self._stop.is_set():
            try:
                index, entries = self._consul.health.service(
                    service, passing=True, index=index, wait=f"{self._settings.consul_wait_seconds:.0f}s"
                )
            except (consul.ConsulException, OSError, ValueError) as error:  # agent down or restarting
                self._trouble(f"watching {service}", error)
                failures += 1
                index = None  # a restarted agent starts its indexes anew
                self._stop.wait(min(0.2 * 2**failures, 5.0))
                continue
            failures = 0
            self._recovered(f"watching {service}")
            addresses = sorted(
                f"{e['Service']['Address'] or e['Node']['Address']}:{e['Service']['Port']}" for e in entries
            )
            assert self._loop is not None
            if self._stop.is_set():
                return  # closed while the blocking query waited: nobody to tell
            try:
                self._loop.call_soon_threadsafe(self._update, service, addresses, first)
            except RuntimeError:  # the loop closed between the check and the call
                return

    def _update(self, service: str, addresses: list[str], first: asyncio.Event) -> None:
        first.set()
        if addresses == self._sets.get(service):
            return
        if not addresses and self._sets.get(service):
            # Every instance failing at once looks like an outage of ours, not theirs:
            # keep calling the last set rather than nothing.
            logger.warning("Consul lists no passing %s instance; keeping %s", service, self._sets[service])
            return
        logger.info("%s instances: %s", service, ", ".join(addresses) or "none")
        self._sets[service] = addresses
        for listener in self._listeners:
            listener(service, addresses)

    def addresses(self, service: str) -> Sequence[str]:
        return self._sets.get(service, [])

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    # --- announcing this process ---

    async def register(self, service: str, grpc_service: str, port: int) -> None:
        import consul

        s = self._settings
        address = s.advertise_host
        self._registration = dict(
            name=service,
            service_id=s.instance_id,
            address=address,
            port=port,
            tags=["grpc", f"v{s.version}"],
            meta={"version": s.version, "protocol": "grpc", "instance": s.instance_id,
                  # Prometheus' consul_sd_configs scrape this port (see deploy/prometheus/prometheus.yml).
                  **({METRICS_PORT_META: str(s.metrics_port)} if s.metrics and s.metrics_port else {})},
            check={
                **consul.Check.grpc(
                    f"{address}:{port}/{grpc_service}",
                    f"{s.consul_check_interval:g}s",
                    timeout=f"{max(s.consul_check_interval, 1):g}s",
                    deregister=f"{s.consul_deregister_after:g}s",
                    use_tls=True if s.tls else None,
                ),
                # With mTLS the agent checks over TLS, verifying our certificate under the mesh's
                # name and presenting its own (its `tls.defaults` certificate from the same CA).
                **({"TLSServerName": s.tls_server_name} if s.tls else {}),
            },
        )
        await asyncio.to_thread(self._register_now)
        logger.info("registered %s as %s with Consul at %s", service, s.instance_id, s.consul_addr)
        self._keeper = asyncio.create_task(self._keep_registered(), name="consul-keeper")

    def _register_now(self) -> None:
        assert self._registration is not None
        self._consul.agent.service.register(**self._registration)

    async def _keep_registered(self) -> None:
        """A restarted agent (or one that lost us) gets our registration back."""
        while True:
            await asyncio.sleep(self._settings.consul_check_interval * 2)
            try:
                services = await asyncio.to_thread(self._consul.agent.services)
                if self._settings.instance_id not in services:
                    await asyncio.to_thread(self._register_now)
                    logger.info("registered again with Consul (the agent had lost us)")
                self._recovered("registration")
            except Exception as error:
                self._trouble("registration", error)

    async def wait_unhealthy(self, timeout: float) -> None:
        """Polls the agent until our gRPC check is no longer passing, so clients' blocking
        queries drop us before we deregister and stop taking calls."""
        if self._registration is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        check_id = f"service:{self._settings.instance_id}"
        while loop.time() < deadline:
            try:
                checks = await asyncio.to_thread(self._consul.agent.checks)
                status = checks.get(check_id, {}).get("Status")
                if status not in (None, "passing"):
                    logger.info("Consul sees %s as %s", self._settings.instance_id, status)
                    return
            except Exception as error:
                self._trouble("shutdown", error)
                return
            await asyncio.sleep(0.2)
        logger.warning("Consul did not mark %s unhealthy within %.1fs", self._settings.instance_id, timeout)

    async def deregister(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
        if self._registration is None:
            return
        try:
            await asyncio.to_thread(self._consul.agent.service.deregister, self._settings.instance_id)
            logger.info("deregistered %s from Consul", self._settings.instance_id)
        except Exception as error:
            logger.warning("could not deregister from Consul: %s", error)
        self._registration = None

    async def close(self) -> None:
        self._stop.set()
        await self.deregister()

    # --- one log line per outage, not one per call ---

    def _trouble(self, what: str, error: Exception) -> None:
        if what not in self._outage:
            self._outage.add(what)
            logger.warning("Consul unreachable (%s): %s; keeping the last known instances", what, error)

    def _recovered(self, what: str) -> None:
        if what in self._outage:
            self._outage.discard(what)
            logger.info("Consul reachable again (%s)", what)


def dns_target(address: str, server: str = "") -> str:
    """gRPC's target for `name:port` through its DNS resolver, asking `server` when one is named."""
    return f"dns://{server}/{address}"


def create_discovery(settings: Settings) -> Discovery:
    if settings.discovery == "static":
        return StaticDiscovery(dict(settings.addresses))
    if settings.discovery == "dns":
        return StaticDiscovery({name: dns_target(a, settings.dns_server) for name, a in settings.addresses.items()})
    if settings.discovery == "consul":
        return ConsulDiscovery(settings)
    raise ValueError(f"unsupported discovery {settings.discovery!r}")
