//! Running a parsed command line, the same way for every job: `--dry-run` prints the
//! desired state, the command applies it (once or as a daemon), `verify` compares,
//! `status` and `delete` cover every backend. What differs per job is behind
//! [`jobs::Job`]; this module only dispatches.

use std::io::Write;

use crate::backend::{self, Backend};
use crate::cli::{Cli, Command};
use crate::error::{Error, Outcome, Result};
use crate::jobs::netpol::{NetpolCommand, NetpolSub};
use crate::jobs::{self, Ctx, Job};
use crate::render;

/// The process environment, as the config parsers take it.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
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

fn write(out: &mut dyn Write, s: &str) -> Result<()> {
    out.write_all(s.as_bytes())
        .map_err(|e| Error::runtime(format!("stdout: {e}")))
}

/// Run the command line with `backend_for` opening the backend (after validation, so
/// invalid input never touches the kernel), printing to `out`. A command that did not
/// fail is [`Outcome::Done`], except `netpol explain` for a denied flow.
pub fn run(
    cli: &Cli,
    env: jobs::Env,
    backend_for: jobs::BackendFor,
    out: &mut dyn Write,
) -> Result<Outcome> {
    if let Command::Netpol(NetpolCommand {
        sub: Some(NetpolSub::Explain(args)),
        ..
    }) = &cli.command
    {
        return jobs::netpol::explain(args, env, out);
    }
    run_command(cli, env, backend_for, out).map(|()| Outcome::Done)
}

fn run_command(
    cli: &Cli,
    env: jobs::Env,
    backend_for: jobs::BackendFor,
    out: &mut dyn Write,
) -> Result<()> {
    if let Some(raw) = &cli.metrics_addr {
        crate::metrics::configure(crate::metrics::parse_addr(raw)?);
    }
    if let Some(job) = cli.command.job() {
        let table = cli.table_for(job.name())?;
        let cx = Ctx { table: &table, env };
        return if cli.dry_run {
            write(out, &dry_run(cli, job, cx)?)
        } else {
            job.run(cx, backend_for)
        };
    }
    match &cli.command {
        Command::Redirect(_)
        | Command::Masquerade(_)
        | Command::LocalAddress(_)
        | Command::Dnat(_)
        | Command::Netpol(_) => Err(Error::runtime("internal error: a job was not dispatched")),
        Command::Doctor { json } => crate::doctor::run(*json, out),
        Command::Detect { json } => {
            let (evidence, decision) = backend::detect::detect(true)?;
            let text = if *json {
                format!("{}\n", backend::detect::report_json(&evidence, &decision))
            } else {
                backend::detect::report_text(&evidence, &decision)
            };
            write(out, &text)
        }
        Command::Verify { target } => {
            let job = target.job();
            let table = cli.table_for(job.name())?;
            verify(job, Ctx { table: &table, env }, backend_for, out)
        }
        Command::Delete { command, all } => {
            let tables = match (command, all) {
                (Some(job), false) => vec![cli.table_for(job.as_str())?],
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
                return write(out, &text);
            }
            delete(
                backend_for(backend::Lifetime::Persist)?.as_mut(),
                &tables,
                *all,
            )
        }
        Command::Completions { shell } => out
            .write_all(&crate::cli::completions(*shell))
            .map_err(|e| Error::runtime(format!("stdout: {e}"))),
        Command::Man { out: None } => {
            let page =
                crate::man::top_page().map_err(|e| Error::runtime(format!("man page: {e}")))?;
            write(out, &page)
        }
        Command::Man { out: Some(dir) } => {
            let files = crate::man::write_pages(dir)
                .map_err(|e| Error::runtime(format!("man pages in {}: {e}", dir.display())))?;
            let list: String = files.iter().map(|f| format!("{}\n", f.display())).collect();
            write(out, &list)
        }
        Command::Status { json } => {
            let mut b = backend_for(backend::Lifetime::Persist)?;
            let owned = owned_everywhere(b.as_mut())?;
            if *json {
                let mut v = serde_json::json!({ "backend": b.name(), "tables": owned });
                for (command, reports) in jobs::status_reports(&owned, env) {
                    v[command] = reports;
                }
                return write(out, &format!("{v}\n"));
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
                for line in jobs::status_lines(&t.table, env) {
                    text.push_str(&line);
                    text.push('\n');
                }
            }
            write(out, &text)
        }
    }
}

/// `--dry-run` of a job: the nft script, or with an iptables backend the
/// iptables-restore input of every family.
fn dry_run(cli: &Cli, job: &dyn Job, cx: Ctx) -> Result<String> {
    match backend::iptables::flavour_of(cli.backend) {
        Some(flavour) => job.dry_run(cx, &|rs| backend::iptables::restore_script(flavour, rs)),
        None => job.dry_run(cx, &|rs| Ok(render::nft_script(rs))),
    }
}

/// `verify JOB`: print whether the kernel holds the job's desired state; a difference is
/// printed and returned as Error::Drift (exit 3).
fn verify(
    job: &dyn Job,
    cx: Ctx,
    backend_for: jobs::BackendFor,
    out: &mut dyn Write,
) -> Result<()> {
    let check = job.verify(cx, backend_for)?;
    let (matches, differs) = if check.plural {
        ("match", "differ")
    } else {
        ("matches", "differs")
    };
    if check.diff.is_empty() {
        return write(
            out,
            &format!("{} {matches} the desired state\n", check.subject),
        );
    }
    let diff = check.diff.join("\n");
    write(
        out,
        &format!(
            "{} {differs} from the desired state:\n{diff}\n",
            check.subject
        ),
    )?;
    Err(Error::Drift {
        table: cx.table.to_string(),
        diff,
    })
}

/// `delete`: `tables` (or every owned one with `all`) on `b`, then the same on every other
/// backend where it exists (never forced there): a job lives on one backend, but a host
/// may still hold an older copy.
fn delete(b: &mut dyn Backend, tables: &[String], all: bool) -> Result<()> {
    let tables = if all {
        b.list_owned()?.into_iter().map(|t| t.table).collect()
    } else {
        tables.to_vec()
    };
    for t in &tables {
        if b.delete(t)? {
            tracing::info!(backend = b.name(), table = %t, "deleted");
        } else {
            tracing::info!(backend = b.name(), table = %t, "not present; nothing to delete");
        }
    }
    let mut first_error = None;
    for mut other in b.other_backends() {
        let name = other.name();
        let theirs: Vec<String> = match other.list_owned() {
            Ok(owned) => owned
                .into_iter()
                .map(|o| o.table)
                .filter(|o| all || tables.contains(o))
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

/// The real backend for `--backend`.
pub fn real_backend(cli: &Cli, lifetime: backend::Lifetime) -> Result<Box<dyn Backend>> {
    backend::select(
        cli.backend,
        backend::Options {
            force: cli.force,
            lifetime,
        },
    )
}
