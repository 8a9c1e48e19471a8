#!/usr/bin/env bash
# Sets up everything the tests need and runs the whole suite: the venv with test
# dependencies, the Go-built tools (grpcurl, grpc-health-probe, ghz, buf, connectconformance, Consul,
# Prometheus and promtool) in
# .tools/bin, the Kubernetes pieces and Helm in .tools/cluster/bin, Debian's packages
# below, the container images, then pytest.
# Arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="$(scripts/setup.sh test)"
TOOLS_BIN="$(scripts/install-tools.sh)"
# Debian's packages the tests drive, installed when missing (as root): chromium and
# chromedriver (the browser tests), postgresql and pgbouncer (the tests start throwaway servers
# and poolers), podman and
# mmdebstrap (the image, built from the Dockerfile on base images made from Debian's packages,
# and compose), containerd, runc, the CNI plugins, nftables and ipset (the node of the tests'
# Kubernetes, its NetworkPolicies enforced by kube-router with iptables and ipsets),
# wrk (the gateway benchmark's smoke run).
missing=()
need() { command -v "$1" >/dev/null || compgen -G "$1" >/dev/null || missing+=("$2"); }
need chromium chromium
need chromedriver chromium-driver
need "/usr/lib/postgresql/*/bin/initdb" postgresql
need /usr/sbin/pgbouncer pgbouncer
need podman podman
need mmdebstrap mmdebstrap
need containerd containerd
need runc runc
need /usr/lib/cni/bridge containernetworking-plugins
need nft nftables
need ipset ipset
need wrk wrk
if ((${#missing[@]})); then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    echo "test: installing Debian's ${missing[*]}" >&2
    apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2
  else
    echo "test: missing ${missing[*]}; the tests that need them skip here (CI installs them as root)" >&2
  fi
fi
# The Kubernetes control plane, kubelet, etcd, CoreDNS and Helm from their Go modules (cached).
CLUSTER_BIN="$(scripts/install-cluster.sh)"
# The images the container and cluster tests run (cached base images; the shop's image rebuilt
# from the Dockerfile when the code changed).
if [[ "$(id -u)" == 0 ]] && command -v podman >/dev/null && command -v mmdebstrap >/dev/null; then
  PATH="$TOOLS_BIN:$PATH" scripts/build-image.sh --debian-bases --extras >/dev/null
fi
export PATH="$TOOLS_BIN:$CLUSTER_BIN:$PATH"
exec "$PY" -m pytest "$@"
