//! Running the iptables binaries: the [`Exec`] seam (tests replay outputs through it),
//! [`SystemExec`] (the real thing, every run bounded by a deadline), finding the save and
//! restore binaries of a flavour ([`Tools`]), and turning the tools' failures into exit-1
//! messages that name the binary (and CAP_NET_ADMIN when that is what is missing).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nft_compat::save::{self, Save};
use nft_compat::{Flavour, IpVersion};

use crate::error::{Error, Result};

/// `-w`: seconds to wait for the xtables lock held by another iptables process.
pub(super) const LOCK_WAIT_SECONDS: &str = "10";
/// Searched after `$PATH`: the binaries live in sbin, often missing from a user's PATH.
const SBIN_DIRS: &[&str] = &["/usr/sbin", "/sbin", "/usr/local/sbin"];

/// Runs the iptables binaries; a seam so tests can replay outputs.
pub trait Exec {
    /// Run `program args` with `stdin`; Err only if it could not be started.
    fn run(
        &self,
        program: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> std::io::Result<std::process::Output>;
    /// The full path of `program`, or None if it is not installed.
    fn find(&self, program: &str) -> Option<PathBuf>;
}

/// How long an iptables tool may run before it is killed (exit 1 naming it). Restores
/// wait up to `-w` seconds for the xtables lock first; this bounds everything else (a
/// hung kernel call, a stuck wrapper script), so a daemon's loop never blocks forever.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(30);

/// The real thing: `$PATH` plus the sbin directories; each run is bounded by `timeout`.
pub struct SystemExec {
    pub timeout: Duration,
}

impl Default for SystemExec {
    fn default() -> Self {
        SystemExec {
            timeout: TOOL_TIMEOUT,
        }
    }
}

impl Exec for SystemExec {
    /// Err(TimedOut) when the program outlives `timeout`; it is killed and reaped.
    fn run(
        &self,
        program: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> std::io::Result<std::process::Output> {
        let mut child = Command::new(program)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        // Feed stdin and drain stdout/stderr from threads: a large restore input would
        // otherwise deadlock against a full pipe, and the wait below must stay free to
        // notice the deadline.
        let feeder = match (stdin, child.stdin.take()) {
            (Some(text), Some(mut pipe)) => {
                let text = text.to_string();
                Some(std::thread::spawn(move || pipe.write_all(text.as_bytes())))
            }
            _ => None,
        };
        // Each reader reports when its pipe closes, which is (almost always) when the tool
        // exits: the wait below wakes then instead of polling on a fixed tick.
        let (closed, pipe_closed) = std::sync::mpsc::channel::<()>();
        let drain = |pipe: Option<Box<dyn Read + Send>>| {
            let closed = closed.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                if let Some(mut p) = pipe {
                    let _ = p.read_to_end(&mut buf);
                }
                let _ = closed.send(());
                buf
            })
        };
        let out_reader = drain(child.stdout.take().map(|p| Box::new(p) as _));
        let err_reader = drain(child.stderr.take().map(|p| Box::new(p) as _));
        let deadline = Instant::now() + self.timeout;
        for _ in 0..2 {
            let left = deadline.saturating_duration_since(Instant::now());
            if pipe_closed.recv_timeout(left).is_err() {
                break;
            }
        }
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                // The readers end with the pipes (the tool has no children of its own);
                // they are not joined, so nothing here can block again.
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "did not finish within {} s and was killed",
                        self.timeout.as_secs_f64()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        let stdout = out_reader.join().unwrap_or_default();
        let stderr = err_reader.join().unwrap_or_default();
        if let Some(f) = feeder {
            // A write error (EPIPE) means the tool stopped reading: its exit status and
            // stderr say why.
            let _ = f.join();
        }
        Ok(std::process::Output {
            status,
            stdout,
            stderr,
        })
    }

    fn find(&self, program: &str) -> Option<PathBuf> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain(SBIN_DIRS.iter().map(PathBuf::from))
            .map(|d| d.join(program))
            .find(|p| is_executable(p))
    }
}

