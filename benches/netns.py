"""Helpers shared by the benches that run meshgate inside an unprivileged
network namespace (follow_latency.py, scale.py): commands, TUN devices held
open, what listens, waiting, a process's RSS, and stopping it."""

import fcntl, os, socket, struct, subprocess, time


def sh(*args):
    subprocess.run(args, check=True)


def hold_tun(name):
    """Creates TUN `name` and holds it open (it goes when the fd closes)."""
    fd = os.open("/dev/net/tun", os.O_RDWR)
    ifr = struct.pack("16sH22x", name.encode(), 0x0001 | 0x1000)  # IFF_TUN | IFF_NO_PI
    fcntl.ioctl(fd, 0x400454CA, ifr)  # TUNSETIFF
    return fd


def listeners(port):
    """The IPv4 addresses something LISTENs on at port, from /proc/net/tcp."""
    out = set()
    with open("/proc/net/tcp") as f:
        next(f)
        for l in f:
            p = l.split()
            a, pt = p[1].split(":")
            if p[3] == "0A" and int(pt, 16) == port:
                out.add(socket.inet_ntoa(struct.pack("<I", int(a, 16))))
    return out


def wait(cond, timeout=5.0, step=0.0002):
    """True once cond() is, polling every step seconds; False after timeout."""
    end = time.perf_counter() + timeout
    while time.perf_counter() < end:
        if cond():
            return True
        time.sleep(step)
    return False


def connects(addr, port):
    try:
        socket.create_connection((addr, port), timeout=0.2).close()
        return True
    except OSError:
        return False


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS"))


def stop(proc, timeout=15):
    """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
