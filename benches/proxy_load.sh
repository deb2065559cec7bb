#!/usr/bin/env bash
# meshgate --upstream against nginx, haproxy and Caddy in front of the same bare
# axum upstream, next to the leanest proxy hyper allows
# (examples/bare_hyper_proxy.rs: no header rules, no auth, one upstream
# connection per client connection: what the HTTP stack alone costs), and
# meshgate's own /healthz next to a bare axum hello-world (the same crate
# versions).
#
# Two modes:
#   pinned    every server under test on CPU 0 with one worker each
#             (TOKIO_WORKER_THREADS=1, worker_processes 1, nbthread 1,
#             GOMAXPROCS=1); wrk and the upstream on CPU 1. The per-core cost.
#   unpinned  everyone with their defaults, anywhere.
#   single    unpinned, but one worker each (as pinned): meshgate's p99 with
#             its default workers must be no worse than with one.
# Per target and mode: requests/s, p50 and p99 latency (wrk --latency) and the
# server's CPU time per request (utime + stime from /proc/PID/stat, the process
# and its children), medians over the rounds, the order rotating every round so
# drift on a shared machine hits all alike. Then a streaming row: a 1 GiB
# download through each proxy (MB/s and CPU ms per GiB). Prints one table and
# meshgate's ratios to nginx and haproxy. Loopback only; every run is bounded;
# everything started here is stopped on exit.
#
#   benches/proxy_load.sh [ROUNDS] [SECONDS] [CONNECTIONS] [MODES]
#   (defaults: 3 rounds of 5 s, 64 connections, "pinned unpinned single")
#
# MESHGATE_BASE=/path/to/an/older/meshgate adds it as the target mg-base (an
# A/B of a change in one run). TARGETS="meshgate nginx" runs only those;
# STREAM=0 skips the streaming row.
#
# Needs wrk, curl, taskset and awk, and the proxies from Debian:
#   apt-get install -y wrk nginx-light haproxy caddy
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
secs=${2:-5}
conns=${3:-64}
modes=${4:-pinned unpinned single}
for tool in wrk curl taskset haproxy caddy; do
  command -v "$tool" >/dev/null || { echo "needs $tool: apt-get install -y wrk curl util-linux haproxy caddy" >&2; exit 1; }
done
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$nginx_bin" ] || { echo "needs nginx: apt-get install -y nginx-light" >&2; exit 1; }
[ "$(nproc)" -ge 2 ] || { echo "needs 2 CPUs (the pinned mode puts the proxy on CPU 0, wrk on CPU 1)" >&2; exit 1; }
cargo build --release --quiet --bin meshgate --example hello_axum --example bare_hyper_proxy
bin=${CARGO_TARGET_DIR:-target}/release
up_port=18811
declare -A port=([meshgate]=18812 [nginx]=18813 [bare-hyper]=18814 [haproxy]=18815 [caddy]=18816 [axum]=18817 [mg-healthz]=18818 [mg-base]=18819)
proxies=(meshgate nginx haproxy caddy bare-hyper)
targets=(meshgate nginx haproxy caddy bare-hyper axum mg-healthz)
base=${MESHGATE_BASE:-}
if [ -n "$base" ]; then proxies+=(mg-base); targets+=(mg-base); fi
if [ -n "${TARGETS:-}" ]; then
  read -ra targets <<<"$TARGETS"
  proxies=(); for t in "${targets[@]}"; do case $t in axum|mg-healthz) ;; *) proxies+=("$t") ;; esac; done
fi

tmp=$(mktemp -d)
pids=()
stop_all() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=()
}
cleanup() { stop_all; rm -rf "$tmp"; }
trap cleanup EXIT INT TERM

for p in $up_port "${port[@]}"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "port $p on 127.0.0.1 is taken; stop what listens there first" >&2
    exit 1
  fi
done

