#!/usr/bin/env bash
# Release binary sizes: the release profile as it was before #31 (cargo's defaults: debug info
# stripped, no LTO) against the committed one (every symbol stripped, thin LTO), both built
# from the committed tree: "before" in a worktree whose Cargo.toml lacks the two lines.
# Two release builds, 20-40 minutes on 2 cores when cold.
#
#   bench/binary_sizes.sh
#   BEFORE_TREE=DIR AFTER_TARGET=DIR bench/binary_sizes.sh   (reuse earlier builds)
set -euo pipefail
cd "$(dirname "$0")/.."

before_tree=${BEFORE_TREE:-target/size-before-tree}
after_target=${AFTER_TARGET:-target}

if [ ! -d "$before_tree" ]; then git worktree add --detach "$before_tree" HEAD >/dev/null; fi
git -C "$before_tree" checkout -q -- Cargo.toml
git -C "$before_tree" checkout -q --detach "$(git rev-parse HEAD)"
sed -i '/^strip = true$/d; /^lto = "thin"$/d' "$before_tree/Cargo.toml"

build() { # build LABEL DIR [cargo args...]
  local label=$1 dir=$2; shift 2
  local started=$SECONDS
  (cd "$dir" && cargo build --release --bins --locked --quiet "$@")
  echo "$label build: $((SECONDS - started)) s" >&2
}
build "before (debug info stripped, no LTO)" "$before_tree"
build "after (strip, thin LTO)" . --target-dir "$after_target"

printf '%-10s %12s %12s %8s\n' binary before after ratio
total_before=0 total_after=0
for bin in server worker scheduler admin; do
  b=$(stat -c %s "$before_tree/target/release/$bin") a=$(stat -c %s "$after_target/release/$bin")
  total_before=$((total_before + b)) total_after=$((total_after + a))
  printf '%-10s %12d %12d %8s\n' "$bin" "$b" "$a" "$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", a / b }')"
done
printf '%-10s %12d %12d %8s\n' all "$total_before" "$total_after" \
  "$(awk -v a="$total_after" -v b="$total_before" 'BEGIN { printf "%.2f", a / b }')"
