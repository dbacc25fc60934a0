//! NetworkPolicy semantics -> the `nftkit-netpol` table.
//!
//! ```text
//! chain filter-forward {                       # type filter hook forward priority 0
//!     ct state established,related accept       # replies of allowed connections
//!     ip saddr 10.244.1.5 jump egress/prod/web  # one per IP of an egress-isolated local pod
//!     ip daddr 10.244.1.6 jump ingress/prod/db  # one per IP of an ingress-isolated local pod
//! }
//! chain egress/prod/web {                      # allowed: return (ingress still checked)
//!     ip daddr @egress/prod/web-out/0-v4 tcp dport 5432 return
//!     drop
//! }
//! chain ingress/prod/db {                      # allowed: accept
//!     ip saddr @ingress/prod/db-in/0-v4 tcp dport 5432 accept
//!     drop
//! }
//! ```
//! Sets are per policy rule and family (`<direction>/<namespace>/<policy>/<index>-v4`),
//! shared by every pod the policy selects, so the rule count depends on local pods and
//! policy rules, never on the number of peer pods. A policy's chain rules appear in every
//! selected pod's chain (union of policies = concatenation; order is irrelevant because
//! every allow is terminal and the deny comes last).
//!
//! Only the forward hook is used: traffic the node itself sends to its pods (kubelet
//! probes, host-network pods) leaves through the output hook and is never filtered, which
//! is what the Kubernetes docs require ("connections from the pod's node are allowed").
//! Likewise pod -> node traffic (input hook) is not policed. Dispatch is by per-pod jump
//! rules matching the pod IP: the same expressions nft writes for `ip daddr A jump C`, and
//! their number grows with the pods of this node only (a kubelet runs at most a few hundred).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use super::ipblock::{self, Range};
use super::manifest::{Cluster, Peer, Pod, Policy, PolicyRule, PortRef, PortSpec, Protocol};
use super::selector::Labels;
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
}

pub fn chain_name(dir: Direction, pod: &Pod) -> String {
    object_name(&[dir.name(), &pod.namespace, &pod.name])
}

fn l4(p: Protocol) -> L4Proto {
    match p {
        Protocol::Tcp => L4Proto::Tcp,
        Protocol::Udp => L4Proto::Udp,
        Protocol::Sctp => L4Proto::Sctp,
    }
}

/// The number a named port has on `pod` for `protocol`, if the pod declares it.
pub fn resolve_named(pod: &Pod, name: &str, protocol: Protocol) -> Option<u16> {
    pod.ports
        .iter()
        .find(|p| p.name.as_deref() == Some(name) && p.protocol == protocol)
        .map(|p| p.port)
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

/// Everything precomputed about the cluster for one build.
struct Index<'c> {
    ns_labels: BTreeMap<&'c str, Labels>,
    /// Pods that can be peers: not host-network, not terminated, with an IP.
    peerable: Vec<&'c Pod>,
}

impl<'c> Index<'c> {
    fn new(cluster: &'c Cluster) -> Self {
        let mut ns_labels = BTreeMap::new();
        for p in &cluster.pods {
            ns_labels
                .entry(p.namespace.as_str())
                .or_insert_with(|| cluster.namespace_labels(&p.namespace));
        }
        let peerable = cluster
            .pods
            .iter()
            .filter(|p| !p.host_network && !p.terminated && !p.ips.is_empty())
            .collect();
        Index {
            ns_labels,
            peerable,
        }
    }

