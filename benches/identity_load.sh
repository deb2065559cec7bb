#!/usr/bin/env bash
# Issue #14's speed aim: proxied keep-alive throughput with --allow-peer stays
# within 3% of token auth. Peer identity is looked up only on WireGuard
# listeners, so this builds a real tunnel in two throw-away network namespaces
# (the way tests/lab does: unprivileged `unshare --user --map-root-user --net
# --mount` holders entered with nsenter, a veth underlay 192.0.2.1 <-> .2,
# wireguard-go on both sides with a private tmpfs on /var/run/wireguard,
# gateway 10.77.0.1, peer 10.77.0.2), runs the bare axum app
# (examples/hello_axum.rs) on the gateway's loopback and two meshgates in front
# of it on the gateway's WireGuard address:
#   token: --token-file F        wrk sends Authorization: Bearer TOKEN
#   peer:  --allow-peer PEER_KEY wrk sends no header
# wrk runs in the peer namespace. Two rows: keep-alive (identity looked up once
# per connection, so nearly free) and Connection: close (a new connection, hence
# a lookup, per request: the lookup's worst case). Both meshgates get the same
# per-address connection caps, raised above wrk's connection count, so the
# unauthenticated-connection share (which an allowed peer skips) does not tilt
# the comparison.
#
# The tunnel (two wireguard-go processes sharing the machine's cores with wrk,
# meshgate and the app) is most of the cost, so req/s moves little whatever
# meshgate does: the fairer figure is meshgate's own CPU time per request
# (user + system from /proc/PID/stat), printed next to wireguard-go's. Medians
# over the rounds, token/peer order alternating each round. Nothing touches the
# host's network; every run is bounded; everything started here is stopped on
# exit (the namespaces go with their holders).
#
#   benches/identity_load.sh [ROUNDS] [SECONDS] [CONNECTIONS]   (defaults: 5 rounds of 5 s, 64 connections)
#
# Needs wrk, wireguard-go, wg (wireguard-tools), unshare/nsenter (util-linux),
# ip (iproute2) and unprivileged user namespaces. MESHGATE=path/to/meshgate and
# HELLO=path/to/hello_axum skip the cargo build.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
secs=${2:-5}
conns=${3:-64}
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
for t in wrk wireguard-go wg unshare nsenter ip; do
  command -v "$t" >/dev/null || { echo "needs $t (apt-get install wrk wireguard-go wireguard-tools util-linux iproute2)" >&2; exit 1; }
done
if [ -z "${MESHGATE:-}" ] || [ -z "${HELLO:-}" ]; then
  cargo build --release --quiet --bin meshgate --example hello_axum
  MESHGATE=${MESHGATE:-${CARGO_TARGET_DIR:-target}/release/meshgate}
  HELLO=${HELLO:-${CARGO_TARGET_DIR:-target}/release/examples/hello_axum}
fi
mg=$(realpath "$MESHGATE")
hello=$(realpath "$HELLO")
up_port=18841
tok_port=18842
peer_port=18843
gw_wg=10.77.0.1

tmp=$(mktemp -d)
pids=()
holders=()
netns=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  # Anything else still inside our namespaces (nothing, normally).
  local q n
  for q in /proc/[0-9]*; do
    n=$(readlink "$q/ns/net" 2>/dev/null) || continue
    for m in "${netns[@]}"; do [ "$n" = "$m" ] && kill "${q#/proc/}" 2>/dev/null; done
  done
  for p in "${holders[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

# A holder owns the namespaces; it exits by itself after `lifetime` seconds
# even if this script is SIGKILLed.
lifetime=$((rounds * 4 * (secs + 25) + 120))
holder_script="set -e
ip link set lo up
if [ -d /var/run/wireguard ]; then
  mount -t tmpfs -o mode=0755 bench-wireguard /var/run/wireguard
else
  mount -t tmpfs -o mode=0755 bench-run /var/run
  mkdir /var/run/wireguard
fi
echo READY
exec sleep $lifetime"
wait_ready() { # file holder-pid what
  for _ in $(seq 200); do
    grep -qx READY "$1" 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || break
    sleep 0.05
  done
  echo "cannot create namespaces ($3): $(cat "$1.err" 2>/dev/null)" >&2
  exit 1
}
unshare --user --map-root-user --net --mount --propagation private sh -c "$holder_script" \
  >"$tmp/gw.ready" 2>"$tmp/gw.ready.err" & holders+=($!)
gw=$!
wait_ready "$tmp/gw.ready" "$gw" gateway
netns+=("$(readlink "/proc/$gw/ns/net")")
# The peer shares the gateway's user namespace (to move a veth end over).
nsenter --target="$gw" --user --preserve-credentials -- \
  unshare --net --mount --propagation private sh -c "$holder_script" \
  >"$tmp/peer.ready" 2>"$tmp/peer.ready.err" & holders+=($!)
