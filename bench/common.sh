# Shared by the bench scripts; sourced, not run.

# median FILE: the median of the numbers in FILE, one per line
median() {
  sort -n "$1" | awk '{ v[NR] = $1 } END {
    if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
