//! NetworkPolicy semantics of `nftkit netpol`'s pure build, checked by walking the built
//! ruleset with a small packet tracer (no kernel): the Kubernetes API documentation's
//! examples, union of policies, peers, ports, and what is not programmed.

use std::net::IpAddr;

use nftkit::model::{Action, AddrField, CtState, IpFamily, L4Proto, Match, Ruleset};
use nftkit::netpol::build::{NetpolConfig, build};
use nftkit::netpol::manifest;
use serde_json::{Value, json};

const NODE: &str = "node-1";

fn pod(ns: &str, name: &str, labels: Value, ip: &str, node: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "c", "ports": [
            {"name": "http", "containerPort": if name.ends_with("alt") { 8080 } else { 80 }},
            {"name": "dns", "containerPort": 53, "protocol": "UDP"}]}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}})
}

fn ns(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
}

fn policy(ns: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

fn build_of(items: Vec<Value>) -> Ruleset {
    let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
    let cluster = manifest::parse("test", &list.to_string()).expect("valid manifest");
    build(
        &NetpolConfig {
            node: NODE.into(),
            cluster,
        },
        "nftkit-netpol",
    )
}

/// A new connection's first packet.
#[derive(Debug, Clone, Copy)]
struct Pkt {
    src: IpAddr,
    dst: IpAddr,
    proto: L4Proto,
    dport: u16,
}

fn tcp(src: &str, dst: &str, dport: u16) -> Pkt {
    Pkt {
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        proto: L4Proto::Tcp,
        dport,
    }
}

fn udp(src: &str, dst: &str, dport: u16) -> Pkt {
    Pkt {
        proto: L4Proto::Udp,
        ..tcp(src, dst, dport)
    }
}

fn family(ip: IpAddr) -> IpFamily {
    if ip.is_ipv4() {
        IpFamily::V4
    } else {
        IpFamily::V6
    }
}

fn in_set(rs: &Ruleset, set: &str, ip: IpAddr) -> bool {
    let s = rs
        .set(set)
        .unwrap_or_else(|| panic!("rule names undeclared set {set}"));
    s.elements.iter().any(|e| match (e, ip) {
        (nftkit::model::Element::V4(n), IpAddr::V4(a)) => n.contains(&a),
        (nftkit::model::Element::V6(n), IpAddr::V6(a)) => n.contains(&a),
        _ => false,
    })
}

fn matches(rs: &Ruleset, m: &Match, p: &Pkt) -> bool {
    match m {
        Match::CtState(states) => states.contains(&CtState::New),
        Match::Saddr(n) => n.contains(&p.src),
        Match::Daddr(n) => n.contains(&p.dst),
        Match::SaddrInSet { family: f, set } => family(p.src) == *f && in_set(rs, set, p.src),
        Match::DaddrInSet { family: f, set } => family(p.dst) == *f && in_set(rs, set, p.dst),
        Match::L4Proto { proto, negate } => (*proto == p.proto) != *negate,
        Match::Dport { proto, port } => *proto == p.proto && *port == p.dport,
        Match::DportRange { proto, first, last } => {
            *proto == p.proto && (*first..=*last).contains(&p.dport)
        }
        // A named counter is a statement, not a condition.
        Match::Count { .. } => true,
        other => panic!("tracer does not know {other:?}"),
    }
}

/// Some(true) accept, Some(false) drop, None fell off / returned.
fn run(rs: &Ruleset, chain: &str, p: &Pkt, depth: usize) -> Option<bool> {
    assert!(depth < 8, "jump loop");
    let c = rs
        .chains
        .iter()
        .find(|c| c.name == chain)
        .unwrap_or_else(|| panic!("no chain {chain}"));
    for r in &c.rules {
        if r.matches.iter().all(|m| matches(rs, m, p)) {
            match &r.action {
                Action::Accept => return Some(true),
                Action::Drop => return Some(false),
                Action::Return => return None,
                Action::Jump(target) => {
                    if let Some(v) = run(rs, target, p, depth + 1) {
                        return Some(v);
                    }
                }
                // No coming back: the target's end is this chain's end.
                Action::Goto(target) => return run(rs, target, p, depth + 1),
                Action::GotoMap {
                    family: f,
                    field,
                    map,
                } => {
                    let ip = match field {
                        AddrField::Saddr => p.src,
                        AddrField::Daddr => p.dst,
                    };
                    let m = rs
                        .map(map)
                        .unwrap_or_else(|| panic!("rule names undeclared map {map}"));
                    let hit = m.entries.iter().find(|(e, _)| match (e, ip) {
                        (nftkit::model::Element::V4(n), IpAddr::V4(a)) => n.contains(&a),
                        (nftkit::model::Element::V6(n), IpAddr::V6(a)) => n.contains(&a),
                        _ => false,
                    });
                    if family(ip) == *f
                        && let Some((_, target)) = hit
                    {
                        return run(rs, target, p, depth + 1);
                    }
                }
                other => panic!("tracer does not know {other:?}"),
            }
        }
    }
    None
}

/// Whether the forward hook lets the first packet of `p` through (base policy accept).
fn allowed(rs: &Ruleset, p: Pkt) -> bool {
    run(rs, "filter-forward", &p, 0).unwrap_or(true)
}

fn check(rs: &Ruleset, cases: &[(&str, Pkt, bool)]) {
    let mut bad = Vec::new();
    for (what, p, want) in cases {
        if allowed(rs, *p) != *want {
            bad.push(format!(
                "{what}: {p:?} expected {}",
                if *want { "allow" } else { "deny" }
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "{}\n\n{}",
        bad.join("\n"),
        nftkit::render::nft_script(rs)
    );
}

// Addresses: node-1 pods 10.244.1.x, node-2 pods 10.244.2.x.
const DB: &str = "10.244.1.10";
const FE: &str = "10.244.1.11";
const OTHER: &str = "10.244.1.12";
const MYPROJ: &str = "10.244.2.20";
const FE_ELSEWHERE: &str = "10.244.2.21";

fn base_pods() -> Vec<Value> {
    vec![
        ns("default", json!({})),
        ns("myproject", json!({"project": "myproject"})),
        ns("other", json!({})),
        pod("default", "db", json!({"role": "db"}), DB, NODE),
        pod("default", "frontend", json!({"role": "frontend"}), FE, NODE),
        pod("default", "other", json!({}), OTHER, NODE),
        pod("myproject", "p", json!({}), MYPROJ, "node-2"),
        pod(
            "other",
            "frontend",
            json!({"role": "frontend"}),
            FE_ELSEWHERE,
            "node-2",
        ),
    ]
}

/// The example NetworkPolicy of the Kubernetes documentation ("test-network-policy").
#[test]
fn kubernetes_docs_example_policy() {
    let mut items = base_pods();
    items.push(policy(
        "default",
        "test-network-policy",
        json!({
            "podSelector": {"matchLabels": {"role": "db"}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [
                {"ipBlock": {"cidr": "172.17.0.0/16", "except": ["172.17.1.0/24"]}},
                {"namespaceSelector": {"matchLabels": {"project": "myproject"}}},
                {"podSelector": {"matchLabels": {"role": "frontend"}}}],
                "ports": [{"protocol": "TCP", "port": 6379}]}],
            "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/24"}}],
                "ports": [{"protocol": "TCP", "port": 5978}]}]
        }),
    ));
    let rs = build_of(items);
    check(
        &rs,
        &[
            ("ipBlock", tcp("172.17.0.5", DB, 6379), true),
            ("ipBlock except", tcp("172.17.1.5", DB, 6379), false),
            ("namespaceSelector", tcp(MYPROJ, DB, 6379), true),
            ("podSelector same ns", tcp(FE, DB, 6379), true),
            (
                "podSelector is namespace-local",
                tcp(FE_ELSEWHERE, DB, 6379),
                false,
            ),
            ("unlisted pod", tcp(OTHER, DB, 6379), false),
            ("wrong port", tcp(FE, DB, 6380), false),
            ("wrong protocol", udp(FE, DB, 6379), false),
            ("egress allowed", tcp(DB, "10.0.0.5", 5978), true),
            ("egress wrong port", tcp(DB, "10.0.0.5", 80), false),
            ("egress outside cidr", tcp(DB, "10.0.1.5", 5978), false),
            ("egress to a pod", tcp(DB, FE, 80), false),
            ("non-selected pods unaffected", tcp(OTHER, FE, 80), true),
            ("non-selected pods egress", tcp(FE, "192.0.2.1", 443), true),
        ],
    );
}

