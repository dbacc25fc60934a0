//! The policy objects of the conformance tests, built in Rust. Each fixture function
//! returns the objects one upstream test starts from, with the semantics of upstream's
//! fixture of that test (names, tiers, priorities, subjects, rule order, actions, peers,
//! ports, networks), so that the tests' mutations (swap rules by index, change an action
//! or a priority, prepend a rule) address the same rules.
//!
//! Shapes: [`cnp`] starts a ClusterNetworkPolicy (`policy.networking.k8s.io/v1alpha2`);
//! its subject and its rules' peers are [`Peer`]s; a rule's `protocols` are a list of
//! [`Port`]s, [`ALL`] (none) for every port. Rules are appended in order with
//! `accept_to`/`deny_to`/`pass_to` (egress) and `accept_from`/`deny_from`/`pass_from`
//! (ingress).

use serde_json::{Value, json};

use super::harness::NS_PREFIX;

#[derive(Clone, Copy, Debug)]
pub enum Tier {
    Admin,
    Baseline,
}

#[derive(Clone, Copy, Debug)]
pub enum Action {
    Accept,
    Deny,
    Pass,
}

use Action::*;

/// One entry of a rule's `protocols`: a destination port number.
#[derive(Clone, Copy, Debug)]
pub enum Port {
    Tcp(u16),
    Udp(u16),
    Sctp(u16),
}

use Port::*;

impl Port {
    fn to_json(self) -> Value {
        let (proto, number) = match self {
            Tcp(n) => ("tcp", n),
            Udp(n) => ("udp", n),
            Sctp(n) => ("sctp", n),
        };
        json!({ proto: {"destinationPort": {"number": number}} })
    }
}

fn house_label(house: &str) -> Value {
    json!({"matchLabels": {"conformance-house": house}})
}

/// A subject or a peer.
#[derive(Clone, Copy, Debug)]
pub enum Peer<'a> {
    /// The namespace of a house, selected by its `kubernetes.io/metadata.name`.
    NsNamed(&'a str),
    /// Namespaces labelled `conformance-house: <house>`.
    NsHouse(&'a str),
    /// Pods labelled `conformance-house: <house>` in namespaces labelled the same.
    PodsHouse(&'a str),
    /// CIDRs.
    Networks(&'a [&'a str]),
}

use Peer::*;

impl Peer<'_> {
    fn to_json(self) -> Value {
        match self {
            NsNamed(house) => json!({"namespaces": {"matchLabels":
                {"kubernetes.io/metadata.name": format!("{NS_PREFIX}{house}")}}}),
            NsHouse(house) => json!({ "namespaces": house_label(house) }),
            PodsHouse(house) => json!({"pods":
                {"namespaceSelector": house_label(house), "podSelector": house_label(house)}}),
            Networks(cidrs) => json!({ "networks": cidrs }),
        }
    }
}

/// A rule's `protocols` when it covers every port.
pub const ALL: &[Port] = &[];

/// A ClusterNetworkPolicy under construction.
pub struct Cnp {
    name: String,
    tier: Tier,
    priority: u32,
    subject: Value,
    ingress: Vec<Value>,
    egress: Vec<Value>,
}

/// Starts a ClusterNetworkPolicy.
pub fn cnp(name: &str, tier: Tier, priority: u32, subject: Peer) -> Cnp {
    Cnp {
        name: name.to_string(),
        tier,
        priority,
        subject: subject.to_json(),
        ingress: Vec::new(),
        egress: Vec::new(),
    }
}

fn rule(name: &str, action: Action, peer_key: &str, peer: Peer, ports: &[Port]) -> Value {
    let mut r = json!({"name": name, "action": format!("{action:?}"), peer_key: [peer.to_json()]});
    if !ports.is_empty() {
        r["protocols"] = ports.iter().map(|p| p.to_json()).collect();
    }
    r
}

impl Cnp {
    /// Appends an ingress rule from one peer.
    pub fn ingress(mut self, name: &str, action: Action, from: Peer, ports: &[Port]) -> Cnp {
        self.ingress.push(rule(name, action, "from", from, ports));
        self
    }

