#!/usr/bin/env bash
# Login throughput against the raw argon2 verify rate of the same number of hashing threads, and
# /system/health/live latency while logins saturate the CPU. Needs `hey` (apt-get install hey).
#
#   bench/login.sh            (env: SECONDS_PER_RUN=20, LOGIN_CONNECTIONS=16, PORT=18000)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${SECONDS_PER_RUN:-20}
CONNS=${LOGIN_CONNECTIONS:-16}
PORT=${PORT:-18000}
THREADS=${PASSWORD_HASH_CONCURRENCY:-$(nproc)}
command -v hey >/dev/null || { echo "bench needs hey: apt-get install hey" >&2; exit 1; }

cargo build --release --quiet --bin server
cargo bench --quiet --bench argon2_rate --no-run 2>/dev/null

work=$(mktemp -d)
trap 'kill "$server_pid" 2>/dev/null || true; rm -rf "$work"' EXIT
DATABASE_URL="sqlite://$work/bench.db?mode=rwc" PORT=$PORT REQUIRE_EMAIL_VERIFICATION=false \
  ENABLE_RATE_LIMITING=false \
  PASSWORD_HASH_CONCURRENCY=$THREADS LOG_LEVEL=warn \
  target/release/server >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$PORT/system/health/live" >/dev/null && break; sleep 0.2; done
curl -fs "http://127.0.0.1:$PORT/system/health/live" >/dev/null || { cat "$work/server.log"; exit 1; }
curl -fsS -X POST "http://127.0.0.1:$PORT/auth/register" -H 'Content-Type: application/json' \
  -d '{"email":"bench@example.com","username":"benchuser","password":"BenchPassword123!"}' >/dev/null

echo "== raw argon2id verify rate, $THREADS thread(s), ${DURATION}s"
THREADS=$THREADS SECONDS=$DURATION cargo bench --quiet --bench argon2_rate | tee "$work/raw.txt"
raw=$(sed -n 's/.*rate=\([0-9.]*\).*/\1/p' "$work/raw.txt")

echo "== login: $CONNS connections for ${DURATION}s, with /system/health/live probed at 50 req/s"
hey -z "${DURATION}s" -c 2 -q 25 "http://127.0.0.1:$PORT/system/health/live" >"$work/live.txt" &
probe=$!
hey -z "${DURATION}s" -c "$CONNS" -m POST -T application/x-www-form-urlencoded \
  -d 'username=bench%40example.com&password=BenchPassword123%21' \
  "http://127.0.0.1:$PORT/auth/login" >"$work/login.txt"
wait "$probe"
login=$(awk '/Requests\/sec/ {print $2}' "$work/login.txt")
statuses=$(sed -n '/Status code distribution/,/^$/p' "$work/login.txt" | tail -n +2 | xargs)
live_p99=$(awk '/99% in/ {print $3 * 1000}' "$work/live.txt")
live_p50=$(awk '/50% in/ {print $3 * 1000}' "$work/live.txt")
rss_kb=$(awk '/VmHWM/ {print $2}' "/proc/$server_pid/status")

echo
echo "login throughput:        $login req/s  (statuses: $statuses)"
echo "raw argon2 verify rate:  $raw verifies/s with $THREADS thread(s)"
awk -v l="$login" -v r="$raw" 'BEGIN { printf "login / raw:             %.1f%%  (target >= 90%%)\n", 100 * l / r }'
echo "health/live under load:  p50 ${live_p50} ms, p99 ${live_p99} ms  (target p99 < 20 ms)"
echo "server peak RSS:         $((rss_kb / 1024)) MiB"
