#!/usr/bin/env python3
"""Durations of an nftkit daemon's no-op resyncs, from its `-v --log-format json` log:
from each "resync" line to the "in sync; nothing sent" line that ends it, in ms.

  resync_times.py LOG N [--first]    the last N (with --first: the first N), one a line
"""
import json
import sys
from datetime import datetime

log, n = sys.argv[1], int(sys.argv[2])
first = "--first" in sys.argv[3:]
start, out = None, []
for line in open(log):
    try:
        e = json.loads(line)
    except ValueError:
        continue
    msg = e.get("fields", {}).get("message", "")
    t = datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00"))
    if msg == "resync":
        start = t
    elif msg == "in sync; nothing sent" and start is not None:
        out.append((t - start).total_seconds() * 1000)
        start = None
for ms in out[:n] if first else out[-n:]:
    print(f"{ms:.3f}")
