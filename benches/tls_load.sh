#!/usr/bin/env bash
# HTTPS against nginx with the same certificate (issue #15's speed targets):
#   1. keep-alive throughput of /healthz (wrk over TLS, HTTP/1.1, 64 connections),
#   2. new TLS 1.3 handshakes per second (openssl s_time -new: full handshakes,
#      one after another, no resumption),
#   3. proxying over HTTPS: meshgate --upstream against nginx proxy_pass (a
#      keep-alive upstream block, the same X-Forwarded-* headers meshgate adds)
#      in front of the same bare axum app (examples/hello_axum.rs, plain HTTP on
#      loopback, pinned with the client so the proxy has its core to itself);
#      keep-alive wrk to its /healthz (3-byte body),
# each server pinned to one core (taskset, when there are 2+ cores: server on
# core 0, client on core 1) with one worker (meshgate's runtime sizes itself to
# its affinity; nginx gets worker_processes 1). Medians over the rounds, the
# order alternating each round so drift on a shared machine hits both alike.
# P-256 ECDSA certificate made here with openssl; nginx keeps its TLS defaults
# (session tickets on, like rustls's; s_time -new resumes nothing either way). Loopback only; every run is
# bounded; everything started here is stopped on exit.
#
#   benches/tls_load.sh [ROUNDS] [SECONDS]     (defaults: 3 rounds of 5 s)
#
# Needs wrk, nginx (nginx-light is enough), openssl and taskset (util-linux).
# MESHGATE=path/to/meshgate and HELLO=path/to/hello_axum skip the cargo build.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
secs=${2:-5}
command -v wrk >/dev/null || { echo "needs wrk: apt-get install wrk" >&2; exit 1; }
command -v openssl >/dev/null || { echo "needs openssl: apt-get install openssl" >&2; exit 1; }
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$nginx_bin" ] || { echo "needs nginx: apt-get install nginx-light" >&2; exit 1; }
if [ -z "${MESHGATE:-}" ] || [ -z "${HELLO:-}" ]; then
  cargo build --release --quiet --bin meshgate --example hello_axum
  MESHGATE=${MESHGATE:-${CARGO_TARGET_DIR:-target}/release/meshgate}
  HELLO=${HELLO:-${CARGO_TARGET_DIR:-target}/release/examples/hello_axum}
fi
mg=$MESHGATE
mg_port=18821
ngx_port=18822
mgp_port=18823 # meshgate --upstream
ngxp_port=18824 # nginx proxy_pass
up_port=18825 # the app both proxy to (plain HTTP)

# One core for the server, another for the load, when there are two.
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  server="taskset -c 0"
  client="taskset -c 1"
else
  server=""
  client=""
fi

tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -s "$tmp/nginx.pid" ]; then kill "$(cat "$tmp/nginx.pid" 2>/dev/null)" 2>/dev/null || true; fi
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

for port in $mg_port $ngx_port $mgp_port $ngxp_port $up_port; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port on 127.0.0.1 is taken; stop what listens there first" >&2
    exit 1
  fi
done

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
  -keyout "$tmp/key.pem" -out "$tmp/cert.pem" -subj /CN=localhost \
  -addext subjectAltName=IP:127.0.0.1,DNS:localhost 2>/dev/null

RUST_LOG=warn $server "$mg" serve --bind loopback --no-follow --port $mg_port --tls-loopback \
  --tls-cert "$tmp/cert.pem" --tls-key "$tmp/key.pem" >/dev/null & pids+=($!)
mg_pid=$!
$client "$HELLO" 127.0.0.1:$up_port >/dev/null & pids+=($!)
RUST_LOG=warn $server "$mg" serve --bind loopback --no-follow --port $mgp_port --tls-loopback \
  --tls-cert "$tmp/cert.pem" --tls-key "$tmp/key.pem" --upstream http://127.0.0.1:$up_port >/dev/null & pids+=($!)
mgp_pid=$!

mkdir -p "$tmp/ngx"
cat >"$tmp/nginx.conf" <<EOF
worker_processes 1;
pid $tmp/nginx.pid;
error_log $tmp/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $tmp/ngx; proxy_temp_path $tmp/ngx; fastcgi_temp_path $tmp/ngx;
  uwsgi_temp_path $tmp/ngx; scgi_temp_path $tmp/ngx;
  server {
    listen 127.0.0.1:$ngx_port ssl http2;
    ssl_certificate $tmp/cert.pem;
    ssl_certificate_key $tmp/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    location = /healthz { default_type text/plain; return 200 "ok\n"; }
  }
  upstream app {
    server 127.0.0.1:$up_port;
    keepalive 128;
  }
  server {
    listen 127.0.0.1:$ngxp_port ssl http2;
    ssl_certificate $tmp/cert.pem;
    ssl_certificate_key $tmp/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto https;
      proxy_set_header X-Forwarded-Host \$host;
    }
  }
}
EOF
$server "$nginx_bin" -c "$tmp/nginx.conf" -g 'daemon off;' 2>"$tmp/nginx.err" & pids+=($!)
ngx_master=$!

