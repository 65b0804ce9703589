#!/usr/bin/env bash
# Generates a TypeScript client from an OpenAPI document Rampart served (openapi-typescript,
# npm) and type-checks it, with an integrator's example (clients/typescript/src/example.ts)
# that uses it, with `tsc --noEmit` — so the document stays usable by the people who build
# on Rampart. Versions are pinned in clients/typescript/package-lock.json.
#
#   OPENAPI_OUT=target/openapi.json scripts/check-openapi.sh target/release/rampart
#   scripts/check-openapi-client.sh target/openapi.json
set -euo pipefail
cd "$(dirname "$0")/.."
DOC="$(realpath "${1:-target/openapi.json}")"
if [ ! -s "$DOC" ]; then
  echo "no OpenAPI document at $DOC (fetch one first: OPENAPI_OUT=$DOC scripts/check-openapi.sh)" >&2
  exit 1
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "npm (Node.js 18 or later) is needed to type-check the generated client" >&2
  exit 1
fi
cd clients/typescript
echo "==> npm ci (openapi-typescript, openapi-fetch, typescript)"
npm ci --no-audit --no-fund --loglevel=error
echo "==> openapi-typescript $DOC"
npx --no-install openapi-typescript "$DOC" -o src/rampart.d.ts
echo "==> tsc --noEmit"
npx --no-install tsc --noEmit -p .
echo "TypeScript client: generated and type-checked"
