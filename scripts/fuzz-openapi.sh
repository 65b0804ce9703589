#!/usr/bin/env bash
# Fuzzes every operation of the OpenAPI document with schemathesis (PyPI) and requires zero
# failures of: no 5xx (`not_a_server_error`), every status documented, every content type
# documented, every body matching its documented schema (problem documents included).
# Builds nothing: like scripts/check-openapi.sh it starts the given binary (default
# target/release/rampart) in development mode on SQLite in a temporary directory, on a free
# loopback port, with the rate limits raised so the fuzzer is not answered 429 throughout
# (429 stays documented), creates two administrators with `rampart admin create`, and runs:
#
#   1. main: every operation except the session-ending ones, as administrator A with one
#      fixed `Authorization: Bearer` token, which must still work afterwards;
#   2. sessions: the operations that end sessions or could end or disable the caller's
#      own account (logout, logout-all, DELETE /auth/sessions/{id}, password change, MFA
#      enable/disable, the admin routes on /users/{id}), plus what feeds them ids
#      (register, GET /auth/sessions), as administrator B with a fresh login for every
#      case (a hook), so each case has a live session to end; `{id}` is half of the time one
#      of six registered users (never an administrator), so the admin routes reach real
#      accounts;
#   3. refresh: /auth/refresh with the refresh cookie of a login of its own (the first
#      rotation answers 200, the replays after it 401: reuse detection).
#
# Every operation of the document must be exercised by one of the runs. The script prints
# per run the operations and generated cases (and per operation the statuses seen), and
# exits non-zero on any failure, error, uncovered operation or ERROR line in the server log.
#
#   scripts/fuzz-openapi.sh [path/to/rampart]
#   FUZZ_MAX_EXAMPLES (default 200) cases per operation and phase; FUZZ_SEED (default 20261206);
#   FUZZ_REPORT_DIR=dir keeps the schemathesis reports (JUnit, JSON, NDJSON) and server log.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/serve.sh
BIN="$(realpath "${1:-target/release/rampart}")"
if [ ! -x "$BIN" ]; then
  echo "no executable rampart binary at $BIN (build it first: cargo build --release)" >&2
  exit 1
fi
SCHEMATHESIS_VERSION=4.32.5
MAX_EXAMPLES="${FUZZ_MAX_EXAMPLES:-200}"
SEED="${FUZZ_SEED:-20261206}"
start_time=$SECONDS

if ! python3 -c "import sys, schemathesis; sys.exit(schemathesis.__version__ != '$SCHEMATHESIS_VERSION')" 2>/dev/null; then
  echo "==> installing schemathesis $SCHEMATHESIS_VERSION"
  python3 -m pip install --quiet "schemathesis==$SCHEMATHESIS_VERSION"
fi

