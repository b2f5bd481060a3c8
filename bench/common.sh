# Shared by the bench scripts; sourced, not run.

# median FILE: the median of the numbers in FILE, one per line
median() {
  sort -n "$1" | awk '{ v[NR] = $1 } END {
    if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# cpu_snapshot FILE NAME=PID...: CPU ticks (user + system, 1/100 s) used so far by each named
# process, by PostgreSQL (every backend, plus those already ended: the postmaster's reaped
# children), by RabbitMQ's Erlang VM and by Redis, and by the whole machine (busy, of all cores).
cpu_snapshot() {
  local out=$1; shift
  local pair
  : >"$out"
  for pair in "$@"; do
    echo "${pair%%=*} $(awk '{print $14 + $15}' "/proc/${pair#*=}/stat" 2>/dev/null || echo 0)" >>"$out"
  done
  local pg=0 pid
  for pid in $(pgrep -x postgres); do
    pg=$((pg + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)))
  done
  local master; master=$(pgrep -o -x postgres)
  [ -n "$master" ] && pg=$((pg + $(awk '{print $16 + $17}' "/proc/$master/stat")))
  echo "postgresql $pg" >>"$out"
  local beam; beam=$(pgrep -o beam.smp || true)
  echo "rabbitmq $([ -n "$beam" ] && awk '{print $14 + $15}' "/proc/$beam/stat" || echo 0)" >>"$out"
  local redis; redis=$(pgrep -o redis-server || true)
  echo "redis $([ -n "$redis" ] && awk '{print $14 + $15}' "/proc/$redis/stat" || echo 0)" >>"$out"
  awk '/^cpu / {print "machine", $2 + $3 + $4 + $7 + $8; print "stolen", $9}' /proc/stat >>"$out"
}

# cpu_per_job BEFORE AFTER JOBS: each line's CPU between two snapshots in microseconds per job,
# what the machine spent besides (the load generator, the kernel's own work), and the time the
# hypervisor gave to other guests meanwhile (which makes a run slower without showing here)
cpu_per_job() {
  awk -v n="$3" 'NR == FNR { before[$1] = $2; next }
    { used = ($2 - before[$1]) * 10000 / n
      if ($1 == "machine") total = used
      else if ($1 == "stolen") stolen = used
      else { named += used; printf "%s %.0f, ", $1, used } }
    END { printf "the rest %.0f; all %.0f µs of CPU per job (%.0f stolen by the hypervisor)\n",
      total - named, total, stolen }' "$1" "$2"
}
