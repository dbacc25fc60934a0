//! `--metrics-addr`: Prometheus text metrics and health endpoints for the daemons.
//!
//! - `GET /metrics`: applies, drift repairs, errors, last apply duration, readiness, the
//!   failure streak, the time of the last success and elements per set.
//! - `GET /healthz`: 200 while the reconcile loop ticks; 503 once it has not published a
//!   pass for [`STALE_INTERVALS`] intervals (at least [`MIN_STALE`]): a stuck loop restarts
//!   the pod.
//! - `GET /readyz`: 200 while [`LoopStats::is_ready`]: applied with a valid config, fewer
//!   than [`crate::stats::NOT_READY_AFTER_FAILURES`] failed apply or verify attempts in a
//!   row, and the table ours; 503 with the reason otherwise.
//!
//! A loop publishes with [`publish`] after every pass (that is its tick; [`tick`] alone
//! for passes with nothing to publish) into the state [`start`] returned; `start` also
//! records the pass interval `/healthz` measures staleness in.
//!
//! A plain std listener (a few requests a minute need no HTTP stack) that no client can
//! block or bloat: each connection gets its own thread, at most [`MAX_CONNECTIONS`] at
//! once. Beyond that, a newcomer that has sent its request (a probe does at once) closes
//! the oldest connection, so a probe is never queued behind idle clients; one that has
//! sent nothing within [`NEWCOMER_WAIT`] is closed at once, so idle clients reconnecting
//! in a loop cannot push each other, and a probe, out at machine speed; a
//! request head must fit in [`HEAD_LIMIT`] bytes (else 431 and close) and arrive within
//! [`REQUEST_DEADLINE`] of the accept, however slowly it trickles (else 408 and close).

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use crate::error::{Error, Result};
use crate::model::Ruleset;
use crate::stats::LoopStats;

/// Longest request head (request line and headers) read; a longer one is answered 431
/// and the connection closed, so a client cannot grow memory.
pub const HEAD_LIMIT: usize = 8 * 1024;
/// The whole request head must arrive within this of the accept (not per read), and the
/// response is written within it too (at least [`WRITE_GRACE`]).
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(2);
/// Connections served at once. One more that has sent its request closes the oldest
/// (most likely an idle or slow client) rather than waiting behind it.
pub const MAX_CONNECTIONS: usize = 32;
/// How long a newcomer beyond [`MAX_CONNECTIONS`] may take to send its first bytes
/// before it is closed (a probe writes its request right after connecting).
pub const NEWCOMER_WAIT: Duration = Duration::from_millis(10);
/// Serving threads, including those of connections closed but not yet finished (an
/// evicted client's thread is ending): at this many, new connections are closed at once.
const MAX_THREADS: usize = 2 * MAX_CONNECTIONS;
/// Stack of a serving thread: it holds the head buffer and renders a few KB of text.
const THREAD_STACK: usize = 128 * 1024;
/// Time left to write a response once the deadline has passed (408, 431).
pub const WRITE_GRACE: Duration = Duration::from_millis(100);
/// `/healthz` fails once the loop has not ticked for this many intervals ...
pub const STALE_INTERVALS: u32 = 3;
/// ... and at least this long, so short test intervals and one slow pass (a large table's
/// first read-back) do not restart the pod.
pub const MIN_STALE: Duration = Duration::from_secs(10);

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
    /// The loop's pass interval; None (unknown): `/healthz` never goes stale.
    pub interval: Option<Duration>,
    /// The loop's last [`publish`] or [`tick`] (at first: when the state was started).
    pub last_tick: Option<Instant>,
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

    /// How long without a tick makes `/healthz` fail; None when the interval is unknown.
    pub fn stale_after(&self) -> Option<Duration> {
        self.interval
            .map(|i| i.saturating_mul(STALE_INTERVALS).max(MIN_STALE))
    }

    /// `/healthz` at `now`: Err(why) once the loop has not ticked for [`Self::stale_after`].
    pub fn health(&self, now: Instant) -> std::result::Result<(), String> {
        match (self.stale_after(), self.last_tick) {
            (Some(limit), Some(tick)) if now.saturating_duration_since(tick) > limit => {
                Err(format!(
                    "the reconcile loop has not ticked for {:.1} s (limit {:.0} s)",
                    now.saturating_duration_since(tick).as_secs_f64(),
                    limit.as_secs_f64()
                ))
            }
            _ => Ok(()),
        }
    }
}

pub type Shared = Arc<Mutex<State>>;

