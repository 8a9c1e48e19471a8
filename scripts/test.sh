#!/usr/bin/env bash
# Sets up everything the tests need and runs the whole suite:
# the venv with test dependencies, the Go-built gRPC tools (grpcurl,
# grpc-health-probe, ghz) in .tools/bin, then pytest. Arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="$(scripts/setup.sh test)"
TOOLS_BIN="$(scripts/install-tools.sh)"
export PATH="$TOOLS_BIN:$PATH"
exec "$PY" -m pytest "$@"
