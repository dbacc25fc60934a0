//! The daemon's reconcile job: re-reads the config dir every interval and rebuilds the
//! table only when the files changed; keeps the status report current.

use std::path::PathBuf;

use super::report::{Report, write_report};
use super::{Loaded, RawFile, Settings, Source, build, load_from, log_loaded, read_config_dir};
use crate::error::{Error, Result};
use crate::model::Ruleset;
use crate::runner;

/// The reconcile job: re-reads the config dir every interval.
pub struct MasqJob {
    pub(super) settings: Settings,
    pub(super) table: String,
    /// Built at startup before the backend opened; handed to the loop's first call.
    pub(super) primed: Option<Ruleset>,
    pub(super) last: Option<Loaded>,
    /// The files read (`None`: no config dir) and the table built from them at the last
    /// successful load: while they stay byte for byte the same, neither is redone.
    pub(super) cache: Option<(Option<Vec<RawFile>>, Ruleset)>,
    pub(super) report_path: Option<PathBuf>,
    pub(super) report: Report,
}

impl MasqJob {
    /// `report_path`: where to keep the `status` report (daemons only), see
    /// [`state_path`](super::report::state_path).
    pub fn new(
        settings: Settings,
        table: &str,
        report_path: Option<PathBuf>,
        persist: bool,
    ) -> Self {
        MasqJob {
            report: Report {
                pid: std::process::id(),
                persist,
                config_dir: settings.config_dir.display().to_string(),
                files: Vec::new(),
                defaults: false,
                config_error: None,
                conflicts: Vec::new(),
            },
            report_path,
            settings,
            table: table.to_string(),
            primed: None,
            last: None,
            cache: None,
        }
    }

    pub(super) fn reload(&mut self) -> Result<Ruleset> {
        let started = std::time::Instant::now();
        let raw = match read_config_dir(&self.settings.config_dir) {
            Ok(raw) => raw,
            Err(e) => return Err(self.config_error(e)),
        };
        if let (Some((cached, rs)), Some(l)) = (&self.cache, &self.last)
            && *cached == raw
        {
            // Same files, same settings: the same Loaded and table as last time.
            let rs = rs.clone();
            tracing::debug!(
                elapsed_us = started.elapsed().as_micros() as u64,
                "config read and built"
            );
            if self.report.config_error.is_some() {
                let r = self.report_for(l);
                self.set_report(r);
            }
            return Ok(rs);
        }
        match load_from(&self.settings, raw.as_deref()) {
            Ok(l) => {
                if self.last.as_ref() != Some(&l) {
                    if self.last.is_some() {
                        tracing::info!("configuration changed");
                    }
                    log_loaded(&l, &self.settings);
                }
                let rs = build(&l.config, &self.settings, &self.table);
                tracing::debug!(
                    elapsed_us = started.elapsed().as_micros() as u64,
                    "config read and built"
                );
                let r = self.report_for(&l);
                self.set_report(r);
                self.last = Some(l);
                self.cache = Some((raw, rs.clone()));
                Ok(rs)
            }
            Err(e) => Err(self.config_error(e)),
        }
    }

    /// The report after loading `l` successfully.
    fn report_for(&self, l: &Loaded) -> Report {
        let mut r = self.report.clone();
        r.files = match &l.source {
            Source::Files(f) => f.iter().map(|p| p.display().to_string()).collect(),
            Source::Defaults { .. } => Vec::new(),
        };
        r.defaults = matches!(l.source, Source::Defaults { .. });
        r.conflicts = l.conflicts.clone();
        r.config_error = None;
        r
    }

    /// Report the config error `e` (the last good rules stay) and hand it back.
    fn config_error(&mut self, e: Error) -> Error {
        let mut r = self.report.clone();
        r.config_error = Some(e.to_string());
        self.set_report(r);
        e
    }

    pub(super) fn set_report(&mut self, r: Report) {
        if r != self.report {
            self.report = r;
            write_report(&self.report_path, &self.report);
        }
    }
}

