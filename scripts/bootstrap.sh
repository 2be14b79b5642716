#!/usr/bin/env bash
# Installs what both README commands need, idempotently: Node.js >= 22.15 (scripts/node.sh),
# pnpm (from the npm registry)
# and the workspace's packages. The servers are installed by infra/local/servers.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/node.sh
source scripts/node.sh
PNPM_VERSION=10.34.8
if ! command -v pnpm >/dev/null 2>&1 || [ "$(pnpm --version 2>/dev/null)" != "$PNPM_VERSION" ]; then
  echo "installing pnpm $PNPM_VERSION from the npm registry"
  npm install -g "pnpm@$PNPM_VERSION" --silent
fi
pnpm install --frozen-lockfile --prefer-offline --reporter=silent
