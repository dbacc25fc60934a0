//! `nftkit doctor`: what on this host can defeat nftkit's rules.
//!
//! An nf_tables `accept` ends only the base chain it is in: every other table's base chain
//! at the same hook still sees the packet, and a `drop` there wins whatever nftkit's table
//! says (upstream's iptables tools inserted their ACCEPT above DROPs in the *same* chain;
//! nftkit cannot). So doctor lists other tables' base chains at nftkit's hooks, with their
//! priority relative to nftkit's chains and their policy, plus iptables-legacy rules
//! (their own hooks, next to nf_tables), firewalld's table, the sysctls the jobs depend on
//! and conntrack table usage.
//!
//! [`diagnose`] is a pure function from gathered [`Facts`] to [`Finding`]s; [`gather`] is
//! the small read-only layer that fills the facts from this network namespace (netlink,
//! /proc, `iptables-legacy-save` when present — never `nft`).

use crate::backend::{self, BaseChain};
use crate::error::{Error, Result};
use crate::model::Hook;

/// nftkit's base chains: (command, chain type, hook, priority), as CONTRACT "Ownership"
/// and each job's `build` define them.
pub const NFTKIT_BASE_CHAINS: [(&str, &str, Hook, i32); 10] = [
    ("redirect", "nat", Hook::Output, -100),
    ("masquerade", "nat", Hook::Postrouting, 100),
    ("local-address", "raw", Hook::Prerouting, -300),
    ("local-address", "raw", Hook::Output, -300),
    ("local-address", "filter", Hook::Input, 0),
    ("local-address", "filter", Hook::Output, 0),
    ("dnat", "nat", Hook::Prerouting, -100),
    ("dnat", "nat", Hook::Output, -100),
    ("dnat", "filter", Hook::Forward, 0),
    ("netpol", "filter", Hook::Forward, 0),
];

/// The iptables-legacy side: tables in use and what their save shows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LegacyFacts {
    /// `ip filter`, `ip6 nat`, ... (from /proc/net/ip{,6}_tables_names).
    pub tables: Vec<String>,
    /// Rules over every table, nftkit's own left out; None without `iptables-legacy-save`.
    pub rules: Option<usize>,
    /// Built-in chains with policy DROP, as `ip filter INPUT`.
    pub drop_policies: Vec<String>,
}

/// Everything doctor looks at, read from the host by [`gather`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Facts {
    /// Every base chain of every ip/ip6/inet table (nftkit's own included: left out by
    /// their comment).
    pub base_chains: Vec<BaseChain>,
    /// nftkit commands whose table exists here (on any backend).
    pub jobs: Vec<String>,
    /// None when no legacy table exists.
    pub legacy: Option<LegacyFacts>,
    /// `net.ipv4.ip_forward`.
    pub ip_forward: Option<u8>,
    /// `net.ipv6.conf.all.forwarding`.
    pub ipv6_forwarding: Option<u8>,
    /// `net.ipv4.conf.{all,default}.rp_filter`.
    pub rp_filter_all: Option<u8>,
    pub rp_filter_default: Option<u8>,
    /// `net.netfilter.nf_conntrack_count` and `_max`.
    pub conntrack: Option<(u64, u64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Would defeat (some of) nftkit's rules: exit 1.
    Interferes,
    /// Worth knowing; does not change the exit code.
    Note,
}

/// One thing found, with its consequence and what to do, each one line.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// Stable identifier: `foreign-drop-chain`, `foreign-base-chain`, `iptables-legacy`,
    /// `firewalld`, `ip-forward`, `ipv6-forwarding`, `rp-filter`, `conntrack`.
    pub kind: &'static str,
    /// What was found, e.g. `table ip filter chain INPUT: hook input, priority 0, ...`.
    pub subject: String,
    pub consequence: String,
    pub action: String,
    /// The nftkit commands it affects.
    pub jobs: Vec<String>,
}

