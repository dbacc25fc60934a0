//! What the netpol table adds so its policies can be observed: named counters per
//! policy and per namespace's default deny, verdict log rules (a kernel-side rate limit
//! shared by the node, an nflog group) and audit mode's would-drops.

use super::manifest::Policy;
use super::names::{Direction, fit, object_name};
use crate::model::{Action, LOG_PREFIX_MAX, Match, Rule};

/// Which verdicts are logged to the nflog group (`--log-verdicts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogVerdicts {
    /// Nothing (audit mode still logs its would-drops).
    #[default]
    None,
    /// Drops (and would-drops).
    Drops,
    /// Drops and every policy's accepts.
    All,
}

/// What the table adds so policies can be observed: verdict logs and audit mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observe {
    pub verdicts: LogVerdicts,
    /// nfnetlink_log group the log rules send to (`--log-group`).
    pub group: u16,
    /// Logged packets a second, for the whole table (`--log-rate`, kernel-side limit).
    pub rate: u32,
    /// `--audit`: nothing is dropped; what would be is counted and logged as would-drop.
    pub audit: bool,
}

impl Default for Observe {
    fn default() -> Self {
        Observe {
            verdicts: LogVerdicts::None,
            group: DEFAULT_LOG_GROUP,
            rate: DEFAULT_LOG_RATE,
            audit: false,
        }
    }
}

pub const DEFAULT_LOG_GROUP: u16 = 100;
pub const DEFAULT_LOG_RATE: u32 = 100;
/// The one named limit every log rule shares: the rate is per table, so per node.
pub const LOG_LIMIT: &str = "nftkit-log";
/// Every log prefix starts with this.
pub const LOG_PREFIX: &str = "nftkit";
/// The last part of an audit-mode default-deny counter's name.
pub const WOULD_DROP: &str = "-would-drop";

/// The named counter of what `policy` allows in `dir` (every rule of it, every pod it
/// selects): `<direction>/<namespace>/<policy>`.
pub fn policy_counter(dir: Direction, policy: &Policy) -> Match {
    Match::Count {
        counter: object_name(&[dir.name(), &policy.namespace, &policy.name]),
    }
}

/// The named counter of what isolation drops in `dir` for the pods of `namespace` (no
/// policy allowed it; the default deny): `<direction>/<namespace>/-isolated` (no policy
/// name starts with '-').
pub fn default_deny_counter(dir: Direction, namespace: &str) -> Match {
    Match::Count {
        counter: object_name(&[dir.name(), namespace, DEFAULT_DENY]),
    }
}

/// The last part of a default-deny counter's name.
pub const DEFAULT_DENY: &str = "-isolated";

/// A log prefix, `nftkit <verdict> <what>`, within the kernel's 127 bytes (a very long
/// policy name is cut and made unique with a hash).
pub(super) fn log_prefix(verdict: &str, what: &str) -> String {
    fit(format!("{LOG_PREFIX} {verdict} {what}"), LOG_PREFIX_MAX)
}

/// The rule that logs what `matches` match (rate-limited by the table's one named
/// limit) and goes on to the next rule: a limit is a condition, so it cannot share a
/// rule with the verdict it reports.
pub(super) fn log_rule(obs: &Observe, mut matches: Vec<Match>, prefix: String) -> Rule {
    matches.retain(|m| !matches!(m, Match::Count { .. }));
    matches.push(Match::Limit {
        name: LOG_LIMIT.into(),
        per_second: obs.rate,
    });
    matches.push(Match::Log {
        group: obs.group,
        prefix,
    });
    Rule {
        matches,
        action: Action::Continue,
    }
}

/// A policy's allows for its rule `i` in `dir`, each after its log rule when every
/// verdict is logged.
pub(super) fn logged_allows(
    obs: &Observe,
    rules: Vec<Rule>,
    dir: Direction,
    policy: &Policy,
    i: usize,
) -> Vec<Rule> {
    if obs.verdicts != LogVerdicts::All {
        return rules;
    }
    let what = format!("{}/{}/{}#{i}", dir.name(), policy.namespace, policy.name);
    let prefix = log_prefix("accept", &what);
    rules
        .into_iter()
        .flat_map(|r| [log_rule(obs, r.matches.clone(), prefix.clone()), r])
        .collect()
}

