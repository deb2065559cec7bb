#!/usr/bin/env bash
# How long `meshgate explain --bind auto` takes next to `ip -br addr`, the
# command a person would otherwise run to find their mesh address. Both read
# the interfaces over rtnetlink; meshgate also runs every provider and prints
# its reasons. Prints both medians and the ratio.
#
# Usage: benches/explain_vs_ip.sh [RUNS]   (needs hyperfine and jq; Linux only)
set -euo pipefail

runs="${1:-300}"
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${CARGO_TARGET_DIR:-$root/target}/release/meshgate"

for tool in hyperfine jq ip; do
    command -v "$tool" >/dev/null || { echo "explain_vs_ip: $tool is not installed" >&2; exit 1; }
done

cargo build --release --quiet --bin meshgate --manifest-path "$root/Cargo.toml"

out="$(mktemp)"
trap 'rm -f "$out"' EXIT

# -N: no intermediate shell, so the figures are the programs' own.
hyperfine -N --warmup 20 --runs "$runs" --style basic --export-json "$out" \
    --command-name "meshgate explain --bind auto" "$bin explain --bind auto" \
    --command-name "ip -br addr" "ip -br addr" >&2

jq -r '
  .results as $r
  | ($r[0].median * 1e6) as $m
  | ($r[1].median * 1e6) as $i
  | "meshgate explain --bind auto: median \($m | floor) us",
    "ip -br addr:                  median \($i | floor) us",
    "ratio (meshgate / ip):        \(($m / $i * 100 | round) / 100)"
' "$out"
