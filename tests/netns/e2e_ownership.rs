//! Ownership on every backend (CONTRACT.md "Ownership and atomicity"), in real network
//! namespaces with the real binary and real iptables-legacy / iptables-nft:
//!
//! - a chain named like ours but without nftkit's comment (kube-proxy's `KUBE-*` under
//!   `--table kube`) is refused by `delete` and by an apply, exit 1 naming it, every
//!   table byte-identical; `--force` proceeds;
//! - `--backend auto` does not count nftkit's own iptables-legacy rules;
//! - one job lives on one backend: an apply removes the job's copy from the other
//!   backends; `status` lists every backend's entries, `delete` works on all of them.
//!
//! Needs root; run through scripts/test.sh.

use crate::common::*;

const FLAVOURS: [&str; 2] = ["iptables-legacy", "iptables-nft"];

/// Every iptables save of both flavours and both families (without the `#` lines, which
/// carry a time) and the nft ruleset.
fn everything(ns: &Netns) -> String {
    let mut s = String::new();
    for f in FLAVOURS {
        let suffix = f.trim_start_matches("iptables-");
        for fam in ["iptables", "ip6tables"] {
            let tool = format!("{fam}-{suffix}-save");
            let out = ns.must(&[tool.as_str()]);
            s.push_str(&format!("--- {tool} ---\n"));
            for l in out.stdout.lines().filter(|l| !l.starts_with('#')) {
                s.push_str(l);
                s.push('\n');
            }
        }
    }
    s.push_str("--- nft list ruleset ---\n");
    s.push_str(&ns.ruleset());
    s
}

/// kube-proxy's nat chains, as `iptables-save` shows them on a node: `KUBE-SERVICES`
/// entered from PREROUTING and OUTPUT, `KUBE-POSTROUTING` from POSTROUTING, none of it
/// with nftkit's comment.
fn kube_proxy_chains(ns: &Netns, flavour: &str) {
    let t = flavour;
    for args in [
        &["-t", "nat", "-N", "KUBE-SERVICES"][..],
        &[
            "-t",
            "nat",
            "-A",
            "KUBE-SERVICES",
            "-d",
            "192.0.2.1/32",
            "-p",
            "tcp",
            "--dport",
            "443",
            "-j",
            "RETURN",
        ],
        &[
            "-t",
            "nat",
            "-A",
            "PREROUTING",
            "-m",
            "comment",
            "--comment",
            "kubernetes service portals",
            "-j",
            "KUBE-SERVICES",
        ],
        &[
            "-t",
            "nat",
            "-A",
            "OUTPUT",
            "-m",
            "comment",
            "--comment",
            "kubernetes service portals",
            "-j",
            "KUBE-SERVICES",
        ],
        &["-t", "nat", "-N", "KUBE-POSTROUTING"],
        &[
            "-t",
            "nat",
            "-A",
            "KUBE-POSTROUTING",
            "-m",
            "mark",
            "!",
            "--mark",
            "0x4000/0x4000",
            "-j",
            "RETURN",
        ],
        &[
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-m",
            "comment",
            "--comment",
            "kubernetes postrouting rules",
            "-j",
            "KUBE-POSTROUTING",
        ],
    ] {
        let mut v = vec![t];
        v.extend_from_slice(args);
        ns.must(&v);
    }
}

fn assert_refused(out: &Out, chain: &str, backend: &str) {
    assert_eq!(out.code, Some(1), "expected a refusal:\n{out}");
    let err = out.stderr.trim();
    assert!(
        err.contains(chain)
            && err.contains("table nat")
            && err.contains(backend)
            && err.contains("--force"),
        "the refusal names the chain, its table, the backend and --force:\n{out}"
    );
    assert!(!err.contains("panicked"), "{out}");
}

