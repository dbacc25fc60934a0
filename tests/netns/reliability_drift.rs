//! Issue 11, part 3: drift and foreign state. Every hand edit of an owned table (deleted,
//! chain flushed/renamed, policy drop, table made dormant, set flushed or grown, rule
//! added) makes `verify` exit 3 with a diff; a `--persist` daemon repairs each within one
//! interval; a table with our name but without the ownership comment is refused by apply
//! and delete, and left as it was.
//!
//! Root only: everything happens in throw-away network namespaces.

use std::time::Duration;

use crate::common::*;

fn table_json(ns: &Netns, table: &str) -> Option<String> {
    let out = ns.nft(&["-j", "list", "table", "inet", table]);
    out.success().then(|| {
        serde_json::to_string_pretty(&strip_json_key(&out.stdout, "handle"))
            .expect("serialise JSON")
    })
}

/// Hand edits, as nft commands, of the table `t` (inet).
fn edits(t: &str, regular_chain: &str, base_chain: &str, set: &str) -> Vec<String> {
    vec![
        format!("delete table inet {t}"),
        format!("flush chain inet {t} {base_chain}"),
        format!("flush chain inet {t} {regular_chain}"),
        format!("rename chain inet {t} {regular_chain} renamed"),
        format!("add rule inet {t} {base_chain} meta l4proto udp accept"),
        format!("insert rule inet {t} {base_chain} counter"),
        format!("flush set inet {t} {set}"),
        format!("add element inet {t} {set} {{ 198.18.77.1 }}"),
        format!("add chain inet {t} {base_chain} {{ policy drop; }}"),
        format!("add table inet {t} {{ flags dormant; }}"),
        format!("add chain inet {t} extra"),
        format!("add set inet {t} extra {{ type ipv4_addr; }}"),
    ]
}

#[test]
fn verify_reports_every_hand_edit_with_exit_3_and_a_diff() {
    require_root();
    let ns = Netns::new();
    let dir = std::env::temp_dir().join(format!("{}-masq", unique_name()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(
        dir.join("ip-masq-agent"),
        "nonMasqueradeCIDRs: [10.0.0.0/8]\n",
    )
    .expect("write");
    let d = dir.to_str().expect("utf-8").to_string();
    let apply = ["masquerade", "--once", "--config-dir", &d];
    let verify = ["verify", "masquerade", "--config-dir", &d];
    let mut checked = 0;
    for edit in edits(
        "nftkit-masquerade",
        "IP-MASQ-AGENT",
        "nat-postrouting",
        "nomasq-v4",
    ) {
        ns.nftkit_ok(&[], &apply);
        ns.nftkit_ok(&[], &verify);
        let edited = ns.cmd(&["sh", "-c", &format!("nft '{edit}'")]).run();
        assert!(edited.success(), "{edited}");
        let out = ns.nftkit(&[], &verify);
        assert_eq!(out.code, Some(3), "`{edit}` not reported as drift:\n{out}");
        assert!(
            out.stdout.contains("differs from the desired state")
                && out.stdout.lines().count() >= 2,
            "no diff printed for `{edit}`:\n{out}"
        );
        checked += 1;
    }
    // Applying again repairs.
    ns.nftkit_ok(&[], &apply);
    ns.nftkit_ok(&[], &verify);
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("{checked} hand edits: verify exit 3 with a diff for each");
}

#[test]
fn a_persist_daemon_repairs_every_hand_edit_within_one_interval() {
    require_root();
    let ns = Netns::new();
    let t = "nftkit-dnat";
    let args = [
        "dnat",
        "--map",
        "192.0.2.1:80=192.0.2.2:8080,192.0.2.3:80=192.0.2.4:8080",
        "--accept-uids",
        "0",
        "--sync-interval",
        "1s",
        "--persist",
    ];
    let mut once: Vec<&str> = args.to_vec();
    once.push("--daemon=false");
    ns.nftkit_ok(&[], &once);
    let reference = table_json(&ns, t).expect("table");
    let listing = ns.table("inet", t).expect("table");
    // A set and a non-base chain of this table, whatever their names.
    let set = listing
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("set ")
                .map(|s| s.trim_end_matches(" {").to_string())
        })
        .expect("dnat has a set (accept-uids)");
    let base = "nat-output";
    let mut d = NftkitDaemon::start(&ns, &args);
    d.wait_log("reconciling", Duration::from_secs(10));
    let mut repaired = 0;
    for edit in edits(t, base, base, &set)
        .into_iter()
        .filter(|e| !e.contains("rename") && !e.contains("198.18.77.1"))
    {
        let edited = ns.cmd(&["sh", "-c", &format!("nft '{edit}'")]).run();
        assert!(edited.success(), "{edited}");
        assert_ne!(
            table_json(&ns, t).as_ref(),
            Some(&reference),
            "`{edit}` changed nothing"
        );
        assert!(
            poll_until(Duration::from_millis(2500), || table_json(&ns, t).as_ref()
                == Some(&reference)),
            "`{edit}` not repaired within one interval (1 s):\n{}\n--- table ---\n{:?}",
            d.log(),
            ns.table("inet", t)
        );
        repaired += 1;
    }
    assert!(d.running(), "{}", d.log());
    assert!(d.count("re-applying") >= repaired, "{}", d.log());
    eprintln!("{repaired} hand edits repaired by the daemon within one interval each");
}

#[test]
fn a_table_with_our_name_but_not_ours_is_refused_and_left_alone() {
    require_root();
    let ns = Netns::new();
    ns.nft_load(
        "table inet nftkit-redirect {\n  comment \"someone else's\"\n  chain c { type filter hook output priority 0; }\n}\n\
         table inet nftkit-dnat {\n  chain c { type filter hook output priority 0; }\n}\n",
    );
    let before = ns.ruleset();
    for args in [
        vec!["redirect"],
        vec![
            "dnat",
            "--map",
            "192.0.2.1:80=192.0.2.2:8080",
            "--daemon=false",
        ],
        vec!["delete", "redirect"],
        vec!["delete", "dnat"],
    ] {
        let out = ns.nftkit(&[], &args);
        assert_eq!(out.code, Some(1), "{out}");
        let last = out.stderr.trim_end().lines().last().unwrap_or("");
        assert!(
            last.starts_with("nftkit: ") && last.contains("not managed by nftkit"),
            "unclear refusal:\n{out}"
        );
    }
    // delete --all and status do not see them as ours.
    ns.nftkit_ok(&[], &["delete", "--all"]);
    let status = ns.nftkit_ok(&[], &["status"]);
    assert!(status.stdout.contains("no nftkit tables"), "{status}");
    assert_eq!(ns.ruleset(), before, "a foreign table was changed");
}
