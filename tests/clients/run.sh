#!/usr/bin/env bash
# Proves openapi/openapi.json true and usable, against a live server built from this tree:
#  1. a Python client generated with openapi-python-client runs the account and task flow;
#  2. TypeScript types generated with openapi-typescript, used through openapi-fetch, type-check
#     with `tsc --noEmit` and run the same flow;
#  3. schemathesis runs every check on every operation (bounded examples; the per-operation
#     exceptions, each with its reason, are in tests/clients/schemathesis.toml): no 5xx, no answer
#     that breaks its schema, no schema-valid request refused, no schema-violating one accepted,
#     Allow on 405, authentication enforced, created resources reachable.
# Generated code goes to a temporary directory, never into the repository. Called by tests/run.sh
# (which starts maildev first); needs python3 and node/npm.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
TOOLS_DIR=${KEEL_TOOLS_DIR:-"$HOME/.cache/keel-tools"}
MAILDEV_URL=${TEST_MAILDEV_URL:-http://127.0.0.1:1080}
SMTP_PORT=${TEST_SMTP_PORT:-1025}
EXAMPLES=${SCHEMATHESIS_EXAMPLES:-30}

log() { printf '\n== %s\n' "$*"; }

PY_TOOLS="openapi-python-client==0.29.1 schemathesis==4.32.5 httpx"
if [ ! -x "$TOOLS_DIR/py/bin/schemathesis" ] || ! "$TOOLS_DIR/py/bin/pip" -q show openapi-python-client >/dev/null 2>&1; then
  log "installing $PY_TOOLS into $TOOLS_DIR/py"
  python3 -m venv "$TOOLS_DIR/py"
  "$TOOLS_DIR/py/bin/pip" install -q $PY_TOOLS
fi
TS_TOOLS="openapi-typescript@7.13.0 openapi-fetch@0.17.0 typescript@5.9.3 @types/node@20"
if [ ! -x "$TOOLS_DIR/ts/node_modules/.bin/tsc" ] || [ ! -d "$TOOLS_DIR/ts/node_modules/openapi-fetch" ]; then
  log "installing $TS_TOOLS into $TOOLS_DIR/ts"
  mkdir -p "$TOOLS_DIR/ts"
  (cd "$TOOLS_DIR/ts" && [ -f package.json ] || (cd "$TOOLS_DIR/ts" && npm init -y >/dev/null))
  (cd "$TOOLS_DIR/ts" && npm install --no-audit --no-fund --loglevel=error $TS_TOOLS >/dev/null)
fi

work=$(mktemp -d)
server_pid=
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

cargo build --quiet --bin server
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export KEEL_URL="http://127.0.0.1:$port" MAILDEV_URL
(
  cd "$work"
  DATABASE_URL="sqlite://$work/keel.db?mode=rwc" PORT=$port SMTP_HOST=127.0.0.1 SMTP_PORT=$SMTP_PORT SMTP_TLS=false \
    FIRST_SUPERUSER_EMAIL=root@example.com FIRST_SUPERUSER_PASSWORD='RootPassword123!' \
    FRONTEND_URL=http://app.test LOG_LEVEL=warn ENABLE_RATE_LIMITING=false \
    exec "${CARGO_TARGET_DIR:-$ROOT/target}/debug/server"
) >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do curl -fs "$KEEL_URL/system/health/live" >/dev/null && break; sleep 0.1; done
curl -fs "$KEEL_URL/system/health/live" >/dev/null || { cat "$work/server.log"; exit 1; }

log "Python client (openapi-python-client)"
printf 'post_hooks: []\n' >"$work/py-config.yaml"
gen_out=$("$TOOLS_DIR/py/bin/openapi-python-client" generate --path openapi/openapi.json \
  --output-path "$work/keel_client" --meta none --config "$work/py-config.yaml" 2>&1)
echo "$gen_out"
if echo "$gen_out" | grep -qi "warning"; then
  echo "openapi-python-client warned about the spec" >&2
  exit 1
fi
PYTHONPATH="$work" "$TOOLS_DIR/py/bin/python" tests/clients/python_scenario.py

log "TypeScript types (openapi-typescript + openapi-fetch)"
mkdir -p "$work/ts"
ln -s "$TOOLS_DIR/ts/node_modules" "$work/ts/node_modules"
gen_out=$("$TOOLS_DIR/ts/node_modules/.bin/openapi-typescript" openapi/openapi.json -o "$work/ts/schema.d.ts" 2>&1)
echo "$gen_out"
if echo "$gen_out" | grep -qiE "warn|error"; then
  echo "openapi-typescript warned about the spec" >&2
  exit 1
fi
cp tests/clients/ts_scenario.mts tests/clients/tsconfig.json "$work/ts/"
(cd "$work/ts" && ./node_modules/.bin/tsc --noEmit -p tsconfig.json && ./node_modules/.bin/tsc -p tsconfig.json)
node "$work/ts/out/ts_scenario.mjs"

log "schemathesis: every check on every operation, $EXAMPLES examples each"
# A superuser's token for the authenticated operations. Operations that would end that session
# (logout, revoking sessions, changing the password) get their own run first, with a session of
# their own, which they may well end part-way (401s are documented answers). They run first
# because the other run may leave the superuser unable to sign in (it soft-deletes accounts,
# its own among them). Each token is taken by a plain assignment, so a failed sign-in stops the
# script instead of fuzzing signed out.
login() {
  curl -fsS -X POST "$KEEL_URL/auth/login" -d 'username=root@example.com&password=RootPassword123!' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'
}
session_enders='^(auth_logout|auth_sessions_revoke|auth_sessions_revoke_others|auth_change_password)$'
st() {
  "$TOOLS_DIR/py/bin/schemathesis" --config-file tests/clients/schemathesis.toml \
    run openapi/openapi.json --url "$KEEL_URL" \
    --max-examples "$EXAMPLES" --generation-deterministic --request-timeout 20 \
    --suppress-health-check all "$@"
}
token=$(login)
st -H "Authorization: Bearer $token" --include-operation-id-regex "$session_enders"
token=$(login)
st -H "Authorization: Bearer $token" --exclude-operation-id-regex "$session_enders"
echo "client and contract checks: ok"
