#!/usr/bin/env bash
# Release binary sizes: the release profile as it was before strip and thin LTO (#31) against
# the committed one, both built from this tree, side by side. Two release builds: 20-40 minutes
# on 2 cores when cold.
#
#   bench/binary_sizes.sh                 both builds (before into target/size-before)
#   BEFORE_TARGET=DIR bench/binary_sizes.sh   reuse a target dir for the "before" build
set -euo pipefail
cd "$(dirname "$0")/.."

before=${BEFORE_TARGET:-target/size-before}
after=${AFTER_TARGET:-target}

build() { # build LABEL TARGET_DIR [ENV...]
  local label=$1 dir=$2; shift 2
  local started=$SECONDS
  env "$@" cargo build --release --bins --locked --quiet --target-dir "$dir"
  echo "$label build: $((SECONDS - started)) s" >&2
}

build "before (no strip, no LTO)" "$before" CARGO_PROFILE_RELEASE_STRIP=false CARGO_PROFILE_RELEASE_LTO=false
build "after (strip, thin LTO)" "$after"

printf '%-10s %12s %12s %8s\n' binary before after ratio
total_before=0 total_after=0
for bin in server worker scheduler admin; do
  b=$(stat -c %s "$before/release/$bin") a=$(stat -c %s "$after/release/$bin")
  total_before=$((total_before + b)) total_after=$((total_after + a))
  printf '%-10s %12d %12d %8s\n' "$bin" "$b" "$a" "$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", a / b }')"
done
printf '%-10s %12d %12d %8s\n' all "$total_before" "$total_after" \
  "$(awk -v a="$total_after" -v b="$total_before" 'BEGIN { printf "%.2f", a / b }')"
