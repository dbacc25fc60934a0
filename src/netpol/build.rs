//! NetworkPolicy and ClusterNetworkPolicy semantics -> the `nftkit-netpol` table.
//!
//! ```text
//! chain filter-forward {                       # type filter hook forward priority 0
//!     ct state established,related accept       # replies of allowed connections
//!     jump egress-admin                          # the source pod's egress, then
//!     jump ingress-admin                         # the destination pod's ingress
//! }
//! chain egress-admin {                         # Admin tier (ClusterNetworkPolicy)
//!     ip saddr vmap @egress-admin-v4             # pod address -> goto its policies' chain
//!     ip6 saddr vmap @egress-admin-v6
//!     goto egress-networkpolicy
//! }
//! chain egress-networkpolicy {                 # NetworkPolicy: isolated pods only
//!     ip saddr vmap @egress-networkpolicy-v4     # e.g. 10.244.1.5 : goto egress/prod/web-out
//!     ip6 saddr vmap @egress-networkpolicy-v6
//!     goto egress-baseline
//! }
//! chain egress-baseline { ip saddr vmap @egress-baseline-v4 ... }   # end: allowed
//! chain egress/prod/web-out {                  # every pod the policies web-out select
//!     ip daddr @egress/prod/web-out/0-v4 tcp dport 5432 return      # allowed
//!     drop                                       # isolated: the default deny
//! }
//! (ingress: the same on the destination address; an allow there is `accept`)
//! ```
//! Sets are per policy rule and family (`<direction>/<namespace>/<policy>/<index>-v4`),
//! shared by every pod the policy selects, so the rule count depends on the policies of
//! this node's pods, never on the number of peer pods. Pods whose rules are the same
//! share one chain (named after their policies), reached by one verdict-map lookup: the
//! datapath's cost per packet does not grow with the number of pods or of policies
//! elsewhere, and a pod that comes, goes or changes labels changes map entries and set
//! elements only (sets of pod peers stay declared while empty). ClusterNetworkPolicy
//! tiers are in `tiers`.
//!
//! Kernel features: nf_tables verdict maps, interval sets (3.19+) and named counter
//! objects (4.10+), so netpol needs Linux 4.10 or later (`--persist=false`'s table owner
//! flag: 5.13).
//!
//! Only the forward hook is used: traffic the node itself sends to its pods (kubelet
//! probes, host-network pods) leaves through the output hook and is never filtered, which
//! is what the Kubernetes docs require ("connections from the pod's node are allowed").
//! Likewise pod -> node traffic (input hook) is not policed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::cnp::Tier;
pub use super::index::resolve_named;
use super::index::{Index, Sets, fam_suffix, l4, named_port_groups, selects_pods};
use super::manifest::{Cluster, Pod, Policy, PolicyRule, PortRef, PortSpec, Protocol};
use super::tiers;
use crate::model::*;

pub use super::names::{Direction, object_name};
pub use super::observe::{
    DEFAULT_DENY, DEFAULT_LOG_GROUP, DEFAULT_LOG_RATE, LOG_LIMIT, LOG_PREFIX, LogVerdicts, Observe,
    WOULD_DROP, default_deny_counter, policy_counter,
};
use super::observe::{chain_end, logged_allows};

pub const COMMAND: &str = "netpol";
pub const FORWARD_CHAIN: &str = "filter-forward";

/// Validated input of the build: the cluster's objects and which node we are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetpolConfig {
    pub node: String,
    pub cluster: Cluster,
}

/// Counts for the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    pub local_pods: usize,
    pub ingress_isolated: usize,
    pub egress_isolated: usize,
    pub policies: usize,
    /// ClusterNetworkPolicies (both tiers) in the cluster.
    pub cluster_policies: usize,
}

/// The port matches of one `ports[]` entry; a named port is resolved on `dest` (None: the
/// destination is not one pod, see `build_egress`). None: this entry allows nothing there.
pub fn port_match(spec: &PortSpec, dest: Option<&Pod>) -> Option<Vec<Match>> {
    let proto = l4(spec.protocol);
    match (&spec.port, spec.end_port) {
        (None, _) => Some(vec![Match::L4Proto {
            proto,
            negate: false,
        }]),
        (Some(PortRef::Number(first)), Some(last)) if last > *first => {
            Some(vec![Match::DportRange {
                proto,
                first: *first,
                last,
            }])
        }
        (Some(PortRef::Number(port)), _) => Some(vec![Match::Dport { proto, port: *port }]),
        (Some(PortRef::Name(name)), _) => {
            let port = resolve_named(dest?, name, spec.protocol)?;
            Some(vec![Match::Dport { proto, port }])
        }
    }
}

