//! The Baseline tier tests of network-policy-api's conformance suite (v1alpha2, standard
//! profile: `conformance/tests/baseline-admin-network-policy-standard-*.go`), one Rust test
//! per upstream test, its subtests as phases in upstream order with upstream's
//! descriptions. Mutations accumulate as upstream's patches do.

use super::harness::*;
use super::policies;

/// Upstream `CNPBaselineTierEgressTCP`.
#[test]
fn cnp_baseline_tier_egress_tcp() {
    let mut r = Run::new("CNPBaselineTierEgressTCP", policies::baseline_egress_tcp());
    r.phase("Should support an 'allow-egress' policy for TCP protocol; ensure rule ordering is respected");
    r.probe(&[
        p("harry-potter-0", "tcp", "luna-lovegood-0", 80, true),
        p("harry-potter-1", "tcp", "luna-lovegood-0", 8080, true),
    ]);
    r.phase("Should support an 'allow-egress' policy for TCP protocol at the specified port");
    r.probe(&[
        p("harry-potter-0", "tcp", "cedric-diggory-1", 8080, true),
        p("harry-potter-1", "tcp", "cedric-diggory-1", 80, false),
    ]);
    r.phase("Should support an 'deny-egress' policy for TCP protocol; ensure rule ordering is respected");
    r.swap("default", "egress", 0, 1);
    r.probe(&[
        p("harry-potter-0", "tcp", "luna-lovegood-1", 80, false),
        p("harry-potter-1", "tcp", "luna-lovegood-1", 8080, false),
    ]);
    r.phase("Should support a 'deny-egress' policy for TCP protocol at the specified port");
    r.probe(&[
        p("harry-potter-0", "tcp", "draco-malfoy-0", 80, false),
        p("harry-potter-1", "tcp", "draco-malfoy-0", 8080, true),
    ]);
    r.finish();
}

/// Upstream `CNPBaselineTierEgressUDP`.
#[test]
fn cnp_baseline_tier_egress_udp() {
    let mut r = Run::new("CNPBaselineTierEgressUDP", policies::baseline_egress_udp());
    r.phase("Should support an 'allow-egress' policy for UDP protocol; ensure rule ordering is respected");
    r.probe(&[
        p("cedric-diggory-0", "udp", "luna-lovegood-0", 53, true),
        p("cedric-diggory-1", "udp", "luna-lovegood-0", 5353, true),
    ]);
    r.phase("Should support an 'allow-egress' policy for UDP protocol at the specified port");
    r.probe(&[
        p("cedric-diggory-0", "udp", "harry-potter-1", 53, true),
        p("cedric-diggory-1", "udp", "harry-potter-1", 5353, false),
    ]);
    r.phase("Should support an 'deny-egress' policy for UDP protocol; ensure rule ordering is respected");
    r.swap("default", "egress", 0, 1);
    r.probe(&[
        p("cedric-diggory-0", "udp", "luna-lovegood-1", 53, false),
        p("cedric-diggory-1", "udp", "luna-lovegood-1", 5353, false),
    ]);
    r.phase("Should support a 'deny-egress' policy for UDP protocol at the specified port");
    r.probe(&[
        p("cedric-diggory-0", "udp", "draco-malfoy-0", 5353, false),
        p("cedric-diggory-1", "udp", "draco-malfoy-0", 53, true),
    ]);
    r.finish();
}

/// Upstream `CNPBaselineTierEgressSCTP`.
#[test]
fn cnp_baseline_tier_egress_sctp() {
    let mut r = Run::new(
        "CNPBaselineTierEgressSCTP",
        policies::baseline_egress_sctp(),
    );
    r.phase("Should support an 'allow-egress' policy for SCTP protocol; ensure rule ordering is respected");
    r.probe(&[
        p("luna-lovegood-0", "sctp", "harry-potter-0", 9003, true),
        p("luna-lovegood-1", "sctp", "harry-potter-0", 9005, true),
    ]);
    r.phase("Should support an 'allow-egress' policy for SCTP protocol at the specified port");
    r.probe(&[
        p("luna-lovegood-0", "sctp", "cedric-diggory-1", 9003, true),
        p("luna-lovegood-1", "sctp", "cedric-diggory-1", 9005, false),
    ]);
    r.phase("Should support an 'deny-egress' policy for SCTP protocol; ensure rule ordering is respected");
    r.swap("default", "egress", 0, 1);
    r.probe(&[
        p("luna-lovegood-0", "sctp", "harry-potter-1", 9003, false),
        p("luna-lovegood-1", "sctp", "harry-potter-1", 9005, false),
    ]);
    r.phase("Should support a 'deny-egress' policy for SCTP protocol at the specified port");
    r.probe(&[
        p("luna-lovegood-0", "sctp", "draco-malfoy-0", 9003, false),
        p("luna-lovegood-1", "sctp", "draco-malfoy-0", 9005, true),
    ]);
    r.finish();
}

