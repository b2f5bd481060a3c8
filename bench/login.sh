#!/usr/bin/env bash
# Login throughput against the raw argon2 verify rate of the same number of hashing threads, and
# /system/health/live latency while logins saturate the CPU. Needs `wrk` and `hey`
# (apt-get install wrk hey): wrk drives the logins, hey probes the health endpoint at a fixed rate.
#
#   bench/login.sh   (env: ROUNDS=5, SECONDS_PER_RUN=10, LOGIN_CONNECTIONS=16, PORT=18000)
#
# The machine's speed drifts from minute to minute (a shared VM: the raw rate alone has measured
# anywhere from 92 to 138 verifies/s here), so one raw run followed by one login run compares two
# different machines. The script alternates instead: raw, login, raw, login, ..., raw, and sets
# each login run against the mean of the raw runs just before and after it. It reports every
# round and the median of the rounds' ratios.
#
# The load generator shares the two cores with the server, so its own CPU time comes out of the
# hashing threads' share: wrk (C, one thread, epoll) spends ~0.2 s of CPU on a 20 s login run
# where hey spent ~0.8 s, which is why wrk drives the logins.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
ROUNDS=${ROUNDS:-5}
DURATION=${SECONDS_PER_RUN:-10}
CONNS=${LOGIN_CONNECTIONS:-16}
PORT=${PORT:-18000}
THREADS=${PASSWORD_HASH_CONCURRENCY:-$(nproc)}
for tool in wrk hey; do
  command -v $tool >/dev/null || { echo "bench needs $tool: apt-get install $tool" >&2; exit 1; }
done

cargo build --release --quiet --bin server
# The raw-rate program, run directly so cargo's own start-up is not part of any run.
raw_bin=$(cargo bench --bench argon2_rate --no-run 2>&1 |
  sed -n 's/.*Executable .*(\(target\/[^)]*\)).*/\1/p' | tail -n 1)
[ -x "$raw_bin" ] || { echo "cannot find the argon2_rate bench executable" >&2; exit 1; }

work=$(mktemp -d)
printf '%s\n' 'wrk.method = "POST"' \
  'wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"' \
  'wrk.body = "username=bench%40example.com&password=BenchPassword123%21"' >"$work/login.lua"
trap 'kill "$server_pid" 2>/dev/null || true; rm -rf "$work"' EXIT
DATABASE_URL="sqlite://$work/bench.db?mode=rwc" PORT=$PORT REQUIRE_EMAIL_VERIFICATION=false \
  ENABLE_RATE_LIMITING=false \
  PASSWORD_HASH_CONCURRENCY=$THREADS LOG_LEVEL=warn \
  target/release/server >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$PORT/system/health/ready" >/dev/null && break; sleep 0.2; done
curl -fs "http://127.0.0.1:$PORT/system/health/ready" >/dev/null || { cat "$work/server.log"; exit 1; }
curl -fsS -X POST "http://127.0.0.1:$PORT/auth/register" -H 'Content-Type: application/json' \
  -d '{"email":"bench@example.com","username":"benchuser","password":"BenchPassword123!"}' >/dev/null

raw_run() {
  THREADS=$THREADS SECONDS=$DURATION "$raw_bin" | sed -n 's/.*rate=\([0-9.]*\).*/\1/p'
}

# login_run N: $CONNS connections of POST /auth/login for $DURATION s while /system/health/live is
# probed at 50 req/s; the probe's latencies go to live.N.csv
login_run() {
  hey -z "${DURATION}s" -c 2 -q 25 -o csv "http://127.0.0.1:$PORT/system/health/live" \
    >"$work/live.$1.csv" &
  local probe=$!
  wrk -t 1 -c "$CONNS" -d "${DURATION}s" -s "$work/login.lua" \
    "http://127.0.0.1:$PORT/auth/login" >"$work/login.$1.txt"
  wait "$probe"
  # wrk counts every answer and names the ones that were not 2xx/3xx, and socket errors
  awk '/requests in/ { n = $1 } /Non-2xx/ { bad = $NF } /Socket errors/ { sub(/.*Socket errors: /, ""); err = $0 }
    END { printf "%d answers, %d not 2xx%s\n", n, bad, err ? ", socket errors: " err : "" }' \
    "$work/login.$1.txt" >"$work/statuses.$1"
  awk '/^Requests\/sec/ {print $2}' "$work/login.$1.txt"
}

echo "== $ROUNDS rounds of ${DURATION}s: raw argon2id verify rate ($THREADS threads, no server" \
  "work) and login ($CONNS connections, /system/health/live probed at 50 req/s), alternating"
raw_prev=$(raw_run)
printf '%-6s %12s %12s %12s %9s   %s\n' round "raw before" "login req/s" "raw after" "ratio" statuses
for i in $(seq "$ROUNDS"); do
  login=$(login_run "$i")
  raw_next=$(raw_run)
  ratio=$(awk -v l="$login" -v a="$raw_prev" -v b="$raw_next" 'BEGIN { printf "%.1f", 200 * l / (a + b) }')
  echo "$ratio" >>"$work/ratios"
  printf '%-6s %12s %12.1f %12s %8s%%   %s\n' "$i" "$raw_prev" "$login" "$raw_next" "$ratio" \
    "$(cat "$work/statuses.$i")"
  raw_prev=$raw_next
done

median=$(median "$work/ratios")
# hey's csv: response-time (s) first; the header line and non-200 answers are left out
live=$(cat "$work"/live.*.csv | awk -F, '$7 == 200 { print $1 * 1000 }' | sort -n |
  awk '{ v[NR] = $1 } END { printf "p50 %.1f ms, p99 %.1f ms, max %.1f ms (%d probes)",
    v[int(NR * 0.50) + 1], v[int(NR * 0.99) + 1], v[NR], NR }')
rss_kb=$(awk '/VmHWM/ {print $2}' "/proc/$server_pid/status")

echo
echo "login / raw, median of $ROUNDS rounds: ${median}%  (target >= 90%)"
echo "health/live under load:  $live  (target p99 < 20 ms)"
echo "server peak RSS:         $((rss_kb / 1024)) MiB"
