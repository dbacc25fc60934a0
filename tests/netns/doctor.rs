//! `nftkit doctor` in throw-away network namespaces: a clean namespace is exit 0; foreign
//! base chains that drop at nftkit's hooks, before and after nftkit's priority, are exit 1
//! with findings naming table, chain, hook and priority; iptables-legacy rules are a
//! finding; `--json` has the documented shape. nftkit's own tables (netpol drops) never
//! count as foreign.
//!
//! Needs root; run through `scripts/test.sh`.

use crate::common::*;
use serde_json::Value;

fn doctor_json(ns: &Netns) -> (Option<i32>, Value) {
    let out = ns.nftkit(&[], &["doctor", "--json"]);
    let v: Value = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("doctor --json is not JSON ({e}):\n{out}"));
    (out.code, v)
}

fn interfering(v: &Value) -> Vec<&Value> {
    v["findings"]
        .as_array()
        .expect("findings array")
        .iter()
        .filter(|f| f["severity"] == "interferes")
        .collect()
}

#[test]
fn clean_namespace_is_exit_0() {
    let ns = Netns::new();
    let out = ns.nftkit(&[], &["doctor"]);
    assert_eq!(out.code, Some(0), "{out}");
    assert!(out.stdout.contains("nftkit tables here: none"), "{out}");
    let (code, v) = doctor_json(&ns);
    assert_eq!(code, Some(0));
    assert_eq!(v["interferes"], false, "{v}");
    assert!(interfering(&v).is_empty(), "{v}");
    // The documented shape.
    for key in ["interferes", "jobs", "findings", "facts"] {
        assert!(v.get(key).is_some(), "{key} missing: {v}");
    }
    for key in [
        "base_chains",
        "iptables_legacy",
        "ip_forward",
        "rp_filter",
        "conntrack",
    ] {
        assert!(v["facts"].get(key).is_some(), "facts.{key} missing: {v}");
    }
    for f in v["findings"].as_array().unwrap() {
        for key in [
            "severity",
            "kind",
            "subject",
            "consequence",
            "action",
            "jobs",
        ] {
            assert!(f.get(key).is_some(), "finding lacks {key}: {f}");
        }
    }
    // nftkit's own tables are not foreign, even netpol's with its drops.
    let ns_list = std::env::temp_dir().join(format!("nftkit-doctor-{}.yaml", ns.name));
    std::fs::write(
        &ns_list,
        "apiVersion: v1\nkind: List\nitems:\n- apiVersion: networking.k8s.io/v1\n  kind: NetworkPolicy\n  metadata: {name: deny, namespace: a}\n  spec: {podSelector: {}, policyTypes: [Ingress]}\n- apiVersion: v1\n  kind: Namespace\n  metadata: {name: a}\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: p, namespace: a}\n  spec: {nodeName: n1, containers: [{name: c, image: x}]}\n  status: {podIP: 198.51.100.20}\n",
    )
    .unwrap();
    ns.nftkit_ok(
        &[],
        &[
            "netpol",
            "--node-name=n1",
            "--from-file",
            ns_list.to_str().unwrap(),
        ],
    );
    let _ = std::fs::remove_file(&ns_list);
    let (code, v) = doctor_json(&ns);
    assert_eq!(v["jobs"], serde_json::json!(["netpol"]), "{v}");
    assert!(
        v["facts"]["base_chains"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["table"] == "nftkit-netpol" && c["nftkit"] == true),
        "{v}"
    );
    assert!(
        !interfering(&v)
            .iter()
            .any(|f| f["subject"].as_str().unwrap().contains("nftkit-netpol")),
        "{v}"
    );
    // Forwarding is off in a new namespace: with netpol installed, that interferes.
    assert_eq!(code, Some(1), "{v}");
    assert!(
        interfering(&v).iter().all(|f| f["kind"] == "ip-forward"),
        "{v}"
    );
    ns.must(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    let (code, v) = doctor_json(&ns);
    assert_eq!(code, Some(0), "{v}");
}

#[test]
fn foreign_drop_chains_before_and_after_ours_are_exit_1_naming_them() {
    let ns = Netns::new();
    ns.nft_load(
        "table inet early {\n\
         \tchain early_input {\n\
         \t\ttype filter hook input priority -10; policy drop;\n\
         \t}\n\
         }\n\
         table ip late {\n\
         \tchain late_forward {\n\
         \t\ttype filter hook forward priority 10; policy accept;\n\
         \t\tip saddr 198.51.100.9 drop\n\
         \t}\n\
         }\n\
         table ip quiet {\n\
         \tchain quiet_output {\n\
         \t\ttype filter hook output priority 0; policy accept;\n\
         \t}\n\
         }\n",
    );
    let out = ns.nftkit(&[], &["doctor"]);
    assert_eq!(out.code, Some(1), "{out}");
    for needle in [
        "table inet early chain early_input: hook input, type filter, priority -10",
        "before 0 (local-address filter)",
        "policy drop",
        "table ip late chain late_forward: hook forward, type filter, priority 10",
        "after 0 (dnat filter, netpol filter)",
        "1 drop/reject rules",
    ] {
        assert!(out.stdout.contains(needle), "{needle:?} not in:\n{out}");
    }
    assert_eq!(out.stderr.trim().lines().count(), 1, "{out}");
    let (code, v) = doctor_json(&ns);
    assert_eq!(code, Some(1));
    assert_eq!(v["interferes"], true);
    let drops: Vec<&str> = interfering(&v)
        .iter()
        .filter(|f| f["kind"] == "foreign-drop-chain")
        .map(|f| f["subject"].as_str().unwrap())
        .collect();
    assert_eq!(drops.len(), 2, "{v}");
    assert!(drops[0].contains("early_input") && drops[1].contains("late_forward"));
    // A base chain without drops is a note, not an interference.
    let notes: Vec<&Value> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "foreign-base-chain")
        .collect();
    assert_eq!(notes.len(), 1, "{v}");
    assert_eq!(notes[0]["severity"], "note");
    assert!(
        notes[0]["subject"]
            .as_str()
            .unwrap()
            .contains("quiet_output")
    );
    let chains = v["facts"]["base_chains"].as_array().unwrap();
    let early = chains.iter().find(|c| c["chain"] == "early_input").unwrap();
    assert_eq!(early["hook"], "input");
    assert_eq!(early["priority"], -10);
    assert_eq!(early["policy"], "drop");
    // Removing them makes the namespace clean again.
    ns.nft(&["delete", "table", "inet", "early"]);
    ns.nft(&["delete", "table", "ip", "late"]);
    assert_eq!(ns.nftkit(&[], &["doctor"]).code, Some(0));
}

#[test]
fn iptables_legacy_rules_are_a_finding() {
    let ns = Netns::new();
    if run(&["sh", "-c", "command -v iptables-legacy"]).code != Some(0) {
        panic!("iptables-legacy is not installed (scripts/test.sh installs it)");
    }
    ns.must(&[
        "iptables-legacy",
        "-A",
        "INPUT",
        "-s",
        "198.51.100.7",
        "-j",
        "DROP",
    ]);
    let (code, v) = doctor_json(&ns);
    assert_eq!(code, Some(1), "{v}");
    let legacy = interfering(&v)
        .into_iter()
        .find(|f| f["kind"] == "iptables-legacy")
        .unwrap_or_else(|| panic!("no iptables-legacy finding: {v}"));
    assert!(
        legacy["subject"].as_str().unwrap().contains("1 rules"),
        "{legacy}"
    );
    assert_eq!(v["facts"]["iptables_legacy"]["rules"], 1, "{v}");
    ns.must(&["iptables-legacy", "-P", "FORWARD", "DROP"]);
    ns.must(&["iptables-legacy", "-F", "INPUT"]);
    let out = ns.nftkit(&[], &["doctor"]);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.stdout.contains("DROP policies on ip filter FORWARD"),
        "{out}"
    );
}
