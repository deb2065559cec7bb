"""Create TUN/TAP interfaces and hold them open (so they have carrier).

Usage: python3 tunhold.py [--max-secs N] tun:NAME [tap:NAME ...]

Opens /dev/net/tun once per NAME with TUNSETIFF (IFF_TUN or IFF_TAP, always
IFF_NO_PI), prints "READY" on stdout once every interface exists, then
sleeps until killed (or until --max-secs elapses, a safety bound). The
interfaces are not persistent: they disappear when this process exits.
"""

import fcntl
import os
import signal
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000


def main(argv):
    max_secs = 600.0
    specs = []
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--max-secs":
            max_secs = float(args.pop(0))
            continue
        mode, sep, name = arg.partition(":")
        if not sep or mode not in ("tun", "tap") or not name or len(name) > 15:
            print(f"tunhold: bad spec {arg!r} (want tun:NAME or tap:NAME)", file=sys.stderr)
            return 2
        specs.append((mode, name))
    if not specs:
        print("tunhold: nothing to create", file=sys.stderr)
        return 2
    fds = []
    for mode, name in specs:
        flags = (IFF_TUN if mode == "tun" else IFF_TAP) | IFF_NO_PI
        fd = os.open("/dev/net/tun", os.O_RDWR)
        try:
            fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), flags))
        except OSError as e:
            print(f"tunhold: TUNSETIFF {mode}:{name}: {e}", file=sys.stderr)
            return 1
        fds.append(fd)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("READY", flush=True)
    deadline = time.monotonic() + max_secs
    while time.monotonic() < deadline:
        time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
