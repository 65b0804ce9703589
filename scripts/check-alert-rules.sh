#!/usr/bin/env bash
# Checks docs/ops/alerts.yml with `promtool check rules` (Debian's `prometheus` package,
# installed with apt-get when missing; no service is started). Which series the rules may
# name is checked by crates/server/tests/cli/observability.rs.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v promtool >/dev/null 2>&1; then
  echo "==> installing prometheus (for promtool)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null \
    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }
fi
promtool --version | head -1
promtool check rules docs/ops/alerts.yml
