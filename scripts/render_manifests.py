"""Renders the Helm chart with its default values into `deploy/kubernetes/shopmesh.yaml`.

For `kubectl apply -f` users. The one value that differs from the chart's defaults is the bundled
PostgreSQL's password: the chart would make a random one per install, which a file everyone
applies must not carry, so the file names a Secret you create first (see its header).

    python scripts/render_manifests.py           # rewrite deploy/kubernetes/shopmesh.yaml
    python scripts/render_manifests.py --check   # exit 1 if it is stale
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy" / "helm" / "shopmesh"
OUT = ROOT / "deploy" / "kubernetes" / "shopmesh.yaml"
HELM = Path(os.environ.get("SHOPMESH_TOOLS", ROOT / ".tools")) / "cluster" / "bin" / "helm"
HEADER = """\
# Rendered by scripts/render_manifests.py from deploy/helm/shopmesh with its default values.
# Do not edit; change the chart. In namespace default, release name shopmesh:
#
#   kubectl create secret generic shopmesh-postgresql --from-literal=password="$(openssl rand -hex 24)"
#   kubectl apply -f deploy/kubernetes/shopmesh.yaml
#   kubectl port-forward svc/shopmesh-gateway 8080:80    # then http://127.0.0.1:8080/
#
# The image is shopmesh:0.1.0 (scripts/build-image.sh); for anything else, use the chart.
"""


def render(helm: Path = HELM) -> str:
    out = subprocess.run(
        [str(helm), "template", "shopmesh", str(CHART), "--namespace", "default",
         "--set", "postgresql.auth.existingSecret=shopmesh-postgresql"],
        check=True, capture_output=True, text=True,
    ).stdout
    return HEADER + out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args = parser.parse_args()
    if not HELM.exists():
        sys.exit(f"{HELM} not found: run scripts/install-cluster.sh")
    text = render()
    if args.check:
        if not OUT.exists() or OUT.read_text() != text:
            sys.exit(f"{OUT.relative_to(ROOT)} is stale: run python scripts/render_manifests.py")
        return
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(OUT.relative_to(ROOT))


if __name__ == "__main__":
    main()