/// Serve on the configured `--metrics-addr`, if any, for a loop passing every `interval`;
/// the returned state is what the loop updates with [`publish`] (or [`tick`]) each pass.
pub fn start(interval: Duration) -> Result<Shared> {
    let shared = start_if_configured()?;
    set_interval(&shared, interval);
    Ok(shared)
}

/// [`start`] without an interval: `/healthz` never goes stale until [`set_interval`].
pub fn start_if_configured() -> Result<Shared> {
    let shared = Shared::default();
    tick(&shared);
    if let Some(addr) = configured() {
        serve(addr, shared.clone())?;
    }
    Ok(shared)
}

/// The loop's pass interval: `/healthz` fails after [`STALE_INTERVALS`] of them without a
/// tick (at least [`MIN_STALE`]).
pub fn set_interval(shared: &Shared, interval: Duration) {
    if let Ok(mut s) = shared.lock() {
        s.interval = Some(interval);
    }
}

/// Job-specific lines (Prometheus text) appended to `/metrics`; one job per process.
static EXTRA: Mutex<String> = Mutex::new(String::new());

/// Replace the job-specific lines of `/metrics` (netpol's unconvertible-object gauge).
pub fn set_extra(text: String) {
    if let Ok(mut e) = EXTRA.lock() {
        *e = text;
    }
}

/// The loop's state after a pass; also its tick for `/healthz`.
pub fn publish(shared: &Shared, stats: &LoopStats, rs: &Ruleset) {
    if let Ok(mut s) = shared.lock() {
        s.update(stats, rs);
        s.last_tick = Some(Instant::now());
    }
}

/// A pass of the loop with nothing new to publish: keeps `/healthz` answering 200.
pub fn tick(shared: &Shared) {
    if let Ok(mut s) = shared.lock() {
        s.last_tick = Some(Instant::now());
    }
}

/// Bind `addr` and serve from a background thread. Binding failure is a runtime error.
pub fn serve(addr: SocketAddr, state: Shared) -> Result<SocketAddr> {
    let listener = TcpListener::bind(addr)
        .map_err(|e| Error::runtime(format!("--metrics-addr {addr}: {e}")))?;
    let bound = listener.local_addr().unwrap_or(addr);
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || accept_loop(listener, state))
        .map_err(|e| Error::runtime(format!("metrics thread: {e}")))?;
    tracing::info!(address = %bound, "serving /metrics, /healthz, /readyz");
    Ok(bound)
}

/// The connections being served, oldest first.
type Open = Arc<Mutex<VecDeque<(u64, TcpStream)>>>;

/// A serving thread's entry in the open list, removed on drop (also on panic, or when the
/// thread could not be spawned).
struct Slot {
    open: Open,
    id: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut open) = self.open.lock() {
            open.retain(|(id, _)| *id != self.id);
        }
    }
}

fn accept_loop(listener: TcpListener, state: Shared) {
    let open = Open::default();
    // Serving threads; finished ones are joined (so they have really exited) before a
    // new one is counted against MAX_THREADS.
    let mut threads: Vec<std::thread::JoinHandle<()>> = Vec::new();
    let mut next_id = 0u64;
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                // Out of descriptors (EMFILE) or an aborted handshake: do not spin.
                tracing::debug!(error = %e, "metrics accept failed");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let deadline = Instant::now() + REQUEST_DEADLINE;
        let (done, running): (Vec<_>, Vec<_>) = threads.drain(..).partition(|t| t.is_finished());
        threads = running;
        for t in done {
            let _ = t.join();
        }
        if threads.len() >= MAX_THREADS {
            continue; // dropped: closed at once
        }
        let full = open.lock().map_or(true, |o| o.len() >= MAX_CONNECTIONS);
        if full && !sent_something(&stream) {
            continue; // an idle newcomer never displaces anyone: closed at once
        }
        next_id += 1;
        if let Ok(mut open) = open.lock() {
            if open.len() >= MAX_CONNECTIONS
                && let Some((_, oldest)) = open.pop_front()
            {
                // Wakes its thread's blocked read or write; the thread then ends.
                let _ = oldest.shutdown(Shutdown::Both);
            }
            if let Ok(handle) = stream.try_clone() {
                open.push_back((next_id, handle));
            }
        }
        let slot = Slot {
            open: open.clone(),
            id: next_id,
        };
        let state = state.clone();
        match std::thread::Builder::new()
            .name("metrics-conn".into())
            .stack_size(THREAD_STACK)
            .spawn(move || {
                let _slot = slot;
                let _ = answer(&stream, &state, deadline);
            }) {
            Ok(t) => threads.push(t),
            Err(e) => tracing::debug!(error = %e, "metrics connection thread"),
        }
    }
}

