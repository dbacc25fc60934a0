//! ClusterNetworkPolicy tiers -> the rules of a local pod's Admin or Baseline chain.
//!
//! A pod's chain holds the rules of every policy of the tier whose subject selects it, by
//! priority (then name: upstream leaves equal priorities to the implementation), each
//! policy's rules in the order written; the first that matches decides:
//!
//! ```text
//! chain egress/Admin/deny-db_pass-monitoring {   # reached by `goto` from egress-admin's map
//!     ip daddr @Admin/deny-db/egress/0-v4 tcp dport 5432 drop       # Deny
//!     ip daddr @Admin/pass-monitoring/egress/0-v4 goto egress-networkpolicy   # Pass
//!     goto egress-networkpolicy                   # no Admin rule matched
//! }
//! ```
//! Accept is `return` (this direction is allowed; the forward chain goes on with the other
//! one), Deny `drop`, Pass `goto` the NetworkPolicy tier (Admin) or `return` (Baseline:
//! the default, allow, is next). Peers are sets of addresses per rule and family (pods
//! and `networks`), declared even while empty so pods coming and going change elements.

use super::cnp::{
    ClusterAction, ClusterPeer, ClusterPolicy, ClusterPort, ClusterRule, PodSet, Tier,
};
use super::index::{Index, Sets, fam_suffix, l4, named_port_groups, push_ips, resolve_named};
use super::ipblock::{self, Range};
use super::manifest::{Cluster, Pod, Protocol};
use super::names::{Direction, object_name};
use super::observe::{LogVerdicts, Observe, log_prefix, log_rule};
use crate::model::{Action, IpFamily, Match, Rule};

/// The policies of each tier, in precedence order.
pub(super) struct Tiers<'c> {
    admin: Vec<&'c ClusterPolicy>,
    baseline: Vec<&'c ClusterPolicy>,
    /// Each rule's pod-independent part, by (tier, policy position, direction, rule).
    shared: std::collections::BTreeMap<(Tier, usize, Direction, usize), Shared>,
}

impl<'c> Tiers<'c> {
    pub fn new(cluster: &'c Cluster) -> Self {
        let of = |tier: Tier| {
            let mut v: Vec<&ClusterPolicy> = cluster
                .cluster_policies
                .iter()
                .filter(|p| p.tier == tier)
                .collect();
            v.sort_by(|a, b| (a.priority, &a.name).cmp(&(b.priority, &b.name)));
            v
        };
        Tiers {
            admin: of(Tier::Admin),
            baseline: of(Tier::Baseline),
            shared: Default::default(),
        }
    }

    /// The `tier` rules for local pod `pod` in `dir` and the names of the policies they
    /// come from; None when no policy of the tier selects it there. An Admin Pass (and an
    /// Admin chain's end) goes to `pass_to`.
    #[allow(clippy::too_many_arguments)]
    pub fn rules(
        &mut self,
        idx: &Index,
        sets: &mut Sets,
        obs: &Observe,
        tier: Tier,
        dir: Direction,
        pod: &Pod,
        pass_to: &str,
    ) -> Option<(Vec<String>, Vec<Rule>)> {
        let policies = match tier {
            Tier::Admin => &self.admin,
            Tier::Baseline => &self.baseline,
        };
        let mut names = Vec::new();
        let mut rules = Vec::new();
        for (position, cnp) in policies.iter().enumerate() {
            let gress = match dir {
                Direction::Ingress => &cnp.ingress,
                Direction::Egress => &cnp.egress,
            };
            if gress.is_empty() || !selects(idx, &cnp.subject, pod) {
                continue;
            }
            names.push(cnp.name.clone());
            for (i, rule) in gress.iter().enumerate() {
                let verdict = match (rule.action, tier) {
                    (ClusterAction::Accept, _) | (ClusterAction::Pass, Tier::Baseline) => {
                        Action::Return
                    }
                    (ClusterAction::Deny, _) => Action::Drop,
                    (ClusterAction::Pass, Tier::Admin) => Action::Goto(pass_to.to_string()),
                };
                let counter = cluster_counter(dir, cnp, rule.action);
                // Deny is logged with --log-verdicts drops, every action with all.
                let logged = match obs.verdicts {
                    LogVerdicts::All => true,
                    LogVerdicts::Drops => rule.action == ClusterAction::Deny,
                    LogVerdicts::None => false,
                };
                let prefix = log_prefix(
                    match rule.action {
                        ClusterAction::Accept => "accept",
                        ClusterAction::Deny => "drop",
                        ClusterAction::Pass => "pass",
                    },
                    &format!(
                        "{}/{}/{}#{i}",
                        dir.name(),
                        cnp.tier.object_prefix(),
                        cnp.name
                    ),
                );
                let shared = self
                    .shared
                    .entry((tier, position, dir, i))
                    .or_insert_with(|| shared(idx, sets, cnp, dir, i, rule));
                for mut matches in rule_matches(shared, dir, rule, pod) {
                    matches.push(counter.clone());
                    let r = Rule {
                        matches,
                        action: verdict.clone(),
                    };
                    if rules.contains(&r) {
                        continue;
                    }
                    if logged {
                        rules.push(log_rule(obs, r.matches.clone(), prefix.clone()));
                    }
                    rules.push(r);
                }
            }
        }
        if names.is_empty() {
            return None;
        }
        if tier == Tier::Admin {
            rules.push(Rule {
                matches: vec![],
                action: Action::Goto(pass_to.to_string()),
            });
        }
        Some((names, rules))
    }
}

