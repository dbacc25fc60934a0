#!/usr/bin/env python3
"""Summarise scripts/bench.sh samples: a table of medians (min/max, n) with ratios, the
issue-9 targets checked, and the same as JSON.

  report.py SAMPLES.tsv META.json OUT.json

SAMPLES.tsv: workload <TAB> name <TAB> param <TAB> metric <TAB> value, one sample a line.
"""
import json
import statistics
import sys

samples_path, meta_path, out_path = sys.argv[1:4]
groups = {}  # (workload, param, name, metric) -> [values], in first-seen order
for line in open(samples_path):
    parts = line.rstrip("\n").split("\t")
    if len(parts) != 5:
        continue
    w, name, param, metric, value = parts
    try:
        v = float(value)
    except ValueError:
        continue
    groups.setdefault((w, param, name, metric), []).append(v)


def stat(vals):
    s = sorted(vals)
    return {
        "median": statistics.median(vals),
        "min": min(vals),
        "max": max(vals),
        "p99": s[max(0, -(-99 * len(s) // 100) - 1)],  # nearest rank
        "n": len(vals),
    }


stats = {k: stat(v) for k, v in groups.items()}

# Per workload: which row a row is compared with.
BASE = {
    "1-redirect": lambda w, p, n, m: (w, p, "nft-f-create", m),
    "2-masquerade-apply": lambda w, p, n, m: (w, p, "iptables-legacy-restore", m),
    "3-noop-reconcile": lambda w, p, n, m: (w, p, "iptables-legacy-resync", m) if m == "ms" else None,
    "4-datapath": lambda w, p, n, m: (w, "0", n, m),
    "5-readback": lambda w, p, n, m: (w, p, "iptables-legacy-save", m),
    "7-netpol-logging": lambda w, p, n, m: (w, p, "none", m),
    "8-netpol-tiers": lambda w, p, n, m: {
        "ms": (w, p, n.replace("incremental", "whole-table").replace("elements only", "whole table"), m)
        if n.startswith(("event", "daemon")) else (w, p, "nft-f", m),
        "cps": (w, p, "cps: no-rules", m),
        "hs": (w, p, "cps: no-rules", m),
    }.get(m),
    "6-footprint": lambda w, p, n, m: {
        "rss_kb": (w, p, "nft-f", m),
        "ms": (w, p, "nft --version", m),
        "bytes": None,
    }.get(m),
}

rows = []
for key, s in stats.items():
    w, p, n, m = key
    base = BASE.get(w, lambda *a: None)(w, p, n, m)
    ratio = None
    if base and base in stats and base != key and stats[base]["median"]:
        ratio = s["median"] / stats[base]["median"]
    rows.append({"workload": w, "param": p, "name": n, "metric": m, **s, "ratio": ratio,
                 "vs": "/".join(base[1:3]) if ratio is not None else None,
                 "samples": groups[key]})


def med(w, p, n, m):
    s = stats.get((w, p, n, m))
    return s["median"] if s else None


def ratio(a, b):
    return a / b if a is not None and b else None


targets = []


def target(what, value, goal, ok):
    targets.append({"target": what, "value": value, "goal": goal,
                    "met": None if value is None else bool(ok(value))})


target("1: nftkit redirect / nft -f create", ratio(med("1-redirect", "-", "nftkit-redirect", "ms"),
       med("1-redirect", "-", "nft-f-create", "ms")), "<= 0.8", lambda v: v <= 0.8)
# Small configs (issue 20): no slower than iptables-legacy-restore.
for n in ("10", "1000"):
    target(f"2: nftkit masquerade / iptables-legacy-restore @{n}",
           ratio(med("2-masquerade-apply", n, "nftkit-masquerade", "ms"),
                 med("2-masquerade-apply", n, "iptables-legacy-restore", "ms")),
           "<= 1.0", lambda v: v <= 1.0)
for n in ("10000", "50000"):
    target(f"2: nftkit masquerade / iptables-legacy-restore @{n}",
           ratio(med("2-masquerade-apply", n, "nftkit-masquerade", "ms"),
                 med("2-masquerade-apply", n, "iptables-legacy-restore", "ms")),
           "<= 0.8", lambda v: v <= 0.8)
target("3: nftkit daemon no-op resync events", med("3-noop-reconcile", "10000", "nftkit-daemon-resync", "events"),
       "== 0", lambda v: v == 0)
target("3: nftkit daemon resync / legacy resync",
       ratio(med("3-noop-reconcile", "10000", "nftkit-daemon-resync", "ms"),
             med("3-noop-reconcile", "10000", "iptables-legacy-resync", "ms")), "<= 0.2", lambda v: v <= 0.2)

# An unchanged one-shot re-run (issue 20): compare, send nothing.
target("3: nftkit --once unchanged re-run events",
       med("3-noop-reconcile", "10000", "nftkit masquerade --once (unchanged re-run)", "events"),
       "== 0", lambda v: v == 0)
target("3: nftkit --once unchanged re-run / legacy resync",
       ratio(med("3-noop-reconcile", "10000", "nftkit masquerade --once (unchanged re-run)", "ms"),
             med("3-noop-reconcile", "10000", "iptables-legacy-resync", "ms")), "<= 0.2", lambda v: v <= 0.2)


def paired_names(w, p, n, base_n, m):
    """Median of per-run ratios of row `n` over row `base_n` (same round, same size)."""
    a, b = groups.get((w, p, n, m)), groups.get((w, p, base_n, m))
    if not a or not b or len(a) != len(b):
        return None
    ratios = [x / y for x, y in zip(a, b) if y]
    return statistics.median(ratios) if ratios else None


def paired(w, p, n, m, base_p):
    """Median of per-run ratios: run i at `p` over run i at `base_p` (the sizes run
    back to back within a round, so slow drift of the machine cancels out)."""
    a, b = groups.get((w, p, n, m)), groups.get((w, base_p, n, m))
    if not a or not b or len(a) != len(b):
        return None
    return statistics.median(x / y for x, y in zip(a, b) if y)


# The target is at 10 000 CIDRs; 1 000 is shown next to it.
target("4: nftkit cps @10000 / nftkit cps @0 (paired runs)",
       paired("4-datapath", "10000", "nftkit", "cps", "0"), ">= 0.95", lambda v: v >= 0.95)
# Issue 20: verify and status ahead of iptables-legacy-save (the kernel's element dump
# alone is ~0.6x of it, see kernel_share).
target("5: nftkit verify / iptables-legacy-save", ratio(med("5-readback", "10000", "nftkit verify masquerade", "ms"),
       med("5-readback", "10000", "iptables-legacy-save", "ms")), "<= 0.9", lambda v: v <= 0.9)
target("5: nftkit status --json / iptables-legacy-save", ratio(med("5-readback", "10000", "nftkit status --json", "ms"),
       med("5-readback", "10000", "iptables-legacy-save", "ms")), "<= 0.9", lambda v: v <= 0.9)
target("6: nftkit peak RSS / nft -f (50000)", ratio(med("6-footprint", "50000", "nftkit-masquerade", "rss_kb"),
       med("6-footprint", "50000", "nft-f", "rss_kb")), "<= 0.5", lambda v: v <= 0.5)

# The kernel's share of the targets nftkit cannot go below: what the kernel spends on the
# same work inside nftkit's own run (batch check and commit; element dump), next to the
# competitor the target is measured against.
kernel_share = []
for n in ("10000", "50000"):
    kernel_share.append({"what": f"2: kernel commit alone / iptables-legacy-restore @{n}",
                         "value": ratio(med("2-masquerade-apply", n, "nftkit: kernel commit alone", "ms"),
                                        med("2-masquerade-apply", n, "iptables-legacy-restore", "ms"))})
kernel_share.append({"what": "5: element dump alone / iptables-legacy-save",
                     "value": ratio(med("5-readback", "10000", "nftkit: element dump alone", "ms"),
                                    med("5-readback", "10000", "iptables-legacy-save", "ms"))})

# Issue 18: logging must not cost the datapath (drops logs nothing that is admitted; all
# logs every admitted connection, rate-limited in the kernel).
target("7: netpol cps, --log-verdicts drops / none (paired runs)",
       paired_names("7-netpol-logging", "200", "drops", "none", "cps"), ">= 0.95", lambda v: v >= 0.95)

# Issue 17: ClusterNetworkPolicy tiers must not cost the datapath much (N = the number of
# ClusterNetworkPolicies measured; 0 when the binary does not read them).
w8p = next((p for (w, p, n, m) in groups if w == "8-netpol-tiers"), "50")
target("8: netpol tiers cps, nftkit / no rules (paired runs)",
       paired_names("8-netpol-tiers", w8p, "cps: nftkit", "cps: no-rules", "cps"), ">= 0.9", lambda v: v >= 0.9)


def p99(w, p, n, m):
    s = stats.get((w, p, n, m))
    return s["p99"] if s else None


# Ratios shown for context, not targets.
context = [{"what": "7: netpol cps, --log-verdicts all / none (paired runs)",
            "value": paired_names("7-netpol-logging", "200", "all", "none", "cps")},
           {"what": "7: netpol cps, none / no rules at all (paired runs)",
            "value": paired_names("7-netpol-logging", "200", "none", "no-rules", "cps")},
           {"what": "4: nftkit cps @1000 / nftkit cps @0 (paired runs)",
            "value": paired("4-datapath", "1000", "nftkit", "cps", "0")},
           {"what": "4: iptables-legacy cps @10000 / @0 (paired runs)",
            "value": paired("4-datapath", "10000", "iptables-legacy", "cps", "0")},
           {"what": "8: netpol one-shot apply, nftkit / nft -f of its dry-run",
            "value": ratio(med("8-netpol-tiers", w8p, "nftkit-netpol", "ms"), med("8-netpol-tiers", w8p, "nft-f", "ms"))},
           {"what": "8: netpol one-shot apply, nftkit / iptables-legacy backend",
            "value": ratio(med("8-netpol-tiers", w8p, "nftkit-netpol", "ms"),
                           med("8-netpol-tiers", w8p, "iptables-legacy", "ms"))},
           {"what": "8: pod event -> kernel ms, incremental, median",
            "value": med("8-netpol-tiers", w8p, "event->kernel: incremental", "ms")},
           {"what": "8: pod event -> kernel ms, incremental, p99",
            "value": p99("8-netpol-tiers", w8p, "event->kernel: incremental", "ms")},
           {"what": "8: pod event -> kernel ms, whole-table replace, median",
            "value": med("8-netpol-tiers", w8p, "event->kernel: whole-table", "ms")},
           {"what": "8: pod event -> kernel ms, whole-table replace, p99",
            "value": p99("8-netpol-tiers", w8p, "event->kernel: whole-table", "ms")},
           {"what": "8: pod event -> kernel, incremental / whole (medians)",
            "value": ratio(med("8-netpol-tiers", w8p, "event->kernel: incremental", "ms"),
                           med("8-netpol-tiers", w8p, "event->kernel: whole-table", "ms"))},
           {"what": "8: netpol tiers handshakes/s (ECONNRESET too), nftkit / no rules (paired)",
            "value": paired_names("8-netpol-tiers", w8p, "cps: nftkit", "cps: no-rules", "hs")},
           {"what": "8: netpol tiers handshakes/s, iptables-legacy / no rules (paired)",
            "value": paired_names("8-netpol-tiers", w8p, "cps: iptables-legacy", "cps: no-rules", "hs")},
           {"what": "8: netpol tiers cps, iptables-legacy / no rules (paired runs)",
            "value": paired_names("8-netpol-tiers", w8p, "cps: iptables-legacy", "cps: no-rules", "cps")},
           {"what": "8: netpol tiers cps, nftkit / iptables-legacy (paired runs)",
            "value": paired_names("8-netpol-tiers", w8p, "cps: nftkit", "cps: iptables-legacy", "cps")},
           {"what": "8: netpol tiers cps, nftkit / nftkit with the same pods, no policies (paired)",
            "value": paired_names("8-netpol-tiers", w8p, "cps: nftkit", "cps: nftkit-no-policies", "cps")},
           {"what": "8: netpol tiers cps, nftkit with no policies / no rules (paired runs)",
            "value": paired_names("8-netpol-tiers", w8p, "cps: nftkit-no-policies", "cps: no-rules", "cps")}]

meta = json.load(open(meta_path))
json.dump({**meta, "results": rows, "targets": targets, "kernel_share": kernel_share,
           "context": context},
          open(out_path, "w"), indent=1)


def fmt(v, m):
    if v is None:
        return "-"
    if m in ("bytes", "rss_kb", "events", "lines", "rules"):
        return f"{v:.0f}"
    if m in ("cps", "mbps", "hs"):
        return f"{v:.0f}"
    return f"{v:.1f}" if v >= 10 else f"{v:.2f}"


print(f"# {meta.get('date')}  kernel {meta.get('kernel')}  {meta.get('nft')}  {meta.get('iptables')}  "
      f"nftkit {meta.get('nftkit')}  runs {meta.get('runs')}  load {meta.get('load')}")
last = None
hdr = f"{'workload':<20} {'N':>6} {'what':<34} {'metric':<7} {'median':>9} {'min':>9} {'max':>9} {'n':>3} {'ratio':>7}  vs"
for r in rows:
    if r["workload"] != last:
        print()
        print(hdr)
        last = r["workload"]
    rt = f"{r['ratio']:.2f}x" if r["ratio"] is not None else ""
    print(f"{r['workload']:<20} {r['param']:>6} {r['name']:<34} {r['metric']:<7} {fmt(r['median'], r['metric']):>9} "
          f"{fmt(r['min'], r['metric']):>9} {fmt(r['max'], r['metric']):>9} {r['n']:>3} {rt:>7}  {r['vs'] or ''}")
print()
print("targets:")
for t in targets:
    v = "-" if t["value"] is None else (f"{t['value']:.2f}" if t["value"] % 1 else f"{t['value']:.0f}")
    mark = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
    print(f"  {t['target']:<52} {v:>8}  (goal {t['goal']})  {mark}")
print("kernel's share (the floor under nftkit's own time, same run):")
for k in kernel_share:
    v = "-" if k["value"] is None else f"{k['value']:.2f}"
    print(f"  {k['what']:<52} {v:>8}")
print("context (not targets):")
for k in context:
    v = "-" if k["value"] is None else f"{k['value']:.2f}"
    print(f"  {k['what']:<52} {v:>8}")
print(f"\nJSON: {out_path}")