fn push_unique(rules: &mut Vec<Rule>, r: Rule) {
    if !rules.contains(&r) {
        rules.push(r);
    }
}

/// The peer sets of a policy's ingress rule `i`, declared once: (family, set name).
fn ingress_sets(
    idx: &Index,
    sets: &mut Sets,
    policy: &Policy,
    i: usize,
    rule: &PolicyRule,
) -> Vec<(IpFamily, String)> {
    let (v4, v6) = idx.peer_ranges(rule, &policy.namespace);
    let mut out = Vec::new();
    for (f, ranges) in [(IpFamily::V4, v4), (IpFamily::V6, v6)] {
        let name = object_name(&[
            "ingress",
            &policy.namespace,
            &policy.name,
            &format!("{i}-{}", fam_suffix(f)),
        ]);
        if let Some(set) = sets.family_set(name, f, &ranges, selects_pods(rule)) {
            out.push((f, set));
        }
    }
    out
}

/// Rules a policy's ingress rule adds to the chain of local pod `pod`; `peer_sets` are
/// its sets (from `ingress_sets`).
fn ingress_rules(
    rule: &PolicyRule,
    peer_sets: &[(IpFamily, String)],
    pod: &Pod,
    counter: &Match,
    out: &mut Vec<Rule>,
) {
    let alternatives: Vec<Vec<Match>> = if rule.ports.is_empty() {
        vec![vec![]]
    } else {
        rule.ports
            .iter()
            .filter_map(|p| port_match(p, Some(pod)))
            .collect()
    };
    if rule.peers.is_empty() {
        for mut alt in alternatives {
            alt.push(counter.clone());
            push_unique(
                out,
                Rule {
                    matches: alt,
                    action: Action::Accept,
                },
            );
        }
        return;
    }
    for (f, set) in peer_sets {
        for alt in &alternatives {
            let mut m = vec![Match::SaddrInSet {
                family: *f,
                set: set.clone(),
            }];
            m.extend(alt.iter().cloned());
            m.push(counter.clone());
            push_unique(
                out,
                Rule {
                    matches: m,
                    action: Action::Accept,
                },
            );
        }
    }
}

/// Rules a policy's egress rule `i` adds to the chain of every pod it selects (they do not
/// depend on the source pod; named ports resolve on the destination pods).
fn egress_rules(
    idx: &Index,
    sets: &mut Sets,
    policy: &Policy,
    i: usize,
    rule: &PolicyRule,
) -> Vec<Rule> {
    let mut out = Vec::new();
    let alternatives: Vec<Vec<Match>> = if rule.ports.is_empty() {
        vec![vec![]]
    } else {
        rule.ports
            .iter()
            .filter(|p| !matches!(p.port, Some(PortRef::Name(_))))
            .filter_map(|p| port_match(p, None))
            .collect()
    };
    if rule.peers.is_empty() {
        for alt in &alternatives {
            push_unique(
                &mut out,
                Rule {
                    matches: alt.clone(),
                    action: Action::Return,
                },
            );
        }
    } else if !alternatives.is_empty() {
        let (v4, v6) = idx.peer_ranges(rule, &policy.namespace);
        for (f, ranges) in [(IpFamily::V4, v4), (IpFamily::V6, v6)] {
            let name = object_name(&[
                "egress",
                &policy.namespace,
                &policy.name,
                &format!("{i}-{}", fam_suffix(f)),
            ]);
            let Some(set) = sets.family_set(name, f, &ranges, selects_pods(rule)) else {
                continue;
            };
            for alt in &alternatives {
                let mut m = vec![Match::DaddrInSet {
                    family: f,
                    set: set.clone(),
                }];
                m.extend(alt.iter().cloned());
                push_unique(
                    &mut out,
                    Rule {
                        matches: m,
                        action: Action::Return,
                    },
                );
            }
        }
    }
    // Named ports: the number can differ per destination pod, so the destinations are
    // grouped by the number they resolve to, one set (and rule) per group.
    let named: Vec<(&str, Protocol)> = rule
        .ports
        .iter()
        .filter_map(|p| match &p.port {
            Some(PortRef::Name(n)) => Some((n.as_str(), p.protocol)),
            _ => None,
        })
        .collect();
    if named.is_empty() {
        return out;
    }
    let groups = named_port_groups(idx.peer_pods_of_rule(rule, &policy.namespace), &named);
    for ((proto, port), (v4, v6)) in groups {
        for (f, ranges) in [(IpFamily::V4, v4), (IpFamily::V6, v6)] {
            let name = object_name(&[
                "egress",
                &policy.namespace,
                &policy.name,
                &i.to_string(),
                &format!("{}-{port}-{}", proto.name(), fam_suffix(f)),
            ]);
            let Some(set) = sets.family_set(name, f, &ranges, false) else {
                continue;
            };
            push_unique(
                &mut out,
                Rule {
                    matches: vec![
                        Match::DaddrInSet { family: f, set },
                        Match::Dport {
                            proto: l4(proto),
                            port,
                        },
                    ],
                    action: Action::Return,
                },
            );
        }
    }
    out
}

