//! The status report a daemon leaves (one JSON file per table and network namespace)
//! and `status` reads.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use super::{COMMAND, DEFAULT_STATE_DIR};

/// What a daemon leaves for `status` (one JSON file per table and network namespace;
/// removed when the daemon exits, unless `--persist` keeps its table too).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Report {
    /// The daemon's process id.
    pub pid: u32,
    /// `--persist`: the table outlives the daemon.
    pub persist: bool,
    pub config_dir: String,
    /// Config files read; empty when the defaults are in use.
    pub files: Vec<String>,
    pub defaults: bool,
    /// Ready = the last config read was valid and applied (None) or not (the error).
    pub config_error: Option<String>,
    pub conflicts: Vec<String>,
}

pub(super) fn state_path(table: &str, env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    // Tables of the same name live in every network namespace: key by the namespace.
    let ns = std::fs::metadata("/proc/self/ns/net").ok()?.ino();
    let dir = env("NFTKIT_STATE_DIR")
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| DEFAULT_STATE_DIR.to_string());
    Some(PathBuf::from(dir).join(format!("{COMMAND}.{table}.net{ns}.json")))
}

pub(super) fn write_report(path: &Option<PathBuf>, r: &Report) {
    let Some(path) = path else { return };
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        // The state directory may be shared: a temporary name of our own, created fresh
        // (O_EXCL) and never through a symlink someone planted (O_NOFOLLOW).
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(&serde_json::to_vec(r).unwrap_or_default())?;
        drop(f);
        std::fs::rename(&tmp, path)
    };
    if let Err(e) = write() {
        tracing::debug!(path = %path.display(), error = %e, "cannot write status report");
    }
}

/// The report of the last run for `table` in this network namespace, if any.
/// A report whose pid is not a process id (0 or over i32::MAX: kill(2) would signal a
/// process group) is not ours: ignored, as a file that does not parse.
pub fn read_report(table: &str, env: &dyn Fn(&str) -> Option<String>) -> Option<Report> {
    let path = state_path(table, env)?;
    let r: Report = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
    if r.pid == 0 || r.pid > i32::MAX as u32 {
        tracing::warn!(path = %path.display(), pid = r.pid, "status report names no valid process id; ignored");
        return None;
    }
    Some(r)
}

/// `status` lines for `table` (indented), from the report a run left.
pub fn status_lines(table: &str, env: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
    let Some(r) = read_report(table, env) else {
        return Vec::new();
    };
    // SAFETY: kill with signal 0 only checks that the process exists.
    let alive = unsafe { libc::kill(r.pid as libc::pid_t, 0) } == 0;
    let who = if alive {
        format!("daemon pid {} running", r.pid)
    } else {
        format!(
            "daemon pid {} not running{}",
            r.pid,
            if r.persist { " (--persist)" } else { "" }
        )
    };
    let mut out = vec![format!(
        "  masquerade: {}; {who}; config {}: {}",
        match (&r.config_error, alive) {
            (None, true) => "ready",
            (None, false) => "stale",
            (Some(_), _) => "NOT READY",
        },
        r.config_dir,
        if r.defaults {
            "no ip-masq* files, defaults".to_string()
        } else {
            r.files.join(", ")
        }
    )];
    if let Some(e) = &r.config_error {
        out.push(format!("  config error (last good rules kept): {e}"));
    }
    for c in &r.conflicts {
        out.push(format!("  conflict: {c}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::masquerade::testutil::*;

    #[test]
    fn status_reports_with_bad_pids_or_planted_links_are_not_trusted() {
        let state = Dir::new();
        let env = state_env(&state);
        let path = state_path("nftkit-masquerade", &env).unwrap();
        let report = |pid: u64| {
            format!(
                r#"{{"pid":{pid},"persist":true,"config_dir":"/c","files":[],"defaults":true,"config_error":null,"conflicts":[]}}"#
            )
        };
        // pid 0 would make kill(0, 0) ask about our own process group: "running".
        for pid in [0u64, i32::MAX as u64 + 1, u32::MAX as u64] {
            std::fs::write(&path, report(pid)).unwrap();
            assert!(
                read_report("nftkit-masquerade", &env).is_none(),
                "pid {pid}"
            );
            assert!(
                status_lines("nftkit-masquerade", &env).is_empty(),
                "pid {pid}"
            );
        }
        std::fs::write(&path, report(1)).unwrap();
        assert_eq!(read_report("nftkit-masquerade", &env).unwrap().pid, 1);

        // A symlink planted at the temporary name is replaced, never written through.
        let victim = state.0.join("victim");
        std::fs::write(&victim, "keep").unwrap();
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        let job = job_with_report(&Dir::new(), &state);
        write_report(&job.report_path, &job.report);
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        assert_eq!(
            read_report("nftkit-masquerade", &env).unwrap().pid,
            std::process::id()
        );
        assert!(!tmp.exists());
    }
}
