#!/usr/bin/env bash
# The same wrk load against a bare axum upstream directly, meshgate --upstream in
# front of it, nginx (proxy_pass with a keep-alive upstream block) in front of
# it, and the leanest proxy hyper allows (examples/bare_hyper_proxy.rs: no header
# rules, no auth, one upstream connection per client connection), which shows
# what the HTTP stack alone costs. Prints req/s, p99 latency and the proxy's CPU
# time per request for each (medians over the rounds, the order rotating every
# round so drift on a shared machine hits all alike) and meshgate's ratios to
# nginx. Loopback only; every run is bounded; everything started here is
# stopped on exit.
#
#   benches/proxy_load.sh [ROUNDS] [SECONDS] [CONNECTIONS]   (defaults: 5 rounds of 5 s, 64 connections)
#
# Needs wrk, nginx (nginx-light is enough) and awk.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
secs=${2:-5}
conns=${3:-64}
command -v wrk >/dev/null || { echo "needs wrk: apt-get install wrk" >&2; exit 1; }
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$nginx_bin" ] || { echo "needs nginx: apt-get install nginx-light" >&2; exit 1; }
cargo build --release --quiet --bin meshgate --example hello_axum --example bare_hyper_proxy
mg=target/release/meshgate
hello=target/release/examples/hello_axum
up_port=18811
mg_port=18812
ngx_port=18813
bare_port=18814

tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -s "$tmp/nginx.pid" ]; then kill "$(cat "$tmp/nginx.pid" 2>/dev/null)" 2>/dev/null || true; fi
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

for port in $up_port $mg_port $ngx_port $bare_port; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port on 127.0.0.1 is taken; stop what listens there first" >&2
    exit 1
  fi
done

"$hello" 127.0.0.1:$up_port >/dev/null & pids+=($!)
RUST_LOG=warn "$mg" serve --bind loopback --no-loopback --no-follow --port $mg_port \
  --upstream http://127.0.0.1:$up_port >/dev/null & pids+=($!)
target/release/examples/bare_hyper_proxy 127.0.0.1:$bare_port 127.0.0.1:$up_port >/dev/null & pids+=($!)

mkdir -p "$tmp/ngx"
cat >"$tmp/nginx.conf" <<EOF
worker_processes auto;
pid $tmp/nginx.pid;
error_log $tmp/error.log warn;
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
    listen 127.0.0.1:$ngx_port;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto http;
      proxy_set_header X-Forwarded-Host \$host;
    }
  }
}
EOF
"$nginx_bin" -c "$tmp/nginx.conf" -g 'daemon off;' 2>"$tmp/nginx.stderr" & pids+=($!)

# Wait until all three answer (at most 10 s).
for url in "http://127.0.0.1:$up_port/healthz" "http://127.0.0.1:$mg_port/healthz" "http://127.0.0.1:$ngx_port/healthz" "http://127.0.0.1:$bare_port/healthz"; do
  port=${url#http://127.0.0.1:}; port=${port%%/*}
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
  body=$(wrk -t1 -c1 -d1s "$url" | awk '/Non-2xx/ {print "bad"}')
  [ -z "$body" ] || { echo "$url answers non-2xx; see $tmp" >&2; cat "$tmp/nginx.stderr" >&2; exit 1; }
done

# One run: "req/s p99_ms requests".
run() {
  wrk -t2 -c"$conns" -d"${secs}s" --latency "$1" | awk '
    /requests in/ {n=$1}
    /Requests\/sec/ {rps=$2}
    $1=="99%" {v=$2; ms=v+0; if (v ~ /us$/) ms/=1000; else if (v ~ /ms$/) ms=ms; else if (v ~ /s$/) ms*=1000; p99=ms}
    /Non-2xx|Socket errors/ {err=err $0 " "}
    END {printf "%s %.3f %s\n", rps, p99, n; if (err != "") print "errors: " err > "/dev/stderr"}'
}
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
# CPU ticks (user + system) of a process and its children (nginx's workers).
ticks() {
  local t=0 p
  for p in "$1" $(pgrep -P "$1"); do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done
  echo "$t"
}
hz=$(getconf CLK_TCK)

names=(direct meshgate nginx bare-hyper)
urls=("http://127.0.0.1:$up_port/healthz" "http://127.0.0.1:$mg_port/healthz" "http://127.0.0.1:$ngx_port/healthz" "http://127.0.0.1:$bare_port/healthz")
# The process whose CPU time counts for each target (the upstream's for direct).
cpu_pid=("${pids[0]}" "${pids[1]}" "${pids[3]}" "${pids[2]}")
declare -A rps p99 cpu
for i in $(seq 0 $((rounds - 1))); do
  for j in 0 1 2 3; do
    k=$(( (i + j) % 4 ))
    t0=$(ticks "${cpu_pid[$k]}")
    read -r r p n < <(run "${urls[$k]}")
    t1=$(ticks "${cpu_pid[$k]}")
    rps[${names[$k]}]+="$r "
    p99[${names[$k]}]+="$p "
    cpu[${names[$k]}]+="$(awk -v t=$((t1 - t0)) -v n="$n" -v hz="$hz" 'BEGIN {printf "%.1f", t / hz / n * 1e6}') "
  done
done

echo "rounds: $rounds x ${secs}s, wrk -t2 -c$conns, GET /healthz of a bare axum app ($(nproc) CPUs, all on this host)"
echo "cpu us/req: CPU time of the proxy process (for direct: of the upstream) per request"
printf '%-11s %11s %12s %11s   %s\n' target "req/s(med)" "p99 ms(med)" "cpu us/req" "req/s runs"
for n in "${names[@]}"; do
  mr=$(printf '%s\n' ${rps[$n]} | median)
  mp=$(printf '%s\n' ${p99[$n]} | median)
  mc=$(printf '%s\n' ${cpu[$n]} | median)
  printf '%-11s %11.0f %12.3f %11.1f   %s\n' "$n" "$mr" "$mp" "$mc" "${rps[$n]}"
  key=${n//-/_}
  eval "med_rps_$key=$mr; med_p99_$key=$mp; med_cpu_$key=$mc"
done
awk -v a="$med_rps_meshgate" -v b="$med_rps_nginx" -v c="$med_p99_meshgate" -v d="$med_p99_nginx" -v e="$med_rps_direct" \
  -v f="$med_rps_bare_hyper" -v g="$med_cpu_meshgate" -v h="$med_cpu_nginx" -v k="$med_cpu_bare_hyper" 'BEGIN {
  printf "meshgate/nginx throughput: %.3fx   p99 meshgate/nginx: %.3fx (below 1 is better)\n", a/b, c/d
  printf "bare-hyper/nginx throughput: %.3fx   meshgate/bare-hyper: %.3fx\n", f/b, a/f
  printf "cpu per request, meshgate/nginx: %.2fx   bare-hyper/nginx: %.2fx\n", g/h, k/h
  printf "meshgate/direct throughput: %.3f   nginx/direct: %.3f\n", a/e, b/e
}'
echo "meshgate RSS after load: $(awk '/VmRSS/ {print $2, $3}' /proc/${pids[1]}/status)"
