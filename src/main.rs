use std::process::ExitCode;

use nftkit::app;
use nftkit::cli::{ArgsError, Cli, LogFormat};

fn init_logging(cli: &Cli) {
    let default = if cli.quiet {
        "warn"
    } else {
        match cli.verbose {
            0 => "info",
            1 => "debug",
            _ => "trace",
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("nftkit={default},warn")));
    // Colour only for a terminal: `kubectl logs` shows escape codes as noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_env_filter(filter);
    match cli.log_format {
        LogFormat::Json => builder.json().with_current_span(false).init(),
        LogFormat::Text => builder.with_target(false).init(),
    }
}

/// One line, as every other input error: clap's first paragraph without its prefix, its
/// lines joined, so "required arguments were not provided:" keeps the names that follow.
fn one_line_usage_error(text: &str) -> String {
    let first = text.split("\n\n").next().unwrap_or_default();
    let joined: Vec<&str> = first
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let line = joined.join(" ");
    let line = line.trim_start_matches("error: ");
    if line.is_empty() {
        "invalid arguments".into()
    } else {
        line.to_string()
    }
}

fn main() -> ExitCode {
    let cli = match nftkit::cli::parse_args(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(ArgsError::Klog(e)) => {
            eprintln!("nftkit: {e} (see nftkit --help)");
            return ExitCode::from(2);
        }
        Err(ArgsError::Clap(e)) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                e.exit();
            }
            eprintln!(
                "nftkit: {} (see nftkit --help)",
                one_line_usage_error(&e.to_string())
            );
            return ExitCode::from(2);
        }
    };
    init_logging(&cli);
    let mut stdout = std::io::stdout().lock();
    let result = app::run(
        &cli,
        &app::process_env,
        &mut |lifetime| app::real_backend(&cli, lifetime),
        &mut stdout,
    );
    match result {
        Ok(outcome) => ExitCode::from(outcome.exit_code() as u8),
        Err(e) => {
            match &e {
                // The diff is already on stdout.
                nftkit::error::Error::Drift { table, .. } => {
                    eprintln!("nftkit: drift in table inet {table}")
                }
                other => eprintln!("nftkit: {other}"),
            }
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
