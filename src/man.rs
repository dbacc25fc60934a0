//! Manual pages generated from the clap definitions: one roff page per command
//! (`nftkit.1`, `nftkit-redirect.1`, `nftkit-verify-masquerade.1`, ...), each with its
//! options (the global ones included), an ENVIRONMENT section listing every variable the
//! command reads, EXIT STATUS and SEE ALSO.

use std::io::Write;

use clap::CommandFactory;

use crate::cli::Cli;

/// Variables read outside clap's `env` attributes and help texts: (name, which commands
/// read it (empty = all), meaning).
const EXTRA_ENV: [(&str, &[&str], &str); 2] = [
    (
        "RUST_LOG",
        &[],
        "Log filter (tracing-subscriber syntax, e.g. nftkit=debug); overrides -v and -q.",
    ),
    (
        "NFTKIT_STATE_DIR",
        &["masquerade", "status"],
        "Directory of the daemons' status reports that status reads [default: /run/nftkit].",
    ),
];

const EXIT_STATUS: &str = "0 done; 1 runtime failure (kernel refused, missing CAP_NET_ADMIN, \
backend unavailable; kernel state unchanged); 2 invalid input (a bad flag, variable, config file \
or manifest; nothing sent to the kernel); 3 verify found drift; 4 netpol explain: the flow is denied; doctor: 1 when something on the \
host would interfere with nftkit's rules.";

/// One page: its file name (`nftkit-redirect.1`) and roff text.
pub struct Page {
    pub file: String,
    pub roff: String,
    /// The command's long options, as the page must mention them.
    pub long_flags: Vec<String>,
}

/// Every page: the top level first, then each (nested) subcommand.
pub fn pages() -> std::io::Result<Vec<Page>> {
    let mut root = Cli::command().disable_help_subcommand(true);
    root.build();
    let mut out = Vec::new();
    collect(&root, &[], &mut out)?;
    Ok(out)
}

/// The top-level page alone (`nftkit man` without `--out`).
pub fn top_page() -> std::io::Result<String> {
    Ok(pages()?.remove(0).roff)
}

/// Write every page into `dir` (created if missing); returns the files written.
pub fn write_pages(dir: &std::path::Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir)?;
    pages()?
        .into_iter()
        .map(|p| {
            let path = dir.join(&p.file);
            std::fs::write(&path, p.roff)?;
            Ok(path)
        })
        .collect()
}

fn collect(cmd: &clap::Command, path: &[&str], out: &mut Vec<Page>) -> std::io::Result<()> {
    out.push(page(cmd, path)?);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let mut p = path.to_vec();
        p.push(sub.get_name());
        collect(sub, &p, out)?;
    }
    Ok(())
}

fn page(cmd: &clap::Command, path: &[&str]) -> std::io::Result<Page> {
    let man = clap_mangen::Man::new(cmd.clone());
    let mut buf = Vec::new();
    man.render_title(&mut buf)?;
    man.render_name_section(&mut buf)?;
    man.render_synopsis_section(&mut buf)?;
    man.render_description_section(&mut buf)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut buf)?;
    }
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        man.render_subcommands_section(&mut buf)?;
    }
    if cmd.get_after_help().is_some() || cmd.get_after_long_help().is_some() {
        man.render_extra_section(&mut buf)?;
    }
    let env = environment(cmd, path);
    if !env.is_empty() {
        writeln!(buf, ".SH ENVIRONMENT")?;
        for (name, what) in env {
            writeln!(buf, ".TP\n\\fB{}\\fR\n{}", escape(&name), escape(&what))?;
        }
    }
    writeln!(buf, ".SH \"EXIT STATUS\"\n{}", escape(EXIT_STATUS))?;
    let see_also = see_also(path);
    if !see_also.is_empty() {
        writeln!(buf, ".SH \"SEE ALSO\"\n{}", escape(&see_also.join(", ")))?;
    }
    if cmd.get_version().is_some() {
        man.render_version_section(&mut buf)?;
    }
    let mut file = std::iter::once("nftkit")
        .chain(path.iter().copied())
        .collect::<Vec<_>>()
        .join("-");
    file.push_str(".1");
    Ok(Page {
        file,
        roff: String::from_utf8_lossy(&buf).into_owned(),
        long_flags: cmd
            .get_arguments()
            .filter(|a| !a.is_hide_set())
            .filter_map(|a| a.get_long().map(str::to_string))
            .collect(),
    })
}

