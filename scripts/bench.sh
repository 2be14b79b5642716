#!/usr/bin/env bash
# `pnpm bench`: end-to-end throughput and memory, side by side (bench/pipeline.bench.ts).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/bootstrap.sh
if [ -z "${POSTGRES_URL:-}" ] || [ -z "${NATS_URL:-}" ] || [ -z "${REDIS_URL:-}" ] || [ -z "${ETCD_URL:-}" ]; then
  if ! bash infra/local/servers.sh status >/dev/null 2>&1; then
    trap 'bash infra/local/servers.sh down >/dev/null 2>&1 || true' EXIT
  fi
  CDC_SERVERS_TTL_SECONDS="${CDC_SERVERS_TTL_SECONDS:-3600}" bash infra/local/servers.sh up
  # shellcheck disable=SC1091
  source .state/servers.env
fi
pnpm exec tsx bench/pipeline.bench.ts
