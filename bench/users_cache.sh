#!/usr/bin/env bash
# GET /users?page=1&size=10 with and without the Redis cache, beside /system/health/live (the
# framework's own ceiling on this machine), 50 connections each. Needs `hey` (apt-get install hey)
# and Redis on 127.0.0.1:6379.
#
#   bench/users_cache.sh  (env: ROUNDS=3, SECONDS_PER_RUN=10, CONNECTIONS=50, PORT=18000, USERS=200)
#
# The machine's speed drifts from minute to minute (a shared VM), so the ceiling and the cached
# run alternate, ROUNDS times, and each cached run is set against the ceiling run just before it;
# the script reports every round and the median of the ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
ROUNDS=${ROUNDS:-3}
DURATION=${SECONDS_PER_RUN:-10}
CONNS=${CONNECTIONS:-50}
PORT=${PORT:-18000}
USERS=${USERS:-200}
command -v hey >/dev/null || { echo "bench needs hey: apt-get install hey" >&2; exit 1; }
cargo build --release --quiet --bin server

work=$(mktemp -d)
server_pid=
trap '[ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; rm -rf "$work"' EXIT
base="http://127.0.0.1:$PORT"

# start_server CACHE_TTL_SECONDS: the release server on the shared database, Redis on, no limits
start_server() {
  DATABASE_URL="sqlite://$work/bench.db?mode=rwc" PORT=$PORT REQUIRE_EMAIL_VERIFICATION=false \
    ENABLE_REDIS=true REDIS_KEY_PREFIX="keel:bench:$$:" CACHE_TTL_SECONDS=$1 \
    ENABLE_RATE_LIMITING=false LOG_LEVEL=warn target/release/server >>"$work/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 100); do curl -fs "$base/system/health/ready" >/dev/null && break; sleep 0.2; done
  curl -fs "$base/system/health/ready" >/dev/null || { cat "$work/server.log"; exit 1; }
}

stop_server() { kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=; }

# run NAME URL [TOKEN]: one hey run; prints req/s, p50, p99 and the server's largest RSS
# sampled every 0.2 s during the run
run() {
  local args=(-z "${DURATION}s" -c "$CONNS")
  [ -n "${3:-}" ] && args+=(-H "Authorization: Bearer $3")
  (while kill -0 "$server_pid" 2>/dev/null; do
     awk '/VmRSS/ {print $2}' "/proc/$server_pid/status"; sleep 0.2
   done) >"$work/$1.rss" 2>/dev/null &
  local sampler=$!
  hey "${args[@]}" "$2" >"$work/$1.txt"
  kill "$sampler" 2>/dev/null || true
  local rps p50 p99 statuses rss
  rps=$(awk '/Requests\/sec/ {print $2}' "$work/$1.txt")
  p50=$(awk '/50% in/ {print $3 * 1000}' "$work/$1.txt")
  p99=$(awk '/99% in/ {print $3 * 1000}' "$work/$1.txt")
  statuses=$(sed -n '/Status code distribution/,/^$/p' "$work/$1.txt" | tail -n +2 | xargs)
  rss=$(sort -n "$work/$1.rss" | tail -n 1 | awk '{print int($1 / 1024)}')
  printf '%-10s %10s req/s   p50 %6s ms   p99 %6s ms   max RSS %4s MiB   (%s)\n' \
    "$1" "$rps" "$p50" "$p99" "$rss" "$statuses"
  echo "$rps" >"$work/$1.rps"
}

start_server 60
for i in $(seq "$USERS"); do
  curl -fsS -X POST "$base/auth/register" -H 'Content-Type: application/json' \
    -d "{\"email\":\"bench$i@example.com\",\"username\":\"bench$i\",\"password\":\"BenchPassword123!\"}" >/dev/null
done
token=$(curl -fsS -X POST "$base/auth/login" -d 'username=bench1@example.com&password=BenchPassword123%21' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')

# The hashing threads give their memory back after 10 s without logins.
sleep 11
echo "== $CONNS connections, ${DURATION}s each, $USERS users"
for i in $(seq "$ROUNDS"); do
  run "live.$i" "$base/system/health/live"
  run "cached.$i" "$base/users?page=1&size=10" "$token"
  awk -v c="$(cat "$work/cached.$i.rps")" -v l="$(cat "$work/live.$i.rps")" \
    'BEGIN { printf "%.1f\n", 100 * c / l }' >>"$work/ratios"
done
echo "cached / live per round: $(xargs <"$work/ratios" | sed 's/ /%, /g')%"
echo "cached / live, median of $ROUNDS rounds: $(median "$work/ratios")%  (target >= 50%)"
curl -fsSI "$base/users?page=1&size=10" -H "Authorization: Bearer $token" | grep -i '^x-cache'
stop_server

# The same query with the cache switched off: every request reads the database.
start_server 0
run uncached "$base/users?page=1&size=10" "$token"
curl -fsSI "$base/users?page=1&size=10" -H "Authorization: Bearer $token" | grep -i '^x-cache'