/// Upstream `CNPBaselineTierIngressTCP`.
#[test]
fn cnp_baseline_tier_ingress_tcp() {
    let mut r = Run::new(
        "CNPBaselineTierIngressTCP",
        policies::baseline_ingress_tcp(),
    );
    r.phase("Should support an 'allow-ingress' policy for TCP protocol; ensure rule ordering is respected");
    r.probe(&[
        p("luna-lovegood-0", "tcp", "harry-potter-0", 80, true),
        p("luna-lovegood-1", "tcp", "harry-potter-0", 8080, true),
    ]);
    r.phase("Should support an 'allow-ingress' policy for TCP protocol at the specified port");
    r.probe(&[
        p("cedric-diggory-0", "tcp", "harry-potter-1", 80, true),
        p("cedric-diggory-1", "tcp", "harry-potter-1", 8080, false),
    ]);
    r.phase("Should support an 'deny-ingress' policy for TCP protocol; ensure rule ordering is respected");
    r.swap("default", "ingress", 0, 1);
    r.probe(&[
        p("luna-lovegood-0", "tcp", "harry-potter-1", 80, false),
        p("luna-lovegood-1", "tcp", "harry-potter-1", 8080, false),
    ]);
    r.phase("Should support a 'deny-ingress' policy for TCP protocol at the specified port");
    r.probe(&[
        p("draco-malfoy-0", "tcp", "harry-potter-0", 80, false),
        p("draco-malfoy-1", "tcp", "harry-potter-0", 8080, true),
    ]);
    r.finish();
}

/// Upstream `CNPBaselineTierIngressUDP`.
#[test]
fn cnp_baseline_tier_ingress_udp() {
    let mut r = Run::new(
        "CNPBaselineTierIngressUDP",
        policies::baseline_ingress_udp(),
    );
    r.phase("Should support an 'allow-ingress' policy for UDP protocol; ensure rule ordering is respected");
    r.probe(&[
        p("luna-lovegood-0", "udp", "cedric-diggory-0", 53, true),
        p("luna-lovegood-1", "udp", "cedric-diggory-0", 5353, true),
    ]);
    r.phase("Should support an 'allow-ingress' policy for UDP protocol at the specified port");
    r.probe(&[
        p("harry-potter-0", "udp", "cedric-diggory-1", 53, true),
        p("harry-potter-1", "udp", "cedric-diggory-1", 5353, false),
    ]);
    r.phase("Should support an 'deny-ingress' policy for UDP protocol; ensure rule ordering is respected");
    r.swap("default", "ingress", 0, 1);
    r.probe(&[
        p("luna-lovegood-0", "udp", "cedric-diggory-1", 53, false),
        p("luna-lovegood-1", "udp", "cedric-diggory-1", 5353, false),
    ]);
    r.phase("Should support a 'deny-ingress' policy for UDP protocol at the specified port");
    r.probe(&[
        p("draco-malfoy-0", "udp", "cedric-diggory-0", 5353, false),
        p("draco-malfoy-1", "udp", "cedric-diggory-0", 53, true),
    ]);
    r.finish();
}