    /// Pods a `podSelector`/`namespaceSelector` peer of a policy in `policy_ns` selects.
    fn peer_pods(&self, peer: &Peer, policy_ns: &str) -> Vec<&'c Pod> {
        let Peer::Pods { pods, namespaces } = peer else {
            return Vec::new();
        };
        self.peerable
            .iter()
            .copied()
            .filter(|p| match namespaces {
                None => p.namespace == policy_ns,
                Some(sel) => self
                    .ns_labels
                    .get(p.namespace.as_str())
                    .is_some_and(|l| sel.matches(l)),
            })
            .filter(|p| pods.as_ref().is_none_or(|s| s.matches(&p.labels)))
            .collect()
    }

    /// The addresses of a rule's peers as ranges: (v4, v6).
    fn peer_ranges(&self, rule: &PolicyRule, policy_ns: &str) -> (Vec<Range>, Vec<Range>) {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for peer in &rule.peers {
            match peer {
                Peer::Block { cidr, except } => {
                    let r = ipblock::allowed(cidr, except);
                    match cidr {
                        IpNet::V4(_) => v4.extend(r),
                        IpNet::V6(_) => v6.extend(r),
                    }
                }
                Peer::Pods { .. } => {
                    for pod in self.peer_pods(peer, policy_ns) {
                        push_ips(pod, &mut v4, &mut v6);
                    }
                }
            }
        }
        (v4, v6)
    }

    /// Pods a rule's peers cover (selected, or with an address in an ipBlock), or every
    /// pod when the rule has no peers: where an egress named port is resolved.
    fn peer_pods_of_rule(&self, rule: &PolicyRule, policy_ns: &str) -> Vec<&'c Pod> {
        if rule.peers.is_empty() {
            return self.peerable.clone();
        }
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for peer in &rule.peers {
            let pods: Vec<&Pod> = match peer {
                Peer::Block { cidr, except } => {
                    let r = ipblock::allowed(cidr, except);
                    self.peerable
                        .iter()
                        .copied()
                        .filter(|p| {
                            p.ips
                                .iter()
                                .any(|ip| ipblock::contains(&r, *ip) && same_family(ip, cidr))
                        })
                        .collect()
                }
                Peer::Pods { .. } => self.peer_pods(peer, policy_ns),
            };
            for p in pods {
                if seen.insert((p.namespace.as_str(), p.name.as_str())) {
                    out.push(p);
                }
            }
        }
        out
    }

    fn selects(&self, policy: &Policy, pod: &Pod) -> bool {
        pod.namespace == policy.namespace && policy.pod_selector.matches(&pod.labels)
    }
}

fn same_family(ip: &IpAddr, net: &IpNet) -> bool {
    matches!(
        (ip, net),
        (IpAddr::V4(_), IpNet::V4(_)) | (IpAddr::V6(_), IpNet::V6(_))
    )
}

fn push_ips(pod: &Pod, v4: &mut Vec<Range>, v6: &mut Vec<Range>) {
    for ip in &pod.ips {
        match ip {
            IpAddr::V4(a) => v4.push((u32::from(*a) as u128, u32::from(*a) as u128)),
            IpAddr::V6(a) => v6.push((u128::from(*a), u128::from(*a))),
        }
    }
}

/// Declared sets by name, created on first use.
#[derive(Default)]
struct Sets {
    sets: BTreeMap<String, Set>,
}

impl Sets {
    /// Declare (once) the set `name` of family `f` with `ranges`; None when it would be
    /// empty (a rule over it could never match, so it is left out).
    fn family_set(&mut self, name: String, f: IpFamily, ranges: &[Range]) -> Option<String> {
        if ranges.is_empty() {
            return None;
        }
        if !self.sets.contains_key(&name) {
            let elements = ipblock::to_prefixes(f, ranges.to_vec())
                .into_iter()
                .map(|n| match n {
                    IpNet::V4(n) => Element::V4(n),
                    IpNet::V6(n) => Element::V6(n),
                })
                .collect();
            self.sets.insert(
                name.clone(),
                Set {
                    name: name.clone(),
                    key: match f {
                        IpFamily::V4 => KeyType::Ipv4Addr,
                        IpFamily::V6 => KeyType::Ipv6Addr,
                    },
                    interval: true,
                    elements,
                },
            );
        }
        Some(name)
    }
}

fn push_unique(rules: &mut Vec<Rule>, r: Rule) {
    if !rules.contains(&r) {
        rules.push(r);
    }
}

