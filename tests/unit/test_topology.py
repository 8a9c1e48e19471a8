"""The mesh's processes declared once (mesh/services.toml): what is read from it, and what is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from mesh import settings, topology


def declare(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "services.toml"
    path.write_text(text)
    return path


def test_the_shipped_declaration_is_what_settings_and_the_launcher_use() -> None:
    declared = topology.load(topology.DEFAULT_FILE, {})
    assert settings.SERVICES == tuple(declared) == ("inventory", "order", "notification", "gateway")
    assert settings.DEFAULT_PORTS == {"inventory": 50051, "order": 50052, "notification": 50053, "gateway": 8080}
    assert settings.DATABASE_SERVICES == ("inventory", "order", "notification")
    assert topology.start_order(declared) == ["inventory", "notification", "order", "gateway"]
    assert topology.stop_tiers(declared) == [("gateway",), ("order",), ("inventory", "notification")]


def test_another_file_takes_its_place_by_setting(tmp_path: Path) -> None:
    path = declare(tmp_path, '[a]\nport = 1\nmetrics_port = 2\n[b]\nport = 3\nmetrics_port = 4\ncalls = ["a"]\n')
    found = topology.load(None, {"SHOPMESH_SERVICES_FILE": str(path)})
    assert list(found) == ["a", "b"] and found["b"].calls == ("a",)


@pytest.mark.parametrize(("text", "says"), [
    ("[a]\nport = 0\nmetrics_port = 2\n", "[a]: port must be a number from 1 to 65535"),
    ("[a]\nport = 1\n", "[a]: metrics_port must be"),
    ("[a]\nport = 1\nmetrics_port = 2\nreplicas = 3\n", "[a]: unknown key(s) replicas"),
    ("[a]\nport = 1\nmetrics_port = 2\ncalls = [\"nobody\"]\n", "calls 'nobody', which is no gRPC service"),
    ("[a]\nport = 1\nmetrics_port = 2\ncalls = [\"b\"]\n[b]\nport = 3\nmetrics_port = 4\ncalls = [\"a\"]\n", "circle"),
    ("[Bad-Name]\nport = 1\nmetrics_port = 2\n", "lowercase module name"),
    ("[a]\nport = 1\nmetrics_port = 2\n[a.compose]\nreplicas = 0\n", "[a].compose: replicas"),
    ("[a\n", "services.toml"),
])
def test_a_malformed_declaration_is_refused_naming_the_service_and_key(tmp_path: Path, text: str, says: str) -> None:
    with pytest.raises(topology.TopologyError) as refused:
        topology.load(declare(tmp_path, text), {})
    assert says in str(refused.value)


def test_the_service_down_alert_watches_every_declared_service() -> None:
    """deploy/prometheus/rules.yml is written by hand; a service added to services.toml without its
    `absent(up{...})` term would page nobody when its last instance went (the `== 0` term sees only
    services with a registered instance)."""
    import yaml

    rules = yaml.safe_load((Path(topology.DEFAULT_FILE).parents[1] / "deploy" / "prometheus" / "rules.yml").read_text())
    [down] = [rule for group in rules["groups"] for rule in group["rules"] if rule.get("alert") == "ShopmeshServiceDown"]
    watched = {name for name in settings.SERVICES if f'service="{name}"}})' in down["expr"]}
    assert watched == set(settings.SERVICES), f"not watched by ShopmeshServiceDown: {set(settings.SERVICES) - watched}"
