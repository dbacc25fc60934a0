#!/usr/bin/env python3
"""The updates of an `nftkit netpol --from-file F --watch --log-format json` log (workload
8 (b)): per "netpol table updated" line, its path (elements / whole), the daemon's own
elapsed_ms (counters read, batch, read-back) and the ms from the "file changed; re-read"
line before it (file read, cluster parse, table build, delta, apply), tab-separated.

  netpol_update_times.py LOG
"""
import json
import sys
from datetime import datetime

changed = None
for line in open(sys.argv[1]):
    try:
        e = json.loads(line)
    except ValueError:
        continue
    f = e.get("fields", {})
    msg = f.get("message", "")
    t = datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00"))
    if msg.startswith("file changed"):
        changed = t
    elif msg.startswith("netpol table updated") and changed is not None:
        path = "elements" if "set elements only" in msg else "whole"
        print(f"{path}\t{f.get('elapsed_ms', 0):.3f}\t{(t - changed).total_seconds() * 1000:.3f}")
        changed = None