fn fam_suffix(f: IpFamily) -> &'static str {
    match f {
        IpFamily::V4 => "v4",
        IpFamily::V6 => "v6",
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
        if let Some(set) = sets.family_set(name, f, &ranges) {
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
            let Some(set) = sets.family_set(name, f, &ranges) else {
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
    let mut groups: BTreeMap<(Protocol, u16), (Vec<Range>, Vec<Range>)> = BTreeMap::new();
    for pod in idx.peer_pods_of_rule(rule, &policy.namespace) {
        for (name, proto) in &named {
            if let Some(port) = resolve_named(pod, name, *proto) {
                let g = groups.entry((*proto, port)).or_default();
                push_ips(pod, &mut g.0, &mut g.1);
            }
        }
    }
    for ((proto, port), (v4, v6)) in groups {
        for (f, ranges) in [(IpFamily::V4, v4), (IpFamily::V6, v6)] {
            let name = object_name(&[
                "egress",
                &policy.namespace,
                &policy.name,
                &i.to_string(),
                &format!("{}-{port}-{}", proto.name(), fam_suffix(f)),
            ]);
            let Some(set) = sets.family_set(name, f, &ranges) else {
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

fn host_net(ip: &IpAddr) -> IpNet {
    IpNet::from(*ip)
}

/// The whole table for `cfg`.
pub fn build(cfg: &NetpolConfig, table: &str) -> Ruleset {
    build_with_summary(cfg, table).0
}

pub fn build_with_summary(cfg: &NetpolConfig, table: &str) -> (Ruleset, Summary) {
    build_observed(cfg, table, &Observe::default())
}

/// [`build_with_summary`] with verdict logs and audit mode as `obs` says.
pub fn build_observed(cfg: &NetpolConfig, table: &str, obs: &Observe) -> (Ruleset, Summary) {
    let idx = Index::new(&cfg.cluster);
    let local: Vec<&Pod> = idx
        .peerable
        .iter()
        .copied()
        .filter(|p| p.node.as_deref() == Some(cfg.node.as_str()))
        .collect();
    let mut sets = Sets::default();
    let mut chains = Vec::new();
    let mut egress_jumps = Vec::new();
    let mut ingress_jumps = Vec::new();
    let mut summary = Summary {
        local_pods: local.len(),
        ..Summary::default()
    };
    let mut used_policies = BTreeSet::new();
    // Egress rules depend only on the policy, so each is built once.
    let mut egress_cache: BTreeMap<(usize, usize), Vec<Rule>> = BTreeMap::new();
    // So are the peer sets of ingress rules (their ports resolve per pod).
    let mut ingress_cache: BTreeMap<(usize, usize), Vec<(IpFamily, String)>> = BTreeMap::new();
    for pod in &local {
        let policies: Vec<(usize, &Policy)> = cfg
            .cluster
            .policies
            .iter()
            .enumerate()
            .filter(|(_, p)| idx.selects(p, pod))
            .collect();
        if policies.iter().any(|(_, p)| p.affects_egress) {
            let mut rules = Vec::new();
            for (pi, policy) in policies.iter().filter(|(_, p)| p.affects_egress) {
                used_policies.insert(*pi);
                for (i, rule) in policy.egress.iter().enumerate() {
                    let built = egress_cache.entry((*pi, i)).or_insert_with(|| {
                        let counter = policy_counter(Direction::Egress, policy);
                        let mut rules = egress_rules(&idx, &mut sets, policy, i, rule);
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
            let audit = obs.audit
                || policies
                    .iter()
                    .filter(|(_, p)| p.affects_egress)
                    .all(|(_, p)| p.audit);
            rules.extend(chain_end(obs, Direction::Egress, &pod.namespace, audit));
            let name = chain_name(Direction::Egress, pod);
            for ip in &pod.ips {
                egress_jumps.push(Rule {
                    matches: vec![Match::Saddr(host_net(ip))],
                    action: Action::Jump(name.clone()),
                });
            }
            chains.push(Chain {
                name,
                base: None,
                rules,
            });
            summary.egress_isolated += 1;
        }
        if policies.iter().any(|(_, p)| p.affects_ingress) {
            let mut rules = Vec::new();
            for (pi, policy) in policies.iter().filter(|(_, p)| p.affects_ingress) {
                used_policies.insert(*pi);
                for (i, rule) in policy.ingress.iter().enumerate() {
                    let peer_sets = if rule.peers.is_empty() {
                        &Vec::new()
                    } else {
                        &*ingress_cache
                            .entry((*pi, i))
                            .or_insert_with(|| ingress_sets(&idx, &mut sets, policy, i, rule))
                    };
                    let counter = policy_counter(Direction::Ingress, policy);
                    let mut these = Vec::new();
                    ingress_rules(rule, peer_sets, pod, &counter, &mut these);
                    for r in logged_allows(obs, these, Direction::Ingress, policy, i) {
                        push_unique(&mut rules, r);
                    }
                }
            }
            let audit = obs.audit
                || policies
                    .iter()
                    .filter(|(_, p)| p.affects_ingress)
                    .all(|(_, p)| p.audit);
            rules.extend(chain_end(obs, Direction::Ingress, &pod.namespace, audit));
            let name = chain_name(Direction::Ingress, pod);
            for ip in &pod.ips {
                ingress_jumps.push(Rule {
                    matches: vec![Match::Daddr(host_net(ip))],
                    action: Action::Jump(name.clone()),
                });
            }
            chains.push(Chain {
                name,
                base: None,
                rules,
            });
            summary.ingress_isolated += 1;
        }
    }
    summary.policies = used_policies.len();
    let mut forward = vec![Rule {
        matches: vec![Match::CtState(vec![CtState::Established, CtState::Related])],
        action: Action::Accept,
    }];
    forward.extend(egress_jumps);
    forward.extend(ingress_jumps);
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
            maps: Vec::new(),
            chains,
        },
        summary,
    )
}