/// `--table kube` on a node where kube-proxy runs: `delete masquerade` and
/// `masquerade --once` refuse kube-proxy's chains (exit 1 naming the chain and table),
/// leaving every table byte-identical; with `--force` the apply takes over only the
/// chain it writes, and a forced delete removes by name.
#[test]
fn chains_named_like_ours_without_the_comment_are_refused() {
    require_root();
    for flavour in FLAVOURS {
        let ns = Netns::new();
        kube_proxy_chains(&ns, flavour);
        let cfg = TempDir::new("masq-cfg");
        let state = TempDir::new("masq-state");
        let st = state.s();
        let env = [("NFTKIT_TABLE", "kube"), ("NFTKIT_STATE_DIR", st.as_str())];
        let before = everything(&ns);

        let out = ns.nftkit(
            &[],
            &[
                "--backend",
                flavour,
                "--table",
                "kube",
                "delete",
                "masquerade",
            ],
        );
        assert_refused(&out, "KUBE-SERVICES", flavour);
        assert_eq!(
            everything(&ns),
            before,
            "[{flavour}] delete changed the kernel"
        );

        let dir = cfg.s();
        let masq = [
            "--backend",
            flavour,
            "masquerade",
            "--once",
            "--config-dir",
            &dir,
        ];
        let out = ns.nftkit(&env, &masq);
        assert_refused(&out, "KUBE-POSTROUTING", flavour);
        assert!(
            !out.stderr.contains("KUBE-SERVICES"),
            "only what the apply would write clashes:\n{out}"
        );
        assert_eq!(
            everything(&ns),
            before,
            "[{flavour}] apply changed the kernel"
        );

        // --force: KUBE-POSTROUTING becomes ours; KUBE-SERVICES and its jumps stay.
        let mut forced = masq.to_vec();
        forced.push("--force");
        let out = ns.nftkit(&env, &forced);
        assert!(
            out.success(),
            "[{flavour}] --force:\n{out}\n{}",
            everything(&ns)
        );
        let save = everything(&ns);
        let c = "-m comment --comment \"managed by nftkit masquerade\"";
        assert!(
            save.contains(&format!("-A POSTROUTING {c} -j KUBE-POSTROUTING")),
            "{save}"
        );
        assert!(
            !save.contains("-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\""),
            "the taken-over chain's foreign jump is replaced:\n{save}"
        );
        for kept in [
            "-A KUBE-SERVICES -d 192.0.2.1/32 -p tcp -m tcp --dport 443 -j RETURN",
            "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
            "-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
        ] {
            assert!(save.contains(kept), "[{flavour}] lost {kept:?}:\n{save}");
        }
        let st = ns.nftkit_ok(&[], &["--backend", flavour, "status", "--json"]);
        let v: serde_json::Value = serde_json::from_str(st.stdout.trim()).expect("JSON");
        assert!(
            v["tables"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["table"] == "kube" && t["backend"] == flavour),
            "{v}"
        );

        // KUBE-SERVICES still clashes for delete; --force deletes by name.
        let snap = everything(&ns);
        let out = ns.nftkit(
            &[],
            &[
                "--backend",
                flavour,
                "--table",
                "kube",
                "delete",
                "masquerade",
            ],
        );
        assert_refused(&out, "KUBE-SERVICES", flavour);
        assert_eq!(everything(&ns), snap);
        ns.nftkit_ok(
            &[],
            &[
                "--backend",
                flavour,
                "--table",
                "kube",
                "--force",
                "delete",
                "masquerade",
            ],
        );
        let save = everything(&ns);
        assert!(!save.contains("KUBE-"), "[{flavour}] {save}");
    }
}

