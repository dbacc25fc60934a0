//! Per-policy packet and byte counts for `/metrics`: every rule a NetworkPolicy adds
//! counts into the policy's named kernel counter (`<direction>/<namespace>/<policy>`),
//! every isolation drop (the default deny) into its namespace's
//! `<direction>/<namespace>/-isolated`
//! (see `build`); a ClusterNetworkPolicy's rules into `<direction>/<Tier>/<policy>/<action>`
//! (`tiers`). Labels are per policy, never per pod or address.
//!
//! A whole-table replacement starts the kernel's counters again at zero; the daemon
//! carries the totals across: it reads the counters right before each replacement it
//! makes and adds what they counted since its last reading, so `/metrics` only grows.
//! A restarted daemon starts from the kernel's values at that time (its table persists).

use std::collections::BTreeMap;

use super::build::{DEFAULT_DENY, WOULD_DROP};
use super::cnp::Tier;
use crate::backend::CounterValue;

/// Totals per counter name, carried across table replacements.
#[derive(Debug, Default)]
pub struct Totals {
    /// (packets, bytes) counted since this daemon started.
    totals: BTreeMap<String, (u64, u64)>,
    /// The kernel's values at the last reading, since the table was last replaced.
    seen: BTreeMap<String, (u64, u64)>,
}

impl Totals {
    /// Add what each counter counted since the last reading. A counter below its last
    /// value was reset (someone else replaced the table): all of it is new.
    pub fn observe(&mut self, now: &[CounterValue]) {
        for c in now {
            let (sp, sb) = self.seen.get(&c.name).copied().unwrap_or((0, 0));
            let (dp, db) = if c.packets >= sp && c.bytes >= sb {
                (c.packets - sp, c.bytes - sb)
            } else {
                (c.packets, c.bytes)
            };
            let t = self.totals.entry(c.name.clone()).or_insert((0, 0));
            t.0 += dp;
            t.1 += db;
            self.seen.insert(c.name.clone(), (c.packets, c.bytes));
        }
    }

    /// This daemon replaced the table: its counters start again at zero.
    pub fn replaced(&mut self) {
        self.seen.clear();
    }

    /// `nftkit_netpol_packets_total` and `nftkit_netpol_bytes_total`, in the Prometheus
    /// text format.
    pub fn metrics(&self, table: &str) -> String {
        let mut packets = String::new();
        let mut bytes = String::new();
        for (name, (p, b)) in &self.totals {
            let labels = labels(table, name);
            packets.push_str(&format!("nftkit_netpol_packets_total{{{labels}}} {p}\n"));
            bytes.push_str(&format!("nftkit_netpol_bytes_total{{{labels}}} {b}\n"));
        }
        format!(
            "# HELP nftkit_netpol_packets_total Packets a NetworkPolicy allowed (verdict accept), isolation dropped because no policy allowed them (kind default-deny, verdict drop), or a ClusterNetworkPolicy's rules decided (kind ClusterNetworkPolicy, tier admin or baseline, verdict accept, drop or pass), per policy and direction; carried across table replacements.\n\
             # TYPE nftkit_netpol_packets_total counter\n{packets}\
             # HELP nftkit_netpol_bytes_total Bytes of the packets counted by nftkit_netpol_packets_total.\n\
             # TYPE nftkit_netpol_bytes_total counter\n{bytes}"
        )
    }
}

/// The labels of counter `name` (`<direction>/<namespace>/<policy, -isolated or
/// -would-drop>`).
fn labels(table: &str, name: &str) -> String {
    let mut parts = name.splitn(3, '/');
    let (direction, namespace, rest) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    // A ClusterNetworkPolicy's: `<direction>/<Tier>/<policy>/<Accept|Deny|Pass>`.
    if let Some(tier) = Tier::from_object_prefix(namespace) {
        let (policy, action) = rest.rsplit_once('/').unwrap_or((rest, ""));
        let verdict = match action {
            "Deny" => "drop",
            "Pass" => "pass",
            _ => "accept",
        };
        return format!(
            "table=\"{}\",kind=\"ClusterNetworkPolicy\",tier=\"{}\",namespace=\"\",policy=\"{}\",direction=\"{}\",verdict=\"{verdict}\"",
            escape(table),
            tier.name(),
            escape(policy),
            escape(direction)
        );
    }
    let (kind, policy, verdict) = match rest {
        DEFAULT_DENY => ("default-deny", "", "drop"),
        WOULD_DROP => ("default-deny", "", "would-drop"),
        _ => ("NetworkPolicy", rest, "accept"),
    };
    format!(
        "table=\"{}\",kind=\"{kind}\",namespace=\"{}\",policy=\"{}\",direction=\"{}\",verdict=\"{verdict}\"",
        escape(table),
        escape(namespace),
        escape(policy),
        escape(direction)
    )
}

/// A Prometheus label value.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str, packets: u64, bytes: u64) -> CounterValue {
        CounterValue {
            name: name.into(),
            packets,
            bytes,
        }
    }

    #[test]
    fn cluster_policy_counters_get_their_tier_and_verdict() {
        assert_eq!(
            labels("t", "ingress/Admin/deny-db/Deny"),
            "table=\"t\",kind=\"ClusterNetworkPolicy\",tier=\"admin\",namespace=\"\",policy=\"deny-db\",direction=\"ingress\",verdict=\"drop\""
        );
        assert!(labels("t", "egress/Baseline/x/Accept").ends_with("verdict=\"accept\""));
        assert!(labels("t", "egress/Admin/x/Pass").ends_with("verdict=\"pass\""));
    }

    #[test]
    fn totals_survive_a_replacement_and_an_outside_reset() {
        let mut t = Totals::default();
        t.observe(&[c("ingress/ns/web", 3, 300)]);
        t.observe(&[c("ingress/ns/web", 5, 500)]);
        // Read right before our replacement, which starts the kernel at zero again.
        t.observe(&[c("ingress/ns/web", 6, 600)]);
        t.replaced();
        t.observe(&[c("ingress/ns/web", 2, 200)]);
        assert_eq!(t.totals["ingress/ns/web"], (8, 800));
        // Someone else replaced the table: the counter went down, all of it is new.
        t.observe(&[c("ingress/ns/web", 1, 100)]);
        assert_eq!(t.totals["ingress/ns/web"], (9, 900));
    }

    #[test]
    fn labels_name_the_policy_or_the_default_deny_never_a_pod() {
        let mut t = Totals::default();
        t.observe(&[
            c("ingress/default/allow-web", 4, 240),
            c("egress/prod/-isolated", 1, 60),
            c("ingress/prod/-would-drop", 2, 120),
        ]);
        let m = t.metrics("nftkit-netpol");
        assert!(m.contains(
            "nftkit_netpol_packets_total{table=\"nftkit-netpol\",kind=\"NetworkPolicy\",namespace=\"default\",policy=\"allow-web\",direction=\"ingress\",verdict=\"accept\"} 4\n"
        ), "{m}");
        assert!(m.contains(
            "nftkit_netpol_bytes_total{table=\"nftkit-netpol\",kind=\"default-deny\",namespace=\"prod\",policy=\"\",direction=\"egress\",verdict=\"drop\"} 60\n"
        ), "{m}");
        assert!(
            m.contains("# TYPE nftkit_netpol_packets_total counter\n"),
            "{m}"
        );
    }
}
