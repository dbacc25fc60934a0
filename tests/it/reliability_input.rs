//! Issue 11, part 4 (huge and hostile files): the real binary with `--dry-run` (no kernel,
//! no privileges) on a 1 MB config, 1 000 000 CIDRs, deeply nested YAML/JSON, a netpol
//! manifest nested 100 000 deep, and config dirs with foreign files and symlinks leading
//! out. Each either works or fails fast (exit 2, one line naming the file) with bounded
//! memory: wall time and max RSS are measured with `/usr/bin/time` and printed.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::*;

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("{}-{tag}", unique_name()));
        fs::create_dir_all(&p).expect("mkdir");
        TempDir(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
    fn write(&self, name: &str, content: &str) {
        fs::write(self.0.join(name), content).expect("write");
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Result of one measured run.
struct Measured {
    out: Out,
    seconds: f64,
    max_rss_kib: u64,
}

/// `nftkit -q --dry-run ARGS` under `/usr/bin/time -f '%e %M'`.
fn measured(args: &[&str]) -> Measured {
    let times = std::env::temp_dir().join(format!("{}-time", unique_name()));
    let times_s = times.to_str().expect("utf-8").to_string();
    let mut argv = vec![
        "/usr/bin/time",
        "-f",
        "%e %M",
        "-o",
        &times_s,
        NFTKIT,
        "-q",
        "--dry-run",
    ];
    argv.extend_from_slice(args);
    let mut c = Cmd::new(&argv).timeout(Duration::from_secs(120));
    for k in NFTKIT_ENV {
        c = c.env_remove(k);
    }
    let out = c.run();
    let t = fs::read_to_string(&times).unwrap_or_default();
    let _ = fs::remove_file(&times);
    // A non-zero exit adds a "Command exited with non-zero status" line first.
    let mut it = t.lines().last().unwrap_or("").split_whitespace();
    let seconds = it.next().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN);
    let max_rss_kib = it.next().and_then(|s| s.parse().ok()).unwrap_or(u64::MAX);
    eprintln!(
        "{:>6.2} s {:>8} KiB max RSS  exit {:?}  {}",
        seconds,
        max_rss_kib,
        out.code,
        args.join(" ").chars().take(100).collect::<String>()
    );
    Measured {
        out,
        seconds,
        max_rss_kib,
    }
}

/// Exit 2 with one `nftkit:` line that names `file`.
fn assert_input_error(m: &Measured, file: &str, needle: &str) {
    assert_eq!(m.out.code, Some(2), "expected exit 2:\n{}", m.out);
    let lines: Vec<&str> = m.out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line:\n{}", m.out);
    assert!(lines[0].starts_with("nftkit: "), "{}", m.out);
    assert!(lines[0].contains(file), "file not named:\n{}", m.out);
    assert!(lines[0].contains(needle), "reason not given:\n{}", m.out);
}

fn masq(dir: &TempDir) -> Measured {
    measured(&[
        "masquerade",
        "--config-dir",
        dir.path().to_str().expect("utf-8"),
    ])
}

#[test]
fn deeply_nested_yaml_and_json_fail_fast() {
    for (name, doc) in [
        (
            "yaml",
            format!(
                "nonMasqueradeCIDRs: {}{}\n",
                "[".repeat(100_000),
                "]".repeat(100_000)
            ),
        ),
        (
            "json",
            format!(
                "{{\"nonMasqueradeCIDRs\": {}{}}}",
                "[".repeat(100_000),
                "]".repeat(100_000)
            ),
        ),
        (
            "block",
            (0..5000)
                .map(|i| format!("{}k:\n", " ".repeat(i)))
                .collect(),
        ),
    ] {
        let d = TempDir::new(name);
        d.write("ip-masq-agent", &doc);
        let m = masq(&d);
        assert_input_error(&m, "ip-masq-agent", "");
        assert!(
            m.out.stderr.contains("deep") || m.out.stderr.contains("recursion limit"),
            "{}",
            m.out
        );
        // Before the linear pre-scan, 100 000 flow levels took ~50 s in libyaml.
        assert!(m.seconds < 3.0, "{name}: took {} s", m.seconds);
        assert!(m.max_rss_kib < 200 * 1024, "{name}: {} KiB", m.max_rss_kib);
    }
    // The same for a netpol manifest.
    let d = TempDir::new("netpol-deep");
    d.write(
        "m.yaml",
        &format!(
            "apiVersion: v1\nkind: List\nitems: {}{}\n",
            "[".repeat(100_000),
            "]".repeat(100_000)
        ),
    );
    let file = d.path().join("m.yaml");
    let m = measured(&[
        "netpol",
        "--node-name",
        "node-1",
        "--from-file",
        file.to_str().expect("utf-8"),
    ]);
    assert_input_error(&m, "m.yaml", "deep");
    assert!(m.seconds < 3.0, "netpol: took {} s", m.seconds);
}

#[test]
fn many_nodes_fail_fast_with_bounded_memory() {
    // 15 MB of nested empty lists: ~7.6 M YAML events; before the node cap libyaml held
    // them all (3.6 GB RSS, 13 s).
    let d = TempDir::new("nodes");
    let items = vec!["[[[]]]"; 2_000_000].join(",");
    d.write("ip-masq-agent", &format!("nonMasqueradeCIDRs: [{items}]"));
    let m = masq(&d);
    assert_input_error(&m, "ip-masq-agent", "more than 2000000");
    assert!(m.seconds < 3.0, "took {} s", m.seconds);
    assert!(m.max_rss_kib < 200 * 1024, "{} KiB", m.max_rss_kib);
}

#[test]
fn a_million_cidrs_load_or_fail_fast_and_a_1mb_config_works() {
    let cidr = |k: u32| format!("{}.{}.{}.0/24", 10 + (k >> 16), (k >> 8) & 255, k & 255);
    // Block style: 17 MB, over the 16 MiB file limit: refused before parsing.
    let d = TempDir::new("million-block");
    let mut doc = String::from("nonMasqueradeCIDRs:\n");
    for k in 0..1_000_000 {
        doc.push_str("  - ");
        doc.push_str(&cidr(k));
        doc.push('\n');
    }
    d.write("ip-masq-agent", &doc);
    let m = masq(&d);
    assert_input_error(&m, "ip-masq-agent", "16 MiB");
    assert!(m.seconds < 2.0, "took {} s", m.seconds);
    assert!(m.max_rss_kib < 100 * 1024, "{} KiB", m.max_rss_kib);
    // Flow style: 15 MB, within every limit: a million CIDRs load (merged to ranges).
    let d = TempDir::new("million-flow");
    let items: Vec<String> = (0..1_000_000).map(cidr).collect();
    d.write(
        "ip-masq-agent",
        &format!("nonMasqueradeCIDRs: [{}]", items.join(",")),
    );
    let m = masq(&d);
    assert!(m.out.success(), "{}", m.out);
    assert!(m.out.stdout.contains("table inet nftkit-masquerade"));
    assert!(m.seconds < 60.0, "took {} s", m.seconds);
    assert!(m.max_rss_kib < 600 * 1024, "{} KiB", m.max_rss_kib);
    // 1 MB of distinct /32s.
    let d = TempDir::new("one-mb");
    let mut doc = String::from("nonMasqueradeCIDRs:\n");
    let mut k = 0u32;
    while doc.len() < 1_000_000 {
        doc.push_str(&format!(
            "  - 11.{}.{}.{}/32\n",
            k >> 16,
            (k >> 8) & 255,
            k & 255
        ));
        k += 2;
    }
    d.write("ip-masq-agent", &doc);
    let m = masq(&d);
    assert!(m.out.success(), "{}", m.out);
    assert!(m.out.stdout.matches("11.").count() >= 50_000);
    assert!(m.seconds < 10.0, "took {} s", m.seconds);
    assert!(m.max_rss_kib < 200 * 1024, "{} KiB", m.max_rss_kib);
}

#[test]
fn config_dir_ignores_foreign_files_and_refuses_symlinks_out_of_it() {
    // Foreign files, even unreadable garbage, are ignored; only ip-masq* count.
    let d = TempDir::new("foreign");
    d.write("README", "\u{0}\u{1} not yaml [[[");
    d.write("masq-agent", "nonMasqueradeCIDRs: [bogus]");
    d.write("ip-masq-agent", "nonMasqueradeCIDRs: [198.18.0.0/15]");
    std::os::unix::fs::symlink("/etc/passwd", d.path().join("other-link")).expect("symlink");
    let m = masq(&d);
    assert!(m.out.success(), "{}", m.out);
    assert!(m.out.stdout.contains("198.18.0.0/15"), "{}", m.out.stdout);
    // An ip-masq* symlink leading out of the dir is refused, naming it.
    std::os::unix::fs::symlink("/etc/passwd", d.path().join("ip-masq-evil")).expect("symlink");
    let m = masq(&d);
    assert_input_error(&m, "ip-masq-evil", "outside");
    // ... also through a ..data-style directory link pointing out.
    let d = TempDir::new("data-out");
    let outside = TempDir::new("outside");
    outside.write("ip-masq-agent", "nonMasqueradeCIDRs: [198.18.0.0/15]");
    std::os::unix::fs::symlink(outside.path(), d.path().join("..data")).expect("symlink");
    std::os::unix::fs::symlink("..data/ip-masq-agent", d.path().join("ip-masq-agent"))
        .expect("symlink");
    let m = masq(&d);
    assert_input_error(&m, "ip-masq-agent", "outside");
    // The real ConfigMap layout (..data -> ..<timestamp> inside the dir) is followed.
    let d = TempDir::new("configmap");
    fs::create_dir(d.path().join("..2026_01_01_00_00_00.1")).expect("mkdir");
    d.write(
        "..2026_01_01_00_00_00.1/ip-masq-agent",
        "nonMasqueradeCIDRs: [198.18.0.0/15]",
    );
    std::os::unix::fs::symlink("..2026_01_01_00_00_00.1", d.path().join("..data"))
        .expect("symlink");
    std::os::unix::fs::symlink("..data/ip-masq-agent", d.path().join("ip-masq-agent"))
        .expect("symlink");
    let m = masq(&d);
    assert!(m.out.success(), "{}", m.out);
    assert!(m.out.stdout.contains("198.18.0.0/15"), "{}", m.out.stdout);
}
