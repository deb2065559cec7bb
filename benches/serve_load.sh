#!/usr/bin/env bash
# meshgate's /healthz throughput against a bare axum hello-world (same crate
# versions), its idle RSS, and the time from process start to the first accepted
# connection. Loopback only; every run is bounded.
#
#   benches/serve_load.sh [ROUNDS] [SECONDS]     (defaults: 5 rounds of 5 s)
#
# Needs wrk (apt-get install wrk) and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
secs=${2:-5}
command -v wrk >/dev/null || { echo "needs wrk: apt-get install wrk" >&2; exit 1; }
cargo build --release --quiet --bin meshgate --example hello_axum
mg=${CARGO_TARGET_DIR:-target}/release/meshgate
hello=${CARGO_TARGET_DIR:-target}/release/examples/hello_axum
mg_port=18797
hello_port=18798

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

RUST_LOG=warn "$mg" serve --no-follow --port $mg_port >/dev/null & pids+=($!)
mg_pid=$!
"$hello" 127.0.0.1:$hello_port >/dev/null & pids+=($!)
sleep 0.5

rps() { # url -> requests/sec
  wrk -t2 -c64 -d"${secs}s" "$1" | awk '/Requests\/sec/ {print $2}'
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

mg_runs=(); hello_runs=()
for i in $(seq "$rounds"); do
  # Alternate which goes first so drift on a shared machine hits both alike.
  if (( i % 2 )); then
    mg_runs+=("$(rps http://127.0.0.1:$mg_port/healthz)"); hello_runs+=("$(rps http://127.0.0.1:$hello_port/healthz)")
  else
    hello_runs+=("$(rps http://127.0.0.1:$hello_port/healthz)"); mg_runs+=("$(rps http://127.0.0.1:$mg_port/healthz)")
  fi
done
mg_med=$(printf '%s\n' "${mg_runs[@]}" | median)
hello_med=$(printf '%s\n' "${hello_runs[@]}" | median)
echo "rounds: $rounds x ${secs}s, wrk -t2 -c64"
echo "meshgate /healthz  req/s runs: ${mg_runs[*]}  median: $mg_med"
echo "bare axum /healthz req/s runs: ${hello_runs[*]}  median: $hello_med"
awk -v a="$mg_med" -v b="$hello_med" 'BEGIN {printf "ratio meshgate/bare: %.3f\n", a/b}'

# Idle RSS: a fresh process after 2 s with no traffic.
RUST_LOG=warn "$mg" serve --port $((mg_port + 10)) >/dev/null & pids+=($!)
idle_pid=$!
sleep 2
echo "meshgate idle RSS (follow on): $(awk '/VmRSS/ {print $2, $3}' /proc/$idle_pid/status)"
echo "meshgate RSS after load:       $(awk '/VmRSS/ {print $2, $3}' /proc/$mg_pid/status)"

# Start to first accepted connection, over 30 starts.
python3 - "$mg" <<'PY'
import socket, subprocess, sys, time, statistics, os
mg = sys.argv[1]
times = []
for i in range(30):
    port = 18900 + i
    t0 = time.perf_counter()
    p = subprocess.Popen([mg, "serve", "--no-follow", "--port", str(port)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "warn"})
    deadline = t0 + 5
    while time.perf_counter() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.05).close()
            times.append((time.perf_counter() - t0) * 1000)
            break
        except OSError:
            time.sleep(0.0002)
    p.terminate(); p.wait(timeout=10)
times.sort()
print(f"start to first accepted connection: median {statistics.median(times):.2f} ms, "
      f"min {times[0]:.2f} ms, max {times[-1]:.2f} ms over {len(times)} starts")
PY
