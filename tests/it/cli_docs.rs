//! Shell completions and the man page come from the clap definitions and need no kernel.

use std::process::Command;

fn nftkit(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_nftkit"))
        .args(args)
        .output()
        .expect("run nftkit")
}

#[test]
fn completions_are_valid_scripts_that_know_every_command() {
    let out = nftkit(&["completions", "bash"]);
    assert!(out.status.success());
    let script = String::from_utf8(out.stdout).unwrap();
    for cmd in [
        "redirect",
        "status",
        "verify",
        "delete",
        "completions",
        "man",
    ] {
        assert!(script.contains(cmd), "bash completion lacks {cmd}");
    }
    let path = std::env::temp_dir().join(format!("nftkit-completion-{}.bash", std::process::id()));
    std::fs::write(&path, &script).unwrap();
    let check = Command::new("bash").arg("-n").arg(&path).output().unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(
        check.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    for shell in ["zsh", "fish"] {
        let out = nftkit(&["completions", shell]);
        assert!(out.status.success() && !out.stdout.is_empty(), "{shell}");
    }
    let bad = nftkit(&["completions", "tcsh"]);
    assert_eq!(bad.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&bad.stderr).lines().count(),
        1,
        "one-line error"
    );
}

#[test]
fn man_page_is_roff_with_the_options() {
    let out = nftkit(&["man"]);
    assert!(out.status.success());
    let page = String::from_utf8(out.stdout).unwrap();
    assert!(page.contains(".TH nftkit 1"), "{page}");
    assert!(
        page.contains("dry\\-run") && page.contains("backend"),
        "options missing"
    );
}

#[test]
fn json_logs_are_one_object_per_line_with_consistent_fields() {
    let out = nftkit(&["--log-format", "json", "--dry-run", "redirect"]);
    assert!(out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(!lines.is_empty(), "no log lines");
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        for key in ["timestamp", "level", "fields"] {
            assert!(v.get(key).is_some(), "{key} missing: {line}");
        }
        assert!(v["fields"]["message"].is_string(), "{line}");
    }
    // Text logs carry no colour codes when stderr is not a terminal.
    let out = nftkit(&["--dry-run", "redirect"]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains('\u{1b}'));
}

/// A missing required argument is one line that names what is missing (clap puts the
/// names on the lines after "required arguments were not provided:").
#[test]
fn missing_arguments_are_named_on_one_line() {
    for (args, names) in [
        (&["completions"][..], &["<SHELL>"][..]),
        (&["delete"][..], &["<COMMAND>"][..]),
    ] {
        let out = nftkit(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{args:?}: one line:\n{err}"
        );
        assert!(!err.trim_end().ends_with(':'), "{args:?}: {err}");
        for n in names {
            assert!(err.contains(n), "{args:?}: should name {n}:\n{err}");
        }
    }
}