/// The whole table for `cfg`.
pub fn build(cfg: &NetpolConfig, table: &str) -> Ruleset {
    build_with_summary(cfg, table).0
}

pub fn build_with_summary(cfg: &NetpolConfig, table: &str) -> (Ruleset, Summary) {
    build_observed(cfg, table, &Observe::default())
}

/// The NetworkPolicy rules of local pod `pod` in `dir`: its chain's rules, or None if no
/// policy isolates it in that direction. `caches` hold what depends on the policy only.
#[allow(clippy::too_many_arguments)]
fn np_rules(
    idx: &Index,
    cfg: &NetpolConfig,
    obs: &Observe,
    sets: &mut Sets,
    caches: &mut NpCaches,
    used: &mut BTreeSet<usize>,
    dir: Direction,
    pod: &Pod,
) -> Option<(Vec<String>, Vec<Rule>)> {
    let affects = |p: &Policy| match dir {
        Direction::Ingress => p.affects_ingress,
        Direction::Egress => p.affects_egress,
    };
    let policies: Vec<(usize, &Policy)> = cfg
        .cluster
        .policies
        .iter()
        .enumerate()
        .filter(|(_, p)| idx.selects(p, pod) && affects(p))
        .collect();
    if policies.is_empty() {
        return None;
    }
    let mut rules = Vec::new();
    for (pi, policy) in &policies {
        used.insert(*pi);
        match dir {
            Direction::Egress => {
                for (i, rule) in policy.egress.iter().enumerate() {
                    let built = caches.egress.entry((*pi, i)).or_insert_with(|| {
                        let counter = policy_counter(Direction::Egress, policy);
                        let mut rules = egress_rules(idx, sets, policy, i, rule);
                        for r in &mut rules {
                            r.matches.push(counter.clone());
                        }
                        logged_allows(obs, rules, Direction::Egress, policy, i)
                    });
                    for r in built.iter() {
                        push_unique(&mut rules, r.clone());
                    }
                }
            }
            Direction::Ingress => {
                for (i, rule) in policy.ingress.iter().enumerate() {
                    let peer_sets = if rule.peers.is_empty() {
                        &Vec::new()
                    } else {
                        &*caches
                            .ingress
                            .entry((*pi, i))
                            .or_insert_with(|| ingress_sets(idx, sets, policy, i, rule))
                    };
                    let counter = policy_counter(Direction::Ingress, policy);
                    let mut these = Vec::new();
                    ingress_rules(rule, peer_sets, pod, &counter, &mut these);
                    for r in logged_allows(obs, these, Direction::Ingress, policy, i) {
                        push_unique(&mut rules, r);
                    }
                }
            }
        }
    }
    let audit = obs.audit || policies.iter().all(|(_, p)| p.audit);
    rules.extend(chain_end(obs, dir, &pod.namespace, audit));
    let names = policies.iter().map(|(_, p)| p.name.clone()).collect();
    Some((names, rules))
}

/// What the NetworkPolicy rules share between pods: egress rules depend only on the
/// policy, and so do the peer sets of ingress rules (their ports resolve per pod).
#[derive(Default)]
struct NpCaches {
    egress: BTreeMap<(usize, usize), Vec<Rule>>,
    ingress: BTreeMap<(usize, usize), Vec<(IpFamily, String)>>,
}

