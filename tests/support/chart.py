"""The chart as the tests read it: Helm (built from its Go module) renders, PyYAML parses."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import ROOT, needed

CHART = ROOT / "deploy" / "helm" / "shopmesh"
EXAMPLES = sorted((ROOT / "deploy" / "helm" / "examples").glob("*.yaml"))
CLUSTER_BIN = ROOT / ".tools" / "cluster" / "bin"


def cluster_tool(name: str) -> str:
    path = CLUSTER_BIN / name
    if not path.exists():
        needed(name, "run scripts/install-cluster.sh")
    return str(path)


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([cluster_tool("helm"), *args], capture_output=True, text=True, check=check, timeout=120)


def render(*values: Path, sets: tuple[str, ...] = (), release: str = "shopmesh",
           namespace: str = "default") -> list[dict[str, Any]]:
    args = ["template", release, str(CHART), "--namespace", namespace]
    for path in values:
        args += ["-f", str(path)]
    for item in sets:
        args += ["--set", item]
    return [doc for doc in yaml.safe_load_all(helm(*args).stdout) if doc]


def of_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def pod_templates(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet"):
            yield doc["metadata"]["name"], doc["spec"]["template"]


def component(doc: dict[str, Any]) -> str:
    return str(doc["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"])
