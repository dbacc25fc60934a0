#!/usr/bin/env python3
"""Tiny TCP connection-rate load generator for scripts/bench.sh (datapath workload).

  cps.py server ADDR PORT SECONDS      accept and reset connections for at most SECONDS
  cps.py client ADDR PORT SECONDS MAX  open+reset connections for SECONDS (at most MAX),
                                       print connections per second, failed connects,
                                       and handshakes per second

Both ends close with SO_LINGER 0 (RST), so no TIME_WAIT piles up and every connection
is a new conntrack entry in the router: each one walks the nat postrouting rules once.
The third number also counts the connects that failed with ECONNRESET: the handshake went
through the router, but the server's RST arrived before connect() returned to this
process (frequent when the CPUs are busy), so they are router work too.
"""
import errno
import socket
import struct
import sys
import time

LINGER0 = struct.pack("ii", 1, 0)

mode, addr, port, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
if mode == "server":
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(4096)
    s.settimeout(seconds)
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            c, _ = s.accept()
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER0)
            c.close()
    except (socket.timeout, OSError):
        pass
else:
    limit = int(sys.argv[5])
    n = fails = 0
    errs = {}
    start = time.monotonic()
    end = start + seconds
    while n < limit:
        now = time.monotonic()
        if now >= end:
            break
        c = socket.socket()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER0)
        c.settimeout(1.0)
        try:
            c.connect((addr, port))
            n += 1
        except OSError as e:
            fails += 1
            errs[e.errno] = errs.get(e.errno, 0) + 1
        c.close()
    took = time.monotonic() - start
    print(f"{n / took:.1f} {fails} {(n + errs.get(errno.ECONNRESET, 0)) / took:.1f}")
    if errs:
        print("errors by errno:", errs, file=sys.stderr)
