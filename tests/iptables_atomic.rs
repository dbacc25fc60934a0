//! A refused apply leaves the iptables backends' state as it was (exit 1), although
//! iptables-restore commits table by table and IPv4 and IPv6 are two runs: nftkit rolls
//! back what was already committed. The refusal is provoked with a stale chain of ours
//! that a foreign chain still jumps to, so deleting it fails (`-X`: too many links).
//! Needs root; run through scripts/test.sh.

mod common;

use common::*;

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

/// IPv4 commits, IPv6 is refused: IPv4 is rolled back.
#[test]
fn refused_ipv6_rolls_back_ipv4() {
    require_root();
    for flavour in ["legacy", "nft"] {
        let ns = Netns::new();
        let v4 = format!("iptables-{flavour}");
        let v6 = format!("ip6tables-{flavour}");
        // A leftover chain of ours in both families; in IPv6 a foreign chain uses it.
        ns.must(&[&v4, "-t", "nat", "-N", "NFTKIT-REDIRECT-OLD"]);
        ns.must(&[&v6, "-t", "nat", "-N", "NFTKIT-REDIRECT-OLD"]);
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
