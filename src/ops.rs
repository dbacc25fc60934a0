//! Running a parsed command line: build the desired state, then print it (`--dry-run`),
//! apply it, verify it, report status or delete.

use std::io::Write;
use std::path::Path;

use crate::apply;
use crate::backend::{self, Backend};
use crate::cli::{Cli, Command, JobCommand, JobName};
use crate::error::{Error, Result};
use crate::jobs::{dnat, local_address, masquerade, netpol, redirect};
use crate::model::Ruleset;
use crate::render;

/// The process environment, as the config parsers take it.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// `--table`, validated, or `nftkit-<command>`.
pub fn table_name(cli: &Cli, command: &str) -> Result<String> {
    match &cli.table {
        None => Ok(format!("nftkit-{command}")),
        Some(t) => {
            let ok = !t.is_empty()
                && t.len() < 256
                && t.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
            if ok {
                Ok(t.clone())
            } else {
                Err(Error::invalid(
                    "--table",
                    t,
                    "expected a name of letters, digits, '_', '-', '.' starting with a letter",
                ))
            }
        }
    }
}

/// The desired table of a job command, from flags and environment. Validation errors are
/// exit 2; only TO_DOMAIN resolution touches the outside world.
pub fn desired(
    cli: &Cli,
    job: &JobCommand,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Ruleset> {
    match job {
        JobCommand::Redirect(args) => {
            let table = table_name(cli, redirect::COMMAND)?;
            let cfg = redirect::parse(args, env, Path::new("/"))?;
            let targets = redirect::resolve(&cfg)?;
            log_redirect(&cfg, &targets);
            Ok(redirect::build(&cfg, targets, &table))
        }
        JobCommand::Masquerade(args) => {
            masquerade::desired(args, &table_name(cli, masquerade::COMMAND)?)
        }
        JobCommand::LocalAddress(args) => {
            local_address::desired(args, &table_name(cli, local_address::COMMAND)?)
        }
        JobCommand::Dnat(args) => dnat::desired(args, &table_name(cli, dnat::COMMAND)?),
        JobCommand::Netpol(args) => netpol::desired(args, env, &table_name(cli, netpol::COMMAND)?),
    }
}

fn log_redirect(cfg: &redirect::RedirectConfig, t: &redirect::Targets) {
    // Values as users write them in the env vars (`1010`, `10080:80`, CIDRs).
    use crate::parse::comma_list as list;
    tracing::info!(
        ipv4_target = %t.v4.map(|a| a.to_string()).unwrap_or_else(|| "REDIRECT (local)".into()),
        ipv6_target = %t.v6.map(|a| a.to_string()).unwrap_or_else(|| "REDIRECT (local)".into()),
        accept_uids = %list(&cfg.accept_uids),
        accept_gids = %list(&cfg.accept_gids),
        port_mapping = %list(&cfg.mappings),
        ipv4_accept_blocks = %list(&cfg.blocks_v4),
        ipv6_accept_blocks = %list(&cfg.blocks_v6),
        "redirect configuration"
    );
}

/// Owned state on `b` and on every other usable backend, `b`'s first. The other
/// backends are consulted, not required: one that cannot be read is left out (logged).
fn owned_everywhere(b: &mut dyn Backend) -> Result<Vec<backend::OwnedTable>> {
    let mut owned = b.list_owned()?;
    for mut other in b.other_backends() {
        match other.list_owned() {
            Ok(t) => owned.extend(t),
            Err(e) => tracing::debug!(backend = other.name(), error = %e, "cannot list; left out"),
        }
    }
    Ok(owned)
}

/// Run the command line with `backend_for` opening the backend (after validation, so
/// invalid input never touches the kernel). Returns what to print on stdout.
pub fn run(
    cli: &Cli,
    env: &dyn Fn(&str) -> Option<String>,
    backend_for: &mut dyn FnMut() -> Result<Box<dyn Backend>>,
    out: &mut dyn Write,
) -> Result<()> {
    let w = |out: &mut dyn Write, s: &str| {
        out.write_all(s.as_bytes())
            .map_err(|e| Error::runtime(format!("stdout: {e}")))
    };
    if let Some(raw) = &cli.metrics_addr {
        crate::metrics::configure(crate::metrics::parse_addr(raw)?);
    }
    // --dry-run with an iptables backend: the iptables-restore input of every family.
    if cli.dry_run
        && let Some(flavour) = backend::iptables::flavour_of(cli.backend)
        && let Some(job) = job_command(&cli.command)
    {
        match desired(cli, &job, env) {
            Ok(rs) => return w(out, &backend::iptables::restore_script(flavour, &rs)?),
            // local-address without rules: its own dry-run says so below.
            Err(Error::Usage(_)) if matches!(job, JobCommand::LocalAddress(_)) => {}
            Err(e) => return Err(e),
        }
    }
    match &cli.command {
        Command::Doctor { json } => crate::doctor::run(*json, out),
        Command::Detect { json } => {
            let (evidence, decision) = backend::detect::detect(true)?;
            let text = if *json {
                format!("{}\n", backend::detect::report_json(&evidence, &decision))
            } else {
                backend::detect::report_text(&evidence, &decision)
            };
            w(out, &text)
        }
        Command::Redirect(args) => {
            let rs = desired(cli, &JobCommand::Redirect(args.clone()), env)?;
            if cli.dry_run {
                return w(out, &render::nft_script(&rs));
            }
            let mut b = backend_for()?;
            apply::apply_unless_equal(b.as_mut(), &rs)?;
            apply::remove_from_other_backends(b.as_ref(), &rs.table);
            Ok(())
        }
        Command::Masquerade(args) => {
            let table = table_name(cli, masquerade::COMMAND)?;
            if cli.dry_run {
                let rs = masquerade::desired(args, &table)?;
                return w(out, &render::nft_script(&rs));
            }
            masquerade::run(args, &table, env, backend_for)
        }
        Command::LocalAddress(args) => {
            if cli.dry_run {
                let table = table_name(cli, local_address::COMMAND)?;
                return w(out, &local_address::dry_run(args, &table)?);
            }
            local_address::run(args, &table_name(cli, local_address::COMMAND)?, backend_for)
        }
        Command::Dnat(args) => {
            if cli.dry_run {
                return w(out, &dnat::dry_run(args, &table_name(cli, dnat::COMMAND)?)?);
            }
            dnat::run(args, &table_name(cli, dnat::COMMAND)?, backend_for)
        }
        Command::Netpol(args) => {
            if cli.dry_run {
                let rs = desired(cli, &JobCommand::Netpol(args.clone()), env)?;
                return w(out, &render::nft_script(&rs));
            }
            netpol::run(args, env, &table_name(cli, netpol::COMMAND)?, backend_for)
        }
        Command::Verify {
            target: JobCommand::LocalAddress(args),
        } => local_address::verify(
            args,
            &table_name(cli, local_address::COMMAND)?,
            backend_for,
            out,
        ),
        Command::Verify { target } => {
            let rs = desired(cli, target, env)?;
            let mut b = backend_for()?;
            match apply::verify(b.as_mut(), &rs) {
                Ok(()) => w(
                    out,
                    &format!("table inet {} matches the desired state\n", rs.table),
                ),
                Err(Error::Drift { table, diff }) => {
                    w(
                        out,
                        &format!("table inet {table} differs from the desired state:\n{diff}\n"),
                    )?;
                    Err(Error::Drift { table, diff })
                }
                Err(e) => Err(e),
            }
        }
        Command::Delete { command, all } => {
            let tables = match (command, all) {
                (Some(job), false) => vec![table_name(cli, job.as_str())?],
                _ => Vec::new(),
            };
            if cli.dry_run {
                let text = if *all {
                    "delete every table nftkit owns\n".to_string()
                } else {
                    tables
                        .iter()
                        .map(|t| match backend::iptables::flavour_of(cli.backend) {
                            Some(f) => format!(
                                "delete the chains {}-* and their jump rules ({})\n",
                                nft_compat::naming::prefix(t),
                                f.name()
                            ),
                            None => format!("delete table inet {t}\n"),
                        })
                        .collect()
                };
                return w(out, &text);
            }
            let mut b = backend_for()?;
            let tables = if *all {
                b.list_owned()?.into_iter().map(|t| t.table).collect()
            } else {
                tables
            };
            for t in &tables {
                if b.delete(t)? {
                    tracing::info!(backend = b.name(), table = %t, "deleted");
                } else {
                    tracing::info!(backend = b.name(), table = %t, "not present; nothing to delete");
                }
            }
            // The same on every other backend where it exists (never forced there): a
            // job lives on one backend, but a host may still hold an older copy.
            let mut first_error = None;
            for mut other in b.other_backends() {
                let name = other.name();
                let theirs: Vec<String> = match other.list_owned() {
                    Ok(owned) => owned
                        .into_iter()
                        .map(|o| o.table)
                        .filter(|o| *all || tables.contains(o))
                        .collect(),
                    Err(e) => {
                        tracing::debug!(backend = name, error = %e, "cannot list; not consulted");
                        continue;
                    }
                };
                for t in theirs {
                    match other.delete(&t) {
                        Ok(true) => tracing::info!(backend = name, table = %t, "deleted"),
                        Ok(false) => {}
                        Err(e) => {
                            tracing::error!(backend = name, table = %t, error = %e, "not deleted");
                            first_error.get_or_insert(e);
                        }
                    }
                }
            }
            first_error.map_or(Ok(()), Err)
        }
        Command::Completions { shell } => {
            let mut buf = Vec::new();
            clap_complete::generate(
                *shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "nftkit",
                &mut buf,
            );
            out.write_all(&buf)
                .map_err(|e| Error::runtime(format!("stdout: {e}")))
        }
        Command::Man { out: None } => {
            let page =
                crate::man::top_page().map_err(|e| Error::runtime(format!("man page: {e}")))?;
            w(out, &page)
        }
        Command::Man { out: Some(dir) } => {
            let files = crate::man::write_pages(dir)
                .map_err(|e| Error::runtime(format!("man pages in {}: {e}", dir.display())))?;
            let list: String = files.iter().map(|f| format!("{}\n", f.display())).collect();
            w(out, &list)
        }
        Command::Status { json } => {
            let mut b = backend_for()?;
            let owned = owned_everywhere(b.as_mut())?;
            if *json {
                let reports: serde_json::Map<String, serde_json::Value> = owned
                    .iter()
                    .filter_map(|t| {
                        let r = masquerade::read_report(&t.table, env)?;
                        Some((t.table.clone(), serde_json::to_value(r).ok()?))
                    })
                    .collect();
                let v = serde_json::json!({ "backend": b.name(), "tables": owned, "masquerade": reports });
                return w(out, &format!("{v}\n"));
            }
            let mut text = format!("backend: {}\n", b.name());
            if owned.is_empty() {
                text.push_str("no nftkit tables\n");
            }
            for t in owned {
                let what = if t.backend.starts_with("iptables") {
                    format!(
                        "table {} (chains {}-*)",
                        t.table,
                        nft_compat::naming::prefix(&t.table)
                    )
                } else {
                    format!("table inet {}", t.table)
                };
                text.push_str(&format!(
                    "{what}  ({})  backend={} chains={} rules={} sets={} elements={}\n",
                    t.comment, t.backend, t.chains, t.rules, t.sets, t.elements
                ));
                for line in masquerade::status_lines(&t.table, env) {
                    text.push_str(&line);
                    text.push('\n');
                }
            }
            w(out, &text)
        }
    }
}

/// The job a command runs, for the iptables dry-run (every variant listed: a new command
/// must decide).
fn job_command(c: &Command) -> Option<JobCommand> {
    match c {
        Command::Redirect(a) => Some(JobCommand::Redirect(a.clone())),
        Command::Masquerade(a) => Some(JobCommand::Masquerade(a.clone())),
        Command::LocalAddress(a) => Some(JobCommand::LocalAddress(a.clone())),
        Command::Dnat(a) => Some(JobCommand::Dnat(a.clone())),
        Command::Netpol(a) => Some(JobCommand::Netpol(a.clone())),
        Command::Status { .. }
        | Command::Completions { .. }
        | Command::Man { .. }
        | Command::Verify { .. }
        | Command::Delete { .. }
        | Command::Detect { .. }
        | Command::Doctor { .. } => None,
    }
}

/// The real backend for `--backend`.
pub fn real_backend(cli: &Cli) -> Result<Box<dyn Backend>> {
    let mut b = backend::select(cli.backend)?;
    b.set_force(cli.force);
    Ok(b)
}

#[allow(dead_code)]
fn _job_names_cover_commands(j: JobName) -> &'static str {
    j.as_str()
}
