//! `--metrics-addr`: Prometheus text metrics and health endpoints for the daemons.
//!
//! `GET /metrics` — applies, drift repairs, errors, last apply duration, readiness and
//! elements per set; `GET /healthz` — 200 while the process runs; `GET /readyz` — 200
//! once the first apply succeeded and the last config read was valid, 503 otherwise.
//! A plain std listener on its own thread: a few requests a minute need no HTTP stack.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::daemon::LoopStats;
use crate::error::{Error, Result};
use crate::model::Ruleset;

/// Set once from the command line, read by `daemon::run` (keeps every job's loop options
/// untouched by an option that belongs to all of them).
static ADDRESS: OnceLock<SocketAddr> = OnceLock::new();

/// Parse `--metrics-addr`: `PORT` (on 127.0.0.1) or `ADDR:PORT` / `[V6]:PORT`.
pub fn parse_addr(raw: &str) -> Result<SocketAddr> {
    let raw = raw.trim();
    let bad = || {
        Error::invalid(
            "--metrics-addr",
            raw,
            "expected PORT or ADDRESS:PORT, e.g. 9153 or 127.0.0.1:9153",
        )
    };
    if let Ok(port) = raw.parse::<u16>() {
        return if port == 0 {
            Err(bad())
        } else {
            Ok(SocketAddr::from(([127, 0, 0, 1], port)))
        };
    }
    raw.parse::<SocketAddr>().map_err(|_| bad())
}

pub fn configure(addr: SocketAddr) {
    let _ = ADDRESS.set(addr);
}

pub fn configured() -> Option<SocketAddr> {
    ADDRESS.get().copied()
}

/// What the endpoints report; the loop updates it after every step.
#[derive(Debug, Default, Clone)]
pub struct State {
    pub table: String,
    pub stats: LoopStats,
    /// (set name, element count) of the desired table.
    pub sets: Vec<(String, usize)>,
}

impl State {
    pub fn update(&mut self, stats: &LoopStats, rs: &Ruleset) {
        self.table = rs.table.clone();
        self.stats = stats.clone();
        self.sets = rs
            .sets
            .iter()
            .map(|s| (s.name.clone(), s.elements.len()))
            .collect();
    }
}

pub type Shared = Arc<Mutex<State>>;

/// Serve on the configured `--metrics-addr`, if any; the returned state is what the loop
/// updates with [`publish`].
pub fn start_if_configured() -> Result<Shared> {
    let shared = Shared::default();
    if let Some(addr) = configured() {
        serve(addr, shared.clone())?;
    }
    Ok(shared)
}

/// Job-specific lines (Prometheus text) appended to `/metrics`; one job per process.
static EXTRA: Mutex<String> = Mutex::new(String::new());

/// Replace the job-specific lines of `/metrics` (netpol's unconvertible-object gauge).
pub fn set_extra(text: String) {
    if let Ok(mut e) = EXTRA.lock() {
        *e = text;
    }
}

pub fn publish(shared: &Shared, stats: &LoopStats, rs: &Ruleset) {
    if let Ok(mut s) = shared.lock() {
        s.update(stats, rs);
    }
}

/// Bind `addr` and serve from a background thread. Binding failure is a runtime error.
pub fn serve(addr: SocketAddr, state: Shared) -> Result<SocketAddr> {
    let listener = TcpListener::bind(addr)
        .map_err(|e| Error::runtime(format!("--metrics-addr {addr}: {e}")))?;
    let bound = listener.local_addr().unwrap_or(addr);
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = answer(stream, &state);
            }
        })
        .map_err(|e| Error::runtime(format!("metrics thread: {e}")))?;
    tracing::info!(address = %bound, "serving /metrics, /healthz, /readyz");
    Ok(bound)
}

fn answer(stream: TcpStream, state: &Shared) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/");
    let snapshot = state.lock().map(|s| s.clone()).unwrap_or_default();
    let (status, body) = match path {
        "/healthz" => ("200 OK", "ok\n".to_string()),
        "/readyz" if snapshot.stats.ready => ("200 OK", "ready\n".to_string()),
        "/readyz" => ("503 Service Unavailable", "not ready\n".to_string()),
        "/metrics" => ("200 OK", render(&snapshot)),
        _ => ("404 Not Found", "not found\n".to_string()),
    };
    let mut w = &stream;
    write!(
        w,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Prometheus text exposition format.
pub fn render(s: &State) -> String {
    let t = &s.table;
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: String| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{table=\"{t}\"}} {value}\n"
        ));
    };
    metric(
        "nftkit_applies_total",
        "counter",
        "Batches committed (first apply and repairs).",
        s.stats.applies.to_string(),
    );
    metric(
        "nftkit_drift_repairs_total",
        "counter",
        "Re-applies after the kernel differed from the desired state.",
        s.stats.drift_repairs.to_string(),
    );
    metric(
        "nftkit_errors_total",
        "counter",
        "Invalid configs, failed read-backs and refused applies.",
        s.stats.errors.to_string(),
    );
    metric(
        "nftkit_last_apply_seconds",
        "gauge",
        "Duration of the last committed apply.",
        format!(
            "{:.6}",
            s.stats.last_apply.map(|d| d.as_secs_f64()).unwrap_or(0.0)
        ),
    );
    metric(
        "nftkit_ready",
        "gauge",
        "1 once applied and the last config was valid.",
        u8::from(s.stats.ready).to_string(),
    );
    out.push_str("# HELP nftkit_set_elements Elements per set of the desired table.\n# TYPE nftkit_set_elements gauge\n");
    for (name, n) in &s.sets {
        out.push_str(&format!(
            "nftkit_set_elements{{table=\"{t}\",set=\"{name}\"}} {n}\n"
        ));
    }
    if let Ok(e) = EXTRA.lock() {
        out.push_str(&e);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(parse_addr("9153").unwrap().to_string(), "127.0.0.1:9153");
        assert_eq!(
            parse_addr("0.0.0.0:9153").unwrap().to_string(),
            "0.0.0.0:9153"
        );
        assert_eq!(parse_addr("[::1]:9153").unwrap().to_string(), "[::1]:9153");
        for bad in ["0", "70000", "localhost:1", "1.2.3.4", ""] {
            let e = parse_addr(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2);
            assert!(e.to_string().contains("--metrics-addr"));
        }
    }

    #[test]
    fn exposition_has_every_metric() {
        let s = State {
            table: "nftkit-x".into(),
            stats: LoopStats {
                applies: 3,
                drift_repairs: 2,
                errors: 1,
                ready: true,
                last_apply: Some(Duration::from_millis(5)),
            },
            sets: vec![("nomasq-v4".into(), 10_000)],
        };
        let text = render(&s);
        for line in [
            "nftkit_applies_total{table=\"nftkit-x\"} 3",
            "nftkit_drift_repairs_total{table=\"nftkit-x\"} 2",
            "nftkit_errors_total{table=\"nftkit-x\"} 1",
            "nftkit_last_apply_seconds{table=\"nftkit-x\"} 0.005000",
            "nftkit_ready{table=\"nftkit-x\"} 1",
            "nftkit_set_elements{table=\"nftkit-x\",set=\"nomasq-v4\"} 10000",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}:\n{text}");
        }
    }
}