peer=$!
wait_ready "$tmp/peer.ready" "$peer" peer
netns+=("$(readlink "/proc/$peer/ns/net")")
# Runs a program inside a holder's namespaces. nsenter execs the program (no
# pid namespace, no fork), and the function execs nsenter, so for `in_ns ... &`
# $! is the program's own pid (what gets killed, and whose CPU is counted).
in_ns() { local t=$1; shift; nsenter --target="$t" --user --net --mount --preserve-credentials --wd=/ -- "$@"; }
in_ns_bg() { local t=$1; shift; exec nsenter --target="$t" --user --net --mount --preserve-credentials --wd=/ -- "$@"; }

in_ns "$gw" sh -c "set -e
ip link add veth-gw type veth peer name veth-peer netns $peer
ip addr add 192.0.2.1/24 dev veth-gw
ip link set veth-gw up"
in_ns "$peer" sh -c "set -e
ip addr add 192.0.2.2/24 dev veth-peer
ip link set veth-peer up"

gw_priv=$(wg genkey); gw_pub=$(printf '%s\n' "$gw_priv" | wg pubkey)
peer_priv=$(wg genkey); peer_pub=$(printf '%s\n' "$peer_priv" | wg pubkey)
wg_pids=()
wg_up() { # holder iface private peer-public allowed endpoint address
  WG_PROCESS_FOREGROUND=1 LOG_LEVEL=error in_ns_bg "$1" wireguard-go -f "$2" >"$tmp/$2.log" 2>&1 & pids+=($!)
  wg_pids+=($!)
  local i
  for i in $(seq 200); do
    in_ns "$1" sh -c "test -S /var/run/wireguard/$2.sock && ip link show dev $2" >/dev/null 2>&1 && break
    [ "$i" -lt 200 ] || { echo "wireguard-go $2 did not come up: $(cat "$tmp/$2.log")" >&2; exit 1; }
    sleep 0.05
  done
  printf '%s\n' "$3" | in_ns "$1" wg set "$2" listen-port 51820 private-key /dev/stdin \
    peer "$4" allowed-ips "$5" endpoint "$6:51820"
  in_ns "$1" ip addr add "$7/24" dev "$2"
  in_ns "$1" ip link set "$2" up
}
wg_up "$gw" wg0 "$gw_priv" "$peer_pub" 10.77.0.2/32 192.0.2.2 $gw_wg
wg_up "$peer" wgpeer "$peer_priv" "$gw_pub" $gw_wg/32 192.0.2.1 10.77.0.2

head -c 32 /dev/urandom | base64 >"$tmp/token"
chmod 600 "$tmp/token"
token=$(cat "$tmp/token")

in_ns_bg "$gw" "$hello" 127.0.0.1:$up_port >/dev/null & pids+=($!)
up_pid=$!
# Identical but for the auth: same caps (above wrk's connection count, so the
# unauthenticated share, which an allowed peer skips, never queues the token
# run's connections), no loopback door, no following.
common=(serve --bind wireguard --no-loopback --no-follow --upstream "http://127.0.0.1:$up_port"
  --max-connections-per-address $((conns * 2)) --max-unauthenticated-per-address $((conns * 2)))
in_ns_bg "$gw" env -u MESHGATE_TOKEN RUST_LOG=warn "$mg" "${common[@]}" --port $tok_port \
  --token-file "$tmp/token" >"$tmp/mg-token.log" 2>&1 & pids+=($!)
tok_pid=$!
in_ns_bg "$gw" env -u MESHGATE_TOKEN RUST_LOG=warn "$mg" "${common[@]}" --port $peer_port \
  --allow-peer "$peer_pub" >"$tmp/mg-peer.log" 2>&1 & pids+=($!)
peer_mg_pid=$!

