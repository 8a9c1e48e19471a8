"""One typed, frozen settings object per process, read once from the environment.

Every variable is named `SHOPMESH_*`; a malformed value stops the process at
start with a message naming the variable, the value and what was expected.
Tests pass a plain dict instead of `os.environ`.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mesh import topology
from mesh.kernel.faults import FaultSpecError, parse

# The processes and their default ports, as declared once (mesh/services.toml, mesh/topology.py).
TOPOLOGY = topology.load()
SERVICES = tuple(TOPOLOGY)
DATABASE_SERVICES = tuple(name for name, s in TOPOLOGY.items() if s.database)  # each owns a database and its migrations
DEFAULT_PORTS = {name: s.port for name, s in TOPOLOGY.items()}
# Each gRPC service serves Prometheus' /metrics on its own HTTP port; the gateway on its own port.
DEFAULT_METRICS_PORTS = {name: s.metrics_port for name, s in TOPOLOGY.items() if not s.http}
LOG_FORMATS = ("text", "json")
DISCOVERY_KINDS = ("static", "dns", "consul")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
TRACE_EXPORTERS = ("none", "console", "otlp", "file")


WILDCARDS = ("0.0.0.0", "::", "[::]")


def _own_address() -> str:
    """This host's address as others reach it (a container's own IP), for Consul to check."""
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names it."""


