//! `--backend auto`: which backend to use, decided purely from recorded [`Evidence`]
//! (gathering it — a netlink probe and the save commands — is the caller's job), so the
//! decision is unit-tested on evidence recorded from real hosts.
//!
//! The rule (CONTRACT.md): native nftables, unless
//! 1. nf_tables does not answer in this kernel → iptables-legacy;
//! 2. Kubernetes components on this host run iptables-legacy: kubelet (1.24+) and
//!    kube-proxy create the chains `KUBE-IPTABLES-HINT` / `KUBE-KUBELET-CANARY` in the
//!    tables of the iptables they use (the signal iptables-wrappers reads). A hint in the
//!    nft tables wins (they moved to nft, the legacy one is a leftover); a hint only in the
//!    legacy tables → iptables-legacy;
//! 3. without a hint, the legacy tables hold clearly more rules than the nft side
//!    (legacy > 0 and legacy > 10 × nft, both families) → iptables-legacy: something on
//!    the host programs legacy and our rules must live next to its.
//!
//! Rules in native nftables tables do not count for either side: only iptables-nft's
//! tables are "the nft side" of iptables. nftkit's own rules (those carrying its
//! ownership comment, [`crate::state::OWNER_PREFIX`]) count for neither side either: one
//! run with `--backend iptables-legacy` must not make every later `auto` run pick legacy.

use crate::save::Save;

/// The chains kubelet / kube-proxy create to announce the iptables mode they use.
pub const KUBE_MARKER_CHAINS: [&str; 2] = ["KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY"];

/// Legacy wins on rule count only above this many times the nft side's count.
pub const LEGACY_RULE_FACTOR: usize = 10;

/// What one iptables flavour's save commands showed (both families).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SideEvidence {
    /// `-A` lines over every table and both families, nftkit's own left out.
    pub rules: usize,
    /// nftkit's own `-A` lines (ownership comment), shown but not weighed.
    pub nftkit_rules: usize,
    /// Which of [`KUBE_MARKER_CHAINS`] exist in some table.
    pub kube_chains: Vec<String>,
}

impl SideEvidence {
    /// Evidence from parsed saves (IPv4 and IPv6) of one flavour.
    pub fn from_saves(saves: &[&Save]) -> SideEvidence {
        let mut e = SideEvidence::default();
        for s in saves {
            let own = s
                .tables
                .iter()
                .flat_map(|t| &t.rules)
                .filter(|(_, spec)| crate::state::is_ours(spec))
                .count();
            e.rules += s.rule_count() - own;
            e.nftkit_rules += own;
            for m in KUBE_MARKER_CHAINS {
                if s.has_chain(m) && !e.kube_chains.iter().any(|k| k == m) {
                    e.kube_chains.push(m.to_string());
                }
            }
        }
        e
    }
}

/// Everything `auto` weighs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    /// `Ok` if nf_tables answered over netlink; `Err(reason)` if the kernel lacks it.
    pub nf_tables: Result<(), String>,
    /// iptables-legacy's view; `None` if its save commands are missing or failed.
    pub legacy: Option<SideEvidence>,
    /// iptables-nft's view; `None` if its save commands are missing or failed.
    pub nft: Option<SideEvidence>,
}

/// What `auto` resolves to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    Nftables,
    IptablesLegacy,
}

