#!/usr/bin/env python3
"""TCP forwarding: meshgate's `tcp` service against haproxy (`mode tcp`) and
socat, in front of the same upstream, one core each.

Every proxy runs pinned to CPU 0 with one worker (TOKIO_WORKER_THREADS=1,
haproxy nbthread 1; socat forks a process per connection); the upstream and
the clients run on CPU 1. Per proxy, in one run:

- bulk: 1 GiB sent through to a discarding upstream; MB/s, and the proxy's
  CPU time per GiB (utime + stime from /proc/PID/stat, children included);
- short connections: connect, one 100-byte exchange with an echo upstream,
  close, from 4 client threads for a few seconds; connections/s, and the
  proxy's CPU time per connection (the clients and the upstream share CPU 1,
  so connections/s is often bound by them; CPU per connection is the
  proxy's own cost);
- ping-pong: 1 byte back and forth on one connection; the p99 round trip,
  and what the proxy adds to the upstream's own p99 (a direct row).

Every target runs through ROUNDS rounds, the order rotating each round so
drift on a shared machine hits all alike; the table shows medians. Rows:

- meshgate: the binary built here (plain sockets spliced on Linux);
- mg-copy: the same binary with MESHGATE_TCP_SPLICE=off (bytes copied
  through user space): copy against splice in the same run;
- mg-base: MESHGATE_BASE=/path/to/an/older/meshgate, when set (an A/B of a
  change in one run);
- haproxy, socat.

Prints one table and meshgate's ratios to haproxy, to mg-copy and to
mg-base. Loopback only, every phase bounded, everything started here
stopped on exit.

    benches/tcp_load.py [GIB] [SECONDS] [PINGS] [ROUNDS]
    (defaults: 1 GiB, 3 s, 5000 pings, 3 rounds)

MESHGATE_BIN=/path/to/meshgate tests that binary instead of building one
here. TARGETS="meshgate mg-copy" runs only those (haproxy is needed for its
ratios). Needs haproxy, socat and taskset (apt-get install -y haproxy socat
util-linux).
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
ROUNDS = int(sys.argv[4]) if len(sys.argv) > 4 else 3
DISCARD, ECHO = 19701, 19702
PORTS = {
    "meshgate": (19711, 19712),
    "mg-copy": (19741, 19742),
    "mg-base": (19751, 19752),
    "haproxy": (19721, 19722),
    "socat": (19731, 19732),
}
# The binary under test: MESHGATE_BIN, else the release build made here.
MESHGATE = os.environ.get("MESHGATE_BIN") or os.path.join(
    os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "meshgate"
)
# Each meshgate its own status port.
STATUS_PORT = {"meshgate": 19710, "mg-copy": 19740, "mg-base": 19750}
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
    if name in STATUS_PORT:
        binary = MESHGATE
        if name == "mg-base":
            binary = os.environ["MESHGATE_BASE"]
        env.pop("MESHGATE_TCP_SPLICE", None)
        if name == "mg-copy":
            env["MESHGATE_TCP_SPLICE"] = "off"
        cmd = [binary, "serve", "--port", str(STATUS_PORT[name]), "--no-follow",
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


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def main():
    for tool in ("haproxy", "socat", "taskset"):
        need(tool)
    if os.cpu_count() < 2:
        sys.exit("needs 2 CPUs (the proxy on CPU 0, the rest on CPU 1)")
    names = ["meshgate", "mg-copy", "haproxy", "socat"]
    base = os.environ.get("MESHGATE_BASE")
    if base:
        if not os.access(base, os.X_OK):
            sys.exit(f"MESHGATE_BASE={base}: not an executable file; point it at an older meshgate binary")
        names.insert(2, "mg-base")
    if os.environ.get("TARGETS"):
        wanted = os.environ["TARGETS"].split()
        unknown = [t for t in wanted if t not in PORTS]
        if unknown:
            sys.exit(f"TARGETS: unknown {' '.join(unknown)}; choose among {' '.join(PORTS)}")
        names = [n for n in names if n in wanted]
    if not os.environ.get("MESHGATE_BIN"):
        subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "meshgate"], cwd=ROOT, check=True)
    pin(1)
    upstream()
    wait_port(DISCARD)
    wait_port(ECHO)
    direct = []
    runs = {n: [] for n in names}
    procs = {}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for name in names:
                procs[name] = start(name, tmp)
            for r in range(ROUNDS):
                direct.append(pingpong(ECHO))
                k = r % len(names)
                for name in names[k:] + names[:k]:
                    p = procs[name]
                    b, e = PORTS[name]
                    c0 = proc_cpu(p)
                    mbs = bulk(b)
                    cpu_per_gib = (proc_cpu(p) - c0) / GIB * 1000
                    c0, t0 = proc_cpu(p), time.time()
                    cps = short(e)
                    us_per_conn = (proc_cpu(p) - c0) / (cps * (time.time() - t0)) * 1e6
                    p99 = pingpong(e)
                    runs[name].append((mbs, cpu_per_gib, cps, us_per_conn, p99))
                    print(f"round {r + 1} {name}: {mbs:.0f} MB/s, {cpu_per_gib:.0f} ms/GiB, {cps:.0f} conn/s, "
                          f"{us_per_conn:.0f} µs/conn, p99 {p99:.1f} µs", file=sys.stderr, flush=True)
        finally:
            for p in procs.values():
                stop(p)
    direct_p99 = median(direct)
    rows = {n: tuple(median([run[i] for run in runs[n]]) for i in range(5)) for n in names}
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{ROUNDS} rounds, medians; load average at the end {load}")
    print(f"{'target':<10} {'bulk MB/s':>10} {'CPU ms/GiB':>11} {'short conn/s':>13} {'CPU µs/conn':>12} "
          f"{'p99 1B µs':>10} {'added p99 µs':>13}")
    print(f"{'direct':<10} {'':>10} {'':>11} {'':>13} {'':>12} {direct_p99:>10.1f} {0:>13.1f}")
    for name, (mbs, cpu, cps, us, p99) in rows.items():
        print(f"{name:<10} {mbs:>10.0f} {cpu:>11.0f} {cps:>13.0f} {us:>12.0f} {p99:>10.1f} {p99 - direct_p99:>13.1f}")
    if "meshgate" not in rows:
        return
    mg = rows["meshgate"]
    for other in ("haproxy", "mg-copy", "mg-base"):
        if other in rows:
            o = rows[other]
            added = (mg[4] - direct_p99) / (o[4] - direct_p99) if o[4] > direct_p99 else float("nan")
            print(
                f"meshgate/{other}: bulk {mg[0] / o[0]:.2f}x MB/s, {mg[1] / o[1]:.2f}x CPU/GiB, "
                f"{mg[2] / o[2]:.2f}x conn/s, {mg[3] / o[3]:.2f}x CPU/conn, {mg[4] / o[4]:.2f}x p99 ({added:.2f}x added)"
            )


if __name__ == "__main__":
    main()
