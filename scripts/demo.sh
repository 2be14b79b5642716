#!/usr/bin/env bash
# README command 1: the pipeline end to end on a demo workload.
# Installs pnpm + packages, starts the local servers (unless *_URL are given), runs the
# four apps against a fresh source and sink database, shows live progress and ends
# with a verification line. Servers this script started are stopped on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/node.sh
source scripts/node.sh
bash scripts/bootstrap.sh
started_servers=0
if [ -z "${POSTGRES_URL:-}" ] || [ -z "${NATS_URL:-}" ] || [ -z "${REDIS_URL:-}" ] || [ -z "${ETCD_URL:-}" ]; then
  if ! bash infra/local/servers.sh status >/dev/null 2>&1; then
    started_servers=1
    trap 'bash infra/local/servers.sh down >/dev/null 2>&1 || true' EXIT
  fi
  CDC_SERVERS_TTL_SECONDS="${CDC_SERVERS_TTL_SECONDS:-3600}" bash infra/local/servers.sh up
  # shellcheck disable=SC1091
  source .state/servers.env
fi
# The demo runs the pipeline with `cdc run`, which starts the apps' bundles.
pnpm -s turbo run build --output-logs=errors-only
pnpm exec tsx tests/e2e/demo.ts
