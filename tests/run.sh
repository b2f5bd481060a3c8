#!/usr/bin/env bash
# Keel's whole test suite, on a fresh machine or a developer's: makes sure the real services the
# tests talk to are up (installing them from Debian's packages or npm where they are missing),
# then runs the format and lint checks and every test.
#
#   tests/run.sh              everything
#   tests/run.sh -- FILTER    pass extra arguments to the test runner (e.g. a test name)
#
# Services: PostgreSQL (127.0.0.1:5432, trust auth for `postgres`), RabbitMQ (127.0.0.1:5672,
# guest/guest), maildev (SMTP 1025, API 1080) and Debian's chromium with chromium-driver (the page
# tests; screenshots in target/screenshots/). Tests isolate themselves: a database, a queue
# and unique mail addresses each.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS_DIR=${KEEL_TOOLS_DIR:-"$HOME/.cache/keel-tools"}
PG_HOST=127.0.0.1 PG_PORT=5432
SMTP_PORT=${TEST_SMTP_PORT:-1025} MAILDEV_WEB_PORT=1080
export TEST_POSTGRES_URL=${TEST_POSTGRES_URL:-"postgres://postgres@$PG_HOST:$PG_PORT/postgres"}
export TEST_SMTP_PORT=$SMTP_PORT
export TEST_MAILDEV_URL=${TEST_MAILDEV_URL:-"http://127.0.0.1:$MAILDEV_WEB_PORT"}