impl runner::LoopJob for MasqJob {
    fn desired(&mut self) -> Result<Ruleset> {
        match self.primed.take() {
            Some(rs) => Ok(rs),
            None => {
                // Start of one resync; the loop logs "in sync; nothing sent" at its end.
                tracing::debug!(table = %self.table, "resync");
                self.reload()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::backend::Backend;
    use crate::jobs::masquerade::testutil::*;
    use crate::jobs::masquerade::{SET_V4, status_lines};

    #[test]
    fn job_reports_and_keeps_working_after_a_bad_config() {
        use crate::backend::fake::FakeBackend;
        use crate::runner::{LoopJob, LoopStats, step};
        let d = Dir::new();
        let state = Dir::new();
        d.write("ip-masq-agent", "nonMasqueradeCIDRs: [10.0.0.0/8]");
        let env = state_env(&state);
        let mut job = job_with_report(&d, &state);
        let mut b = FakeBackend::new();
        let mut good = job.desired().unwrap();
        b.apply(&good).unwrap();
        let mut stats = LoopStats::default();
        step(&mut b, &mut job, &mut good, &mut stats);
        assert_eq!(b.applies, 1, "unchanged config: nothing sent");
        let lines = status_lines("nftkit-masquerade", &env);
        assert!(
            lines[0].contains("ready") && lines[0].contains("ip-masq-agent"),
            "{lines:?}"
        );

        d.write("ip-masq-agent", "nonMasqueradeCIDRs: [10.0.0.1/8]");
        step(&mut b, &mut job, &mut good, &mut stats);
        assert_eq!((b.applies, stats.errors), (1, 1));
        let lines = status_lines("nftkit-masquerade", &env);
        assert!(lines[0].contains("NOT READY"), "{lines:?}");
        assert!(lines[1].contains("10.0.0.1/8"), "{lines:?}");

        d.write("ip-masq-agent", "nonMasqueradeCIDRs: [10.0.0.0/8]")
            .write(
                "ip-masq-b",
                "nonMasqueradeCIDRs: [10.0.0.0/8, 192.0.2.0/24]",
            );
        step(&mut b, &mut job, &mut good, &mut stats);
        assert_eq!(b.applies, 2, "changed config applied");
        let lines = status_lines("nftkit-masquerade", &env);
        assert!(lines[0].contains("ready"), "{lines:?}");
        assert!(
            lines
                .iter()
                .any(|l| l.contains("conflict: CIDR 10.0.0.0/8")),
            "{lines:?}"
        );
    }

    #[test]
    fn unchanged_files_reuse_the_last_table() {
        let d = Dir::new();
        d.write("ip-masq-agent", "nonMasqueradeCIDRs:\n  - 10.0.0.0/8\n");
        let state = Dir::new();
        let env = state_env(&state);
        let mut job = job_with_report(&d, &state);
        let first = job.reload().unwrap();
        assert_eq!(first.set(SET_V4).unwrap().elements.len(), 1);
        // Mark the kept table: an unchanged config dir hands it back without a rebuild.
        job.cache.as_mut().unwrap().1.comment = "kept".into();
        assert_eq!(job.reload().unwrap().comment, "kept");
        // Any byte changed: read, parsed and built again.
        d.write("ip-masq-agent", "nonMasqueradeCIDRs:\n  - 10.0.0.0/8 \n");
        assert_eq!(job.reload().unwrap(), first);
        job.cache.as_mut().unwrap().1.comment = "kept".into();
        // A bad config is reported; back to the same files: ready again, the kept table.
        d.write("ip-masq-agent", "nonMasqueradeCIDRs: [10.0.0.1/8]");
        assert!(job.reload().is_err());
        assert!(status_lines("nftkit-masquerade", &env)[0].contains("NOT READY"));
        d.write("ip-masq-agent", "nonMasqueradeCIDRs:\n  - 10.0.0.0/8 \n");
        assert_eq!(job.reload().unwrap().comment, "kept");
        let lines = status_lines("nftkit-masquerade", &env);
        assert!(
            lines[0].contains("ready") && !lines[0].contains("NOT"),
            "{lines:?}"
        );
        assert_eq!(lines.len(), 1, "{lines:?}");
        // A new file: a new table.
        d.write("ip-masq-b", "nonMasqueradeCIDRs: [192.0.2.0/24]");
        let rs = job.reload().unwrap();
        assert_eq!(rs.set(SET_V4).unwrap().elements.len(), 2);
        assert_eq!(rs.comment, first.comment);
    }
}