/// Whether the client has sent at least one byte within [`NEWCOMER_WAIT`] (nothing is
/// consumed: the request is read as usual afterwards).
fn sent_something(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    let sent = stream.set_read_timeout(Some(NEWCOMER_WAIT)).is_ok()
        && matches!(stream.peek(&mut byte), Ok(n) if n > 0);
    sent && stream.set_read_timeout(None).is_ok()
}

/// Whether `head` holds a whole request head (up to its blank line), looking only at
/// the bytes from `from` on and the three before them, so that a head arriving a byte
/// per read costs linear time, not quadratic.
fn head_complete(head: &[u8], from: usize) -> bool {
    let tail = &head[from.saturating_sub(3)..];
    tail.windows(4).any(|w| w == b"\r\n\r\n") || tail.windows(2).any(|w| w == b"\n\n")
}

fn answer(stream: &TcpStream, state: &Shared, deadline: Instant) -> std::io::Result<()> {
    let mut head = [0u8; HEAD_LIMIT];
    let (mut len, mut scanned) = (0, 0);
    while !head_complete(&head[..len], scanned) {
        scanned = len;
        if len == HEAD_LIMIT {
            return respond(
                stream,
                deadline,
                "431 Request Header Fields Too Large",
                "request head too large\n",
            );
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return respond(stream, deadline, "408 Request Timeout", "request timeout\n");
        }
        stream.set_read_timeout(Some(left))?;
        match (&mut &*stream).read(&mut head[len..]) {
            Ok(0) => return Ok(()),
            Ok(n) => len += n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return respond(stream, deadline, "408 Request Timeout", "request timeout\n");
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let line = head[..len]
        .split(|&b| b == b'\n')
        .next()
        .unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let target = line.split_whitespace().nth(1).unwrap_or("/");
    let path = target.split('?').next().unwrap_or(target);
    let snapshot = state.lock().map(|s| s.clone()).unwrap_or_default();
    let (status, body) = route(path, &snapshot, Instant::now());
    respond(stream, deadline, status, &body)
}

/// Status line and body for `path`.
fn route(path: &str, s: &State, now: Instant) -> (&'static str, String) {
    const UNAVAILABLE: &str = "503 Service Unavailable";
    match path {
        "/healthz" => match s.health(now) {
            Ok(()) => ("200 OK", "ok\n".to_string()),
            Err(why) => (UNAVAILABLE, format!("unhealthy: {why}\n")),
        },
        "/readyz" => match s.stats.not_ready_reason() {
            None => ("200 OK", "ready\n".to_string()),
            Some(why) => (UNAVAILABLE, format!("not ready: {why}\n")),
        },
        "/metrics" => ("200 OK", render(s)),
        _ => ("404 Not Found", "not found\n".to_string()),
    }
}

fn respond(stream: &TcpStream, deadline: Instant, status: &str, body: &str) -> std::io::Result<()> {
    let left = deadline.saturating_duration_since(Instant::now());
    stream.set_write_timeout(Some(left.max(WRITE_GRACE)))?;
    let mut w = stream;
    write!(
        w,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    w.flush()?;
    stream.shutdown(Shutdown::Write)
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
        &format!(
            "1 while /readyz is 200: applied with a valid config, the table ours, and not the last {} apply or verify attempts failed.",
            crate::stats::NOT_READY_AFTER_FAILURES
        ),
        u8::from(s.stats.is_ready()).to_string(),
    );
    metric(
        "nftkit_failed_attempts",
        "gauge",
        "Apply or verify attempts failed in a row (0 after a success).",
        s.stats.failed_attempts.to_string(),
    );
    metric(
        "nftkit_last_success_timestamp_seconds",
        "gauge",
        "Unix time of the last successful apply or in-sync check (0: none yet).",
        format!(
            "{:.3}",
            s.stats
                .last_success
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0)
        ),
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
                failed_attempts: 1,
                last_success: Some(
                    SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_680_000_250),
                ),
                ..LoopStats::default()
            },
            sets: vec![("nomasq-v4".into(), 10_000)],
            ..State::default()
        };
        let text = render(&s);
        for line in [
            "nftkit_applies_total{table=\"nftkit-x\"} 3",
            "nftkit_drift_repairs_total{table=\"nftkit-x\"} 2",
            "nftkit_errors_total{table=\"nftkit-x\"} 1",
            "nftkit_last_apply_seconds{table=\"nftkit-x\"} 0.005000",
            "nftkit_ready{table=\"nftkit-x\"} 1",
            "nftkit_failed_attempts{table=\"nftkit-x\"} 1",
            "nftkit_last_success_timestamp_seconds{table=\"nftkit-x\"} 1764680000.250",
            "nftkit_set_elements{table=\"nftkit-x\",set=\"nomasq-v4\"} 10000",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}:\n{text}");
        }
    }

    #[test]
    fn a_head_ends_at_its_blank_line_however_it_arrives() {
        for head in [
            &b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            &b"GET / HTTP/1.0\n\n"[..],
        ] {
            for chunk in 1..=head.len() {
                // As `answer` reads: `chunk` bytes at a time, scanning only the new ones.
                let (mut len, mut scanned) = (0, 0);
                while !head_complete(&head[..len], scanned) {
                    assert!(len < head.len(), "end missed, chunks of {chunk}");
                    scanned = len;
                    len = (len + chunk).min(head.len());
                }
                assert_eq!(len, head.len(), "ended early, chunks of {chunk}");
            }
        }
        assert!(!head_complete(b"GET / HTTP/1.0\r\nX: y\r\n", 0));
    }

    #[test]
    fn ready_gauge_and_readyz_follow_the_kernel_side_too() {
        let mut s = State {
            table: "nftkit-x".into(),
            stats: LoopStats {
                ready: true,
                failed_attempts: crate::stats::NOT_READY_AFTER_FAILURES,
                ..LoopStats::default()
            },
            ..State::default()
        };
        let now = Instant::now();
        let (status, body) = route("/readyz", &s, now);
        assert!(status.starts_with("503"), "{status}");
        assert_eq!(
            body,
            "not ready: the last 3 apply or verify attempts failed\n"
        );
        assert!(render(&s).contains("nftkit_ready{table=\"nftkit-x\"} 0\n"));
        assert!(
            render(&s)
                .contains("nftkit_last_success_timestamp_seconds{table=\"nftkit-x\"} 0.000\n")
        );
        s.stats.record_success();
        assert!(route("/readyz", &s, now).0.starts_with("200"));
        assert!(render(&s).contains("nftkit_ready{table=\"nftkit-x\"} 1\n"));
        s.stats.table_not_ours = true;
        let (status, body) = route("/readyz", &s, now);
        assert!(
            status.starts_with("503") && body.contains("not managed by nftkit"),
            "{body}"
        );
    }

    #[test]
    fn healthz_fails_once_the_loop_stops_ticking_for_3_intervals() {
        let shared = Shared::default();
        set_interval(&shared, Duration::from_secs(5));
        tick(&shared);
        let s = shared.lock().unwrap().clone();
        let tick = s.last_tick.unwrap();
        assert_eq!(s.stale_after(), Some(Duration::from_secs(15)));
        assert!(
            route("/healthz", &s, tick + Duration::from_secs(14))
                .0
                .starts_with("200")
        );
        let (status, body) = route("/healthz", &s, tick + Duration::from_secs(16));
        assert!(status.starts_with("503"), "{status}");
        assert!(
            body.contains("has not ticked for 16.0 s (limit 15 s)"),
            "{body}"
        );
        // A short interval is stale after MIN_STALE, not after 3 intervals.
        set_interval(&shared, Duration::from_secs(1));
        let s = shared.lock().unwrap().clone();
        assert!(
            route("/healthz", &s, tick + Duration::from_secs(9))
                .0
                .starts_with("200")
        );
        assert!(
            route("/healthz", &s, tick + Duration::from_secs(11))
                .0
                .starts_with("503")
        );
        // Unknown interval: never stale. publish() ticks.
        assert!(
            route(
                "/healthz",
                &State::default(),
                tick + Duration::from_secs(3600)
            )
            .0
            .starts_with("200")
        );
        std::thread::sleep(Duration::from_millis(5));
        let rs = Ruleset {
            table: "nftkit-x".into(),
            comment: String::new(),
            sets: vec![],
            maps: Vec::new(),
            chains: vec![],
        };
        publish(&shared, &LoopStats::default(), &rs);
        assert!(shared.lock().unwrap().last_tick.unwrap() > tick);
    }

    // Real sockets on 127.0.0.1 (an ephemeral port), every connection bounded by timeouts.

    fn server() -> SocketAddr {
        let shared = Shared::default();
        set_interval(&shared, Duration::from_secs(60));
        tick(&shared);
        serve(SocketAddr::from(([127, 0, 0, 1], 0)), shared).unwrap()
    }

    fn connect(addr: SocketAddr) -> TcpStream {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    }

    /// Status line of GET `path` and how long the answer took.
    fn get(addr: SocketAddr, path: &str) -> (String, Duration) {
        let started = Instant::now();
        let mut s = connect(addr);
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        (
            text.lines().next().unwrap_or("").to_string(),
            started.elapsed(),
        )
    }

    /// Whether the server closed `s` (EOF or reset) within `within`, discarding what it sent.
    fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
        s.set_read_timeout(Some(within)).unwrap();
        let mut buf = [0u8; 1024];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) => {
                    return !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    );
                }
            }
        }
    }

    #[test]
    fn healthz_answers_within_1s_while_20_idle_and_a_slow_client_are_connected() {
        let addr = server();
        let idle: Vec<TcpStream> = (0..20).map(|_| connect(addr)).collect();
        let mut slow = connect(addr);
        slow.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(100));
        for _ in 0..3 {
            let (status, took) = get(addr, "/healthz");
            assert!(status.contains("200"), "{status}");
            assert!(took < Duration::from_secs(1), "/healthz took {took:?}");
            let _ = slow.write_all(b"X");
        }
        drop(idle);
    }

    #[test]
    fn a_head_trickling_in_is_cut_at_the_whole_request_deadline() {
        let addr = server();
        let mut slow = connect(addr);
        let started = Instant::now();
        // One byte every 200 ms: each read would be in time; the request as a whole is not.
        let mut closed = false;
        for b in b"GET /healthz HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
            if slow.write_all(&[*b]).is_err()
                || closed_within(&mut slow, Duration::from_millis(200))
            {
                closed = true;
                break;
            }
        }
        let took = started.elapsed();
        assert!(closed, "still open after {took:?}");
        assert!(
            took >= REQUEST_DEADLINE - Duration::from_millis(300)
                && took < REQUEST_DEADLINE + Duration::from_secs(1),
            "closed after {took:?}"
        );
    }

    #[test]
    fn a_head_over_8_kib_closes_the_connection() {
        let addr = server();
        let mut s = connect(addr);
        let started = Instant::now();
        // Far more than any socket buffer holds: writing must fail once the server closed.
        let chunk = [b'A'; 64 * 1024];
        let mut sent = 0usize;
        while sent < 256 << 20 {
            match s.write(&chunk) {
                Ok(n) => sent += n,
                Err(_) => break,
            }
        }
        assert!(sent < 64 << 20, "the server kept reading: {sent} bytes");
        assert!(
            started.elapsed() < REQUEST_DEADLINE,
            "{:?}",
            started.elapsed()
        );
        let (status, _) = get(addr, "/healthz");
        assert!(status.contains("200"), "{status}");
    }

    #[test]
    fn a_head_just_over_the_cap_is_answered_431() {
        let addr = server();
        let mut s = connect(addr);
        let mut head = b"GET /healthz HTTP/1.1\r\nX-Big: ".to_vec();
        head.resize(HEAD_LIMIT, b'a');
        s.write_all(&head).unwrap();
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        assert!(text.starts_with("HTTP/1.1 431 "), "{text:?}");
    }

    #[test]
    fn beyond_the_cap_idle_newcomers_are_closed_and_a_probe_closes_the_oldest() {
        let addr = server();
        let mut idle: Vec<TcpStream> = (0..MAX_CONNECTIONS + 8).map(|_| connect(addr)).collect();
        // The 8 beyond the cap sent nothing: closed at once, nobody displaced.
        let last = idle.len() - 1;
        assert!(
            closed_within(&mut idle[last], Duration::from_millis(500)),
            "an idle newcomer beyond the cap stays open"
        );
        assert!(
            !closed_within(&mut idle[0], Duration::from_millis(100)),
            "an idle newcomer displaced the oldest"
        );
        // A probe sends its request at once: it closes the oldest and is answered.
        let (status, took) = get(addr, "/healthz");
        assert!(
            status.contains("200") && took < Duration::from_secs(1),
            "{status} {took:?}"
        );
        assert!(
            closed_within(&mut idle[0], Duration::from_millis(500)),
            "the oldest stays open"
        );
        assert!(
            !closed_within(&mut idle[MAX_CONNECTIONS - 1], Duration::from_millis(100)),
            "the newest within the cap was closed"
        );
    }
}
