#!/usr/bin/env bash
# Installs the real tools the tests and benchmarks drive into .tools/bin:
# grpcurl, grpc-health-probe, ghz, buf (for `buf curl` and the contracts' lint and breaking
# checks) and the Connect conformance suite (connectconformance) with `go install`, a Consul
# agent built from Consul's published Go module (see build_consul below), and
# protojson-reference, our small Go program that reads JSON with Go's protojson
# (grpc-gateway's codec) so the tests compare the gateway's reader with it; Prometheus and
# promtool from their Go module (about 12 minutes the first time, cached after), and Jaeger
# (build_jaeger below).
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
  "buf|github.com/bufbuild/buf/cmd/buf@v1.75.0"
  "connectconformance|connectrpc.com/conformance/cmd/connectconformance@v1.0.7"
  # Prometheus 3.x (its Go module numbers it v0.316.0): the server the scrape configuration and
  # rules in deploy/prometheus/ are tested against, and promtool (check and unit-test the rules).
  "prometheus|github.com/prometheus/prometheus/cmd/prometheus@v0.316.0"
  "promtool|github.com/prometheus/prometheus/cmd/promtool@v0.316.0"
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
# Consul: no registry ships the agent, so it is built from its Go module.
# v1.14.11 is pinned on purpose: it is the last release under the MPL whose
# nested modules the Go module proxy serves. Later 1.16 patches and 1.17+ are
# BUSL-licensed, and 1.15+ need consul/envoyextensions and consul/troubleshoot,
# which the proxy refuses here (403 "This module version is not available").
# `go install` refuses Consul's go.mod because it replaces its nested modules
# (api, sdk, proto-public) with local folders that the module zip leaves out, so
# the build copies the module source, drops those replaces in favour of the
# published versions it already requires, and builds it as the main module.
CONSUL_VERSION="v1.14.11"
build_consul() {
  local stamp="$BIN/.consul.version"
  if [[ -x "$BIN/consul" && -f "$stamp" && "$(cat "$stamp")" == "$CONSUL_VERSION" ]]; then
    return
  fi
  echo "install-tools: building consul $CONSUL_VERSION from its Go module (a few minutes)" >&2
  local dir src
  dir="$(go mod download -json "github.com/hashicorp/consul@$CONSUL_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
  src="$(mktemp -d)"
  cp -r "$dir/." "$src"
  chmod -R u+w "$src"
  (
    cd "$src"
    for nested in api sdk proto-public; do
      go mod edit -dropreplace="github.com/hashicorp/consul/$nested"
    done
    GOFLAGS=-mod=mod CGO_ENABLED=0 go build -o "$BIN/consul" .
  )
  rm -rf "$src"
  echo "$CONSUL_VERSION" >"$stamp"
}
build_consul

# Jaeger 2, its single binary (collector, in-memory storage, query API and UI): the trace
# backend tests/e2e/test_jaeger.py sends the mesh's OTLP to, run with deploy/jaeger/config.yaml.
# Jaeger's module is a program whose dependencies need resolving as a module of their own, so
# it is built from a small wrapper module made here (`go get -tool`), pinned to the release.
JAEGER_VERSION="v1.75.0"
build_jaeger() {
  local stamp="$BIN/.jaeger.version" wrapper
  if [[ -x "$BIN/jaeger" && -f "$stamp" && "$(cat "$stamp")" == "$JAEGER_VERSION" ]]; then
    return
  fi
  echo "install-tools: building jaeger $JAEGER_VERSION from its Go module (a few minutes)" >&2
  wrapper="$(mktemp -d)"
  (
    cd "$wrapper"
    printf 'module shopmesh.local/jaeger\n\ngo 1.24\n' >go.mod
    go get -tool "github.com/jaegertracing/jaeger/cmd/jaeger@$JAEGER_VERSION"
    CGO_ENABLED=0 go build -o "$BIN/jaeger" github.com/jaegertracing/jaeger/cmd/jaeger
  ) >&2
  rm -rf "$wrapper"
  echo "$JAEGER_VERSION" >"$stamp"
}
build_jaeger

build_reference() {
  local src="$ROOT/tests/reference/protojson" stamp="$BIN/.protojson-reference.version" want
  want="$(cat "$src/main.go" "$src/go.mod" "$src/go.sum" | sha256sum | cut -d' ' -f1)"
  if [[ -x "$BIN/protojson-reference" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    return
  fi
  echo "install-tools: building protojson-reference (tests/reference/protojson)" >&2
  (cd "$src" && CGO_ENABLED=0 go build -o "$BIN/protojson-reference" .)
  echo "$want" >"$stamp"
}
build_reference

# The Connect conformance suite's own contracts (ConformanceService and its messages), from the
# module go install fetched: the Python service behind the gateway under test is built from them.
conformance_protos() {
  local version="${TOOLS[4]##*@}" dest="${SHOPMESH_TOOLS:-$ROOT/.tools}/conformance"
  if [[ -f "$dest/.version" && "$(cat "$dest/.version")" == "$version" ]]; then
    return
  fi
  local dir
  dir="$(go mod download -json "connectrpc.com/conformance@$version" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')"
  rm -rf "$dest" && mkdir -p "$dest"
  cp -r "$dir/proto" "$dest/proto" && chmod -R u+w "$dest"
  echo "$version" >"$dest/.version"
}
conformance_protos

echo "$BIN"
