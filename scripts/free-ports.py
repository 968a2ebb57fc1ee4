#!/usr/bin/env python3
"""Prints N distinct loopback ports (default 1), each free when picked, one per line.

They come from below the kernel's ephemeral range: a port from bind(("127.0.0.1", 0)) lies in
that range, and once it is released any outgoing connection on the box (a cluster bus link, a
replica, a client) may take it as its source port before the server that was meant to have it
binds it. Below the range no socket gets a port without asking for it by number.
"""
import random
import socket
import sys

n = int(sys.argv[1]) if len(sys.argv) > 1 else 1
try:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low = int(f.read().split()[0])
except OSError:
    low = 32768
candidates = list(range(10000, low))
random.shuffle(candidates)
picked = []
for port in candidates:
    if len(picked) == n:
        break
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
        picked.append(port)
    except OSError:
        pass
    finally:
        s.close()
if len(picked) < n:
    sys.exit(f"free-ports: no {n} free loopback ports below {low}")
print("\n".join(map(str, picked)))