    /// Appends an egress rule to one peer.
    pub fn egress(mut self, name: &str, action: Action, to: Peer, ports: &[Port]) -> Cnp {
        self.egress.push(rule(name, action, "to", to, ports));
        self
    }

    pub fn accept_from(self, name: &str, from: Peer, ports: &[Port]) -> Cnp {
        self.ingress(name, Accept, from, ports)
    }

    pub fn deny_from(self, name: &str, from: Peer, ports: &[Port]) -> Cnp {
        self.ingress(name, Deny, from, ports)
    }

    pub fn pass_from(self, name: &str, from: Peer, ports: &[Port]) -> Cnp {
        self.ingress(name, Pass, from, ports)
    }

    pub fn accept_to(self, name: &str, to: Peer, ports: &[Port]) -> Cnp {
        self.egress(name, Accept, to, ports)
    }

    pub fn deny_to(self, name: &str, to: Peer, ports: &[Port]) -> Cnp {
        self.egress(name, Deny, to, ports)
    }

    pub fn pass_to(self, name: &str, to: Peer, ports: &[Port]) -> Cnp {
        self.egress(name, Pass, to, ports)
    }

    pub fn build(self) -> Value {
        let mut spec = json!({"tier": format!("{:?}", self.tier), "priority": self.priority,
            "subject": self.subject});
        if !self.ingress.is_empty() {
            spec["ingress"] = Value::Array(self.ingress);
        }
        if !self.egress.is_empty() {
            spec["egress"] = Value::Array(self.egress);
        }
        json!({"apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
            "metadata": {"name": self.name}, "spec": spec})
    }
}

/// A NetworkPolicy in the namespace of `house`.
pub fn network_policy(house: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": format!("{NS_PREFIX}{house}")}, "spec": spec})
}

/// NetworkPolicy `from`/`to` peers: namespaces labelled `conformance-house: <house>`.
pub fn np_from_house(house: &str) -> Value {
    json!([{ "namespaceSelector": house_label(house) }])
}

const GRY: Peer = NsNamed("gryffindor");
const SLY: Peer = NsNamed("slytherin");
const HUF: Peer = NsNamed("hufflepuff");
const RAV: Peer = NsNamed("ravenclaw");

// Admin tier: one policy per test; the tests check rule order by swapping rules.

pub fn admin_egress_tcp() -> Vec<Value> {
    let p = cnp("egress-tcp", Tier::Admin, 6, GRY)
        .accept_to("allow-to-ravenclaw-everything", RAV, ALL)
        .deny_to("deny-to-ravenclaw-everything", RAV, ALL)
        .pass_to("pass-to-ravenclaw-everything", RAV, ALL)
        .deny_to("deny-to-slytherin-at-port-80", SLY, &[Tcp(80)])
        .pass_to("pass-to-slytherin-at-port-80", SLY, &[Tcp(80)])
        .accept_to("allow-to-hufflepuff-at-port-8080", HUF, &[Tcp(8080)])
        .deny_to("deny-to-hufflepuff-everything-else", HUF, ALL);
    vec![p.build()]
}

pub fn admin_egress_udp() -> Vec<Value> {
    let p = cnp("egress-udp", Tier::Admin, 7, HUF)
        .accept_to("allow-to-ravenclaw-everything", RAV, ALL)
        .deny_to("deny-to-ravenclaw-everything", RAV, ALL)
        .pass_to("pass-to-ravenclaw-everything", RAV, ALL)
        .deny_to("deny-to-slytherin-at-port-5353", SLY, &[Udp(5353)])
        .pass_to("pass-to-slytherin-at-port-5353", SLY, &[Udp(5353)])
        .accept_to("allow-to-gryffindor-at-port-53", GRY, &[Udp(53)])
        .deny_to("deny-to-gryffindor-everything-else", GRY, ALL);
    vec![p.build()]
}