/// The commands whose traffic a drop at `hook` can stop.
fn jobs_at(hook: Hook) -> Vec<String> {
    let mut v: Vec<String> = NFTKIT_BASE_CHAINS
        .iter()
        .filter(|(_, _, h, _)| *h == hook)
        .map(|(j, ..)| j.to_string())
        .collect();
    v.dedup();
    v
}

/// Where priority `p` runs among nftkit's chains at `hook`, e.g. `before nftkit's
/// filter chains (0: local-address)`.
fn relation(hook: Hook, p: i32) -> String {
    let mut prios: Vec<i32> = NFTKIT_BASE_CHAINS
        .iter()
        .filter(|(_, _, h, _)| *h == hook)
        .map(|(.., q)| *q)
        .collect();
    prios.sort();
    prios.dedup();
    let parts: Vec<String> = prios
        .iter()
        .map(|&q| {
            let who: Vec<String> = NFTKIT_BASE_CHAINS
                .iter()
                .filter(|(_, _, h, r)| *h == hook && *r == q)
                .map(|(j, t, ..)| format!("{j} {t}"))
                .collect();
            let rel = match p.cmp(&q) {
                std::cmp::Ordering::Less => "before",
                std::cmp::Ordering::Equal => "same priority as",
                std::cmp::Ordering::Greater => "after",
            };
            format!("{rel} {q} ({})", who.join(", "))
        })
        .collect();
    format!("runs {}", parts.join("; "))
}

fn describe(c: &BaseChain) -> String {
    let mut s = format!(
        "table {} {} chain {}: hook {}, type {}, priority {} ({}), policy {}",
        c.family,
        c.table,
        c.chain,
        c.hook.nft_name(),
        c.chain_type,
        c.priority,
        relation(c.hook, c.priority),
        if c.policy_drop { "drop" } else { "accept" }
    );
    if c.drop_rules > 0 {
        s.push_str(&format!(", {} drop/reject rules", c.drop_rules));
    }
    s
}