#[test]
fn default_policies_from_the_docs() {
    let deny_ingress = json!({"podSelector": {}, "policyTypes": ["Ingress"]});
    let allow_ingress = json!({"podSelector": {}, "ingress": [{}]});
    let deny_egress = json!({"podSelector": {}, "policyTypes": ["Egress"]});
    let allow_egress = json!({"podSelector": {}, "egress": [{}], "policyTypes": ["Egress"]});
    let deny_all = json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]});
    let with = |spec: Value| {
        let mut items = base_pods();
        items.push(policy("default", "p", spec));
        build_of(items)
    };
    let in_ = tcp(OTHER, DB, 80);
    let out = tcp(DB, "192.0.2.1", 80);
    let other_ns = tcp(FE, MYPROJ, 80); // egress from default, ingress to myproject (remote)
    check(
        &with(deny_ingress),
        &[
            ("deny ingress", in_, false),
            ("egress unaffected", out, true),
            ("ingress from outside", tcp("192.0.2.1", FE, 80), false),
            ("other namespaces", other_ns, true),
        ],
    );
    check(&with(allow_ingress), &[("allow all ingress", in_, true)]);
    check(
        &with(deny_egress),
        &[
            ("deny egress", out, false),
            ("ingress unaffected", tcp("192.0.2.1", DB, 80), true),
            // Pod to pod within the namespace: the sender's egress is denied.
            ("pod to pod", in_, false),
        ],
    );
    check(
        &with(allow_egress),
        &[
            ("allow all egress", out, true),
            ("udp too", udp(DB, "192.0.2.1", 53), true),
        ],
    );
    check(
        &with(deny_all),
        &[
            ("deny all in", tcp("192.0.2.1", DB, 80), false),
            ("deny all out", out, false),
        ],
    );
}

