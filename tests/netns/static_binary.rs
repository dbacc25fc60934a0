//! The static binary runs with nothing around it: copied alone into an empty directory and
//! run there with chroot — `--version`, `--dry-run redirect`, name resolution from the
//! chroot's /etc/hosts, and a real apply inside a network namespace.
//!
//! Builds it as the image's amd64 binary is built (x86_64 musl, ring's C compiled by
//! musl-gcc; see scripts/build-image.sh), with the quicker `static-test` profile, into
//! target/static, unless NFTKIT_STATIC_BIN names one already built (e.g.
//! dist/bin/linux-amd64/nftkit, or the glibc crt-static fallback). Needs the
//! x86_64-unknown-linux-musl rustup target and musl-tools: scripts/test.sh installs them.

use std::path::PathBuf;
use std::process::Command;

use crate::common::Netns;

fn static_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("NFTKIT_STATIC_BIN") {
        return PathBuf::from(p);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let target_dir = root.join("target/static");
    let st = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&root)
        .env("CC_x86_64_unknown_linux_musl", "musl-gcc")
        .env("CARGO_TARGET_DIR", &target_dir)
        .args([
            "build",
            "--quiet",
            "--profile",
            "static-test",
            "--target",
            "x86_64-unknown-linux-musl",
            "--bin",
            "nftkit",
        ])
        .status()
        .expect("run cargo");
    assert!(
        st.success(),
        "static build failed (needs `rustup target add x86_64-unknown-linux-musl` and \
         musl-tools; scripts/test.sh installs them)"
    );
    target_dir.join("x86_64-unknown-linux-musl/static-test/nftkit")
}

#[test]
fn static_binary_runs_alone_in_an_empty_root() {
    let bin = static_binary();
    let ldd = Command::new("ldd").arg(&bin).output().expect("ldd");
    let text =
        String::from_utf8_lossy(&ldd.stdout).to_string() + &String::from_utf8_lossy(&ldd.stderr);
    assert!(
        text.contains("not a dynamic executable") || text.contains("statically linked"),
        "dynamic: {text}"
    );

    let root = std::env::temp_dir().join(format!("nftkit-chroot-{}", std::process::id()));
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::copy(&bin, root.join("nftkit")).unwrap();
    std::fs::write(root.join("etc/hosts"), "203.0.113.10 proxy.test\n").unwrap();
    let entries: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        entries.len(),
        2,
        "only the binary and etc/hosts: {entries:?}"
    );
    let root_s = root.to_str().unwrap().to_string();

    let run = |pre: &[&str], args: &[&str], env: &[(&str, &str)]| {
        let mut argv: Vec<String> = pre.iter().map(|s| s.to_string()).collect();
        argv.extend(["chroot".to_string(), root_s.clone(), "/nftkit".to_string()]);
        argv.extend(args.iter().map(|s| s.to_string()));
        // Only what the test gives (plus PATH to find chroot and ip): the binary needs nothing else.
        let out = Command::new(&argv[0])
            .args(&argv[1..])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, out, err) = run(&[], &["--version"], &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("nftkit "), "{out}");
    let (code, out, err) = run(&[], &["-q", "--dry-run", "redirect"], &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("table inet nftkit-redirect {"));
    let (code, out, err) = run(
        &[],
        &["-q", "--dry-run", "redirect"],
        &[("TO_DOMAIN", "proxy.test")],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("dnat ip to 203.0.113.10:10080"),
        "resolved from the chroot's /etc/hosts: {out}"
    );

    let ns = Netns::new();
    let (code, _, err) = run(&["ip", "netns", "exec", &ns.name], &["-q", "redirect"], &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(ns.ruleset().contains("tcp dport 80 redirect to :10080"));
    let (code, _, err) = run(
        &["ip", "netns", "exec", &ns.name],
        &["-q", "verify", "redirect"],
        &[],
    );
    assert_eq!(code, Some(0), "{err}");
    let _ = std::fs::remove_dir_all(&root);
}
