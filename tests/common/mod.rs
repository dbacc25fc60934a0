//! Shared helpers for the end-to-end tests: throw-away network namespaces,
//! veth links, in-process TCP/UDP servers living inside a namespace, socat
//! clients running as a chosen uid/gid, and runners for `nft` and `nftkit`.
//!
//! Everything here needs root (CAP_SYS_ADMIN for `ip netns`, CAP_NET_ADMIN
//! for nf_tables). Nothing touches the root namespace: links are created
//! directly inside the test namespaces, and every namespace (plus its
//! `/etc/netns/NAME` directory) is removed by a `Drop` guard, also when a
//! test panics. Names are unique per process and counter, so tests can run
//! in parallel.

#![allow(dead_code)]

/// Golden `--dry-run` machinery shared by the golden test files.
pub mod golden;

use std::fmt;
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The binary under test.
pub const NFTKIT: &str = env!("CARGO_BIN_EXE_nftkit");

/// Upper bound for helper commands (`ip`, `nft`, `nftkit`).
pub const CMD_TIMEOUT: Duration = Duration::from_secs(30);

/// Environment variables nftkit reads; removed from every nftkit run so the
/// caller's environment cannot leak into a test.
pub const NFTKIT_ENV: &[&str] = &[
    "ACCEPT_UIDS",
    "ACCEPT_GIDS",
    "PORT_MAPPING",
    "TO_IPV4_ADDR",
    "TO_IPV6_ADDR",
    "TO_DOMAIN",
    "IPV4_ACCEPT_BLOCKS",
    "IPV6_ACCEPT_BLOCKS",
    "ACCEPT_BLOCKS",
    "NFTKIT_BACKEND",
    "NFTKIT_TABLE",
    "NFTKIT_LOG_FORMAT",
    "RUST_LOG",
    "NODE_NAME",
    "KUBECONFIG",
];

// ---------------------------------------------------------------------------
// Running commands
// ---------------------------------------------------------------------------

/// Result of one finished (or killed) command.
#[derive(Debug, Clone)]
pub struct Out {
    /// The command line, for messages.
    pub cmd: String,
    /// Exit code; `None` if killed by a signal or by our timeout.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
}

impl Out {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl fmt::Display for Out {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "command: {}\nexit: {:?}{}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--------------",
            self.cmd,
            self.code,
            if self.timed_out {
                " (timed out, killed)"
            } else {
                ""
            },
            self.stdout.trim_end(),
            self.stderr.trim_end()
        )
    }
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@[]+%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// A command to run with a deadline.
pub struct Cmd {
    argv: Vec<String>,
    env: Vec<(String, String)>,
    env_remove: Vec<String>,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
}

impl Cmd {
    pub fn new<S: AsRef<str>>(argv: &[S]) -> Cmd {
        assert!(!argv.is_empty(), "empty command");
        Cmd {
            argv: argv.iter().map(|s| s.as_ref().to_string()).collect(),
            env: Vec::new(),
            env_remove: Vec::new(),
            stdin: None,
            timeout: CMD_TIMEOUT,
        }
    }

    pub fn env(mut self, k: &str, v: &str) -> Cmd {
        self.env.push((k.to_string(), v.to_string()));
        self
    }

    pub fn envs(mut self, kv: &[(&str, &str)]) -> Cmd {
        for (k, v) in kv {
            self.env.push((k.to_string(), v.to_string()));
        }
        self
    }

    pub fn env_remove(mut self, k: &str) -> Cmd {
        self.env_remove.push(k.to_string());
        self
    }

    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> Cmd {
        self.stdin = Some(data.into());
        self
    }

    pub fn timeout(mut self, t: Duration) -> Cmd {
        self.timeout = t;
        self
    }

    fn describe(&self) -> String {
        let mut s = String::new();
        for (k, v) in &self.env {
            s.push_str(&format!("{}={} ", k, shell_quote(v)));
        }
        s.push_str(
            &self
                .argv
                .iter()
                .map(|a| shell_quote(a))
                .collect::<Vec<_>>()
                .join(" "),
        );
        s
    }

