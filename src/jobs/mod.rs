//! One module per command: its flags, validated config and pure `build` of the ruleset,
//! and how it runs ([`Job`]). `app` runs every job the same way; a job never looks up at
//! the command line or the dispatcher.
pub mod dnat;
pub mod foreign_drop;
pub mod local_address;
pub mod masquerade;
pub mod netpol;
pub mod redirect;

use crate::apply;
use crate::backend::Lifetime;
use crate::error::Result;
use crate::model::Ruleset;
use crate::parse::go_bool;

/// The process environment as the config parsers read it (a test passes its own).
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Opens the backend `--backend` chose (see [`crate::backend::Opener`]), once per run: a
/// daemon's read-only looks go through the same backend ([`crate::runner::LoopJob::repair`]).
pub type BackendFor<'a> = crate::backend::Opener<'a>;

/// Where a job runs: its table and the environment.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    /// `--table`, or `nftkit-<command>`.
    pub table: &'a str,
    pub env: Env<'a>,
}

/// What `verify` found: `subject` ("table inet T", or an address and a table) and the
/// differences, one line each (empty: in place).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub subject: String,
    /// The subject names several things ("match", not "matches").
    pub plural: bool,
    pub diff: Vec<String>,
}

/// One command that programs a table: its flags are the implementing type. `app` runs
/// `--dry-run`, the command itself and `verify` through these for every job alike;
/// the defaults are the plain one-shot job (build, apply unless equal, done).
pub trait Job {
    /// The command's name; the default table is `nftkit-<name>`.
    fn name(&self) -> &'static str;
    /// Validate flags, environment and config (exit 2 on bad input, nothing touched)
    /// and build the desired table.
    fn desired(&self, cx: Ctx) -> Result<Ruleset>;
    /// `--dry-run`: the desired table in the text `render` makes of it (the nft script or
    /// the iptables-restore input, by backend).
    fn dry_run(&self, cx: Ctx, render: &dyn Fn(&Ruleset) -> Result<String>) -> Result<String> {
        render(&self.desired(cx)?)
    }
    /// Run the command: validate and build first, then apply (once, or reconciling
    /// until SIGTERM for daemons).
    fn run(&self, cx: Ctx, backend_for: BackendFor) -> Result<()> {
        let rs = self.desired(cx)?;
        apply::one_shot(backend_for(Lifetime::Persist)?.as_mut(), &rs)
    }
    /// `verify`: the kernel next to the desired state.
    fn verify(&self, cx: Ctx, backend_for: BackendFor) -> Result<Check> {
        let rs = self.desired(cx)?;
        let diff = apply::drift(backend_for(Lifetime::Persist)?.as_mut(), &rs)?;
        Ok(Check {
            subject: format!("table inet {}", rs.table),
            plural: false,
            diff,
        })
    }
}

/// The daemon flags `local-address` and `dnat` share, in Go's boolean forms
/// (`--daemon`, `--daemon=false`), as the Go tools they replace parse them.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct GoDaemonArgs {
    /// Keep reconciling every --sync-interval; --daemon=false applies once and exits
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_value = "true",
        default_missing_value = "true",
        value_parser = go_bool
    )]
    pub daemon: bool,
    /// On exit (SIGTERM/SIGINT, or after a --daemon=false run) remove what the command set
    /// up: the table, and for local-address the address (never the interface)
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_value = "false",
        default_missing_value = "true",
        value_parser = go_bool
    )]
    pub cleanup: bool,
    /// How often to compare the kernel (table, address) with the desired state: a Go
    /// duration (30s, 1m, 1m30s) or whole seconds
    #[arg(long, value_name = "DURATION", default_value = "1m")]
    pub sync_interval: String,
    /// Keep the table when the daemon dies (SIGKILL, OOM, restart), as upstream's iptables
    /// rules stay; --persist=false ties it to the process (kernel table owner flag)
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_value = "true",
        default_missing_value = "true",
        value_parser = go_bool
    )]
    pub persist: bool,
}

/// What daemons left for `status` (one report per table), as JSON keyed by command and
/// table. A command without reports still has its key (`"masquerade": {}`), so
/// `status --json` keeps one shape.
pub fn status_reports(
    owned: &[crate::backend::OwnedTable],
    env: Env,
) -> Vec<(&'static str, serde_json::Value)> {
    let reports: serde_json::Map<String, serde_json::Value> = owned
        .iter()
        .filter_map(|t| {
            let r = masquerade::read_report(&t.table, env)?;
            Some((t.table.clone(), serde_json::to_value(r).ok()?))
        })
        .collect();
    vec![(masquerade::COMMAND, serde_json::Value::Object(reports))]
}

/// `status` lines (indented) a daemon's report adds under `table`.
pub fn status_lines(table: &str, env: Env) -> Vec<String> {
    masquerade::status_lines(table, env)
}
