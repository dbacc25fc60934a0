#!/usr/bin/env python3
"""Input of scripts/bench.sh workload 8: bench/netpol_gen.py's cluster with all 1 000 pods
on node-0 (local), its 200 NetworkPolicies, and 50 ClusterNetworkPolicies
(policy.networking.k8s.io/v1alpha2): Admin and Baseline, Accept/Deny/Pass, namespaces and
pods subjects and peers, networks, port numbers, ranges and named ports.

The benchmark's client (bench/client, 10.99.1.2) and server (bench/server, 10.99.2.2) are
local pods too, so a new connection from the client to the server walks every tier:
  egress (client):  Admin bench-admin: Deny to 203.0.113.0/24 (no match), Pass to the
                    server on TCP 5001 -> NetworkPolicy: the client is not isolated ->
                    Baseline bench-baseline: Deny to 192.0.2.0/24 (no match), Accept to the
                    server on TCP 5001
  ingress (server): Admin bench-admin: Deny from team t0 (no match), Pass from the client on
                    the named port "bench" (5001) -> NetworkPolicy allow-client: 10.99.1.0/24
                    on TCP 5001, accepted
The other 48 policies select ns-* pods only (never the bench namespace), so they cost the
bench flow nothing but table size.

  netpol_tiers_gen.py FILE [--no-cnp]

--no-cnp leaves the ClusterNetworkPolicies out (an nftkit that does not read them yet).
pod_ip(j), churn_pod(i) give the churn events' addresses (bench/netpol_churn.py).
"""
import os
import sys

sys.dont_write_bytecode = True  # no bench/__pycache__ from the imports
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import netpol_gen  # noqa: E402

CNPS = 50
ACTIONS = ("Accept", "Deny", "Pass")


def sel(labels):
    return {"matchLabels": labels}


def ports(k):
    """One of three protocol lists: number, range, named port (and a mix)."""
    return [
        [{"tcp": {"destinationPort": {"number": 80 + k}}}],
        [{"udp": {"destinationPort": {"range": {"start": 30000, "end": 30000 + k}}}},
         {"tcp": {"destinationPort": {"number": 443}}}],
        [{"destinationNamedPort": "http"}, {"tcp": {"destinationPort": {"range": {"start": 9000, "end": 9100}}}}],
    ][k % 3]


def cnp(k):
    tier = "Admin" if k % 2 == 0 else "Baseline"
    if k % 4 < 2:
        subject = {"namespaces": sel({"team": f"t{k % 5}"})}
    else:
        subject = {"pods": {"namespaceSelector": sel({"env": "prod" if k % 3 else "dev"}),
                            "podSelector": sel({"app": f"a{k % 10}"})}}
    ingress = [{"name": f"in-{r}", "action": ACTIONS[(k + r) % 3],
                "from": [{"namespaces": sel({"team": f"t{(k + r) % 5}"})} if r % 2 == 0 else
                         {"pods": {"namespaceSelector": sel({"env": "dev"}),
                                   "podSelector": sel({"tier": f"t{(k + r) % 3}"})}}],
                "protocols": ports(k + r)} for r in range(2)]
    egress = [{"name": "out-net", "action": ACTIONS[(k + 1) % 3],
               "to": [{"networks": [f"198.51.100.{(k * 4) % 256}/30", "10.0.0.0/8"]}],
               "protocols": ports(k)},
              {"name": "out-pods", "action": ACTIONS[(k + 2) % 3],
               "to": [{"pods": {"namespaceSelector": sel({"team": f"t{k % 5}"}),
                                "podSelector": sel({"app": f"a{(k + 1) % 10}"})}}]}]
    spec = {"tier": tier, "priority": 20 + k * 19 % 980, "subject": subject, "ingress": ingress}
    if k % 3 != 2:
        spec["egress"] = egress
    return {"apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
            "metadata": {"name": f"cnp-{k}"}, "spec": spec}


BENCH_PODS = {"namespaceSelector": sel({"team": "bench"}),
              "podSelector": {"matchExpressions": [{"key": "app", "operator": "In",
                                                    "values": ["bench-server", "bench-client"]}]}}
SERVER = {"pods": {"namespaceSelector": sel({"team": "bench"}), "podSelector": sel({"app": "bench-server"})}}
CLIENT = {"pods": {"namespaceSelector": sel({"team": "bench"}), "podSelector": sel({"app": "bench-client"})}}
TCP5001 = [{"tcp": {"destinationPort": {"number": 5001}}}]

BENCH_CNPS = [
    {"apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
     "metadata": {"name": "bench-admin"},
     "spec": {"tier": "Admin", "priority": 10, "subject": {"pods": BENCH_PODS},
              "ingress": [{"name": "deny-t0", "action": "Deny", "from": [{"namespaces": sel({"team": "t0"})}]},
                          {"name": "pass-client", "action": "Pass", "from": [CLIENT],
                           "protocols": [{"destinationNamedPort": "bench"}]}],
              "egress": [{"name": "deny-testnet3", "action": "Deny", "to": [{"networks": ["203.0.113.0/24"]}]},
                         {"name": "pass-server", "action": "Pass", "to": [SERVER], "protocols": TCP5001}]}},
    {"apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
     "metadata": {"name": "bench-baseline"},
     "spec": {"tier": "Baseline", "priority": 10, "subject": CLIENT,
              "egress": [{"name": "deny-testnet1", "action": "Deny", "to": [{"networks": ["192.0.2.0/24"]}]},
                         {"name": "accept-server", "action": "Accept", "to": [SERVER], "protocols": TCP5001}]}},
]


def churn_pod(i):
    """The churn events' pod: a fresh address (10.244.100.x, outside the 1 000), labels of
    an existing pod of its namespace (so no new combination of policies: elements only)."""
    j = i % netpol_gen.PODS
    return netpol_gen.pod(f"churn-{i}", f"ns-{j % netpol_gen.NAMESPACES}",
                          {"app": f"a{j % 10}", "tier": f"t{j % 3}"}, "node-0",
                          f"10.244.{100 + i // 250}.{i % 250 + 2}",
                          [{"name": "http", "containerPort": 8080 + j % 4}, {"name": "metrics", "containerPort": 9090}])


def cluster(with_cnp=True):
    items = netpol_gen.cluster(nodes=1)
    items.append(netpol_gen.pod("client", "bench", {"app": "bench-client"}, "node-0", "10.99.1.2"))
    if with_cnp:
        items += BENCH_CNPS + [cnp(k) for k in range(CNPS - len(BENCH_CNPS))]
    return items


if __name__ == "__main__":
    netpol_gen.write(sys.argv[1], cluster(with_cnp="--no-cnp" not in sys.argv[2:]))