nginx_conf() { # workers
  mkdir -p "$tmp/ngx"
  cat >"$tmp/nginx.conf" <<EOF
worker_processes $1;
pid $tmp/nginx.pid;
error_log $tmp/nginx.error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $tmp/ngx/body;
  proxy_temp_path $tmp/ngx/proxy;
  fastcgi_temp_path $tmp/ngx/fastcgi;
  uwsgi_temp_path $tmp/ngx/uwsgi;
  scgi_temp_path $tmp/ngx/scgi;
  upstream app {
    server 127.0.0.1:$up_port;
    keepalive 128;
  }
  server {
    listen 127.0.0.1:${port[nginx]};
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_max_temp_file_size 0;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto http;
      proxy_set_header X-Forwarded-Host \$host;
    }
  }
}
EOF
}

haproxy_conf() { # "nbthread N" or ""
  cat >"$tmp/haproxy.cfg" <<EOF
global
  $1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend f
  bind 127.0.0.1:${port[haproxy]}
  option forwardfor
  http-request set-header X-Forwarded-Proto http
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  default_backend app
backend app
  server up 127.0.0.1:$up_port
EOF
}

caddy_conf() {
  mkdir -p "$tmp/caddy"
  cat >"$tmp/Caddyfile" <<EOF
{
  admin off
  auto_https off
}
http://127.0.0.1:${port[caddy]} {
  reverse_proxy 127.0.0.1:$up_port
}
EOF
}

