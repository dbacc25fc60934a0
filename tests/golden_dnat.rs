//! Golden tests of `nftkit --dry-run dnat`: each case's flags render to
//! tests/golden/dnat/<case>.nft, and `nft -c -f` (in a
//! throwaway network namespace) accepts that text.
//! `UPDATE_GOLDEN=1 cargo test --test golden_dnat` rewrites them.

use std::path::PathBuf;
use std::process::Command;

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

fn golden_path(case: &Case) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(case.command)
        .join(format!("{}.nft", case.name))
}

fn render(case: &Case) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_nftkit"))
        .env_clear()
        .arg("--dry-run")
        .arg("-q")
        .arg(case.command)
        .args(case.args)
        .output()
        .expect("run nftkit");
    assert!(
        out.status.success(),
        "{}: {}",
        case.name,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn dry_run_matches_golden_files() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    for case in CASES {
        let got = render(case);
        let path = golden_path(case);
        if update {
            std::fs::write(&path, &got).unwrap();
            continue;
        }
        let want =
            std::fs::read_to_string(&path).unwrap_or_else(|_| panic!("missing {}", path.display()));
        assert_eq!(
            got,
            want,
            "case {} differs from {}",
            case.name,
            path.display()
        );
    }
}

#[test]
fn golden_files_are_accepted_by_nft_check() {
    for case in CASES {
        let path = golden_path(case);
        let out = Command::new("unshare")
            .args(["-n", "nft", "-c", "-f"])
            .arg(&path)
            .output()
            .expect("run unshare nft");
        assert!(
            out.status.success(),
            "nft -c -f {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
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
        let out = Command::new(env!("CARGO_BIN_EXE_nftkit"))
            .env_clear()
            .arg("--dry-run")
            .arg(command)
            .args(args)
            .output()
            .expect("run nftkit");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command} {args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(err.contains(needle), "{command} {args:?}: {err}");
        assert!(out.stdout.is_empty());
    }
}
