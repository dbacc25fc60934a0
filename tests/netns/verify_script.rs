//! scripts/verify-ruleset.sh (nft -j + jq only) against a ruleset nftkit really applied,
//! and against broken ones.

use crate::common;

use crate::common::Netns;

fn script() -> String {
    format!("{}/scripts/verify-ruleset.sh", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn passes_on_an_applied_ruleset_and_names_each_problem_otherwise() {
    let ns = Netns::new();
    let check = |extra: &[&str]| {
        let mut argv = vec!["bash".to_string(), script()];
        argv.extend(extra.iter().map(|s| s.to_string()));
        ns.run(&argv)
    };
    let out = check(&["redirect"]);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.stdout.contains("table inet nftkit-redirect is missing"),
        "{out}"
    );

    ns.nftkit_ok(&[], &["redirect"]);
    let out = check(&["redirect"]);
    assert!(out.success(), "{out}");
    let out = check(&["--set", "accept-uids", "--set", "nope", "redirect"]);
    assert_eq!(out.code, Some(1), "{out}");
    assert_eq!(
        out.stdout.trim(),
        "set nope is missing from table inet nftkit-redirect",
        "{out}"
    );

    // A table of ours whose base chain sits at the wrong priority.
    ns.nftkit_ok(&[], &["delete", "redirect"]);
    ns.nft_load("table inet nftkit-redirect {\n chain nat-output {\n type nat hook output priority 0; policy accept;\n }\n}\n");
    let out = check(&["redirect"]);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.stdout.contains(
            "chain nat-output is 'type/hook/priority nat output 0', expected 'nat output -100'"
        ),
        "{out}"
    );

    // A rule that refers to a set that is not there (only possible in a hand-made file).
    let json = r#"{"nftables":[{"table":{"family":"inet","name":"nftkit-redirect"}},
        {"chain":{"family":"inet","table":"nftkit-redirect","name":"nat-output","type":"nat","hook":"output","prio":-100}},
        {"rule":{"family":"inet","table":"nftkit-redirect","chain":"nat-output","expr":[{"match":{"op":"==","left":{"payload":{"protocol":"ip","field":"daddr"}},"right":"@accept-v4"}},{"return":null}]}}]}"#;
    let file = std::env::temp_dir().join(format!("verify-{}.json", std::process::id()));
    std::fs::write(&file, json).unwrap();
    let out = common::run(&[
        "bash",
        &script(),
        "--json",
        file.to_str().unwrap(),
        "redirect",
    ]);
    let _ = std::fs::remove_file(&file);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stdout.contains("set accept-v4 is missing"), "{out}");

    // The other commands' tables, as nftkit applies them.
    for (cmd, args) in [
        (
            "local-address",
            vec![
                "local-address",
                "--ip-address",
                "192.0.2.53",
                "--setup-iptables",
                "--daemon=false",
            ],
        ),
        (
            "dnat",
            vec![
                "dnat",
                "--map",
                "169.254.169.254:80=192.0.2.5:8080",
                "--daemon=false",
                "--persist",
            ],
        ),
    ] {
        let mut argv: Vec<&str> = args.clone();
        argv.insert(0, "-q");
        ns.nftkit_ok(&[], &argv);
        // The expected base chains come from `nftkit --dry-run` of the same command line.
        let out = check(&args);
        assert!(out.success(), "{cmd}: {out}");
    }

    // Derived, not hand-kept: dnat with --hooks output has no prerouting chain, so the
    // table applied with both hooks passes for both command lines, and a table with only
    // the output hook fails the default (both hooks) but passes `--hooks output`.
    let map = "169.254.169.254:80=192.0.2.5:8080";
    ns.nftkit_ok(
        &[],
        &[
            "-q",
            "dnat",
            "--map",
            map,
            "--hooks",
            "output",
            "--daemon=false",
        ],
    );
    let out = check(&["dnat", "--map", map, "--hooks", "output"]);
    assert!(out.success(), "{out}");
    let out = check(&["dnat", "--map", map]);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.stdout
            .contains("chain nat-prerouting is missing from table inet nftkit-dnat"),
        "{out}"
    );
    // Options nftkit refuses are bad usage, named.
    let out = check(&["local-address"]);
    assert_eq!(out.code, Some(2), "{out}");
    assert!(out.stderr.contains("--ip-address is required"), "{out}");

    let out = common::run(&["bash", &script(), "frobnicate"]);
    assert_eq!(out.code, Some(2), "{out}");
}