tmp="$(mktemp -d)"
cleanup() {
  rampart_stop
  if [ -n "${FUZZ_REPORT_DIR:-}" ]; then
    mkdir -p "$FUZZ_REPORT_DIR"
    cp -r "$tmp/reports/." "$tmp/server.log" "$FUZZ_REPORT_DIR/" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
mkdir -p "$tmp/reports"

port="$(rampart_port)"
base="http://127.0.0.1:$port"

# The server's settings, shared by `serve` and `admin create`. Cheap Argon2id (this is a
# throwaway database) and limits raised to their maxima so that fuzzing reaches the
# handlers; lockout still counts (1000 failures), so wrong passwords stay harmless.
server_env=(
  PATH="$PATH" HOME="$tmp"
  RAMPART_ENV=development RAMPART_DOCS=true RAMPART_BIND="127.0.0.1:$port"
  DATABASE_URL="sqlite://$tmp/rampart.db"
  RAMPART_LOG_LEVEL=warn
  RAMPART_ARGON2_MEMORY_KIB=64 RAMPART_ARGON2_ITERATIONS=1
  RAMPART_RATE_LIMIT_PER_MINUTE=10000000 RAMPART_LOGIN_RATE_PER_MINUTE=10000000
  RAMPART_REGISTER_RATE_PER_HOUR=10000000 RAMPART_RESET_RATE_PER_HOUR=10000
  RAMPART_LOGIN_MAX_FAILURES=1000 RAMPART_ACCESS_TOKEN_TTL=1h
)

echo "==> starting $BIN on SQLite at $base (development mode)"
rampart_start "$BIN" "$tmp" "$tmp/server.log" "${server_env[@]}"
rampart_wait_ready "$base" "$tmp/server.log"
curl -fsS -o "$tmp/openapi.json" "$base/openapi.json"

admin_a=fuzz-main@example.org
admin_b=fuzz-sessions@example.org
password_a='violet harbour lantern 31'
password_b='copper meadow whistle 57'
create_admin() {
  (cd "$tmp" && printf '%s\n' "$2" | env -i "${server_env[@]}" "$BIN" admin create --email "$1")
}
create_admin "$admin_a" "$password_a"
create_admin "$admin_b" "$password_b"

# Logs in; prints the response headers to $3 and the body to stdout.
login() {
  curl -fsS -D "$3" -H 'content-type: application/json' \
    --data "$(python3 -c 'import json, sys; print(json.dumps({"email": sys.argv[1], "password": sys.argv[2]}))' "$1" "$2")" \
    "$base/api/v1/auth/login"
}
token_a="$(login "$admin_a" "$password_a" "$tmp/login-a.headers" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["accessToken"])')"

# Plain users, each with a live session, for the admin routes of run 2 to act on: three for
# DELETE /users/{id} and three for the others, so deletions leave the others their targets.
victims=()
for n in 1 2 3 4 5 6; do
  email="fuzz-victim-$n@example.org"
  password="amber falcon ridge 8$n"
  body="$(python3 -c 'import json, sys; print(json.dumps({"email": sys.argv[1], "password": sys.argv[2], "displayName": "Victim"}))' "$email" "$password")"
  victims+=("$(curl -fsS -H 'content-type: application/json' --data "$body" "$base/api/v1/auth/register" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')")
  login "$email" "$password" /dev/null >/dev/null
done

# Run 3's refresh cookie, from a login of a user no other run touches.
curl -fsS -o /dev/null -H 'content-type: application/json' \
  --data '{"email":"fuzz-refresh@example.org","password":"silver orchard compass 64","displayName":"Refresh"}' \
  "$base/api/v1/auth/register"
login fuzz-refresh@example.org 'silver orchard compass 64' "$tmp/login-refresh.headers" >/dev/null
refresh_cookie="$(sed -n 's/^[Ss]et-[Cc]ookie: \([^;]*\);.*/\1/p' "$tmp/login-refresh.headers" | head -n 1)"
if [ -z "$refresh_cookie" ]; then
  echo "the login set no refresh cookie" >&2
  exit 1
fi

# The operations that end the caller's sessions or could disable, delete or strip the
# caller's own account: never run with administrator A's fixed token.
session_ending=(
  'POST /api/v1/auth/logout'
  'POST /api/v1/auth/logout-all'
  'DELETE /api/v1/auth/sessions/{id}'
  'POST /api/v1/auth/password'
  'POST /api/v1/auth/mfa/totp/enable'
  'POST /api/v1/auth/mfa/totp/disable'
  'PATCH /api/v1/users/{id}'
  'DELETE /api/v1/users/{id}'
  'DELETE /api/v1/users/{id}/sessions'
  'DELETE /api/v1/users/{id}/mfa'
  'PUT /api/v1/users/{id}/roles'
)
# Run with them: the operations whose answers give the stateful phase ids to follow.
session_extra=(
  'POST /api/v1/auth/register'
  'GET /api/v1/auth/sessions'
)
refresh_op='POST /api/v1/auth/refresh'

# Run 2 logs administrator B in afresh for every case that carries a token, so that a
# case before it that ended B's sessions does not turn the next one into a plain 401.
cat >"$tmp/fresh_login.py" <<'EOF'
import json
import os
import urllib.request

import schemathesis

LOGIN = os.environ["FUZZ_BASE_URL"] + "/api/v1/auth/login"
CREDENTIALS = json.dumps(
    {"email": os.environ["FUZZ_ADMIN_EMAIL"], "password": os.environ["FUZZ_ADMIN_PASSWORD"]}
).encode()


@schemathesis.auth(refresh_interval=None).skip_for(name="POST /api/v1/auth/register")
class FreshLogin:
    def get(self, case, context):
        request = urllib.request.Request(
            LOGIN, data=CREDENTIALS, headers={"content-type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)["accessToken"]

    def set(self, case, token, context):
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}
EOF
# Half of run 2's `{id}`s are the victims'.
cat >"$tmp/sessions.toml" <<EOF
[dictionaries.victims]
values = [$(printf '"%s", ' "${victims[@]:0:3}")]

[dictionaries.doomed]
values = [$(printf '"%s", ' "${victims[@]:3:3}")]

[parameters]
"path.id" = { dictionary = "victims", probability = 0.5 }

[[operations]]
include-name = "DELETE /api/v1/users/{id}"
parameters = { "path.id" = { dictionary = "doomed", probability = 0.5 } }
EOF

schemathesis() {
  (cd "$tmp" && python3 -c 'import sys; from schemathesis.cli import schemathesis as cli; sys.argv[0] = "schemathesis"; sys.exit(cli())' "$@")
}
common=(
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance
  --max-examples "$MAX_EXAMPLES" --seed "$SEED" --generation-database none
  --request-timeout 10 --no-color
)

status=0
echo "==> run 1 (main): every operation but the session-ending ones, as $admin_a"
main_args=()
for op in "${session_ending[@]}" "${session_extra[@]}" "$refresh_op"; do
  main_args+=(--exclude-name "$op")
done
schemathesis run "$base/openapi.json" "${common[@]}" "${main_args[@]}" \
  -H "Authorization: Bearer $token_a" \
  --report junit,json,ndjson --report-dir "$tmp/reports/main" || status=1

me="$(curl -sS -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token_a" "$base/api/v1/users/me")"
if [ "$me" != 200 ]; then
  echo "run 1 ended its own token: GET /api/v1/users/me answers $me" >&2
  status=1
fi

echo "==> run 2 (sessions): the session-ending operations, as $admin_b (a fresh login per case)"
sessions_args=()
for op in "${session_ending[@]}" "${session_extra[@]}"; do
  sessions_args+=(--include-name "$op")
done
export FUZZ_BASE_URL="$base" FUZZ_ADMIN_EMAIL="$admin_b" FUZZ_ADMIN_PASSWORD="$password_b"
SCHEMATHESIS_HOOKS="$tmp/fresh_login.py" schemathesis --config-file "$tmp/sessions.toml" run "$base/openapi.json" "${common[@]}" "${sessions_args[@]}" \
  --report junit,json,ndjson --report-dir "$tmp/reports/sessions" || status=1

echo "==> run 3 (refresh): $refresh_op with a refresh cookie of its own"
schemathesis run "$base/openapi.json" "${common[@]}" --include-name "$refresh_op" \
  -H "Cookie: $refresh_cookie" \
  --report junit,json,ndjson --report-dir "$tmp/reports/refresh" || status=1

echo "==> coverage"
python3 - "$tmp/openapi.json" "$tmp/reports" main sessions refresh <<'EOF' || status=1
import glob, json, sys
from collections import Counter, defaultdict

doc_path, reports, *runs = sys.argv[1:]
doc = json.load(open(doc_path))
methods = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
documented = {f"{m.upper()} {p}" for p, item in doc["paths"].items() for m in item if m in methods}

ok = True
covered = set()
for run in runs:
    (summary_path,) = glob.glob(f"{reports}/{run}/json-*.json")
    (events_path,) = glob.glob(f"{reports}/{run}/ndjson-*.ndjson")
    summary = json.load(open(summary_path))
    cases = Counter()
    statuses = defaultdict(Counter)
    with open(events_path) as events:
        for line in events:
            event = json.loads(line).get("ScenarioFinished")
            if not event:
                continue
            recorder = event["recorder"]
            for case_id, case in recorder.get("cases", {}).items():
                # Stateful scenarios chain several operations: each case names its own.
                value = case["value"]
                operation = f"{value['method']} {value['path']}"
                response = (recorder.get("interactions", {}).get(case_id) or {}).get("response")
                if response is None:
                    continue
                cases[operation] += 1
                statuses[operation][response["status_code"]] += 1
    ops = summary["operations"]
    tc = summary["test_cases"]
    print(f"run {run}: {ops['tested']} of {ops['selected']} selected operations tested "
          f"({ops['errored']} errored), {tc['generated']} cases generated, "
          f"{tc['with_failures']} with failures, {tc['errored']} errored")
    probes = Counter()
    for op in sorted(cases):
        if op not in documented:
            # The coverage phase's probes of undocumented methods (405 expected).
            probes.update(statuses[op])
            continue
        seen = " ".join(f"{code}x{n}" for code, n in sorted(statuses[op].items()))
        print(f"    {op:42} {cases[op]:5} cases   statuses {seen}")
    if probes:
        seen = " ".join(f"{code}x{n}" for code, n in sorted(probes.items()))
        print(f"    {'(undocumented methods)':42} {sum(probes.values()):5} cases   statuses {seen}")
    if summary["failures"] or tc["with_failures"] or tc["errored"] or ops["errored"]:
        ok = False
    if ops["tested"] != ops["selected"]:
        print(f"run {run}: not every selected operation was tested", file=sys.stderr)
        ok = False
    covered |= set(cases)

missing = sorted(documented - covered)
print(f"{len(covered & documented)} of {len(documented)} documented operations exercised")
if missing:
    print("not exercised by any run: " + ", ".join(missing), file=sys.stderr)
    ok = False
sys.exit(0 if ok else 1)
EOF

if grep -q '"level":"ERROR"' "$tmp/server.log"; then
  echo "the server logged errors:" >&2
  grep '"level":"ERROR"' "$tmp/server.log" >&2
  status=1
fi

echo "==> done in $((SECONDS - start_time)) s"
if [ "$status" != 0 ]; then
  echo "fuzzing found problems (see above)" >&2
fi
exit "$status"
