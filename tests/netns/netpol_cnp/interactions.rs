//! Tier × NetworkPolicy interactions stated outright (upstream's integration test covers
//! only part of them): an Admin Pass hands the decision to NetworkPolicy (which may allow
//! or isolate), NetworkPolicy decides before the Baseline tier, and an Admin Deny (or
//! Accept) decides before NetworkPolicy.

use serde_json::json;

use super::harness::*;
use super::policies::{ALL, Peer::NsHouse, Tier, cnp, network_policy, np_from_house};

#[test]
fn cnp_interaction_admin_pass_delegates_to_networkpolicy() {
    let admin = cnp(
        "pass-from-slytherin",
        Tier::Admin,
        10,
        NsHouse("gryffindor"),
    )
    .pass_from("pass-from-slytherin", NsHouse("slytherin"), ALL)
    .build();
    let np_allow = network_policy(
        "gryffindor",
        "np",
        json!({"podSelector": {}, "ingress": [{"from": np_from_house("slytherin")}]}),
    );
    let mut r = Run::new("AdminPassToNetworkPolicy", vec![admin, np_allow]);
    r.phase("Admin Pass, NetworkPolicy allows slytherin: allowed");
    r.probe(&[
        p("draco-malfoy-0", "tcp", "harry-potter-0", 80, true),
        p("draco-malfoy-1", "udp", "harry-potter-1", 53, true),
        // Not passed by the Admin rule; the NetworkPolicy isolates the pod.
        p("luna-lovegood-0", "tcp", "harry-potter-0", 80, false),
    ]);
    r.phase("Admin Pass, NetworkPolicy isolates (allows nothing): denied");
    r.put(network_policy(
        "gryffindor",
        "np",
        json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
    ));
    r.probe(&[
        p("draco-malfoy-0", "tcp", "harry-potter-0", 80, false),
        p("draco-malfoy-1", "udp", "harry-potter-1", 53, false),
        p("harry-potter-0", "tcp", "draco-malfoy-0", 80, true),
    ]);
    r.phase("Admin Pass, no NetworkPolicy and no Baseline: the default allows");
    r.delete("NetworkPolicy", "np");
    r.probe(&[
        p("draco-malfoy-0", "tcp", "harry-potter-0", 80, true),
        p("luna-lovegood-0", "tcp", "harry-potter-0", 8080, true),
    ]);
    r.finish();
}

#[test]
fn cnp_interaction_baseline_deny_overridden_by_networkpolicy_allow() {
    let baseline = cnp("default", Tier::Baseline, 10, NsHouse("gryffindor"))
        .deny_from("deny-from-slytherin", NsHouse("slytherin"), ALL)
        .deny_to("deny-to-slytherin", NsHouse("slytherin"), ALL)
        .build();
    let mut r = Run::new("BaselineDenyUnderNetworkPolicy", vec![baseline]);
    r.phase("Baseline Deny alone: denied both ways");
    r.probe(&[
        p("draco-malfoy-0", "tcp", "harry-potter-0", 80, false),
        p("draco-malfoy-0", "udp", "harry-potter-0", 53, false),
        p("harry-potter-1", "tcp", "draco-malfoy-1", 80, false),
        p("cedric-diggory-0", "tcp", "harry-potter-0", 80, true),
    ]);
    r.phase("NetworkPolicy allows ingress from slytherin: it wins over the Baseline Deny");
    r.put(network_policy(
        "gryffindor",
        "allow-from-slytherin",
        json!({"podSelector": {}, "ingress": [{"from": np_from_house("slytherin")}]}),
    ));
    r.probe(&[
        p("draco-malfoy-0", "tcp", "harry-potter-0", 80, true),
        p("draco-malfoy-0", "udp", "harry-potter-0", 53, true),
        // Ingress-only policy: egress is still the Baseline's.
        p("harry-potter-1", "tcp", "draco-malfoy-1", 80, false),
        // The NetworkPolicy isolates ingress for everything else.
        p("cedric-diggory-0", "tcp", "harry-potter-0", 80, false),
    ]);
    r.finish();
}

#[test]
fn cnp_interaction_admin_deny_beats_networkpolicy_allow() {
    let admin = cnp("admin", Tier::Admin, 5, NsHouse("gryffindor"))
        .deny_from("from-slytherin", NsHouse("slytherin"), ALL)
        .deny_to("to-ravenclaw", NsHouse("ravenclaw"), ALL)
        .build();
    let np = network_policy(
        "gryffindor",
        "allow-all",
        json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"],
            "ingress": [{}], "egress": [{}]}),
    );
    let mut r = Run::new("AdminDenyOverNetworkPolicy", vec![admin, np]);
    r.phase("Admin Deny, NetworkPolicy allows everything: denied");
    r.probe(&[
        p("draco-malfoy-0", "tcp", "harry-potter-0", 80, false),
        p("draco-malfoy-1", "udp", "harry-potter-1", 53, false),
        p("harry-potter-0", "tcp", "luna-lovegood-0", 8080, false),
        p("harry-potter-0", "udp", "luna-lovegood-1", 5353, false),
        p("cedric-diggory-0", "tcp", "harry-potter-0", 80, true),
        p("harry-potter-1", "tcp", "cedric-diggory-1", 80, true),
    ]);
    r.phase("Admin Accept, NetworkPolicy isolates: allowed");
    r.set_action("admin", "ingress", 0, "Accept");
    r.put(network_policy(
        "gryffindor",
        "allow-all",
        json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
    ));
    r.probe(&[
        p("draco-malfoy-0", "tcp", "harry-potter-0", 80, true),
        p("draco-malfoy-1", "udp", "harry-potter-1", 53, true),
        p("cedric-diggory-0", "tcp", "harry-potter-0", 80, false),
    ]);
    r.finish();
}
