//! `cnp_parse` unit tests: upstream-like valid objects, and every way the CRD's schema
//! refuses one (each error one line, naming the object, the field and the value).

use serde_json::Value;

use super::cluster_policy;
use crate::netpol::cnp::{ClusterAction, ClusterPeer, ClusterPort, PodSet, Tier};
use crate::netpol::fields::Protocol;
use crate::netpol::manifest::parse;

fn yaml(text: &str) -> Value {
    serde_norway::from_str(text).unwrap()
}

/// Written after the upstream conformance objects (admin tier, egress by protocol, and a
/// baseline policy with pods peers, inline CIDRs and ingress ranges).
const ADMIN: &str = r#"
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: egress-tcp}
spec:
  tier: Admin
  priority: 5
  subject:
    namespaces:
      matchLabels: {kubernetes.io/metadata.name: gryffindor}
  egress:
  - name: accept-ravenclaw-80
    action: Accept
    to:
    - namespaces: {matchLabels: {kubernetes.io/metadata.name: ravenclaw}}
    protocols:
    - tcp: {destinationPort: {number: 80}}
  - name: deny-ravenclaw
    action: Deny
    to:
    - namespaces: {matchLabels: {kubernetes.io/metadata.name: ravenclaw}}
  - action: Pass
    to:
    - pods:
        namespaceSelector: {}
        podSelector: {matchExpressions: [{key: app, operator: In, values: [db]}]}
    protocols:
    - destinationNamedPort: web
    - udp: {destinationPort: {range: {start: 5000, end: 6000}}}
"#;

const BASELINE: &str = r#"
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: default, labels: {x: y}}
spec:
  tier: Baseline
  priority: 0
  subject:
    pods:
      namespaceSelector: {matchLabels: {house: gryffindor}}
      podSelector: {matchLabels: {role: student}}
  ingress:
  - name: deny-all-sctp
    action: Deny
    from: [{namespaces: {}}]
    protocols: [{sctp: {destinationPort: {number: 9003}}}]
  egress:
  - name: deny-egress-to-internet
    action: Deny
    to:
    - networks: [0.0.0.0/0, "::/0", 10.1.2.3/8]
"#;

#[test]
fn upstream_like_objects_parse() {
    let p = cluster_policy(&yaml(ADMIN)).unwrap();
    assert_eq!(
        (p.name.as_str(), p.tier, p.priority),
        ("egress-tcp", Tier::Admin, 5)
    );
    assert!(matches!(&p.subject, PodSet::Namespaces(s) if s.match_labels.len() == 1));
    assert!(p.ingress.is_empty());
    assert_eq!(p.egress.len(), 3);
    let r = &p.egress[0];
    assert_eq!(
        (r.name.as_str(), r.action),
        ("accept-ravenclaw-80", ClusterAction::Accept)
    );
    assert_eq!(
        r.protocols,
        [ClusterPort::Port {
            protocol: Protocol::Tcp,
            first: 80,
            last: 80
        }]
    );
    assert!(p.egress[1].protocols.is_empty(), "no protocols: every port");
    let pass = &p.egress[2];
    assert_eq!((pass.name.as_str(), pass.action), ("", ClusterAction::Pass));
    assert!(matches!(
        &pass.peers[0],
        ClusterPeer::Pods(PodSet::Pods { namespaces, pods })
            if namespaces.is_empty() && pods.expressions.len() == 1
    ));
    assert_eq!(
        pass.protocols,
        [
            ClusterPort::Named("web".into()),
            ClusterPort::Port {
                protocol: Protocol::Udp,
                first: 5000,
                last: 6000
            }
        ]
    );

    let b = cluster_policy(&yaml(BASELINE)).unwrap();
    assert_eq!((b.tier, b.priority), (Tier::Baseline, 0));
    assert!(matches!(&b.subject, PodSet::Pods { .. }));
    assert_eq!(
        b.ingress[0].peers,
        [ClusterPeer::Pods(PodSet::Namespaces(Default::default()))]
    );
    let nets: Vec<String> = match &b.egress[0].peers[0] {
        ClusterPeer::Networks(n) => n.iter().map(ToString::to_string).collect(),
        other => panic!("{other:?}"),
    };
    // Host bits are accepted, as the API server's isCIDR does, and truncated.
    assert_eq!(nets, ["0.0.0.0/0", "::/0", "10.0.0.0/8"]);
}

