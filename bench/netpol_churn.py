#!/usr/bin/env python3
"""Pod-event latency for scripts/bench.sh workload 8 (b); runs inside the node's namespace
next to `nftkit netpol --from-file WATCHED --watch`.

  netpol_churn.py BASE.json WATCHED EVENTS MODE DAEMON_PID OUT.tsv

EVENTS times: write WATCHED.tmp (BASE's items plus the churn pods) and rename it over
WATCHED, cycling through one pod added, relabelled (another label set its namespace already
has), removed (bench/netpol_tiers_gen.py churn_pod). The latency of an event runs from the
rename to the arrival of the kernel's NFT_MSG_NEWGEN notification for the next batch
DAEMON_PID (any of its threads) commits: the moment the change is in the kernel, seen on the nf_tables multicast
group (NFNLGRP_NFTABLES) by a raw netlink socket; nothing polls the kernel or the daemon.
The time is taken when recv() returns the chunk holding the NEWGEN (before parsing), so a
whole-table batch's thousands of notifications before it cost the reading little.

MODE delta: nothing else happens (the daemon may send set elements only).
MODE whole: before each event another program commits in the namespace (nft adds and
deletes a table), so the daemon's ruleset generation is stale and it replaces the whole
table (what it does when someone else changed the kernel), through the same watch, build
and apply path.

Between events: a random pause of 0-300 ms, so renames fall at random points of the
daemon's 250 ms file poll. OUT.tsv: event kind, latency ms, one line per event (kind
'lost' with the timeout when no batch came within 15 s).
"""
import json
import os
import random
import socket
import struct
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no bench/__pycache__ from the imports
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from netpol_tiers_gen import churn_pod  # noqa: E402

NETLINK_NETFILTER, NFNLGRP_NFTABLES, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP = 12, 7, 270, 1
NFT_MSG_NEWGEN = (10 << 8) | 15  # NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWGEN
NFTA_GEN_PROC_PID = 2
TIMEOUT = 15.0

base_path, watched, events, mode, daemon_pid, out_path = sys.argv[1:7]
events, daemon_pid = int(events), int(daemon_pid)
base = json.load(open(base_path))["items"]

sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
sock.setsockopt(socket.SOL_SOCKET, 33, 256 << 20)  # SO_RCVBUFFORCE (root)
sock.bind((0, 0))
sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, NFNLGRP_NFTABLES)


def newgen_pids(buf):
    """The committing process ids of the NEWGEN messages in one recv() chunk."""
    pids, off = [], 0
    while off + 16 <= len(buf):
        length, typ = struct.unpack_from("=IH", buf, off)
        if length < 16:
            break
        if typ == NFT_MSG_NEWGEN:
            a = off + 16 + 4  # nlmsghdr, nfgenmsg
            while a + 4 <= off + length:
                alen, atyp = struct.unpack_from("=HH", buf, a)
                if alen < 4:
                    break
                if atyp & 0x7fff == NFTA_GEN_PROC_PID:
                    pids.append(struct.unpack_from(">I", buf, a + 4)[0])
                a += (alen + 3) & ~3
        off += (length + 3) & ~3
    return pids


def drain():
    sock.setblocking(False)
    try:
        while True:
            sock.recv(1 << 22)
    except (BlockingIOError, OSError):
        pass
    sock.setblocking(True)


def wait_commit(deadline):
    """Monotonic time the daemon's next commit was announced, or None at the deadline."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        sock.settimeout(left)
        try:
            buf = sock.recv(1 << 22)
        except socket.timeout:
            return None
        except OSError:  # ENOBUFS: notifications were lost; the NEWGEN comes last
            continue
        t = time.monotonic()
        pids = newgen_pids(buf)
        # The kernel names the committing thread: any of the daemon's.
        if pids and not daemon_threads().isdisjoint(pids):
            return t


def daemon_threads():
    try:
        return {int(t) for t in os.listdir(f"/proc/{daemon_pid}/task")}
    except OSError:
        return {daemon_pid}


pods = {}  # churn index -> pod
out = open(out_path, "w")
rng = random.Random(8)
for e in range(events):
    i, step = e // 3, e % 3
    if step == 0:
        kind = "add"
        pods[i] = churn_pod(i)
    elif step == 1:
        kind = "relabel"
        labels = pods[i]["metadata"]["labels"]
        labels["tier"] = f"t{(int(labels['tier'][1:]) + 1) % 3}"
    else:
        kind = "remove"
        del pods[i]
    tmp = watched + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"apiVersion": "v1", "kind": "List", "items": base + list(pods.values())}, f)
    if mode == "whole":
        subprocess.run(["nft", "add table ip nkb-bump; delete table ip nkb-bump"], check=True)
    time.sleep(0.05)
    drain()
    t0 = time.monotonic()
    os.rename(tmp, watched)
    t1 = wait_commit(t0 + TIMEOUT)
    if t1 is None:
        try:
            os.kill(daemon_pid, 0)
        except OSError:
            sys.exit(f"netpol_churn.py: the daemon (pid {daemon_pid}) is gone")
        out.write(f"lost\t{TIMEOUT * 1000:.3f}\n")
    else:
        out.write(f"{kind}\t{(t1 - t0) * 1000:.3f}\n")
    out.flush()
    time.sleep(rng.uniform(0, 0.3))
