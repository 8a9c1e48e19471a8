#!/usr/bin/env bash
# Installs the real gRPC command-line tools the tests and benchmarks drive
# (grpcurl, grpc-health-probe, ghz) into .tools/bin with `go install`.
# Cached: a tool already present at the pinned version is not rebuilt.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${SHOPMESH_TOOLS:-$ROOT/.tools}/bin"
mkdir -p "$BIN"

# name|module@version — pinned so every machine measures with the same tools.
TOOLS=(
  "grpcurl|github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.3"
  "grpc-health-probe|github.com/grpc-ecosystem/grpc-health-probe@v0.4.62"
  "ghz|github.com/bojand/ghz/cmd/ghz@v0.120.0"
)

command -v go >/dev/null || { echo "install-tools: Go is required (https://go.dev/dl)" >&2; exit 1; }

for entry in "${TOOLS[@]}"; do
  name="${entry%%|*}"
  spec="${entry#*|}"
  stamp="$BIN/.$name.version"
  if [[ -x "$BIN/$name" && -f "$stamp" && "$(cat "$stamp")" == "$spec" ]]; then
    continue
  fi
  echo "install-tools: go install $spec" >&2
  GOBIN="$BIN" CGO_ENABLED=0 go install "$spec"
  echo "$spec" >"$stamp"
done
echo "$BIN"