#[test]
fn files_hold_them_sorted_in_lists_or_alone_and_once() {
    let list = format!(
        "kind: List\napiVersion: v1\nitems:\n- {}\n- {}\n",
        serde_json::to_string(&yaml(BASELINE)).unwrap(),
        serde_json::to_string(&yaml(ADMIN)).unwrap()
    );
    let c = parse("t", &list).unwrap();
    let names: Vec<&str> = c.cluster_policies.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["default", "egress-tcp"]);
    // Top-level documents, and the typed list whose items leave kind out.
    let docs = format!("{ADMIN}---{BASELINE}");
    assert_eq!(parse("t", &docs).unwrap(), c);
    let mut typed = yaml(ADMIN);
    typed.as_object_mut().unwrap().remove("kind");
    let typed = serde_json::json!({"kind": "ClusterNetworkPolicyList",
        "apiVersion": "policy.networking.k8s.io/v1alpha2", "items": [typed]});
    let t = parse("t", &typed.to_string()).unwrap();
    assert_eq!(t.cluster_policies.len(), 1);
    // The same name twice is refused.
    let e = parse("t", &format!("{ADMIN}---{ADMIN}")).unwrap_err();
    assert!(
        e.to_string().contains("ClusterNetworkPolicy egress-tcp"),
        "{e}"
    );
}

/// `spec` with `{tier: Admin, priority: 1, subject: {namespaces: {}}}` and `rest` added.
fn spec(rest: &str) -> String {
    format!(
        "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\n\
         metadata: {{name: c}}\nspec: {{tier: Admin, priority: 1, subject: {{namespaces: {{}}}}{rest}}}\n"
    )
}

fn egress(rule: &str) -> String {
    spec(&format!(", egress: [{rule}]"))
}

#[test]
fn a_peer_without_known_fields_is_unknown() {
    for peer in ["{}", "{futurePeer: {a: b}}"] {
        let p = cluster_policy(&yaml(&egress(&format!("{{action: Deny, to: [{peer}]}}")))).unwrap();
        assert_eq!(p.egress[0].peers, [ClusterPeer::Unknown], "{peer}");
    }
    // Unknown fields elsewhere are ignored.
    let p = cluster_policy(&yaml(&spec(
        ", future: 1, egress: [{action: Deny, x: 1, to: [{networks: [10.0.0.0/8]}]}]",
    )))
    .unwrap();
    assert_eq!(p.egress.len(), 1);
}

