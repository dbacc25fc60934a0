//! The image's arm64 binary: a static aarch64 musl build, run under qemu-user (the
//! emulator called directly, no binfmt), answers `--version` and prints, for a dry run of
//! every command, exactly what this host's build prints.
//!
//! Builds it as scripts/build-image.sh does (cargo-zigbuild: zig compiles ring's C and
//! links against zig's musl), with the quicker `static-test` profile, into target/static,
//! unless NFTKIT_AARCH64_BIN names one already built (e.g. dist/bin/linux-arm64/nftkit).
//! Needs the aarch64-unknown-linux-musl rustup target, cargo-zigbuild, zig (PyPI
//! `ziglang`) and qemu-aarch64(-static): scripts/test.sh installs them.

use std::path::{Path, PathBuf};
use std::process::Command;

const NFTKIT: &str = env!("CARGO_BIN_EXE_nftkit");
const TARGET: &str = "aarch64-unknown-linux-musl";

fn aarch64_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("NFTKIT_AARCH64_BIN") {
        return PathBuf::from(p);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let target_dir = root.join("target/static");
    let st = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&root)
        .env("CARGO_TARGET_DIR", &target_dir)
        .args([
            "zigbuild",
            "--quiet",
            "--profile",
            "static-test",
            "--target",
            TARGET,
            "--bin",
            "nftkit",
        ])
        .status()
        .expect("run cargo zigbuild (scripts/test.sh installs cargo-zigbuild and zig)");
    assert!(
        st.success(),
        "aarch64 build failed (needs `rustup target add {TARGET}`, cargo-zigbuild and the \
         PyPI package ziglang; scripts/test.sh installs them)"
    );
    target_dir.join(TARGET).join("static-test/nftkit")
}

/// qemu-user for aarch64, whichever Debian package provides it.
fn qemu() -> &'static str {
    ["qemu-aarch64-static", "qemu-aarch64"]
        .into_iter()
        .find(|q| Command::new(q).arg("--version").output().is_ok())
        .expect("qemu-aarch64-static or qemu-aarch64 (Debian qemu-user-static; scripts/test.sh installs it)")
}

/// (machine, has a program interpreter) from the ELF headers.
fn elf_machine_and_interp(path: &Path) -> (u16, bool) {
    let b = std::fs::read(path).expect("read binary");
    assert_eq!(&b[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(b[4], 2, "not ELF64");
    assert_eq!(b[5], 1, "not little-endian");
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    let phoff = u64_at(0x20) as usize;
    let phentsize = usize::from(u16_at(0x36));
    let phnum = usize::from(u16_at(0x38));
    const PT_INTERP: u32 = 3;
    let interp = (0..phnum).any(|i| u32_at(phoff + i * phentsize) == PT_INTERP);
    (u16_at(0x12), interp)
}

fn run(cmd: &mut Command) -> (Option<i32>, String, String) {
    let out = cmd.env_clear().output().expect("run");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn aarch64_binary_runs_under_qemu_and_dry_runs_every_command_like_the_host_build() {
    let bin = aarch64_binary();
    const EM_AARCH64: u16 = 183;
    let (machine, interp) = elf_machine_and_interp(&bin);
    assert_eq!(
        machine,
        EM_AARCH64,
        "{} is not an aarch64 binary",
        bin.display()
    );
    assert!(!interp, "{} is dynamically linked", bin.display());
    let qemu = qemu();

    let (code, out, err) = run(Command::new(qemu).arg(&bin).arg("--version"));
    assert_eq!(code, Some(0), "{err}");
    let (_, host_version, _) = run(Command::new(NFTKIT).arg("--version"));
    assert_eq!(out, host_version);

    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let masq_dir = golden.join("masquerade/configs/cidrs");
    let netpol_file = golden.join("netpol/docs-example.yaml");
    let cases: Vec<Vec<&str>> = vec![
        vec!["redirect"],
        vec!["--backend", "iptables-nft", "redirect"],
        vec!["masquerade", "--config-dir", masq_dir.to_str().unwrap()],
        vec![
            "local-address",
            "--ip-address",
            "10.96.0.2",
            "--setup-iptables",
        ],
        vec!["dnat", "--map", "169.254.169.254:80=198.51.100.5:8080"],
        vec![
            "netpol",
            "--node-name",
            "node-1",
            "--from-file",
            netpol_file.to_str().unwrap(),
        ],
    ];
    for args in cases {
        let (code, out, err) = run(Command::new(qemu)
            .arg(&bin)
            .args(["-q", "--dry-run"])
            .args(&args));
        assert_eq!(code, Some(0), "{args:?}: {err}");
        let (host_code, host_out, host_err) =
            run(Command::new(NFTKIT).args(["-q", "--dry-run"]).args(&args));
        assert_eq!(host_code, Some(0), "host {args:?}: {host_err}");
        assert!(!out.is_empty(), "{args:?}: nothing printed");
        assert_eq!(out, host_out, "{args:?}: aarch64 and host dry runs differ");
    }
}
