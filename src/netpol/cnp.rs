//! ClusterNetworkPolicy (`policy.networking.k8s.io/v1alpha2`, network-policy-api v0.2.0):
//! the cluster admin's policies, in two tiers around NetworkPolicy.
//!
//! ```text
//! Admin tier (by priority, then rule order)  Accept | Deny: final   Pass: to NetworkPolicy
//! NetworkPolicy                              a selected pod: allowed or denied, final
//! Baseline tier (by priority, rule order)    Accept | Deny: final   Pass: to the default
//! default                                    allow
//! ```
//! Each direction is decided on its own: egress on the source pod, ingress on the
//! destination pod; a connection needs both.

use ipnet::IpNet;

use super::fields::Protocol;
use super::selector::Selector;

/// `spec.priority`'s range (the CRD's validation).
pub const PRIORITY_MAX: u32 = 1000;
/// `spec.ingress` / `spec.egress`, `from` / `to`, `protocols`, `networks`: at most 25 each.
pub const LIST_MAX: usize = 25;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterPolicy {
    /// `metadata.name` (cluster-scoped: no namespace).
    pub name: String,
    pub tier: Tier,
    /// 0 (first) to 1000.
    pub priority: u32,
    pub subject: PodSet,
    /// In the order written: the first matching rule decides.
    pub ingress: Vec<ClusterRule>,
    pub egress: Vec<ClusterRule>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    Admin,
    Baseline,
}

impl Tier {
    pub fn name(self) -> &'static str {
        match self {
            Tier::Admin => "admin",
            Tier::Baseline => "baseline",
        }
    }

    /// The first part of the names of a tier's chains, sets and counters: capitalised,
    /// because namespace names never are (so `ingress/Admin/...` is no namespace's).
    pub fn object_prefix(self) -> &'static str {
        match self {
            Tier::Admin => "Admin",
            Tier::Baseline => "Baseline",
        }
    }

    /// The tier whose [`object_prefix`](Self::object_prefix) `part` is; None for a
    /// namespace name.
    pub fn from_object_prefix(part: &str) -> Option<Tier> {
        [Tier::Admin, Tier::Baseline]
            .into_iter()
            .find(|t| t.object_prefix() == part)
    }
}

/// Pods a subject or peer selects (host-network pods never).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodSet {
    /// `namespaces: <selector>`: every pod of the selected namespaces.
    Namespaces(Selector),
    /// `pods: {namespaceSelector, podSelector}`.
    Pods {
        namespaces: Selector,
        pods: Selector,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterRule {
    /// `name` (optional, up to 100 characters; for logs).
    pub name: String,
    pub action: ClusterAction,
    pub peers: Vec<ClusterPeer>,
    /// Empty: any protocol and port.
    pub protocols: Vec<ClusterPort>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClusterAction {
    Accept,
    Deny,
    Pass,
}

impl ClusterAction {
    pub fn name(self) -> &'static str {
        match self {
            ClusterAction::Accept => "Accept",
            ClusterAction::Deny => "Deny",
            ClusterAction::Pass => "Pass",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterPeer {
    Pods(PodSet),
    /// `networks` (egress only), host bits truncated as the API server's isCIDR accepts.
    Networks(Vec<IpNet>),
    /// A peer with none of the fields this version knows (a newer CRD): upstream says fail
    /// closed: an Accept rule matches nothing, a Deny or Pass rule matches everything.
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterPort {
    /// `tcp|udp|sctp: {destinationPort: {number}}` (first == last) or `{range: {start, end}}`.
    Port {
        protocol: Protocol,
        first: u16,
        last: u16,
    },
    /// `destinationNamedPort`: the container port of that name on the destination pod
    /// (with its protocol).
    Named(String),
}
