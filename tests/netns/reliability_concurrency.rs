//! Issue 11, part 2: concurrent nftkit processes.
//!
//! Two processes apply different configs to the same table 100 times each, in parallel:
//! every run exits 0 (no spurious "busy" or read-back failures) and the end state is
//! exactly one of the two tables. Daemons of different commands in one namespace never
//! disturb each other's tables (no drift repairs, no re-applies after the first).
//!
//! Root only: everything happens in throw-away network namespaces.

use std::thread;
use std::time::Duration;

use crate::common::*;

fn table_json(ns: &Netns, table: &str) -> Option<String> {
    let out = ns.nft(&["-j", "list", "table", "inet", table]);
    out.success().then(|| {
        serde_json::to_string_pretty(&strip_json_key(&out.stdout, "handle"))
            .expect("serialise JSON")
    })
}

fn blocks(count: usize, third: u32) -> String {
    (0..count)
        .map(|i| format!("198.18.{third}.{}/32", 2 * i))
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn two_processes_race_100_applies_each_on_one_table() {
    require_root();
    let ns = Netns::new();
    let table = "nftkit-redirect";
    let cfgs: [Vec<String>; 2] = [
        vec![
            "redirect".into(),
            "--port-mapping".into(),
            "10080:80".into(),
            "--ipv4-accept-blocks".into(),
            blocks(100, 1),
        ],
        vec![
            "redirect".into(),
            "--port-mapping".into(),
            "10443:443,15001".into(),
            "--ipv4-accept-blocks".into(),
            blocks(120, 2),
        ],
    ];
    let mut reference = Vec::new();
    for c in &cfgs {
        ns.nftkit_ok(&[], c);
        reference.push(table_json(&ns, table).expect("table"));
    }
    let failures: Vec<String> = thread::scope(|s| {
        let handles: Vec<_> = cfgs
            .iter()
            .map(|cfg| {
                let ns = &ns;
                s.spawn(move || {
                    let mut bad = Vec::new();
                    let mut retries = 0;
                    for i in 0..100 {
                        let out = ns.nftkit(&[], cfg);
                        retries += out.stderr.matches("applying again").count();
                        if !out.success() {
                            bad.push(format!("run {i}:\n{out}"));
                        }
                    }
                    eprintln!("racer: 100 applies, {retries} re-applies after a lost race");
                    bad
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("racer thread"))
            .collect()
    });
    assert!(
        failures.is_empty(),
        "{} of 200 concurrent applies failed; first:\n{}",
        failures.len(),
        failures[0]
    );
    let end = table_json(&ns, table);
    assert!(
        reference.iter().any(|r| Some(r) == end.as_ref()),
        "end state is neither config's table:\n{end:?}"
    );
    // Exactly one table of that name, nothing left over.
    let tables = ns.nft(&["list", "tables"]).stdout;
    assert_eq!(tables.trim(), format!("table inet {table}"), "{tables}");
    eprintln!("200 concurrent applies (2 x 100) on one table: all exit 0");
}

#[test]
fn daemons_of_different_commands_leave_each_other_alone() {
    require_root();
    let ns = Netns::new();
    let dir = std::env::temp_dir().join(format!("{}-masq", unique_name()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(
        dir.join("ip-masq-agent"),
        "nonMasqueradeCIDRs: [10.0.0.0/8]\n",
    )
    .expect("write config");
    let mut daemons = vec![
        NftkitDaemon::start(
            &ns,
            &[
                "dnat",
                "--map",
                "169.254.169.254:80=127.0.0.1:988",
                "--sync-interval",
                "1s",
            ],
        ),
        NftkitDaemon::start(
            &ns,
            &[
                "local-address",
                "--ip-address",
                "192.0.2.10",
                "--setup-iptables",
                "--sync-interval",
                "1s",
            ],
        ),
        NftkitDaemon::start(
            &ns,
            &[
                "masquerade",
                "--config-dir",
                dir.to_str().expect("utf-8 path"),
                "--resync-interval",
                "1",
            ],
        ),
    ];
    for d in &daemons {
        d.wait_log("reconciling", Duration::from_secs(15));
    }
    // One-shot commands and verify/status running alongside, several intervals long.
    for i in 0..20 {
        ns.nftkit_ok(
            &[],
            &["redirect", "--port-mapping", &format!("{}:80", 10000 + i)],
        );
        ns.nftkit_ok(&[], &["status"]);
        thread::sleep(Duration::from_millis(200));
    }
    let tables = ns.nft(&["list", "tables"]).stdout;
    for t in [
        "nftkit-dnat",
        "nftkit-local-address",
        "nftkit-masquerade",
        "nftkit-redirect",
    ] {
        assert!(tables.contains(t), "table {t} missing:\n{tables}");
    }
    for d in daemons.iter_mut() {
        assert!(d.running(), "daemon exited:\n{}", d.log());
        let log = d.log();
        assert_eq!(
            d.count("re-applying"),
            0,
            "a daemon saw drift caused by another command:\n{log}"
        );
        assert!(!log.contains("ERROR"), "daemon logged an error:\n{log}");
        assert!(log.contains("in sync"), "no resync observed:\n{log}");
    }
    drop(daemons);
    let _ = std::fs::remove_dir_all(&dir);
}
