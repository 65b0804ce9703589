#!/usr/bin/env bash
# Checks every ```nginx block of docs/deployment.md with `nginx -t`, so the guide's example
# is accepted by the nginx an operator gets from their distribution (Debian 12: 1.22).
# Installs nginx with apt-get when it is missing (no service is started: the config test
# runs on a throwaway configuration with a throwaway self-signed certificate).
set -euo pipefail
cd "$(dirname "$0")/.."
GUIDE=docs/deployment.md

NGINX="$(command -v nginx || true)"
[ -z "$NGINX" ] && [ -x /usr/sbin/nginx ] && NGINX=/usr/sbin/nginx
if [ -z "$NGINX" ]; then
  echo "==> installing nginx (for nginx -t)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends nginx >/dev/null \
    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends nginx >/dev/null; }
  NGINX=/usr/sbin/nginx
fi
"$NGINX" -v

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
  -subj /CN=api.example.com -keyout "$tmp/api.key" -out "$tmp/api.crt" 2>/dev/null

# Each block (also one indented in a list item), verbatim except for the certificate paths.
awk -v dir="$tmp" '
  /^ *```nginx$/ { n++; inside = 1; indent = index($0, "`") - 1; next }
  /^ *```$/ && inside { inside = 0; next }
  inside { print substr($0, indent + 1) > (dir "/block-" n ".conf") }
' "$GUIDE"
blocks=("$tmp"/block-*.conf)
if [ ! -e "${blocks[0]}" ]; then
  echo "no \`\`\`nginx block in $GUIDE" >&2
  exit 1
fi
for block in "${blocks[@]}"; do
  sed -i "s#/etc/nginx/tls/#$tmp/#g" "$block"
  conf="${block%.conf}.nginx"
  cat >"$conf" <<CONF
pid $tmp/nginx.pid;
error_log $tmp/error.log;
events {}
http {
    access_log off;
    include $block;
}
CONF
  echo "==> nginx -t: $(basename "$block") of $GUIDE"
  "$NGINX" -t -q -p "$tmp" -e "$tmp/error.log" -c "$conf"
done
echo "nginx accepts the ${#blocks[@]} example(s) in $GUIDE"