#[test]
fn invalid_objects_name_object_field_and_value() {
    let rules26 = vec!["{action: Deny, to: [{namespaces: {}}]}"; 26].join(", ");
    let nets26 = vec!["10.0.0.0/8"; 26].join(", ");
    let long = "x".repeat(101);
    let cases: Vec<(String, &str, &str)> = vec![
        (
            spec("").replace("tier: Admin", "tier: Developer"),
            "spec.tier",
            "Developer",
        ),
        (
            spec("").replace("tier: Admin, ", ""),
            "spec.tier",
            "Admin or Baseline",
        ),
        (
            spec("").replace("priority: 1", "priority: 1001"),
            "spec.priority",
            "1001",
        ),
        (
            spec("").replace("priority: 1", "priority: -1"),
            "spec.priority",
            "-1",
        ),
        (
            spec("").replace("priority: 1", "priority: \"1\""),
            "spec.priority",
            "0-1000",
        ),
        (
            spec("").replace("priority: 1, ", ""),
            "spec.priority",
            "0-1000",
        ),
        (
            spec("").replace(
                "{namespaces: {}}",
                "{namespaces: {}, pods: {namespaceSelector: {}, podSelector: {}}}",
            ),
            "spec.subject",
            "exactly one of namespaces or pods",
        ),
        (
            spec("").replace(", subject: {namespaces: {}}", ""),
            "spec.subject",
            "exactly one",
        ),
        (
            spec("").replace("{namespaces: {}}", "{}"),
            "spec.subject",
            "exactly one",
        ),
        (
            spec("").replace("{namespaces: {}}", "{pods: {podSelector: {}}}"),
            "spec.subject.pods.namespaceSelector",
            "label selector",
        ),
        (
            spec("").replace(
                "{namespaces: {}}",
                "{namespaces: {matchExpressions: [{key: a, operator: Has}]}}",
            ),
            "spec.subject.namespaces.matchExpressions[0].operator",
            "Has",
        ),
        (
            egress("{action: Allow, to: [{namespaces: {}}]}"),
            "spec.egress[0].action",
            "Allow",
        ),
        (
            egress("{to: [{namespaces: {}}]}"),
            "spec.egress[0].action",
            "Accept, Deny or Pass",
        ),
        (egress("{action: Deny}"), "spec.egress[0].to", "1 to 25"),
        (
            egress("{action: Deny, to: []}"),
            "spec.egress[0].to",
            "1 to 25",
        ),
        (
            egress(&format!(
                "{{name: {long}, action: Deny, to: [{{namespaces: {{}}}}]}}"
            )),
            "spec.egress[0].name",
            "at most 100 characters",
        ),
        (
            spec(&format!(", egress: [{rules26}]")),
            "spec.egress",
            "26 items",
        ),
        (
            spec(&format!(", ingress: [{}]", rules26.replace("to:", "from:"))),
            "spec.ingress",
            "at most 25",
        ),
        (
            egress(
                "{action: Deny, to: [{namespaces: {}}], protocols: [{tcp: {destinationPort: {number: 0}}}]}",
            ),
            "spec.egress[0].protocols[0].tcp.destinationPort.number",
            "0",
        ),
        (
            egress(
                "{action: Deny, to: [{namespaces: {}}], protocols: [{udp: {destinationPort: {number: 70000}}}]}",
            ),
            "spec.egress[0].protocols[0].udp.destinationPort.number",
            "70000",
        ),
        (
            egress(
                "{action: Deny, to: [{namespaces: {}}], protocols: [{tcp: {destinationPort: {range: {start: 90, end: 80}}}}]}",
            ),
            "spec.egress[0].protocols[0].tcp.destinationPort.range.end",
            "a port above start (90)",
        ),
        (
            egress(
                "{action: Deny, to: [{namespaces: {}}], protocols: [{tcp: {destinationPort: {range: {start: 80, end: 80}}}}]}",
            ),
            "range.end",
            "80",
        ),
        (
            egress(
                "{action: Deny, to: [{namespaces: {}}], protocols: [{tcp: {destinationPort: {number: 80, range: {start: 1, end: 2}}}}]}",
            ),
            "spec.egress[0].protocols[0].tcp.destinationPort",
            "exactly one of number",
        ),
        (
            egress("{action: Deny, to: [{namespaces: {}}], protocols: [{tcp: {}}]}"),
            "spec.egress[0].protocols[0].tcp.destinationPort",
            "a port",
        ),
        (
            egress(
                "{action: Deny, to: [{namespaces: {}}], protocols: [{tcp: {destinationPort: {number: 1}}, udp: {destinationPort: {number: 1}}}]}",
            ),
            "spec.egress[0].protocols[0]",
            "tcp, udp",
        ),
        (
            egress("{action: Deny, to: [{namespaces: {}}], protocols: []}"),
            "spec.egress[0].protocols",
            "1 to 25",
        ),
        (
            egress("{action: Deny, to: [{networks: [10.0.0.0/8, 10.0.0.0/8, 10.0.0.0/33]}]}"),
            "spec.egress[0].to[0].networks[2]",
            "10.0.0.0/33",
        ),
        (
            egress("{action: Deny, to: [{networks: [bad]}]}"),
            "networks[0]",
            "bad",
        ),
        (
            egress("{action: Deny, to: [{networks: []}]}"),
            "spec.egress[0].to[0].networks",
            "1 to 25",
        ),
        (
            egress(&format!("{{action: Deny, to: [{{networks: [{nets26}]}}]}}")),
            "networks",
            "26 items",
        ),
        (
            egress(
                "{action: Deny, to: [{networks: [10.0.0.0/8]}], protocols: [{destinationNamedPort: web}]}",
            ),
            "spec.egress[0].protocols[0].destinationNamedPort",
            "no named port",
        ),
        (
            egress("{action: Deny, to: [{nodes: {matchLabels: {a: b}}}]}"),
            "spec.egress[0].to[0].nodes",
            "not supported by nftkit",
        ),
        (
            egress("{action: Deny, to: [{domainNames: [example.com]}]}"),
            "spec.egress[0].to[0].domainNames",
            "not supported by nftkit",
        ),
        (
            egress("{action: Deny, to: [{namespaces: {}, networks: [10.0.0.0/8]}]}"),
            "spec.egress[0].to[0]",
            "exactly one of namespaces, pods or networks",
        ),
        (
            spec(", ingress: [{action: Deny, from: [{networks: [10.0.0.0/8]}]}]"),
            "spec.ingress[0].from[0].networks",
            "egress only",
        ),
        (
            egress("{action: Deny, to: [7]}"),
            "spec.egress[0].to[0]",
            "a peer",
        ),
        (spec(", egress: {}"), "spec.egress", "a list"),
        (
            spec("").replace(
                "policy.networking.k8s.io/v1alpha2",
                "policy.networking.k8s.io/v1alpha1",
            ),
            "apiVersion",
            "v1alpha1",
        ),
        (
            "kind: ClusterNetworkPolicy\nmetadata: {name: c}\n".into(),
            "spec",
            "ClusterNetworkPolicySpec",
        ),
    ];
    for (text, field, value) in cases {
        let e = parse("f.yaml", &text).expect_err(&text);
        let msg = e.to_string();
        assert_eq!(e.exit_code(), 2, "{msg}");
        assert!(
            msg.contains("f.yaml: ClusterNetworkPolicy c field ")
                && msg.contains(field)
                && msg.contains(value),
            "{text}\n=> {msg}"
        );
        assert_eq!(msg.lines().count(), 1, "{msg}");
    }
}

#[test]
fn hostile_input_never_panics() {
    for v in [
        serde_json::json!(null),
        serde_json::json!([]),
        serde_json::json!({"metadata": {"name": "c"}, "spec": []}),
        serde_json::json!({"metadata": {"name": "c"}, "spec": {"tier": "Admin", "priority": 1e30, "subject": {}}}),
        serde_json::json!({"metadata": {"name": "c"}, "spec": {"tier": "Admin", "priority": 1,
            "subject": {"pods": 3}, "egress": [{"action": "Deny", "to": [{"pods": []}]}]}}),
    ] {
        assert!(cluster_policy(&v).is_err(), "{v}");
    }
}