/// One `--backend iptables-legacy` run does not make `auto` pick legacy: nftkit's own
/// legacy rules are not evidence. `status` (on nftables) still shows them, and the next
/// `auto` apply moves the job to nftables.
#[test]
fn auto_does_not_count_nftkits_own_legacy_rules() {
    require_root();
    let ns = Netns::new();
    ns.nftkit_ok(&[], &["--backend", "iptables-legacy", "redirect"]);
    let legacy = ns.must(&["iptables-legacy-save", "-t", "nat"]).stdout;
    assert!(legacy.contains("-j NFTKIT-REDIRECT-OUTPUT"), "{legacy}");

    let out = ns.nftkit_ok(&[], &["detect", "--json"]);
    let j: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("JSON");
    assert_eq!(j["backend"], "nftables", "{j}");
    assert_eq!(j["evidence"]["iptables_legacy"]["rules"], 0, "{j}");
    assert!(
        j["evidence"]["iptables_legacy"]["nftkit_rules"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "{j}"
    );

    let st = ns.nftkit_ok(&[], &["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(st.stdout.trim()).expect("JSON");
    assert_eq!(v["backend"], "nftables", "{v}");
    let tables = v["tables"].as_array().unwrap();
    assert!(
        tables
            .iter()
            .any(|t| t["table"] == "nftkit-redirect" && t["backend"] == "iptables-legacy"),
        "status shows the legacy copy: {v}"
    );
    let text = ns.nftkit_ok(&[], &["status"]);
    assert!(
        text.stdout.contains("nftkit-redirect") && text.stdout.contains("backend=iptables-legacy"),
        "{text}"
    );

    let out = ns.nftkit_ok(&[], &["redirect"]);
    assert!(out.stderr.contains("backend selected (auto)"), "{out}");
    assert!(
        ns.table("inet", "nftkit-redirect").is_some(),
        "{}",
        ns.ruleset()
    );
    let legacy = ns.must(&["iptables-legacy-save"]).stdout;
    assert!(
        !legacy.contains("NFTKIT"),
        "the legacy copy stays:\n{legacy}"
    );
}

fn status_entries(ns: &Netns, backend: &str) -> Vec<(String, String)> {
    let st = ns.nftkit_ok(&[], &["--backend", backend, "status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(st.stdout.trim()).expect("JSON");
    assert_eq!(v["backend"], backend, "{v}");
    let mut out: Vec<(String, String)> = v["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["backend"]
                    .as_str()
                    .expect("each entry names its backend")
                    .to_string(),
                t["table"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

fn has_chains(ns: &Netns, save_tool: &str, prefix: &str) -> bool {
    ns.must(&[save_tool])
        .stdout
        .contains(&format!(":{prefix}-"))
}

/// A job moved from one backend to another leaves no copy behind (removed only after
/// the new apply succeeded); another job's table on another backend is left alone;
/// `status --json` lists every backend's entries, each naming its backend; `delete JOB`
/// and `delete --all` work on every backend.
#[test]
fn one_job_lives_on_one_backend() {
    require_root();
    let ns = Netns::new();
    let pair = |b: &str, t: &str| (b.to_string(), t.to_string());

    ns.nftkit_ok(&[], &["--backend", "iptables-legacy", "redirect"]);
    assert!(has_chains(&ns, "iptables-legacy-save", "NFTKIT-REDIRECT"));
    assert_eq!(
        status_entries(&ns, "nftables"),
        [pair("iptables-legacy", "nftkit-redirect")]
    );

    // A refused apply elsewhere keeps the old copy.
    ns.nft_load("table inet nftkit-redirect {\n}\n");
    let out = ns.nftkit(&[], &["--backend", "nftables", "redirect"]);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(has_chains(&ns, "iptables-legacy-save", "NFTKIT-REDIRECT"));
    ns.must(&["nft", "delete", "table", "inet", "nftkit-redirect"]);

    let out = ns.nftkit_ok(&[], &["--backend", "nftables", "redirect"]);
    assert!(
        out.stderr
            .contains("removed this job's copy from another backend"),
        "{out}"
    );
    assert!(ns.table("inet", "nftkit-redirect").is_some());
    assert!(
        !has_chains(&ns, "iptables-legacy-save", "NFTKIT-REDIRECT"),
        "{}",
        ns.must(&["iptables-legacy-save"]).stdout
    );
    assert_eq!(
        status_entries(&ns, "nftables"),
        [pair("nftables", "nftkit-redirect")]
    );

    ns.nftkit_ok(&[], &["--backend", "iptables-nft", "redirect"]);
    assert!(
        ns.table("inet", "nftkit-redirect").is_none(),
        "{}",
        ns.ruleset()
    );
    assert!(has_chains(&ns, "iptables-nft-save", "NFTKIT-REDIRECT"));

    // Another table of the same command on another backend is another job.
    ns.nftkit_ok(
        &[],
        &[
            "--backend",
            "iptables-legacy",
            "--table",
            "nftkit-other",
            "redirect",
        ],
    );
    assert!(has_chains(&ns, "iptables-nft-save", "NFTKIT-REDIRECT"));
    let want = [
        pair("iptables-legacy", "nftkit-other"),
        pair("iptables-nft", "nftkit-redirect"),
    ];
    for selected in ["nftables", "iptables-nft", "iptables-legacy"] {
        assert_eq!(status_entries(&ns, selected), want, "status on {selected}");
    }

    // delete JOB on every backend where it exists; the other job stays.
    ns.nftkit_ok(&[], &["--backend", "nftables", "delete", "redirect"]);
    assert!(!has_chains(&ns, "iptables-nft-save", "NFTKIT-REDIRECT"));
    assert!(has_chains(&ns, "iptables-legacy-save", "NFTKIT-OTHER"));
    ns.nftkit_ok(&[], &["--backend", "nftables", "redirect"]);
    ns.nftkit_ok(&[], &["--backend", "nftables", "delete", "--all"]);
    let all = everything(&ns);
    assert!(!all.contains("NFTKIT") && !all.contains("nftkit"), "{all}");
}

/// The daemons too: a `dnat` daemon on nftables removes the copy an earlier
/// `--backend iptables-legacy` run left, once its own first apply is in place (and the
/// nftables table survives the daemon: tables persist by default).
#[test]
fn a_daemon_moves_its_job_to_its_backend_after_its_first_apply() {
    require_root();
    let ns = Netns::new();
    let map = ["dnat", "--map", "169.254.169.254:80=198.51.100.5:8080"];
    let mut once = map.to_vec();
    once.push("--daemon=false");
    ns.nftkit_ok(
        &[],
        &[&["--backend", "iptables-legacy"][..], &once].concat(),
    );
    assert!(has_chains(&ns, "iptables-legacy-save", "NFTKIT-DNAT"));
    let mut args = vec!["--backend", "nftables"];
    args.extend(map);
    args.push("--sync-interval=1s");
    let mut d = NftkitDaemon::start(&ns, &args);
    d.wait_log("reconciling", std::time::Duration::from_secs(10));
    assert!(
        d.log()
            .contains("removed this job's copy from another backend"),
        "{}",
        d.log()
    );
    assert!(
        !has_chains(&ns, "iptables-legacy-save", "NFTKIT-DNAT"),
        "{}",
        ns.must(&["iptables-legacy-save"]).stdout
    );
    assert_eq!(d.stop_with(libc::SIGTERM), Some(0), "{}", d.log());
    assert!(ns.table("inet", "nftkit-dnat").is_some());
    assert_eq!(
        status_entries(&ns, "nftables"),
        [("nftables".to_string(), "nftkit-dnat".to_string())]
    );
}