fn is_executable(p: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The save and restore binaries of one flavour for both families, found once, and the
/// [`Exec`] that runs them.
pub(super) struct Tools {
    exec: Box<dyn Exec>,
    /// Full paths: (save, restore) per family.
    paths: [(PathBuf, PathBuf); 2],
}

impl Tools {
    /// The binaries of `flavour`; exit 1 naming the package if one is missing.
    pub(super) fn find(flavour: Flavour, exec: Box<dyn Exec>) -> Result<Tools> {
        let mut missing = Vec::new();
        let mut tool = |name: String| match exec.find(&name) {
            Some(p) => p,
            None => {
                missing.push(name.clone());
                PathBuf::from(name)
            }
        };
        let tools = [
            (
                tool(flavour.save_binary(IpVersion::V4)),
                tool(flavour.restore_binary(IpVersion::V4)),
            ),
            (
                tool(flavour.save_binary(IpVersion::V6)),
                tool(flavour.restore_binary(IpVersion::V6)),
            ),
        ];
        if !missing.is_empty() {
            return Err(Error::runtime(format!(
                "backend {} needs {}, not found in $PATH or /usr/sbin: install the Debian package \"{}\" (apt-get install {}), or use --backend nftables",
                flavour.name(),
                missing.join(", "),
                Flavour::DEBIAN_PACKAGE,
                Flavour::DEBIAN_PACKAGE
            )));
        }
        Ok(Tools { exec, paths: tools })
    }

    fn paths(&self, ip: IpVersion) -> &(PathBuf, PathBuf) {
        &self.paths[ip as usize]
    }

    /// `iptables-save` of one family: every table the kernel has, none instantiated by
    /// asking (`-t raw` would load a legacy table, and status/verify must change nothing).
    pub(super) fn save(&self, ip: IpVersion) -> Result<Save> {
        let bin = self.paths(ip).0.to_string_lossy().into_owned();
        let out = self
            .exec
            .run(&bin, &[], None)
            .map_err(|e| run_error(&bin, &e))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(Error::runtime(format!(
                "{bin} failed ({}): {}{}",
                out.status,
                one_line(&stderr),
                privilege_hint(&stderr)
            )));
        }
        save::parse(&String::from_utf8_lossy(&out.stdout))
            .map_err(|e| Error::runtime(format!("{bin}: {e}")))
    }

    pub(super) fn restore(&self, ip: IpVersion, input: &str) -> Result<()> {
        let bin = self.paths(ip).1.to_string_lossy().into_owned();
        let out = self
            .exec
            .run(&bin, &["-w", LOCK_WAIT_SECONDS, "--noflush"], Some(input))
            .map_err(|e| run_error(&bin, &e))?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Legacy says only "line N failed": quote that line of our input.
        let quoted = failed_line(&stderr)
            .and_then(|n| input.lines().nth(n.checked_sub(1)?))
            .map(|l| format!(" [input line: {l}]"))
            .unwrap_or_default();
        Err(Error::runtime(format!(
            "{bin} --noflush refused the {} rules ({}): {}{quoted}{}",
            ip.label(),
            out.status,
            one_line(&stderr),
            privilege_hint(&stderr)
        )))
    }
}

/// Exit 1 for a tool that could not be started or was killed at its deadline.
fn run_error(bin: &str, e: &std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::TimedOut {
        Error::runtime(format!("{bin} {e}"))
    } else {
        Error::runtime(format!("{bin}: cannot run: {e}"))
    }
}