/// The named counter of what `cnp`'s rules with `action` decide in `dir`:
/// `<direction>/<Tier>/<policy>/<action>` (capitalised: never a namespace's name, so these
/// stay apart from NetworkPolicy counters; see `counters`).
pub(super) fn cluster_counter(dir: Direction, cnp: &ClusterPolicy, action: ClusterAction) -> Match {
    Match::Count {
        counter: object_name(&[
            dir.name(),
            cnp.tier.object_prefix(),
            &cnp.name,
            action.name(),
        ]),
    }
}

/// Whether `set` selects `pod` (a pod of the cluster: not host-network).
fn selects(idx: &Index, set: &PodSet, pod: &Pod) -> bool {
    let ns_matches = |sel: &super::selector::Selector| {
        idx.ns_labels
            .get(pod.namespace.as_str())
            .is_some_and(|l| sel.matches(l))
    };
    match set {
        PodSet::Namespaces(ns) => ns_matches(ns),
        PodSet::Pods { namespaces, pods } => ns_matches(namespaces) && pods.matches(&pod.labels),
    }
}

/// What a policy's rule `i` compiles to that does not depend on the local pod: built
/// once per build (computing its peers walks every pod of the cluster).
#[derive(Debug, Clone, Default)]
struct Shared {
    /// Match lists (alternatives) for every pod.
    alts: Vec<Vec<Match>>,
    /// The rule's peer sets (family, name), for ingress named ports resolved per pod.
    peer_sets: Vec<(IpFamily, String)>,
}

/// The match lists (alternatives) of a policy's rule `i` for local pod `pod` (the
/// destination for ingress, the source for egress): the shared part, and named ports
/// resolved on `pod` for ingress.
fn rule_matches(shared: &Shared, dir: Direction, rule: &ClusterRule, pod: &Pod) -> Vec<Vec<Match>> {
    let mut out = shared.alts.clone();
    if dir == Direction::Ingress {
        for name in named_ports(rule) {
            for proto in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp] {
                let Some(port) = resolve_named(pod, name, proto) else {
                    continue;
                };
                for (f, set) in &shared.peer_sets {
                    out.push(vec![
                        peer_match(dir, *f, set.clone()),
                        Match::Dport {
                            proto: l4(proto),
                            port,
                        },
                    ]);
                }
            }
        }
    }
    out
}

fn named_ports(rule: &ClusterRule) -> impl Iterator<Item = &str> {
    rule.protocols.iter().filter_map(|p| match p {
        ClusterPort::Named(n) => Some(n.as_str()),
        ClusterPort::Port { .. } => None,
    })
}

/// The match on the peer's address: the destination of egress, the source of ingress.
fn peer_match(dir: Direction, f: IpFamily, set: String) -> Match {
    match dir {
        Direction::Egress => Match::DaddrInSet { family: f, set },
        Direction::Ingress => Match::SaddrInSet { family: f, set },
    }
}