declare -A pid_of
# Starts everything for one mode; pid_of[target] is the process whose CPU counts.
start_all() { # mode
  local on_proxy=() on_load=() workers_env=() ngx_workers=auto hap_threads="" gomax=()
  if [ "$1" = pinned ]; then on_proxy=(taskset -c 0); on_load=(taskset -c 1); fi
  if [ "$1" != unpinned ]; then
    workers_env=(TOKIO_WORKER_THREADS=1); ngx_workers=1; hap_threads="nbthread 1"; gomax=(GOMAXPROCS=1)
  fi
  env "${workers_env[@]}" "${on_load[@]}" "$bin/examples/hello_axum" 127.0.0.1:$up_port >/dev/null & pids+=($!)
  env "${workers_env[@]}" RUST_LOG=warn "${on_proxy[@]}" "$bin/meshgate" serve --bind loopback --no-loopback \
    --no-follow --port "${port[meshgate]}" --upstream http://127.0.0.1:$up_port >/dev/null & pids+=($!)
  pid_of[meshgate]=$!
  if [ -n "$base" ]; then
    env "${workers_env[@]}" RUST_LOG=warn "${on_proxy[@]}" "$base" serve --bind loopback --no-loopback \
      --no-follow --port "${port[mg-base]}" --upstream http://127.0.0.1:$up_port >/dev/null & pids+=($!)
    pid_of[mg-base]=$!
  fi
  env "${workers_env[@]}" RUST_LOG=warn "${on_proxy[@]}" "$bin/meshgate" serve --bind loopback --no-loopback \
    --no-follow --port "${port[mg-healthz]}" >/dev/null & pids+=($!)
  pid_of[mg-healthz]=$!
  env "${workers_env[@]}" "${on_proxy[@]}" "$bin/examples/bare_hyper_proxy" "127.0.0.1:${port[bare-hyper]}" \
    127.0.0.1:$up_port >/dev/null & pids+=($!)
  pid_of[bare-hyper]=$!
  env "${workers_env[@]}" "${on_proxy[@]}" "$bin/examples/hello_axum" "127.0.0.1:${port[axum]}" >/dev/null & pids+=($!)
  pid_of[axum]=$!
  nginx_conf $ngx_workers
  "${on_proxy[@]}" "$nginx_bin" -c "$tmp/nginx.conf" -g 'daemon off;' 2>"$tmp/nginx.stderr" & pids+=($!)
  pid_of[nginx]=$!
  haproxy_conf "$hap_threads"
  "${on_proxy[@]}" haproxy -db -f "$tmp/haproxy.cfg" >"$tmp/haproxy.log" 2>&1 & pids+=($!)
  pid_of[haproxy]=$!
  caddy_conf
  env "${gomax[@]}" XDG_DATA_HOME="$tmp/caddy" XDG_CONFIG_HOME="$tmp/caddy" HOME="$tmp/caddy" \
    "${on_proxy[@]}" caddy run --adapter caddyfile --config "$tmp/Caddyfile" >"$tmp/caddy.log" 2>&1 & pids+=($!)
  pid_of[caddy]=$!
  for t in "${targets[@]}"; do
    local path=/healthz ok=
    for _ in $(seq 100); do
      if curl -fsS -o /dev/null "http://127.0.0.1:${port[$t]}$path" 2>/dev/null; then ok=1; break; fi
      sleep 0.1
    done
    [ -n "$ok" ] || { echo "$t does not answer on port ${port[$t]}; logs in $tmp" >&2; cat "$tmp"/*.log "$tmp/nginx.stderr" >&2; exit 1; }
  done
}

# One wrk run: "req/s p50_ms p99_ms requests".
run() { # mode url
  local wrk=(wrk -t2)
  [ "$1" = pinned ] && wrk=(taskset -c 1 wrk -t1)
  "${wrk[@]}" -c"$conns" -d"${secs}s" --latency "$2" | awk '
    function ms(v) { x = v + 0; if (v ~ /us$/) return x / 1000; if (v ~ /ms$/) return x; if (v ~ /s$/) return x * 1000; return x }
    /requests in/ {n=$1}
    /Requests\/sec/ {rps=$2}
    $1=="50%" {p50=ms($2)}
    $1=="99%" {p99=ms($2)}
    /Non-2xx|Socket errors/ {err=err $0 " "}
    END {printf "%s %.3f %.3f %s\n", rps, p50, p99, n; if (err != "") print "errors: " err > "/dev/stderr"}'
}
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
# CPU ticks (user + system) of a process and its children (nginx's workers).
ticks() {
  local t=0 p
  for p in "$1" $(pgrep -P "$1"); do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done
  echo "$t"
}
hz=$(getconf CLK_TCK)

declare -A rps p50 p99 cpu mbs scpu rss
for mode in $modes; do
  start_all "$mode"
  n_t=${#targets[@]}
  for i in $(seq 0 $((rounds - 1))); do
    for j in $(seq 0 $((n_t - 1))); do
      t=${targets[$(( (i + j) % n_t ))]}
      t0=$(ticks "${pid_of[$t]}")
      read -r r a b n < <(run "$mode" "http://127.0.0.1:${port[$t]}/healthz")
      t1=$(ticks "${pid_of[$t]}")
      rps[$mode,$t]+="$r "; p50[$mode,$t]+="$a "; p99[$mode,$t]+="$b "
      cpu[$mode,$t]+="$(awk -v t=$((t1 - t0)) -v n="$n" -v hz="$hz" 'BEGIN {printf "%.2f", t / hz / n * 1e6}') "
    done
  done
  # Streaming: 1 GiB through each proxy, curl (on CPU 1 when pinned) to /dev/null.
  dl=(curl); [ "$mode" = pinned ] && dl=(taskset -c 1 curl)
  for i in $(seq 0 $((rounds - 1))); do
    [ "${STREAM:-1}" = 0 ] && break
    for j in $(seq 0 $((${#proxies[@]} - 1))); do
      t=${proxies[$(( (i + j) % ${#proxies[@]} ))]}
      t0=$(ticks "${pid_of[$t]}")
      read -r size took < <("${dl[@]}" -fsS -o /dev/null -w '%{size_download} %{time_total}\n' "http://127.0.0.1:${port[$t]}/big")
      t1=$(ticks "${pid_of[$t]}")
      [ "$size" = 1073741824 ] || echo "$t streamed $size bytes, not 1 GiB" >&2
      mbs[$mode,$t]+="$(awk -v s="$size" -v d="$took" 'BEGIN {printf "%.0f", s / d / 1e6}') "
      scpu[$mode,$t]+="$(awk -v t=$((t1 - t0)) -v hz="$hz" -v s="$size" 'BEGIN {printf "%.0f", t / hz * 1000 / (s / 2^30)}') "
    done
  done
  rss[$mode]=$(awk '/VmRSS/ {print $2 " " $3}' "/proc/${pid_of[meshgate]}/status")
  stop_all
done

med() { printf '%s\n' $1 | median; }
echo "wrk -c$conns, ${rounds} rounds x ${secs}s each, GET /healthz (proxies: of the bare axum upstream); $(nproc) CPUs"
echo "pinned: servers on CPU 0 with one worker each, wrk -t1 and the upstream on CPU 1; unpinned: defaults, wrk -t2"
echo "cpu us/req: the server's own CPU time (process and children) per request; stream: 1 GiB GET, MB/s and CPU ms per GiB"
for mode in $modes; do
  echo
  printf '%-9s %-11s %9s %8s %8s %8s %9s %9s   %s\n' "$mode" target "req/s" "p50 ms" "p99 ms" "cpu us" "stream" "cpu ms/G" "req/s runs"
  for t in "${targets[@]}"; do
    m_mbs=-; m_scpu=-
    if [ -n "${mbs[$mode,$t]:-}" ]; then m_mbs=$(med "${mbs[$mode,$t]}"); m_scpu=$(med "${scpu[$mode,$t]}"); fi
    printf '%-9s %-11s %9.0f %8.3f %8.3f %8.2f %9s %9s   %s\n' "" "$t" "$(med "${rps[$mode,$t]}")" \
      "$(med "${p50[$mode,$t]}")" "$(med "${p99[$mode,$t]}")" "$(med "${cpu[$mode,$t]}")" "$m_mbs" "$m_scpu" "${rps[$mode,$t]}"
  done
  others=(); for o in nginx haproxy mg-base; do [ -n "${rps[$mode,$o]:-}" ] && [ -n "${rps[$mode,meshgate]:-}" ] && others+=("$o"); done
  for other in "${others[@]}"; do
    awk -v r1="$(med "${rps[$mode,meshgate]}")" -v r2="$(med "${rps[$mode,$other]}")" \
      -v c1="$(med "${cpu[$mode,meshgate]}")" -v c2="$(med "${cpu[$mode,$other]}")" \
      -v q1="$(med "${p99[$mode,meshgate]}")" -v q2="$(med "${p99[$mode,$other]}")" \
      -v m1="$(med "${mbs[$mode,meshgate]:-0}")" -v m2="$(med "${mbs[$mode,$other]:-0}")" \
      -v s1="$(med "${scpu[$mode,meshgate]:-0}")" -v s2="$(med "${scpu[$mode,$other]:-0}")" -v o="$other" -v mode="$mode" '
      function r(a, b) { return b > 0 ? sprintf("%.3fx", a / b) : "-" }
      BEGIN {
      printf "%-9s meshgate/%-7s req/s %s  cpu/req %s  p99 %s  stream MB/s %s  stream cpu %s\n", mode, o, r(r1, r2), r(c1, c2), r(q1, q2), r(m1, m2), r(s1, s2) }'
  done
  [ -z "${rps[$mode,mg-healthz]:-}" ] || [ -z "${rps[$mode,axum]:-}" ] || awk -v r1="$(med "${rps[$mode,mg-healthz]}")" -v r2="$(med "${rps[$mode,axum]}")" \
    -v c1="$(med "${cpu[$mode,mg-healthz]}")" -v c2="$(med "${cpu[$mode,axum]}")" -v mode="$mode" 'BEGIN {
    printf "%-9s meshgate /healthz / bare axum: req/s %.3fx  cpu/req %.3fx\n", mode, r1/r2, c1/c2 }'
  echo "$mode meshgate (proxy) RSS after load: ${rss[$mode]}"
done
if [ -n "${p99[unpinned,meshgate]:-}" ] && [ -n "${p99[single,meshgate]:-}" ]; then
  awk -v a="$(med "${p99[unpinned,meshgate]}")" -v b="$(med "${p99[single,meshgate]}")" 'BEGIN {
    printf "meshgate p99, default workers / one worker (both unpinned): %.3fx (aim: at most 1)\n", a/b }'
fi
