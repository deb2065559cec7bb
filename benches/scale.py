"""meshgate on a host with many interfaces, inside a private network namespace.

Run through benches/scale.sh (which builds meshgate and enters an unprivileged
user + network namespace). Steps, all bounded in time:

1. hold a TUN called wg0 open (carrier, like a live VPN) and start
   `meshgate serve --bind wireguard`; its RSS once settled is the "0 extra" figure.
2. make IFACES persistent TUN devices t0..tN-1 with one address each, in one
   `ip -b` batch; the RSS of the same serving process once it has followed them
   is the "N interfaces" figure (the difference per interface is printed), and
   that of a second one started now is the "started with them" figure.
3. `meshgate explain --bind auto` against `ip -br addr` with hyperfine -N.
4. attach latency, ROUNDS times: `ip addr add 10.8.0.1/24 dev wg0`, time until a
   TCP connect to it succeeds (the client polls every 0.2 ms); then delete it
   and wait until the listener is gone (/proc/net/tcp). Median and p99.
5. a burst of BURST address changes in one `ip -b` batch: addresses come and go
   on the t* interfaces, and a few on wg0 (some stay). The serving process's
   utime+stime (/proc/PID/stat) across the burst until it settles, and the
   check that it listens on exactly 127.0.0.1 and wg0's remaining addresses.
"""

import json, os, statistics, subprocess, sys, tempfile, time

from netns import connects, hold_tun, listeners, rss_kb, sh, stop, wait

MESHGATE = sys.argv[1]
IFACES = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 200
BURST = int(sys.argv[4]) if len(sys.argv) > 4 else 10000
PORT = 18790
ADDR = "10.8.0.1"
TCK = os.sysconf("SC_CLK_TCK")


def batch(lines):
    subprocess.run(["ip", "-b", "-"], input="".join(l + "\n" for l in lines), text=True, check=True)


def cpu_ms(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / TCK  # utime, stime


def settle(pid, quiet=0.3, timeout=20.0):
    """Waits until the process used no CPU for `quiet` seconds."""
    end = time.time() + timeout
    last = cpu_ms(pid)
    while time.time() < end:
        time.sleep(quiet)
        now = cpu_ms(pid)
        if now == last:
            return
        last = now


def iface_addr(i):
    return f"10.{100 + i // 250}.{i % 250}.1"


sh("ip", "link", "set", "lo", "up")
tun = hold_tun("wg0")
sh("ip", "link", "set", "wg0", "up")
tokfile = tempfile.NamedTemporaryFile("w", delete=False, prefix="meshgate-scale-token-")
tokfile.write("bench-token-0123456789\n")
tokfile.close()
os.chmod(tokfile.name, 0o600)
gw = subprocess.Popen([MESHGATE, "serve", "--bind", "wireguard", "--port", str(PORT), "--token-file", tokfile.name],
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "error"})
try:
    assert wait(lambda: "127.0.0.1" in listeners(PORT), 10), "meshgate did not start"
    settle(gw.pid)
    time.sleep(1.0)
    rss0 = rss_kb(gw.pid)

    t0 = time.perf_counter()
    lines = []
    for i in range(IFACES):
        lines += [f"tuntap add mode tun name t{i}", f"link set t{i} up", f"addr add {iface_addr(i)}/24 dev t{i}"]
    batch(lines)
    made_s = time.perf_counter() - t0
    settle(gw.pid)
    time.sleep(1.0)
    rss1 = rss_kb(gw.pid)
    # A second serving process, started on the host that already has them.
    gw2 = subprocess.Popen([MESHGATE, "serve", "--bind", "wireguard", "--port", str(PORT + 1), "--token-file",
                            tokfile.name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           env={**os.environ, "RUST_LOG": "error"})
    try:
        assert wait(lambda: "127.0.0.1" in listeners(PORT + 1), 10), "the second meshgate did not start"
        settle(gw2.pid)
        time.sleep(1.0)
        rss_started = rss_kb(gw2.pid)
    finally:
        stop(gw2)
    n = len(subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout.splitlines())

    # explain against ip, side by side.
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run(["hyperfine", "-N", "--warmup", "10", "--runs", "100", "--style", "none", "--export-json",
                        out.name, "--command-name", "explain", f"{MESHGATE} explain --bind auto",
                        "--command-name", "ip", "ip -br addr"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        r = json.load(open(out.name))["results"]
    m_explain, m_ip = r[0]["median"] * 1000, r[1]["median"] * 1000

    # Attach latency.
    lat = []
    for i in range(ROUNDS):
        t0 = time.perf_counter()
        sh("ip", "addr", "add", ADDR + "/24", "dev", "wg0")
        assert wait(lambda: connects(ADDR, PORT), 10), f"round {i}: no listener on {ADDR}"
        lat.append((time.perf_counter() - t0) * 1000)
        sh("ip", "addr", "del", ADDR + "/24", "dev", "wg0")
        assert wait(lambda: ADDR not in listeners(PORT), 10), f"round {i}: listener stayed"
    lat.sort()
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    settle(gw.pid)

    # The burst: BURST address changes. Pairs of add/del on the t* interfaces,
    # plus wg0 gaining 10.8.1.1..10 and losing 10.8.1.1..5 in the middle.
    lines = []
    wg_add = [f"addr add 10.8.1.{k}/32 dev wg0" for k in range(1, 11)]
    wg_del = [f"addr del 10.8.1.{k}/32 dev wg0" for k in range(1, 6)]
    rest = BURST - len(wg_add) - len(wg_del)
    pairs = rest // 2
    for k in range(pairs):
        i = k % IFACES if IFACES else 0
        a = f"10.{200 + (k // 250) % 50}.{k % 250}.{1 + k // 12500}/32"
        dev = f"t{i}" if IFACES else "lo"
        lines += [f"addr add {a} dev {dev}", f"addr del {a} dev {dev}"]
        if k == pairs // 3:
            lines += wg_add
        if k == 2 * pairs // 3:
            lines += wg_del
    if len(lines) < BURST:  # an odd count: one address more that stays
        lines.append("addr add 10.250.0.1/32 dev " + ("t0" if IFACES else "lo"))
    want = {"127.0.0.1"} | {f"10.8.1.{k}" for k in range(6, 11)}
    c0 = cpu_ms(gw.pid)
    t0 = time.perf_counter()
    batch(lines)
    burst_s = time.perf_counter() - t0
    ok = wait(lambda: listeners(PORT) == want, 20, 0.001)
    settle(gw.pid)
    c1 = cpu_ms(gw.pid)
    got = listeners(PORT)
    alive = gw.poll() is None

    print(f"interfaces in the namespace: {n} ({IFACES} TUNs with an address made in {made_s:.1f} s)")
    print(f"explain --bind auto: median {m_explain:.2f} ms | ip -br addr: median {m_ip:.2f} ms | "
          f"ratio {m_explain / m_ip:.2f}")
    print(f"attach latency (ip addr add -> first TCP connect), {ROUNDS} rounds: median {statistics.median(lat):.2f} ms, "
          f"p99 {p99:.2f} ms")
    print(f"serving RSS: {rss0} kB with 0 extra, {rss1} kB with {IFACES} "
          f"({(rss1 - rss0) / max(IFACES, 1):.2f} kB/iface); {rss_started} kB started with them")
    print(f"burst of {len(lines)} address changes in {burst_s * 1000:.0f} ms: {c1 - c0:.0f} ms CPU; "
          f"listeners right: {ok and got == want} ({sorted(got)}); alive: {alive}")
finally:
    stop(gw)
    os.unlink(tokfile.name)
    os.close(tun)
