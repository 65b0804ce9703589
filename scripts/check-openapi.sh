#!/usr/bin/env bash
# Validates the OpenAPI document the server serves at /openapi.json as OpenAPI 3.1 with
# `openapi-spec-validator` (PyPI), so client generators accept it. Builds nothing: it
# starts the given binary (default target/release/rampart) in development mode on SQLite
# in a temporary directory, on a free loopback port, fetches the document, validates it
# and stops the server.
#
#   scripts/check-openapi.sh [path/to/rampart]
#   (OPENAPI_OUT=file keeps a copy of the fetched document.)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/serve.sh
BIN="$(realpath "${1:-target/release/rampart}")"
if [ ! -x "$BIN" ]; then
  echo "no executable rampart binary at $BIN (build it first: cargo build --release)" >&2
  exit 1
fi

if ! python3 -c 'import openapi_spec_validator' 2>/dev/null; then
  echo "==> installing openapi-spec-validator"
  python3 -m pip install --quiet openapi-spec-validator
fi

tmp="$(mktemp -d)"
cleanup() {
  rampart_stop
  rm -rf "$tmp"
}
trap cleanup EXIT

port="$(rampart_port)"
base="http://127.0.0.1:$port"

echo "==> starting $BIN on SQLite at $base (development mode)"
rampart_start "$BIN" "$tmp" "$tmp/server.log" \
  PATH="$PATH" HOME="$tmp" \
  RAMPART_ENV=development RAMPART_DOCS=true RAMPART_BIND="127.0.0.1:$port" \
  DATABASE_URL="sqlite://$tmp/rampart.db"
rampart_wait_ready "$base" "$tmp/server.log"

curl -fsS -o "$tmp/openapi.json" "$base/openapi.json"
echo "==> openapi-spec-validator: $base/openapi.json"
if [ -n "${OPENAPI_OUT:-}" ]; then
  cp "$tmp/openapi.json" "$OPENAPI_OUT"
fi
python3 -m openapi_spec_validator --validation-errors all "$tmp/openapi.json"