/// Upstream `CNPBaselineTierIngressSCTP`.
#[test]
fn cnp_baseline_tier_ingress_sctp() {
    let mut r = Run::new(
        "CNPBaselineTierIngressSCTP",
        policies::baseline_ingress_sctp(),
    );
    r.phase("Should support an 'allow-ingress' policy for SCTP protocol; ensure rule ordering is respected");
    r.probe(&[
        p("harry-potter-0", "sctp", "luna-lovegood-0", 9003, true),
        p("harry-potter-1", "sctp", "luna-lovegood-0", 9005, true),
    ]);
    r.phase("Should support an 'allow-ingress' policy for SCTP protocol at the specified port");
    r.probe(&[
        p("cedric-diggory-0", "sctp", "luna-lovegood-1", 9003, true),
        p("cedric-diggory-1", "sctp", "luna-lovegood-1", 9005, false),
    ]);
    r.phase("Should support an 'deny-ingress' policy for SCTP protocol; ensure rule ordering is respected");
    r.swap("default", "ingress", 0, 1);
    r.probe(&[
        p("harry-potter-0", "sctp", "luna-lovegood-1", 9003, false),
        p("harry-potter-1", "sctp", "luna-lovegood-1", 9005, false),
    ]);
    r.phase("Should support a 'deny-ingress' policy for SCTP protocol at the specified port");
    r.probe(&[
        p("draco-malfoy-0", "sctp", "luna-lovegood-0", 9003, false),
        p("draco-malfoy-1", "sctp", "luna-lovegood-0", 9005, true),
    ]);
    r.finish();
}

/// Upstream `CNPBaselineTierGress`.
#[test]
fn cnp_baseline_tier_gress() {
    let mut r = Run::new("CNPBaselineTierGress", policies::baseline_gress());
    r.phase("Should support an 'allow-gress' policy across different protocols");
    r.probe(&[
        p("harry-potter-0", "tcp", "luna-lovegood-0", 80, true),
        p("harry-potter-1", "udp", "luna-lovegood-0", 53, true),
        p("harry-potter-0", "sctp", "luna-lovegood-0", 9003, true),
        p("luna-lovegood-0", "tcp", "harry-potter-0", 80, true),
        p("luna-lovegood-1", "udp", "harry-potter-0", 53, true),
        p("luna-lovegood-1", "sctp", "harry-potter-0", 9003, true),
    ]);
    r.phase(
        "Should support an 'allow-gress' policy across different protocols at the specified ports",
    );
    r.probe(&[
        p("harry-potter-0", "tcp", "cedric-diggory-1", 8080, true),
        p("harry-potter-1", "tcp", "cedric-diggory-1", 80, false),
        p("harry-potter-0", "udp", "cedric-diggory-1", 5353, true),
        p("harry-potter-1", "udp", "cedric-diggory-1", 53, false),
        p("harry-potter-0", "sctp", "cedric-diggory-1", 9003, true),
        p("harry-potter-1", "sctp", "cedric-diggory-1", 9005, false),
        p("cedric-diggory-0", "tcp", "harry-potter-1", 80, true),
        p("cedric-diggory-1", "tcp", "harry-potter-1", 8080, false),
        p("cedric-diggory-0", "udp", "harry-potter-1", 5353, true),
        p("cedric-diggory-1", "udp", "harry-potter-1", 53, false),
        p("cedric-diggory-0", "sctp", "harry-potter-1", 9003, true),
        p("cedric-diggory-1", "sctp", "harry-potter-1", 9005, false),
    ]);
    r.phase("Should support an 'deny-gress' policy across different protocols");
    r.swap("default", "egress", 0, 1);
    r.swap("default", "ingress", 0, 1);
    r.probe(&[
        p("harry-potter-0", "tcp", "luna-lovegood-1", 80, false),
        p("harry-potter-1", "udp", "luna-lovegood-1", 53, false),
        p("harry-potter-0", "sctp", "luna-lovegood-1", 9003, false),
        p("luna-lovegood-0", "tcp", "harry-potter-1", 80, false),
        p("luna-lovegood-1", "udp", "harry-potter-1", 53, false),
        p("luna-lovegood-1", "sctp", "harry-potter-1", 9003, false),
    ]);
    r.phase(
        "Should support a 'deny-gress' policy across different protocols at the specified ports",
    );
    r.probe(&[
        p("harry-potter-0", "tcp", "draco-malfoy-0", 80, false),
        p("harry-potter-1", "tcp", "draco-malfoy-0", 8080, true),
        p("harry-potter-0", "udp", "draco-malfoy-0", 53, false),
        p("harry-potter-1", "udp", "draco-malfoy-0", 5353, true),
        p("harry-potter-0", "sctp", "draco-malfoy-0", 9003, false),
        p("harry-potter-1", "sctp", "draco-malfoy-0", 9005, true),
        p("draco-malfoy-0", "tcp", "harry-potter-0", 80, false),
        p("draco-malfoy-1", "tcp", "harry-potter-0", 8080, true),
        p("draco-malfoy-0", "udp", "harry-potter-0", 53, false),
        p("draco-malfoy-1", "udp", "harry-potter-0", 5353, true),
        p("draco-malfoy-0", "sctp", "harry-potter-0", 9003, false),
        p("draco-malfoy-1", "sctp", "harry-potter-0", 9005, true),
    ]);
    r.finish();
}

