#!/usr/bin/env bash
# Browser tests of the web console (contract §13): starts the given binary (default
# target/release/rampart) on SQLite and then on a fresh PostgreSQL database, each in
# development mode on a free loopback port with the mail outbox in a temporary directory,
# creates an administrator with `rampart admin create`, and runs tests/console/run.py in the
# system Chromium (Debian's `chromium`, driven by Playwright for Python; Playwright never
# downloads a browser here). Screenshots of every page land in target/console-screenshots/.
#
#   scripts/test-console.sh [path/to/rampart]
#   TEST_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/postgres)
#   CONSOLE_DBS="sqlite postgres" (default both)
#   CONSOLE_DOCS_SHOTS=docs/console: instead of the tests, take docs/console.md's
#     screenshots there (tests/console/docs_shots.py; use with CONSOLE_DBS=sqlite)
#
# Installs what is missing: `chromium` (apt-get) and `playwright` and `pyotp` (pip).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/serve.sh
BIN="$(realpath "${1:-target/release/rampart}")"
if [ ! -x "$BIN" ]; then
  echo "no executable rampart binary at $BIN (build it first: cargo build --release)" >&2
  exit 1
fi
PG_URL="${TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
PLAYWRIGHT_VERSION=1.65.3
PYOTP_VERSION=2.12.1

if [ ! -x /usr/bin/chromium ]; then
  echo "==> installing Debian's chromium"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
if ! python3 -c "import sys, playwright, pyotp; from importlib.metadata import version; sys.exit(version('playwright') != '$PLAYWRIGHT_VERSION')" 2>/dev/null; then
  echo "==> installing playwright $PLAYWRIGHT_VERSION and pyotp $PYOTP_VERSION (Python packages only; no browser download)"
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 python3 -m pip install --quiet \
    "playwright==$PLAYWRIGHT_VERSION" "pyotp==$PYOTP_VERSION"
fi

tmp="$(mktemp -d)"
pg_db=""
cleanup() {
  rampart_stop
  if [ -n "$pg_db" ]; then
    psql "$PG_URL" -qc "DROP DATABASE IF EXISTS $pg_db WITH (FORCE)" >/dev/null 2>&1 || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

shots_root="target/console-screenshots"
mkdir -p "$shots_root"
admin_email=console-admin@example.org
admin_password='granite willow beacon 93'

for db in ${CONSOLE_DBS:-sqlite postgres}; do
  dir="$tmp/$db"
  mkdir -p "$dir/outbox"
  port="$(rampart_port)"
  # `localhost`, not 127.0.0.1: WebAuthn refuses an IP address as relying party ID, and the
  # RP ID defaults to the public URL's host (the server still binds 127.0.0.1 only).
  base="http://localhost:$port"
  case "$db" in
    sqlite) url="sqlite://$dir/rampart.db" ;;
    postgres)
      pg_db="rampart_console_$(date +%s)_$$"
      psql "$PG_URL" -qc "CREATE DATABASE $pg_db" >/dev/null
      url="$(python3 -c 'import sys, urllib.parse as u; p = u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/" + sys.argv[2])))' "$PG_URL" "$pg_db")"
      ;;
    *) echo "unknown database $db" >&2; exit 1 ;;
  esac
  # Plain http on loopback: the refresh cookie drops `Secure` (and its `__Secure-` prefix),
  # which development allows; the public URL is the console's own origin.
  server_env=(
    PATH="$PATH" HOME="$dir"
    RAMPART_ENV=development RAMPART_BIND="127.0.0.1:$port" DATABASE_URL="$url"
    RAMPART_PUBLIC_URL="$base" RAMPART_COOKIE_SECURE=false
    RAMPART_MAIL_OUTBOX="$dir/outbox" RAMPART_LOG_LEVEL=warn
    RAMPART_ARGON2_MEMORY_KIB=1024 RAMPART_ARGON2_ITERATIONS=1
    RAMPART_LOGIN_RATE_PER_MINUTE=1000 RAMPART_REGISTER_RATE_PER_HOUR=1000
    RAMPART_RATE_LIMIT_PER_MINUTE=100000
  )
  echo "==> console browser tests on $db at $base"
  (cd "$dir" && env -i "${server_env[@]}" "$BIN" migrate >/dev/null)
  (cd "$dir" && printf '%s\n' "$admin_password" | env -i "${server_env[@]}" "$BIN" admin create --email "$admin_email" >/dev/null)
  rampart_start "$BIN" "$dir" "$dir/server.log" "${server_env[@]}"
  rampart_wait_ready "$base" "$dir/server.log"
  status=0
  if [ -n "${CONSOLE_DOCS_SHOTS:-}" ]; then
    python3 tests/console/docs_shots.py --base "$base" --outbox "$dir/outbox" \
      --admin-email "$admin_email" --admin-password "$admin_password" \
      --shots "$shots_root/docs-$db" --out "$CONSOLE_DOCS_SHOTS" || status=$?
  else
    python3 tests/console/run.py --base "$base" --outbox "$dir/outbox" \
      --admin-email "$admin_email" --admin-password "$admin_password" \
      --shots "$shots_root/$db" || status=$?
  fi
  rampart_stop
  if grep -q '"level":"ERROR"\|ERROR' "$dir/server.log"; then
    echo "the server logged errors:" >&2
    grep 'ERROR' "$dir/server.log" >&2
    status=1
  fi
  if [ "$status" -ne 0 ]; then
    echo "console browser tests failed on $db; server log:" >&2
    tail -n 50 "$dir/server.log" >&2
    exit "$status"
  fi
done
echo "console browser tests passed; screenshots in $shots_root/"
