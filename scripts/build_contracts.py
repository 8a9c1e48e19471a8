"""Builds the contracts wheel: the shop's messages, gRPC stubs, .pyi types and descriptor set, alone.

    python scripts/build_contracts.py [--out dist]   # dist/shopmesh_contracts-<protos/VERSION>-py3-none-any.whl
    pip install dist/shopmesh_contracts-*.whl

Another team's service installs this, not the mesh: it depends only on what the stubs import
(protobuf, grpcio, googleapis-common-protos), and its modules live under `shopmesh_contracts`,
a name of ours, as googleapis-common-protos' live under `google`: the generated code keeps the
contracts' own package path below it (`shopmesh_contracts.shop.order.v1.order_pb2`), so no
project's `generated/` or `shop/` folder can shadow it. The field rules' generated module comes
along as `shopmesh_contracts.buf.validate` (protovalidate's descriptor, the version the mesh
enforces), and `shopmesh_contracts.PROTOSET` is the path of the descriptor set (grpcurl, ghz,
`python -m gateway --descriptors`). Its version is protos/VERSION: it moves with the contracts
(scripts/check_contracts.py refuses a change that does not move it).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from generate import PROTOSET, generate  # noqa: E402

PACKAGE = "shopmesh_contracts"
DEPENDENCIES = ('"protobuf>=6.31,<8"', '"grpcio>=1.85.1"', '"googleapis-common-protos>=1.70,<2"')

PYPROJECT = """[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "shopmesh-contracts"
version = "{version}"
description = "The shopmesh contracts: messages, gRPC stubs and type stubs for calling the shop's services."
readme = "README.md"
requires-python = ">=3.10"
dependencies = [{dependencies}]

[tool.setuptools.packages.find]
include = ["{package}*"]

[tool.setuptools.package-data]
"*" = ["*.pyi", "py.typed", "*.protoset"]
"""

README = """# shopmesh-contracts {version}

The shopmesh contracts (protos/ of the shopmesh repository, version {version}) as Python stubs:

```python
import grpc
from shopmesh_contracts.shop.order.v1 import order_pb2, order_pb2_grpc

async with grpc.aio.insecure_channel("localhost:50052") as channel:
    orders = order_pb2_grpc.OrderServiceStub(channel)
    order = await orders.CreateOrder(order_pb2.CreateOrderRequest(
        request_id="3f1c...", user_id="alice", lines=[order_pb2.OrderLine(sku="coffee-mug", quantity=1)]), timeout=5)
```

Typed (`.pyi` for every module; `py.typed`). `shopmesh_contracts.PROTOSET` is the descriptor set.
"""

INIT = '''"""The shopmesh contracts {version}: `shopmesh_contracts.shop.<service>.v1` holds each service's stubs."""

from pathlib import Path

__version__ = "{version}"
PROTOSET = Path(__file__).with_name("shopmesh.protoset")  # every contract with its imports, one FileDescriptorSet
'''


def version() -> str:
    return (ROOT / "protos" / "VERSION").read_text().strip()


def build(out: Path) -> Path:
    """The wheel, written into `out`; its path."""
    with tempfile.TemporaryDirectory() as folder:
        project = Path(folder)
        package = project / PACKAGE
        generate(package, package=PACKAGE)
        (package / "__init__.py").write_text(INIT.format(version=version()))
        assert (package / PROTOSET).exists()
        (project / "pyproject.toml").write_text(PYPROJECT.format(version=version(), package=PACKAGE,
                                                                 dependencies=", ".join(DEPENDENCIES)))
        (project / "README.md").write_text(README.format(version=version()))
        out.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                        "--wheel-dir", str(out), str(project)], check=True, stdout=sys.stderr)
        shutil.rmtree(project / "build", ignore_errors=True)
    wheel = out / f"{PACKAGE}-{version()}-py3-none-any.whl"
    if not wheel.exists():
        raise SystemExit(f"build_contracts: no {wheel.name} in {out}")
    return wheel


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="where the wheel goes (default: dist/)")
    args = parser.parse_args()
    wheel = build(args.out)
    print(wheel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