    /// Runs the command; kills it (SIGKILL) once the timeout passes.
    pub fn run(self) -> Out {
        let desc = self.describe();
        let mut c = Command::new(&self.argv[0]);
        c.args(&self.argv[1..]);
        for k in &self.env_remove {
            c.env_remove(k);
        }
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = match c.spawn() {
            Ok(ch) => ch,
            Err(e) => {
                return Out {
                    cmd: desc,
                    code: None,
                    stdout: String::new(),
                    stderr: format!("spawn failed: {e}"),
                    timed_out: false,
                };
            }
        };
        if let Some(data) = self.stdin {
            let mut si = child.stdin.take().expect("stdin piped");
            thread::spawn(move || {
                let _ = si.write_all(&data);
            });
        }
        let mut so = child.stdout.take().expect("stdout piped");
        let mut se = child.stderr.take().expect("stderr piped");
        let t_out = thread::spawn(move || {
            let mut b = Vec::new();
            let _ = so.read_to_end(&mut b);
            b
        });
        let t_err = thread::spawn(move || {
            let mut b = Vec::new();
            let _ = se.read_to_end(&mut b);
            b
        });
        let deadline = Instant::now() + self.timeout;
        let mut timed_out = false;
        let status = loop {
            match child.try_wait() {
                Ok(Some(st)) => break Some(st),
                Ok(None) => {
                    if Instant::now() >= deadline {
                        timed_out = true;
                        let _ = child.kill();
                        break child.wait().ok();
                    }
                    thread::sleep(Duration::from_millis(5));
                }
                Err(_) => break None,
            }
        };
        let stdout = String::from_utf8_lossy(&t_out.join().unwrap_or_default()).into_owned();
        let stderr = String::from_utf8_lossy(&t_err.join().unwrap_or_default()).into_owned();
        Out {
            cmd: desc,
            code: if timed_out {
                None
            } else {
                status.and_then(|s| s.code())
            },
            stdout,
            stderr,
            timed_out,
        }
    }
}

/// Runs a command in the root namespace (only `ip netns ...` / `ip -n ...`
/// style commands that act on our namespaces).
pub fn run<S: AsRef<str>>(argv: &[S]) -> Out {
    Cmd::new(argv).run()
}

/// Runs a command and panics with its output if it fails.
pub fn must<S: AsRef<str>>(argv: &[S]) -> Out {
    let out = run(argv);
    assert!(out.success(), "command failed:\n{out}");
    out
}

// ---------------------------------------------------------------------------
// Namespaces
// ---------------------------------------------------------------------------

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A short name unique within this machine: `nk<pid>x<n>`.
pub fn unique_name() -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("nk{}x{}", std::process::id(), n)
}

