//! Issue 11, part 1: SIGKILL at random moments never leaves a partial ruleset.
//!
//! 200 `nftkit redirect` applies alternate between a small config and a config with a
//! 5 000-element accept-block set passed by flag (so an apply takes long enough to be
//! hit). Each is SIGKILLed after a random delay spread over the whole life of the
//! process (start-up, parse, batch build, commit, read-back). After every kill the owned
//! table, as `nft -j list table` prints it without handles, is exactly the old or the
//! new one. Then daemons (`dnat --persist`) are killed the same way and a restarted
//! daemon adopts or repairs the table; a daemon without `--persist` takes its table with
//! it, entirely.
//!
//! Root only: everything happens in throw-away network namespaces.

use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

/// Seeded xorshift, so a failure can be replayed (`RELIABILITY_SEED`).
struct Rng(u64);

impl Rng {
    fn from_env() -> Rng {
        let seed = std::env::var("RELIABILITY_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            })
            | 1;
        eprintln!("RELIABILITY_SEED={seed}");
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// `count` non-adjacent /32s (so they stay `count` set elements), comma-separated.
fn blocks(count: usize) -> String {
    (0..count)
        .map(|i| {
            let n = 2 * i as u32;
            format!("198.18.{}.{}/32", n / 256, n % 256)
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Spawns nftkit inside `ns` (`ip netns exec` execs it, so the pid is nftkit's).
fn spawn_nftkit(ns: &Netns, args: &[String]) -> Child {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &ns.name, NFTKIT]);
    c.args(args);
    for k in NFTKIT_ENV {
        c.env_remove(k);
    }
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c.spawn().expect("spawn nftkit")
}

/// Waits (bounded) for the child; its exit code, None if killed by a signal.
fn reap(mut child: Child) -> Option<i32> {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return st.code();
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("nftkit did not exit within 30 s");
        }
        thread::sleep(Duration::from_millis(2));
    }
}

/// The owned table as nft prints it in JSON, handles stripped; None if absent.
fn table_json(ns: &Netns, table: &str) -> Option<String> {
    let out = ns.nft(&["-j", "list", "table", "inet", table]);
    if !out.success() {
        assert!(
            out.stderr.contains("No such file or directory"),
            "nft list table failed unexpectedly:\n{out}"
        );
        return None;
    }
    Some(
        serde_json::to_string_pretty(&strip_json_key(&out.stdout, "handle"))
            .expect("serialise JSON"),
    )
}

fn short(json: &Option<String>) -> String {
    match json {
        None => "<no table>".into(),
        Some(j) => format!("{} bytes: {}", j.len(), &j[..j.len().min(600)]),
    }
}

#[test]
fn sigkill_during_200_redirect_applies_leaves_old_or_new_table() {
    require_root();
    let ns = Netns::new();
    let table = "nftkit-redirect";
    let small: Vec<String> = ["redirect", "--port-mapping", "10080:80"]
        .map(String::from)
        .to_vec();
    let big: Vec<String> = vec![
        "redirect".into(),
        "--port-mapping".into(),
        "10443:443,15001".into(),
        "--ipv4-accept-blocks".into(),
        blocks(5000),
    ];
    // The two reference tables, from complete applies.
    let mut reference = Vec::new();
    let mut full_run = Duration::ZERO;
    for cfg in [&small, &big] {
        let started = Instant::now();
        ns.nftkit_ok(&[], cfg);
        full_run = full_run.max(started.elapsed());
        reference.push(table_json(&ns, table).expect("table after apply"));
    }
    assert_ne!(reference[0], reference[1]);
    assert!(
        reference[1].matches("198.18.").count() >= 5000,
        "the big config must give 5000 elements"
    );
    // Kill delays spread over the whole run, a little beyond it so some runs finish.
    let window_us = (full_run.as_micros() as u64 * 5 / 4).max(2_000);
    let mut rng = Rng::from_env();
    let (mut kills, mut finished, mut old_after_kill, mut new_after_kill) = (0, 0, 0, 0);
    let mut current = 1; // the big table is in place
    for i in 0..200 {
        let next = i % 2; // small, big, small, ...
        let args = if next == 0 { &small } else { &big };
        let child = spawn_nftkit(&ns, args);
        thread::sleep(Duration::from_micros(rng.below(window_us)));
        // SAFETY: kill(2) of our own child; harmless if it already exited (not yet reaped).
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGKILL);
        }
        let code = reap(child);
        let now = table_json(&ns, table);
        let state = reference.iter().position(|r| Some(r) == now.as_ref());
        match code {
            Some(0) => {
                finished += 1;
                assert_eq!(
                    state,
                    Some(next),
                    "run {i} exited 0 but the table is not the new one: {}",
                    short(&now)
                );
            }
            Some(c) => panic!("run {i}: nftkit exited {c} (only 0 or SIGKILL expected)"),
            None => {
                kills += 1;
                match state {
                    Some(s) if s == next && s != current => new_after_kill += 1,
                    Some(s) if s == current => old_after_kill += 1,
                    _ => panic!(
                        "run {i}: after SIGKILL the table is neither the old nor the new one (partial?): {}",
                        short(&now)
                    ),
                }
            }
        }
        current = state.expect("checked above");
    }
    eprintln!(
        "200 applies: {kills} killed ({old_after_kill} left the old table, {new_after_kill} the new one), {finished} finished"
    );
    // The kills must really have landed on both sides of the commit, or this test proves
    // nothing.
    // Timing varies with machine load; 20 of 200 is plenty to exercise the kill path.
    assert!(kills >= 20, "too few kills landed: {kills}");
    assert!(
        old_after_kill >= 5 && new_after_kill + finished >= 5,
        "kills did not hit both before and after the commit: old {old_after_kill}, new {new_after_kill}, finished {finished}"
    );
}

/// The `dnat` daemon's args: `n` maps on 198.51.100.x:port -> 203.0.113.1:port.
fn dnat_args(n: usize, port_base: u16, persist: bool) -> Vec<String> {
    let mut v = vec![
        "dnat".to_string(),
        "--sync-interval".into(),
        "1s".into(),
        "--map".into(),
        (0..n)
            .map(|i| {
                format!(
                    "198.51.{}.{}:{}=203.0.113.1:8080",
                    100 + i / 250,
                    1 + i % 250,
                    port_base
                )
            })
            .collect::<Vec<_>>()
            .join(","),
    ];
    v.push(
        if persist {
            "--persist"
        } else {
            "--persist=false"
        }
        .into(),
    );
    v
}

#[test]
fn sigkilled_dnat_daemons_leave_old_or_new_and_a_restart_repairs() {
    require_root();
    let ns = Netns::new();
    let table = "nftkit-dnat";
    let cfgs = [dnat_args(1, 80, true), dnat_args(2000, 81, true)];
    let mut reference = Vec::new();
    let mut full_start = Duration::ZERO;
    for cfg in &cfgs {
        let mut once = cfg.clone();
        once.push("--daemon=false".into());
        let started = Instant::now();
        ns.nftkit_ok(&[], &once);
        full_start = full_start.max(started.elapsed());
        reference.push(table_json(&ns, table).expect("table after apply"));
    }
    assert_ne!(reference[0], reference[1]);
    let window_us = (full_start.as_micros() as u64 * 3 / 2).max(2_000);
    let mut rng = Rng::from_env();
    let mut current = 1;
    let mut kills = 0;
    let mut changed = 0;
    for i in 0..40 {
        let next = i % 2;
        let child = spawn_nftkit(&ns, &cfgs[next]);
        thread::sleep(Duration::from_micros(rng.below(window_us)));
        // SAFETY: kill(2) of our own child.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGKILL);
        }
        assert_eq!(reap(child), None, "daemon {i} should still run when killed");
        kills += 1;
        let now = table_json(&ns, table);
        let state = reference.iter().position(|r| Some(r) == now.as_ref());
        match state {
            Some(s) if s == next || s == current => {
                if s != current {
                    changed += 1;
                }
                current = s;
            }
            _ => panic!(
                "daemon {i}: after SIGKILL the table is neither old nor new: {}",
                short(&now)
            ),
        }
    }
    eprintln!("40 dnat --persist daemons killed; {changed} had replaced the table");
    // A restarted daemon with either config converges on it, whatever was left.
    for want in [0, 1, 0] {
        let mut d = NftkitDaemon::start(&ns, &cfgs[want]);
        assert!(
            poll_until(Duration::from_secs(10), || {
                table_json(&ns, table).as_ref() == Some(&reference[want])
            }),
            "restarted daemon did not adopt/repair the table:\n{}",
            d.log()
        );
        assert!(d.running(), "daemon exited:\n{}", d.log());
        // It keeps it: someone deletes the table, the daemon restores it within an interval.
        ns.nft(&["delete", "table", "inet", table]);
        assert!(
            poll_until(Duration::from_secs(5), || {
                table_json(&ns, table).as_ref() == Some(&reference[want])
            }),
            "daemon did not repair a deleted table within one interval:\n{}",
            d.log()
        );
        // SIGKILL (no cleanup): with --persist the table stays, whole.
        d.signal(libc::SIGKILL);
        d.wait_exit(Duration::from_secs(10));
        assert_eq!(table_json(&ns, table).as_ref(), Some(&reference[want]));
    }
    // No flag at all: tables persist by default (CONTRACT.md), so a SIGKILLed daemon
    // leaves the whole table it applied, without the owner flag.
    let mut default_args = dnat_args(2000, 81, true);
    default_args.pop();
    let mut d = NftkitDaemon::start(&ns, &default_args);
    assert!(
        poll_until(Duration::from_secs(10), || {
            table_json(&ns, table).as_ref() == Some(&reference[1])
        }),
        "default daemon did not apply:\n{}",
        d.log()
    );
    assert!(
        !ns.table("inet", table)
            .unwrap_or_default()
            .contains("flags owner")
    );
    d.signal(libc::SIGKILL);
    d.wait_exit(Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        table_json(&ns, table).as_ref(),
        Some(&reference[1]),
        "a default daemon's table must outlive SIGKILL"
    );
    // With --persist=false the kernel's owner flag ties the table to the process: SIGKILL
    // takes all of it away, never part of it.
    let mut d = NftkitDaemon::start(&ns, &dnat_args(2000, 81, false));
    d.wait_log("reconciling", Duration::from_secs(10));
    let owned = ns.table("inet", table).expect("daemon's table");
    assert!(
        owned.contains("flags owner"),
        "table should carry the owner flag: {owned}"
    );
    d.signal(libc::SIGKILL);
    d.wait_exit(Duration::from_secs(10));
    assert!(
        poll_until(Duration::from_secs(5), || table_json(&ns, table).is_none()),
        "process-owned table outlived its SIGKILLed daemon: {}",
        short(&table_json(&ns, table))
    );
    eprintln!("dnat daemons: {kills} random kills + 4 deliberate; restarts repaired each time");
}
