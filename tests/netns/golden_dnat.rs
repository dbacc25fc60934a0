//! Golden tests of `nftkit --dry-run dnat`: each case's flags render to
//! tests/golden/dnat/<case>.nft, and `nft -c -f` (in a
//! throwaway network namespace) accepts that text.
//! `UPDATE_GOLDEN=1 cargo test --test netns golden_dnat::` rewrites them.

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
        command: "dnat",
        name: "metadata-default",
        args: &["--map", "169.254.169.254:80=198.51.100.5:8080"],
    },
    Case {
        command: "dnat",
        name: "several-maps-both-families",
        args: &[
            "--map",
            "169.254.169.254:80=198.51.100.5:8080,192.0.2.53:53=198.51.100.6:5353",
            "--map",
            "[2001:db8::254]:80=[2001:db8::5]:8080",
            "--map",
            "[2001:db8::253]:80=[2001:db8::5]:8080",
        ],
    },
    Case {
        command: "dnat",
        name: "accepted-owners",
        args: &[
            "--map",
            "169.254.169.254:80=198.51.100.5:8080",
            "--accept-uids",
            "988,2000-2999",
            "--accept-gids",
            "988",
        ],
    },
    Case {
        command: "dnat",
        name: "udp-prerouting-only",
        args: &[
            "--map",
            "169.254.169.254:53=198.51.100.5:5353",
            "--protocol",
            "udp",
            "--hooks",
            "prerouting",
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
            "dnat",
            &["--map", "169.254.169.254=198.51.100.5:8080"][..],
            "--map",
        ),
        ("dnat", &[][..], "--map"),
        (
            "dnat",
            &["--map", "1.2.3.4:80=5.6.7.8:80", "--protocol", "sctp"][..],
            "--protocol",
        ),
    ] {
        let mut argv = vec![command];
        argv.extend_from_slice(args);
        assert_invalid_dry_run(&argv, needle);
    }
}
