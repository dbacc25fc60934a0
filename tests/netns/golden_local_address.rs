//! Golden tests of `nftkit --dry-run local-address`: each case's flags render to
//! tests/golden/local-address/<case>.nft, and `nft -c -f` (in a
//! throwaway network namespace) accepts that text.
//! `UPDATE_GOLDEN=1 cargo test --test netns golden_local_address::` rewrites them.

use crate::common::golden::{
    Golden, assert_invalid_dry_run, assert_matches_golden, assert_nft_accepts,
};

struct Case {
    command: &'static str,
    name: &'static str,
    args: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case {
        command: "local-address",
        name: "ipv4-rules",
        args: &["--ip-address", "10.96.0.2", "--setup-iptables"],
    },
    Case {
        command: "local-address",
        name: "ipv6-rules-port",
        args: &[
            "--ip-address=2001:db8::2",
            "--setup-rules=true",
            "--port=9443",
            "--interface=apiproxy0",
        ],
    },
    Case {
        command: "local-address",
        name: "address-only",
        args: &["--ip-address", "10.96.0.2"],
    },
    Case {
        command: "local-address",
        name: "own-table-name",
        args: &[
            "--ip-address",
            "192.0.2.10",
            "--setup-iptables",
            "--table",
            "apiserver-proxy",
        ],
    },
];

fn goldens() -> Vec<Golden> {
    CASES
        .iter()
        .map(|c| {
            let mut argv = vec![c.command];
            argv.extend_from_slice(c.args);
            Golden::new(c.command, c.name, &argv)
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
fn invalid_input_is_exit_2_with_one_line_naming_the_option() {
    for (command, args, needle) in [
        (
            "local-address",
            &["--ip-address", "10.96.0.300"][..],
            "--ip-address",
        ),
        ("local-address", &[][..], "--ip-address"),
        (
            "local-address",
            &["--ip-address", "10.96.0.2", "--port", "65536"][..],
            "--port",
        ),
        (
            "local-address",
            &["--ip-address", "10.96.0.2", "--sync-interval", "1 minute"][..],
            "--sync-interval",
        ),
    ] {
        let mut argv = vec![command];
        argv.extend_from_slice(args);
        assert_invalid_dry_run(&argv, needle);
    }
}
