#!/usr/bin/env bash
# Follow latency (ip addr add -> first TCP connect) and flap leak figures, in an
# unprivileged user + network namespace. See benches/follow_latency.py.
#
#   benches/follow_latency.sh [ROUNDS] [FLAP_CYCLES]    (defaults: 300, 1000)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin meshgate
exec unshare --user --map-root-user --net python3 benches/follow_latency.py "$PWD/target/release/meshgate" "${1:-300}" "${2:-1000}"
