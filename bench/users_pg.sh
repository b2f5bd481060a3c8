#!/usr/bin/env bash
# The request path on PostgreSQL against the database's own rate, and start-up time.
#
#   bench/users_pg.sh   (env: USERS=1000, ROUNDS=3, SECONDS_PER_RUN=8, CONNECTIONS=50,
#                        PORT=18200, STARTS=5, DEEP_PAGE=USERS/100, URL_PARAMS='' for the
#                        server's DATABASE_URL, e.g. '?sslmode=disable'; SERVER=a server
#                        binary to measure instead of building target/release/server)
#
# 1. A database with USERS accounts (one registered through the API, the rest copied from it).
# 2. The statements Keel sends for `GET /users?page=1&size=10` in steady state (after two
#    requests: the first also reads the caller's session and account, then remembered), read
#    from PostgreSQL's own statement log while the server answers an uncached request (so the
#    reference cannot drift from the code), written out with their parameters as a pgbench
#    script.
# 3. Alternating rounds: pgbench on those statements (10 clients, prepared), Keel uncached
#    (CACHE_TTL_SECONDS=0), Keel cached, `GET /users/me`, and `/system/health/live` (the
#    framework's ceiling); wrk with CONNECTIONS connections. Each ratio is against the run of its
#    own round. The two servers' resident memory after the rounds.
# 4. Memory: an embedded server's resident set 5 s after start, and 1 s and 15 s after a login
#    (argon2's working memory is given back once its hashing thread is idle for 10 s).
# 5. Start-up to the first 200 on /system/health/live and on /system/health/ready: PostgreSQL +
#    Redis + RabbitMQ, migrations up to date (with the URL's default TLS negotiation, and with
#    sslmode=disable), and embedded (SQLite, nothing else), STARTS times each.
# 6. Deep pages, uncached: page 1, page DEEP_PAGE (USERS / 100 by default: 10,000 of a million
#    accounts) by offset, and the same page by cursor (the `next_cursor` of the page before).
# Needs wrk (apt-get install wrk), pgbench (with PostgreSQL), Redis and RabbitMQ.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
USERS=${USERS:-1000}
ROUNDS=${ROUNDS:-3}
DURATION=${SECONDS_PER_RUN:-8}
CONNS=${CONNECTIONS:-50}
PORT=${PORT:-18200}
STARTS=${STARTS:-5}
DEEP_PAGE=${DEEP_PAGE:-$((USERS / 100))}
PG_ADMIN=${BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
PG_LOG=${PG_LOG:-/var/log/postgresql/postgresql-15-main.log}
command -v wrk >/dev/null || { echo "bench needs wrk: apt-get install wrk" >&2; exit 1; }
command -v pgbench >/dev/null || { echo "bench needs pgbench (PostgreSQL's client tools)" >&2; exit 1; }
if [ -z "${SERVER:-}" ]; then
  cargo build --release --quiet --bin server
  SERVER=target/release/server
fi
export SERVER

work=$(mktemp -d)
db="keel_bench_users_$$"
pg_url="${PG_ADMIN%/*}/$db"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql "$PG_ADMIN" -qc "drop database if exists $db" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
sql() { psql "$pg_url" -Atqc "$1"; }

common_env=(DATABASE_URL="$pg_url${URL_PARAMS:-}" REQUIRE_EMAIL_VERIFICATION=false ENABLE_REDIS=true
  REDIS_KEY_PREFIX="keel:bench:$$:" ENABLE_RATE_LIMITING=false LOG_LEVEL=warn)

# start_server PORT [VAR=VALUE...]: a release server in the background; returns once it answers
start_server() {
  local port=$1; shift
  env "${common_env[@]}" PORT="$port" "$@" "$SERVER" >>"$work/server.$port.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 200); do curl -fs "http://127.0.0.1:$port/system/health/ready" >/dev/null && return; sleep 0.05; done
  cat "$work/server.$port.log"; exit 1
}
# rss PID: the process's resident and peak resident set, in MiB
rss() { awk '/VmRSS/ {r = $2} /VmHWM/ {h = $2} END {printf "%.1f MiB (peak %.1f)", r / 1024, h / 1024}' "/proc/$1/status"; }
stop_servers() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  pids=()
}

