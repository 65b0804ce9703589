# Shared by scripts/check-openapi.sh and scripts/fuzz-openapi.sh (source it): starts a
# rampart binary in the background on a free loopback port and waits until it is ready.
#
#   rampart_port                      prints a free loopback port
#   rampart_start BIN DIR LOG ENV...  runs `BIN serve` in DIR with only ENV (env -i), its
#                                     output in LOG; sets RAMPART_PID
#   rampart_wait_ready BASE LOG       waits (30 s at most) for BASE/health/ready; on failure
#                                     prints LOG and returns 1
#   rampart_stop                      SIGTERM to the server, if it still runs

RAMPART_PID=""

rampart_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

rampart_start() {
  local bin="$1" dir="$2" log="$3"
  shift 3
  (
    cd "$dir"
    exec env -i "$@" "$bin" serve
  ) >"$log" 2>&1 &
  RAMPART_PID=$!
}

rampart_wait_ready() {
  local base="$1" log="$2"
  for _ in $(seq 1 300); do
    if curl -fsS -o /dev/null "$base/health/ready" 2>/dev/null; then
      return 0
    fi
    if ! kill -0 "$RAMPART_PID" 2>/dev/null; then
      break
    fi
    sleep 0.1
  done
  echo "the server did not become ready; its log:" >&2
  cat "$log" >&2
  return 1
}

rampart_stop() {
  if [ -n "$RAMPART_PID" ] && kill -0 "$RAMPART_PID" 2>/dev/null; then
    kill -TERM "$RAMPART_PID" 2>/dev/null || true
    wait "$RAMPART_PID" 2>/dev/null || true
  fi
}
