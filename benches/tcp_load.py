#!/usr/bin/env python3
"""TCP forwarding: meshgate's `tcp` service against haproxy (`mode tcp`) and
socat, in front of the same upstream, one core each.

Every proxy runs pinned to CPU 0 with one worker (TOKIO_WORKER_THREADS=1,
haproxy nbthread 1; socat forks a process per connection); the upstream and
the clients run on CPU 1. Per proxy, in one run:

- bulk: 1 GiB sent through to a discarding upstream; MB/s, and the proxy's
  CPU time per GiB (utime + stime from /proc/PID/stat, children included);
- short connections: connect, one 100-byte exchange with an echo upstream,
  close, from 4 client threads for a few seconds; connections/s;
- ping-pong: 1 byte back and forth on one connection; the p99 round trip,
  and what the proxy adds to the upstream's own p99 (a direct row).

Prints one table and meshgate's ratios to haproxy. Loopback only, every phase
bounded, everything started here stopped on exit.

    benches/tcp_load.py [GIB] [SECONDS] [PINGS]   (defaults: 1 GiB, 3 s, 5000)

Needs haproxy, socat and taskset (apt-get install -y haproxy socat util-linux).
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIB = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
SECS = float(sys.argv[2]) if len(sys.argv) > 2 else 3.0
PINGS = int(sys.argv[3]) if len(sys.argv) > 3 else 5000
DISCARD, ECHO = 19701, 19702
PORTS = {"meshgate": (19711, 19712), "haproxy": (19721, 19722), "socat": (19731, 19732)}
CLK = os.sysconf("SC_CLK_TCK")


def need(tool):
    if not shutil.which(tool):
        sys.exit(f"needs {tool}: apt-get install -y haproxy socat util-linux")


def pin(cpu):
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError:
        pass


def upstream():
    """Discard on DISCARD, echo on ECHO, a thread per connection."""

    def serve(port, echo):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen(1024)

        def one(c):
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            buf = bytearray(1 << 20)
            try:
                while True:
                    n = c.recv_into(buf)
                    if not n:
                        break
                    if echo:
                        c.sendall(memoryview(buf)[:n])
            except OSError:
                pass
            c.close()

        while True:
            c, _ = s.accept()
            threading.Thread(target=one, args=(c,), daemon=True).start()

    for port, echo in ((DISCARD, False), (ECHO, True)):
        threading.Thread(target=serve, args=(port, echo), daemon=True).start()


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime stime cutime cstime (fields 14-17, 1-based, after the name)
    return sum(int(x) for x in fields[11:15]) / CLK


def wait_port(port, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def start(name, tmp):
    bulk, echo = PORTS[name]
    env = dict(os.environ, TOKIO_WORKER_THREADS="1", RUST_LOG="warn")
    if name == "meshgate":
        binary = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "meshgate")
        cmd = [binary, "serve", "--port", "19710", "--no-follow",
               "--tcp", f"{bulk}=127.0.0.1:{DISCARD}", "--tcp", f"{echo}=127.0.0.1:{ECHO}"]
    elif name == "haproxy":
        cfg = os.path.join(tmp, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write(f"""global
  nbthread 1
  maxconn 4096
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
listen bulk
  bind 127.0.0.1:{bulk}
  server up 127.0.0.1:{DISCARD}
listen echo
  bind 127.0.0.1:{echo}
  option tcp-smart-connect
  server up 127.0.0.1:{ECHO}