/// What interferes and what is worth knowing, most serious first. Pure.
pub fn diagnose(f: &Facts) -> Vec<Finding> {
    let mut out = Vec::new();
    let has = |job: &str| f.jobs.iter().any(|j| j == job);
    for c in &f.base_chains {
        if backend::is_owned_comment(c.table_comment.as_deref()) {
            continue;
        }
        let jobs = jobs_at(c.hook);
        if jobs.is_empty() {
            continue;
        }
        if c.policy_drop || c.drop_rules > 0 {
            out.push(Finding {
                severity: Severity::Interferes,
                kind: "foreign-drop-chain",
                subject: describe(c),
                consequence: format!(
                    "it drops packets whatever nftkit's table accepts at {} (an accept ends only nftkit's own chain): {}",
                    c.hook.nft_name(),
                    jobs.join(", ")
                ),
                action: format!(
                    "accept nftkit's traffic in table {} {} too (a rule before its drops), or set the chain's policy to accept",
                    c.family, c.table
                ),
                jobs,
            });
        } else {
            out.push(Finding {
                severity: Severity::Note,
                kind: "foreign-base-chain",
                subject: describe(c),
                consequence: format!(
                    "sees the same packets as nftkit's chains at {}; it drops nothing, but its NAT or marks also apply",
                    c.hook.nft_name()
                ),
                action: "nothing, unless it rewrites what nftkit matches (then order the priorities)"
                    .into(),
                jobs,
            });
        }
    }
    if let Some(table) = f.base_chains.iter().find(|c| c.table == "firewalld") {
        out.push(Finding {
            severity: Severity::Interferes,
            kind: "firewalld",
            subject: format!("firewalld's table {} firewalld exists", table.family),
            consequence: "its zones reject at input and forward what they do not allow, whatever nftkit accepts, and firewall-cmd --reload rebuilds it".into(),
            action: "allow nftkit's ports and pod traffic in the zone (firewall-cmd --permanent --add-port=443/tcp, or the trusted zone for pod interfaces), or stop firewalld on Kubernetes nodes".into(),
            jobs: vec!["local-address".into(), "dnat".into(), "netpol".into()],
        });
    }
    if let Some(l) = &f.legacy {
        let tables = l.tables.join(", ");
        match l.rules {
            Some(n) if n > 0 || !l.drop_policies.is_empty() => {
                let mut subject = format!("iptables-legacy holds {n} rules (tables {tables})");
                if !l.drop_policies.is_empty() {
                    subject.push_str(&format!(
                        " and DROP policies on {}",
                        l.drop_policies.join(", ")
                    ));
                }
                out.push(Finding {
                    severity: Severity::Interferes,
                    kind: "iptables-legacy",
                    subject,
                    consequence: "legacy tables run at their own hooks next to nf_tables: their DROPs defeat nftkit's accepts and their NAT applies besides nftkit's".into(),
                    action: "if Kubernetes runs iptables-legacy here, run nftkit with --backend iptables-legacy (see nftkit detect); otherwise remove the stale rules (iptables-legacy-save lists them)".into(),
                    jobs: NFTKIT_BASE_CHAINS.iter().map(|(j, ..)| j.to_string()).fold(Vec::new(), |mut v, j| {
                        if !v.contains(&j) { v.push(j) }
                        v
                    }),
                });
            }
            Some(_) => {}
            None => out.push(Finding {
                severity: Severity::Note,
                kind: "iptables-legacy",
                subject: format!("iptables-legacy tables exist ({tables}) but iptables-legacy-save is not installed to read them"),
                consequence: "rules or DROP policies there would defeat nftkit's accepts unseen".into(),
                action: "run doctor from the -compat image, or iptables-legacy-save on the host".into(),
                jobs: Vec::new(),
            }),
        }
    }
    let forwarders: Vec<String> = ["masquerade", "dnat", "netpol"]
        .iter()
        .filter(|j| has(j))
        .map(|j| j.to_string())
        .collect();
    if f.ip_forward == Some(0) {
        out.push(Finding {
            severity: if forwarders.is_empty() { Severity::Note } else { Severity::Interferes },
            kind: "ip-forward",
            subject: "net.ipv4.ip_forward = 0".into(),
            consequence: "the node routes no pod traffic: nothing reaches the forward and postrouting hooks that masquerade, dnat (prerouting to another host) and netpol act on".into(),
            action: "sysctl -w net.ipv4.ip_forward=1 (and persist it in /etc/sysctl.d)".into(),
            jobs: if forwarders.is_empty() { vec!["masquerade".into(), "dnat".into(), "netpol".into()] } else { forwarders.clone() },
        });
    }
    if f.ipv6_forwarding == Some(0) && !forwarders.is_empty() {
        out.push(Finding {
            severity: Severity::Note,
            kind: "ipv6-forwarding",
            subject: "net.ipv6.conf.all.forwarding = 0".into(),
            consequence: "IPv6 pod traffic is not routed: IPv6 rules of masquerade, dnat and netpol see none of it".into(),
            action: "on dual-stack nodes, sysctl -w net.ipv6.conf.all.forwarding=1".into(),
            jobs: forwarders.clone(),
        });
    }
    let strict = |v: Option<u8>| v == Some(1);
    if strict(f.rp_filter_all) || strict(f.rp_filter_default) {
        out.push(Finding {
            severity: Severity::Note,
            kind: "rp-filter",
            subject: format!(
                "net.ipv4.conf.all.rp_filter = {}, default.rp_filter = {} (1 = strict)",
                f.rp_filter_all.map_or("?".into(), |v| v.to_string()),
                f.rp_filter_default.map_or("?".into(), |v| v.to_string())
            ),
            consequence: "a packet whose source is not routed back through the interface it came in on is dropped before any rule: asymmetric routes to local-address's address or dnat's target fail".into(),
            action: "on multi-homed nodes use loose mode: sysctl -w net.ipv4.conf.all.rp_filter=2".into(),
            jobs: vec!["local-address".into(), "dnat".into()],
        });
    }
    if let Some((count, max)) = f.conntrack
        && max > 0
    {
        let pct = count * 100 / max;
        if pct >= 75 {
            out.push(Finding {
                severity: if pct >= 90 { Severity::Interferes } else { Severity::Note },
                kind: "conntrack",
                subject: format!("conntrack table {count} of {max} entries ({pct}%)"),
                consequence: "when it is full the kernel drops new connections: NAT (redirect, masquerade, dnat) and ct state rules (dnat, netpol) stop working for them".into(),
                action: "raise net.netfilter.nf_conntrack_max, or find what opens so many connections (conntrack -S)".into(),
                jobs: vec!["redirect".into(), "masquerade".into(), "dnat".into(), "netpol".into()],
            });
        }
    }
    out.sort_by_key(|f| f.severity);
    out
}