# run NAME URL [TOKEN]: one wrk run; prints req/s and p99, keeps req/s in $work/NAME
run() {
  local args=(-t2 -c"$CONNS" -d"${DURATION}s" --latency)
  [ -n "${3:-}" ] && args+=(-H "Authorization: Bearer $3")
  wrk "${args[@]}" "$2" >"$work/$1.txt"
  local rps p99 bad
  rps=$(awk '/Requests\/sec/ {printf "%.0f", $2}' "$work/$1.txt")
  p99=$(awk '$1 == "99%" {print $2}' "$work/$1.txt")
  bad=$(awk '/Non-2xx/ {print " (" $NF " not 2xx)"}' "$work/$1.txt")
  printf '  %-9s %8s req/s   p99 %8s%s\n' "${1%%.*}" "$rps" "$p99" "$bad"
  echo "$rps" >"$work/$1"
}

psql "$PG_ADMIN" -qc "create database $db" >/dev/null
uncached=$PORT
cached=$((PORT + 1))
start_server "$uncached" CACHE_TTL_SECONDS=0
start_server "$cached" CACHE_TTL_SECONDS=60

echo "== $USERS users"
curl -fsS -X POST "http://127.0.0.1:$cached/auth/register" -H 'Content-Type: application/json' \
  -d '{"email":"bench0@example.com","username":"bench0","password":"BenchPassword123!"}' >/dev/null