pub fn admin_egress_sctp() -> Vec<Value> {
    let p = cnp("egress-sctp", Tier::Admin, 8, RAV)
        .accept_to("allow-to-gryffindor-everything", GRY, ALL)
        .deny_to("deny-to-gryffindor-everything", GRY, ALL)
        .pass_to("pass-to-gryffindor-everything", GRY, ALL)
        .deny_to("deny-to-slytherin-at-port-9003", SLY, &[Sctp(9003)])
        .pass_to("pass-to-slytherin-at-port-9003", SLY, &[Sctp(9003)])
        .accept_to("allow-to-hufflepuff-at-port-9003", HUF, &[Sctp(9003)])
        .deny_to("deny-to-hufflepuff-everything-else", HUF, ALL);
    vec![p.build()]
}

pub fn admin_ingress_tcp() -> Vec<Value> {
    let p = cnp("ingress-tcp", Tier::Admin, 3, GRY)
        .accept_from("allow-from-ravenclaw-everything", RAV, ALL)
        .deny_from("deny-from-ravenclaw-everything", RAV, ALL)
        .pass_from("pass-from-ravenclaw-everything", RAV, ALL)
        .deny_from("deny-from-slytherin-at-port-80", SLY, &[Tcp(80)])
        .pass_from("pass-from-slytherin-at-port-80", SLY, &[Tcp(80)])
        .accept_from("allow-from-hufflepuff-at-port-80", HUF, &[Tcp(80)])
        .deny_from("deny-from-hufflepuff-everything-else", HUF, ALL);
    vec![p.build()]
}

pub fn admin_ingress_udp() -> Vec<Value> {
    let p = cnp("ingress-udp", Tier::Admin, 4, HUF)
        .accept_from("allow-from-ravenclaw-everything", RAV, ALL)
        .deny_from("deny-from-ravenclaw-everything", RAV, ALL)
        .pass_from("pass-from-ravenclaw-everything", RAV, ALL)
        .deny_from("deny-from-slytherin-at-port-5353", SLY, &[Udp(5353)])
        .pass_from("pass-from-slytherin-at-port-5353", SLY, &[Udp(5353)])
        .accept_from("allow-from-gryffindor-at-port-53", GRY, &[Udp(53)])
        .deny_from("deny-from-gryffindor-everything-else", GRY, ALL);
    vec![p.build()]
}

pub fn admin_ingress_sctp() -> Vec<Value> {
    let p = cnp("ingress-sctp", Tier::Admin, 5, RAV)
        .accept_from("allow-from-gryffindor-everything", GRY, ALL)
        .deny_from("deny-from-gryffindor-everything", GRY, ALL)
        .pass_from("pass-from-gryffindor-everything", GRY, ALL)
        .deny_from("deny-from-slytherin-at-port-9003", SLY, &[Sctp(9003)])
        .pass_from("pass-from-slytherin-at-port-9003", SLY, &[Sctp(9003)])
        .accept_from("allow-from-hufflepuff-at-port-9003", HUF, &[Sctp(9003)])
        .deny_from("deny-from-hufflepuff-everything-else", HUF, ALL);
    vec![p.build()]
}

/// Ports of the combined (egress and ingress) fixtures' slytherin rules.
const SLY_PORTS: &[Port] = &[Tcp(80), Udp(53), Sctp(9003)];
/// Ports of their hufflepuff Accept rules, egress and ingress.
const HUF_TO_PORTS: &[Port] = &[Tcp(8080), Udp(5353), Sctp(9003)];
const HUF_FROM_PORTS: &[Port] = &[Tcp(80), Udp(5353), Sctp(9003)];

pub fn admin_gress() -> Vec<Value> {
    let p = cnp("gress-rules", Tier::Admin, 15, GRY)
        .accept_to("allow-to-ravenclaw-everything", RAV, ALL)
        .deny_to("deny-to-ravenclaw-everything", RAV, ALL)
        .pass_to("pass-to-ravenclaw-everything", RAV, ALL)
        .deny_to("deny-to-slytherin-at-ports-80-53-9003", SLY, SLY_PORTS)
        .pass_to("pass-to-slytherin-at-port-80-53-9003", SLY, SLY_PORTS)
        .accept_to(
            "allow-to-hufflepuff-at-ports-8080-5353-9003",
            HUF,
            HUF_TO_PORTS,
        )
        .deny_to("deny-to-hufflepuff-everything-else", HUF, ALL)
        .accept_from("allow-from-ravenclaw-everything", RAV, ALL)
        .deny_from("deny-from-ravenclaw-everything", RAV, ALL)
        .pass_from("pass-from-ravenclaw-everything", RAV, ALL)
        .deny_from("deny-from-slytherin-at-port-80-53-9003", SLY, SLY_PORTS)
        .pass_from("pass-from-slytherin-at-port-80-53-9003", SLY, SLY_PORTS)
        .accept_from(
            "allow-from-hufflepuff-at-port-80-5353-9003",
            HUF,
            HUF_FROM_PORTS,
        )
        .deny_from("deny-from-hufflepuff-everything-else", HUF, ALL);
    vec![p.build()]
}