for port in $mg_port $ngx_port $mgp_port $ngxp_port; do
  for _ in $(seq 100); do
    curl -sk --max-time 1 "https://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
    sleep 0.05
  done
  body=$(curl -sk --max-time 2 "https://127.0.0.1:$port/healthz")
  [ "$body" = "ok" ] || { echo "nothing answers https://127.0.0.1:$port/healthz" >&2; cat "$tmp/nginx.err" >&2; exit 1; }
done

ngx_pid=$(pgrep -P "$ngx_master" | head -1)
[ -n "$ngx_pid" ] || { echo "no nginx worker" >&2; exit 1; }
hz=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; } # pid -> user+system ticks, all threads
# Each run prints "RATE CPU_US_PER_UNIT": the rate the client saw and the
# server's CPU time per request or handshake (what "per core" means on a
# machine where the client may be the bottleneck or others share the cores).
rps() { # port pid -> requests/sec (keep-alive, TLS set up once per connection)
  local c0 out n
  c0=$(cpu "$2")
  out=$(timeout $((secs + 20)) $client wrk -t1 -c64 -d"${secs}s" "https://127.0.0.1:$1/healthz")
  # A refused or failed request is cheap and would flatter the rate.
  if grep -qE 'Non-2xx|Socket errors' <<<"$out"; then
    echo "wrk against https://127.0.0.1:$1/healthz had errors:" >&2
    grep -E 'Non-2xx|Socket errors' <<<"$out" >&2
    exit 1
  fi
  n=$(awk '/requests in/ {print $1}' <<<"$out")
  awk -v r="$(awk '/Requests\/sec/ {print $2}' <<<"$out")" -v t="$(( $(cpu "$2") - c0 ))" -v n="$n" -v hz="$hz" \
    'BEGIN {printf "%.0f %.1f\n", r, t / hz * 1e6 / n}'
}
hps() { # port pid -> full TLS 1.3 handshakes/sec, one client, back to back
  local c0 out n
  c0=$(cpu "$2")
  out=$(timeout $((secs + 20)) $client openssl s_time -connect "127.0.0.1:$1" -new -tls1_3 -time "$secs" 2>/dev/null)
  n=$(awk '/connections in .* real seconds/ {print $1; exit}' <<<"$out")
  awk -v r="$(awk '/connections in .* real seconds/ {print $1 / $4; exit}' <<<"$out")" \
    -v t="$(( $(cpu "$2") - c0 ))" -v n="$n" -v hz="$hz" 'BEGIN {printf "%.0f %.1f\n", r, t / hz * 1e6 / n}'
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

declare -A runs
for i in $(seq "$rounds"); do
  order="mg ngx"
  (( i % 2 )) || order="ngx mg"
  for who in $order; do
    if [ "$who" = mg ]; then port=$mg_port pid=$mg_pid; else port=$ngx_port pid=$ngx_pid; fi
    runs[$who.rps]+="$(rps "$port" "$pid")"$'\n'
  done
  for who in $order; do
    if [ "$who" = mg ]; then port=$mg_port pid=$mg_pid; else port=$ngx_port pid=$ngx_pid; fi
    runs[$who.hs]+="$(hps "$port" "$pid")"$'\n'
  done
  for who in $order; do
    if [ "$who" = mg ]; then port=$mgp_port pid=$mgp_pid; else port=$ngxp_port pid=$ngx_pid; fi
    runs[$who.px]+="$(rps "$port" "$pid")"$'\n'
  done
done
col() { grep . <<<"${runs[$1]}" | awk -v c="$2" '{print $c}'; }   # key column -> values
report() { # key-suffix label unit
  local m n mc nc
  m=$(col "mg.$1" 1 | median); n=$(col "ngx.$1" 1 | median)
  mc=$(col "mg.$1" 2 | median); nc=$(col "ngx.$1" 2 | median)
  echo "$2"
  echo "  meshgate: $(col "mg.$1" 1 | xargs)  median $m/s, server CPU $mc us/$3"
  echo "  nginx:    $(col "ngx.$1" 1 | xargs)  median $n/s, server CPU $nc us/$3"
  awk -v a="$m" -v b="$n" -v ac="$mc" -v bc="$nc" \
    'BEGIN {printf "  meshgate/nginx: rate %.3f, per core (CPU per %s, inverted) %.3f\n", a/b, "'"$3"'", bc/ac}'
  # The same ratios within each round (the two runs back to back), then the
  # median: less swayed by load that comes and goes between rounds.
  echo "  within each round, median: rate $(paste <(col "mg.$1" 1) <(col "ngx.$1" 1) | awk '{print $1 / $2}' | median | xargs printf '%.3f')," \
    "per core $(paste <(col "mg.$1" 2) <(col "ngx.$1" 2) | awk '{print $2 / $1}' | median | xargs printf '%.3f')"
}
echo "rounds: $rounds x ${secs}s; server ${server:-unpinned}, client and proxied app ${client:-unpinned}; P-256 certificate"
report rps "keep-alive /healthz (wrk -t1 -c64, HTTP/1.1 over TLS)" request
report px "proxy over HTTPS to a bare axum app (wrk -t1 -c64 keep-alive /healthz; upstream plain HTTP, keep-alive)" request
report hs "new TLS 1.3 handshakes (openssl s_time -new -tls1_3, one client, back to back)" handshake