/// [`build_with_summary`] with verdict logs and audit mode as `obs` says.
///
/// Each direction runs through three tiers, each a chain that dispatches on the pod's
/// address with one verdict-map lookup (`goto` the chain of the pod's policies):
/// `<dir>-admin` (Admin ClusterNetworkPolicies), `<dir>-networkpolicy`, `<dir>-baseline`.
/// Pods with the same rules share one chain, so a pod that comes, goes or changes labels
/// changes map entries and set elements only, and the datapath's cost per packet depends
/// on the policies of its own pods, not on how many policies the cluster has.
pub fn build_observed(cfg: &NetpolConfig, table: &str, obs: &Observe) -> (Ruleset, Summary) {
    let idx = Index::new(&cfg.cluster);
    let local: Vec<&Pod> = idx
        .peerable
        .iter()
        .copied()
        .filter(|p| p.node.as_deref() == Some(cfg.node.as_str()))
        .collect();
    let mut sets = Sets::default();
    let mut summary = Summary {
        local_pods: local.len(),
        ..Summary::default()
    };
    let mut used_policies = BTreeSet::new();
    let mut caches = NpCaches::default();
    let mut out = Tables::default();
    let mut tiers = tiers::Tiers::new(&cfg.cluster);
    for dir in [Direction::Egress, Direction::Ingress] {
        let mut admin = Dispatch::default();
        let mut np = Dispatch::default();
        let mut baseline = Dispatch::default();
        for pod in &local {
            if let Some((names, rules)) = tiers.rules(
                &idx,
                &mut sets,
                obs,
                Tier::Admin,
                dir,
                pod,
                &tier_chain(dir, TierChain::NetworkPolicy),
            ) {
                admin.add(
                    &[dir.name(), Tier::Admin.object_prefix(), &names.join("_")],
                    rules,
                    &pod.ips,
                );
            }
            if let Some((names, rules)) = np_rules(
                &idx,
                cfg,
                obs,
                &mut sets,
                &mut caches,
                &mut used_policies,
                dir,
                pod,
            ) {
                match dir {
                    Direction::Egress => summary.egress_isolated += 1,
                    Direction::Ingress => summary.ingress_isolated += 1,
                }
                np.add(
                    &[dir.name(), &pod.namespace, &names.join("_")],
                    rules,
                    &pod.ips,
                );
            }
            if let Some((names, rules)) =
                tiers.rules(&idx, &mut sets, obs, Tier::Baseline, dir, pod, "")
            {
                baseline.add(
                    &[dir.name(), Tier::Baseline.object_prefix(), &names.join("_")],
                    rules,
                    &pod.ips,
                );
            }
        }
        let field = match dir {
            Direction::Egress => AddrField::Saddr,
            Direction::Ingress => AddrField::Daddr,
        };
        out.tier(dir, TierChain::Admin, admin, field);
        out.tier(dir, TierChain::NetworkPolicy, np, field);
        out.tier(dir, TierChain::Baseline, baseline, field);
    }
    summary.policies = used_policies.len();
    summary.cluster_policies = cfg.cluster.cluster_policies.len();
    let forward = vec![
        Rule {
            matches: vec![Match::CtState(vec![CtState::Established, CtState::Related])],
            action: Action::Accept,
        },
        Rule {
            matches: vec![],
            action: Action::Jump(tier_chain(Direction::Egress, TierChain::Admin)),
        },
        Rule {
            matches: vec![],
            action: Action::Jump(tier_chain(Direction::Ingress, TierChain::Admin)),
        },
    ];
    let mut chains = out.chains;
    chains.sort_by(|a, b| a.name.cmp(&b.name));
    chains.insert(
        0,
        Chain {
            name: FORWARD_CHAIN.into(),
            base: Some(BaseChain {
                kind: ChainType::Filter,
                hook: Hook::Forward,
                priority: priority::FILTER,
            }),
            rules: forward,
        },
    );
    (
        Ruleset {
            table: table.to_string(),
            comment: format!("managed by nftkit {COMMAND}"),
            sets: sets.sets.into_values().collect(),
            maps: out.maps,
            chains,
        },
        summary,
    )
}

/// The three tier chains of a direction, in the order a packet meets them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TierChain {
    Admin,
    NetworkPolicy,
    Baseline,
}

