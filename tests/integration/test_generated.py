"""generated/ is exactly what scripts/generate.py makes from protos/."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def check(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(root / "scripts" / "generate.py"), "--check"], capture_output=True, text=True, timeout=120
    )


def test_generated_matches_the_protos() -> None:
    result = check(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_check_fails_when_a_proto_changes_without_regenerating(tmp_path: Path) -> None:
    for folder in ("scripts", "protos", "generated"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    proto = tmp_path / "protos" / "shop" / "order" / "v1" / "order.proto"
    text = proto.read_text()
    assert "string next_page_token = 2;" in text
    proto.write_text(text.replace("string next_page_token = 2;", "string next_page_token = 2;\n  string note = 3;"))
    result = check(tmp_path)
    assert result.returncode == 1
    assert "order_pb2.py" in result.stdout


def test_generated_imports_as_a_package_with_typed_stubs() -> None:
    from generated.shop.order.v1 import order_pb2, order_pb2_grpc

    assert order_pb2.DESCRIPTOR.package == "shop.order.v1"
    assert hasattr(order_pb2_grpc, "OrderServiceStub")
    folder = ROOT / "generated" / "shop" / "order" / "v1"
    assert (folder / "order_pb2.pyi").exists() and (folder / "order_pb2_grpc.pyi").exists()
    assert "from shop." not in (folder / "order_pb2.py").read_text()


def test_protoc_users_compile_the_contracts_with_the_protoset_alone(tmp_path: Path) -> None:
    """No googleapis and no buf/validate/validate.proto on disk: the protoset carries them."""
    from grpc_tools import protoc

    protos = tmp_path / "protos"
    shutil.copytree(ROOT / "protos", protos)
    out = tmp_path / "out"
    out.mkdir()
    code = protoc.main(["protoc", f"-I{protos}", f"--descriptor_set_in={ROOT / 'generated' / 'shopmesh.protoset'}",
                        f"--python_out={out}", "shop/order/v1/order.proto"])
    assert code == 0
    assert "buf.validate" in (out / "shop" / "order" / "v1" / "order_pb2.py").read_text()