/// Docs "Behavior of to and from selectors": one peer with both selectors is an AND,
/// two peers are an OR.
#[test]
fn namespace_and_pod_selector_and_versus_or() {
    let and = json!({"podSelector": {"matchLabels": {"role": "db"}}, "ingress": [{"from": [
        {"namespaceSelector": {"matchLabels": {"user": "alice"}}, "podSelector": {"matchLabels": {"role": "client"}}}]}]});
    let or = json!({"podSelector": {"matchLabels": {"role": "db"}}, "ingress": [{"from": [
        {"namespaceSelector": {"matchLabels": {"user": "alice"}}}, {"podSelector": {"matchLabels": {"role": "client"}}}]}]});
    let items = |spec: Value| {
        let mut v = base_pods();
        v.push(ns("alice", json!({"user": "alice"})));
        v.push(pod(
            "alice",
            "client",
            json!({"role": "client"}),
            "10.244.3.1",
            "node-3",
        ));
        v.push(pod(
            "alice",
            "server",
            json!({"role": "server"}),
            "10.244.3.2",
            "node-3",
        ));
        v.push(pod(
            "default",
            "client",
            json!({"role": "client"}),
            "10.244.1.30",
            NODE,
        ));
        v.push(policy("default", "p", spec));
        build_of(v)
    };
    check(
        &items(and),
        &[
            ("alice client", tcp("10.244.3.1", DB, 80), true),
            ("alice non-client", tcp("10.244.3.2", DB, 80), false),
            ("client in policy ns", tcp("10.244.1.30", DB, 80), false),
        ],
    );
    check(
        &items(or),
        &[
            ("alice client", tcp("10.244.3.1", DB, 80), true),
            ("alice non-client", tcp("10.244.3.2", DB, 80), true),
            ("client in policy ns", tcp("10.244.1.30", DB, 80), true),
            ("other", tcp(OTHER, DB, 80), false),
        ],
    );
    // namespaceSelector {} = every namespace; the name label is always there.
    let by_name = json!({"podSelector": {"matchLabels": {"role": "db"}}, "ingress": [{"from": [
        {"namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["default"]}]}}]}]});
    check(
        &items(by_name),
        &[
            ("alice", tcp("10.244.3.2", DB, 80), true),
            ("myproject", tcp(MYPROJ, DB, 80), true),
            ("default excluded", tcp(FE, DB, 80), false),
        ],
    );
}

#[test]
fn ports_protocols_named_ports_and_end_port() {
    let spec = json!({"podSelector": {"matchLabels": {"role": "db"}}, "ingress": [{"ports": [
        {"protocol": "TCP", "port": 32000, "endPort": 32768},
        {"protocol": "UDP", "port": "dns"},
        {"port": "http"},
        {"protocol": "SCTP"}]}]});
    let mut items = base_pods();
    items.push(pod(
        "default",
        "db-alt",
        json!({"role": "db"}),
        "10.244.1.40",
        NODE,
    ));
    items.push(policy("default", "p", spec));
    let rs = build_of(items);
    let sctp = Pkt {
        proto: L4Proto::Sctp,
        ..tcp(FE, DB, 9999)
    };
    check(
        &rs,
        &[
            ("range start", tcp(FE, DB, 32000), true),
            ("range end", tcp(FE, DB, 32768), true),
            ("range past end", tcp(FE, DB, 32769), false),
            ("range udp", udp(FE, DB, 32000), false),
            ("named udp", udp(FE, DB, 53), true),
            ("named tcp-only", tcp(FE, DB, 53), false),
            ("named http on db = 80", tcp(FE, DB, 80), true),
            (
                "named http on db-alt = 8080",
                tcp(FE, "10.244.1.40", 8080),
                true,
            ),
            (
                "db-alt port 80 is not http",
                tcp(FE, "10.244.1.40", 80),
                false,
            ),
            ("db 8080 is not http", tcp(FE, DB, 8080), false),
            ("sctp any port", sctp, true),
        ],
    );
    // Egress named port: resolved on each destination pod.
    let spec = json!({"podSelector": {"matchLabels": {"role": "frontend"}}, "policyTypes": ["Egress"],
        "egress": [{"to": [{"podSelector": {"matchLabels": {"role": "db"}}}], "ports": [{"port": "http"}]}]});
    let mut items = base_pods();
    items.push(pod(
        "default",
        "db-alt",
        json!({"role": "db"}),
        "10.244.1.40",
        NODE,
    ));
    items.push(policy("default", "p", spec));
    check(
        &build_of(items),
        &[
            ("to db:80", tcp(FE, DB, 80), true),
            ("to db:8080", tcp(FE, DB, 8080), false),
            ("to db-alt:8080", tcp(FE, "10.244.1.40", 8080), true),
            ("to db-alt:80", tcp(FE, "10.244.1.40", 80), false),
            ("to other:80", tcp(FE, OTHER, 80), false),
        ],
    );
}

#[test]
fn policies_are_unioned_and_other_nodes_are_not_programmed() {
    let a = json!({"podSelector": {"matchLabels": {"role": "db"}}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "frontend"}}}], "ports": [{"port": 5432}]}]});
    let b =
        json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "192.0.2.0/24"}}]}]});
    let remote = json!({"podSelector": {"matchLabels": {"app": "remote"}}, "policyTypes": ["Ingress", "Egress"]});
    let mut items = base_pods();
    items.push(pod(
        "default",
        "remote",
        json!({"app": "remote"}),
        "10.244.2.50",
        "node-2",
    ));
    items.push(pod(
        "default",
        "hostnet",
        json!({"role": "db"}),
        "198.51.100.1",
        NODE,
    ));
    if let Some(spec) = items.last_mut().and_then(|p| p.get_mut("spec")) {
        spec["hostNetwork"] = json!(true);
    }
    items.push(policy("default", "a", a));
    items.push(policy("default", "b", b));
    items.push(policy("default", "remote", remote));
    let rs = build_of(items);
    check(
        &rs,
        &[
            ("policy a", tcp(FE, DB, 5432), true),
            ("policy b", tcp("192.0.2.9", DB, 22), true),
            ("neither", tcp(OTHER, DB, 5432), false),
            ("b covers every pod", tcp("192.0.2.9", OTHER, 80), true),
            (
                "remote pod's policy not programmed",
                tcp(OTHER, "10.244.2.50", 80),
                true,
            ),
            (
                "host-network pod not policed",
                tcp(OTHER, "198.51.100.1", 80),
                true,
            ),
        ],
    );
    assert!(
        !rs.chains
            .iter()
            .any(|c| c.name.contains("remote") || c.name.contains("hostnet")),
        "no chains for another node's or a host-network pod"
    );
}

