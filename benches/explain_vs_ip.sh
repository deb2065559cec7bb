#!/usr/bin/env bash
# How long `meshgate explain --bind auto` takes next to `ip -br addr`, the
# command a person would otherwise run to find their mesh address. Both read
# the interfaces over rtnetlink; meshgate also runs every provider and prints
# its reasons. Prints both medians and the ratio.
#
# Usage: benches/explain_vs_ip.sh [RUNS] [INTERFACES]   (needs hyperfine and jq; Linux only)
#
# With INTERFACES (e.g. 64), both run in a new unprivileged user and network
# namespace holding that many TUN interfaces (each up, with an address), the
# size of a busy mesh host; without, on this host as it is.
#
# MESHGATE_BIN=PATH measures that binary instead of building the release one;
# MESHGATE_BASE=PATH (e.g. main's release binary copied aside) is measured in
# the same hyperfine run, interleaved, and its ratio printed beside.
set -euo pipefail

runs="${1:-300}"
ifaces="${2:-}"
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${MESHGATE_BIN:-${CARGO_TARGET_DIR:-$root/target}/release/meshgate}"
base="${MESHGATE_BASE:-}"

for tool in hyperfine jq ip; do
    command -v "$tool" >/dev/null || { echo "explain_vs_ip: $tool is not installed" >&2; exit 1; }
done

[ -n "${MESHGATE_BIN:-}" ] || cargo build --release --quiet --bin meshgate --manifest-path "$root/Cargo.toml"

out="$(mktemp)"
trap 'rm -f "$out"' EXIT

# -N: no intermediate shell, so the figures are the programs' own.
export runs out bin base
bench='hyperfine -N --warmup 20 --runs "$runs" --style basic --export-json "$out" \
    --command-name "meshgate explain --bind auto" "$bin explain --bind auto" \
    --command-name "ip -br addr" "ip -br addr" \
    ${base:+--command-name "base explain --bind auto" "$base explain --bind auto"} >&2'
if [ -n "$ifaces" ]; then
    # TUN devices need no kernel module beyond tun (dummy may be missing).
    unshare -Urn bash -c '
        set -e
        ip link set lo up
        for i in $(seq 0 $(($0 - 1))); do
            ip tuntap add "tun$i" mode tun
            ip addr add "10.$((i / 250)).$((i % 250)).1/24" dev "tun$i"
            ip link set "tun$i" up
        done
        echo "in a namespace with $(ip -o link | wc -l) interfaces" >&2
        eval "$1"' "$ifaces" "$bench"
else
    bash -c "$bench"
fi

jq -r '
  .results as $r
  | ($r[0].median * 1e6) as $m
  | ($r[1].median * 1e6) as $i
  | "meshgate explain --bind auto: median \($m | floor) us",
    "ip -br addr:                  median \($i | floor) us",
    "ratio (meshgate / ip):        \(($m / $i * 100 | round) / 100)",
    (if ($r | length) > 2 then ($r[2].median * 1e6) as $b
     | "base explain --bind auto:     median \($b | floor) us",
       "ratio (base / ip):            \(($b / $i * 100 | round) / 100)"
     else empty end)
' "$out"
