#!/usr/bin/env bash
# Checks the Prometheus rules: `promtool check rules` (syntax, PromQL, templates) and
# `promtool test rules` (each alert fires on its shape, not on a healthy pipeline).
# Installs promtool first if it is missing: Debian's `prometheus` package ships it
# (apt-get, as root; a few seconds when the package lists are fresh). A scripts/test.sh step.
# The dashboard JSON is checked by tests/deploy/monitoring.test.ts (a unit test).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

if ! command -v promtool >/dev/null 2>&1; then
  if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    echo "[monitoring] promtool is missing and cannot be installed here (needs root and apt-get): install Prometheus' promtool" >&2
    exit 1
  fi
  echo "[monitoring] installing promtool (Debian package prometheus)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }
  # The package starts a Prometheus server on :9090 where systemd runs; nothing here needs it.
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then systemctl stop prometheus || true; fi
fi

promtool check rules alerts.yml
promtool test rules alerts.test.yml