/// A named network namespace (`ip netns add`), deleted on drop together with
/// its `/etc/netns/NAME` directory. `lo` is up.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new() -> Netns {
        let name = unique_name();
        must(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.must(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// `/etc/netns/NAME`: files here are bind-mounted over `/etc/NAME` by
    /// `ip netns exec`.
    pub fn etc_dir(&self) -> PathBuf {
        PathBuf::from("/etc/netns").join(&self.name)
    }

    /// Writes `/etc/netns/NAME/<file>`, which `ip netns exec` bind-mounts
    /// over `/etc/<file>` (e.g. `hosts`, `resolv.conf`).
    pub fn write_etc(&self, file: &str, content: &str) {
        let dir = self.etc_dir();
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let p = dir.join(file);
        fs::write(&p, content).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    }

    /// The bind-mountable path of this namespace.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.name)
    }

    /// `ip netns exec NAME argv...`
    pub fn cmd<S: AsRef<str>>(&self, argv: &[S]) -> Cmd {
        let mut v: Vec<String> = vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            self.name.clone(),
        ];
        v.extend(argv.iter().map(|s| s.as_ref().to_string()));
        Cmd::new(&v)
    }

    pub fn run<S: AsRef<str>>(&self, argv: &[S]) -> Out {
        self.cmd(argv).run()
    }

    pub fn must<S: AsRef<str>>(&self, argv: &[S]) -> Out {
        let out = self.run(argv);
        assert!(
            out.success(),
            "command in netns {} failed:\n{out}",
            self.name
        );
        out
    }

    /// `nft ARGS` inside the namespace.
    pub fn nft<S: AsRef<str>>(&self, args: &[S]) -> Out {
        let mut v = vec!["nft".to_string()];
        v.extend(args.iter().map(|s| s.as_ref().to_string()));
        self.run(&v)
    }

    /// Loads an nft script (`nft -f -`), panicking on failure.
    pub fn nft_load(&self, script: &str) -> Out {
        let out = self.cmd(&["nft", "-f", "-"]).stdin(script).run();
        assert!(
            out.success(),
            "nft -f failed in {}:\n{out}\n--- script ---\n{script}",
            self.name
        );
        out
    }

    /// `nft list ruleset` text.
    pub fn ruleset(&self) -> String {
        let out = self.nft(&["list", "ruleset"]);
        assert!(out.success(), "nft list ruleset failed:\n{out}");
        out.stdout
    }

    /// `nft -j list ruleset` with every `"handle"` member removed, pretty
    /// printed (so a failed comparison shows a readable diff).
    pub fn ruleset_json_no_handles(&self) -> String {
        let out = self.nft(&["-j", "list", "ruleset"]);
        assert!(out.success(), "nft -j list ruleset failed:\n{out}");
        serde_json::to_string_pretty(&strip_json_key(&out.stdout, "handle"))
            .expect("serialise JSON")
    }

    /// `nft list table FAMILY NAME`, or `None` if it does not exist.
    pub fn table(&self, family: &str, name: &str) -> Option<String> {
        let out = self.nft(&["list", "table", family, name]);
        out.success().then_some(out.stdout)
    }

    /// Runs nftkit inside the namespace with a clean nftkit environment plus
    /// `env`.
    pub fn nftkit<S: AsRef<str>>(&self, env: &[(&str, &str)], args: &[S]) -> Out {
        let mut v = vec![NFTKIT.to_string()];
        v.extend(args.iter().map(|s| s.as_ref().to_string()));
        let mut c = self.cmd(&v);
        for k in NFTKIT_ENV {
            c = c.env_remove(k);
        }
        c.envs(env).run()
    }

    /// Runs nftkit and panics (with its output and the ruleset) unless it
    /// exits 0.
    pub fn nftkit_ok<S: AsRef<str>>(&self, env: &[(&str, &str)], args: &[S]) -> Out {
        let out = self.nftkit(env, args);
        assert!(
            out.success(),
            "nftkit failed in netns {}:\n{out}\n--- nft list ruleset ---\n{}",
            self.name,
            self.nft(&["list", "ruleset"]).stdout
        );
        out
    }

    /// Runs `f` on a helper thread that has switched into this namespace
    /// (setns is per thread); sockets created there stay in the namespace.
    pub fn enter<T: Send, F: FnOnce() -> T + Send>(&self, f: F) -> T {
        let path = self.path();
        thread::scope(|s| {
            s.spawn(move || {
                let file = fs::File::open(&path)
                    .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .unwrap_or_else(|e| panic!("setns {}: {e}", path.display()));
                f()
            })
            .join()
            .expect("netns helper thread panicked")
        })
    }
}

impl Default for Netns {
    fn default() -> Self {
        Netns::new()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run(&["ip", "netns", "del", &self.name]);
        let dir = self.etc_dir();
        if dir.exists() {
            let _ = fs::remove_dir_all(&dir);
        }
    }
}

