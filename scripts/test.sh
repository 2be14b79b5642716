#!/usr/bin/env bash
# README command 2: every check and test of the repository, the same for a developer and CI.
#
#   bash scripts/test.sh      (or: pnpm test)
#
#  1. installs pnpm (from the npm registry) and the workspace's packages (scripts/bootstrap.sh);
#  2. servers: if POSTGRES_URL, NATS_URL, REDIS_URL, ETCD_URL and KAFKA_BROKERS are all set
#     they are used as they are; otherwise infra/local/servers.sh starts the local ones
#     (with a 90 min watchdog) and — only if this script started them — stops them on exit,
#     so a developer's already running servers are left alone;
#  3. the apps' bundles (turbo build), tsc --noEmit, the lint (eslint.config.mjs: no import cycles, no deep imports, no
#     floating promises), the alert rules (promtool check/test rules; installs promtool from
#     Debian's prometheus package if missing), the unit tests (vitest.unit.config.ts), the integration and end-to-end
#     tests (tests/vitest.config.ts), then every app's image built with podman and smoke-run
#     (infra/images/build.sh, tests/images; CDC_TEST_SKIP_IMAGES=1 skips them; the compose
#     and Kubernetes files are validated against their schemas in the unit tests). Every step runs even when an earlier one failed;
#     the last line sums them up as `total: N passed, N failed, N skipped`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/node.sh
source scripts/node.sh

started_servers=0
reports="$(mktemp -d "${TMPDIR:-/tmp}/cdc-test.XXXXXX")"
cleanup() {
  rm -rf "$reports"
  if (( started_servers )); then
    echo "[test] stopping the servers this run started"
    bash infra/local/servers.sh down || true
  fi
}
trap cleanup EXIT

if ! bash scripts/bootstrap.sh; then
  # bootstrap installs quietly; show why it failed (most often: pnpm-lock.yaml out of date).
  echo "[test] installing pnpm/packages failed (scripts/bootstrap.sh); pnpm says:" >&2
  pnpm install --frozen-lockfile --prefer-offline >&2 || true
  exit 1
fi

if [[ -n "${POSTGRES_URL:-}" && -n "${NATS_URL:-}" && -n "${REDIS_URL:-}" && -n "${ETCD_URL:-}" && -n "${KAFKA_BROKERS:-}" ]]; then
  echo "[test] using the servers given by POSTGRES_URL, NATS_URL, REDIS_URL, ETCD_URL, KAFKA_BROKERS"
else
  if bash infra/local/servers.sh status >/dev/null 2>&1; then
    echo "[test] using the local servers already running (left running afterwards)"
  else
    started_servers=1
  fi
  CDC_SERVERS_TTL_SECONDS="${CDC_SERVERS_TTL_SECONDS:-5400}" bash infra/local/servers.sh up
  # shellcheck disable=SC1091  # written by servers.sh up
  source .state/servers.env
fi

failed_steps=()
step() {
  local name="$1"; shift
  local t0=$SECONDS
  echo
  echo "[test] ── $name"
  if "$@"; then
    echo "[test] $name: ok ($(( SECONDS - t0 )) s)"
  else
    echo "[test] $name: FAILED ($(( SECONDS - t0 )) s)"
    failed_steps+=("$name")
  fi
}

# The apps' bundles (apps/*/dist): tests that run an app as its image would (the CLI's
# `cdc run`, the security tests, the images) start them, not the sources.
step build pnpm -s turbo run build --output-logs=errors-only
step typecheck pnpm exec tsc -p tsconfig.json --noEmit
step lint pnpm exec eslint .
# promtool check/test rules on infra/monitoring/alerts.yml (installs promtool if missing).
step 'alert rules' bash infra/monitoring/check.sh
# The Compose Specification's JSON schema for tests/deploy/schemas.test.ts (Go module proxy, pinned).
step 'schemas' bash infra/validators/fetch.sh
step 'unit tests' pnpm exec vitest run --config vitest.unit.config.ts \
  --reporter=default --reporter=json --outputFile.json="$reports/unit.json"
step 'integration tests' pnpm exec vitest run --config tests/vitest.config.ts \
  --reporter=default --reporter=json --outputFile.json="$reports/integration.json"
# Every app's image built from its Dockerfile (podman, chroot isolation), then smoke-run
# from the images (tests/images): infra/images/build.sh. CDC_TEST_SKIP_IMAGES=1 skips both.
if [[ -z "${CDC_TEST_SKIP_IMAGES:-}" ]]; then
  step 'images' env IMAGES_SKIP_SMOKE=1 IMAGES_TAG=test bash infra/images/build.sh
  step 'image smoke tests' env CDC_IMAGES_TAG=test pnpm exec vitest run --config tests/vitest.config.ts tests/images \
    --reporter=default --reporter=json --outputFile.json="$reports/images.json"
fi

if (( ${#failed_steps[@]} )); then echo "[test] failed: ${failed_steps[*]}"; fi

# One closing line over both vitest runs. A failed step that counted no failed test (a
# type error, a global setup that could not reach the servers) still counts as one failure,
# so the line never says "0 failed" when the run failed.
node - "$reports" "${#failed_steps[@]}" <<'NODE'
const { readFileSync, existsSync } = require('node:fs');
const [dir, failedSteps] = process.argv.slice(2);
let passed = 0, failed = 0, skipped = 0;
for (const name of ['unit', 'integration', 'images']) {
  const file = `${dir}/${name}.json`;
  if (!existsSync(file)) continue;
  const report = JSON.parse(readFileSync(file, 'utf8'));
  passed += report.numPassedTests;
  failed += report.numFailedTests;
  skipped += report.numPendingTests + report.numTodoTests;
}
if (Number(failedSteps) > 0 && failed === 0) failed = Number(failedSteps);
console.log('');
console.log(`total: ${passed} passed, ${failed} failed, ${skipped} skipped`);
NODE

(( ${#failed_steps[@]} == 0 ))
