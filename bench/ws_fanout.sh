#!/usr/bin/env bash
# WebSocket fan-out: one sender, RECEIVERS clients in one room, against the release server with
# Redis on. Prints deliveries/s and delivery latency percentiles (bench/ws_fanout.rs).
#
#   bench/ws_fanout.sh        (env: RECEIVERS=1000, MESSAGES=200, GAP_MS=20, PORT=18001)
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${PORT:-18001}
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
cargo build --release --quiet --bin server
cargo bench --quiet --bench ws_fanout --no-run 2>/dev/null

work=$(mktemp -d)
trap 'kill "$server_pid" 2>/dev/null || true; rm -rf "$work"' EXIT
DATABASE_URL="sqlite://$work/bench.db?mode=rwc" PORT=$PORT ENABLE_WEBSOCKETS=true \
  ENABLE_REDIS=true REDIS_KEY_PREFIX="keel:bench:$$:" ENABLE_RATE_LIMITING=false \
  WS_MESSAGES_PER_SECOND=1000 LOG_LEVEL=warn target/release/server >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$PORT/system/health/ready" >/dev/null && break; sleep 0.2; done

WS_URL="ws://127.0.0.1:$PORT/integrations/ws/demo" cargo bench --quiet --bench ws_fanout
echo "server peak RSS: $(awk '/VmHWM/ {print int($2 / 1024)}' "/proc/$server_pid/status") MiB"