/// Whether anything found would interfere (exit 1).
pub fn interferes(findings: &[Finding]) -> bool {
    findings.iter().any(|f| f.severity == Severity::Interferes)
}

/// `nftkit doctor`.
pub fn report_text(f: &Facts, findings: &[Finding]) -> String {
    let n = findings
        .iter()
        .filter(|x| x.severity == Severity::Interferes)
        .count();
    let mut s = format!(
        "nftkit tables here: {}\n",
        if f.jobs.is_empty() {
            "none".to_string()
        } else {
            f.jobs.join(", ")
        }
    );
    if findings.is_empty() {
        s.push_str("nothing found that would interfere with nftkit's rules\n");
    } else {
        s.push_str(&format!(
            "{n} finding(s) would interfere with nftkit's rules, {} note(s)\n",
            findings.len() - n
        ));
    }
    for x in findings {
        let tag = match x.severity {
            Severity::Interferes => "INTERFERES",
            Severity::Note => "NOTE",
        };
        s.push_str(&format!(
            "\n{tag} [{}] {}\n  consequence: {}\n  do: {}\n",
            x.kind, x.subject, x.consequence, x.action
        ));
        if !x.jobs.is_empty() {
            s.push_str(&format!("  affects: {}\n", x.jobs.join(", ")));
        }
    }
    s
}

/// `nftkit doctor --json`.
pub fn report_json(f: &Facts, findings: &[Finding]) -> serde_json::Value {
    serde_json::json!({
        "interferes": interferes(findings),
        "jobs": f.jobs,
        "findings": findings,
        "facts": {
            "base_chains": f.base_chains.iter().map(|c| serde_json::json!({
                "family": c.family,
                "table": c.table,
                "chain": c.chain,
                "hook": c.hook.nft_name(),
                "type": c.chain_type,
                "priority": c.priority,
                "policy": if c.policy_drop { "drop" } else { "accept" },
                "rules": c.rules,
                "drop_rules": c.drop_rules,
                "nftkit": backend::is_owned_comment(c.table_comment.as_deref()),
            })).collect::<Vec<_>>(),
            "iptables_legacy": f.legacy.as_ref().map(|l| serde_json::json!({
                "tables": l.tables,
                "rules": l.rules,
                "drop_policies": l.drop_policies,
            })),
            "ip_forward": f.ip_forward,
            "ipv6_forwarding": f.ipv6_forwarding,
            "rp_filter": { "all": f.rp_filter_all, "default": f.rp_filter_default },
            "conntrack": f.conntrack.map(|(c, m)| serde_json::json!({ "count": c, "max": m })),
        }
    })
}