columns=$(sql "select string_agg(column_name, ',' order by ordinal_position)
               from information_schema.columns where table_name = 'users'")
values=$(echo "$columns" | tr ',' '\n' | awk '{
  if ($1 == "id") print "gen_random_uuid()"
  else if ($1 == "email") print "'"'"'bench'"'"' || g || '"'"'@example.com'"'"'"
  else if ($1 == "username" || $1 == "username_lower") print "'"'"'bench'"'"' || g"
  else if ($1 == "created_at" || $1 == "updated_at") print "now() - g * interval '"'"'1 second'"'"'"
  else print $1 }' | paste -sd, -)
sql "insert into users ($columns) select $values from users, generate_series(1, $((USERS - 1))) g
     where email = 'bench0@example.com'; analyze users"
echo "  $(sql "select count(*) from users") accounts"
token=$(curl -fsS -X POST "http://127.0.0.1:$cached/auth/login" \
  -d 'username=bench0@example.com&password=BenchPassword123%21' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')

echo "== the statements of an uncached GET /users?page=1&size=10 in steady state, from PostgreSQL's log"
# Only connections opened from now on log their statements: a fresh server's.
stop_servers
psql "$PG_ADMIN" -qc "alter database $db set log_statement = 'all'"
start_server "$uncached" CACHE_TTL_SECONDS=0
sleep 1
log_from=$(stat -c %s "$PG_LOG")
for _ in 1 2; do
  curl -fsS "http://127.0.0.1:$uncached/users?page=1&size=10" -H "Authorization: Bearer $token" >/dev/null
done
sleep 0.3
# A statement of its own connection marks where the measured request begins.
psql "$pg_url" -qAtc "select 'keel-bench-steady-request'" >/dev/null
curl -fsS "http://127.0.0.1:$uncached/users?page=1&size=10" -H "Authorization: Bearer $token" >/dev/null
sleep 0.5
psql "$PG_ADMIN" -qc "alter database $db reset log_statement"
stop_servers
tail -c +"$((log_from + 1))" "$PG_LOG" >"$work/statements.log"
# Each `execute <name>: SQL` (or `statement: SQL`) with its `DETAIL: parameters: $1 = '…', …`,
# the parameters written in, as one pgbench transaction. The server's background work (the
# in-process worker's polls and heartbeats, LISTEN) shares the log and is left out: statements
# on the jobs and heartbeat tables. The session check is part of the request path and is kept.
python3 - "$work/statements.log" "$work/stmts.sql" <<'PY'
import re, sys
lines = open(sys.argv[1], encoding="utf-8", errors="replace").read().splitlines()
entries, current = [], None
marked = False
for line in lines:
    if "keel-bench-steady-request" in line:
        entries, current, marked = [], None, True
        continue
    m = re.search(r"LOG:  (?:execute [^:]+|statement): (.*)$", line)
    if m:
        current = [m.group(1), {}]
        entries.append(current)
        continue
    m = re.search(r"DETAIL:  parameters: (.*)$", line)
    if m and current:
        for num, val in re.findall(r"\$(\d+) = ('(?:[^']|'')*'|NULL)", m.group(1)):
            current[1][num] = val
        continue
    if current and line.startswith(("\t", " ")) and "LOG:" not in line and "DETAIL:" not in line:
        current[0] += " " + line.strip()
assert marked, "the marker statement is not in the log"
skip = ("BEGIN", "COMMIT", "ROLLBACK", "SET ", "SHOW ", "DEALLOCATE", "LISTEN", "UNLISTEN")
background = ('"jobs"', '"worker_heartbeats"', " jobs ", "keel_jobs")
out = []
for sql, params in entries:
    if sql.upper().startswith(skip) or any(b in sql for b in background):
        continue
    sql = re.sub(r"\$(\d+)", lambda m: params.get(m.group(1), m.group(0)), sql)
    out.append(sql.rstrip(";") + ";")
open(sys.argv[2], "w").write("\n".join(out) + "\n")
for s in out:
    print("  " + (s if len(s) < 220 else s[:217] + "..."))
PY

start_server "$uncached" CACHE_TTL_SECONDS=0
start_server "$cached" CACHE_TTL_SECONDS=60
curl -fsS "http://127.0.0.1:$cached/users?page=1&size=10" -H "Authorization: Bearer $token" >/dev/null
echo "== $ROUNDS rounds: pgbench (10 clients), then wrk ($CONNS connections, ${DURATION} s each)"
for i in $(seq "$ROUNDS"); do
  echo " round $i"
  pgbench -n -M prepared -c 10 -j 2 -T "$DURATION" -f "$work/stmts.sql" "$pg_url" >"$work/pgbench.txt" 2>&1
  tps=$(awk '/^tps/ {printf "%.0f", $3}' "$work/pgbench.txt")
  printf '  %-9s %8s tx/s\n' pgbench "$tps"
  run "uncached.$i" "http://127.0.0.1:$uncached/users?page=1&size=10" "$token"
  run "cached.$i" "http://127.0.0.1:$cached/users?page=1&size=10" "$token"
  run "me.$i" "http://127.0.0.1:$cached/users/me" "$token"
  run "live.$i" "http://127.0.0.1:$cached/system/health/live"
  awk -v u="$(cat "$work/uncached.$i")" -v p="$tps" -v c="$(cat "$work/cached.$i")" \
      -v m="$(cat "$work/me.$i")" -v l="$(cat "$work/live.$i")" 'BEGIN {
    printf "  uncached / pgbench %.0f %%, cached / live %.0f %%, me / live %.0f %%\n",
      100 * u / p, 100 * c / l, 100 * m / l }' | tee -a "$work/ratios"
done
echo "  RSS after the rounds: uncached server $(rss "${pids[0]}"), cached server $(rss "${pids[1]}")"
stop_servers

echo "== memory, embedded (SQLite, nothing else): RSS 5 s after start, then after a registration and a login"
start_server "$uncached" DATABASE_URL="sqlite://$work/memory.db?mode=rwc" ENABLE_REDIS=false
sleep 5
idle=$(rss "${pids[0]}")
curl -fsS -X POST "http://127.0.0.1:$uncached/auth/register" -H 'Content-Type: application/json' \
  -d '{"email":"mem@example.com","username":"mem","password":"BenchPassword123!"}' >/dev/null
curl -fsS -X POST "http://127.0.0.1:$uncached/auth/login" \
  -d 'username=mem@example.com&password=BenchPassword123%21' >/dev/null
sleep 1
after_login=$(rss "${pids[0]}")
# Idle hashing threads give argon2's working memory back after 10 s.
sleep 14
echo "  idle $idle, 1 s after a login $after_login, 15 s after $(rss "${pids[0]}")"
stop_servers

# start_ms [VAR=VALUE...]: milliseconds from exec to the first 200 on /system/health/live, and
# to the first 200 on /system/health/ready (the start-up checks done: database, migrations)
start_ms() {
  python3 - "$PORT" "$@" <<'PY'
import os, subprocess, sys, time, urllib.request
port, extra = sys.argv[1], sys.argv[2:]
env = dict(os.environ, PORT=port, LOG_LEVEL="warn")
env.update(kv.split("=", 1) for kv in extra)
t0 = time.perf_counter()
p = subprocess.Popen([os.environ["SERVER"]], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
def first_200(path):
    while True:
        if p.poll() is not None:
            sys.exit(f"the server exited ({p.returncode}): {p.stderr.read().decode()}")
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1).status == 200:
                return (time.perf_counter() - t0) * 1000
        except Exception:
            time.sleep(0.001)
try:
    live = first_200("/system/health/live")
    ready = first_200("/system/health/ready")
    print(f"{live:.0f} {ready:.0f}")
finally:
    p.terminate(); p.wait()
PY
}
echo "== start-up: to the first 200 on /system/health/live, and on /system/health/ready ($STARTS starts each)"
: >"$work/start.pg"; : >"$work/start.lite"; : >"$work/start.plain"
# The first embedded start creates and migrates its database; the measured ones find it ready.
start_ms DATABASE_URL="sqlite://$work/embedded.db?mode=rwc" >/dev/null
for _ in $(seq "$STARTS"); do
  start_ms "${common_env[@]}" ENABLE_RABBITMQ=true >>"$work/start.pg"
  start_ms "${common_env[@]}" ENABLE_RABBITMQ=true DATABASE_URL="$pg_url?sslmode=disable" >>"$work/start.plain"
  start_ms DATABASE_URL="sqlite://$work/embedded.db?mode=rwc" >>"$work/start.lite"
done
starts() { # FILE COLUMN
  cut -d' ' -f"$2" "$1" >"$1.$2"
  echo "$(xargs <"$1.$2" | sed 's/ / \/ /g') ms (median $(median "$1.$2"))"
}
echo "  PostgreSQL + Redis + RabbitMQ, live:  $(starts "$work/start.pg" 1)"
echo "                                 ready: $(starts "$work/start.pg" 2)"
echo "  the same, sslmode=disable, live:      $(starts "$work/start.plain" 1)"
echo "                                 ready: $(starts "$work/start.plain" 2)"
echo "  embedded (SQLite), live:              $(starts "$work/start.lite" 1)"
echo "                     ready:             $(starts "$work/start.lite" 2)"

echo "== deep pages, uncached: page 1, page $DEEP_PAGE by offset and by cursor (size 10)"
start_server "$uncached" CACHE_TTL_SECONDS=0
before=$(curl -fsS "http://127.0.0.1:$uncached/users?page=$((DEEP_PAGE - 1))&size=10" -H "Authorization: Bearer $token")
cursor=$(echo "$before" | python3 -c 'import json,sys; print(json.load(sys.stdin)["metadata"]["next_cursor"])')
by_offset=$(curl -fsS "http://127.0.0.1:$uncached/users?page=$DEEP_PAGE&size=10" -H "Authorization: Bearer $token" |
  python3 -c 'import json,sys; print([u["id"] for u in json.load(sys.stdin)["items"]])')
by_cursor=$(curl -fsS "http://127.0.0.1:$uncached/users?cursor=$cursor&size=10" -H "Authorization: Bearer $token" |
  python3 -c 'import json,sys; print([u["id"] for u in json.load(sys.stdin)["items"]])')
[ "$by_offset" = "$by_cursor" ] || { echo "page $DEEP_PAGE differs by offset and by cursor" >&2; exit 1; }
for i in $(seq "$ROUNDS"); do
  echo " round $i"
  run "first.$i" "http://127.0.0.1:$uncached/users?page=1&size=10" "$token"
  run "offset.$i" "http://127.0.0.1:$uncached/users?page=$DEEP_PAGE&size=10" "$token"
  run "cursor.$i" "http://127.0.0.1:$uncached/users?cursor=$cursor&size=10" "$token"
  awk -v f="$(cat "$work/first.$i")" -v o="$(cat "$work/offset.$i")" -v c="$(cat "$work/cursor.$i")" 'BEGIN {
    printf "  page %s by offset / page 1: %.0f %%, by cursor / page 1: %.0f %%\n", '"$DEEP_PAGE"', 100 * o / f, 100 * c / f }'
done
stop_servers
