//! Issue 11, part 5: without CAP_NET_ADMIN every kernel-touching command exits 1 with a
//! message containing "needs CAP_NET_ADMIN" (root with every capability dropped, and the
//! unprivileged uid 65534), for every backend; `--dry-run` still works unprivileged and
//! prints the ruleset. Nothing is changed in the namespace.
//!
//! Root only (to create the namespace and drop privileges inside it).

use crate::common::*;

const NETPOL_FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/golden/netpol/docs-example.yaml"
);

/// The kernel-touching command lines (after the global options).
fn kernel_commands() -> Vec<Vec<&'static str>> {
    vec![
        vec!["redirect"],
        vec![
            "dnat",
            "--map",
            "192.0.2.1:80=192.0.2.2:8080",
            "--daemon=false",
        ],
        vec!["dnat", "--map", "192.0.2.1:80=192.0.2.2:8080"],
        vec![
            "local-address",
            "--ip-address",
            "192.0.2.10",
            "--daemon=false",
        ],
        vec![
            "local-address",
            "--ip-address",
            "192.0.2.10",
            "--setup-iptables",
            "--daemon=false",
        ],
        vec!["masquerade", "--once", "--config-dir", "/nonexistent"],
        vec!["masquerade", "--config-dir", "/nonexistent"],
        vec![
            "netpol",
            "--from-file",
            NETPOL_FILE,
            "--node-name",
            "node-1",
        ],
        vec!["status"],
        vec!["verify", "redirect"],
        vec!["delete", "redirect"],
        vec!["delete", "--all"],
        vec!["detect"],
    ]
}

/// `setpriv` prefixes: root without any capability, and nobody.
const WITHOUT_CAPS: &[&[&str]] = &[
    &["setpriv", "--inh-caps=-all", "--bounding-set=-all"],
    &[
        "setpriv",
        "--reuid",
        "65534",
        "--regid",
        "65534",
        "--clear-groups",
    ],
];

fn run_as(ns: &Netns, prefix: &[&str], args: &[&str]) -> Out {
    let mut argv: Vec<&str> = prefix.to_vec();
    argv.push(NFTKIT);
    argv.extend_from_slice(args);
    let mut c = ns.cmd(&argv);
    for k in NFTKIT_ENV {
        c = c.env_remove(k);
    }
    c.run()
}

#[test]
fn without_cap_net_admin_every_kernel_command_exits_1_naming_the_capability() {
    require_root();
    let ns = Netns::new();
    let before = ns.ruleset();
    let addrs_before = ns.must(&["ip", "-o", "addr"]).stdout;
    let mut checked = 0;
    for prefix in WITHOUT_CAPS {
        for backend in ["auto", "nftables", "iptables-nft", "iptables-legacy"] {
            for cmd in kernel_commands() {
                let mut args = vec!["-q", "--backend", backend];
                args.extend(cmd);
                let out = run_as(&ns, prefix, &args);
                assert_eq!(out.code, Some(1), "expected exit 1:\n{out}");
                assert!(
                    out.stderr.contains("needs CAP_NET_ADMIN"),
                    "message does not say what is missing:\n{out}"
                );
                let last = out.stderr.trim_end().lines().last().unwrap_or("");
                assert!(
                    last.starts_with("nftkit: "),
                    "not one nftkit error line:\n{out}"
                );
                assert!(!out.stderr.contains("panicked"), "{out}");
                checked += 1;
            }
        }
    }
    assert_eq!(
        ns.ruleset(),
        before,
        "a refused command changed the ruleset"
    );
    assert_eq!(ns.must(&["ip", "-o", "addr"]).stdout, addrs_before);
    eprintln!("{checked} unprivileged runs: all exit 1 with \"needs CAP_NET_ADMIN\"");
}

#[test]
fn dry_run_works_without_privileges() {
    require_root();
    let ns = Netns::new();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["redirect"], "table inet nftkit-redirect"),
        (
            vec!["dnat", "--map", "192.0.2.1:80=192.0.2.2:8080"],
            "table inet nftkit-dnat",
        ),
        (
            vec![
                "local-address",
                "--ip-address",
                "192.0.2.10",
                "--setup-iptables",
            ],
            "table inet nftkit-local-address",
        ),
        (
            vec!["masquerade", "--config-dir", "/nonexistent"],
            "table inet nftkit-masquerade",
        ),
        (
            vec![
                "netpol",
                "--from-file",
                NETPOL_FILE,
                "--node-name",
                "node-1",
            ],
            "table inet nftkit-netpol",
        ),
        (
            vec!["delete", "redirect"],
            "delete table inet nftkit-redirect",
        ),
        (vec!["--backend", "iptables-nft", "redirect"], "COMMIT"),
        (
            vec![
                "--backend",
                "iptables-legacy",
                "dnat",
                "--map",
                "192.0.2.1:80=192.0.2.2:8080",
            ],
            "COMMIT",
        ),
    ];
    for prefix in WITHOUT_CAPS {
        for (cmd, want) in &cases {
            let mut args = vec!["-q", "--dry-run"];
            args.extend(cmd.iter().copied());
            let out = run_as(&ns, prefix, &args);
            assert!(out.success(), "dry-run failed without privileges:\n{out}");
            assert!(
                out.stdout.contains(want),
                "dry-run output lacks {want:?}:\n{out}"
            );
        }
    }
    assert_eq!(ns.ruleset().trim(), "", "dry-run touched the kernel");
}
