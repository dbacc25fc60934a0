//! `--backend auto` and `nftkit detect` in real namespaces, and the missing-binaries
//! error of the iptables backends. (The decision itself is unit-tested on recorded
//! evidence in nft-compat/src/detect.rs.) Needs root; run through scripts/test.sh.

use crate::common::*;

fn detect_json(ns: &Netns) -> serde_json::Value {
    let out = ns.nftkit_ok(&[], &["detect", "--json"]);
    serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("detect --json is not JSON ({e}):\n{out}"))
}

/// A clean namespace: nf_tables answers, no iptables rules of either flavour → nftables;
/// auto then programs the inet table, not iptables.
#[test]
fn clean_namespace_picks_nftables() {
    require_root();
    let ns = Netns::new();
    let j = detect_json(&ns);
    assert_eq!(j["backend"], "nftables", "{j}");
    assert_eq!(j["evidence"]["nf_tables"]["available"], true, "{j}");
    assert_eq!(j["evidence"]["iptables_legacy"]["rules"], 0, "{j}");
    let text = ns.nftkit_ok(&[], &["detect"]);
    assert!(text.stdout.starts_with("backend: nftables\n"), "{text}");
    assert!(text.stdout.contains("evidence:"), "{text}");

    let out = ns.nftkit_ok(&[], &["redirect"]);
    assert!(
        out.stderr.contains("backend selected (auto)") && out.stderr.contains("nftables"),
        "the choice is logged:\n{out}"
    );
    assert!(
        ns.table("inet", "nftkit-redirect").is_some(),
        "{}",
        ns.ruleset()
    );
    let legacy = ns.must(&["iptables-legacy-save"]).stdout;
    assert!(!legacy.contains("NFTKIT"), "{legacy}");
}

/// Kubernetes on iptables-legacy (kubelet's hint chain in the legacy mangle table) → auto
/// picks iptables-legacy and programs legacy chains, not an nft table.
#[test]
fn legacy_kube_hint_picks_iptables_legacy() {
    require_root();
    for marker in ["KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY"] {
        let ns = Netns::new();
        ns.must(&["iptables-legacy", "-t", "mangle", "-N", marker]);
        let j = detect_json(&ns);
        assert_eq!(j["backend"], "iptables-legacy", "{j}");
        assert_eq!(
            j["evidence"]["iptables_legacy"]["kube_chains"][0], marker,
            "{j}"
        );
        assert!(j["reason"].as_str().unwrap().contains(marker), "{j}");

        let out = ns.nftkit_ok(&[], &["redirect"]);
        assert!(out.stderr.contains("iptables-legacy"), "{out}");
        let legacy = ns.must(&["iptables-legacy-save", "-t", "nat"]).stdout;
        assert!(legacy.contains("-j NFTKIT-REDIRECT-OUTPUT"), "{legacy}");
        assert!(
            ns.table("inet", "nftkit-redirect").is_none(),
            "{}",
            ns.ruleset()
        );
        // verify and delete through auto find the same backend.
        let v = ns.nftkit(&[], &["verify", "redirect"]);
        assert_eq!(v.code, Some(0), "{v}");
        ns.nftkit_ok(&[], &["delete", "redirect"]);
        let legacy = ns.must(&["iptables-legacy-save"]).stdout;
        assert!(!legacy.contains("NFTKIT"), "{legacy}");
        assert!(
            legacy.contains(marker),
            "the hint chain is not ours:\n{legacy}"
        );
    }
}

/// The hint on the nft side wins (kubelet moved to iptables-nft); many legacy rules and
/// no hint → legacy; a few legacy rules next to many nft rules → nftables.
#[test]
fn rule_counts_and_nft_hint() {
    require_root();
    let ns = Netns::new();
    ns.must(&[
        "iptables-legacy",
        "-t",
        "mangle",
        "-N",
        "KUBE-IPTABLES-HINT",
    ]);
    ns.must(&["iptables-nft", "-t", "mangle", "-N", "KUBE-IPTABLES-HINT"]);
    assert_eq!(detect_json(&ns)["backend"], "nftables");

    let ns = Netns::new();
    for i in 0..3 {
        let dst = format!("192.0.2.{i}");
        ns.must(&["iptables-legacy", "-A", "INPUT", "-d", &dst, "-j", "ACCEPT"]);
    }
    let j = detect_json(&ns);
    assert_eq!(j["backend"], "iptables-legacy", "{j}");
    assert_eq!(j["evidence"]["iptables_legacy"]["rules"], 3, "{j}");
    ns.must(&[
        "iptables-nft",
        "-A",
        "INPUT",
        "-d",
        "192.0.2.9",
        "-j",
        "ACCEPT",
    ]);
    let j = detect_json(&ns);
    assert_eq!(
        j["backend"], "nftables",
        "3 legacy vs 1 nft rule is not clearly more: {j}"
    );
}

/// A requested iptables backend whose binaries are missing: exit 1, the message names the
/// Debian package. A private mount namespace hides /usr/sbin (nothing else changes).
#[test]
fn missing_binaries_name_the_package() {
    require_root();
    let ns = Netns::new();
    for backend in ["iptables-legacy", "iptables-nft"] {
        let script = format!(
            "mount -t tmpfs none /usr/sbin && PATH=/usr/bin:/bin exec {NFTKIT} --backend {backend} redirect"
        );
        let out = ns
            .cmd(&[
                "unshare",
                "-m",
                "--propagation",
                "private",
                "sh",
                "-c",
                &script,
            ])
            .env_remove("NFTKIT_BACKEND")
            .run();
        assert_eq!(out.code, Some(1), "{out}");
        let err = out.stderr.trim();
        assert!(
            err.contains(backend) && err.contains("Debian package \"iptables\""),
            "{out}"
        );
        assert!(!err.contains("panicked"), "{out}");
    }
    // Nothing was programmed.
    assert!(!ns.must(&["iptables-legacy-save"]).stdout.contains("NFTKIT"));
    assert!(!ns.ruleset().contains("NFTKIT"));
}