""")
        cmd = ["haproxy", "-f", cfg]
    else:
        # Two socat listeners under one shell, so one pid counts both.
        cmd = ["sh", "-c",
               f"socat TCP-LISTEN:{bulk},bind=127.0.0.1,fork,reuseaddr,backlog=1024 TCP:127.0.0.1:{DISCARD} & "
               f"socat TCP-LISTEN:{echo},bind=127.0.0.1,fork,reuseaddr,backlog=1024 TCP:127.0.0.1:{ECHO} & wait"]
    p = subprocess.Popen(["taskset", "-c", "0"] + cmd, env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    if not (wait_port(bulk) and wait_port(echo)):
        stop(p)
        sys.exit(f"{name} did not start")
    return p


def stop(p):
    try:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(timeout=5)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def proc_cpu(p):
    """CPU seconds of the process group's processes (socat's shell, its
    listeners and their reaped children)."""
    total = 0.0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if os.getpgid(int(pid)) == p.pid:
                total += cpu_seconds(int(pid))
        except (OSError, IndexError, ValueError):
            pass
    return total


def bulk(port):
    total = int(GIB * (1 << 30))
    chunk = b"x" * (1 << 20)
    s = socket.create_connection(("127.0.0.1", port), 5)
    t = time.perf_counter()
    sent = 0
    while sent < total:
        s.sendall(chunk)
        sent += len(chunk)
    s.shutdown(socket.SHUT_WR)
    s.settimeout(60)
    s.recv(1)  # the upstream's close, through the proxy
    took = time.perf_counter() - t
    s.close()
    return sent / took / 1e6


def short(port):
    done = [0]
    stop_at = time.time() + SECS
    payload = b"y" * 100

    def loop():
        n = 0
        while time.time() < stop_at:
            try:
                s = socket.create_connection(("127.0.0.1", port), 5)
                s.sendall(payload)
                got = 0
                while got < 100:
                    b = s.recv(100 - got)
                    if not b:
                        break
                    got += len(b)
                s.close()
                n += 1
            except OSError:
                time.sleep(0.001)
        done[0] += n

    threads = [threading.Thread(target=loop) for _ in range(4)]
    t = time.time()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return done[0] / (time.time() - t)


def pingpong(port):
    s = socket.create_connection(("127.0.0.1", port), 5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    times = []
    for _ in range(PINGS):
        t = time.perf_counter()
        s.sendall(b"p")
        s.recv(1)
        times.append(time.perf_counter() - t)
    s.close()
    times.sort()
    return times[int(len(times) * 0.99)] * 1e6


def main():
    for tool in ("haproxy", "socat", "taskset"):
        need(tool)
    if os.cpu_count() < 2:
        sys.exit("needs 2 CPUs (the proxy on CPU 0, the rest on CPU 1)")
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "meshgate"], cwd=ROOT, check=True)
    pin(1)
    upstream()
    wait_port(DISCARD)
    wait_port(ECHO)
    direct_p99 = pingpong(ECHO)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("meshgate", "haproxy", "socat"):
            p = start(name, tmp)
            try:
                b, e = PORTS[name]
                c0 = proc_cpu(p)
                mbs = bulk(b)
                cpu_per_gib = (proc_cpu(p) - c0) / GIB * 1000
                cps = short(e)
                p99 = pingpong(e)
                rows.append((name, mbs, cpu_per_gib, cps, p99, p99 - direct_p99))
            finally:
                stop(p)
    print(f"{'target':<10} {'bulk MB/s':>10} {'CPU ms/GiB':>11} {'short conn/s':>13} {'p99 1B µs':>10} {'added p99 µs':>13}")
    print(f"{'direct':<10} {'':>10} {'':>11} {'':>13} {direct_p99:>10.1f} {0:>13.1f}")
    for name, mbs, cpu, cps, p99, added in rows:
        print(f"{name:<10} {mbs:>10.0f} {cpu:>11.0f} {cps:>13.0f} {p99:>10.1f} {added:>13.1f}")
    mg = rows[0]
    hp = rows[1]
    print(
        f"meshgate/haproxy: bulk {mg[1] / hp[1]:.2f}x MB/s, {mg[2] / hp[2]:.2f}x CPU/GiB, "
        f"{mg[3] / hp[3]:.2f}x conn/s, {mg[4] / hp[4]:.2f}x p99"
    )


if __name__ == "__main__":
    main()
