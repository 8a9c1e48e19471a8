"""The contracts wheel, as another team's service uses it: built, installed into an empty venv
with nothing else, and a typed client in a throwaway folder places an order against the mesh."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT
from tests.support.mesh import Launcher, new_product

CLIENT = '''"""Another team's service: it knows the shop only through the shopmesh-contracts wheel."""

import asyncio
import sys
import uuid

import grpc

import shopmesh_contracts
from shopmesh_contracts.shop.order.v1 import order_pb2, order_pb2_grpc


async def place(address: str, sku: str) -> str:
    async with grpc.aio.insecure_channel(address) as channel:
        orders = order_pb2_grpc.OrderServiceStub(channel)
        order: order_pb2.Order = await orders.CreateOrder(
            order_pb2.CreateOrderRequest(request_id=str(uuid.uuid4()), user_id="other-team",
                                         lines=[order_pb2.OrderLine(sku=sku, quantity=2)]),
            timeout=10,
        )
        return f"{order_pb2.Order.Status.Name(order.status)} {order.total.minor_units} {shopmesh_contracts.__version__}"


if __name__ == "__main__":
    print(asyncio.run(place(sys.argv[1], sys.argv[2])))
'''


def _run(*args: str, cwd: Path) -> str:
    done = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_the_contracts_wheel_alone_places_a_typed_order(launcher: Launcher, tmp_path: Path) -> None:
    wheel = Path(_run(sys.executable, str(ROOT / "scripts" / "build_contracts.py"), "--out", str(tmp_path / "dist"),
                      cwd=ROOT).strip().splitlines()[-1])
    version = (ROOT / "protos" / "VERSION").read_text().strip()
    assert wheel.name == f"shopmesh_contracts-{version}-py3-none-any.whl"
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", str(venv), cwd=tmp_path)
    python = str(venv / "bin" / "python")
    _run(python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(wheel), cwd=tmp_path)
    installed = {line.split("==")[0].lower() for line in _run(python, "-m", "pip", "freeze", cwd=tmp_path).split()}
    # Only what the stubs import (and what those pull in): none of the mesh's own dependencies.
    assert {"shopmesh-contracts", "protobuf", "grpcio", "googleapis-common-protos"} <= installed, installed
    assert not installed & {"sqlalchemy", "alembic", "py-consul", "opentelemetry-sdk", "protovalidate", "shopmesh",
                            "httptools", "pyjwt", "prometheus-client"}, installed
    folder = tmp_path / "other-team"  # a throwaway folder, nowhere near the repository
    folder.mkdir()
    (folder / "place_order.py").write_text(CLIENT)
    (folder / "generated").mkdir()  # the other team's own generated/ folder: it must not shadow ours
    (folder / "generated" / "__init__.py").write_text("raise ImportError('their generated/, not ours')\n")
    sku = new_product(launcher, 5, "wheel", cents=250)
    out = _run(python, "place_order.py", launcher.address("order"), sku, cwd=folder)
    assert out.split() == ["CONFIRMED", "500", version], out
    # Typed: mypy --strict passes on the client, with the wheel's .pyi and the public grpc/protobuf stubs.
    _run(python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "mypy", "types-protobuf",
         "types-grpcio", cwd=tmp_path)
    report = _run(python, "-m", "mypy", "--strict", "--no-incremental", "place_order.py", cwd=folder)
    assert "Success" in report, report