log() { printf '\n== %s\n' "$*"; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_updated=
apt_install() {
  # Another package install on the machine (unattended upgrades, a second run) holds the dpkg
  # lock for a while: wait for it rather than fail.
  if [ -z "$apt_updated" ]; then as_root apt-get -o DPkg::Lock::Timeout=300 update -qq; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq "$@" >/dev/null
}

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local seconds=$1 what=$2; shift 2
  for _ in $(seq 1 $((seconds * 5))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "error: $what did not come up within ${seconds}s" >&2
  return 1
}

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

ensure_postgres() {
  if port_open "$PG_HOST" "$PG_PORT"; then return 0; fi
  log "starting PostgreSQL"
  local installed=
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then apt_install postgresql; installed=1; fi
  local version; version=$(ls /etc/postgresql | sort -V | tail -n 1)
  if [ -n "$installed" ]; then
    # A new Debian cluster asks TCP clients for a password; the tests connect as `postgres`
    # without one, over loopback only.
    as_root sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' \
      "/etc/postgresql/$version/main/pg_hba.conf"
  fi
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  wait_for 60 PostgreSQL port_open "$PG_HOST" "$PG_PORT"
  wait_for 30 "PostgreSQL (trust auth for postgres)" psql "$TEST_POSTGRES_URL" -Atc 'select 1'
}

ensure_rabbitmq() {
  if port_open 127.0.0.1 5672; then return 0; fi
  log "starting RabbitMQ"
  command -v rabbitmq-server >/dev/null || apt_install rabbitmq-server
  as_root rabbitmq-server -detached || true
  as_root rabbitmqctl await_startup --timeout 120 >/dev/null || true
  wait_for 120 RabbitMQ port_open 127.0.0.1 5672
}

ensure_redis() {
  # redis-server is also needed on its own: a test runs a private instance it can stop and start.
  command -v redis-server >/dev/null || apt_install redis-server
  if port_open 127.0.0.1 6379; then return 0; fi
  log "starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
  wait_for 30 Redis port_open 127.0.0.1 6379
}

# Keys of earlier test runs (every test works under its own `keel:test:<id>:` prefix).
drop_old_test_keys() {
  command -v redis-cli >/dev/null || return 0
  redis-cli -h 127.0.0.1 -p 6379 --scan --pattern 'keel:test:*' 2>/dev/null |
    xargs -r -n 500 redis-cli -h 127.0.0.1 -p 6379 del >/dev/null 2>&1 || true
}

# Queues of earlier test runs that stopped before cleaning up after themselves.
drop_old_test_queues() {
  command -v rabbitmqctl >/dev/null || return 0
  timeout 60 rabbitmqctl list_queues -q name 2>/dev/null | grep '^keel\.test\.' |
    while read -r q; do timeout 30 rabbitmqctl delete_queue "$q" >/dev/null 2>&1 || true; done || true
}

ensure_maildev() {
  if curl -fsS "$TEST_MAILDEV_URL/api/email" >/dev/null 2>&1; then return 0; fi
  local bin="$TOOLS_DIR/maildev/node_modules/.bin/maildev"
  if [ ! -x "$bin" ]; then
    log "installing maildev (SMTP capture) into $TOOLS_DIR"
    command -v npm >/dev/null || apt_install nodejs npm
    mkdir -p "$TOOLS_DIR/maildev"
    npm install --prefix "$TOOLS_DIR/maildev" --no-audit --no-fund --loglevel=error maildev@3.0.0 >/dev/null
  fi
  log "starting maildev on SMTP :$SMTP_PORT, API :$MAILDEV_WEB_PORT"
  mkdir -p "$TOOLS_DIR/maildev/mail"
  nohup "$bin" --ip 127.0.0.1 --web-ip 127.0.0.1 -s "$SMTP_PORT" -w "$MAILDEV_WEB_PORT" \
    --mail-directory "$TOOLS_DIR/maildev/mail" >"$TOOLS_DIR/maildev/maildev.log" 2>&1 &
  wait_for 30 maildev curl -fsS "$TEST_MAILDEV_URL/api/email"
}

# The page tests drive Debian's headless Chromium through ChromeDriver.
ensure_browser() {
  if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then return 0; fi
  log "installing chromium and chromium-driver (browser tests)"
  apt_install chromium chromium-driver
}

drop_old_test_databases() {
  psql "$TEST_POSTGRES_URL" -Atc "select datname from pg_database where datname like 'keel\_test\_%'" 2>/dev/null |
    while read -r db; do psql "$TEST_POSTGRES_URL" -qc "drop database if exists \"$db\"" >/dev/null 2>&1 || true; done
  rm -rf "${TMPDIR:-/tmp}/keel-tests"
}

command -v curl >/dev/null || apt_install curl
command -v psql >/dev/null || apt_install postgresql-client
ensure_postgres
ensure_rabbitmq
ensure_redis
ensure_maildev
ensure_browser
drop_old_test_databases
drop_old_test_queues
drop_old_test_keys

# The deployment files are rendered offline after the Rust tests (tests/deploy): Debian's
# docker-compose for compose.yaml, kubectl's kustomize for deploy/kubernetes.
command -v docker-compose >/dev/null || apt_install docker-compose
command -v kubectl >/dev/null || [ -x /usr/bin/kubectl ] || apt_install kubectl

# The spec passes Redocly's recommended rules (exceptions, each with its reason, in
# openapi/redocly.yaml).
REDOCLY_VERSION=2.77.0
redocly="$TOOLS_DIR/redocly/node_modules/.bin/redocly"
if [ ! -x "$redocly" ] || ! grep -q "\"version\": \"$REDOCLY_VERSION\"" "$TOOLS_DIR/redocly/node_modules/@redocly/cli/package.json" 2>/dev/null; then
  log "installing @redocly/cli@$REDOCLY_VERSION into $TOOLS_DIR/redocly"
  command -v npm >/dev/null || apt_install nodejs npm
  mkdir -p "$TOOLS_DIR/redocly"
  (cd "$TOOLS_DIR/redocly" && { [ -f package.json ] || npm init -y >/dev/null; } &&
    npm install --no-audit --no-fund --loglevel=error "@redocly/cli@$REDOCLY_VERSION" >/dev/null)
fi
log "redocly lint openapi/openapi.json"
REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true \
  "$redocly" lint --config openapi/redocly.yaml openapi/openapi.json

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings

# Dependencies: permissive licenses only, crates.io only, no OpenSSL (deny.toml). Offline: the
# advisories check needs the RustSec database, which is not reachable here.
CARGO_DENY_VERSION=0.20.2
if ! cargo deny --version 2>/dev/null | grep -q " $CARGO_DENY_VERSION$"; then
  log "installing cargo-deny $CARGO_DENY_VERSION (once; a few minutes)"
  cargo install --locked --quiet cargo-deny --version "$CARGO_DENY_VERSION"
fi
log "cargo deny check bans licenses sources"
# cargo-deny reads the metadata of every platform's dependencies: fetch them all first (a build
# downloads only this platform's), then check without the network.
cargo fetch --locked --quiet
# Errors only: the duplicate versions it warns about come from dependencies' own releases.
cargo deny --log-level error --offline check bans licenses sources

extra=()
if [ "${1:-}" = "--" ]; then shift; extra=("$@"); fi
# Tests marked #[ignore] restart a service every other test shares (RabbitMQ): they run after
# the rest, on their own.
if cargo nextest --version >/dev/null 2>&1; then
  log "cargo nextest run"
  mkdir -p target
  cargo nextest run --workspace --no-fail-fast "${extra[@]}" 2>&1 | tee target/nextest.log
  log "cargo nextest run --run-ignored only (tests that restart shared services, alone)"
  cargo nextest run --workspace --no-fail-fast --run-ignored only --test-threads 1 "${extra[@]}" 2>&1 |
    tee target/nextest-alone.log
else
  log "cargo test (cargo-nextest is not installed)"
  cargo test --workspace --no-fail-fast "${extra[@]}"
  cargo test --workspace --no-fail-fast "${extra[@]}" -- --ignored --test-threads 1
fi

# The deployment files (compose.yaml, the image's inputs, the Kubernetes base) and the spec as
# clients use it (generated Python and TypeScript clients, and schemathesis).
if [ ${#extra[@]} -eq 0 ]; then
  python3 -m venv --help >/dev/null 2>&1 || apt_install python3-venv
  deploy_venv="$TOOLS_DIR/deploy-venv"
  deploy_packages=(kubernetes-validate==1.37.0 pytest==9.2.0 PyYAML==6.0.4)
  if ! "$deploy_venv/bin/pip" freeze 2>/dev/null | grep -qx 'kubernetes-validate==1.37.0'; then
    log "installing ${deploy_packages[*]} into $deploy_venv"
    python3 -m venv "$deploy_venv"
    "$deploy_venv/bin/pip" install -q "${deploy_packages[@]}"
  fi
  log "deployment files: compose.yaml, the image, deploy/kubernetes (tests/deploy)"
  "$deploy_venv/bin/pytest" -q -p no:cacheprovider tests/deploy 2>&1 | tee target/deploy.log
  command -v npm >/dev/null || apt_install nodejs npm
  tests/clients/run.sh
  # One closing line for the whole command: the Rust tests, the deployment checks, and the
  # four contract checks (two generated-client scenarios, two schemathesis runs); any failure
  # has already stopped the run.
  passed=$(cat target/nextest.log target/nextest-alone.log 2>/dev/null |
    sed -n 's/.* tests\{0,1\} run: \([0-9]*\) passed.*/\1/p' | awk '{ n += $1 } END { print n }')
  deployed=$(sed -n 's/^\([0-9]*\) passed.*/\1/p' target/deploy.log | tail -n 1)
  if [ -n "$passed" ] && [ "$passed" -gt 0 ]; then
    echo "keel: $((passed + ${deployed:-0} + 4)) passed, 0 failed"
  fi
fi
