"""scripts/check_contracts.py refuses what would break the contracts' users, naming it.

Each case changes a copy of protos/ the way a careless edit would, and the check must refuse
it with a message that names the field, value or RPC; the contracts as they are must pass.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, tool

ORDER = "shop/order/v1/order.proto"


def run_check(protos: Path) -> subprocess.CompletedProcess[str]:
    tool("buf")
    return subprocess.run([sys.executable, "scripts/check_contracts.py", "--protos", str(protos)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def mutant(tmp_path: Path, file: str, old: str, new: str) -> Path:
    protos = tmp_path / "protos"
    shutil.copytree(ROOT / "protos", protos)
    path = protos / file
    text = path.read_text()
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new))
    return protos


def test_the_contracts_as_they_are_pass() -> None:
    done = run_check(ROOT / "protos")
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(("file", "old", "new", "says"), [
    # A renumbered field: old clients' bytes land in the wrong field.
    (ORDER, "  string user_id = 2;\n  // What was ordered", "  string user_id = 12;\n  // What was ordered",
     ['"2" with name "user_id" on message "Order"', "shop.order.v1.Order.user_id = 2 is gone or renumbered"]),
    # A removed enum value: old clients send and read it.
    (ORDER, "    CANCELLED = 2;", "    reserved 2;", ['enum value "2" on enum "Status" was deleted', "shop.order.v1.Order.Status.CANCELLED = 2 is gone"]),
    # A moved HTTP path: every REST client and browser calls the old one.
    (ORDER, 'get: "/v1/orders/{order_id}"', 'get: "/v1/order/{order_id}"',
     ["shop.order.v1.OrderService.GetOrder: HTTP binding changed from GET /v1/orders/{order_id} "
      "to GET /v1/order/{order_id}"]),
    # A lint rule: a field in camelCase.
    (ORDER, "string reason = 2 [", "string cancelReason = 2 [", ['"cancelReason" should be lower_snake_case']),
])
def test_a_breaking_change_is_refused_naming_it(tmp_path: Path, file: str, old: str, new: str, says: list[str]) -> None:
    done = run_check(mutant(tmp_path, file, old, new))
    assert done.returncode == 1, done.stdout + done.stderr
    for words in says:
        assert words in done.stderr, done.stderr


def test_an_addition_passes_once_the_version_moves(tmp_path: Path) -> None:
    protos = mutant(tmp_path, ORDER, "  // Why it was cancelled, kept in the notification.",
                    "  // Who asked for it (new).\n  string requested_by = 3;\n"
                    "  // Why it was cancelled, kept in the notification.")
    done = run_check(protos)
    assert done.returncode == 1 and "the contracts changed since release" in done.stderr, done.stderr
    assert "breaking" not in done.stderr  # an addition breaks no one
    major, minor, _ = (ROOT / "protos" / "VERSION").read_text().strip().split(".")
    (protos / "VERSION").write_text(f"{major}.{int(minor) + 1}.0\n")
    done = run_check(protos)
    assert done.returncode == 0, done.stderr
