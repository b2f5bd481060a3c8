#!/usr/bin/env bash
# The job pipeline against the broker's own limit on this machine: release builds, everything
# co-located (server, worker(s), PostgreSQL, RabbitMQ, Redis and the load generator).
#
#   bench/jobs.sh   (env: SECONDS_PER_RUN=10, CONNECTIONS=32, BACKLOG=20000, PORT=18100,
#                    WORKER_CONCURRENCY=64, STEADY_RATE=1000, LONE_JOBS=50, QUEUE_TYPE=quorum;
#                    PROFILE=FILE records stage 2 with perf, E2E_ONLY=1 stops after it,
#                    EMBEDDED_ONLY=1 runs stage 5 alone)
#
# 0. Keel with its default settings against Celery, alternating, VS_ROUNDS=3 rounds: Celery
#    (pinned, from PyPI into target/celery-venv; bench/celery_noop.py) runs CELERY_TASKS=10000
#    no-op tasks on the same RabbitMQ with a Redis result backend, its worker with Celery's
#    defaults (prefork, one process per core); Keel's one worker with its defaults takes test
#    tasks wrk submits for VS_SECONDS=5; each round's ratio of the end-to-end rates, and the
#    median (CELERY_ONLY=1 stops after it, VS_ROUNDS=0 skips it);
# 1. the broker's own limit: bench/broker_rate.rs (lapin; persistent messages, confirms, manual
#    acks, Keel's queue settings);
# 2. Keel end to end through the API: wrk submits no-op test tasks for SECONDS_PER_RUN with one
#    worker running; the end-to-end rate counts every job from the first submission to the last
#    SUCCESS (the jobs table's own timestamps), beside the API's acceptance rate;
# 3. a backlog of BACKLOG published jobs drained by one worker, then by two;
# 4. latency at a steady STEADY_RATE jobs/s (publish→start, enqueue→SUCCESS), and a lone job's
#    enqueue→start, submitted through the API and enqueued by another process (the scheduler);
# 5. the embedded mode (SQLite, in-process worker) end to end through the API;
# with the server's and each worker's peak RSS.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
DURATION=${SECONDS_PER_RUN:-10}
CONNS=${CONNECTIONS:-32}
BACKLOG=${BACKLOG:-20000}
PORT=${PORT:-18100}
CONCURRENCY=${WORKER_CONCURRENCY:-64}
RATE=${STEADY_RATE:-1000}
# Stage 0: Celery (pinned, installed from PyPI into target/celery-venv) sent CELERY_TASKS no-op
# tasks, and Keel with its default settings fed by wrk for VS_SECONDS.
CELERY_VERSION=5.5.3
CELERY_TASKS=${CELERY_TASKS:-10000}
VS_SECONDS=${VS_SECONDS:-5}
# Keel's queues and the broker reference both use this type (quorum, Keel's default, or classic).
QUEUE_TYPE=${QUEUE_TYPE:-quorum}
LONE=${LONE_JOBS:-50}
PG_ADMIN=${BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
command -v wrk >/dev/null || { echo "bench needs wrk: apt-get install wrk" >&2; exit 1; }
cargo build --release --quiet --bins
cargo bench --no-run --quiet --bench broker_rate --bench jobs_load
newest() { find target/release/deps -maxdepth 1 -type f -executable -name "$1-*" -printf '%T@ %p\n' | sort -n | tail -n 1 | cut -d' ' -f2; }
broker_bin=$(newest broker_rate)
load_bin=$(newest jobs_load)

work=$(mktemp -d)
db="keel_bench_$$"
queue="keel.bench.jobs.$$"
pg_url="${PG_ADMIN%/*}/$db"
base="http://127.0.0.1:$PORT"
server_pid=
worker_pids=()
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null
  for p in "${worker_pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null || true
  psql "$PG_ADMIN" -qc "drop database if exists $db" >/dev/null 2>&1 || true
  for q in $(timeout 20 rabbitmqctl list_queues -q name 2>/dev/null | grep -F -e "$queue" -e "keel.bench.celery.$$"); do
    timeout 20 rabbitmqctl delete_queue "$q" >/dev/null 2>&1 || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
sql() { psql "$pg_url" -Atqc "$1"; }
# Empties the jobs table between runs, as autovacuum would eventually tidy after such a purge.
clear_jobs() { sql "delete from jobs"; sql "vacuum analyze jobs"; }

common_env=(ENABLE_RABBITMQ=true RABBITMQ_QUEUE="$queue" RABBITMQ_QUEUE_TYPE="$QUEUE_TYPE" ENABLE_REDIS=true
  REDIS_KEY_PREFIX="keel:bench:$$:" ENABLE_RATE_LIMITING=false REQUIRE_EMAIL_VERIFICATION=false
  LOG_LEVEL=warn WORKER_CONCURRENCY="$CONCURRENCY" DATABASE_MAX_CONNECTIONS=20 PORT="$PORT")

peak_rss() { awk '/VmHWM/ {print int($2 / 1024)}' "/proc/$1/status" 2>/dev/null || echo "?"; }

# start_server DATABASE_URL [VAR=VALUE...]
start_server() {
  local url=$1; shift
  (cd "$work" && exec env "${common_env[@]}" DATABASE_URL="$url" "$@" "$OLDPWD/target/release/server") \
    >>"$work/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 100); do curl -fs "$base/system/health/ready" >/dev/null && break; sleep 0.1; done
  curl -fs "$base/system/health/ready" >/dev/null || { cat "$work/server.log"; exit 1; }
}
stop_server() {
  echo "  server peak RSS $(peak_rss "$server_pid") MiB"
  kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=
}
start_worker() {
  (cd "$work" && exec env "${common_env[@]}" DATABASE_URL="$pg_url" "$OLDPWD/target/release/worker") \
    >>"$work/worker.log" 2>&1 &
  worker_pids+=($!)
}
stop_workers() {
  for p in "${worker_pids[@]}"; do
    echo "  worker peak RSS $(peak_rss "$p") MiB"
    kill "$p"; wait "$p" 2>/dev/null || true
  done
  worker_pids=()
}

token() {
  curl -fsS -X POST "$base/auth/register" -H 'content-type: application/json' \
    -d '{"email":"bench@example.com","username":"bench","password":"Bench-Password-1"}' >/dev/null 2>&1 || true
  curl -fsS -X POST "$base/auth/login" -d 'username=bench@example.com&password=Bench-Password-1' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'
}

# submit_with_wrk TOKEN: POSTs test tasks for DURATION seconds; prints accepted/s
submit_with_wrk() {
  cat >"$work/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"message":"bench"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $1"
LUA
  wrk -t2 -c"$CONNS" -d"${DURATION}s" -s "$work/post.lua" "$base/system/background-tasks/test-task" >"$work/wrk.txt"
  local non2xx; non2xx=$(awk '/Non-2xx/ {print $NF}' "$work/wrk.txt")
  [ -z "$non2xx" ] || echo "  ($non2xx answers were not 202)"
  awk '/Requests\/sec/ {printf "%.0f", $2}' "$work/wrk.txt"
}

wait_drained() { # on PostgreSQL
  for _ in $(seq 3000); do
    [ "$(sql "select count(*) from jobs where status in ('PENDING','STARTED','RETRY')")" = 0 ] && return 0
    sleep 0.1
  done
  echo "jobs did not drain within 300 s" >&2; exit 1
}

# e2e_rate: jobs per second from the first submission to the last SUCCESS, and how many
e2e_rate() {
  sql "select count(*), round(count(*) / extract(epoch from max(finished_at) - min(created_at)))
       from jobs where status = 'SUCCESS'" | tr '|' ' '
}

psql "$PG_ADMIN" -qc "create database $db" >/dev/null

# VS_ROUNDS=0 skips stage 0; CELERY_ONLY=1 runs it alone.
if [ "${VS_ROUNDS:-3}" != 0 ] && [ -z "${EMBEDDED_ONLY:-}" ]; then
echo "== 0. Keel with its default settings against Celery $CELERY_VERSION on the same broker, ${VS_ROUNDS:-3} rounds"
venv=target/celery-venv
if ! "$venv/bin/python" -c "import celery, sys; sys.exit(celery.__version__ != '$CELERY_VERSION')" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "celery[redis]==$CELERY_VERSION"
fi
celery_queue="keel.bench.celery.$$"
# Keel as it ships: only what the load needs (no sign-up rate limit, no verification mail
# before the first task), the stack's addresses and this run's own names.
defaults_env=(ENABLE_RABBITMQ=true RABBITMQ_QUEUE="$queue" ENABLE_REDIS=true
  REDIS_KEY_PREFIX="keel:bench:$$:" ENABLE_RATE_LIMITING=false REQUIRE_EMAIL_VERIFICATION=false
  LOG_LEVEL=warn PORT="$PORT")
tuned_env=("${common_env[@]}")
: >"$work/vs"
for round in $(seq "${VS_ROUNDS:-3}"); do
  (cd bench && exec "$OLDPWD/$venv/bin/celery" -A celery_noop worker -Q "$celery_queue" \
     --loglevel=WARNING) >>"$work/celery.log" 2>&1 &
  celery_pid=$!
  sleep 5
  celery=$(cd bench && "$OLDPWD/$venv/bin/python" celery_noop.py send "$celery_queue" "$CELERY_TASKS")
  kill "$celery_pid"; wait "$celery_pid" 2>/dev/null || true
  celery_rate=$(echo "$celery" | sed -E 's/.*end to end ([0-9]+) tasks.*/\1/')
  common_env=("${defaults_env[@]}")
  start_server "$pg_url"
  clear_jobs
  tok=$(token)
  start_worker
  sleep 0.5
  tuned_duration=$DURATION
  DURATION=$VS_SECONDS
  accepted=$(submit_with_wrk "$tok")
  DURATION=$tuned_duration
  wait_drained
  read -r jobs e2e < <(e2e_rate)
  stop_workers >/dev/null
  stop_server >/dev/null
  common_env=("${tuned_env[@]}")
  clear_jobs
  echo "  round $round: Celery $celery; Keel (defaults) $jobs jobs, API $accepted/s, end to end $e2e jobs/s: $(awk -v k="$e2e" -v c="$celery_rate" 'BEGIN { printf "%.2f", k / c }') x Celery"
  echo "$e2e $celery_rate" >>"$work/vs"
done
awk '{ printf "%.2f\n", $1 / $2 }' "$work/vs" >"$work/vs.ratio"
echo "  median: Keel with its defaults ran $(median "$work/vs.ratio") x Celery's rate end to end"
[ -n "${CELERY_ONLY:-}" ] && exit 0
fi

if [ -z "${EMBEDDED_ONLY:-}" ]; then
echo "== 1. the broker's own limit"
QUEUE_TYPE="$QUEUE_TYPE" "$broker_bin" --bench | tee "$work/broker.txt"
broker_together=$(awk '/together/ {print $2}' "$work/broker.txt")

echo "== 2. Keel end to end through the API (PostgreSQL, RabbitMQ, Redis; one worker, concurrency $CONCURRENCY)"
start_server "$pg_url"
tok=$(token)
start_worker
sleep 0.5
cpu_snapshot "$work/cpu.0" server="$server_pid" worker="${worker_pids[0]}"
# PROFILE=FILE: a whole-machine perf profile of this stage (`perf report -i FILE`)
[ -n "${PROFILE:-}" ] && { perf record -q -F 499 -a -g -o "$PROFILE" 2>/dev/null & perf_pid=$!; }
accepted=$(submit_with_wrk "$tok")
wait_drained
[ -n "${PROFILE:-}" ] && { kill -INT "$perf_pid"; wait "$perf_pid" || true; }
cpu_snapshot "$work/cpu.1" server="$server_pid" worker="${worker_pids[0]}"
read -r jobs e2e < <(e2e_rate)
echo "  API accepted $accepted submissions/s (wrk, $CONNS connections, ${DURATION} s)"
echo "  end to end: $jobs jobs at $e2e jobs/s = $(( 100 * e2e / broker_together )) % of the broker's limit ($broker_together msgs/s)"
echo "  CPU: $(cpu_per_job "$work/cpu.0" "$work/cpu.1" "$jobs")"
stop_workers
# E2E_ONLY=1: stop here (for profiling one stage)
[ -n "${E2E_ONLY:-}" ] && exit 0

echo "== 3. a backlog of $BACKLOG published jobs, drained"
for workers in 1 2; do
  clear_jobs
  sql "insert into jobs (id, name, payload, status, attempts, max_attempts, run_at, created_at, updated_at)
       select gen_random_uuid(), 'test_task', '{\"message\":\"backlog\"}', 'PENDING', 0, 5, now(), now(), now()
       from generate_series(1, $BACKLOG); notify keel_jobs"
  for _ in $(seq 600); do
    [ "$(sql "select count(*) from jobs where published_at is null")" = 0 ] && break; sleep 0.1
  done
  for _ in $(seq "$workers"); do start_worker; done
  named=(server="$server_pid"); i=0
  for p in "${worker_pids[@]}"; do named+=(worker$((i += 1))="$p"); done
  cpu_snapshot "$work/cpu.0" "${named[@]}"
  wait_drained
  cpu_snapshot "$work/cpu.1" "${named[@]}"
  rate=$(sql "select round(count(*) / extract(epoch from max(finished_at) - min(started_at))) from jobs where status = 'SUCCESS'")
  echo "  $workers worker(s): $rate jobs/s"
  echo "    CPU: $(cpu_per_job "$work/cpu.0" "$work/cpu.1" "$BACKLOG")"
  echo "$rate" >"$work/drain.$workers"
  stop_workers
done
echo "  two workers / one: $(awk -v a="$(cat "$work/drain.1")" -v b="$(cat "$work/drain.2")" 'BEGIN { printf "%.2f", b / a }') x"

echo "== 4. latency"
start_worker
sleep 0.5
clear_jobs
"$load_bin" --bench "$base" "$tok" "$RATE" "$DURATION"
wait_drained
sql "select 'at ' || $RATE || ' jobs/s: publish->start p50 ' || round(percentile_cont(0.5) within group (order by ms_start)::numeric, 1) ||
      ' ms, p99 ' || round(percentile_cont(0.99) within group (order by ms_start)::numeric, 1) ||
      ' ms; enqueue->SUCCESS p50 ' || round(percentile_cont(0.5) within group (order by ms_done)::numeric, 1) ||
      ' ms, p99 ' || round(percentile_cont(0.99) within group (order by ms_done)::numeric, 1) || ' ms'
     from (select extract(epoch from started_at - published_at) * 1000 as ms_start,
                  extract(epoch from finished_at - created_at) * 1000 as ms_done
           from jobs where status = 'SUCCESS') t" | sed 's/^/  /'
clear_jobs
"$load_bin" --bench "$base" "$tok" 0 "$LONE" >/dev/null
sql "select 'lone jobs through the API (' || count(*) || '): enqueue->start p50 ' ||
      round(percentile_cont(0.5) within group (order by extract(epoch from started_at - created_at) * 1000)::numeric, 1) || ' ms, max ' ||
      round(max(extract(epoch from started_at - created_at) * 1000)::numeric, 1) || ' ms'
     from jobs where status = 'SUCCESS'" | sed 's/^/  /'
clear_jobs
for job in cleanup_expired_tokens purge_deleted_accounts send_deletion_reminders; do
  (cd "$work" && env "${common_env[@]}" DATABASE_URL="$pg_url" "$OLDPWD/target/release/scheduler" --once "$job" >/dev/null)
  sleep 0.3
done
wait_drained
sql "select 'enqueued by the scheduler, another process (' || count(*) || '): enqueue->start ' ||
      string_agg(round((extract(epoch from started_at - created_at) * 1000)::numeric, 1)::text, ' / ' order by created_at) || ' ms'
     from jobs" | sed 's/^/  /'
stop_workers
stop_server
fi

echo "== 5. the embedded mode (SQLite, in-process worker, concurrency $CONCURRENCY)"
lite="sqlite://$work/embedded.db?mode=rwc"
start_server "$lite" ENABLE_RABBITMQ=false ENABLE_REDIS=false
tok=$(token)
accepted=$(submit_with_wrk "$tok")
python3 - "$work/embedded.db" "$accepted" <<'PY'
import sqlite3, sys, time
from datetime import datetime
db = sqlite3.connect(sys.argv[1], timeout=30)
for _ in range(3000):
    left = db.execute("select count(*) from jobs where status in ('PENDING','STARTED','RETRY')").fetchone()[0]
    if left == 0:
        break
    time.sleep(0.1)
n, first, last = db.execute("select count(*), min(created_at), max(finished_at) from jobs where status = 'SUCCESS'").fetchone()
secs = (datetime.fromisoformat(last) - datetime.fromisoformat(first)).total_seconds()
print(f"  API accepted {sys.argv[2]} submissions/s; end to end: {n} jobs at {n / secs:.0f} jobs/s")
PY
stop_server
