"""Follow latency and flap leaks, measured inside a private network namespace.

Run through benches/follow_latency.sh (which builds meshgate and enters an
unprivileged user + network namespace). This script holds a TUN called wg0 open
(so it has carrier, like a live VPN), starts `meshgate serve --bind wireguard`,
and then:

1. latency: N times, `ip addr add 10.8.0.1/24 dev wg0` and the time until a TCP
   connect to 10.8.0.1:PORT succeeds; then `ip addr del` and wait until the
   listener is gone (read from /proc/net/tcp). Reports median and p99, and the
   cost of one `ip` invocation alone for comparison.
2. flaps: CYCLES link down/up cycles of wg0 (address kept), 2 ms apart, while a
   client hammers the loopback door on one keep-alive connection; then the
   failed loopback requests (must be 0) and the gateway's open file descriptors
   and RSS against their level before.

All traffic stays inside the namespace; every loop is bounded.
"""

import http.client, os, socket, statistics, struct, subprocess, sys, threading, time

from netns import connects, hold_tun, rss_kb, sh, stop, wait

MESHGATE = sys.argv[1]
N = int(sys.argv[2]) if len(sys.argv) > 2 else 300
CYCLES = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
PORT = 18789
ADDR = "10.8.0.1"


def listening(addr, port):
    """True if something LISTENs on addr:port (IPv4), from /proc/net/tcp."""
    want = "%08X:%04X" % (struct.unpack("<I", socket.inet_aton(addr))[0], port)
    with open("/proc/net/tcp") as f:
        next(f)
        return any(l.split()[1] == want and l.split()[3] == "0A" for l in f)


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


sh("ip", "link", "set", "lo", "up")
tun = hold_tun("wg0")
sh("ip", "link", "set", "wg0", "up")
tokfile = "/tmp/meshgate-bench-token-%d" % os.getpid()
with open(tokfile, "w") as f:
    f.write("bench-token-0123456789\n")
os.chmod(tokfile, 0o600)
gw = subprocess.Popen([MESHGATE, "serve", "--bind", "wireguard", "--port", str(PORT), "--token-file", tokfile],
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "error"})
try:
    assert wait(lambda: listening("127.0.0.1", PORT)), "meshgate did not start"

    # The cost of running `ip` at all, for reference.
    ip_only = []
    for _ in range(50):
        t0 = time.perf_counter()
        sh("ip", "-4", "addr", "show", "dev", "wg0")
        ip_only.append((time.perf_counter() - t0) * 1000)

    lat = []
    for i in range(N):
        t0 = time.perf_counter()
        sh("ip", "addr", "add", ADDR + "/24", "dev", "wg0")
        assert wait(lambda: connects(ADDR, PORT)), f"round {i}: no listener on {ADDR}"
        lat.append((time.perf_counter() - t0) * 1000)
        sh("ip", "addr", "del", ADDR + "/24", "dev", "wg0")
        assert wait(lambda: not listening(ADDR, PORT)), f"round {i}: listener stayed"
    lat.sort()
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    print(f"attach latency (ip addr add -> first TCP connect), {N} rounds: "
          f"median {statistics.median(lat):.2f} ms, p99 {p99:.2f} ms, min {lat[0]:.2f} ms, max {lat[-1]:.2f} ms")
    print(f"one `ip` invocation alone: median {statistics.median(ip_only):.2f} ms")

    # Flaps: address present, link down/up.
    sh("ip", "addr", "add", ADDR + "/24", "dev", "wg0")
    assert wait(lambda: connects(ADDR, PORT))
    time.sleep(0.5)
    fd0, rss0 = fds(gw.pid), rss_kb(gw.pid)
    hammer = {"ok": 0, "failed": 0, "stop": False}

    def hammer_loopback():
        c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=5)
        end = time.time() + 120
        while not hammer["stop"] and time.time() < end:
            try:
                c.request("GET", "/healthz")
                r = c.getresponse()
                r.read()
                hammer["ok" if r.status == 200 else "failed"] += 1
            except Exception:
                hammer["failed"] += 1
                c.close()

    t = threading.Thread(target=hammer_loopback)
    t.start()
    batch = "".join("link set wg0 down\nlink set wg0 up\n" for _ in range(CYCLES))
    t0 = time.perf_counter()
    # Feed the batch in small slices so the gateway sees real flapping, not one burst.
    lines = batch.splitlines(keepends=True)
    for k in range(0, len(lines), 2):
        subprocess.run(["ip", "-batch", "-"], input="".join(lines[k:k + 2]), text=True, check=True)
        time.sleep(0.002)
    flap_s = time.perf_counter() - t0
    hammer["stop"] = True
    t.join()
    assert wait(lambda: connects(ADDR, PORT), 10), "no listener after the flaps"
    time.sleep(1.0)
    fd1, rss1 = fds(gw.pid), rss_kb(gw.pid)
    print(f"{CYCLES} down/up cycles in {flap_s:.1f} s: open fds {fd0} -> {fd1}, RSS {rss0} kB -> {rss1} kB")
    print(f"loopback requests during the flaps: {hammer['ok']} ok, {hammer['failed']} failed")
    print(f"gateway alive after flaps: {gw.poll() is None}")
finally:
    stop(gw)
    os.unlink(tokfile)
    os.close(tun)