/// N of the first "line N" in an iptables-restore error.
fn failed_line(stderr: &str) -> Option<usize> {
    let i = stderr.find("line ")?;
    let digits: String = stderr[i + 5..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Whether CAP_NET_ADMIN (bit 12) is in this process's effective set (/proc/self/status
/// `CapEff`). Unknown (no /proc) counts as yes: the tools then report for themselves.
pub(super) fn has_cap_net_admin() -> bool {
    const CAP_NET_ADMIN: u32 = 12;
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return true;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_none_or(|caps| caps & (1 << CAP_NET_ADMIN) != 0)
}

/// The iptables tools say "Permission denied (you must be root)" or "Operation not
/// permitted" without naming the capability; nftkit's messages do (CONTRACT.md exit 1).
fn privilege_hint(stderr: &str) -> &'static str {
    const DENIED: [&str; 3] = [
        "Permission denied",
        "you must be root",
        "Operation not permitted",
    ];
    if DENIED.iter().any(|m| stderr.contains(m)) {
        " (needs CAP_NET_ADMIN)"
    } else {
        ""
    }
}

fn one_line(s: &str) -> String {
    let joined: Vec<&str> = s.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    if joined.is_empty() {
        "no message".into()
    } else {
        joined.join(" / ")
    }
}

#[cfg(test)]
mod tests {
    use super::super::IptablesBackend;
    use super::*;
    use crate::backend::Backend;

    /// Nothing is installed.
    struct Bare;

    impl Exec for Bare {
        fn run(&self, p: &str, _: &[&str], _: Option<&str>) -> std::io::Result<Output> {
            Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                p.to_string(),
            ))
        }
        fn find(&self, _: &str) -> Option<PathBuf> {
            None
        }
    }

    use std::process::Output;

    #[test]
    fn missing_binaries_are_exit_1_naming_the_package() {
        for f in [Flavour::Legacy, Flavour::Nft] {
            let e = IptablesBackend::with_exec(f, Box::new(Bare), Default::default())
                .err()
                .expect("must fail");
            assert_eq!(e.exit_code(), 1);
            let msg = e.to_string();
            assert!(msg.contains(f.name()), "{msg}");
            assert!(msg.contains(&f.restore_binary(IpVersion::V6)), "{msg}");
            assert!(msg.contains("Debian package \"iptables\""), "{msg}");
        }
    }

    /// Every tool "installed"; each run is `sleep 10` through the real SystemExec.
    struct Slow(SystemExec);

    impl Exec for Slow {
        fn run(&self, _: &str, _: &[&str], stdin: Option<&str>) -> std::io::Result<Output> {
            self.0.run("sleep", &["10"], stdin)
        }
        fn find(&self, program: &str) -> Option<PathBuf> {
            Some(PathBuf::from(program))
        }
    }

    #[test]
    fn a_hung_tool_is_killed_at_its_deadline() {
        let quick = SystemExec {
            timeout: Duration::from_millis(300),
        };
        let started = Instant::now();
        let e = quick.run("sleep", &["10"], None).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        // Output and stdin still pass through for a tool that finishes in time.
        let out = quick.run("cat", &[], Some("restore input\n")).unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, b"restore input\n");

        // Through the backend: exit 1 naming the tool.
        for f in [Flavour::Legacy, Flavour::Nft] {
            let mut b = IptablesBackend::with_exec(
                f,
                Box::new(Slow(SystemExec {
                    timeout: Duration::from_millis(200),
                })),
                Default::default(),
            )
            .unwrap();
            let started = Instant::now();
            let e = b.read_back("nftkit-t").unwrap_err();
            assert!(started.elapsed() < Duration::from_secs(5));
            assert_eq!(e.exit_code(), 1);
            let msg = e.to_string();
            assert!(
                msg.contains(&f.save_binary(IpVersion::V4)) && msg.contains("killed"),
                "{msg}"
            );
            let e = b.delete("nftkit-t").unwrap_err();
            assert!(e.to_string().contains("killed"), "{e}");
        }
    }

    #[test]
    fn failed_line_is_found() {
        assert_eq!(failed_line("iptables-restore: line 4 failed"), Some(4));
        assert_eq!(
            failed_line("line 17: RULE_INSERT failed (Invalid argument)"),
            Some(17)
        );
        assert_eq!(failed_line("no number"), None);
    }
}