class _Reader:
    def __init__(self, environ: Mapping[str, str]):
        self._env = environ

    def raw(self, name: str) -> str | None:
        value = self._env.get(name)
        return None if value is None or value.strip() == "" else value.strip()

    def str(self, name: str, default: str) -> str:
        return self.raw(name) or default

    def choice(self, name: str, default: str, choices: tuple[str, ...], *, upper: bool = False) -> str:
        value = self.str(name, default)
        value = value.upper() if upper else value.lower()
        if value not in choices:
            raise SettingsError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
        return value

    def int(self, name: str, default: int, *, low: int, high: int) -> int:
        raw = self.raw(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(f"{name} must be an integer; got {raw!r}") from None
        if not low <= value <= high:
            raise SettingsError(f"{name} must be from {low} to {high}; got {value}")
        return value

    def seconds(self, name: str, default: float, *, high: float = 3600.0) -> float:
        raw = self.raw(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(f"{name} must be a number of seconds; got {raw!r}") from None
        if not 0 <= value <= high:
            raise SettingsError(f"{name} must be from 0 to {high:g} seconds; got {raw}")
        return value

    def ratio(self, name: str, default: float) -> float:
        raw = self.raw(name)
        try:
            value = default if raw is None else float(raw)
        except ValueError:
            raise SettingsError(f"{name} must be a number from 0 to 1; got {raw!r}") from None
        if not 0 <= value <= 1:
            raise SettingsError(f"{name} must be a number from 0 to 1; got {raw}")
        return value

    def address(self, name: str, default: str) -> str:
        """`host:port`, or several `ip:port` (instances side by side, taken in turn)."""
        value = self.str(name, default)
        parts = [part.strip() for part in value.split(",")]
        for part in parts:
            host, sep, port = part.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
                raise SettingsError(f"{name} must be host:port (or ip:port,ip:port,...); got {value!r}")
            if len(parts) > 1 and not _is_ip(host):
                raise SettingsError(f"{name}: several instances are named by IP address ({host!r} is not one); "
                                    "or give one host name that DNS resolves to all of them")
        return ",".join(parts)


def _auth(env: _Reader) -> dict[str, object]:
    values: dict[str, object] = {
        "auth": env.choice("SHOPMESH_AUTH", "off", ("on", "off")) == "on",
        "jwt_secret": env.str("SHOPMESH_JWT_SECRET", ""),
        "jwt_public_key_file": env.str("SHOPMESH_JWT_PUBLIC_KEY_FILE", ""),
        "jwt_issuer": env.str("SHOPMESH_JWT_ISSUER", ""),
        "jwt_audience": env.str("SHOPMESH_JWT_AUDIENCE", ""),
        "api_keys": _api_keys(env.str("SHOPMESH_API_KEYS", "")),
    }
    if values["jwt_secret"] and values["jwt_public_key_file"]:
        raise SettingsError("set SHOPMESH_JWT_SECRET (HS256) or SHOPMESH_JWT_PUBLIC_KEY_FILE (RS256), not both")
    if values["jwt_secret"] and len(str(values["jwt_secret"]).encode()) < 32:
        raise SettingsError("SHOPMESH_JWT_SECRET must be at least 32 bytes (RFC 7518: HS256 keys as long as the hash)")
    if values["jwt_public_key_file"] and not Path(str(values["jwt_public_key_file"])).is_file():
        raise SettingsError(f"SHOPMESH_JWT_PUBLIC_KEY_FILE: no file at {values['jwt_public_key_file']!r}")
    if values["auth"] and not (values["jwt_secret"] or values["jwt_public_key_file"] or values["api_keys"]):
        raise SettingsError("SHOPMESH_AUTH=on needs SHOPMESH_JWT_SECRET, SHOPMESH_JWT_PUBLIC_KEY_FILE or "
                            "SHOPMESH_API_KEYS")
    return values


def _items(spec: str) -> list[str]:
    """The non-empty entries of a comma-separated setting."""
    return [item for item in (part.strip() for part in spec.split(",")) if item]


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _networks(name: str, spec: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    networks = []
    for item in _items(spec):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise SettingsError(f"{name}: {item!r} is not an IP address or network such as 10.0.0.0/8") from None
    return tuple(networks)


def _origins(name: str, spec: str) -> tuple[str, ...]:
    origins = []
    for item in _items(spec):
        if item != "*" and not re.fullmatch(r"https?://[^/\s:]+(:\d{1,5})?", item):
            raise SettingsError(f"{name}: {item!r} is not an origin such as https://shop.example.com or *")
        origins.append(item.lower())
    return tuple(origins)


def _api_keys(spec: str) -> tuple[tuple[str, str, bool], ...]:
    keys = []
    for item in _items(spec):
        key, sep, who = item.partition("=")
        user, _, role = who.partition(":")
        if not sep or not key or not user or role not in ("", "admin"):
            raise SettingsError(f"SHOPMESH_API_KEYS: {item.split('=')[0][:4]}...: expected KEY=USER or KEY=USER:admin")
        keys.append((key, user, role == "admin"))
    return tuple(keys)


def _tls(env: _Reader) -> dict[str, object]:
    files = {name: env.str(f"SHOPMESH_TLS_{name.upper()}_FILE", "") for name in ("ca", "cert", "key")}
    given = [name for name, path in files.items() if path]
    if given and len(given) != 3:
        missing = ", ".join(f"SHOPMESH_TLS_{n.upper()}_FILE" for n in files if n not in given)
        raise SettingsError(f"mTLS needs all three files; {missing} not set")
    for name, path in files.items():
        if path and not Path(path).is_file():
            raise SettingsError(f"SHOPMESH_TLS_{name.upper()}_FILE: no file at {path!r}")
    return {"tls_ca_file": files["ca"], "tls_cert_file": files["cert"], "tls_key_file": files["key"],
            "tls_server_name": env.str("SHOPMESH_TLS_SERVER_NAME", "shopmesh.internal"),
            "trusted_callers": tuple(_items(env.str("SHOPMESH_TLS_TRUSTED_CALLERS", "gateway")))}


def _faults(spec: str) -> str:
    try:
        parse(spec)
    except FaultSpecError as error:
        raise SettingsError(f"SHOPMESH_FAULTS: {error}") from None
    return spec


@dataclass(frozen=True)
class Settings:
    """What one service process needs to know; see README "Settings" for every variable."""

    service: str
    host: str = "127.0.0.1"
    port: int = 0
    data_dir: Path = Path("data")
    database_url: str = ""
    # PostgreSQL: connections this process keeps open to its database, each reused call after call
    # (a connection opened per burst costs a handshake, type setup and its prepared statements
    # again); a call finding all busy waits for one.
    database_pool_size: int = 10
    # PostgreSQL reached through a pooler in transaction mode (PgBouncer `pool_mode = transaction`):
    # "transaction" keeps every statement inside a transaction (the pooler may hand the next one
    # to another server connection), prepares no statement for reuse, and follows new
    # notifications by polling, since LISTEN needs a session of its own. "none": a direct connection.
    database_pooler: str = "none"
    # PostgreSQL: a statement waiting on a lock longer than this, or running longer than the
    # second, is ended by the server and the call answered UNAVAILABLE (seconds; 0 = never). They
    # bound what a call's deadline cannot: a statement once sent runs to its end (mesh/data/db.py).
    database_lock_timeout: float = 10.0
    database_statement_timeout: float = 30.0
    discovery: str = "static"
    # Static discovery: where each service listens, `host:port` (or `ip:port,ip:port` for several).
    # DNS discovery: one `name:port` per service whose DNS answer lists every instance (a
    # Kubernetes headless Service), resolved by gRPC itself; `dns_server` (`host:port`) asks
    # that server instead of the system's resolver.
    addresses: Mapping[str, str] = field(default_factory=dict)
    dns_server: str = ""
    # Every gRPC server: a client connection older than this is asked to go away (GOAWAY; calls on
    # it finish, streams too), so clients resolve names again and new instances get calls within
    # about this long (+10% jitter). 0: connections live forever.
    max_connection_age: float = 30.0
    # ... and one with no call for this long is closed (GOAWAY). 0: never.
    max_connection_idle: float = 300.0
    instance_id: str = ""
    log_level: str = "INFO"
    log_format: str = "text"
    # Deadline for a downstream call when the caller sent none.
    call_timeout: float = 5.0
    # On SIGTERM: health NOT_SERVING for `shutdown_drain` seconds, then at most
    # `shutdown_grace` seconds for in-flight calls to finish.
    shutdown_drain: float = 0.0
    shutdown_grace: float = 10.0
    # How often the notification process's one watcher looks for rows other instances wrote.
    stream_poll_interval: float = 1.0
    # How often the order service retries undelivered outbox events.
    outbox_interval: float = 2.0
    # How long the order service keeps an event once delivered (longer than any retry or replay
    # can need: a delivered event is never read again), then purges it.
    outbox_retention: float = 7 * 86400.0
    # Inventory: how long an uncommitted reservation holds its stock before it is released.
    reservation_ttl: float = 60.0
    # Inventory: how long a committed or released reservation is kept (a retried Commit or
    # Release is answered from it), then purged.
    reservation_retention: float = 7 * 86400.0
    # Notification: how long a notification is kept (listed, streamed, and answered from when its
    # event is sent again), then purged.
    notification_retention: float = 90 * 86400.0
    # Gateway: largest request body, and the deadline of a call (default and the
    # most a client may ask for with a `grpc-timeout` header).
    http_max_body: int = 1024 * 1024
    http_timeout: float = 10.0
    http_max_timeout: float = 60.0
    # Gateway: how long a request may take to arrive whole, and a kept-alive connection may idle.
    http_read_timeout: float = 30.0
    http_idle_timeout: float = 75.0
    # Gateway: how long a reply may sit unread by its client before the connection is dropped.
    http_send_timeout: float = 60.0
    # Gateway: connections one process holds (0: as many as its file limit allows, with room for its
    # upstream channels), and one client address may hold of them (a trusted proxy's: no share).
    http_max_connections: int = 0
    http_max_connections_per_client: int = 256
    # Gateway: event streams (SSE, Connect, gRPC-Web) one client (its user when signed in, else its
    # address) holds open at once; and the unsent bytes one stream may hold before it is ended.
    http_max_streams_per_client: int = 16
    http_stream_buffer: int = 256 * 1024
    # Gateway: requests a second per client (0: no limit) and the burst a client may send at once.
    rate_limit: float = 0.0
    rate_burst: int = 0
    # Gateway: proxies (addresses or CIDR networks) whose X-Forwarded-For names the real client.
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    # Gateway: web origins (`https://shop.example.com`, or `*`) whose pages may call it (CORS).
    cors_origins: tuple[str, ...] = ()
    # Gateway authentication (gateway/auth.py): off for the zero-setup local mesh.
    auth: bool = False
    jwt_secret: str = ""
    jwt_public_key_file: str = ""
    jwt_issuer: str = ""
    jwt_audience: str = ""
    # API keys: (key, user id, is admin) from `key=user[:admin],...`
    api_keys: tuple[tuple[str, str, bool], ...] = ()
    # mTLS between services (mesh/rpc/tls.py): all three files, or none for plaintext.
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_server_name: str = "shopmesh.internal"
    # Over mTLS: the certificate names (CN or DNS SAN) whose calls may name the end user they act for.
    trusted_callers: tuple[str, ...] = ("gateway",)
    # Clients: a circuit breaker per upstream service opens after this many failures in a row.
    breaker_failures: int = 5
    breaker_cooldown: float = 5.0
    # ... counting a DEADLINE_EXCEEDED only when the call was given at least this long.
    breaker_min_deadline: float = 1.0
    # Every gRPC server: calls served at once; more are refused at once with RESOURCE_EXHAUSTED.
    max_concurrent_rpcs: int = 1000
    # ... and server streams open at once, counted apart: a page following its notifications holds
    # one for as long as it is open, and must not take the place of the calls that make orders.
    max_open_streams: int = 10_000
    # Consul discovery: the agent's HTTP address, the host this process is
    # reached at, and its gRPC check's timing.
    consul_addr: str = "127.0.0.1:8500"
    advertise_host: str = "127.0.0.1"
    consul_check_interval: float = 1.0
    consul_deregister_after: float = 60.0
    consul_wait_seconds: float = 10.0
    version: str = "0.1.0"
    # Tracing: none (free), console, otlp (to a collector) or file (JSON lines).
    trace_exporter: str = "none"
    otlp_endpoint: str = "127.0.0.1:4317"
    trace_file: str = "traces-{instance}.jsonl"
    # Share of new traces recorded (0..1); a call inside a trace follows its parent's choice.
    trace_sample_ratio: float = 1.0
    # Test-only fault injection (mesh/kernel/faults.py); empty in any real deployment.
    faults: str = ""
    # Prometheus metrics: recorded and served at /metrics when on.
    metrics: bool = True
    metrics_port: int = 0
    # Processes of this service on its one port (mesh/server/workers.py), and whether this one is a
    # worker of such a group (its sockets then share the port: SO_REUSEPORT).
    workers: int = 1
    reuse_port: bool = False

    @classmethod
    def from_env(cls, service: str, environ: Mapping[str, str] | None = None) -> Settings:
        if service not in SERVICES:
            raise SettingsError(f"unknown service {service!r}; expected one of {', '.join(SERVICES)}")
        env = _Reader(os.environ if environ is None else environ)
        prefix = f"SHOPMESH_{service.upper()}_"
        host = env.str("SHOPMESH_HOST", "127.0.0.1")
        ports = {
            name: env.int(f"SHOPMESH_{name.upper()}_PORT", DEFAULT_PORTS[name], low=0, high=65535)
            for name in SERVICES
        }
        connect_host = "127.0.0.1" if host in WILDCARDS else host
        addresses = {
            name: env.address(f"SHOPMESH_{name.upper()}_ADDR", f"{connect_host}:{ports[name]}")
            for name in SERVICES
        }
        discovery = env.choice("SHOPMESH_DISCOVERY", "static", DISCOVERY_KINDS)
        if discovery == "dns":
            for name, value in addresses.items():
                if "," in value:
                    raise SettingsError(f"SHOPMESH_{name.upper()}_ADDR: with SHOPMESH_DISCOVERY=dns each service is "
                                        f"one name:port that DNS resolves to every instance; got {value!r}")
        dns_server = env.str("SHOPMESH_DNS_SERVER", "")
        if dns_server:
            env.address("SHOPMESH_DNS_SERVER", dns_server)
        data_dir = Path(env.str("SHOPMESH_DATA_DIR", "data"))
        database_url = env.str(f"{prefix}DATABASE_URL", f"sqlite+aiosqlite:///{data_dir / service}.db")
        if "://" not in database_url:
            raise SettingsError(f"{prefix}DATABASE_URL must be a SQLAlchemy URL; got {database_url!r}")
        workers = env.int("SHOPMESH_WORKERS", 1, low=1, high=256)
        if workers > 1 and ports[service] == 0:
            raise SettingsError(f"SHOPMESH_WORKERS={workers} needs a fixed SHOPMESH_{service.upper()}_PORT for them "
                                "to share; got 0 (any free port)")
        return cls(
            service=service,
            host=host,
            port=ports[service],
            data_dir=data_dir,
            database_url=database_url,
            database_pool_size=env.int("SHOPMESH_DATABASE_POOL_SIZE", 10, low=1, high=1000),
            database_pooler=env.choice("SHOPMESH_DATABASE_POOLER", "none", ("none", "transaction")),
            database_lock_timeout=env.seconds("SHOPMESH_DATABASE_LOCK_TIMEOUT_SECONDS", 10.0, high=3600),
            database_statement_timeout=env.seconds("SHOPMESH_DATABASE_STATEMENT_TIMEOUT_SECONDS", 30.0, high=86400),
            discovery=discovery,
            addresses=addresses,
            dns_server=dns_server,
            max_connection_age=env.seconds("SHOPMESH_MAX_CONNECTION_AGE_SECONDS", 30.0, high=86400),
            max_connection_idle=env.seconds("SHOPMESH_MAX_CONNECTION_IDLE_SECONDS", 300.0, high=86400),
            instance_id=env.str("SHOPMESH_INSTANCE_ID", f"{service}-{socket.gethostname()}-{os.getpid()}"),
            log_level=env.choice("SHOPMESH_LOG_LEVEL", "INFO", LOG_LEVELS, upper=True),
            log_format=env.choice("SHOPMESH_LOG_FORMAT", "text", LOG_FORMATS),
            call_timeout=env.seconds("SHOPMESH_CALL_TIMEOUT_SECONDS", 5.0, high=300),
            shutdown_drain=env.seconds("SHOPMESH_SHUTDOWN_DRAIN_SECONDS", 0.0, high=300),
            shutdown_grace=env.seconds("SHOPMESH_SHUTDOWN_GRACE_SECONDS", 10.0, high=300),
            stream_poll_interval=env.seconds("SHOPMESH_STREAM_POLL_SECONDS", 1.0, high=60),
            outbox_interval=env.seconds("SHOPMESH_OUTBOX_INTERVAL_SECONDS", 2.0, high=300),
            outbox_retention=max(env.seconds("SHOPMESH_OUTBOX_RETENTION_SECONDS", 7 * 86400.0, high=366 * 86400),
                                 60.0),
            reservation_ttl=max(env.seconds("SHOPMESH_RESERVATION_TTL_SECONDS", 60.0, high=86400), 0.1),
            reservation_retention=max(env.seconds("SHOPMESH_RESERVATION_RETENTION_SECONDS", 7 * 86400.0,
                                                  high=366 * 86400), 3600.0),
            notification_retention=max(env.seconds("SHOPMESH_NOTIFICATION_RETENTION_SECONDS", 90 * 86400.0,
                                                   high=10 * 366 * 86400), 86400.0),
            http_max_body=env.int("SHOPMESH_HTTP_MAX_BODY_BYTES", 1024 * 1024, low=1, high=1024**3),
            http_read_timeout=max(env.seconds("SHOPMESH_HTTP_READ_TIMEOUT_SECONDS", 30.0, high=3600), 0.1),
            http_idle_timeout=max(env.seconds("SHOPMESH_HTTP_IDLE_TIMEOUT_SECONDS", 75.0, high=86400), 0.1),
            http_send_timeout=max(env.seconds("SHOPMESH_HTTP_SEND_TIMEOUT_SECONDS", 60.0, high=3600), 0.1),
            http_max_connections=env.int("SHOPMESH_HTTP_MAX_CONNECTIONS", 0, low=0, high=10_000_000),
            http_max_connections_per_client=env.int("SHOPMESH_HTTP_MAX_CONNECTIONS_PER_CLIENT", 256, low=0,
                                                    high=10_000_000),
            http_max_streams_per_client=env.int("SHOPMESH_HTTP_MAX_STREAMS_PER_CLIENT", 16, low=0, high=10_000_000),
            http_stream_buffer=env.int("SHOPMESH_HTTP_STREAM_BUFFER_BYTES", 256 * 1024, low=1024, high=1024**3),
            http_timeout=env.seconds("SHOPMESH_HTTP_TIMEOUT_SECONDS", 10.0, high=3600),
            http_max_timeout=env.seconds("SHOPMESH_HTTP_MAX_TIMEOUT_SECONDS", 60.0, high=3600),
            rate_limit=env.seconds("SHOPMESH_RATE_LIMIT_PER_SECOND", 0.0, high=1_000_000),
            rate_burst=env.int("SHOPMESH_RATE_LIMIT_BURST", 0, low=0, high=1_000_000),
            trusted_proxies=_networks("SHOPMESH_TRUSTED_PROXIES", env.str("SHOPMESH_TRUSTED_PROXIES", "")),
            cors_origins=_origins("SHOPMESH_CORS_ORIGINS", env.str("SHOPMESH_CORS_ORIGINS", "")),
            **_auth(env),
            **_tls(env),
            breaker_failures=env.int("SHOPMESH_BREAKER_FAILURES", 5, low=1, high=1000),
            breaker_cooldown=env.seconds("SHOPMESH_BREAKER_COOLDOWN_SECONDS", 5.0, high=600),
            breaker_min_deadline=env.seconds("SHOPMESH_BREAKER_MIN_DEADLINE_SECONDS", 1.0, high=600),
            max_concurrent_rpcs=env.int("SHOPMESH_MAX_CONCURRENT_RPCS", 1000, low=1, high=1_000_000),
            max_open_streams=env.int("SHOPMESH_MAX_OPEN_STREAMS", 10_000, low=1, high=1_000_000),
            consul_addr=env.str("SHOPMESH_CONSUL_ADDR", env.str("CONSUL_HTTP_ADDR", "127.0.0.1:8500")),
            advertise_host=env.str("SHOPMESH_ADVERTISE_HOST", _own_address() if host in WILDCARDS else connect_host),
            consul_check_interval=env.seconds("SHOPMESH_CONSUL_CHECK_INTERVAL_SECONDS", 1.0, high=60),
            consul_deregister_after=env.seconds("SHOPMESH_CONSUL_DEREGISTER_AFTER_SECONDS", 60.0, high=3600),
            consul_wait_seconds=env.seconds("SHOPMESH_CONSUL_WAIT_SECONDS", 10.0, high=300),
            trace_exporter=env.choice("SHOPMESH_TRACE_EXPORTER", "none", TRACE_EXPORTERS),
            otlp_endpoint=env.str("SHOPMESH_OTLP_ENDPOINT", "127.0.0.1:4317"),
            trace_file=env.str("SHOPMESH_TRACE_FILE", "traces-{instance}.jsonl"),
            trace_sample_ratio=env.ratio("SHOPMESH_TRACE_SAMPLE_RATIO", 1.0),
            faults=_faults(env.str("SHOPMESH_FAULTS", "")),
            metrics=env.choice("SHOPMESH_METRICS", "on", ("on", "off")) == "on",
            metrics_port=env.int(f"{prefix}METRICS_PORT", DEFAULT_METRICS_PORTS.get(service, ports[service]),
                                 low=0, high=65535),
            workers=workers,
            reuse_port=env.str("SHOPMESH_WORKER_OF", "") != "",
        )

    @property
    def tls(self) -> bool:
        return bool(self.tls_ca_file)

    def concerns(self) -> list[str]:
        """Settings that are each valid but together surprise: logged as warnings at start."""
        found = []
        if self.service == "inventory" and self.reservation_ttl < 2 * self.call_timeout:
            found.append(
                f"SHOPMESH_RESERVATION_TTL_SECONDS={self.reservation_ttl:g} is under twice "
                f"SHOPMESH_CALL_TIMEOUT_SECONDS={self.call_timeout:g}: an order that takes its full time can find "
                "its reservation expired and is then cancelled (nothing is lost, but the customer is refused)")
        if self.workers > 1 and self.database_url.startswith("sqlite") and self.service in ("order", "inventory",
                                                                                             "notification"):
            found.append(
                f"SHOPMESH_WORKERS={self.workers} on SQLite: the workers take the database's write lock one at a "
                "time (correct, but an order service measured 0.32x the orders/s of one worker, BENCHMARKS.md); "
                "use PostgreSQL for the writers, or workers for reads and the gateway")
        return found

    @property
    def bind_address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{host}:{self.port}"
