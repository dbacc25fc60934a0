#!/usr/bin/env python3
"""Input of scripts/bench.sh workload 7: a cluster of 1 000 pods and 200 NetworkPolicies
(the netpol_scale test's shape, 100 pods on node-0), plus the benchmark's server pod
bench/server (10.99.2.2 on node-0), isolated by a policy that admits the client network
10.99.1.0/24 on TCP 5001, so every new connection walks the policy rules.
bench/netpol_tiers_gen.py (workload 8) builds on cluster().

  netpol_gen.py FILE
"""
import json
import sys

PODS, POLICIES, NAMESPACES, NODES = 1000, 200, 20, 10


def pod(name, namespace, labels, node, ip, ports=()):
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"nodeName": node, "containers": [{"name": "c", **({"ports": list(ports)} if ports else {})}]},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}}


def pod_ip(j):
    return f"10.244.{j // 200}.{j % 200 + 2}"


def cluster(nodes=NODES):
    """The List's items; `nodes=1` puts every pod on node-0."""
    items = []
    for n in range(NAMESPACES):
        items.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {
            "name": f"ns-{n}", "labels": {"team": f"t{n % 5}", "env": "prod" if n % 2 == 0 else "dev"}}})
    items.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench", "labels": {"team": "bench"}}})
    for j in range(PODS):
        items.append(pod(f"pod-{j}", f"ns-{j % NAMESPACES}", {"app": f"a{j % 10}", "tier": f"t{j % 3}"},
                         f"node-{j % nodes}", pod_ip(j),
                         [{"name": "http", "containerPort": 8080 + j % 4}, {"name": "metrics", "containerPort": 9090}]))
    items.append(pod("server", "bench", {"app": "bench-server"}, "node-0", "10.99.2.2",
                     [{"name": "bench", "containerPort": 5001}] if nodes == 1 else []))
    for k in range(POLICIES):
        spec = {"podSelector": {"matchLabels": {"app": f"a{k % 10}"}},
                "ingress": [{"from": [
                    {"podSelector": {"matchLabels": {"tier": f"t{k % 3}"}}},
                    {"namespaceSelector": {"matchLabels": {"team": f"t{k % 5}"}},
                     "podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": [f"a{(k + 1) % 10}"]}]}},
                    {"ipBlock": {"cidr": "192.0.2.0/24", "except": [f"192.0.2.{k % 256}/32"]}}],
                    "ports": [{"port": 80}, {"port": "http"}, {"protocol": "UDP", "port": 30000, "endPort": 30000 + k}]}]}
        if k % 4 == 0:
            spec["egress"] = [{"to": [{"podSelector": {"matchLabels": {"app": f"a{(k + 3) % 10}"}}}],
                               "ports": [{"port": "metrics"}, {"port": "http"}]}]
        items.append({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                      "metadata": {"name": f"pol-{k}", "namespace": f"ns-{k % NAMESPACES}"}, "spec": spec})
    items.append({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                  "metadata": {"name": "allow-client", "namespace": "bench"},
                  "spec": {"podSelector": {"matchLabels": {"app": "bench-server"}},
                           "ingress": [{"from": [{"ipBlock": {"cidr": "10.99.1.0/24"}}],
                                        "ports": [{"protocol": "TCP", "port": 5001}]}]}})
    return items


def write(path, items):
    with open(path, "w") as f:
        json.dump({"apiVersion": "v1", "kind": "List", "items": items}, f)


if __name__ == "__main__":
    write(sys.argv[1], cluster())