impl Choice {
    /// The `--backend` value.
    pub fn name(self) -> &'static str {
        match self {
            Choice::Nftables => "nftables",
            Choice::IptablesLegacy => "iptables-legacy",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub choice: Choice,
    /// One sentence: which rule decided.
    pub reason: String,
}

/// The decision for `e` (see the module documentation for the rule).
pub fn decide(e: &Evidence) -> Decision {
    let pick = |choice, reason: String| Decision { choice, reason };
    if let Err(why) = &e.nf_tables {
        return pick(
            Choice::IptablesLegacy,
            format!("nf_tables is not available in this kernel ({why})"),
        );
    }
    let empty = SideEvidence::default();
    let legacy = e.legacy.as_ref().unwrap_or(&empty);
    let nft = e.nft.as_ref().unwrap_or(&empty);
    if !nft.kube_chains.is_empty() {
        return pick(
            Choice::Nftables,
            format!(
                "Kubernetes components use iptables-nft ({} in the nft tables)",
                nft.kube_chains.join(", ")
            ),
        );
    }
    if !legacy.kube_chains.is_empty() {
        return pick(
            Choice::IptablesLegacy,
            format!(
                "Kubernetes components use iptables-legacy ({} in the legacy tables)",
                legacy.kube_chains.join(", ")
            ),
        );
    }
    if legacy.rules > 0 && legacy.rules > LEGACY_RULE_FACTOR * nft.rules {
        return pick(
            Choice::IptablesLegacy,
            format!(
                "the legacy tables hold {} rules, more than {LEGACY_RULE_FACTOR} times the {} of iptables-nft",
                legacy.rules, nft.rules
            ),
        );
    }
    let count = |s: &Option<SideEvidence>| match s {
        Some(s) => s.rules.to_string(),
        None => "not read".to_string(),
    };
    pick(
        Choice::Nftables,
        format!(
            "nf_tables is available and nothing points to iptables-legacy (legacy rules: {}, iptables-nft rules: {})",
            count(&e.legacy),
            count(&e.nft)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::save::parse;

    fn side(rules: usize, kube: &[&str]) -> Option<SideEvidence> {
        Some(SideEvidence {
            rules,
            nftkit_rules: 0,
            kube_chains: kube.iter().map(|s| s.to_string()).collect(),
        })
    }

    fn ev(
        nf: Result<(), String>,
        legacy: Option<SideEvidence>,
        nft: Option<SideEvidence>,
    ) -> Evidence {
        Evidence {
            nf_tables: nf,
            legacy,
            nft,
        }
    }

    #[test]
    fn clean_host_gets_nftables() {
        let d = decide(&ev(Ok(()), side(0, &[]), side(0, &[])));
        assert_eq!(d.choice, Choice::Nftables);
        // No iptables binaries at all: nothing to weigh.
        assert_eq!(decide(&ev(Ok(()), None, None)).choice, Choice::Nftables);
    }

    #[test]
    fn missing_nf_tables_gets_legacy_whatever_else() {
        let d = decide(&ev(
            Err("Operation not supported (os error 95)".into()),
            None,
            side(0, &["KUBE-IPTABLES-HINT"]),
        ));
        assert_eq!(d.choice, Choice::IptablesLegacy);
        assert!(d.reason.contains("os error 95"), "{}", d.reason);
    }

    #[test]
    fn kube_markers_decide_before_counts() {
        for m in KUBE_MARKER_CHAINS {
            let d = decide(&ev(Ok(()), side(3, &[m]), side(500, &[])));
            assert_eq!(d.choice, Choice::IptablesLegacy, "{m}");
            assert!(d.reason.contains(m), "{}", d.reason);
        }
        // A hint on the nft side wins over a leftover legacy one.
        let d = decide(&ev(
            Ok(()),
            side(900, &["KUBE-IPTABLES-HINT"]),
            side(5, &["KUBE-IPTABLES-HINT"]),
        ));
        assert_eq!(d.choice, Choice::Nftables);
    }

    #[test]
    fn legacy_needs_clearly_more_rules() {
        assert_eq!(
            decide(&ev(Ok(()), side(11, &[]), side(1, &[]))).choice,
            Choice::IptablesLegacy
        );
        assert_eq!(
            decide(&ev(Ok(()), side(10, &[]), side(1, &[]))).choice,
            Choice::Nftables
        );
        assert_eq!(
            decide(&ev(Ok(()), side(1, &[]), side(0, &[]))).choice,
            Choice::IptablesLegacy
        );
        assert_eq!(
            decide(&ev(Ok(()), side(1, &[]), None)).choice,
            Choice::IptablesLegacy
        );
        assert_eq!(
            decide(&ev(Ok(()), side(0, &[]), side(0, &[]))).choice,
            Choice::Nftables
        );
    }

    /// Evidence recorded from a kubeadm node whose kubelet runs iptables-legacy
    /// (`iptables-legacy-save`, trimmed) next to an empty nft side.
    #[test]
    fn recorded_legacy_kubelet_node() {
        let legacy_v4 = parse(
            "*mangle\n:PREROUTING ACCEPT [0:0]\n:KUBE-IPTABLES-HINT - [0:0]\n:KUBE-KUBELET-CANARY - [0:0]\nCOMMIT\n\
             *nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\nCOMMIT\n",
        )
        .unwrap();
        let legacy_v6 = parse("*mangle\n:KUBE-KUBELET-CANARY - [0:0]\nCOMMIT\n").unwrap();
        let nft_v4 = parse("").unwrap();
        let e = ev(
            Ok(()),
            Some(SideEvidence::from_saves(&[&legacy_v4, &legacy_v6])),
            Some(SideEvidence::from_saves(&[&nft_v4])),
        );
        assert_eq!(
            e.legacy,
            side(1, &["KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY"])
        );
        assert_eq!(decide(&e).choice, Choice::IptablesLegacy);
    }

    /// One `--backend iptables-legacy redirect` run on a clean host: its rules are
    /// nftkit's own and tip nothing towards legacy.
    #[test]
    fn nftkits_own_legacy_rules_do_not_count() {
        let c = "-m comment --comment \"managed by nftkit redirect\"";
        let legacy_v4 = parse(&format!(
            "*nat\n:OUTPUT ACCEPT [0:0]\n:NFTKIT-REDIRECT-OUTPUT - [0:0]\n\
             -A OUTPUT {c} -j NFTKIT-REDIRECT-OUTPUT\n\
             -A NFTKIT-REDIRECT-OUTPUT ! -p tcp {c} -j RETURN\n\
             -A NFTKIT-REDIRECT-OUTPUT -p tcp -m tcp --dport 80 {c} -j REDIRECT --to-ports 10080\nCOMMIT\n"
        ))
        .unwrap();
        let legacy = SideEvidence::from_saves(&[&legacy_v4]);
        assert_eq!((legacy.rules, legacy.nftkit_rules), (0, 3));
        let e = ev(Ok(()), Some(legacy), side(0, &[]));
        assert_eq!(decide(&e).choice, Choice::Nftables);
        // A foreign legacy rule next to them still counts.
        let mixed = parse(&format!(
            "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -d 192.0.2.1/32 -j ACCEPT\n\
             -A INPUT {c} -j ACCEPT\nCOMMIT\n"
        ))
        .unwrap();
        let legacy = SideEvidence::from_saves(&[&mixed]);
        assert_eq!((legacy.rules, legacy.nftkit_rules), (1, 1));
        assert_eq!(
            decide(&ev(Ok(()), Some(legacy), side(0, &[]))).choice,
            Choice::IptablesLegacy
        );
    }
}
