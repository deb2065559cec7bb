#!/usr/bin/env bash
# How long `meshgate explain --bind auto` takes next to `ip -br addr`, the
# command a person would otherwise run to find their mesh address. Both read
# the interfaces over rtnetlink; meshgate also runs every provider and prints
# its reasons. Prints both medians and the ratio.
#
# Usage: benches/explain_vs_ip.sh [RUNS] [INTERFACES]   (needs hyperfine and jq; Linux only)
# EXPLAIN_ROUNDS=N splits the runs into N rounds (default 5), see below.
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

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

# ROUNDS hyperfine runs of RUNS/ROUNDS each, the commands' order rotated
# each round, so that a shared machine's drift hits every command alike; the
# figures are medians over the rounds' medians (ratios taken per round).
rounds="${EXPLAIN_ROUNDS:-5}"
# -N: no intermediate shell, so the figures are the programs' own.
export runs out bin base rounds
bench='
    cmds=("meshgate explain --bind auto|$bin explain --bind auto" "ip -br addr|ip -br addr")
    [ -z "$base" ] || cmds+=("base explain --bind auto|$base explain --bind auto")
    for r in $(seq 0 $((rounds - 1))); do
        args=()
        for k in $(seq 0 $((${#cmds[@]} - 1))); do
            c="${cmds[$(( (k + r) % ${#cmds[@]} ))]}"
            args+=(--command-name "${c%%|*}" "${c#*|}")
        done
        hyperfine -N --warmup 10 --runs $(( (runs + rounds - 1) / rounds )) --style basic \
            --export-json "$out/$r.json" "${args[@]}" >&2
    done'
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

jq -rs '
  def med: sort | if length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end;
  def of($n): map(.results[] | select(.command == $n) | .median * 1e6);
  def ratio($a; $b): map([.results[] | select(.command == $a) | .median][0]
                         / [.results[] | select(.command == $b) | .median][0]) | med;
  . as $rounds
  | "meshgate explain --bind auto: median \($rounds | of("meshgate explain --bind auto") | med | floor) us",
    "ip -br addr:                  median \($rounds | of("ip -br addr") | med | floor) us",
    "ratio (meshgate / ip):        \(($rounds | ratio("meshgate explain --bind auto"; "ip -br addr")) * 100 | round / 100)",
    (if ($rounds[0].results | length) > 2 then
       "base explain --bind auto:     median \($rounds | of("base explain --bind auto") | med | floor) us",
       "ratio (base / ip):            \(($rounds | ratio("base explain --bind auto"; "ip -br addr")) * 100 | round / 100)"
     else empty end)
' "$out"/*.json