/// Creates a veth pair `a_if` (in `a`) <-> `b_if` (in `b`) and brings both
/// ends up. The links are created inside the namespaces, never in the root
/// namespace, so fixed names do not collide between tests.
pub fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) {
    a.must(&[
        "ip", "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", &b.name,
    ]);
    a.must(&["ip", "link", "set", a_if, "up"]);
    b.must(&["ip", "link", "set", b_if, "up"]);
}

/// Adds an address (`nodad` for IPv6, so it is usable at once).
pub fn addr_add(ns: &Netns, dev: &str, cidr: &str) {
    if cidr.contains(':') {
        ns.must(&["ip", "-6", "addr", "add", cidr, "dev", dev, "nodad"]);
    } else {
        ns.must(&["ip", "addr", "add", cidr, "dev", dev]);
    }
}

/// Adds a route `dst via gw`.
pub fn route_add(ns: &Netns, dst: &str, gw: &str) {
    if dst.contains(':') {
        ns.must(&["ip", "-6", "route", "add", dst, "via", gw]);
    } else {
        ns.must(&["ip", "route", "add", dst, "via", gw]);
    }
}

/// Parses `json` and removes every member named `key`, at any depth
/// (e.g. the kernel-assigned `"handle"` of `nft -j` output).
pub fn strip_json_key(json: &str, key: &str) -> serde_json::Value {
    fn strip(v: &mut serde_json::Value, key: &str) {
        match v {
            serde_json::Value::Array(a) => a.iter_mut().for_each(|x| strip(x, key)),
            serde_json::Value::Object(m) => {
                m.remove(key);
                m.values_mut().for_each(|x| strip(x, key));
            }
            _ => {}
        }
    }
    let mut v: serde_json::Value =
        serde_json::from_str(json).unwrap_or_else(|e| panic!("bad JSON ({e}):\n{json}"));
    strip(&mut v, key);
    v
}

// ---------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------

/// How long a server thread lives at most, even if never dropped.
const SERVER_LIFETIME: Duration = Duration::from_secs(300);

/// One accepted TCP connection.
#[derive(Debug, Clone)]
pub struct Hit {
    pub tag: String,
    pub local: SocketAddr,
    pub peer: SocketAddr,
}

/// TCP listeners inside a namespace; each answers every connection with its
/// tag followed by a newline, then closes. Served by one thread that polls
/// the non-blocking listeners; stopped on drop.
pub struct TcpServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    hits: Arc<Mutex<Vec<Hit>>>,
}