#[test]
fn rule_count_does_not_grow_with_peer_pods() {
    let spec = json!({"podSelector": {"matchLabels": {"role": "db"}}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "frontend"}}}], "ports": [{"port": 5432}]}]});
    let with = |peers: usize| {
        let mut items = base_pods();
        for i in 0..peers {
            items.push(pod(
                "default",
                &format!("fe-{i}"),
                json!({"role": "frontend"}),
                &format!("10.245.{}.{}", i / 250, i % 250 + 1),
                "node-9",
            ));
        }
        items.push(policy("default", "p", spec.clone()));
        build_of(items)
    };
    let (small, big) = (with(2), with(1000));
    assert_eq!(small.rule_count(), big.rule_count());
    let elements = |rs: &Ruleset| rs.sets.iter().map(|s| s.elements.len()).sum::<usize>();
    assert!(elements(&big) > elements(&small));
    // 1000 consecutive /32s merge into few prefixes, exactly covering them.
    check(
        &big,
        &[
            ("peer 999", tcp("10.245.3.250", DB, 5432), true),
            ("not a peer", tcp("10.245.4.1", DB, 5432), false),
        ],
    );
}

#[test]
fn dual_stack_pods_get_both_families() {
    let mut p = pod("default", "db", json!({"role": "db"}), DB, NODE);
    p["status"]["podIPs"] = json!([{"ip": DB}, {"ip": "2001:db8::10"}]);
    let mut fe = pod("default", "frontend", json!({"role": "frontend"}), FE, NODE);
    fe["status"]["podIPs"] = json!([{"ip": FE}, {"ip": "2001:db8::11"}]);
    let spec = json!({"podSelector": {"matchLabels": {"role": "db"}}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "frontend"}}}]}]});
    let rs = build_of(vec![p, fe, policy("default", "p", spec)]);
    check(
        &rs,
        &[
            ("v4", tcp(FE, DB, 1), true),
            ("v6", tcp("2001:db8::11", "2001:db8::10", 1), true),
            ("v6 other", tcp("2001:db8::99", "2001:db8::10", 1), false),
        ],
    );
}
