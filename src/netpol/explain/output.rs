//! How an explanation is printed: text for people, `--json` for programs.

use serde_json::{Value, json};

use super::{Endpoint, Explanation, Outcome};

impl Explanation {
    pub fn decision(&self) -> &'static str {
        if self.allowed { "allow" } else { "deny" }
    }

    fn endpoint_text(e: &Endpoint) -> String {
        match &e.pod {
            Some(p) if *p == e.input => format!("{p} ({})", e.address),
            Some(p) => format!("{} (pod {p})", e.address),
            None if e.input == e.address.to_string() => e.input.clone(),
            None => format!("{} ({})", e.input, e.address),
        }
    }

    /// The human-readable report.
    pub fn text(&self) -> String {
        let mut s = format!(
            "{}: {} -> {} {}/{} on node {}\n  {}\n",
            self.decision(),
            Self::endpoint_text(&self.from),
            Self::endpoint_text(&self.to),
            self.proto.nft_name(),
            self.port,
            self.node,
            self.reason
        );
        if !self.path.is_empty() {
            s.push_str("path:\n");
        }
        for p in &self.path {
            s.push_str(&format!("  {} [{}]: {}\n", p.chain, p.rule, p.text));
            for (set, element) in &p.sets {
                s.push_str(&format!("    @{set} holds {element}\n"));
            }
        }
        if self.policed_here && self.path.is_empty() {
            s.push_str("path: no rule matched; the base chain's policy accepts\n");
        }
        s
    }

    /// The machine-readable report (`--json`).
    pub fn json(&self) -> Value {
        let ep = |e: &Endpoint| {
            json!({
                "input": e.input,
                "address": e.address.to_string(),
                "pod": e.pod,
                "node": e.node,
            })
        };
        let checks: Vec<Value> = self
            .checks
            .iter()
            .map(|c| {
                let mut v = json!({"direction": c.direction.name(), "pod": c.pod});
                match &c.outcome {
                    Outcome::NotIsolated => v["result"] = "not-isolated".into(),
                    Outcome::Allowed { rules, set } => {
                        v["result"] = "allowed".into();
                        v["rules"] = rules
                            .iter()
                            .map(|(p, i)| json!({"policy": p, "rule": i}))
                            .collect();
                        v["set"] = json!(set);
                    }
                    Outcome::DefaultDeny { policies } => {
                        v["result"] = "default-deny".into();
                        v["policies"] = json!(policies);
                    }
                    Outcome::WouldDrop { policies } => {
                        v["result"] = "would-drop".into();
                        v["policies"] = json!(policies);
                    }
                    Outcome::NotReached => v["result"] = "not-reached".into(),
                    Outcome::Cluster {
                        tier,
                        policy,
                        rule,
                        action,
                    } => {
                        v["result"] = match action {
                            crate::netpol::cnp::ClusterAction::Deny => "denied",
                            _ => "allowed",
                        }
                        .into();
                        v["cluster_policy"] = serde_json::json!({
                            "tier": tier.name(),
                            "name": policy,
                            "rule": rule,
                            "action": action.name(),
                        });
                    }
                    Outcome::OtherNode(n) => {
                        v["result"] = "other-node".into();
                        v["node"] = json!(n);
                    }
                }
                v
            })
            .collect();
        let path: Vec<Value> = self
            .path
            .iter()
            .map(|p| {
                json!({
                    "chain": p.chain,
                    "rule": p.rule,
                    "text": p.text,
                    "sets": p.sets.iter().map(|(s, e)| json!({"set": s, "element": e})).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({
            "decision": self.decision(),
            "node": self.node,
            "from": ep(&self.from),
            "to": ep(&self.to),
            "protocol": self.proto.nft_name(),
            "port": self.port,
            "policed_here": self.policed_here,
            "reason": self.reason,
            "checks": checks,
            "path": path,
        })
    }
}