fn sysctl(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Read the facts of this network namespace. Needs CAP_NET_ADMIN (netlink dumps).
pub fn gather() -> Result<Facts> {
    let mut nl = backend::netlink::NetlinkBackend::connect()?;
    let base_chains = nl.base_chains()?;
    let mut owned = backend::Inspect::list_owned(&mut nl)?;
    for mut other in backend::Inspect::other_backends(&nl) {
        if let Ok(t) = other.list_owned() {
            owned.extend(t);
        }
    }
    let mut jobs: Vec<String> = owned
        .iter()
        .filter_map(|t| {
            t.comment
                .strip_prefix(backend::OWNER_PREFIX)
                .map(|c| c.trim().to_string())
        })
        .filter(|c| !c.is_empty())
        .collect();
    jobs.sort();
    jobs.dedup();
    let u8_of = |p: &str| sysctl(p).and_then(|v| u8::try_from(v).ok());
    let conntrack = match (
        sysctl("/proc/sys/net/netfilter/nf_conntrack_count"),
        sysctl("/proc/sys/net/netfilter/nf_conntrack_max"),
    ) {
        (Some(c), Some(m)) => Some((c, m)),
        _ => None,
    };
    Ok(Facts {
        base_chains,
        jobs,
        legacy: legacy_facts(),
        ip_forward: u8_of("/proc/sys/net/ipv4/ip_forward"),
        ipv6_forwarding: u8_of("/proc/sys/net/ipv6/conf/all/forwarding"),
        rp_filter_all: u8_of("/proc/sys/net/ipv4/conf/all/rp_filter"),
        rp_filter_default: u8_of("/proc/sys/net/ipv4/conf/default/rp_filter"),
        conntrack,
    })
}

/// The legacy tables in use (the kernel's lists instantiate nothing), and when
/// `iptables-legacy-save` is installed, their rules and DROP policies.
fn legacy_facts() -> Option<LegacyFacts> {
    use backend::iptables::Exec;
    let mut l = LegacyFacts::default();
    for (family, list) in [
        ("ip", "/proc/net/ip_tables_names"),
        ("ip6", "/proc/net/ip6_tables_names"),
    ] {
        if let Ok(names) = std::fs::read_to_string(list) {
            l.tables
                .extend(names.split_whitespace().map(|t| format!("{family} {t}")));
        }
    }
    if l.tables.is_empty() {
        return None;
    }
    let exec = backend::iptables::SystemExec::default();
    let mut rules = Some(0);
    for (family, ip) in [
        ("ip", nft_compat::IpVersion::V4),
        ("ip6", nft_compat::IpVersion::V6),
    ] {
        if !l
            .tables
            .iter()
            .any(|t| t.starts_with(&format!("{family} ")))
        {
            continue;
        }
        let save = exec
            .find(&nft_compat::Flavour::Legacy.save_binary(ip))
            .and_then(|bin| exec.run(&bin.to_string_lossy(), &[], None).ok())
            .filter(|o| o.status.success())
            .and_then(|o| nft_compat::save::parse(&String::from_utf8_lossy(&o.stdout)).ok());
        let Some(save) = save else {
            rules = None;
            continue;
        };
        for t in &save.tables {
            rules = rules.map(|n| {
                n + t
                    .rules
                    .iter()
                    .filter(|(_, spec)| !nft_compat::state::is_ours(spec))
                    .count()
            });
            for (chain, policy) in &t.chains {
                if policy.as_deref() == Some("DROP") {
                    l.drop_policies.push(format!("{family} {} {chain}", t.name));
                }
            }
        }
    }
    l.rules = rules;
    Some(l)
}

/// Gather, diagnose and print; Err (exit 1) when something would interfere.
pub fn run(json: bool, out: &mut dyn std::io::Write) -> Result<()> {
    let facts = gather()?;
    let findings = diagnose(&facts);
    let text = if json {
        format!("{}\n", report_json(&facts, &findings))
    } else {
        report_text(&facts, &findings)
    };
    out.write_all(text.as_bytes())
        .map_err(|e| Error::runtime(format!("stdout: {e}")))?;
    let n = findings
        .iter()
        .filter(|f| f.severity == Severity::Interferes)
        .count();
    if n > 0 {
        return Err(Error::runtime(format!(
            "{n} finding(s) on this host would interfere with nftkit's rules (see above)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(table: &str, hook: Hook, priority: i32, policy_drop: bool, drops: usize) -> BaseChain {
        BaseChain {
            family: "inet",
            table: table.into(),
            table_comment: None,
            chain: "c".into(),
            hook,
            chain_type: "filter",
            priority,
            policy_drop,
            rules: drops,
            drop_rules: drops,
        }
    }

    #[test]
    fn a_clean_host_has_nothing_to_report() {
        let f = Facts {
            ip_forward: Some(1),
            rp_filter_all: Some(2),
            conntrack: Some((10, 1000)),
            ..Default::default()
        };
        assert_eq!(diagnose(&f), []);
        assert!(report_text(&f, &[]).contains("nothing found"));
    }

    #[test]
    fn foreign_drop_chains_interfere_with_their_priority_relative_to_ours() {
        let mut own = chain("nftkit-local-address", Hook::Input, 0, false, 0);
        own.table_comment = Some("managed by nftkit local-address".into());
        let f = Facts {
            base_chains: vec![
                chain("fw", Hook::Input, -10, true, 0),
                chain("fw", Hook::Forward, 10, false, 2),
                chain("mangle", Hook::Input, -150, false, 0),
                own,
            ],
            ..Default::default()
        };
        let found = diagnose(&f);
        let kinds: Vec<_> = found.iter().map(|x| (x.severity, x.kind)).collect();
        assert_eq!(
            kinds,
            [
                (Severity::Interferes, "foreign-drop-chain"),
                (Severity::Interferes, "foreign-drop-chain"),
                (Severity::Note, "foreign-base-chain"),
            ]
        );
        assert!(interferes(&found));
        let input = &found[0].subject;
        assert!(
            input.contains("table inet fw chain c: hook input")
                && input.contains("priority -10")
                && input.contains("before 0 (local-address filter)")
                && input.contains("policy drop"),
            "{input}"
        );
        assert_eq!(found[0].jobs, ["local-address"]);
        let forward = &found[1];
        assert!(
            forward
                .subject
                .contains("after 0 (dnat filter, netpol filter)")
        );
        assert!(forward.subject.contains("2 drop/reject rules"));
        assert_eq!(forward.jobs, ["dnat", "netpol"]);
        let j = report_json(&f, &found);
        assert_eq!(j["interferes"], true);
        assert_eq!(j["findings"][0]["severity"], "interferes");
        assert_eq!(j["facts"]["base_chains"][3]["nftkit"], true);
    }

    #[test]
    fn sysctls_interfere_only_for_the_jobs_that_need_them() {
        let mut f = Facts {
            ip_forward: Some(0),
            rp_filter_all: Some(1),
            ..Default::default()
        };
        let notes = diagnose(&f);
        assert!(!interferes(&notes), "{notes:?}");
        assert_eq!(notes.len(), 2);
        f.jobs = vec!["masquerade".into()];
        let found = diagnose(&f);
        assert_eq!(found[0].kind, "ip-forward");
        assert_eq!(found[0].severity, Severity::Interferes);
        assert_eq!(found[0].jobs, ["masquerade"]);
    }

    #[test]
    fn legacy_rules_firewalld_and_a_full_conntrack_table_interfere() {
        let f = Facts {
            base_chains: vec![chain("firewalld", Hook::Prerouting, -290, false, 0)],
            legacy: Some(LegacyFacts {
                tables: vec!["ip filter".into()],
                rules: Some(3),
                drop_policies: vec!["ip filter INPUT".into()],
            }),
            conntrack: Some((950, 1000)),
            ..Default::default()
        };
        let found = diagnose(&f);
        let kinds: Vec<_> = found
            .iter()
            .filter(|x| x.severity == Severity::Interferes)
            .map(|x| x.kind)
            .collect();
        assert_eq!(kinds, ["firewalld", "iptables-legacy", "conntrack"]);
        assert!(
            found[1].subject.contains("3 rules") && found[1].subject.contains("ip filter INPUT")
        );
        // Tables without rules or drop policies are fine; unreadable ones are a note.
        let mut quiet = f.clone();
        quiet.base_chains.clear();
        quiet.conntrack = None;
        quiet.legacy = Some(LegacyFacts {
            tables: vec!["ip filter".into()],
            rules: Some(0),
            drop_policies: vec![],
        });
        assert_eq!(diagnose(&quiet), []);
        quiet.legacy.as_mut().unwrap().rules = None;
        assert_eq!(diagnose(&quiet)[0].severity, Severity::Note);
    }
}
