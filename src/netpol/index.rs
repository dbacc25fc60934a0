//! What one build precomputes about the cluster (`Index`) and the sets it declares
//! (`Sets`), shared by the NetworkPolicy rules (`build`) and the ClusterNetworkPolicy
//! tiers (`tiers`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use super::ipblock::{self, Range};
use super::manifest::{Cluster, Peer, Pod, Policy, PolicyRule, Protocol};

/// Whether a rule's peers select pods (its sets then follow pods, and stay declared).
pub(super) fn selects_pods(rule: &PolicyRule) -> bool {
    rule.peers.iter().any(|p| matches!(p, Peer::Pods { .. }))
}
use super::selector::Labels;
use crate::model::{Element, IpFamily, KeyType, L4Proto, Set};

/// Everything precomputed about the cluster for one build.
pub(super) struct Index<'c> {
    pub ns_labels: BTreeMap<&'c str, Labels>,
    /// Pods that can be peers: not host-network, not terminated, with an IP.
    pub peerable: Vec<&'c Pod>,
}

impl<'c> Index<'c> {
    pub fn new(cluster: &'c Cluster) -> Self {
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
    pub fn peer_pods(&self, peer: &Peer, policy_ns: &str) -> Vec<&'c Pod> {
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
    pub fn peer_ranges(&self, rule: &PolicyRule, policy_ns: &str) -> (Vec<Range>, Vec<Range>) {
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
    pub fn peer_pods_of_rule(&self, rule: &PolicyRule, policy_ns: &str) -> Vec<&'c Pod> {
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

    pub fn selects(&self, policy: &Policy, pod: &Pod) -> bool {
        pod.namespace == policy.namespace && policy.pod_selector.matches(&pod.labels)
    }
}

pub(super) fn same_family(ip: &IpAddr, net: &IpNet) -> bool {
    matches!(
        (ip, net),
        (IpAddr::V4(_), IpNet::V4(_)) | (IpAddr::V6(_), IpNet::V6(_))
    )
}

pub(super) fn push_ips(pod: &Pod, v4: &mut Vec<Range>, v6: &mut Vec<Range>) {
    for ip in &pod.ips {
        match ip {
            IpAddr::V4(a) => v4.push((u32::from(*a) as u128, u32::from(*a) as u128)),
            IpAddr::V6(a) => v6.push((u128::from(*a), u128::from(*a))),
        }
    }
}

/// Declared sets by name, created on first use.
#[derive(Default)]
pub(super) struct Sets {
    pub sets: BTreeMap<String, Set>,
}

impl Sets {
    /// Declare (once) the set `name` of family `f` with `ranges`. Empty, it is left out
    /// (None: a rule over it could never match) unless `keep_empty`: a set of selected
    /// pods stays declared while it has none, so a pod that comes is an element added.
    pub fn family_set(
        &mut self,
        name: String,
        f: IpFamily,
        ranges: &[Range],
        keep_empty: bool,
    ) -> Option<String> {
        if ranges.is_empty() && !keep_empty {
            return None;
        }
        if !self.sets.contains_key(&name) {
            let elements = ipblock::to_prefixes(f, ranges.to_vec())
                .into_iter()
                .map(Element::from)
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

pub(super) fn fam_suffix(f: IpFamily) -> &'static str {
    match f {
        IpFamily::V4 => "v4",
        IpFamily::V6 => "v6",
    }
}

pub(super) fn l4(p: Protocol) -> L4Proto {
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

/// The addresses of `pods` grouped by the port each of `named` (name, protocol) resolves
/// to on the pod: (v4, v6) per (protocol, port). A named port can stand for other numbers
/// on other pods, so a destination set and its port match are per group; two names that
/// resolve to one number share the group.
pub(super) fn named_port_groups<'p>(
    pods: impl IntoIterator<Item = &'p Pod>,
    named: &[(&str, Protocol)],
) -> BTreeMap<(Protocol, u16), (Vec<Range>, Vec<Range>)> {
    let mut groups: BTreeMap<(Protocol, u16), (Vec<Range>, Vec<Range>)> = BTreeMap::new();
    for pod in pods {
        for (name, proto) in named {
            if let Some(port) = resolve_named(pod, name, *proto) {
                let g = groups.entry((*proto, port)).or_default();
                push_ips(pod, &mut g.0, &mut g.1);
            }
        }
    }
    groups
}