/// Go's flag forms, as upstream manifests of the Go tools write them, work after the
/// Go-derived commands (`-enable-ipv6`, `-v=2`, `-config-dir=DIR`).
#[test]
fn go_single_dash_flags_are_accepted() {
    let out = nftkit(&[
        "--dry-run",
        "masquerade",
        "-enable-ipv6",
        "-v=2",
        "-config-dir=/nonexistent-nftkit-test",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("fe80::/10"),
        "--enable-ipv6 not applied:\n{text}"
    );
}

/// klog's flags, which ip-masq-agent and kube-policy-manager manifests write before or
/// after the command (`--v=2`, `--logtostderr=1`), are accepted; a bad level is exit 2.
#[test]
fn klog_flags_before_and_after_the_command_are_accepted() {
    for args in [
        &["--v=2", "--dry-run", "masquerade"][..],
        &["-v=4", "-logtostderr", "--dry-run", "masquerade", "--v=2"],
        &[
            "--dry-run",
            "local-address",
            "--ip-address=198.51.100.2",
            "--logtostderr=true",
            "-v=2",
        ],
        &[
            "--alsologtostderr",
            "--log_dir=/tmp",
            "--dry-run",
            "redirect",
        ],
    ] {
        let out = nftkit(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = nftkit(&["--v=loud", "masquerade"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--v=loud") && err.lines().count() == 1,
        "{err}"
    );
}

/// Every daemon takes `--persist[=BOOL]` and an interval as whole seconds or a Go duration.
#[test]
fn daemons_share_persist_and_interval_forms() {
    let dir = std::env::temp_dir().join(format!("nftkit-cli-docs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let list = dir.join("cluster.yaml");
    std::fs::write(&list, "apiVersion: v1\nkind: List\nitems: []\n").unwrap();
    let list = list.to_str().unwrap();
    let daemons: [(&[&str], &str); 4] = [
        (
            &["masquerade", "--config-dir=/nonexistent-nftkit"],
            "--resync-interval",
        ),
        (
            &[
                "local-address",
                "--ip-address=198.51.100.2",
                "--setup-iptables",
            ],
            "--sync-interval",
        ),
        (
            &["dnat", "--map=198.51.100.1:80=198.51.100.2:8080"],
            "--sync-interval",
        ),
        (
            &["netpol", "--node-name=n1", "--from-file", list],
            "--resync-interval",
        ),
    ];
    for (base, interval) in daemons {
        for extra in [
            vec!["--persist".to_string()],
            vec!["--persist=false".into()],
            vec!["--persist=true".into(), format!("{interval}=60")],
            vec![format!("{interval}=1m30s")],
            vec![format!("-{}=45", interval.trim_start_matches('-'))],
        ] {
            let mut args = vec!["--dry-run"];
            args.extend_from_slice(base);
            args.extend(extra.iter().map(String::as_str));
            let out = nftkit(&args);
            assert!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for bad in ["0", "1 minute", "-5s"] {
            let arg = format!("{interval}={bad}");
            let mut args = vec!["--dry-run"];
            args.extend_from_slice(base);
            args.push(&arg);
            let out = nftkit(&args);
            assert_eq!(out.status.code(), Some(2), "{args:?}");
            assert!(String::from_utf8_lossy(&out.stderr).contains(interval));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `nftkit man --out DIR` writes one page per command (verify's targets included), each
/// naming every long option of its command (the global ones too) and an ENVIRONMENT
/// section with the variables the command reads.
#[test]
fn man_out_writes_a_page_per_command_with_all_its_flags() {
    use clap::CommandFactory;
    let dir = std::env::temp_dir().join(format!("nftkit-man-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = nftkit(&["man", "--out", dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = String::from_utf8_lossy(&out.stdout).to_string();
    let mut root = nftkit::cli::Cli::command().disable_help_subcommand(true);
    root.build();
    let mut expected = Vec::new();
    fn walk(cmd: &clap::Command, name: String, out: &mut Vec<(String, Vec<String>)>) {
        let longs = cmd
            .get_arguments()
            .filter(|a| !a.is_hide_set())
            .filter_map(|a| a.get_long().map(str::to_string))
            .collect();
        out.push((format!("{name}.1"), longs));
        for sub in cmd.get_subcommands() {
            walk(sub, format!("{name}-{}", sub.get_name()), out);
        }
    }
    walk(&root, "nftkit".into(), &mut expected);
    for must in [
        "nftkit.1",
        "nftkit-redirect.1",
        "nftkit-masquerade.1",
        "nftkit-local-address.1",
        "nftkit-dnat.1",
        "nftkit-netpol.1",
        "nftkit-verify.1",
        "nftkit-verify-masquerade.1",
        "nftkit-status.1",
        "nftkit-delete.1",
        "nftkit-detect.1",
        "nftkit-doctor.1",
    ] {
        assert!(
            expected.iter().any(|(f, _)| f == must),
            "{must} is not a command"
        );
    }
    for (file, longs) in &expected {
        let path = dir.join(file);
        assert!(
            listed.contains(&path.display().to_string()),
            "{file} not listed"
        );
        let page = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(
            page.starts_with(".TH ") || page.contains("\n.TH "),
            "{file}"
        );
        for long in longs {
            let roff = format!("\\-\\-{}", long.replace('-', "\\-"));
            assert!(page.contains(&roff), "{file} lacks --{long}");
        }
        assert!(page.contains(".SH ENVIRONMENT"), "{file}");
        assert!(
            page.contains("NFTKIT_BACKEND") && page.contains("RUST_LOG"),
            "{file}"
        );
    }
    let redirect = std::fs::read_to_string(dir.join("nftkit-redirect.1")).unwrap();
    for var in ["ACCEPT_UIDS", "PORT_MAPPING", "TO_DOMAIN", "ACCEPT_BLOCKS"] {
        assert!(redirect.contains(var), "nftkit-redirect.1 lacks {var}");
    }
    let netpol = std::fs::read_to_string(dir.join("nftkit-netpol.1")).unwrap();
    assert!(netpol.contains("NODE_NAME") && netpol.contains("KUBECONFIG"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A command's --help lists its own options first and the global ones under their own
/// heading, as kubectl does.
#[test]
fn command_help_lists_global_options_under_their_own_heading() {
    let out = nftkit(&["masquerade", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    let (own, global) = help
        .split_once("\nGlobal options:\n")
        .unwrap_or_else(|| panic!("no Global options heading:\n{help}"));
    for flag in ["--masq-chain", "--resync-interval", "--persist"] {
        assert!(
            own.contains(flag),
            "{flag} not among masquerade's own options"
        );
        assert!(!global.contains(flag), "{flag} among the global options");
    }
    for flag in [
        "--backend",
        "--dry-run",
        "--table",
        "--metrics-addr",
        "--quiet",
    ] {
        assert!(global.contains(flag), "{flag} not under Global options");
        assert!(!own.contains(flag), "{flag} among masquerade's own options");
    }
}