/// Upstream `CNPBaselineTierEgressInlineCIDRPeers`.
#[test]
fn cnp_baseline_tier_egress_inline_cidr_peers() {
    let mut r = Run::new(
        "CNPBaselineTierEgressInlineCIDRPeers",
        policies::baseline_egress_inline_cidr(),
    );
    r.phase("Should support a 'deny-egress' rule policy for egress-cidr-peer");
    r.probe(&[
        p("harry-potter-1", "tcp", "luna-lovegood-0", 80, false),
        p("harry-potter-1", "udp", "luna-lovegood-0", 53, false),
        p("harry-potter-1", "sctp", "luna-lovegood-0", 9003, false),
        p("harry-potter-1", "tcp", "cedric-diggory-0", 80, false),
        p("harry-potter-1", "udp", "cedric-diggory-0", 53, false),
        p("harry-potter-1", "sctp", "cedric-diggory-0", 9003, false),
        p("harry-potter-1", "tcp", "draco-malfoy-0", 80, true),
        p("harry-potter-1", "udp", "draco-malfoy-0", 53, true),
        p("harry-potter-1", "sctp", "draco-malfoy-0", 9003, true),
    ]);
    r.set_house_label(
        "network-policy-conformance-slytherin",
        "denied-namespace-label",
    );
    r.probe(&[
        p("harry-potter-1", "tcp", "draco-malfoy-0", 80, false),
        p("harry-potter-1", "udp", "draco-malfoy-0", 53, false),
        p("harry-potter-1", "sctp", "draco-malfoy-0", 9003, false),
    ]);
    r.set_house_label("network-policy-conformance-slytherin", "slytherin");
    r.probe(&[
        p("harry-potter-1", "tcp", "draco-malfoy-0", 80, true),
        p("harry-potter-1", "udp", "draco-malfoy-0", 53, true),
        p("harry-potter-1", "sctp", "draco-malfoy-0", 9003, true),
    ]);
    r.phase("Should support an 'allow-egress' rule policy for egress-cidr-peer");
    r.prepend_egress_networks(
        "default",
        "allow-egress-to-specific-podIPs",
        "Accept",
        &["luna-lovegood-0", "cedric-diggory-0"],
    );
    r.probe(&[
        p("harry-potter-1", "tcp", "luna-lovegood-0", 80, true),
        p("harry-potter-1", "udp", "luna-lovegood-0", 53, true),
        p("harry-potter-1", "sctp", "luna-lovegood-0", 9003, true),
        p("harry-potter-1", "tcp", "cedric-diggory-0", 80, true),
        p("harry-potter-1", "udp", "cedric-diggory-0", 53, true),
        p("harry-potter-1", "sctp", "cedric-diggory-0", 9003, true),
        p("harry-potter-1", "tcp", "luna-lovegood-1", 80, false),
        p("harry-potter-1", "udp", "luna-lovegood-1", 53, false),
        p("harry-potter-1", "sctp", "luna-lovegood-1", 9003, false),
        p("harry-potter-1", "tcp", "cedric-diggory-1", 80, false),
        p("harry-potter-1", "udp", "cedric-diggory-1", 53, false),
        p("harry-potter-1", "sctp", "cedric-diggory-1", 9003, false),
    ]);
    // Not upstream: the same `networks: 0.0.0.0/0` Deny also covers addresses outside the
    // cluster (the external namespace), and only for the subject's pods.
    r.phase("[nftkit extra] the 0.0.0.0/0 deny rule also covers external addresses");
    r.probe(&[
        p("harry-potter-0", "tcp", "external", 80, false),
        p("harry-potter-0", "udp", "external", 53, false),
        p("luna-lovegood-0", "tcp", "external", 80, true),
        p("luna-lovegood-0", "udp", "external", 53, true),
        p("harry-potter-0", "tcp", "draco-malfoy-1", 8080, true),
    ]);
    r.finish();
}
