#!/usr/bin/env bash
# Builds what the Kubernetes tests drive into .tools/cluster/bin, from published Go modules:
# kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy and kubectl (Kubernetes
# v1.34.4), etcd v3.6.4 and Helm v3.19.0 through one wrapper module (deploy/cluster/k8s: its
# go.mod pins every k8s.io staging module that k8s.io/kubernetes replaces with a local folder
# to the published version of the same release), CoreDNS v1.12.3 for the cluster's DNS, and
# metrics-server v0.8.0 (the resource metrics the HorizontalPodAutoscaler reads) and kube-router
# v2.1.0 (its NetworkPolicy controller), each built through a module of its own made here, as
# their go.mod files have replace directives `go install` refuses.
# Cached: nothing is rebuilt while
# the wrapper module and this script are unchanged (about 5 minutes cold on 2 cores).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${SHOPMESH_TOOLS:-$ROOT/.tools}/cluster/bin"
WRAPPER="$ROOT/deploy/cluster/k8s"
mkdir -p "$BIN"
command -v go >/dev/null || { echo "install-cluster: Go is required" >&2; exit 1; }

COREDNS="github.com/coredns/coredns@v1.12.3"
METRICS_SERVER="sigs.k8s.io/metrics-server/cmd/metrics-server@v0.8.0"
# The NetworkPolicy engine: kube-router's policy controller (iptables and ipsets). v2.1.0 is the
# one release the module proxy serves here, with security advisories against it; the test
# cluster runs it only on its own bridge's traffic. kube-network-policies would need the
# kernel's nftables queue (CONFIG_NFT_QUEUE), which this machine's kernel lacks.
KUBE_ROUTER="github.com/cloudnativelabs/kube-router/v2/cmd/kube-router@v2.1.0"
want="$(cat "$WRAPPER/go.mod" "$WRAPPER/go.sum" "$WRAPPER/tools.go" "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1)"
stamp="$BIN/.version"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  echo "$BIN"
  exit 0
fi

echo "install-cluster: building Kubernetes v1.34.4, etcd and Helm from their Go modules (minutes)" >&2
(
  cd "$WRAPPER"
  export CGO_ENABLED=0 GOFLAGS=-mod=mod
  # The version the binaries report (Helm checks a chart's kubeVersion against the server's),
  # stamped as Kubernetes' own build does.
  version="-X k8s.io/component-base/version.gitVersion=v1.34.4 -X k8s.io/component-base/version.gitMajor=1"
  version+=" -X k8s.io/component-base/version.gitMinor=34 -X k8s.io/component-base/version.gitTreeState=clean"
  go build -trimpath -ldflags="-s $version" -o "$BIN/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy \
    k8s.io/kubernetes/cmd/kubectl
  go build -trimpath -ldflags=-s -o "$BIN/etcd" go.etcd.io/etcd/server/v3
  # Helm's Makefile stamps its version and the Kubernetes version it assumes offline
  # (`helm template`, `helm lint`); without them it assumes Kubernetes 1.20.
  helm="helm.sh/helm/v3"
  go build -trimpath -o "$BIN/helm" -ldflags="-s -X $helm/internal/version.version=v3.19.0 \
    -X $helm/pkg/chartutil.k8sVersionMajor=1 -X $helm/pkg/chartutil.k8sVersionMinor=34 \
    -X $helm/pkg/lint/rules.k8sVersionMajor=1 -X $helm/pkg/lint/rules.k8sVersionMinor=34" "$helm/cmd/helm"
)
GOBIN="$BIN" CGO_ENABLED=0 go install -trimpath -ldflags=-s "$COREDNS"
# A program whose go.mod has replace directives (`go install` refuses it), built through a
# module of its own made here: name, module@version.
build_tool() {
  local name="$1" spec="$2" wrapper
  wrapper="$(mktemp -d)"
  (
    cd "$wrapper"
    printf 'module shopmesh.local/%s\n\ngo 1.24\n' "$name" >go.mod
    go get -tool "$spec"
    CGO_ENABLED=0 go build -trimpath -ldflags=-s -o "$BIN/$name" "${spec%@*}"
  ) >&2
  rm -rf "$wrapper"
}
build_tool metrics-server "$METRICS_SERVER"
build_tool kube-router "$KUBE_ROUTER"
echo "$want" >"$stamp"
echo "$BIN"
