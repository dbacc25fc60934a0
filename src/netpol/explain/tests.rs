//! Unit tests of `explain`.
use super::*;
use crate::netpol::manifest;

const CLUSTER: &str = r#"
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: shop}}
- apiVersion: v1
  kind: Pod
  metadata: {name: web, namespace: shop, labels: {app: web}}
  spec: {nodeName: node-1, containers: [{name: c}]}
  status: {podIPs: [{ip: 10.244.1.2}, {ip: "fd00::1:2"}]}
- apiVersion: v1
  kind: Pod
  metadata: {name: db, namespace: shop, labels: {app: db}}
  spec: {nodeName: node-1, containers: [{name: c, ports: [{name: sql, containerPort: 5432}]}]}
  status: {podIPs: [{ip: 10.244.2.2}, {ip: "fd00::2:2"}]}
- apiVersion: v1
  kind: Pod
  metadata: {name: far, namespace: shop, labels: {app: far}}
  spec: {nodeName: node-2, containers: [{name: c}]}
  status: {podIPs: [{ip: 10.244.9.2}]}
- apiVersion: v1
  kind: Pod
  metadata: {name: host, namespace: shop, labels: {app: host}}
  spec: {nodeName: node-1, hostNetwork: true, containers: [{name: c}]}
  status: {podIPs: [{ip: 192.168.0.1}]}
- apiVersion: networking.k8s.io/v1
  kind: NetworkPolicy
  metadata: {name: db-in, namespace: shop}
  spec:
    podSelector: {matchLabels: {app: db}}
    ingress:
    - from: [{podSelector: {matchLabels: {app: web}}}]
      ports: [{port: sql}]
    - ports: [{port: 9100}]
- apiVersion: networking.k8s.io/v1
  kind: NetworkPolicy
  metadata: {name: web-out, namespace: shop}
  spec:
    podSelector: {matchLabels: {app: web}}
    policyTypes: [Egress]
    egress:
    - to: [{podSelector: {matchLabels: {app: db}}}]
      ports: [{port: sql}]
    - to: [{ipBlock: {cidr: 203.0.113.0/24, except: [203.0.113.128/25]}}]
"#;

fn cfg(node: &str) -> NetpolConfig {
    NetpolConfig {
        node: node.into(),
        cluster: manifest::parse("test", CLUSTER).unwrap(),
    }
}

fn run(node: &str, from: &str, to: &str, port: &str) -> Result<Explanation> {
    let c = cfg(node);
    let f = parse_endpoint("--from", from)?;
    let t = parse_endpoint("--to", to)?;
    let (port, proto) = parse_port(port)?;
    explain(&c, (from, &f), (to, &t), port, proto)
}

fn outcome(e: &Explanation, dir: Direction) -> &Outcome {
    &e.checks
        .iter()
        .find(|c| c.direction == dir)
        .unwrap_or_else(|| panic!("no {dir:?} check: {e:?}"))
        .outcome
}

#[test]
fn allow_names_the_policy_rules_of_both_directions() {
    let e = run("node-1", "shop/web", "shop/db", "5432").unwrap();
    assert!(e.allowed && e.policed_here, "{e:?}");
    // Egress by a named port, resolved on the destination: its own set.
    assert_eq!(
        outcome(&e, Direction::Egress),
        &Outcome::Allowed {
            rules: vec![("shop/web-out".into(), 0)],
            set: Some("egress/shop/web-out/0/tcp-5432-v4".into()),
        }
    );
    assert_eq!(
        outcome(&e, Direction::Ingress),
        &Outcome::Allowed {
            rules: vec![("shop/db-in".into(), 0)],
            set: Some("ingress/shop/db-in/0-v4".into()),
        }
    );
    assert!(
        e.reason.contains("networkpolicy shop/db-in ingress[0]"),
        "{}",
        e.reason
    );
    assert_eq!(e.path.first().unwrap().chain, build::FORWARD_CHAIN);
    assert_eq!(e.json()["decision"], "allow");
    assert_eq!(e.json()["checks"][1]["rules"][0]["policy"], "shop/db-in");
}

#[test]
fn a_rule_without_peers_is_named_by_what_it_compiles_to() {
    let e = run("node-1", "shop/far", "shop/db", "9100/tcp").unwrap();
    assert!(e.allowed);
    assert_eq!(
        outcome(&e, Direction::Ingress),
        &Outcome::Allowed {
            rules: vec![("shop/db-in".into(), 1)],
            set: None,
        }
    );
    assert_eq!(
        outcome(&e, Direction::Egress),
        &Outcome::OtherNode(Some("node-2".into()))
    );
}