/// The variables `cmd` reads: clap `env` attributes, `[env: NAME]` in help texts, and
/// [`EXTRA_ENV`], each once, with the help line it came from.
fn environment(cmd: &clap::Command, path: &[&str]) -> Vec<(String, String)> {
    let mut vars: Vec<(String, String)> = Vec::new();
    let mut add = |name: &str, what: String| {
        if !vars.iter().any(|(n, _)| n == name) {
            vars.push((name.to_string(), what));
        }
    };
    for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
        let help = arg
            .get_long_help()
            .or_else(|| arg.get_help())
            .map(|h| h.to_string())
            .unwrap_or_default();
        let flag = arg
            .get_long()
            .map(|l| format!("--{l}"))
            .unwrap_or_else(|| arg.get_id().to_string());
        let what = format!("Same as {flag}, which wins over it: {}", first_line(&help));
        if let Some(name) = arg.get_env() {
            add(&name.to_string_lossy(), what.clone());
        }
        let mut rest = help.as_str();
        while let Some(i) = rest.find("[env: ") {
            let tail = &rest[i + 6..];
            let end = tail.find(']').unwrap_or(tail.len());
            add(tail[..end].trim(), what.clone());
            rest = &tail[end..];
        }
    }
    // Extras apply to the command itself and to `verify <command>`.
    let name = path.last().copied().unwrap_or("");
    for (var, commands, what) in EXTRA_ENV {
        if commands.is_empty() || commands.contains(&name) {
            add(var, what.to_string());
        }
    }
    vars
}

fn first_line(help: &str) -> String {
    let text: Vec<&str> = help.split_whitespace().collect();
    let text = text.join(" ");
    // Drop the trailing [env: ...] / [default: ...] notes: the section names the variable.
    match text.find(" [") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

fn see_also(path: &[&str]) -> Vec<String> {
    let mut v = Vec::new();
    if !path.is_empty() {
        v.push("nftkit(1)".to_string());
    }
    if path.len() > 1 {
        v.push(format!("nftkit-{}(1)", path[0]));
        v.push(format!("nftkit-{}(1)", path[1]));
    } else if path.len() == 1
        && <crate::cli::JobName as clap::ValueEnum>::value_variants()
            .iter()
            .any(|j| j.as_str() == path[0])
    {
        v.push(format!("nftkit-verify-{}(1)", path[0]));
        v.push("nftkit-delete(1)".into());
    }
    v
}

/// Roff-safe text: backslashes and hyphens escaped, no line starting with a control dot.
fn escape(s: &str) -> String {
    let s = s.replace('\\', "\\e").replace('-', "\\-");
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_comes_from_clap_help_texts_and_extras() {
        let pages = pages().unwrap();
        let redirect = pages
            .iter()
            .find(|p| p.file == "nftkit-redirect.1")
            .unwrap();
        for var in ["ACCEPT_UIDS", "PORT_MAPPING", "NFTKIT_BACKEND", "RUST_LOG"] {
            assert!(redirect.roff.contains(var), "{var}");
        }
        assert!(!redirect.roff.contains("NFTKIT_STATE_DIR"));
        let masq = pages
            .iter()
            .find(|p| p.file == "nftkit-verify-masquerade.1")
            .unwrap();
        assert!(masq.roff.contains("NFTKIT_STATE_DIR"));
        assert!(masq.roff.contains("nftkit\\-masquerade(1)"));
        assert_eq!(escape(".x-y\\"), "\\&.x\\-y\\e");
    }
}
