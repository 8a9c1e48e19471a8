"""The shop page's committed bundle and TypeScript stubs are what scripts/build_web.py makes now.

Like generated/ (tests/unit/test_generated.py): running the mesh needs no Node because the
bundle is committed, so a change to protos/ or gateway/web/src/ that was not rebuilt must fail
here. The build itself is real: npm ci from the lock file, protoc-gen-es, tsc --strict, esbuild.
"""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT, tool


def test_the_committed_page_bundle_and_typescript_stubs_are_fresh() -> None:
    tool("npm", install="install Node.js 20+ (with npm)")
    done = subprocess.run([sys.executable, "scripts/build_web.py", "--check"], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_the_check_fires_on_a_stale_tree(tmp_path) -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    from build_web import _same_tree

    fresh, committed = tmp_path / "fresh", tmp_path / "committed"
    for folder in (fresh, committed):
        (folder / "shop").mkdir(parents=True)
        (folder / "shop" / "a_pb.ts").write_text("export const a = 1;\n")
    assert _same_tree(fresh, committed)
    (committed / "shop" / "a_pb.ts").write_text("export const a = 2;\n")
    assert not _same_tree(fresh, committed)
    (committed / "shop" / "a_pb.ts").write_text("export const a = 1;\n")
    (committed / "shop" / "old_pb.ts").write_text("")
    assert not _same_tree(fresh, committed)
