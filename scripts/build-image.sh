#!/usr/bin/env bash
# Builds the shopmesh image from the Dockerfile with Podman (or Docker), unchanged:
#
#   scripts/build-image.sh                 # FROM today's official images (Docker Hub)
#   scripts/build-image.sh --debian-bases  # FROM base images made here from Debian's packages
#
# --debian-bases is for machines that cannot reach Docker Hub: mmdebstrap makes the two base
# images from Debian bookworm's packages (python3 is 3.11 there; a venv on PATH stands in for
# the official image's /usr/local Python; Go is this machine's own toolchain, copied in), and
# the build runs with the machine's CA certificates mounted so pip and Go reach their registries.
# The base images are cached (rebuilt only when this script changes); the result is tagged
# shopmesh:local (and shopmesh:<version>).
#
# --extras also makes, the same way, what the tests' cluster and compose need and cannot pull:
#   localhost/pause:3.10-shopmesh      Kubernetes' pause.c (from the k8s.io/kubernetes module), static
#   localhost/postgres:15-bookworm     Debian's postgresql-15 behind the official image's entrypoint
#                                      contract (deploy/images/postgres-entrypoint.sh), uid 999
#   localhost/consul:1.14.11           the Consul agent scripts/install-tools.sh built from its module
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ENGINE="${CONTAINER_ENGINE:-podman}"
TAG="${SHOPMESH_IMAGE:-shopmesh:local}"
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/pyproject.toml" | head -1)"
# Bump these when what the base or extra images hold changes: a cached image is found by them.
BASES_REV=r1
EXTRAS_REV=r1
DEBIAN_BASES=0
EXTRAS=0
for arg in "$@"; do
  case "$arg" in
    --debian-bases) DEBIAN_BASES=1 ;;
    --extras) EXTRAS=1 ;;
    *) echo "usage: $0 [--debian-bases] [--extras]" >&2; exit 2 ;;
  esac
done

# Podman on this kind of machine: runc (crun refuses hybrid cgroups) and low default ulimits.
PODMAN_FLAGS=()
BUILD_FLAGS=()
if [[ "$ENGINE" == podman ]]; then
  PODMAN_FLAGS=(--runtime runc)
  BUILD_FLAGS=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024 --network host)
fi
engine() { "$ENGINE" "${PODMAN_FLAGS[@]}" "$@"; }

args=()
if [[ "$DEBIAN_BASES" == 1 ]]; then
  stamp="$BASES_REV"
  python_base="localhost/shopmesh-base/python:3.11-bookworm-$stamp"
  go_base="localhost/shopmesh-base/golang:bookworm-$stamp"
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  if ! engine image exists "$python_base"; then
    echo "build-image: making $python_base from Debian's packages" >&2
    # The official image's layout: python and pip on PATH from /usr/local.
    mmdebstrap --variant=minbase --include=python3,python3-venv,ca-certificates,passwd \
      --customize-hook='chroot "$1" python3 -m venv /usr/local/python' \
      --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/*' \
      bookworm "$work/python.tar" http://deb.debian.org/debian >&2
    engine import --change 'ENV PATH=/usr/local/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'CMD ["python3"]' "$work/python.tar" "$python_base" >&2
  fi
  if ! engine image exists "$go_base"; then
    echo "build-image: making $go_base from Debian's packages and this machine's Go" >&2
    goroot="$(go env GOROOT)"
    mmdebstrap --variant=minbase --include=ca-certificates,git \
      --customize-hook="mkdir -p \"\$1/usr/local/go\" && cp -a $goroot/. \"\$1/usr/local/go/\"" \
      --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/*' \
      bookworm "$work/go.tar" http://deb.debian.org/debian >&2
    engine import --change 'ENV PATH=/usr/local/go/bin:/root/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'ENV GOTOOLCHAIN=local' "$work/go.tar" "$go_base" >&2
  fi
  args+=(--build-arg "PYTHON_IMAGE=$python_base" --build-arg "GO_IMAGE=$go_base"
         -v /etc/ssl/certs:/etc/ssl/certs:ro)
fi

if [[ "$EXTRAS" == 1 ]]; then
  work="${work:-$(mktemp -d)}"
  trap 'rm -rf "$work"' EXIT
  stamp="$EXTRAS_REV-$(sha256sum "$ROOT/deploy/images/postgres-entrypoint.sh" | cut -c1-8)"
  if ! engine image exists "localhost/pause:3.10-shopmesh-$stamp"; then
    mkdir -p "$work/pause"
    pause_c="$(go mod download -json k8s.io/kubernetes@v1.34.4 | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')/build/pause/linux/pause.c"
    gcc -static -O2 -o "$work/pause/pause" "$pause_c"
    printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' >"$work/pause/Containerfile"
    engine build "${BUILD_FLAGS[@]}" -t "localhost/pause:3.10-shopmesh-$stamp" -t localhost/pause:3.10-shopmesh "$work/pause" >&2
  fi
  if ! engine image exists "localhost/postgres:15-bookworm-$stamp"; then
    echo "build-image: making localhost/postgres:15-bookworm from Debian's postgresql-15" >&2
    mmdebstrap --variant=minbase --include=postgresql-15,passwd \
      --essential-hook='echo "postgres:x:999:999::/var/lib/postgresql:/bin/sh" >>"$1/etc/passwd" && echo "postgres:x:999:" >>"$1/etc/group" && echo "postgres:*:19000:0:99999:7:::" >>"$1/etc/shadow"' \
      --customize-hook="cp $ROOT/deploy/images/postgres-entrypoint.sh \"\$1/usr/local/bin/docker-entrypoint.sh\"" \
      --customize-hook='mkdir -p "$1/var/lib/postgresql/data" "$1/docker-entrypoint-initdb.d" "$1/run/postgresql" && chown -R 999:999 "$1/var/lib/postgresql" "$1/run/postgresql"' \
      --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/*' \
      bookworm "$work/postgres.tar" http://deb.debian.org/debian >&2
    engine import --change 'ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'ENV PGDATA=/var/lib/postgresql/data' --change 'USER 999' \
      --change 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' "$work/postgres.tar" \
      "localhost/postgres:15-bookworm-$stamp" >&2
    engine tag "localhost/postgres:15-bookworm-$stamp" localhost/postgres:15-bookworm
  fi
  consul="${SHOPMESH_TOOLS:-$ROOT/.tools}/bin/consul"
  if ! engine image exists "localhost/consul:1.14.11-$stamp"; then
    mkdir -p "$work/consul"
    cp "$consul" "$work/consul/consul"
    printf 'FROM %s\nCOPY consul /usr/local/bin/consul\nENTRYPOINT ["consul"]\n' "${python_base:-debian:bookworm-slim}" >"$work/consul/Containerfile"
    engine build "${BUILD_FLAGS[@]}" -t "localhost/consul:1.14.11-$stamp" -t localhost/consul:1.14.11 "$work/consul" >&2
  fi
fi

echo "build-image: $ENGINE build -t $TAG" >&2
engine build "${BUILD_FLAGS[@]}" "${args[@]}" -t "$TAG" -t "shopmesh:$VERSION" "$ROOT" >&2
echo "$TAG"
