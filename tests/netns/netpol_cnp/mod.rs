//! network-policy-api's ClusterNetworkPolicy conformance suite (v1alpha2, standard
//! profile), ported as real-packet truth tables: the policies of upstream's fixtures
//! (rebuilt in Rust by [`policies`]), upstream's mutations and upstream's `PokeServer`
//! expectations, against nftkit's rules in a node namespace that routes between eight pod
//! namespaces ([`harness`]). `cnp_harness_selfcheck` checks the harness itself with
//! NetworkPolicy only; `interactions` adds explicit tier × NetworkPolicy cases.
//!
//! Every probe is asserted; none is skipped. TCP and UDP probes are real packets. SCTP
//! probes are real packets where SCTP works inside a namespace ([`harness::sctp_support`]);
//! elsewhere they are model probes: `nftkit netpol explain ... --port PORT/sctp` against the
//! file the phase applied, i.e. the compiled ruleset (its SCTP rules: l4proto 132, dport)
//! run through nftkit's nf_tables evaluator, not the kernel. Their expectation is asserted
//! like a packet probe's and their results read `[model] sctp ...`, with the reason SCTP is
//! unusable printed. A test whose probes ran neither way fails.

mod admin;
mod baseline;
mod harness;
mod interactions;
mod policies;

use harness::*;
use policies::network_policy;
use serde_json::json;

/// The harness without any ClusterNetworkPolicy: with no policy everything is reachable on
/// every port (the servers answer with the right identity); a NetworkPolicy default-deny
/// ingress blocks, and the named ports `web`/`dns` of the Pod objects resolve.
#[test]
fn cnp_harness_selfcheck() {
    let mut r = Run::new("harness-selfcheck", vec![]);
    r.phase("no policies: everything allowed");
    let names: Vec<&'static str> = [
        "harry-potter-0",
        "harry-potter-1",
        "draco-malfoy-0",
        "draco-malfoy-1",
        "cedric-diggory-0",
        "cedric-diggory-1",
        "luna-lovegood-0",
        "luna-lovegood-1",
    ]
    .to_vec();
    let mut all = Vec::new();
    for (i, from) in names.iter().enumerate() {
        let to = names[(i + 1) % names.len()];
        for port in TCP_PORTS {
            all.push(p(from, "tcp", to, port, true));
        }
        for port in UDP_PORTS {
            all.push(p(from, "udp", to, port, true));
        }
        for port in SCTP_PORTS {
            all.push(p(from, "sctp", to, port, true));
        }
    }
    all.push(p("harry-potter-0", "tcp", "external", 80, true));
    all.push(p("harry-potter-0", "udp", "external", 5353, true));
    r.probe(&all);

    r.phase("NetworkPolicy default-deny ingress in gryffindor");
    r.put(network_policy(
        "gryffindor",
        "default-deny-ingress",
        json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
    ));
    r.probe(&[
        p("draco-malfoy-0", "tcp", "harry-potter-0", 80, false),
        p("draco-malfoy-0", "tcp", "harry-potter-0", 8080, false),
        p("draco-malfoy-0", "udp", "harry-potter-0", 53, false),
        p("draco-malfoy-0", "udp", "harry-potter-0", 5353, false),
        p("draco-malfoy-0", "sctp", "harry-potter-0", 9003, false),
        p("harry-potter-1", "tcp", "harry-potter-0", 80, false),
        p("harry-potter-0", "tcp", "draco-malfoy-0", 80, true),
        p("harry-potter-0", "udp", "draco-malfoy-0", 53, true),
        p("luna-lovegood-0", "tcp", "cedric-diggory-0", 8080, true),
    ]);

    r.phase("NetworkPolicy allows the named ports web and dns from slytherin");
    r.put(network_policy(
        "gryffindor",
        "allow-named-from-slytherin",
        json!({"podSelector": {}, "ingress": [{
            "from": [{"namespaceSelector": {"matchLabels": {"conformance-house": "slytherin"}}}],
            "ports": [{"port": "web"}, {"protocol": "UDP", "port": "dns"}]}]}),
    ));
    r.probe(&[
        p("draco-malfoy-0", "tcp", "harry-potter-0", 80, true),
        p("draco-malfoy-1", "tcp", "harry-potter-1", 8080, false),
        p("draco-malfoy-0", "udp", "harry-potter-1", 53, true),
        p("draco-malfoy-1", "udp", "harry-potter-0", 5353, false),
        p("luna-lovegood-0", "tcp", "harry-potter-0", 80, false),
        p("luna-lovegood-0", "udp", "harry-potter-0", 53, false),
    ]);
    r.finish();
}
