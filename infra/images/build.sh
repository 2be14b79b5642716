#!/usr/bin/env bash
# Builds every app's image from its Dockerfile, as a user's `docker build` would, and
# smoke-runs each one (tests/images/images.test.ts). No Docker engine needed: podman builds with
# chroot isolation (this sandbox cannot create OCI containers, and `podman run` fails on
# setrlimit), and a built image is run by mounting it and starting its entry point under
# chroot as its user.
#
#   bash infra/images/build.sh                 # base: a local one (below), then build + smoke
#   NODE_IMAGE=node:22.23.5-bookworm-slim bash infra/images/build.sh   # where the public image can be pulled
#   IMAGES_SKIP_SMOKE=1 …                      # build only
#
# The local base (when NODE_IMAGE is unset): a Debian bookworm root from Debian's packages
# (debootstrap --variant=minbase), the project's Node.js (scripts/node.sh) and npm from the
# npm registry, a `node` user with uid 1000 as in the official image, and this machine's CA
# bundle (its package registry traffic goes through a TLS proxy with its own CA). It is built
# once and cached as localhost/cdc-node-base:<node version>; the root is kept in .state/images.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=scripts/node.sh
source scripts/node.sh
APPS=(reader lamport-reorderer dedup-gate committer)
TAG="${IMAGES_TAG:-dev}"
STATE=.state/images
mkdir -p "$STATE"

need() {
  local missing=()
  for tool in "$@"; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
  ((${#missing[@]} == 0)) && return 0
  if [ "$(id -u)" != 0 ]; then echo "images: need ${missing[*]} (apt-get install podman debootstrap)" >&2; exit 1; fi
  echo "images: installing podman and debootstrap from Debian's packages" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q podman debootstrap >/dev/null \
    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q podman debootstrap >/dev/null; }
}
need podman debootstrap

node_version="$(node -p process.versions.node)"
if [ -z "${NODE_IMAGE:-}" ]; then
  NODE_IMAGE="localhost/cdc-node-base:$node_version"
  if ! podman image exists "$NODE_IMAGE"; then
    root="$STATE/rootfs-bookworm"
    if [ ! -x "$root/bin/sh" ]; then
      rm -rf "$root"
      echo "images: debootstrap bookworm (minbase) into $root" >&2
      debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian >"$STATE/debootstrap.log" 2>&1 \
        || { echo "images: debootstrap failed; see $STATE/debootstrap.log" >&2; exit 1; }
    fi
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    cp -a "$root" "$work/root"
    install -m 0755 "$(command -v node)" "$work/root/usr/local/bin/node"
    (cd "$work" && npm pack --silent npm@10 >/dev/null && mkdir npm && tar xzf npm-*.tgz -C npm)
    mkdir -p "$work/root/usr/local/lib/node_modules"
    cp -a "$work/npm/package" "$work/root/usr/local/lib/node_modules/npm"
    ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$work/root/usr/local/bin/npm"
    ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$work/root/usr/local/bin/npx"
    mkdir -p "$work/root/etc/ssl/certs"
    cp /etc/ssl/certs/ca-certificates.crt "$work/root/etc/ssl/certs/ca-certificates.crt"
    chroot "$work/root" /bin/sh -c 'groupadd --gid 1000 node && useradd --uid 1000 --gid node --shell /bin/bash --create-home node'
    echo "images: importing $NODE_IMAGE" >&2
    tar -C "$work/root" -c . | podman import \
      --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' \
      --change 'ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt' \
      --change 'CMD ["node"]' - "$NODE_IMAGE" >/dev/null
  fi
fi

for app in "${APPS[@]}"; do
  echo "images: building localhost/cdc-$app:$TAG from apps/$app/Dockerfile (base $NODE_IMAGE)" >&2
  t0=$SECONDS
  if ! podman build --isolation=chroot --build-arg "NODE_IMAGE=$NODE_IMAGE" -f "apps/$app/Dockerfile" -t "localhost/cdc-$app:$TAG" . >"$STATE/build-$app.log" 2>&1; then
    echo "images: building $app FAILED; the last lines of $STATE/build-$app.log:" >&2
    tail -25 "$STATE/build-$app.log" >&2
    exit 1
  fi
  echo "images: built localhost/cdc-$app:$TAG in $((SECONDS - t0)) s ($(podman image inspect --format '{{.Size}}' "localhost/cdc-$app:$TAG" | awk '{printf "%.0f MB", $1/1e6}'))" >&2
done

if [ -z "${IMAGES_SKIP_SMOKE:-}" ]; then
  # Against the servers of .state/servers.env (infra/local/servers.sh up) unless the caller set them.
  if [ -z "${POSTGRES_URL:-}" ] && [ -f .state/servers.env ]; then
    # shellcheck disable=SC1091
    set -a && source .state/servers.env && set +a
  fi
  (cd tests && CDC_IMAGES_TAG="$TAG" npx vitest run --config vitest.config.ts images/images.test.ts)
fi