const ANY_ADDRESS: Peer = Networks(&["0.0.0.0/0", "::/0"]);
const GRY_PODS: Peer = PodsHouse("gryffindor");
const SLY_PODS: Peer = PodsHouse("slytherin");

/// The test prepends its own `networks` Accept rule (pod IPs known only at run time).
pub fn admin_egress_inline_cidr() -> Vec<Value> {
    let p = cnp("inline-cidr-as-peers-example", Tier::Admin, 85, GRY_PODS)
        .accept_to("allow-egress-to-slytherin", SLY_PODS, ALL)
        .deny_to("deny-egress-to-internet", ANY_ADDRESS, ALL);
    vec![p.build()]
}

/// Deny at priority 50, Pass at 60 (the test moves it to 40), Baseline Accept below.
pub fn admin_priority_field() -> Vec<Value> {
    let both_ways = |name: &str, tier: Tier, priority: u32, verb: &str, action: Action| {
        let from_rule = format!("{verb}-all-ingress-from-slytherin");
        let to_rule = format!("{verb}-all-egress-to-slytherin");
        cnp(name, tier, priority, GRY_PODS)
            .ingress(&from_rule, action, SLY_PODS, ALL)
            .egress(&to_rule, action, SLY_PODS, ALL)
            .build()
    };
    vec![
        both_ways("priority-50-example", Tier::Admin, 50, "deny", Deny),
        both_ways(
            "old-priority-60-new-priority-40-example",
            Tier::Admin,
            60,
            "pass",
            Pass,
        ),
        both_ways("default", Tier::Baseline, 10, "allow", Accept),
    ]
}

/// Admin Deny (the test turns it into Pass), a NetworkPolicy allowing slytherin both
/// ways, and a Baseline Deny.
pub fn integration_admin_np_baseline() -> Vec<Value> {
    let deny_slytherin = |name: &str, tier: Tier| {
        cnp(name, tier, 10, NsHouse("gryffindor"))
            .deny_from("deny-all-ingress-from-slytherin", NsHouse("slytherin"), ALL)
            .deny_to("deny-all-egress-to-slytherin", NsHouse("slytherin"), ALL)
            .build()
    };
    let np = network_policy(
        "gryffindor",
        "allow-gress-from-to-slytherin-to-gryffindor",
        json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": np_from_house("slytherin")}],
            "egress": [{"to": np_from_house("slytherin")}]}),
    );
    vec![
        deny_slytherin("pass-example", Tier::Admin),
        np,
        deny_slytherin("default", Tier::Baseline),
    ]
}

// Baseline tier: one policy named `default` at priority 10; no Pass rules.

fn baseline(subject: Peer) -> Cnp {
    cnp("default", Tier::Baseline, 10, subject)
}

pub fn baseline_egress_tcp() -> Vec<Value> {
    let p = baseline(GRY)
        .accept_to("allow-to-ravenclaw-everything", RAV, ALL)
        .deny_to("deny-to-ravenclaw-everything", RAV, ALL)
        .deny_to("deny-to-slytherin-at-port-80", SLY, &[Tcp(80)])
        .accept_to("allow-to-hufflepuff-at-port-8080", HUF, &[Tcp(8080)])
        .deny_to("deny-to-hufflepuff-everything-else", HUF, ALL);
    vec![p.build()]
}

