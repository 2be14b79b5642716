#!/usr/bin/env bash
# Fetches the Compose Specification's JSON schema (idempotent) into .state/validators, for
# tests/deploy/schemas.test.ts: it ships in the compose-spec/compose-go Go module (the
# library docker compose itself loads files with), taken from the Go module proxy at a
# pinned version. The Kubernetes schemas come from the npm package kubernetes-models
# (validators generated from Kubernetes' OpenAPI definitions), a test dependency.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
COMPOSE_GO_VERSION="${COMPOSE_GO_VERSION:-v2.16.2}"
out=.state/validators
mkdir -p "$out"
target="$out/compose-spec-$COMPOSE_GO_VERSION.json"
if [ ! -s "$target" ]; then
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  proxy="${GOPROXY:-https://proxy.golang.org}"
  proxy="${proxy%%,*}"
  curl -fsS --retry 3 --max-time 60 -o "$tmp/module.zip" "$proxy/github.com/compose-spec/compose-go/v2/@v/$COMPOSE_GO_VERSION.zip"
  python3 -c 'import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]))' \
    "$tmp/module.zip" "github.com/compose-spec/compose-go/v2@$COMPOSE_GO_VERSION/schema/compose-spec.json" > "$target.part"
  mv "$target.part" "$target"
fi
ln -sf "compose-spec-$COMPOSE_GO_VERSION.json" "$out/compose-spec.json"
echo "$out/compose-spec.json"
