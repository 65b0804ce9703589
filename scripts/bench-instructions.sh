#!/usr/bin/env bash
# Instructions per authenticated `GET /users/me`, counted by valgrind's callgrind: a figure
# that does not move with the host's load, for A/B comparisons too small for the timed
# benchmarks (whose CPU per request varies by ±3–10 % between identical runs here).
#
#   scripts/bench-instructions.sh path/to/rampart [rampart-bench load options…]
#   e.g. … --server-env RAMPART_METRICS_BIND=127.0.0.1:0
#        … --database-url postgres://postgres@127.0.0.1:5432/postgres
#
# It runs `rampart-bench load` twice (4 s and 16 s of `/me` at 8 connections, 2 users) with
# the server under callgrind, and divides the difference of the two totals by the
# difference of the two request counts, so start-up, key generation and the users' Argon2id
# hashes cancel out. The server's own instructions only (PostgreSQL and the load generator
# are other processes). Keeps the longer run's profile as $OUT/me.16.cg (OUT defaults to
# target/bench-instructions) for `callgrind_annotate`.
#
# Read the result as a relative figure: under valgrind the CPU has no SHA extensions (the
# token cache's SHA-256 runs in software, ~50 000 instructions where the real CPU spends
# ~1 µs) and `rep movsb` copies count one instruction per byte. Needs valgrind (Debian's
# `valgrind`) and a release `rampart-bench` (cargo build --release -p rampart-bench).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="$(realpath "${1:?usage: scripts/bench-instructions.sh path/to/rampart [bench options…]}")"
shift
BENCH="$(realpath target/release/rampart-bench)"
OUT="$(realpath -m "${OUT:-target/bench-instructions}")"
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
mkdir -p "$OUT"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cp "$BIN" "$WORK/rampart"
cat > "$WORK/wrapper" <<EOF
#!/bin/sh
exec valgrind --tool=callgrind --callgrind-out-file=$WORK/out.%p "$WORK/rampart" "\$@"
EOF
chmod +x "$WORK/wrapper"

run() {
  local seconds=$1
  shift
  rm -f "$WORK"/out.*
  local output requests profile
  output="$(cd "$WORK" && "$BENCH" load --bin "$WORK/wrapper" --concurrency 8 --skip live,flood \
    --seconds "$seconds" --hash-rate 48 --users 2 "$@" 2>&1)" || { echo "$output" >&2; exit 1; }
  requests="$(echo "$output" | awk '/^GET \/users\/me/ {print $4}')"
  # The `serve` process (the bench also runs `rampart migrate` and key commands).
  profile="$(grep -l '^cmd:.* serve' "$WORK"/out.* | head -1)"
  cp "$profile" "$OUT/me.$seconds.cg"
  echo "$requests $(awk '/^totals:/ {print $2}' "$profile")"
}

short="$(run 4 "$@")"
long="$(run 16 "$@")"
echo "$short $long" | awk '{
  printf "4 s: %d requests, %d instructions; 16 s: %d requests, %d instructions\n", $1, $2, $3, $4
  printf "instructions per /users/me: %.0f\n", ($4 - $2) / ($3 - $1)
}'