pub fn baseline_egress_udp() -> Vec<Value> {
    let p = baseline(HUF)
        .accept_to("allow-to-ravenclaw-everything", RAV, ALL)
        .deny_to("deny-to-ravenclaw-everything", RAV, ALL)
        .deny_to("deny-to-slytherin-at-port-5353", SLY, &[Udp(5353)])
        .accept_to("allow-to-gryffindor-at-port-53", GRY, &[Udp(53)])
        .deny_to("deny-to-gryffindor-everything-else", GRY, ALL);
    vec![p.build()]
}

pub fn baseline_egress_sctp() -> Vec<Value> {
    let p = baseline(RAV)
        .accept_to("allow-to-gryffindor-everything", GRY, ALL)
        .deny_to("deny-to-gryffindor-everything", GRY, ALL)
        .deny_to("deny-to-slytherin-at-port-9003", SLY, &[Sctp(9003)])
        .accept_to("allow-to-hufflepuff-at-port-9003", HUF, &[Sctp(9003)])
        .deny_to("deny-to-hufflepuff-everything-else", HUF, ALL);
    vec![p.build()]
}

pub fn baseline_ingress_tcp() -> Vec<Value> {
    let p = baseline(GRY)
        .accept_from("allow-from-ravenclaw-everything", RAV, ALL)
        .deny_from("deny-from-ravenclaw-everything", RAV, ALL)
        .deny_from("deny-from-slytherin-at-port-80", SLY, &[Tcp(80)])
        .accept_from("allow-from-hufflepuff-at-port-80", HUF, &[Tcp(80)])
        .deny_from("deny-from-hufflepuff-everything-else", HUF, ALL);
    vec![p.build()]
}

pub fn baseline_ingress_udp() -> Vec<Value> {
    let p = baseline(HUF)
        .accept_from("allow-from-ravenclaw-everything", RAV, ALL)
        .deny_from("deny-from-ravenclaw-everything", RAV, ALL)
        .deny_from("deny-from-slytherin-at-port-5353", SLY, &[Udp(5353)])
        .accept_from("allow-from-gryffindor-at-port-53", GRY, &[Udp(53)])
        .deny_from("deny-from-gryffindor-everything-else", GRY, ALL);
    vec![p.build()]
}

pub fn baseline_ingress_sctp() -> Vec<Value> {
    let p = baseline(RAV)
        .accept_from("allow-from-gryffindor-everything", GRY, ALL)
        .deny_from("deny-from-gryffindor-everything", GRY, ALL)
        .deny_from("deny-from-slytherin-at-port-9003", SLY, &[Sctp(9003)])
        .accept_from("allow-from-hufflepuff-at-port-9003", HUF, &[Sctp(9003)])
        .deny_from("deny-from-hufflepuff-everything-else", HUF, ALL);
    vec![p.build()]
}

/// The hufflepuff egress Accept covers SCTP 9003 too, though its name lists 8080 and 5353.
pub fn baseline_gress() -> Vec<Value> {
    let p = baseline(GRY)
        .accept_to("allow-to-ravenclaw-everything", RAV, ALL)
        .deny_to("deny-to-ravenclaw-everything", RAV, ALL)
        .deny_to("deny-to-slytherin-at-ports-80-53-9003", SLY, SLY_PORTS)
        .accept_to("allow-to-hufflepuff-at-ports-8080-5353", HUF, HUF_TO_PORTS)
        .deny_to("deny-to-hufflepuff-everything-else", HUF, ALL)
        .accept_from("allow-from-ravenclaw-everything", RAV, ALL)
        .deny_from("deny-from-ravenclaw-everything", RAV, ALL)
        .deny_from("deny-from-slytherin-at-port-80-53-9003", SLY, SLY_PORTS)
        .accept_from(
            "allow-from-hufflepuff-at-port-80-5353-9003",
            HUF,
            HUF_FROM_PORTS,
        )
        .deny_from("deny-from-hufflepuff-everything-else", HUF, ALL);
    vec![p.build()]
}

/// As [`admin_egress_inline_cidr`], in the Baseline tier with a namespace subject.
pub fn baseline_egress_inline_cidr() -> Vec<Value> {
    let p = baseline(GRY)
        .accept_to("allow-egress-to-slytherin", SLY_PODS, ALL)
        .deny_to("deny-egress-to-internet", ANY_ADDRESS, ALL);
    vec![p.build()]
}
