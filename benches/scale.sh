#!/usr/bin/env bash
# meshgate on a host with many interfaces (issue 19): in an unprivileged user +
# network namespace with N TUN interfaces (default 1,000), each with an
# address, prints side by side
#   - `meshgate explain --bind auto` against `ip -br addr` (hyperfine medians, ratio),
#   - attach latency of a running `meshgate serve` (address added -> first
#     accepted TCP connection), median and p99,
#   - the serving process's RSS before and after the N interfaces (kB/interface),
#   - the CPU a burst of 10,000 address changes costs it, and whether its
#     listeners are exactly right afterwards.
# See benches/scale.py for the details. Everything stays inside the namespace.
#
#   benches/scale.sh [IFACES] [ROUNDS] [BURST]    (defaults: 1000, 200, 10000)
# Needs hyperfine, ip (iproute2), python3, unshare; Linux only.
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in hyperfine ip python3 unshare; do
    command -v "$tool" >/dev/null || { echo "scale: $tool is not installed" >&2; exit 1; }
done
cargo build --release --quiet --bin meshgate
bin="${CARGO_TARGET_DIR:-$PWD/target}/release/meshgate"
exec unshare --user --map-root-user --net python3 benches/scale.py "$bin" "${1:-1000}" "${2:-200}" "${3:-10000}"
