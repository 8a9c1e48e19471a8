#!/usr/bin/env bash
# Quickstart: set up (first run only) and run the whole mesh locally:
# inventory :50051, order :50052, notification :50053, SQLite under ./data,
# static discovery, demo products. Ctrl-C stops everything.
# Arguments go to the launcher: scripts/run-mesh.sh --help
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$("$ROOT/scripts/setup.sh" dev)"
cd "$ROOT"
exec "$PY" -m mesh.tools.launcher "$@"
