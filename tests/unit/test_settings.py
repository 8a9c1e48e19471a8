from __future__ import annotations

from pathlib import Path

import pytest

from mesh.settings import Settings, SettingsError


def test_defaults_give_the_local_mesh() -> None:
    s = Settings.from_env("order", {})
    assert (s.host, s.port, s.discovery, s.log_format) == ("127.0.0.1", 50052, "static", "text")
    assert s.addresses == {
        "inventory": "127.0.0.1:50051",
        "order": "127.0.0.1:50052",
        "notification": "127.0.0.1:50053",
        "gateway": "127.0.0.1:8080",
    }
    assert s.database_url == f"sqlite+aiosqlite:///{Path('data') / 'order'}.db"


def test_a_reservation_ttl_shorter_than_two_call_timeouts_is_a_concern_of_inventory_only() -> None:
    short = {"SHOPMESH_RESERVATION_TTL_SECONDS": "8", "SHOPMESH_CALL_TIMEOUT_SECONDS": "5"}
    (concern,) = Settings.from_env("inventory", short).concerns()
    assert "SHOPMESH_RESERVATION_TTL_SECONDS=8" in concern and "SHOPMESH_CALL_TIMEOUT_SECONDS=5" in concern
    assert Settings.from_env("order", short).concerns() == []  # the TTL is inventory's to keep
    assert Settings.from_env("inventory", {**short, "SHOPMESH_RESERVATION_TTL_SECONDS": "10"}).concerns() == []
    assert Settings.from_env("inventory", {}).concerns() == []  # the defaults: 60 s against 5 s


def test_every_value_can_be_overridden() -> None:
    s = Settings.from_env(
        "inventory",
        {
            "SHOPMESH_HOST": "0.0.0.0",
            "SHOPMESH_INVENTORY_PORT": "6000",
            "SHOPMESH_ORDER_ADDR": "orders.internal:7000",
            "SHOPMESH_DATA_DIR": "/var/lib/shop",
            "SHOPMESH_LOG_LEVEL": "debug",
            "SHOPMESH_LOG_FORMAT": "JSON",
            "SHOPMESH_CALL_TIMEOUT_SECONDS": "2.5",
        },
    )
    assert (s.port, s.bind_address, s.log_level, s.log_format, s.call_timeout) == (6000, "0.0.0.0:6000", "DEBUG", "json", 2.5)
    assert s.addresses["inventory"] == "127.0.0.1:6000"  # a wildcard bind is reached via loopback
    assert s.addresses["order"] == "orders.internal:7000"
    assert s.database_url == "sqlite+aiosqlite:////var/lib/shop/inventory.db"


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("SHOPMESH_ORDER_PORT", "eighty", "must be an integer"),
        ("SHOPMESH_ORDER_PORT", "70000", "from 0 to 65535"),
        ("SHOPMESH_INVENTORY_ADDR", "nohost", "host:port"),
        ("SHOPMESH_LOG_FORMAT", "xml", "one of text, json"),
        ("SHOPMESH_SHUTDOWN_GRACE_SECONDS", "-1", "from 0 to"),
        ("SHOPMESH_DISCOVERY", "zookeeper", "one of static"),
        ("SHOPMESH_ORDER_DATABASE_URL", "orders.db", "SQLAlchemy URL"),
        ("SHOPMESH_TRACE_SAMPLE_RATIO", "1.5", "from 0 to 1"),
        ("SHOPMESH_TRACE_SAMPLE_RATIO", "half", "from 0 to 1"),
    ],
)
def test_a_bad_value_is_refused_naming_the_variable(name: str, value: str, says: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env("order", {name: value})
    assert name in str(caught.value) and says in str(caught.value)


def test_an_unknown_service_is_refused() -> None:
    with pytest.raises(SettingsError):
        Settings.from_env("payments", {})


def test_the_consul_address_comes_from_consul_http_addr_unless_ours_is_set() -> None:
    assert Settings.from_env("order", {"CONSUL_HTTP_ADDR": "consul.local:8500"}).consul_addr == "consul.local:8500"
    env = {"CONSUL_HTTP_ADDR": "consul.local:8500", "SHOPMESH_CONSUL_ADDR": "10.0.0.5:8500"}
    assert Settings.from_env("order", env).consul_addr == "10.0.0.5:8500"
    assert Settings.from_env("order", {"SHOPMESH_DISCOVERY": "consul"}).discovery == "consul"


def test_metrics_are_on_with_a_port_per_grpc_service_and_can_be_turned_off() -> None:
    assert [Settings.from_env(s, {}).metrics_port for s in ("inventory", "order", "notification")] == [9101, 9102, 9103]
    assert Settings.from_env("gateway", {"SHOPMESH_GATEWAY_PORT": "8181"}).metrics_port == 8181  # its own port
    assert Settings.from_env("order", {}).metrics
    off = Settings.from_env("order", {"SHOPMESH_METRICS": "off", "SHOPMESH_ORDER_METRICS_PORT": "9999"})
    assert (off.metrics, off.metrics_port) == (False, 9999)
    with pytest.raises(SettingsError, match="SHOPMESH_METRICS must be one of on, off; got 'maybe'"):
        Settings.from_env("order", {"SHOPMESH_METRICS": "maybe"})
    with pytest.raises(SettingsError, match="SHOPMESH_ORDER_METRICS_PORT must be from 0 to 65535"):
        Settings.from_env("order", {"SHOPMESH_ORDER_METRICS_PORT": "70000"})


def test_every_variable_is_documented_in_the_readme() -> None:
    import re

    from tests.conftest import ROOT

    readme = (ROOT / "README.md").read_text()
    names = set(re.findall(r'"(SHOPMESH_[A-Z_]+)"', (ROOT / "mesh" / "settings.py").read_text()))
    assert len(names) > 20
    undocumented = sorted(n for n in names if f"`{n}`" not in readme and n not in readme)
    assert not undocumented, undocumented
    for suffix in ("PORT", "ADDR", "METRICS_PORT"):  # the per-service ones, as the table spells them
        assert f"`SHOPMESH_{{INVENTORY,ORDER,NOTIFICATION}}_{suffix}`" in readme, suffix


def test_static_discovery_takes_several_instances_by_ip() -> None:
    from mesh.client.channels import target
    from mesh.client.discovery import StaticDiscovery

    settings = Settings.from_env("order", {"SHOPMESH_INVENTORY_ADDR": "127.0.0.1:6001, 127.0.0.1:6101"})
    assert StaticDiscovery(settings).addresses("inventory") == ["127.0.0.1:6001", "127.0.0.1:6101"]
    assert target(["127.0.0.1:6001", "127.0.0.1:6101"]) == "ipv4:127.0.0.1:6001,127.0.0.1:6101"
    assert target(["[::1]:6001", "[::1]:6101"]) == "ipv6:[::1]:6001,[::1]:6101"
    assert target(["inventory.internal:6001"]) == "inventory.internal:6001"  # DNS finds every instance
    with pytest.raises(SettingsError, match="several instances are named by IP address"):
        Settings.from_env("order", {"SHOPMESH_INVENTORY_ADDR": "inv-1:6001,inv-2:6001"})
    with pytest.raises(SettingsError, match="must be host:port"):
        Settings.from_env("order", {"SHOPMESH_INVENTORY_ADDR": "127.0.0.1:6001,"})