/// The end of an isolated pod's chain in `dir`: the default deny, counted (and logged
/// unless verdicts are not), or in audit mode a would-drop that is counted and logged
/// and lets the packet go on as if no policy existed.
pub(super) fn chain_end(obs: &Observe, dir: Direction, namespace: &str, audit: bool) -> Vec<Rule> {
    let what = format!("{}/{namespace}", dir.name());
    let mut out = Vec::new();
    if audit {
        out.push(log_rule(obs, vec![], log_prefix("would-drop", &what)));
        out.push(Rule {
            matches: vec![Match::Count {
                counter: object_name(&[dir.name(), namespace, WOULD_DROP]),
            }],
            action: Action::Return,
        });
    } else {
        if obs.verdicts != LogVerdicts::None {
            out.push(log_rule(obs, vec![], log_prefix("drop", &what)));
        }
        out.push(Rule {
            matches: vec![default_deny_counter(dir, namespace)],
            action: Action::Drop,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netpol::build::{NetpolConfig, build_observed};
    use crate::netpol::manifest::Cluster;
    use crate::render::rule_text;

    fn cluster(annotate_second: Option<&str>) -> Cluster {
        let second = annotate_second.map_or(String::new(), |annotation| {
            format!(
                r#", {{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                  "metadata": {{"name": "b", "namespace": "ns", "annotations": {{"nftkit.io/audit": "{annotation}"}}}},
                  "spec": {{"podSelector": {{}}, "policyTypes": ["Ingress"]}}}}"#
            )
        });
        let text = format!(
            r#"{{"apiVersion": "v1", "kind": "List", "items": [
              {{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "p", "namespace": "ns"}},
                "spec": {{"nodeName": "n"}}, "status": {{"podIP": "10.0.0.2"}}}},
              {{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {{"name": "a", "namespace": "ns", "annotations": {{"nftkit.io/audit": "true"}}}},
                "spec": {{"podSelector": {{}}, "policyTypes": ["Ingress"]}}}}{second}]}}"#
        );
        crate::netpol::manifest::parse("test", &text).expect("manifest")
    }

    fn chain_end(c: Cluster, obs: &Observe) -> Vec<String> {
        let cfg = NetpolConfig {
            node: "n".into(),
            cluster: c,
        };
        let (rs, _) = build_observed(&cfg, "t", obs);
        // The chain of the pod's policies (one pod here).
        let chain = rs
            .chains
            .iter()
            .find(|c| c.name.starts_with("ingress/ns/"))
            .unwrap();
        chain.rules.iter().map(rule_text).collect()
    }

    #[test]
    fn an_audit_annotation_turns_only_that_policys_denials_into_would_drops() {
        let obs = Observe::default();
        // Isolated only by the annotated policy: the packet goes on, counted and logged.
        assert_eq!(
            chain_end(cluster(None), &obs),
            vec![
                "limit name \"nftkit-log\" log prefix \"nftkit would-drop ingress/ns\" group 100",
                "counter name \"ingress/ns/-would-drop\" return",
            ]
        );
        // A second, enforcing policy isolates the pod too: the default deny drops.
        assert_eq!(
            chain_end(cluster(Some("false")), &obs),
            vec!["counter name \"ingress/ns/-isolated\" drop"]
        );
        // Both annotated: still only would-drops.
        assert_eq!(chain_end(cluster(Some("true")), &obs).len(), 2);
        // --audit: every denial is a would-drop whatever the annotations.
        let audit = Observe {
            audit: true,
            ..Observe::default()
        };
        assert_eq!(chain_end(cluster(Some("false")), &audit).len(), 2);
    }

    #[test]
    fn log_prefixes_fit_the_kernel_and_stay_unique() {
        let long = "p".repeat(200);
        let a = log_prefix("accept", &format!("ingress/ns/{long}#0"));
        let b = log_prefix("accept", &format!("ingress/ns/{long}#1"));
        assert!(a.len() <= LOG_PREFIX_MAX && b.len() <= LOG_PREFIX_MAX);
        assert_ne!(a, b);
        assert_eq!(log_prefix("drop", "ingress/ns"), "nftkit drop ingress/ns");
    }
}
