//! A refused apply leaves the iptables backends' state as it was (exit 1), although
//! iptables-restore commits table by table and IPv4 and IPv6 are two runs: nftkit rolls
//! back what was already committed. The refusal is provoked with a stale chain of ours
//! that a foreign chain still jumps to, so deleting it fails (`-X`: too many links).
//! "Ours" is the comment (an iptables chain has none of its own): the stale chain holds a
//! rule carrying `managed by nftkit <command>`.
//! Needs root; run through scripts/test.sh.

use crate::common::*;

/// `tool` output without comments and counters.
fn save(ns: &Netns, tool: &str) -> String {
    ns.must(&[tool])
        .stdout
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| match l.rfind(" [") {
            Some(i) if l.starts_with(':') => format!("{} [0:0]", &l[..i]),
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A rule with nftkit's ownership comment in `chain`, which makes the chain provably ours.
fn stale_rule_of_ours(ns: &Netns, tool: &str, table: &str, chain: &str, command: &str) {
    let comment = format!("managed by nftkit {command}");
    ns.must(&[
        tool,
        "-t",
        table,
        "-A",
        chain,
        "-m",
        "comment",
        "--comment",
        &comment,
        "-j",
        "RETURN",
    ]);
}

/// IPv4 commits, IPv6 is refused: IPv4 is rolled back.
#[test]
fn refused_ipv6_rolls_back_ipv4() {
    require_root();
    for flavour in ["legacy", "nft"] {
        let ns = Netns::new();
        let v4 = format!("iptables-{flavour}");
        let v6 = format!("ip6tables-{flavour}");
        // A leftover chain of ours in both families; in IPv6 a foreign chain uses it.
        for tool in [&v4, &v6] {
            ns.must(&[tool, "-t", "nat", "-N", "NFTKIT-REDIRECT-OLD"]);
            stale_rule_of_ours(&ns, tool, "nat", "NFTKIT-REDIRECT-OLD", "redirect");
        }
        ns.must(&[&v6, "-t", "nat", "-N", "FOREIGN"]);
        ns.must(&[
            &v6,
            "-t",
            "nat",
            "-A",
            "FOREIGN",
            "-j",
            "NFTKIT-REDIRECT-OLD",
        ]);
        let s4 = format!("{v4}-save");
        let s6 = format!("{v6}-save");
        let before = (save(&ns, &s4), save(&ns, &s6));

        let out = ns.nftkit(
            &[],
            &["--backend", &format!("iptables-{flavour}"), "redirect"],
        );
        assert_eq!(out.code, Some(1), "{out}");
        assert!(
            out.stderr.contains(&format!("ip6tables-{flavour}-restore")),
            "the message names the refusing tool:\n{out}"
        );
        assert!(out.stderr.contains("rolled back"), "{out}");
        assert_eq!(
            (save(&ns, &s4), save(&ns, &s6)),
            before,
            "{flavour}: state changed by a refused apply"
        );
    }
}

/// Within one family the raw table commits, the filter table is refused: raw is rolled
/// back (local-address uses both).
#[test]
fn refused_second_table_rolls_back_the_first() {
    require_root();
    for flavour in ["legacy", "nft"] {
        let ns = Netns::new();
        let v4 = format!("iptables-{flavour}");
        ns.must(&[&v4, "-t", "filter", "-N", "NFTKIT-LOCAL-ADDRESS-OLD"]);
        stale_rule_of_ours(
            &ns,
            &v4,
            "filter",
            "NFTKIT-LOCAL-ADDRESS-OLD",
            "local-address",
        );
        ns.must(&[&v4, "-t", "filter", "-N", "FOREIGN"]);
        ns.must(&[
            &v4,
            "-t",
            "filter",
            "-A",
            "FOREIGN",
            "-j",
            "NFTKIT-LOCAL-ADDRESS-OLD",
        ]);
        ns.must(&[
            &v4,
            "-t",
            "raw",
            "-A",
            "OUTPUT",
            "-d",
            "192.0.2.1",
            "-j",
            "ACCEPT",
        ]);
        let s4 = format!("{v4}-save");
        let before = save(&ns, &s4);
        let out = ns.nftkit(
            &[],
            &[
                "--backend",
                &format!("iptables-{flavour}"),
                "local-address",
                "--ip-address",
                "10.96.0.2",
                "--setup-iptables",
                "--daemon=false",
            ],
        );
        assert_eq!(out.code, Some(1), "{out}");
        assert_eq!(
            save(&ns, &s4),
            before,
            "{flavour}: raw table not rolled back"
        );
    }
}
