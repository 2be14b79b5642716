#!/usr/bin/env bash
# `pnpm bench`: pipeline throughput, latency, per-stage rates and memory next to the
# physical limit (pg_recvlogical), in one run (bench/pipeline.bench.ts, bench/README.md).
# BENCH_QUICK=1 for a smoke run; every BENCH_* knob is listed in bench/README.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/node.sh
source scripts/node.sh
bash scripts/bootstrap.sh
# The apps run from their bundles, as in a container (BENCH_FROM_SOURCE=1: from source under tsx).
pnpm -s build >/dev/null
# The limit needs pg_recvlogical (Debian: postgresql-client); install it once if missing.
if ! command -v pg_recvlogical >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "bench: installing postgresql-client (pg_recvlogical)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql-client >/dev/null \
      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql-client >/dev/null; }
  else
    echo "bench: pg_recvlogical not found and cannot apt-get install postgresql-client; the pg_recvlogical limit will be reported as failed" >&2
  fi
fi
if [ -z "${POSTGRES_URL:-}" ] || [ -z "${NATS_URL:-}" ] || [ -z "${REDIS_URL:-}" ] || [ -z "${ETCD_URL:-}" ]; then
  if ! bash infra/local/servers.sh status >/dev/null 2>&1; then
    trap 'bash infra/local/servers.sh down >/dev/null 2>&1 || true' EXIT
  fi
  CDC_SERVERS_TTL_SECONDS="${CDC_SERVERS_TTL_SECONDS:-3600}" bash infra/local/servers.sh up
  # shellcheck disable=SC1091
  source .state/servers.env
fi
# One node process with tsx's loader (not the tsx CLI, which SIGKILLs its child when a
# relayed Ctrl-C is not acknowledged within 30 ms): the bench's own SIGINT handler must get
# to stop the apps and drop what it created. Not exec: the trap above must run afterwards.
node --import tsx bench/pipeline.bench.ts