# From the peer, through the tunnel: each must answer, and each must really
# check (token's without the header is 401, peer's lets the peer in bare).
code() { in_ns "$peer" curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$@" || true; }
for port in $tok_port $peer_port; do
  for i in $(seq 150); do
    c=$(code -H "Authorization: Bearer $token" "http://$gw_wg:$port/healthz")
    [ "$c" = 200 ] && break
    [ "$i" -lt 150 ] || { echo "http://$gw_wg:$port/healthz answers '$c' through the tunnel" >&2; cat "$tmp"/mg-*.log >&2; exit 1; }
    sleep 0.1
  done
done
c=$(code "http://$gw_wg:$tok_port/healthz")
[ "$c" = 401 ] || { echo "token meshgate answers $c without a token (want 401)" >&2; exit 1; }
c=$(code "http://$gw_wg:$peer_port/healthz")
[ "$c" = 200 ] || { echo "allow-peer meshgate answers $c to the allowed peer without a token (want 200)" >&2; cat "$tmp/mg-peer.log" >&2; exit 1; }

hz=$(getconf CLK_TCK)
ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }
# One run: "req/s p99_ms meshgate_us/req wireguard-go_us/req upstream_us/req".
# Any non-2xx answer or socket error fails the run: a refused request is cheap
# and would flatter the numbers.
run() { # mode meshgate-pid url [wrk header args]
  local mode=$1 pid=$2 url=$3 out m0 w0 u0 m1 w1 u1
  shift 3
  m0=$(ticks "$pid"); w0=$(ticks "${wg_pids[@]}"); u0=$(ticks "$up_pid")
  out=$(timeout $((secs + 20)) nsenter --target="$peer" --user --net --mount --preserve-credentials --wd=/ -- wrk -t2 -c"$conns" -d"${secs}s" --latency "$@" "$url")
  m1=$(ticks "$pid"); w1=$(ticks "${wg_pids[@]}"); u1=$(ticks "$up_pid")
  if grep -qE 'Non-2xx|Socket errors' <<<"$out"; then
    echo "$mode run against $url had errors:" >&2
    grep -E 'Non-2xx|Socket errors' <<<"$out" >&2
    exit 1
  fi
  awk -v m=$((m1 - m0)) -v w=$((w1 - w0)) -v u=$((u1 - u0)) -v hz="$hz" '
    /requests in/ {n=$1}
    /Requests\/sec/ {rps=$2}
    $1=="99%" {v=$2; ms=v+0; if (v ~ /us$/) ms/=1000; else if (v ~ /ms$/) ms=ms; else if (v ~ /s$/) ms*=1000; p99=ms}
    END {printf "%s %.3f %.1f %.1f %.1f\n", rps, p99, m/hz/n*1e6, w/hz/n*1e6, u/hz/n*1e6}' <<<"$out"
}
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

declare -A runs
for i in $(seq "$rounds"); do
  for row in ka close; do
    extra=()
    [ "$row" = close ] && extra=(-H "Connection: close")
    order="token peer"
    (( i % 2 )) || order="peer token"
    for who in $order; do
      if [ "$who" = token ]; then
        runs[$row.$who]+="$(run "$who" "$tok_pid" "http://$gw_wg:$tok_port/healthz" \
          -H "Authorization: Bearer $token" "${extra[@]}")"$'\n'
      else
        runs[$row.$who]+="$(run "$who" "$peer_mg_pid" "http://$gw_wg:$peer_port/healthz" "${extra[@]}")"$'\n'
      fi
    done
  done
done

col() { grep . <<<"${runs[$1]}" | awk -v c="$2" '{print $c}'; }   # key column -> values
echo "rounds: $rounds x ${secs}s, wrk -t2 -c$conns in the peer namespace -> meshgate --bind wireguard (wireguard-go) -> hello_axum /healthz ($(nproc) CPUs, unpinned, load before: $(cut -d' ' -f1-3 /proc/loadavg))"
echo "cpu us/req: user+system CPU time per request of meshgate, of both wireguard-go daemons together, and of the upstream"
for row in ka close; do
  [ "$row" = ka ] && echo "keep-alive (one identity lookup per connection):" || echo "Connection: close (a new connection, so a lookup, per request):"
  printf '  %-6s %11s %12s %13s %10s %10s   %s\n' auth "req/s(med)" "p99 ms(med)" "meshgate us" "wg-go us" "app us" "req/s runs"
  for who in token peer; do
    k=$row.$who
    printf '  %-6s %11.0f %12.3f %13.1f %10.1f %10.1f   %s\n' "$who" "$(col "$k" 1 | median)" "$(col "$k" 2 | median)" \
      "$(col "$k" 3 | median)" "$(col "$k" 4 | median)" "$(col "$k" 5 | median)" "$(col "$k" 1 | xargs)"
  done
  awk -v a="$(col "$row.token" 1 | median)" -v b="$(col "$row.peer" 1 | median)" \
    -v ac="$(col "$row.token" 3 | median)" -v bc="$(col "$row.peer" 3 | median)" \
    -v ap="$(col "$row.token" 2 | median)" -v bp="$(col "$row.peer" 2 | median)" 'BEGIN {
    printf "  peer/token: req/s %.3f, p99 %.3f, meshgate CPU per request %.3f (aim: req/s >= 0.97)\n", b/a, bp/ap, bc/ac}'
  # The same ratios taken within each round (the two runs back to back), then
  # the median: less swayed by load that comes and goes between rounds.
  paired() { paste <(col "$row.token" "$1") <(col "$row.peer" "$1") | awk '{print $2 / $1}' | median | xargs printf '%.3f'; }
  echo "  peer/token within each round, median: req/s $(paired 1), meshgate CPU per request $(paired 3), wireguard-go CPU per request $(paired 4) (the last should be 1: the tunnel's work is the same)"
done