impl TierChain {
    fn name(self) -> &'static str {
        match self {
            TierChain::Admin => "admin",
            TierChain::NetworkPolicy => "networkpolicy",
            TierChain::Baseline => "baseline",
        }
    }
    fn next(self) -> Option<TierChain> {
        match self {
            TierChain::Admin => Some(TierChain::NetworkPolicy),
            TierChain::NetworkPolicy => Some(TierChain::Baseline),
            TierChain::Baseline => None,
        }
    }
}

/// `egress-admin`, `ingress-networkpolicy`, ...
pub fn tier_chain(dir: Direction, tier: TierChain) -> String {
    format!("{}-{}", dir.name(), tier.name())
}

/// The verdict map of a tier chain for family `f`: `egress-admin-v4`, ...
pub fn tier_map(dir: Direction, tier: TierChain, f: IpFamily) -> String {
    format!("{}-{}", tier_chain(dir, tier), fam_suffix(f))
}

/// The chain the tier `tier` of `dir` sends `addr` to, if any (`explain`).
pub fn dispatched_chain(
    rs: &Ruleset,
    dir: Direction,
    tier: TierChain,
    addr: IpAddr,
) -> Option<&str> {
    let f = match addr {
        IpAddr::V4(_) => IpFamily::V4,
        IpAddr::V6(_) => IpFamily::V6,
    };
    let key = Element::from(addr);
    rs.map(&tier_map(dir, tier, f))?
        .entries
        .iter()
        .find(|(e, _)| *e == key)
        .map(|(_, c)| c.as_str())
}

/// The per-pod chains of one tier and the map entries that send each pod's addresses to
/// its chain. Pods whose rules are equal share a chain.
#[derive(Default)]
struct Dispatch {
    chains: BTreeMap<String, Vec<Rule>>,
    entries: Vec<(IpAddr, String)>,
}

impl Dispatch {
    /// Send `ips` to a chain holding `rules`, named from `parts` (with a hash of the
    /// rules when another chain of that name holds other rules, e.g. named ports that
    /// resolve differently).
    fn add(&mut self, parts: &[&str], rules: Vec<Rule>, ips: &[IpAddr]) {
        let mut name = object_name(parts);
        if self.chains.get(&name).is_some_and(|r| *r != rules) {
            let h = super::names::content_hash(&format!("{rules:?}"));
            name = object_name(&[&name, &format!("{h:016x}")]);
        }
        self.chains.entry(name.clone()).or_insert(rules);
        for ip in ips {
            self.entries.push((*ip, name.clone()));
        }
    }
}

/// The chains and maps the tiers add to the table.
#[derive(Default)]
struct Tables {
    chains: Vec<Chain>,
    maps: Vec<VerdictMap>,
}

impl Tables {
    /// The tier chain `tier` of `dir`: a lookup per family in its map, then on to the
    /// next tier (the last one ends: allowed), and the per-pod chains it dispatches to.
    fn tier(&mut self, dir: Direction, tier: TierChain, d: Dispatch, field: AddrField) {
        let mut rules = Vec::new();
        for f in [IpFamily::V4, IpFamily::V6] {
            let name = tier_map(dir, tier, f);
            let mut entries: Vec<(Element, String)> = d
                .entries
                .iter()
                .filter(|(ip, _)| ip.is_ipv4() == (f == IpFamily::V4))
                .map(|(ip, c)| (Element::from(*ip), c.clone()))
                .collect();
            entries.sort();
            entries.dedup_by(|a, b| a.0 == b.0);
            self.maps.push(VerdictMap {
                name: name.clone(),
                key: match f {
                    IpFamily::V4 => KeyType::Ipv4Addr,
                    IpFamily::V6 => KeyType::Ipv6Addr,
                },
                entries,
            });
            rules.push(Rule {
                matches: vec![],
                action: Action::GotoMap {
                    family: f,
                    field,
                    map: name,
                },
            });
        }
        if let Some(next) = tier.next() {
            rules.push(Rule {
                matches: vec![],
                action: Action::Goto(tier_chain(dir, next)),
            });
        }
        self.chains.push(Chain {
            name: tier_chain(dir, tier),
            base: None,
            rules,
        });
        for (name, rules) in d.chains {
            self.chains.push(Chain {
                name,
                base: None,
                rules,
            });
        }
    }
}
