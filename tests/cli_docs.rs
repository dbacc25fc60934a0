//! Shell completions and the man page come from the clap definitions and need no kernel.

use std::process::Command;

fn nftkit(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_nftkit")).args(args).output().expect("run nftkit")
}

#[test]
fn completions_are_valid_scripts_that_know_every_command() {
    let out = nftkit(&["completions", "bash"]);
    assert!(out.status.success());
    let script = String::from_utf8(out.stdout).unwrap();
    for cmd in ["redirect", "status", "verify", "delete", "completions", "man"] {
        assert!(script.contains(cmd), "bash completion lacks {cmd}");
    }
    let path = std::env::temp_dir().join(format!("nftkit-completion-{}.bash", std::process::id()));
    std::fs::write(&path, &script).unwrap();
    let check = Command::new("bash").arg("-n").arg(&path).output().unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(check.status.success(), "bash -n: {}", String::from_utf8_lossy(&check.stderr));
    for shell in ["zsh", "fish"] {
        let out = nftkit(&["completions", shell]);
        assert!(out.status.success() && !out.stdout.is_empty(), "{shell}");
    }
    let bad = nftkit(&["completions", "tcsh"]);
    assert_eq!(bad.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&bad.stderr).lines().count(), 1, "one-line error");
}

#[test]
fn man_page_is_roff_with_the_options() {
    let out = nftkit(&["man"]);
    assert!(out.status.success());
    let page = String::from_utf8(out.stdout).unwrap();
    assert!(page.contains(".TH nftkit 1"), "{page}");
    assert!(page.contains("dry\\-run") && page.contains("backend"), "options missing");
}
