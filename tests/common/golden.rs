//! Shared machinery of the golden `--dry-run` tests: render a case with the real binary,
//! compare it with its file (or rewrite it under `UPDATE_GOLDEN=1`), and check that
//! `nft -c -f` accepts every file, in a throwaway network namespace (`unshare -n`).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;

/// One golden case: what follows `nftkit --dry-run -q`, its environment, and its file.
pub struct Golden {
    pub file: PathBuf,
    pub argv: Vec<OsString>,
    pub env: Vec<(String, String)>,
}

impl Golden {
    /// `tests/golden/<dir>/<name>.nft` for `nftkit --dry-run -q ARGV...`.
    pub fn new<S: Into<OsString> + Clone>(dir: &str, name: &str, argv: &[S]) -> Golden {
        Golden {
            file: PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("tests/golden")
                .join(dir)
                .join(format!("{name}.nft")),
            argv: argv.iter().cloned().map(Into::into).collect(),
            env: Vec::new(),
        }
    }

    pub fn env(mut self, env: &[(&str, &str)]) -> Golden {
        self.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self
    }

    /// The dry-run text, with nothing but the case's environment.
    pub fn render(&self) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_nftkit"))
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .args(["--dry-run", "-q"])
            .args(&self.argv)
            .output()
            .expect("run nftkit");
        assert!(
            out.status.success(),
            "{}: {}",
            self.file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }
}

/// `nftkit --dry-run ARGS` is refused: exit 2, one line on stderr naming `needle`
/// (the option), nothing on stdout.
pub fn assert_invalid_dry_run(args: &[&str], needle: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_nftkit"))
        .env_clear()
        .arg("--dry-run")
        .args(args)
        .output()
        .expect("run nftkit");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains(needle), "{args:?}: {err}");
    assert!(out.stdout.is_empty());
}

/// Each case renders exactly its file; `UPDATE_GOLDEN=1` rewrites the files instead.
pub fn assert_matches_golden(cases: &[Golden]) {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    for case in cases {
        let got = case.render();
        if update {
            std::fs::write(&case.file, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&case.file)
            .unwrap_or_else(|_| panic!("missing {}", case.file.display()));
        assert_eq!(
            got,
            want,
            "{} differs from the dry-run output",
            case.file.display()
        );
    }
}

/// `nft -c -f` accepts every case's file (in a fresh network namespace).
pub fn assert_nft_accepts(cases: &[Golden]) {
    for case in cases {
        let out = Command::new("unshare")
            .args(["-n", "nft", "-c", "-f"])
            .arg(&case.file)
            .output()
            .expect("run unshare nft (scripts/test.sh installs nftables)");
        assert!(
            out.status.success(),
            "nft -c -f {}: {}",
            case.file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A redirect golden case: flags and environment (tests/netns/golden.rs renders the nft text,
/// tests/netns/iptables_golden.rs the iptables-restore text of the same cases).
pub struct RedirectCase {
    pub name: &'static str,
    pub args: &'static [&'static str],
    pub env: &'static [(&'static str, &'static str)],
}

pub const REDIRECT_CASES: &[RedirectCase] = &[
    RedirectCase {
        name: "default",
        args: &[],
        env: &[],
    },
    RedirectCase {
        name: "dnat-both-families",
        args: &[],
        env: &[
            ("TO_IPV4_ADDR", "203.0.113.10"),
            ("TO_IPV6_ADDR", "2001:db8::10"),
        ],
    },
    RedirectCase {
        name: "dnat-ipv4-only",
        args: &[],
        env: &[("TO_IPV4_ADDR", "203.0.113.10")],
    },
    RedirectCase {
        name: "lone-port",
        args: &[],
        env: &[("PORT_MAPPING", "15001")],
    },
    RedirectCase {
        name: "uid-ranges-and-lists",
        args: &[],
        env: &[
            ("ACCEPT_UIDS", "1010, 0, 2000-2999,"),
            ("ACCEPT_GIDS", "1337,3000-3100"),
            ("PORT_MAPPING", "10080:80,10443:443,18080:8080"),
        ],
    },
    RedirectCase {
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
    RedirectCase {
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