/// The pod-independent part of rule `i` of `cnp` in `dir` (see [`Shared`]).
fn shared(
    idx: &Index,
    sets: &mut Sets,
    cnp: &ClusterPolicy,
    dir: Direction,
    i: usize,
    rule: &ClusterRule,
) -> Shared {
    // A peer this version cannot read: an Accept matches nothing through it, a Deny or
    // Pass matches everything (upstream's "fail closed").
    if rule.action != ClusterAction::Accept && rule.peers.contains(&ClusterPeer::Unknown) {
        return Shared {
            alts: vec![vec![]],
            peer_sets: vec![],
        };
    }
    let peer_pods: Vec<&Pod> = idx
        .peerable
        .iter()
        .copied()
        .filter(|p| {
            rule.peers
                .iter()
                .any(|peer| matches!(peer, ClusterPeer::Pods(s) if selects(idx, s, p)))
        })
        .collect();
    let has_pod_peers = rule.peers.iter().any(|p| matches!(p, ClusterPeer::Pods(_)));
    let base = |f: IpFamily, extra: &str| {
        object_name(&[
            cnp.tier.object_prefix(),
            &cnp.name,
            dir.name(),
            &format!("{i}{extra}-{}", fam_suffix(f)),
        ])
    };
    let (mut v4, mut v6): (Vec<Range>, Vec<Range>) = (Vec::new(), Vec::new());
    for p in &peer_pods {
        push_ips(p, &mut v4, &mut v6);
    }
    let mut networks = [false, false];
    for peer in &rule.peers {
        if let ClusterPeer::Networks(nets) = peer {
            for n in nets {
                let f = IpFamily::of(n);
                networks[(f == IpFamily::V6) as usize] = true;
                match f {
                    IpFamily::V4 => v4.push(ipblock::range_of(n)),
                    IpFamily::V6 => v6.push(ipblock::range_of(n)),
                }
            }
        }
    }
    let mut out = Shared::default();
    // The peer sets, declared once (kept while empty when pods fill them).
    for (f, ranges) in [(IpFamily::V4, &v4), (IpFamily::V6, &v6)] {
        let keep = has_pod_peers || networks[(f == IpFamily::V6) as usize];
        if let Some(set) = sets.family_set(base(f, ""), f, ranges, keep) {
            out.peer_sets.push((f, set));
        }
    }
    // Numbered ports (or none): one rule per family and port alternative.
    let numbered: Vec<Vec<Match>> = if rule.protocols.is_empty() {
        vec![vec![]]
    } else {
        rule.protocols
            .iter()
            .filter_map(|p| match p {
                ClusterPort::Port {
                    protocol,
                    first,
                    last,
                } if first == last => Some(vec![Match::Dport {
                    proto: l4(*protocol),
                    port: *first,
                }]),
                ClusterPort::Port {
                    protocol,
                    first,
                    last,
                } => Some(vec![Match::DportRange {
                    proto: l4(*protocol),
                    first: *first,
                    last: *last,
                }]),
                ClusterPort::Named(_) => None,
            })
            .collect()
    };
    for (f, set) in &out.peer_sets {
        for alt in &numbered {
            let mut m = vec![peer_match(dir, *f, set.clone())];
            m.extend(alt.iter().cloned());
            out.alts.push(m);
        }
    }
    // Egress named ports resolve on each peer pod: grouped by the number they resolve
    // to, a set per group. (Ingress ones resolve on the local pod: `rule_matches`.)
    if dir == Direction::Egress {
        // The name stands for the container port of that name, of whichever protocol.
        let named: Vec<(&str, Protocol)> = named_ports(rule)
            .flat_map(|n| [Protocol::Tcp, Protocol::Udp, Protocol::Sctp].map(|p| (n, p)))
            .collect();
        for ((proto, port), (g4, g6)) in named_port_groups(peer_pods.iter().copied(), &named) {
            for (f, ranges) in [(IpFamily::V4, g4), (IpFamily::V6, g6)] {
                let extra = format!("/{}-{port}", proto.name());
                if let Some(set) = sets.family_set(base(f, &extra), f, &ranges, false) {
                    out.alts.push(vec![
                        peer_match(dir, f, set),
                        Match::Dport {
                            proto: l4(proto),
                            port,
                        },
                    ]);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    //! Tier semantics, run through the built table with `model::eval` (nf_tables'
    //! lookup, jump and goto semantics).
    use std::net::IpAddr;

    use super::super::build::{NetpolConfig, build};
    use super::super::cnp::*;
    use super::super::manifest::{self, Cluster};
    use super::super::selector::Selector;
    use crate::model::eval::{Packet, Verdict, evaluate};
    use crate::model::{CtState, L4Proto};

    /// Namespaces a and b; a/p1 (named port web = tcp 80) and b/p2 on this node n, b/p3
    /// elsewhere.
    const PODS: &str = r#"
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: a, labels: {house: a}}}
- {apiVersion: v1, kind: Namespace, metadata: {name: b, labels: {house: b}}}
- apiVersion: v1
  kind: Pod
  metadata: {name: p1, namespace: a, labels: {app: x}}
  spec: {nodeName: n, containers: [{name: c, ports: [{name: web, containerPort: 80}]}]}
  status: {podIPs: [{ip: 10.0.0.1}]}
- apiVersion: v1
  kind: Pod
  metadata: {name: p2, namespace: b, labels: {app: y}}
  spec: {nodeName: n, containers: [{name: c, ports: [{name: web, containerPort: 8080}]}]}
  status: {podIPs: [{ip: 10.0.0.2}]}
- apiVersion: v1
  kind: Pod
  metadata: {name: p3, namespace: b, labels: {app: y}}
  spec: {nodeName: other, containers: [{name: c}]}
  status: {podIPs: [{ip: 10.0.0.3}]}
"#;

    const NP_DENY_B: &str = r#"
- apiVersion: networking.k8s.io/v1
  kind: NetworkPolicy
  metadata: {name: deny, namespace: b}
  spec: {podSelector: {}, policyTypes: [Ingress]}
"#;
    const NP_ALLOW_A_TO_B: &str = r#"
- apiVersion: networking.k8s.io/v1
  kind: NetworkPolicy
  metadata: {name: from-a, namespace: b}
  spec:
    podSelector: {}
    ingress: [{from: [{namespaceSelector: {matchLabels: {house: a}}}]}]
"#;

    fn house(h: &str) -> Selector {
        Selector {
            match_labels: [("house".to_string(), h.to_string())].into(),
            expressions: vec![],
        }
    }

    fn cnp(name: &str, tier: Tier, priority: u32, subject: &str) -> ClusterPolicy {
        ClusterPolicy {
            name: name.into(),
            tier,
            priority,
            subject: PodSet::Namespaces(house(subject)),
            ingress: vec![],
            egress: vec![],
        }
    }

    fn rule(action: ClusterAction, peer: &str, protocols: Vec<ClusterPort>) -> ClusterRule {
        ClusterRule {
            name: String::new(),
            action,
            peers: vec![ClusterPeer::Pods(PodSet::Namespaces(house(peer)))],
            protocols,
        }
    }

    fn tcp(port: u16) -> ClusterPort {
        ClusterPort::Port {
            protocol: manifest::Protocol::Tcp,
            first: port,
            last: port,
        }
    }

    fn cluster(policies: &str, cnps: Vec<ClusterPolicy>) -> Cluster {
        let mut c = manifest::parse("test", &format!("{PODS}{policies}")).unwrap();
        c.cluster_policies = cnps;
        c
    }

    /// Whether this node lets a new TCP connection from `s` to `d`:`port` through.
    fn allowed(c: &Cluster, s: &str, d: &str, port: u16) -> bool {
        let cfg = NetpolConfig {
            node: "n".into(),
            cluster: c.clone(),
        };
        let rs = build(&cfg, "t");
        crate::model::Ruleset::validate(&rs).unwrap();
        let p = Packet {
            saddr: s.parse::<IpAddr>().unwrap(),
            daddr: d.parse::<IpAddr>().unwrap(),
            proto: L4Proto::Tcp,
            sport: 40000,
            dport: port,
            ct: CtState::New,
            daddr_local: false,
            uid: None,
            gid: None,
        };
        evaluate(&rs, "filter-forward", &p).unwrap().verdict == Verdict::Accept
    }

    const P1: &str = "10.0.0.1";
    const P2: &str = "10.0.0.2";
    const P3: &str = "10.0.0.3";

    #[test]
    fn admin_deny_egress_blocks_only_its_port() {
        let mut p = cnp("deny-b", Tier::Admin, 10, "a");
        p.egress = vec![rule(ClusterAction::Deny, "b", vec![tcp(80)])];
        let c = cluster("", vec![p]);
        assert!(!allowed(&c, P1, P2, 80));
        assert!(!allowed(&c, P1, P3, 80), "remote peers are in the set too");
        assert!(allowed(&c, P1, P2, 8080));
        assert!(allowed(&c, P2, P1, 80), "b's egress is not a subject");
    }

    #[test]
    fn admin_accept_wins_over_a_networkpolicy_deny_and_admin_deny_over_its_allow() {
        let mut p = cnp("accept-a", Tier::Admin, 10, "b");
        p.ingress = vec![rule(ClusterAction::Accept, "a", vec![])];
        assert!(allowed(&cluster(NP_DENY_B, vec![p.clone()]), P1, P2, 80));
        p.ingress[0].action = ClusterAction::Deny;
        assert!(!allowed(&cluster(NP_ALLOW_A_TO_B, vec![p]), P1, P2, 80));
    }

    #[test]
    fn admin_pass_hands_the_flow_to_networkpolicy_then_baseline() {
        let mut pass = cnp("pass-a", Tier::Admin, 10, "b");
        pass.ingress = vec![rule(ClusterAction::Pass, "a", vec![])];
        let mut deny = cnp("deny-a", Tier::Admin, 20, "b");
        deny.ingress = vec![rule(ClusterAction::Deny, "a", vec![])];
        let mut base_deny = cnp("base-deny", Tier::Baseline, 10, "b");
        base_deny.ingress = vec![rule(ClusterAction::Deny, "a", vec![])];
        // Pass skips the lower-precedence Admin Deny: the NetworkPolicy decides.
        let both = vec![pass.clone(), deny.clone()];
        assert!(allowed(&cluster(NP_ALLOW_A_TO_B, both.clone()), P1, P2, 80));
        assert!(!allowed(&cluster(NP_DENY_B, both.clone()), P1, P2, 80));
        // No NetworkPolicy selects p2: the default allows, or the Baseline denies.
        assert!(allowed(&cluster("", both), P1, P2, 80));
        assert!(!allowed(&cluster("", vec![pass, base_deny]), P1, P2, 80));
    }

    #[test]
    fn baseline_deny_is_overridden_by_a_networkpolicy_allow() {
        let mut p = cnp("base-deny", Tier::Baseline, 10, "b");
        p.ingress = vec![rule(ClusterAction::Deny, "a", vec![])];
        assert!(!allowed(&cluster("", vec![p.clone()]), P1, P2, 80));
        assert!(allowed(&cluster(NP_ALLOW_A_TO_B, vec![p]), P1, P2, 80));
    }

    #[test]
    fn priority_then_rule_order_decide() {
        let mut accept = cnp("accept", Tier::Admin, 1, "b");
        accept.ingress = vec![rule(ClusterAction::Accept, "a", vec![])];
        let mut deny = cnp("deny", Tier::Admin, 2, "b");
        deny.ingress = vec![rule(ClusterAction::Deny, "a", vec![])];
        assert!(allowed(
            &cluster("", vec![accept.clone(), deny.clone()]),
            P1,
            P2,
            80
        ));
        deny.priority = 0;
        assert!(!allowed(&cluster("", vec![accept, deny]), P1, P2, 80));
        // Within one policy, the first rule written.
        let mut both = cnp("both", Tier::Admin, 5, "b");
        both.ingress = vec![
            rule(ClusterAction::Accept, "a", vec![tcp(80)]),
            rule(ClusterAction::Deny, "a", vec![]),
        ];
        let c = cluster("", vec![both]);
        assert!(allowed(&c, P1, P2, 80));
        assert!(!allowed(&c, P1, P2, 81));
    }

    #[test]
    fn named_ports_resolve_on_the_destination_pod() {
        // Ingress to p2: its "web" is 8080.
        let mut p = cnp("deny-web", Tier::Admin, 1, "b");
        p.ingress = vec![rule(
            ClusterAction::Deny,
            "a",
            vec![ClusterPort::Named("web".into())],
        )];
        let c = cluster("", vec![p]);
        assert!(!allowed(&c, P1, P2, 8080));
        assert!(allowed(&c, P1, P2, 80));
        // Egress from p2 to p1: p1's "web" is 80.
        let mut e = cnp("deny-web-out", Tier::Admin, 1, "b");
        e.egress = vec![rule(
            ClusterAction::Deny,
            "a",
            vec![ClusterPort::Named("web".into())],
        )];
        let c = cluster("", vec![e]);
        assert!(!allowed(&c, P2, P1, 80));
        assert!(allowed(&c, P2, P1, 8080));
    }

    #[test]
    fn two_named_ports_resolving_to_one_number_cover_both_pods() {
        // p1's "web" is 80; p2 (relabelled) has no "web" but a "www" that is 80 too.
        let mut c = cluster("", vec![]);
        let p2 = c.pods.iter_mut().find(|p| p.name == "p2").unwrap();
        p2.ports[0].name = Some("www".into());
        p2.ports[0].port = 80;
        p2.namespace = "a".into();
        let mut e = cnp("deny-web", Tier::Admin, 1, "b");
        e.egress = vec![rule(
            ClusterAction::Deny,
            "a",
            vec![
                ClusterPort::Named("web".into()),
                ClusterPort::Named("www".into()),
            ],
        )];
        c.cluster_policies = vec![e];
        // p3 (namespace b, another node) is no local subject: add a local pod in b.
        let mut p4 = c.pods.iter().find(|p| p.name == "p3").unwrap().clone();
        p4.name = "p4".into();
        p4.node = Some("n".into());
        p4.ips = vec!["10.0.0.4".parse().unwrap()];
        c.pods.push(p4);
        assert!(!allowed(&c, "10.0.0.4", P1, 80));
        assert!(!allowed(&c, "10.0.0.4", P2, 80));
        assert!(allowed(&c, "10.0.0.4", P2, 8080));
    }

    #[test]
    fn networks_and_port_ranges_match() {
        let mut p = cnp("deny-net", Tier::Admin, 1, "a");
        p.egress = vec![ClusterRule {
            name: "ext".into(),
            action: ClusterAction::Deny,
            peers: vec![ClusterPeer::Networks(vec!["10.0.0.2/32".parse().unwrap()])],
            protocols: vec![ClusterPort::Port {
                protocol: manifest::Protocol::Tcp,
                first: 8000,
                last: 9000,
            }],
        }];
        let c = cluster("", vec![p]);
        assert!(!allowed(&c, P1, P2, 8080));
        assert!(allowed(&c, P1, P2, 80));
        assert!(allowed(&c, P1, P3, 8080));
    }

    #[test]
    fn an_unknown_peer_fails_closed() {
        let mut p = cnp("newer", Tier::Admin, 1, "b");
        p.ingress = vec![ClusterRule {
            name: String::new(),
            action: ClusterAction::Accept,
            peers: vec![ClusterPeer::Unknown],
            protocols: vec![],
        }];
        // Accept through an unknown peer matches nothing: the NetworkPolicy still denies.
        assert!(!allowed(&cluster(NP_DENY_B, vec![p.clone()]), P1, P2, 80));
        // Deny through one matches everything.
        p.ingress[0].action = ClusterAction::Deny;
        assert!(!allowed(&cluster("", vec![p]), P1, P2, 80));
    }

    #[test]
    fn pods_of_one_policy_set_share_a_chain_and_churn_is_elements() {
        let mut p = cnp("deny-b", Tier::Admin, 10, "a");
        p.egress = vec![rule(ClusterAction::Deny, "b", vec![tcp(80)])];
        let c = cluster(NP_DENY_B, vec![p]);
        let cfg = |c: &Cluster| NetpolConfig {
            node: "n".into(),
            cluster: c.clone(),
        };
        let before = build(&cfg(&c), "t");
        // Another pod in b, on this node: same policies, so map entries and elements only.
        let mut more = c.clone();
        let mut p4 = more.pods.iter().find(|p| p.name == "p2").unwrap().clone();
        p4.name = "p4".into();
        p4.ips = vec!["10.0.0.4".parse().unwrap()];
        more.pods.push(p4);
        let after = build(&cfg(&more), "t");
        assert_eq!(before.chains, after.chains);
        assert_eq!(
            before.sets.iter().map(|s| &s.name).collect::<Vec<_>>(),
            after.sets.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
        assert_ne!(before.maps, after.maps);
        assert!(!allowed(&more, P1, "10.0.0.4", 8080), "isolated by deny");
    }
}
