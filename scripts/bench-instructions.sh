#!/usr/bin/env bash
# Instructions per authenticated `GET /users/me`, counted by valgrind's callgrind: a figure
# that does not move with the host's load, for A/B comparisons too small for the timed
# benchmarks (whose CPU per request varies by ±3–10 % between identical runs here).
#
#   scripts/bench-instructions.sh path/to/rampart [rampart-bench load options…]
#   scripts/bench-instructions.sh --bare path/to/rampart [rampart-bench all options…]
#   e.g. … --server-env RAMPART_METRICS_BIND=127.0.0.1:0
#        … --database-url postgres://postgres@127.0.0.1:5432/postgres
#
# It runs `rampart-bench load` twice (4 s and 16 s of `/me` at 8 connections, 2 users) with
# the server under callgrind, and divides the difference of the two totals by the
# difference of the two request counts, so start-up, key generation and the users' Argon2id
# hashes cancel out. The requests are counted in the profile itself (the calls of a function
# that runs once per request: `security_headers::apply`, or the baseline's handler), not by
# the load generator, whose count leaves out its warm-up and so made the figure vary by
# ±3 % between identical runs. The server's own instructions only (PostgreSQL and the load generator
# are other processes). Keeps the longer run's profile as $OUT/me.16.cg (OUT defaults to
# target/bench-instructions) for `callgrind_annotate`.
#
# With --bare it counts the bare axum + sqlx baseline instead (`rampart-bench all`'s
# compare phase, on SQLite, or on PostgreSQL when given --database-url, with the baseline under callgrind and
# Rampart run natively): the two figures divided are the CPU ÷ bare ratio of issue 13 in
# instructions, free of the host's noise. The profile is $OUT/bare.16.cg.
#
# Read the result as a relative figure: under valgrind the CPU has no SHA extensions (the
# token cache's SHA-256 runs in software, ~50 000 instructions where the real CPU spends
# ~1 µs) and `rep movsb` copies count one instruction per byte. Needs valgrind (Debian's
# `valgrind`) and a release `rampart-bench` (cargo build --release -p rampart-bench).
set -euo pipefail
cd "$(dirname "$0")/.."
BARE=false
if [ "${1:-}" = --bare ]; then
  BARE=true
  shift
fi
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
printf '#!/bin/sh\nexec valgrind --tool=callgrind --callgrind-out-file=%s/out.%%p "%s" "$@"\n' \
  "$WORK" "$BENCH" > "$WORK/bare-wrapper"
chmod +x "$WORK/bare-wrapper"

# calls PROFILE FUNCTION: how many times FUNCTION was called in a callgrind profile (names
# are compressed: `cfn=(id) name` the first time, `cfn=(id)` after).
calls() {
  python3 - "$1" "$2" <<'PY'
import re, sys
names, total, current = {}, 0, None
for line in open(sys.argv[1], errors="replace"):
    if line.startswith(("fn=", "cfn=")):
        m = re.match(r"c?fn=\((\d+)\)(?: (.*))?", line)
        if m:
            if m.group(2):
                names[m.group(1)] = m.group(2).strip()
            if line.startswith("cfn="):
                current = names.get(m.group(1))
    elif line.startswith("calls=") and current == sys.argv[2]:
        total += int(line[6:].split()[0])
print(total)
PY
}

run() {
  local seconds=$1
  shift
  rm -f "$WORK"/out.*
  local output requests profile
  output="$(cd "$WORK" && "$BENCH" load --bin "$WORK/wrapper" --concurrency 8 --skip live,flood \
    --seconds "$seconds" --hash-rate 48 --users 2 "$@" 2>&1)" || { echo "$output" >&2; exit 1; }
  # The `serve` process (the bench also runs `rampart migrate` and key commands).
  profile="$(grep -l '^cmd:.* serve' "$WORK"/out.* | head -1)"
  cp "$profile" "$OUT/me.$seconds.cg"
  requests="$(calls "$profile" 'rampart_api::middleware::security_headers::apply')"
  echo "$requests $(awk '/^totals:/ {print $2}' "$profile")"
}

# The same for the baseline: only it runs under callgrind.
run_bare() {
  local seconds=$1
  shift
  rm -f "$WORK"/out.*
  local output requests profile
  local backend=sqlite
  case " $* " in *" --database-url "*) backend=postgres ;; esac
  output="$(cd "$WORK" && RAMPART_BENCH_BARE_PROGRAM="$WORK/bare-wrapper" "$BENCH" all \
    --bin "$WORK/rampart" --backends "$backend" --skip startup,me,live,login,flood,shed \
    --compare-rounds 1 --seconds "$seconds" --hash-rate 48 --users 2 "$@" 2>&1)" \
    || { echo "$output" >&2; exit 1; }
  profile="$(grep -l '^cmd:.* bare-server' "$WORK"/out.* | head -1)"
  cp "$profile" "$OUT/bare.$seconds.cg"
  requests="$(calls "$profile" 'core::ptr::drop_in_place<rampart_bench::bare::get_me::{{closure}}>')"
  echo "$requests $(awk '/^totals:/ {print $2}' "$profile")"
}

if $BARE; then
  short="$(run_bare 4 "$@")"
  long="$(run_bare 16 "$@")"
else
  short="$(run 4 "$@")"
  long="$(run 16 "$@")"
fi
echo "$short $long" | awk '{
  printf "4 s: %d requests served, %d instructions; 16 s: %d requests served, %d instructions\n", $1, $2, $3, $4
  printf "instructions per /users/me: %.0f\n", ($4 - $2) / ($3 - $1)
}'
