#!/usr/bin/env bash
# The whole check, as CI runs it: formatting, lints, and every test on SQLite and PostgreSQL.
#
#   TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres \
#   TEST_REDIS_URL=redis://127.0.0.1:6379 scripts/test.sh
#
# Without TEST_POSTGRES_URL (or TEST_REDIS_URL) the tests that need that server are
# skipped with a notice, unless CI is set, in which case they fail.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> cargo fmt --check"
cargo fmt --all --check

echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

# The API docs build without a broken or private intra-doc link (rustdoc, ~15 s).
echo "==> cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked

if [ -z "${TEST_POSTGRES_URL:-}" ]; then
  if [ -n "${CI:-}" ]; then
    echo "TEST_POSTGRES_URL is not set: CI must run the PostgreSQL half" >&2
    exit 1
  fi
  echo "notice: TEST_POSTGRES_URL is not set; PostgreSQL tests will be skipped"
fi
if [ -z "${TEST_REDIS_URL:-}" ]; then
  if [ -n "${CI:-}" ]; then
    echo "TEST_REDIS_URL is not set: CI must run the Redis tests" >&2
    exit 1
  fi
  echo "notice: TEST_REDIS_URL is not set; Redis tests will be skipped"
fi

echo "==> cargo test (SQLite and PostgreSQL)"
cargo test --workspace --locked
