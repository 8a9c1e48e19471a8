#!/usr/bin/env bash
# Sets up everything the tests need and runs the whole suite:
# the venv with test dependencies, the Go-built gRPC tools (grpcurl,
# grpc-health-probe, ghz) in .tools/bin, Debian's chromium and chromedriver for
# the browser test and Debian's postgresql for the tests on PostgreSQL (installed
# when missing and run as root), then pytest.
# Arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="$(scripts/setup.sh test)"
TOOLS_BIN="$(scripts/install-tools.sh)"
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    echo "test: installing Debian's chromium and chromium-driver" >&2
    apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >&2
  else
    echo "test: chromium/chromedriver missing; the browser test needs them (apt-get install chromium chromium-driver)" >&2
  fi
fi
if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null && ! command -v initdb >/dev/null; then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    echo "test: installing Debian's postgresql (the tests start their own throwaway server)" >&2
    apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2
  else
    echo "test: PostgreSQL missing; the tests on it need it (apt-get install postgresql)" >&2
  fi
fi
export PATH="$TOOLS_BIN:$PATH"
exec "$PY" -m pytest "$@"
