#!/usr/bin/env bash
# What tracing costs: the request path and the job pipeline run by three builds in turn, on the
# same machine, in the same round: the build before OpenTelemetry (BASELINE, a commit), this
# build with no OTLP endpoint (nothing installed), and this build exporting every span (requests,
# statements, Redis commands, publications, jobs) to a collector that takes them all
# (bench/otlp_sink.py). Release builds, co-located with PostgreSQL, Redis and RabbitMQ.
#
#   bench/tracing.sh   (env: BASELINE=49b806e^, the commit before issue 32; ROUNDS=3,
#                       SECONDS_PER_RUN=8, CONNECTIONS=32, PORT=18300, SINK_PORT=18399)
#
# Each build, on a fresh database (its own migrations) and its own RabbitMQ queues:
# 1. requests: wrk on `GET /users/me` (the session and the account: PostgreSQL and Redis) and on
#    `/system/health/live` (the framework's ceiling), CONNECTIONS connections each; every rate
#    as a ratio of the baseline's ceiling in the same round; the server's CPU per request;
# 2. jobs: wrk submits no-op test tasks for SECONDS_PER_RUN with one worker (concurrency 64);
#    the end-to-end rate (first submission to last SUCCESS) as a ratio of the baseline's in the
#    same round, and the CPU per job of the server and the worker.
# With the endpoint, the spans the servers dropped (keel_trace_spans_dropped_total) are shown:
# a cost measured while dropping would be too low.
# Needs wrk (apt-get install wrk), PostgreSQL, Redis and RabbitMQ.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
BASELINE=${BASELINE:-49b806e^}
ROUNDS=${ROUNDS:-3}
DURATION=${SECONDS_PER_RUN:-8}
CONNS=${CONNECTIONS:-32}
PORT=${PORT:-18300}
SINK_PORT=${SINK_PORT:-18399}
PG_ADMIN=${BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
command -v wrk >/dev/null || { echo "bench needs wrk: apt-get install wrk" >&2; exit 1; }

cargo build --release --quiet --bin server --bin worker
# The baseline's binaries, built once per commit in a worktree of their own (a copy of this
# release directory saves rebuilding the dependencies both share).
sha=$(git rev-parse --short "$BASELINE")
base_bins="target/bench-baseline/$sha"
if [ ! -x "$base_bins/worker" ]; then
  tree=$(mktemp -d)
  git worktree add -q --detach "$tree" "$sha"
  mkdir -p "$tree/target"
  cp -a --reflink=auto target/release "$tree/target/"
  (cd "$tree" && cargo build --release --quiet --bin server --bin worker)
  mkdir -p "$base_bins"
  cp "$tree/target/release/server" "$tree/target/release/worker" "$base_bins/"
  git worktree remove --force "$tree"
fi

work=$(mktemp -d)
base="http://127.0.0.1:$PORT"
pids=()
dbs=()
queues=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for d in "${dbs[@]}"; do psql "$PG_ADMIN" -qc "drop database if exists $d" >/dev/null 2>&1 || true; done
  for prefix in "${queues[@]}"; do
    for q in $(timeout 20 rabbitmqctl list_queues -q name 2>/dev/null | grep -F "$prefix"); do
      timeout 20 rabbitmqctl delete_queue "$q" >/dev/null 2>&1 || true
    done
  done
  rm -rf "$work"
}
trap cleanup EXIT

python3 bench/otlp_sink.py "$SINK_PORT" >"$work/sink.txt" 2>&1 &
sink_pid=$!
pids+=("$sink_pid")

