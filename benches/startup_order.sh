#!/usr/bin/env bash
# Writes benches/startup.order: the functions `meshgate serve` (start, first
# connection, 0.3 s idle) and `meshgate explain --bind auto` run, as linker
# symbol names, most-sampled first. build.rs hands the file to the linker
# (`--symbol-ordering-file`) so that start-up code sits together and a start
# maps fewer 64 KiB windows of the binary (benches/startup_memory.sh measures
# RSS and start time; A/B against the previous binary with MESHGATE_BASE).
#
#   benches/startup_order.sh [STARTS]        (default 60; needs perf, Linux)
#
# Rerun it when start-up code changes a lot: names it no longer finds are
# skipped by the linker, so a stale file costs pages, never correctness.
# It relinks target/release/meshgate with symbols; the next
# `cargo build --release` relinks it as usual.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
starts="${1:-60}"
command -v perf >/dev/null || { echo "startup_order: perf is not installed" >&2; exit 1; }
target="${CARGO_TARGET_DIR:-$root/target}"
cargo rustc --release --quiet --bin meshgate --manifest-path "$root/Cargo.toml" -- -C strip=none
bin="$(mktemp)"
work="$(mktemp -d)"
trap 'rm -rf "$bin" "$work"' EXIT
cp "$target/release/meshgate" "$bin"
chmod +x "$bin"

cat >"$work/starts.sh" <<EOF
for i in \$(seq $starts); do
  port=\$((19100 + i % 20))
  "$bin" serve --port \$port >/dev/null 2>&1 &
  p=\$!
  for k in \$(seq 200); do (echo >/dev/tcp/127.0.0.1/\$port) 2>/dev/null && break; sleep 0.005; done
  sleep 0.3
  kill \$p; wait \$p 2>/dev/null || true
done
for i in \$(seq $((starts * 3))); do "$bin" explain --bind auto >/dev/null || true; done
EOF
perf record -q -F 49000 -o "$work/perf.data" -- bash "$work/starts.sh" >/dev/null 2>&1
perf report -i "$work/perf.data" --dso "$(basename "$bin")" --no-children --sort sym -g none --no-demangle 2>/dev/null \
    | awk '!/^#/ && NF >= 3 && !seen[$3]++ {print $3}' >"$root/benches/startup.order"
echo "benches/startup.order: $(wc -l <"$root/benches/startup.order") functions" >&2
