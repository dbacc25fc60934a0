//! Golden tests of `--dry-run` output: each case's flags and environment render to the
//! text in tests/golden/redirect/<case>.nft, and `nft -c -f` (in a throwaway network
//! namespace) accepts that text. `UPDATE_GOLDEN=1 cargo test --test golden` rewrites them.

#[allow(dead_code)]
mod common;

use std::process::Command;

use common::golden::{Golden, assert_matches_golden, assert_nft_accepts};

struct Case {
    name: &'static str,
    args: &'static [&'static str],
    env: &'static [(&'static str, &'static str)],
}

const CASES: &[Case] = &[
    Case {
        name: "default",
        args: &[],
        env: &[],
    },
    Case {
        name: "dnat-both-families",
        args: &[],
        env: &[
            ("TO_IPV4_ADDR", "203.0.113.10"),
            ("TO_IPV6_ADDR", "2001:db8::10"),
        ],
    },
    Case {
        name: "dnat-ipv4-only",
        args: &[],
        env: &[("TO_IPV4_ADDR", "203.0.113.10")],
    },
    Case {
        name: "lone-port",
        args: &[],
        env: &[("PORT_MAPPING", "15001")],
    },
    Case {
        name: "uid-ranges-and-lists",
        args: &[],
        env: &[
            ("ACCEPT_UIDS", "1010, 0, 2000-2999,"),
            ("ACCEPT_GIDS", "1337,3000-3100"),
            ("PORT_MAPPING", "10080:80,10443:443,18080:8080"),
        ],
    },
    Case {
        name: "accept-blocks-mixed",
        args: &[],
        env: &[
            (
                "ACCEPT_BLOCKS",
                "10.0.0.0/8,10.1.0.0/16,192.0.2.0/24,fd00::/8",
            ),
            ("IPV6_ACCEPT_BLOCKS", "::1/128"),
        ],
    },
    Case {
        name: "flags-empty-lists",
        args: &[
            "--accept-uids",
            "",
            "--accept-gids",
            "",
            "--ipv4-accept-blocks",
            "",
            "--ipv6-accept-blocks",
            "",
            "--table",
            "pod-redirect",
        ],
        env: &[("ACCEPT_UIDS", "5")],
    },
];

fn goldens() -> Vec<Golden> {
    CASES
        .iter()
        .map(|c| {
            let mut argv = vec!["redirect"];
            argv.extend_from_slice(c.args);
            Golden::new("redirect", c.name, &argv).env(c.env)
        })
        .collect()
}

#[test]
fn dry_run_matches_golden_files() {
    assert_matches_golden(&goldens());
}

#[test]
fn golden_files_are_accepted_by_nft_check() {
    assert_nft_accepts(&goldens());
}

#[test]
fn dry_run_needs_no_privileges() {
    // setpriv drops every capability; --dry-run must still work (no kernel access).
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(env!("CARGO_BIN_EXE_nftkit"))
        .args(["-q", "--dry-run", "redirect"])
        .output()
        .expect("run setpriv");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("table inet nftkit-redirect {"));
}
