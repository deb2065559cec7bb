#!/usr/bin/env bash
# meshgate's start-up and idle memory, in one table:
#   - RSS, PSS and anonymous memory of `meshgate serve` idle on loopback
#     (follow on, the default), 2 s after a cold start (page cache dropped
#     before each start when this runs as root; otherwise warm, and it says so),
#     from /proc/PID/smaps_rollup; medians over ROUNDS starts;
#   - the time from process start to the first accepted connection on
#     127.0.0.1 (a connect polled every 0.2 ms), median over STARTS starts,
#     beside examples/listen_floor.rs started the same way (the floor: process
#     start, the loader, Python's fork/exec and the polling);
#   - `meshgate explain --bind auto` against `ip -br addr` in a namespace
#     holding IFACES TUN interfaces (benches/explain_vs_ip.sh).
#
#   benches/startup_memory.sh [ROUNDS] [STARTS] [EXPLAIN_RUNS] [IFACES]
#                                           (defaults: 8 30 200 64)
#
# MESHGATE_BIN=PATH measures that binary instead of building the release one.
# MESHGATE_BASE=PATH (e.g. main's release binary copied aside) is measured in
# the same run, rounds interleaved (the order alternates), so drift on a
# shared machine hits both alike; the table then has a base column and ratios.
# Needs python3, and hyperfine + jq for the explain row. Loopback only; every
# process it starts is stopped.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
rounds=${1:-8}
starts=${2:-30}
explain_runs=${3:-200}
ifaces=${4:-64}
bin="${MESHGATE_BIN:-${CARGO_TARGET_DIR:-$root/target}/release/meshgate}"
base="${MESHGATE_BASE:-}"
[ -n "${MESHGATE_BIN:-}" ] || cargo build --release --quiet --bin meshgate --manifest-path "$root/Cargo.toml"
cargo build --release --quiet --example listen_floor --manifest-path "$root/Cargo.toml"
floor_bin="${CARGO_TARGET_DIR:-$root/target}/release/examples/listen_floor"
for b in "$bin" $base; do
    [ -x "$b" ] || { echo "startup_memory: $b is not an executable" >&2; exit 1; }
done

mem_start="$(python3 - "$rounds" "$starts" "$floor_bin" "$bin" $base <<'PY'
import os, socket, statistics, subprocess, sys, time

rounds, starts, floor_bin, bins = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4:]
env = {**os.environ, "RUST_LOG": "warn"}
env.pop("MESHGATE_CONFIG", None)
try:
    with open("/proc/sys/vm/drop_caches", "w"):
        pass
    cold = True
except OSError:
    cold = False
print(f"# page cache {'dropped before each start (cold)' if cold else 'kept (warm): not root'}", file=sys.stderr)

def drop_caches():
    if cold:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")

def start(b, port):
    return subprocess.Popen([b, "serve", "--port", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)

def accepted_ms(t0, port, timeout=5.0):
    while time.perf_counter() - t0 < timeout:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.05).close()
            return (time.perf_counter() - t0) * 1000
        except OSError:
            time.sleep(0.0002)
    raise SystemExit(f"startup_memory: nothing accepted on 127.0.0.1:{port} within {timeout} s")

def stop(p):
    p.terminate()
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()

def rollup(pid):
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("Rss", "Pss", "Anonymous"):
                out[k] = int(v.split()[0])
    return out

mem = {b: {"Rss": [], "Pss": [], "Anonymous": []} for b in bins}
times = {b: [] for b in bins}
port = 18930
for r in range(rounds):
    for b in (bins if r % 2 == 0 else bins[::-1]):
        drop_caches()
        port += 1
        t0 = time.perf_counter()
        p = start(b, port)
        try:
            accepted_ms(t0, port)
            time.sleep(2)
            for k, v in rollup(p.pid).items():
                mem[b][k].append(v)
        finally:
            stop(p)
