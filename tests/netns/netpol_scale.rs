//! Scale: 1000 pods, 200 policies. Time to parse the kubectl List, build the ruleset and
//! apply it over netlink in a network namespace (then read it back and compare), for all
//! 1000 pods on this node (worst case) and for 100 of them (10 nodes). Prints the numbers;
//! the bounds asserted are loose (a debug build on a shared 2-core machine).

use std::time::{Duration, Instant};

use crate::common::*;
use nftkit::backend::Backend;
use nftkit::backend::netlink::NetlinkBackend;
use nftkit::netpol::build::{NetpolConfig, build};
use nftkit::netpol::manifest;
use nftkit::snapshot;
use serde_json::json;

const PODS: usize = 1000;
const POLICIES: usize = 200;
const NAMESPACES: usize = 20;

fn cluster_yaml(nodes: usize) -> String {
    let mut items = Vec::new();
    for n in 0..NAMESPACES {
        items.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": format!("ns-{n}"),
            "labels": {"team": format!("t{}", n % 5), "env": if n % 2 == 0 { "prod" } else { "dev" }}}}));
    }
    for j in 0..PODS {
        let ip = format!("10.244.{}.{}", j / 200, j % 200 + 2);
        items.push(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("pod-{j}"), "namespace": format!("ns-{}", j % NAMESPACES),
                "labels": {"app": format!("a{}", j % 10), "tier": format!("t{}", j % 3)}},
            "spec": {"nodeName": format!("node-{}", j % nodes), "containers": [{"name": "c", "ports": [
                {"name": "http", "containerPort": 8080 + (j % 4)}, {"name": "metrics", "containerPort": 9090}]}]},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}}));
    }
    for k in 0..POLICIES {
        let mut spec = json!({
            "podSelector": {"matchLabels": {"app": format!("a{}", k % 10)}},
            "ingress": [{
                "from": [
                    {"podSelector": {"matchLabels": {"tier": format!("t{}", k % 3)}}},
                    {"namespaceSelector": {"matchLabels": {"team": format!("t{}", k % 5)}},
                     "podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": [format!("a{}", (k + 1) % 10)]}]}},
                    {"ipBlock": {"cidr": "192.0.2.0/24", "except": [format!("192.0.2.{}/32", k % 256)]}}
                ],
                "ports": [{"port": 80}, {"port": "http"}, {"protocol": "UDP", "port": 30000, "endPort": 30000 + k as u32}]
            }]
        });
        if k % 4 == 0 {
            spec["egress"] = json!([{"to": [{"podSelector": {"matchLabels": {"app": format!("a{}", (k + 3) % 10)}}}],
                "ports": [{"port": "metrics"}, {"port": "http"}]}]);
        }
        items.push(json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": format!("pol-{k}"), "namespace": format!("ns-{}", k % NAMESPACES)}, "spec": spec}));
    }
    serde_norway::to_string(&json!({"apiVersion": "v1", "kind": "List", "items": items}))
        .expect("yaml")
}

fn measure(nodes: usize) {
    let _turn = cpu_heavy();
    let yaml = cluster_yaml(nodes);
    let t0 = Instant::now();
    let cluster = manifest::parse("scale.yaml", &yaml).expect("valid");
    let parse = t0.elapsed();
    let t1 = Instant::now();
    let cfg = NetpolConfig {
        node: "node-0".into(),
        cluster,
    };
    let rs = build(&cfg, "nftkit-netpol");
    let build_time = t1.elapsed();
    let elements: usize = rs.sets.iter().map(|s| s.elements.len()).sum();
    let ns = Netns::new();
    let (apply, readback, diff) = ns.enter(|| {
        let mut b = NetlinkBackend::connect().expect("connect");
        let t = Instant::now();
        b.apply(&rs).expect("apply");
        let apply = t.elapsed();
        let t = Instant::now();
        let observed = b.read_back(&rs.table).expect("read back");
        let readback = t.elapsed();
        (
            apply,
            readback,
            snapshot::diff(&b.expected(&rs), observed.as_ref()),
        )
    });
    assert!(diff.is_empty(), "read-back differs: {diff:?}");
    // A second apply replaces the table (what an update costs).
    let reapply = ns.enter(|| {
        let mut b = NetlinkBackend::connect().expect("connect");
        let t = Instant::now();
        b.apply(&rs).expect("re-apply");
        t.elapsed()
    });
    let local = PODS / nodes;
    eprintln!(
        "netpol scale: {PODS} pods ({local} on this node), {POLICIES} policies: yaml {} KiB, \
         parse {parse:?}, build {build_time:?}, apply {apply:?}, re-apply {reapply:?}, \
         read-back {readback:?}; {} chains, {} rules, {} sets, {elements} elements",
        yaml.len() / 1024,
        rs.chains.len(),
        rs.rule_count(),
        rs.sets.len(),
    );
    let total = parse + build_time + apply;
    assert!(
        total < Duration::from_secs(60),
        "parse + build + apply took {total:?}"
    );
}

#[test]
fn thousand_pods_two_hundred_policies_all_local() {
    require_root();
    measure(1);
}

#[test]
fn thousand_pods_two_hundred_policies_ten_nodes() {
    require_root();
    measure(10);
}