# run BUILD_DIR LABEL [VAR=VALUE...]: one build's requests and jobs; appends a line to results
run() {
  local bins=$1 label=$2; shift 2
  local n=${#dbs[@]}
  local db="keel_bench_tracing_$$_$n" queue="keel.bench.tracing.$$.$n"
  dbs+=("$db"); queues+=("$queue")
  psql "$PG_ADMIN" -qc "create database $db" >/dev/null
  local pg_url="${PG_ADMIN%/*}/$db"
  local env_=(DATABASE_URL="$pg_url" ENABLE_RABBITMQ=true RABBITMQ_QUEUE="$queue" ENABLE_REDIS=true
    REDIS_KEY_PREFIX="keel:bench:tracing:$$:$n:" ENABLE_RATE_LIMITING=false
    REQUIRE_EMAIL_VERIFICATION=false LOG_LEVEL=warn WORKER_CONCURRENCY=64
    DATABASE_MAX_CONNECTIONS=20 PORT="$PORT" "$@")
  (cd "$work" && exec env "${env_[@]}" "$OLDPWD/$bins/server") >>"$work/server.log" 2>&1 &
  local server=$!
  pids+=("$server")
  for _ in $(seq 200); do curl -fs "$base/system/health/ready" >/dev/null && break; sleep 0.05; done
  curl -fs "$base/system/health/ready" >/dev/null || { tail "$work/server.log"; exit 1; }
  curl -fsS -X POST "$base/auth/register" -H 'content-type: application/json' \
    -d '{"email":"bench@example.com","username":"bench","password":"Bench-Password-1"}' >/dev/null
  local tok
  tok=$(curl -fsS -X POST "$base/auth/login" -d 'username=bench@example.com&password=Bench-Password-1' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')

  cpu_snapshot "$work/cpu.0" server="$server"
  wrk -t2 -c"$CONNS" -d"${DURATION}s" -H "Authorization: Bearer $tok" "$base/users/me" >"$work/me.txt"
  cpu_snapshot "$work/cpu.1" server="$server"
  local me requests
  me=$(awk '/Requests\/sec/ {printf "%.0f", $2}' "$work/me.txt")
  requests=$(awk '/requests in/ {print $1}' "$work/me.txt")
  local me_cpu
  me_cpu=$(awk -v n="$requests" 'NR == FNR { b[$1] = $2; next } $1 == "server" { printf "%.0f", ($2 - b[$1]) * 10000 / n }' "$work/cpu.0" "$work/cpu.1")
  wrk -t2 -c"$CONNS" -d"${DURATION}s" "$base/system/health/live" >"$work/live.txt"
  local live
  live=$(awk '/Requests\/sec/ {printf "%.0f", $2}' "$work/live.txt")

  (cd "$work" && exec env "${env_[@]}" "$OLDPWD/$bins/worker") >>"$work/worker.log" 2>&1 &
  local worker=$!
  pids+=("$worker")
  sleep 0.5
  cat >"$work/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"message":"bench"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $tok"
LUA
  cpu_snapshot "$work/cpu.0" server="$server" worker="$worker"
  wrk -t2 -c"$CONNS" -d"${DURATION}s" -s "$work/post.lua" "$base/system/background-tasks/test-task" >"$work/post.txt"
  for _ in $(seq 3000); do
    [ "$(psql "$pg_url" -Atqc "select count(*) from jobs where status in ('PENDING','STARTED','RETRY')")" = 0 ] && break
    sleep 0.1
  done
  cpu_snapshot "$work/cpu.1" server="$server" worker="$worker"
  local jobs e2e
  read -r jobs e2e < <(psql "$pg_url" -Atqc "select count(*), round(count(*) / extract(epoch from max(finished_at) - min(created_at)))
    from jobs where status = 'SUCCESS' and name = 'test_task'" | tr '|' ' ')
  local job_cpu
  job_cpu=$(awk -v n="$jobs" 'NR == FNR { b[$1] = $2; next } $1 == "server" || $1 == "worker" { t += ($2 - b[$1]) * 10000 / n } END { printf "%.0f", t }' "$work/cpu.0" "$work/cpu.1")
  local dropped
  dropped=$(curl -fs "$base/metrics" | awk '/^keel_trace_spans_dropped_total/ {s += $2} END {print s + 0}')
  echo "$label $me $live $me_cpu $e2e $job_cpu $dropped" >>"$work/results"
  kill "$server" "$worker"; wait "$server" "$worker" 2>/dev/null || true
}

for round in $(seq "$ROUNDS"); do
  echo "== round $round"
  : >"$work/results"
  run "$base_bins" "baseline($sha)"
  run target/release "off"
  run target/release "exporting" OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$SINK_PORT"
  awk 'NR == 1 { ceiling = $3; rate = $5 }
    { printf "  %-18s /users/me %6d/s (%.2f of the ceiling), %4d µs CPU per request; /health/live %6d/s (%.2f); jobs %5d/s (%.2f of the baseline), %4d µs CPU per job%s\n",
        $1, $2, $2 / ceiling, $4, $3, $3 / ceiling, $5, $5 / rate, $6, ($1 == "exporting" ? sprintf("; %d spans dropped", $7) : "") }' "$work/results"
  cat "$work/results" >>"$work/all"
done
kill -TERM "$sink_pid"; wait "$sink_pid" 2>/dev/null || true
echo "== medians over $ROUNDS rounds"
for label in "baseline($sha)" off exporting; do
  for col in 2 3 4 5 6; do awk -v l="$label" -v c="$col" '$1 == l { print $c }' "$work/all" >"$work/col.$col"; done
  printf "  %-18s /users/me %s/s, %s µs CPU per request; /health/live %s/s; jobs %s/s, %s µs CPU per job\n" \
    "$label" "$(median "$work/col.2")" "$(median "$work/col.4")" "$(median "$work/col.3")" "$(median "$work/col.5")" "$(median "$work/col.6")"
done
echo "  the sink received $(cat "$work/sink.txt")"