for s in range(starts):
    for b in (bins if s % 2 == 0 else bins[::-1]):
        port = 18960 + s % 20
        t0 = time.perf_counter()
        p = start(b, port)
        try:
            times[b].append(accepted_ms(t0, port))
        finally:
            stop(p)
# The harness's own floor: the same loop starting examples/listen_floor.rs
# (std only: bind, accept, close), so the start-up row reads as meshgate's share.
floor = []
if os.path.exists(floor_bin):
    for s in range(starts):
        port = 18985 + s % 10
        t0 = time.perf_counter()
        p = subprocess.Popen([floor_bin, str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            floor.append(accepted_ms(t0, port))
        finally:
            stop(p)
for b in bins:
    m = {k: statistics.median(v) for k, v in mem[b].items()}
    print(f"{b}\t{m['Rss']:.0f}\t{m['Pss']:.0f}\t{m['Anonymous']:.0f}\t{statistics.median(times[b]):.2f}")
print(f"floor\t{statistics.median(floor):.2f}" if floor else "floor\t-")
PY
)"

explain="$(MESHGATE_BIN="$bin" MESHGATE_BASE="$base" "$root/benches/explain_vs_ip.sh" "$explain_runs" "$ifaces" 2>/dev/null)"
ratio_new=$(awk -F': *' '/^ratio \(meshgate/ {print $2}' <<<"$explain")
ratio_base=$(awk -F': *' '/^ratio \(base/ {print $2}' <<<"$explain")
us_new=$(awk '/^meshgate explain/ {print $(NF-1)}' <<<"$explain")
us_ip=$(awk '/^ip -br addr/ {print $(NF-1)}' <<<"$explain")
us_base=$(awk '/^base explain/ {print $(NF-1)}' <<<"$explain")

echo "load: $(uptime | sed 's/.*load average: //')"
echo "cold starts: $rounds per binary, 2 s idle; starts to first connection: $starts; explain: $explain_runs runs at $ifaces interfaces"
python3 - "$mem_start" "$us_new" "$us_ip" "${ratio_new}" "${us_base:-}" "${ratio_base:-}" <<'PY'
import sys
rows = [l.split("\t") for l in sys.argv[1].splitlines()]
floor = [r for r in rows if r[0] == "floor"][0][1]
rows = [r for r in rows if r[0] != "floor"]
us_new, us_ip, r_new, us_base, r_base = sys.argv[2:7]
new = rows[0]
base = rows[1] if len(rows) > 1 else None
lines = [
    ("idle RSS after a cold start (MB)", 1, lambda v: f"{float(v) / 1024:.2f}"),
    ("idle PSS after a cold start (MB)", 2, lambda v: f"{float(v) / 1024:.2f}"),
    ("idle anonymous (MB)", 3, lambda v: f"{float(v) / 1024:.2f}"),
    ("start to first accepted connection (ms)", 4, lambda v: v),
]
head = f"| {'median':<42} | {'new':>9} |" + (f" {'base':>9} | {'new/base':>8} |" if base else "")
print(head)
print("|" + "-" * 44 + "|" + "-" * 11 + "|" + ("-" * 11 + "|" + "-" * 10 + "|" if base else ""))
for name, i, fmt in lines:
    row = f"| {name:<42} | {fmt(new[i]):>9} |"
    if base:
        row += f" {fmt(base[i]):>9} | {float(new[i]) / float(base[i]):>8.3f} |"
    print(row)
row = f"| {'explain --bind auto / ip -br addr':<42} | {r_new + 'x':>9} |"
if base:
    row += f" {r_base + 'x':>9} | {float(r_new) / float(r_base):>8.3f} |"
print(row)
print(f"(explain {us_new} us" + (f", base {us_base} us" if base else "") + f", ip -br addr {us_ip} us)")
print(f"(the same loop starts examples/listen_floor, std only, to its first connection in {floor} ms: the harness's floor)")
PY