#[test]
fn an_audited_isolation_passes_and_says_would_drop() {
    let text = CLUSTER.replace(
        "metadata: {name: db-in, namespace: shop}",
        "metadata: {name: db-in, namespace: shop, annotations: {nftkit.io/audit: \"true\"}}",
    );
    let c = NetpolConfig {
        node: "node-1".into(),
        cluster: manifest::parse("test", &text).unwrap(),
    };
    let f = parse_endpoint("--from", "shop/far").unwrap();
    let t = parse_endpoint("--to", "shop/db").unwrap();
    let e = explain(&c, ("shop/far", &f), ("shop/db", &t), 5432, L4Proto::Tcp).unwrap();
    assert!(e.allowed, "audit mode changes no packet's fate: {e:?}");
    assert_eq!(
        outcome(&e, Direction::Ingress),
        &Outcome::WouldDrop {
            policies: vec!["shop/db-in".into()]
        }
    );
    assert_eq!(e.json()["checks"][1]["result"], "would-drop");
}

#[test]
fn deny_is_the_default_deny_of_the_isolated_pod() {
    let e = run("node-1", "shop/far", "shop/db", "5432").unwrap();
    assert!(!e.allowed);
    assert_eq!(
        outcome(&e, Direction::Ingress),
        &Outcome::DefaultDeny {
            policies: vec!["shop/db-in".into()]
        }
    );
    assert!(
        e.reason.starts_with("default-deny: ingress of shop/db"),
        "{}",
        e.reason
    );
    assert_eq!(e.json()["decision"], "deny");
    // UDP to the named (TCP) port: denied too.
    assert!(
        !run("node-1", "shop/web", "shop/db", "5432/udp")
            .unwrap()
            .allowed
    );
    // Egress: web may reach db and 203.0.113.0/25 only; the ingress check never runs.
    let e = run("node-1", "shop/web", "shop/far", "80").unwrap();
    assert!(!e.allowed);
    assert_eq!(
        outcome(&e, Direction::Egress),
        &Outcome::DefaultDeny {
            policies: vec!["shop/web-out".into()]
        }
    );
    assert!(
        run("node-1", "shop/web", "203.0.113.5", "80")
            .unwrap()
            .allowed
    );
    let e = run("node-1", "shop/web", "203.0.113.0/25", "80").unwrap();
    assert!(e.allowed, "a CIDR stands for its first address");
    assert_eq!(e.to.address, "203.0.113.0".parse::<IpAddr>().unwrap());
    assert!(
        !run("node-1", "shop/web", "203.0.113.200", "80")
            .unwrap()
            .allowed
    );
}

#[test]
fn the_family_both_ends_have_is_used() {
    let e = run("node-1", "shop/web", "fd00::2:2", "5432").unwrap();
    assert_eq!(e.from.address, "fd00::1:2".parse::<IpAddr>().unwrap());
    assert!(e.allowed);
    assert_eq!(
        e.to.pod.as_deref(),
        Some("shop/db"),
        "an address names its pod"
    );
    let err = run("node-1", "shop/far", "fd00::2:2", "5432").unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert!(err.to_string().contains("same address family"), "{err}");
}

#[test]
fn flows_this_node_does_not_police_say_so() {
    // Both pods on node-1, asked as node-3: nothing here polices them.
    let e = run("node-3", "shop/far", "shop/db", "5432").unwrap();
    assert!(e.allowed && !e.policed_here);
    assert!(
        e.reason.contains("not this node's decision"),
        "{}",
        e.reason
    );
    // The node's own traffic (a host-network pod here) never meets the forward hook,
    // in either direction; as 192.168.0.1 too.
    for (from, to) in [
        ("shop/host", "shop/db"),
        ("shop/far", "shop/host"),
        ("192.168.0.1", "shop/db"),
    ] {
        let e = run("node-1", from, to, "5432").unwrap();
        assert!(e.allowed && !e.policed_here && e.path.is_empty(), "{e:?}");
        assert!(e.reason.contains("host-network"), "{}", e.reason);
    }
    // A pod to itself (db is ingress-isolated): never leaves the pod.
    let e = run("node-1", "shop/db", "shop/db", "1").unwrap();
    assert!(e.allowed && !e.policed_here && e.path.is_empty(), "{e:?}");
    assert!(e.reason.contains("one address"), "{}", e.reason);
}

#[test]
fn bad_input_is_an_invalid_value_error() {
    for (from, to, port, names) in [
        ("shop/nope", "shop/db", "80", "--from"),
        ("shop", "shop/db", "80", "--from"),
        ("shop/web", "Shop/DB", "80", "--to"),
        ("shop/web", "10.0.0.1/33", "80", "--to"),
        ("shop/web", "shop/db", "0", "--port"),
        ("shop/web", "shop/db", "70000", "--port"),
        ("shop/web", "shop/db", "80/icmp", "--port"),
        ("shop/web", "shop/db", "", "--port"),
    ] {
        let e = run("node-1", from, to, port).unwrap_err();
        assert_eq!(e.exit_code(), 2, "{from} {to} {port}: {e}");
        assert!(e.to_string().contains(names), "{e}");
        assert!(!e.to_string().contains('\n'), "{e}");
    }
    assert_eq!(parse_port(" 53/UDP ").unwrap(), (53, L4Proto::Udp));
}