impl TcpServer {
    /// Binds every `(address, tag)` inside `ns` and starts serving.
    pub fn start(ns: &Netns, listeners: &[(SocketAddr, &str)]) -> TcpServer {
        let specs: Vec<(SocketAddr, String)> =
            listeners.iter().map(|(a, t)| (*a, t.to_string())).collect();
        let bound: Vec<(TcpListener, String)> = ns.enter(move || {
            specs
                .into_iter()
                .map(|(a, t)| {
                    let l = TcpListener::bind(a).unwrap_or_else(|e| panic!("bind tcp {a}: {e}"));
                    l.set_nonblocking(true).expect("set_nonblocking");
                    (l, t)
                })
                .collect()
        });
        let stop = Arc::new(AtomicBool::new(false));
        let hits = Arc::new(Mutex::new(Vec::new()));
        let (stop2, hits2) = (stop.clone(), hits.clone());
        let thread = thread::spawn(move || {
            let end = Instant::now() + SERVER_LIFETIME;
            while !stop2.load(Ordering::SeqCst) && Instant::now() < end {
                let mut idle = true;
                for (l, tag) in &bound {
                    match l.accept() {
                        Ok((mut s, peer)) => {
                            idle = false;
                            let local = s.local_addr().unwrap_or(peer);
                            let _ = s.set_nonblocking(false);
                            let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
                            let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                            let _ = s.write_all(format!("{tag}\n").as_bytes());
                            let _ = s.shutdown(Shutdown::Write);
                            // Drain until the client closes, so close() sends
                            // FIN rather than RST.
                            let mut buf = [0u8; 512];
                            while let Ok(n) = s.read(&mut buf) {
                                if n == 0 {
                                    break;
                                }
                            }
                            hits2.lock().unwrap().push(Hit {
                                tag: tag.clone(),
                                local,
                                peer,
                            });
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                        Err(_) => {}
                    }
                }
                if idle {
                    thread::sleep(Duration::from_millis(10));
                }
            }
        });
        TcpServer {
            stop,
            thread: Some(thread),
            hits,
        }
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One received datagram.
#[derive(Debug, Clone)]
pub struct Datagram {
    pub tag: String,
    pub local: SocketAddr,
    pub peer: SocketAddr,
    pub data: String,
}

/// UDP sockets inside a namespace that record what they receive.
pub struct UdpServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    got: Arc<Mutex<Vec<Datagram>>>,
}

impl UdpServer {
    pub fn start(ns: &Netns, sockets: &[(SocketAddr, &str)]) -> UdpServer {
        let specs: Vec<(SocketAddr, String)> =
            sockets.iter().map(|(a, t)| (*a, t.to_string())).collect();
        let bound: Vec<(UdpSocket, String)> = ns.enter(move || {
            specs
                .into_iter()
                .map(|(a, t)| {
                    let s = UdpSocket::bind(a).unwrap_or_else(|e| panic!("bind udp {a}: {e}"));
                    s.set_nonblocking(true).expect("set_nonblocking");
                    (s, t)
                })
                .collect()
        });
        let stop = Arc::new(AtomicBool::new(false));
        let got = Arc::new(Mutex::new(Vec::new()));
        let (stop2, got2) = (stop.clone(), got.clone());
        let thread = thread::spawn(move || {
            let end = Instant::now() + SERVER_LIFETIME;
            let mut buf = [0u8; 2048];
            while !stop2.load(Ordering::SeqCst) && Instant::now() < end {
                let mut idle = true;
                for (s, tag) in &bound {
                    if let Ok((n, peer)) = s.recv_from(&mut buf) {
                        idle = false;
                        let local = s.local_addr().unwrap_or(peer);
                        got2.lock().unwrap().push(Datagram {
                            tag: tag.clone(),
                            local,
                            peer,
                            data: String::from_utf8_lossy(&buf[..n]).into_owned(),
                        });
                    }
                }
                if idle {
                    thread::sleep(Duration::from_millis(10));
                }
            }
        });
        UdpServer {
            stop,
            thread: Some(thread),
            got,
        }
    }

    pub fn received(&self) -> Vec<Datagram> {
        self.got.lock().unwrap().clone()
    }

    /// Waits up to `within` for a datagram whose payload is `data`; returns
    /// the tag of the socket that got it.
    pub fn wait_for(&self, data: &str, within: Duration) -> Option<String> {
        let end = Instant::now() + within;
        loop {
            if let Some(d) = self.received().iter().find(|d| d.data.trim() == data) {
                return Some(d.tag.clone());
            }
            if Instant::now() >= end {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for UdpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------

/// `host:port` in socat syntax with the family pinned.
fn socat_addr(proto: &str, ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(a) => format!("{proto}4:{a}:{port}"),
        IpAddr::V6(a) => format!("{proto}6:[{a}]:{port}"),
    }
}

/// Connects from `ns` as `uid`/`gid` (no supplementary groups) to
/// `ip:port` with socat, bounded to a few seconds. Returns the client's
/// output: `stdout` holds the tag line the server sent.
pub fn tcp_connect(ns: &Netns, uid: u32, gid: u32, ip: IpAddr, port: u16) -> Out {
    let target = format!("{},connect-timeout=3", socat_addr("TCP", ip, port));
    ns.cmd(&[
        "setpriv",
        "--reuid",
        &uid.to_string(),
        "--regid",
        &gid.to_string(),
        "--clear-groups",
        "timeout",
        "5",
        "socat",
        "-T3",
        "-t3",
        "-",
        &target,
    ])
    .timeout(Duration::from_secs(10))
    .run()
}

/// The tag a server answered with in a `tcp_connect` result, or `None` if
/// the connection failed.
pub fn answered_tag(out: &Out) -> Option<String> {
    let tag = out.stdout.trim();
    (out.success() && !tag.is_empty()).then(|| tag.to_string())
}

/// The tag the server answered with, or `None` if the connection failed.
pub fn tcp_tag(ns: &Netns, uid: u32, gid: u32, ip: IpAddr, port: u16) -> Option<String> {
    answered_tag(&tcp_connect(ns, uid, gid, ip, port))
}

/// Sends one datagram `data` from `ns` as `uid`/`gid` to `ip:port`.
pub fn udp_send(ns: &Netns, uid: u32, gid: u32, ip: IpAddr, port: u16, data: &str) -> Out {
    let target = socat_addr("UDP", ip, port);
    ns.cmd(&[
        "setpriv",
        "--reuid",
        &uid.to_string(),
        "--regid",
        &gid.to_string(),
        "--clear-groups",
        "timeout",
        "5",
        "socat",
        "-u",
        "-",
        &target,
    ])
    .stdin(format!("{data}\n"))
    .timeout(Duration::from_secs(10))
    .run()
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("bad IP {s}: {e}"))
}

pub fn sa(ip_s: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip(ip_s), port)
}

// ---------------------------------------------------------------------------
// The pod/remote topology used by the redirect tests
// ---------------------------------------------------------------------------

pub const POD_V4: &str = "198.51.100.1";
pub const POD_V6: &str = "2001:db8::1";
pub const REMOTE_V4: &str = "198.51.100.7";
pub const REMOTE_V6: &str = "2001:db8::7";
/// A private (10/8) address living on the remote.
pub const PRIVATE_V4: &str = "10.1.2.3";
/// A ULA (fc00::/7) address living on the remote.
pub const PRIVATE_V6: &str = "fd00::1";
/// DNAT targets living on the remote.
pub const TARGET_V4: &str = "203.0.113.10";
pub const TARGET_V6: &str = "2001:db8::10";

/// A resolv.conf whose name server refuses at once (nothing listens on
/// 127.0.0.1:53 in a test namespace).
pub const NO_DNS_RESOLV_CONF: &str = "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n";

/// Two namespaces: `pod` (where nftkit runs) and `remote`, joined by a veth:
///
/// ```text
///  pod  eth0 198.51.100.1/24 2001:db8::1/64      remote eth0 198.51.100.7/24 2001:db8::7/64
///       routes 10/8, 203.0.113/24 via .7;              also 10.1.2.3, 203.0.113.10,
///       fd00::/8, 2001:db8::10 via ::7                      fd00::1, 2001:db8::10
/// ```
pub struct Topology {
    pub pod: Netns,
    pub remote: Netns,
}

impl Topology {
    pub fn new() -> Topology {
        let pod = Netns::new();
        let remote = Netns::new();
        veth(&pod, "eth0", &remote, "eth0");
        addr_add(&pod, "eth0", &format!("{POD_V4}/24"));
        addr_add(&pod, "eth0", &format!("{POD_V6}/64"));
        addr_add(&remote, "eth0", &format!("{REMOTE_V4}/24"));
        addr_add(&remote, "eth0", &format!("{REMOTE_V6}/64"));
        for extra in [
            format!("{PRIVATE_V4}/32"),
            format!("{TARGET_V4}/32"),
            format!("{PRIVATE_V6}/128"),
            format!("{TARGET_V6}/128"),
        ] {
            addr_add(&remote, "eth0", &extra);
        }
        route_add(&pod, "10.0.0.0/8", REMOTE_V4);
        route_add(&pod, "203.0.113.0/24", REMOTE_V4);
        route_add(&pod, "fd00::/8", REMOTE_V6);
        // 2001:db8::10 is inside the on-link /64; a host route via ::7 avoids
        // relying on neighbour discovery for a secondary address.
        route_add(&pod, &format!("{TARGET_V6}/128"), REMOTE_V6);
        // 10/8 now leads to the remote, so the host's resolver (possibly a
        // 10.x address) would time out slowly: point the pod's resolver at a
        // closed local port so names missing from its hosts file fail fast.
        pod.write_etc("resolv.conf", NO_DNS_RESOLV_CONF);
        Topology { pod, remote }
    }

    /// The standard set of listeners:
    /// pod: `proxy:P` on 127.0.0.1:P and `proxy6:P` on [::1]:P for P in
    /// 10080, 10443, 15001; `local:80` on 127.0.0.5:80, `local6:80` on [::1]:80.
    /// remote: `remote:P` on 198.51.100.7:P and `remote6:P` on [2001:db8::7]:P
    /// for P in 22, 80, 443, 8080; `private:80` on 10.1.2.3:80,
    /// `private6:443` on [fd00::1]:443, `target:P` on 203.0.113.10:P and
    /// `target6:P` on [2001:db8::10]:P for P in 10080, 10443.
    pub fn servers(&self) -> (TcpServer, TcpServer) {
        let mut pod: Vec<(SocketAddr, String)> = Vec::new();
        for p in [10080u16, 10443, 15001] {
            pod.push((sa("127.0.0.1", p), format!("proxy:{p}")));
            pod.push((sa("::1", p), format!("proxy6:{p}")));
        }
        pod.push((sa("127.0.0.5", 80), "local:80".into()));
        pod.push((sa("::1", 80), "local6:80".into()));
        let mut rem: Vec<(SocketAddr, String)> = Vec::new();
        for p in [22u16, 80, 443, 8080] {
            rem.push((sa(REMOTE_V4, p), format!("remote:{p}")));
            rem.push((sa(REMOTE_V6, p), format!("remote6:{p}")));
        }
        rem.push((sa(PRIVATE_V4, 80), "private:80".into()));
        rem.push((sa(PRIVATE_V6, 443), "private6:443".into()));
        for p in [10080u16, 10443] {
            rem.push((sa(TARGET_V4, p), format!("target:{p}")));
            rem.push((sa(TARGET_V6, p), format!("target6:{p}")));
        }
        let pod_l: Vec<(SocketAddr, &str)> = pod.iter().map(|(a, t)| (*a, t.as_str())).collect();
        let rem_l: Vec<(SocketAddr, &str)> = rem.iter().map(|(a, t)| (*a, t.as_str())).collect();
        (
            TcpServer::start(&self.pod, &pod_l),
            TcpServer::start(&self.remote, &rem_l),
        )
    }

    /// Connects from the pod as `uid`/`gid` and asserts which server answered
    /// (`None` = the connection must fail). On mismatch, the panic message
    /// shows the client output and the pod's ruleset.
    pub fn expect(&self, uid: u32, gid: u32, dst: &str, port: u16, want: Option<&str>) {
        let out = tcp_connect(&self.pod, uid, gid, ip(dst), port);
        let got = answered_tag(&out);
        if got.as_deref() != want {
            panic!(
                "uid {uid} gid {gid} -> {dst} port {port}: expected {want:?}, got {got:?}\n{out}\n--- pod: nft list ruleset ---\n{}",
                self.pod.nft(&["list", "ruleset"]).stdout
            );
        }
    }
}

impl Default for Topology {
    fn default() -> Self {
        Topology::new()
    }
}

/// Taken by the tests that load the CPU hard inside the test process (every
/// netlink_backend test, the 1000-pod netpol build) and by the one that measures latency
/// under a client flood (metrics_endpoints), so they take turns. In one test binary they
/// would otherwise run side by side (as separate binaries they never did), and the flood
/// test's /healthz probe then failed about one run in three.
pub fn cpu_heavy() -> MutexGuard<'static, ()> {
    static CPU_HEAVY: Mutex<()> = Mutex::new(());
    CPU_HEAVY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Fails (never skips) a test run without root, with a clear message.
pub fn require_root() {
    let out = run(&["id", "-u"]);
    assert_eq!(
        out.stdout.trim(),
        "0",
        "these end-to-end tests create network namespaces and must run as root (see scripts/test.sh)"
    );
}

// ---------------------------------------------------------------------------
// Background nftkit daemons
// ---------------------------------------------------------------------------

/// Polls `f` every 20 ms until it is true or `within` has passed; whether it became true.
pub fn poll_until(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// `nftkit -v ARGS` running in the background inside a namespace (clean nftkit
/// environment), its stderr in a log file. SIGTERM, then SIGKILL, on drop.
pub struct NftkitDaemon {
    child: Option<std::process::Child>,
    log: PathBuf,
}

impl NftkitDaemon {
    pub fn start<S: AsRef<str>>(ns: &Netns, args: &[S]) -> NftkitDaemon {
        NftkitDaemon::start_with_env(ns, &[], args)
    }

    /// [`NftkitDaemon::start`] with `env` set on top of the clean nftkit environment (as
    /// [`Netns::nftkit`] takes it), e.g. `NFTKIT_STATE_DIR`.
    pub fn start_with_env<S: AsRef<str>>(
        ns: &Netns,
        env: &[(&str, &str)],
        args: &[S],
    ) -> NftkitDaemon {
        let log = std::env::temp_dir().join(format!("{}-daemon.log", unique_name()));
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &ns.name, NFTKIT, "-v"]);
        c.args(args.iter().map(|a| a.as_ref()));
        for k in NFTKIT_ENV {
            c.env_remove(k);
        }
        c.envs(env.iter().copied());
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).expect("create daemon log"));
        // `ip netns exec` execs the command, so the child's pid is nftkit's.
        let child = c.spawn().expect("spawn nftkit daemon");
        NftkitDaemon {
            child: Some(child),
            log,
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn count(&self, needle: &str) -> usize {
        self.log().matches(needle).count()
    }

    /// Waits (bounded) until the log contains `needle`; panics with the log otherwise.
    pub fn wait_log(&self, needle: &str, within: Duration) {
        if !poll_until(within, || self.log().contains(needle)) {
            panic!(
                "daemon log lacks {needle:?} after {within:?}:\n{}",
                self.log()
            );
        }
    }

    pub fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) of our own child process.
            unsafe {
                libc::kill(c.id() as libc::pid_t, sig);
            }
        }
    }

    /// Sends `sig` and waits (bounded) for the exit; the exit code, None if killed by a
    /// signal or if it had to be SIGKILLed after 10 s.
    pub fn stop_with(&mut self, sig: i32) -> Option<i32> {
        self.signal(sig);
        let mut child = self.child.take()?;
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return st.code();
            }
            if Instant::now() > end {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM and wait (bounded), as [`NftkitDaemon::stop_with`].
    pub fn stop(&mut self) -> Option<i32> {
        self.stop_with(libc::SIGTERM)
    }

    /// Waits (bounded) for the process to exit by itself; its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let child = self.child.as_mut()?;
        let end = Instant::now() + within;
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                self.child = None;
                return st.code();
            }
            if Instant::now() > end {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NftkitDaemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
        let _ = fs::remove_file(&self.log);
    }
}

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(what: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("{}-{what}", unique_name()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn s(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A file holding `text`, in a directory of its own removed on drop.
pub struct TempFile {
    _dir: TempDir,
    path: String,
}

impl TempFile {
    pub fn new(what: &str, text: &str) -> TempFile {
        let dir = TempDir::new(what);
        let path = dir.0.join(format!("{what}.yaml"));
        std::fs::write(&path, text).unwrap();
        TempFile {
            path: path.display().to_string(),
            _dir: dir,
        }
    }
    pub fn path(&self) -> &str {
        &self.path
    }
}
