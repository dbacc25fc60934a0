//! `nftkit masquerade`: drop-in for Azure/ip-masq-agent-v2 (a node DaemonSet).
//!
//! Table `inet nftkit-masquerade`; base chain `nat-postrouting` (type nat, hook
//! postrouting, priority srcnat = 100) sends every packet whose destination is not an
//! address of this host to the `--masq-chain` chain, which mirrors upstream's chain:
//!
//! ```text
//! chain nat-postrouting {
//!     type nat hook postrouting priority 100; policy accept;
//!     meta nfproto ipv4 fib daddr type != local jump IP-MASQ-AGENT   # no nfproto with --enable-ipv6
//! }
//! chain IP-MASQ-AGENT {
//!     ip daddr 169.254.0.0/16 return      # unless masqLinkLocal
//!     ip daddr @nomasq-v4 return          # nonMasqueradeCIDRs (IPv4)
//!     ip6 daddr fe80::/10 return          # --enable-ipv6, unless masqLinkLocalIPv6
//!     ip6 daddr @nomasq-v6 return         # --enable-ipv6: nonMasqueradeCIDRs (IPv6)
//!     masquerade                          # or `masquerade fully-random` (--random-fully)
//! }
//! ```
//! iptables equivalent (upstream): `-t nat -A POSTROUTING -m addrtype ! --dst-type LOCAL
//! -j IP-MASQ-AGENT`, then one `-d CIDR -j RETURN` per CIDR and a final `-j MASQUERADE`.
//! Without `--enable-ipv6` IPv6 packets never enter the chain (upstream did not call
//! ip6tables then), so the chain itself needs no family guard.
//!
//! Configuration (upstream's, see CONTRACT.md): every entry of `--config-dir` whose name
//! starts with `ip-masq`, YAML or JSON, keys `nonMasqueradeCIDRs`, `masqLinkLocal`,
//! `masqLinkLocalIPv6` (matched case-insensitively, as Go's encoding/json does). CIDR lists
//! are unioned, booleans OR-ed; defaults (RFC 1918, or the 11 reserved ranges with
//! `--nomasq-all-reserved-ranges`) only when no such file exists. Files that disagree on a
//! boolean or repeat a CIDR are reported (log and `status`); the merge stays upstream's.

use std::ffi::OsString;
use std::io::Read;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde_norway::Value;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::fast_yaml::{Node, Scalar};
use crate::model::*;
use crate::runner;

pub const COMMAND: &str = "masquerade";
/// The base chain holding the jump (`-t nat POSTROUTING` upstream).
pub const BASE_CHAIN: &str = "nat-postrouting";
pub const SET_V4: &str = "nomasq-v4";
pub const SET_V6: &str = "nomasq-v6";
/// Upstream reads every directory entry whose name starts with this.
pub const FILE_PREFIX: &str = "ip-masq";
/// Larger config files are refused (50 000 CIDRs in YAML are about 1.2 MB).
pub const MAX_FILE_BYTES: u64 = 16 << 20;
/// Where daemons leave their report for `status` (override: NFTKIT_STATE_DIR).
pub const DEFAULT_STATE_DIR: &str = "/run/nftkit";

const LINK_LOCAL_V4: Ipv4Net = ipv4net(Ipv4Addr::new(169, 254, 0, 0), 16);
const LINK_LOCAL_V6: Ipv6Net = ipv6net(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10);

/// Upstream's defaults: RFC 1918 ...
const RFC1918: &[(Ipv4Addr, u8)] = &[
    (Ipv4Addr::new(10, 0, 0, 0), 8),
    (Ipv4Addr::new(172, 16, 0, 0), 12),
    (Ipv4Addr::new(192, 168, 0, 0), 16),
];
/// ... plus these with `--nomasq-all-reserved-ranges` (11 in all).
const OTHER_RESERVED: &[(Ipv4Addr, u8)] = &[
    (Ipv4Addr::new(100, 64, 0, 0), 10),
    (Ipv4Addr::new(192, 0, 0, 0), 24),
    (Ipv4Addr::new(192, 0, 2, 0), 24),
    (Ipv4Addr::new(192, 88, 99, 0), 24),
    (Ipv4Addr::new(198, 18, 0, 0), 15),
    (Ipv4Addr::new(198, 51, 100, 0), 24),
    (Ipv4Addr::new(203, 0, 113, 0), 24),
    (Ipv4Addr::new(240, 0, 0, 0), 4),
];

const fn ipv4net(a: Ipv4Addr, len: u8) -> Ipv4Net {
    match Ipv4Net::new(a, len) {
        Ok(n) => n,
        Err(_) => panic!("bad constant prefix"),
    }
}

const fn ipv6net(a: Ipv6Addr, len: u8) -> Ipv6Net {
    match Ipv6Net::new(a, len) {
        Ok(n) => n,
        Err(_) => panic!("bad constant prefix"),
    }
}

/// Flags of `nftkit masquerade`: upstream's (ip-masq-agent-v2 reads no environment
/// variables), v1's `--config-dir` / `--random-fully`, and nftkit's `--once` / `--persist`.
/// Boolean flags also take Go's `--flag=true|false` form.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct MasqueradeArgs {
    /// Name of the chain holding the RETURN and MASQUERADE rules
    #[arg(long, value_name = "NAME", default_value = "IP-MASQ-AGENT")]
    pub masq_chain: String,
    /// Without config files, exempt all reserved IPv4 ranges (not only RFC 1918)
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub nomasq_all_reserved_ranges: bool,
    /// Also masquerade IPv6 and accept IPv6 CIDRs in the config
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub enable_ipv6: bool,
    /// Seconds between config re-reads and kernel checks (integer >= 1)
    #[arg(long, value_name = "SECONDS", default_value = "60")]
    pub resync_interval: String,
    /// Directory with the ip-masq* config files (a ConfigMap volume)
    #[arg(long, value_name = "DIR", default_value = "/etc/config")]
    pub config_dir: PathBuf,
    /// Apply once and exit instead of reconciling every interval
    #[arg(long)]
    pub once: bool,
    /// Masquerade with fully randomised source ports (ip-masq-agent v1's --random-fully)
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub random_fully: bool,
    /// Keep the table when the daemon dies (SIGKILL, OOM, restart), as upstream's iptables
    /// rules stay; --persist=false ties it to the process (kernel table owner flag)
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_value = "true", default_missing_value = "true",
          value_parser = crate::parse::go_bool)]
    pub persist: bool,
    /// klog verbosity of upstream manifests (`--v=2`); accepted and ignored, use -v
    #[arg(long = "v", value_name = "LEVEL", hide = true)]
    pub klog_v: Option<String>,
    /// klog flag of upstream manifests; accepted and ignored (nftkit logs to stderr)
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, hide = true,
          default_missing_value = "true")]
    pub logtostderr: Option<String>,
}

impl Default for MasqueradeArgs {
    fn default() -> Self {
        MasqueradeArgs {
            masq_chain: "IP-MASQ-AGENT".into(),
            nomasq_all_reserved_ranges: false,
            enable_ipv6: false,
            resync_interval: "60".into(),
            config_dir: PathBuf::from("/etc/config"),
            once: false,
            random_fully: false,
            persist: true,
            klog_v: None,
            logtostderr: None,
        }
    }
}

/// Validated flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub masq_chain: String,
    pub all_reserved: bool,
    pub enable_ipv6: bool,
    pub interval: Duration,
    pub config_dir: PathBuf,
    pub random_fully: bool,
}

/// The merged configuration the rules are built from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MasqConfig {
    /// Non-masquerade IPv4 destinations, merged (no overlaps), sorted.
    pub v4: Vec<Ipv4Net>,
    /// Non-masquerade IPv6 destinations (only with --enable-ipv6).
    pub v6: Vec<Ipv6Net>,
    pub masq_link_local: bool,
    pub masq_link_local_ipv6: bool,
}

/// Where the configuration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// No `ip-masq*` file: upstream's defaults.
    Defaults { dir_missing: bool },
    /// These files (paths as listed in the config dir, sorted).
    Files(Vec<PathBuf>),
}

/// A loaded and merged configuration with what the log and `status` report about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub config: MasqConfig,
    pub source: Source,
    /// Files that disagree on a boolean or repeat a CIDR (warnings).
    pub conflicts: Vec<String>,
    /// Worth an info line: defaults dropped by a file without CIDRs, missing directory.
    pub notices: Vec<String>,
}

/// One parsed config file, before merging.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FileConfig {
    pub path: PathBuf,
    /// In file order, duplicates kept (conflict detection needs them).
    pub cidrs: Vec<IpNet>,
    /// `None` when the file does not set the key.
    pub masq_link_local: Option<bool>,
    pub masq_link_local_ipv6: Option<bool>,
}

/// Validate the flags.
pub fn settings(args: &MasqueradeArgs) -> Result<Settings> {
    let chain = args.masq_chain.as_str();
    // nft's identifier syntax, so the --dry-run text loads with `nft -f` too.
    let ok = !chain.is_empty()
        && chain.len() <= 255
        && chain.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_' || c == '.')
        && chain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/-_.".contains(c));
    if !ok {
        return Err(Error::invalid(
            "--masq-chain",
            chain,
            "expected a chain name of letters, digits, '-', '_', '.', '/' starting with a letter (at most 255)",
        ));
    }
    if chain == BASE_CHAIN {
        return Err(Error::invalid(
            "--masq-chain",
            chain,
            format!("{BASE_CHAIN} is the base chain's own name; choose another"),
        ));
    }
    let secs = args.resync_interval.trim();
    let interval = match secs.parse::<u64>() {
        Ok(s) if (1..=i32::MAX as u64).contains(&s) => Duration::from_secs(s),
        _ => {
            return Err(Error::invalid(
                "--resync-interval",
                &args.resync_interval,
                "expected a whole number of seconds, at least 1 (e.g. 60)",
            ));
        }
    };
    Ok(Settings {
        masq_chain: chain.to_string(),
        all_reserved: args.nomasq_all_reserved_ranges,
        enable_ipv6: args.enable_ipv6,
        interval,
        config_dir: args.config_dir.clone(),
        random_fully: args.random_fully,
    })
}

// ---------------------------------------------------------------------------
// Reading the config dir
// ---------------------------------------------------------------------------

fn file_error(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::invalid("config file", path.display(), one_line(&why.to_string()))
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A config file's path (as listed in the config dir) and content.
pub type RawFile = (PathBuf, Vec<u8>);

/// A listed entry vanished or dangles while being read (a ConfigMap update swaps `..data`
/// and removes stale links afterwards): retry; the error is reported if it persists.
struct Vanished(Error);

/// The `ip-masq*` entries of `dir` with their content, sorted by name; `None` if `dir`
/// does not exist. Symlinks are followed only while they stay inside `dir` (the
/// ConfigMap layout `ip-masq-agent -> ..data/ip-masq-agent`, `..data -> ..2024_...`);
/// anything but a regular file, or a file over [`MAX_FILE_BYTES`], is an error.
pub fn read_config_dir(dir: &Path) -> Result<Option<Vec<RawFile>>> {
    let mut retries = 2;
    loop {
        match read_config_dir_once(dir) {
            Ok(r) => return Ok(r),
            Err(Err(e)) | Err(Ok(Vanished(e))) if retries == 0 => return Err(e),
            Err(Err(e)) => return Err(e),
            Err(Ok(Vanished(_))) => {
                retries -= 1;
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

type ReadResult<T> = std::result::Result<T, std::result::Result<Vanished, Error>>;

fn read_config_dir_once(dir: &Path) -> ReadResult<Option<Vec<RawFile>>> {
    let bad_dir = |e: std::io::Error| {
        Err(Error::invalid(
            "--config-dir",
            dir.display(),
            format!("cannot read the directory: {e}"),
        ))
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(bad_dir(e)),
    };
    let root = std::fs::canonicalize(dir).map_err(bad_dir)?;
    let mut names: Vec<OsString> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(bad_dir)?;
        let name = entry.file_name();
        if name.as_bytes().starts_with(FILE_PREFIX.as_bytes()) {
            names.push(name);
        }
    }
    names.sort();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let path = dir.join(&name);
        let bytes = read_entry(&root, &path)?;
        out.push((path, bytes));
    }
    Ok(Some(out))
}

fn read_entry(root: &Path, path: &Path) -> ReadResult<Vec<u8>> {
    let vanished_or = |e: std::io::Error, why: &str| {
        let err = file_error(path, format!("{why}: {e}"));
        if e.kind() == std::io::ErrorKind::NotFound {
            Ok(Vanished(err))
        } else {
            Err(err)
        }
    };
    let meta = std::fs::symlink_metadata(path).map_err(|e| vanished_or(e, "cannot stat"))?;
    let target = if meta.file_type().is_symlink() {
        let target = match std::fs::canonicalize(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Ok(Vanished(file_error(
                    path,
                    "symlink points to nothing (dangling)",
                ))));
            }
            Err(e) => return Err(vanished_or(e, "cannot resolve symlink")),
        };
        if !target.starts_with(root) || target == root {
            return Err(Err(file_error(
                path,
                format!(
                    "symlink leads to {} outside {}; only symlinks inside the config dir (a ConfigMap's ..data layout) are followed",
                    target.display(),
                    root.display()
                ),
            )));
        }
        target
    } else {
        path.to_path_buf()
    };
    // O_NONBLOCK: a FIFO planted here must not hang the daemon; fstat decides.
    // O_NOFOLLOW: the checked (canonical) path must not turn into a symlink meanwhile.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(&target)
        .map_err(|e| vanished_or(e, "cannot open"))?;
    let fmeta = file
        .metadata()
        .map_err(|e| Err(file_error(path, format!("cannot stat: {e}"))))?;
    if fmeta.is_dir() {
        return Err(Err(file_error(
            path,
            "is a directory; expected a YAML or JSON file",
        )));
    }
    if !fmeta.is_file() {
        return Err(Err(file_error(
            path,
            "is not a regular file; expected a YAML or JSON file",
        )));
    }
    let too_big = |n: u64| {
        Err(Err(file_error(
            path,
            format!(
                "is {n} bytes; config files are limited to {} MiB",
                MAX_FILE_BYTES >> 20
            ),
        )))
    };
    if fmeta.size() > MAX_FILE_BYTES {
        return too_big(fmeta.size());
    }
    let mut bytes = Vec::with_capacity(fmeta.size() as usize);
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Err(file_error(path, format!("cannot read: {e}"))))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return too_big(bytes.len() as u64);
    }
    Ok(bytes)
}

// ---------------------------------------------------------------------------
// Parsing one file
// ---------------------------------------------------------------------------

const KEY_CIDRS: &str = "nonMasqueradeCIDRs";
const KEY_LINK_LOCAL: &str = "masqLinkLocal";
const KEY_LINK_LOCAL_V6: &str = "masqLinkLocalIPv6";

/// Parse one config file's content (YAML or JSON) and validate it as upstream does.
pub fn parse_file(path: &Path, bytes: &[u8], enable_ipv6: bool) -> Result<FileConfig> {
    let mut out = FileConfig {
        path: path.to_path_buf(),
        ..Default::default()
    };
    // The usual block YAML (`key:` then `  - CIDR` lines) in one linear pass, with no
    // Value per list item; checked exactly as the full parser's document below.
    if let Some(doc) = crate::fast_yaml::parse(bytes) {
        for (key, node) in &doc.entries {
            let known = [KEY_CIDRS, KEY_LINK_LOCAL, KEY_LINK_LOCAL_V6]
                .iter()
                .any(|k| key.eq_ignore_ascii_case(k));
            match node {
                Node::Seq(items) if key.eq_ignore_ascii_case(KEY_CIDRS) => {
                    let what = cidr_what(path);
                    let mut cidrs = Vec::with_capacity(items.len());
                    for item in items {
                        cidrs.push(match *item {
                            Scalar::Null => cidr(&what, "", enable_ipv6),
                            Scalar::Str(s) => cidr(&what, s, enable_ipv6),
                            Scalar::Bool(_) => cidr_item(&what, &item.to_value(), enable_ipv6),
                        }?);
                    }
                    out.cidrs = cidrs;
                }
                _ if known => set_key(&mut out, path, key, &node.to_value(), enable_ipv6)?,
                _ => {}
            }
        }
        return Ok(out);
    }
    // libyaml is quadratic in nesting depth and keeps every event in memory: refuse such
    // input in one linear pass first.
    crate::parse::check_yaml_size(bytes).map_err(|why| file_error(path, why))?;
    let doc: Value = match serde_norway::from_slice(bytes) {
        Ok(v) => v,
        // JSON is YAML, but libyaml is pickier about some whitespace (tabs) than JSON.
        Err(yaml_err) => serde_json::from_slice::<Value>(bytes)
            .map_err(|_| file_error(path, format!("not valid YAML or JSON: {yaml_err}")))?,
    };
    let map = match untag(&doc) {
        // An empty file (or `null`) sets nothing, as upstream.
        Value::Null => return Ok(out),
        Value::Mapping(m) => m,
        other => {
            return Err(file_error(
                path,
                format!(
                    "the document is {}; expected a mapping with keys {KEY_CIDRS}, {KEY_LINK_LOCAL}, {KEY_LINK_LOCAL_V6}",
                    kind(other)
                ),
            ));
        }
    };
    for (k, v) in map {
        let Some(key) = untag(k).as_str() else {
            continue;
        };
        set_key(&mut out, path, key, untag(v), enable_ipv6)?;
    }
    Ok(out)
}

/// Apply one top-level entry. Go's encoding/json matches keys case-insensitively; unknown
/// keys are ignored.
fn set_key(
    out: &mut FileConfig,
    path: &Path,
    key: &str,
    v: &Value,
    enable_ipv6: bool,
) -> Result<()> {
    if key.eq_ignore_ascii_case(KEY_CIDRS) {
        out.cidrs = cidr_list(path, key, v, enable_ipv6)?;
    } else if key.eq_ignore_ascii_case(KEY_LINK_LOCAL) {
        out.masq_link_local = boolean(path, key, v)?;
    } else if key.eq_ignore_ascii_case(KEY_LINK_LOCAL_V6) {
        out.masq_link_local_ipv6 = boolean(path, key, v)?;
    }
    Ok(())
}

fn untag(v: &Value) -> &Value {
    match v {
        Value::Tagged(t) => untag(&t.value),
        other => other,
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

fn cidr_list(path: &Path, key: &str, v: &Value, enable_ipv6: bool) -> Result<Vec<IpNet>> {
    let items = match v {
        Value::Null => return Ok(Vec::new()),
        Value::Sequence(items) => items,
        other => {
            return Err(file_error(
                path,
                format!(
                    "{key} is {}; expected a list of CIDRs such as [10.0.0.0/8]",
                    kind(other)
                ),
            ));
        }
    };
    let what = cidr_what(path);
    items
        .iter()
        .map(|item| cidr_item(&what, item, enable_ipv6))
        .collect()
}

/// How errors name an item of the CIDR list in `path`.
fn cidr_what(path: &Path) -> String {
    format!("{KEY_CIDRS} entry in {}", path.display())
}

fn cidr_item(what: &str, item: &Value, enable_ipv6: bool) -> Result<IpNet> {
    match untag(item) {
        // `- ` and `- null` are "" in upstream, which then fails to parse.
        Value::Null => cidr(what, "", enable_ipv6),
        Value::String(s) => cidr(what, s, enable_ipv6),
        other => Err(Error::invalid(
            what,
            scalar_text(other),
            format!(
                "is {}; expected a CIDR string such as 10.0.0.0/8",
                kind(other)
            ),
        )),
    }
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        other => kind(other).to_string(),
    }
}

/// A CIDR as upstream validates it: `net.ParseCIDR` (a bare address is refused), the
/// network address aligned to the prefix, IPv6 only with --enable-ipv6.
pub fn cidr(what: &str, raw: &str, enable_ipv6: bool) -> Result<IpNet> {
    let t = raw.trim();
    if t.is_empty() {
        return Err(Error::invalid(
            what,
            raw,
            "empty item; expected a CIDR such as 10.0.0.0/8",
        ));
    }
    let net: IpNet = match ipv4_cidr(t) {
        Some(n) => IpNet::V4(n),
        None => t.parse().map_err(|_| {
            Error::invalid(
                what,
                raw,
                "could not be parsed; expected a CIDR such as 10.0.0.0/8 or fd00::/8",
            )
        })?,
    };
    if net.trunc() != net {
        return Err(Error::invalid(
            what,
            raw,
            format!(
                "is not aligned to a CIDR block (host bits set); did you mean {}?",
                net.trunc()
            ),
        ));
    }
    if matches!(net, IpNet::V6(_)) && !enable_ipv6 {
        return Err(Error::invalid(
            what,
            raw,
            "is an IPv6 CIDR but IPv6 is not enabled; pass --enable-ipv6",
        ));
    }
    Ok(net)
}

/// `a.b.c.d/n` exactly as ipnet's parser reads an IPv4 CIDR (octets of 1-3 digits up to
/// 255, a prefix of 1-2 digits up to 32), without its backtracking; `None` for anything
/// else, which is then left to ipnet (IPv6, errors).
fn ipv4_cidr(s: &str) -> Option<Ipv4Net> {
    /// The number of at most `max_digits` digits at the start of `b`, and its length.
    fn number(b: &[u8], max_digits: usize) -> Option<(u32, usize)> {
        let mut n = 0u32;
        let mut len = 0;
        while let Some(&c) = b.get(len)
            && c.is_ascii_digit()
        {
            if len == max_digits {
                return None;
            }
            n = n * 10 + u32::from(c - b'0');
            len += 1;
        }
        (len > 0).then_some((n, len))
    }
    let b = s.as_bytes();
    let mut at = 0;
    let mut octets = [0u8; 4];
    for (i, o) in octets.iter_mut().enumerate() {
        if i > 0 {
            if b.get(at) != Some(&b'.') {
                return None;
            }
            at += 1;
        }
        let (n, len) = number(&b[at..], 3)?;
        *o = u8::try_from(n).ok()?;
        at += len;
    }
    if b.get(at) != Some(&b'/') {
        return None;
    }
    let (len, digits) = number(&b[at + 1..], 2)?;
    if at + 1 + digits != b.len() || len > 32 {
        return None;
    }
    Ipv4Net::new(Ipv4Addr::from(octets), len as u8).ok()
}

/// Go decodes YAML 1.1 (go-yaml v2): yes/no/on/off/y/n are booleans too.
fn boolean(path: &Path, key: &str, v: &Value) -> Result<Option<bool>> {
    match v {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(*b)),
        Value::String(s)
            if matches!(
                s.as_str(),
                "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON"
            ) =>
        {
            Ok(Some(true))
        }
        Value::String(s)
            if matches!(
                s.as_str(),
                "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF"
            ) =>
        {
            Ok(Some(false))
        }
        other => Err(Error::invalid(
            format!("{key} in {}", path.display()),
            scalar_text(other),
            "expected true or false",
        )),
    }
}

// ---------------------------------------------------------------------------
// Merging
// ---------------------------------------------------------------------------

/// Upstream's defaults, used only when no `ip-masq*` file exists.
pub fn defaults(all_reserved: bool) -> MasqConfig {
    let mut v4: Vec<Ipv4Net> = RFC1918.iter().map(|&(a, l)| ipv4net(a, l)).collect();
    if all_reserved {
        v4.extend(OTHER_RESERVED.iter().map(|&(a, l)| ipv4net(a, l)));
    }
    MasqConfig {
        v4: Ipv4Net::aggregate(&v4),
        ..Default::default()
    }
}

/// Merge parsed files as upstream does (CIDRs unioned, booleans OR-ed) and list the
/// conflicts between them. Overlapping CIDRs are merged (interval sets refuse overlaps).
pub fn merge(files: &[FileConfig]) -> (MasqConfig, Vec<String>) {
    let mut cfg = MasqConfig::default();
    let total = files.iter().map(|f| f.cidrs.len()).sum();
    let mut v4 = Vec::with_capacity(total);
    let mut v6 = Vec::new();
    for f in files {
        for net in &f.cidrs {
            match net {
                IpNet::V4(n) => v4.push(*n),
                IpNet::V6(n) => v6.push(*n),
            }
        }
        cfg.masq_link_local |= f.masq_link_local.unwrap_or(false);
        cfg.masq_link_local_ipv6 |= f.masq_link_local_ipv6.unwrap_or(false);
    }
    // Sorted, repeats show side by side (aggregation sorts too, and merges them).
    v4.sort_unstable();
    v6.sort_unstable();
    let repeated = v4.windows(2).any(|w| w[0] == w[1]) || v6.windows(2).any(|w| w[0] == w[1]);
    cfg.v4 = aggregate_v4(v4);
    cfg.v6 = aggregate_v6(v6);

    let name = |i: usize| files[i].path.display().to_string();
    let mut conflicts = Vec::new();
    for (key, get) in [
        (
            KEY_LINK_LOCAL,
            (|f: &FileConfig| f.masq_link_local) as fn(&FileConfig) -> Option<bool>,
        ),
        (KEY_LINK_LOCAL_V6, |f: &FileConfig| f.masq_link_local_ipv6),
    ] {
        let yes: Vec<String> = (0..files.len())
            .filter(|&i| get(&files[i]) == Some(true))
            .map(name)
            .collect();
        let no: Vec<String> = (0..files.len())
            .filter(|&i| get(&files[i]) == Some(false))
            .map(name)
            .collect();
        if !yes.is_empty() && !no.is_empty() {
            conflicts.push(format!(
                "{key} is true in {} but false in {}; using true (any true wins)",
                yes.join(", "),
                no.join(", ")
            ));
        }
    }
    if !repeated {
        return (cfg, conflicts);
    }
    // Repeated CIDRs: every listing as (CIDR, position over all files, file index), sorted
    // by CIDR then position (positions are unique), so each repeat is a run of listings in
    // file order; reported in the order of their first listing.
    let mut listed: Vec<(IpNet, u32, u32)> = Vec::with_capacity(total);
    for (i, f) in files.iter().enumerate() {
        for net in &f.cidrs {
            listed.push((*net, listed.len() as u32, i as u32));
        }
    }
    listed.sort_unstable();
    let mut repeats: Vec<&[(IpNet, u32, u32)]> = listed
        .chunk_by(|a, b| a.0 == b.0)
        .filter(|run| run.len() > 1)
        .collect();
    repeats.sort_unstable_by_key(|run| run[0].1);
    for run in repeats {
        let mut where_: Vec<String> = Vec::new();
        for in_file in run.chunk_by(|a, b| a.2 == b.2) {
            let s = match in_file.len() {
                1 => name(in_file[0].2 as usize),
                n => format!("{} ({n} times)", name(in_file[0].2 as usize)),
            };
            if !where_.contains(&s) {
                where_.push(s);
            }
        }
        conflicts.push(format!(
            "CIDR {} is listed {} times: in {}",
            run[0].0,
            run.len(),
            where_.join(", ")
        ));
    }
    (cfg, conflicts)
}

/// `Ipv4Net::aggregate(&sorted)`. When no two of the sorted CIDRs overlap or touch (the
/// usual list), that only truncates each (ipnet sorts the same blocks into the same order
/// and merges none), so do just that, in place.
fn aggregate_v4(sorted: Vec<Ipv4Net>) -> Vec<Ipv4Net> {
    aggregate_sorted(
        sorted,
        |n| {
            (
                u32::from(n.network()).into(),
                u32::from(n.broadcast()).into(),
            )
        },
        Ipv4Net::trunc,
        Ipv4Net::aggregate,
    )
}

/// [`aggregate_v4`] for IPv6.
fn aggregate_v6(sorted: Vec<Ipv6Net>) -> Vec<Ipv6Net> {
    aggregate_sorted(
        sorted,
        |n| (n.network().into(), n.broadcast().into()),
        Ipv6Net::trunc,
        Ipv6Net::aggregate,
    )
}

/// `aggregate(&sorted)`, or only `trunc` of each block when `span` (first and last
/// address) shows that no two neighbours overlap or touch.
fn aggregate_sorted<N>(
    mut sorted: Vec<N>,
    span: impl Fn(&N) -> (u128, u128),
    trunc: impl Fn(&N) -> N,
    aggregate: impl Fn(&Vec<N>) -> Vec<N>,
) -> Vec<N> {
    let apart = sorted
        .windows(2)
        .all(|w| span(&w[0]).1.saturating_add(1) < span(&w[1]).0);
    if !apart {
        return aggregate(&sorted);
    }
    for n in &mut sorted {
        *n = trunc(n);
    }
    sorted
}

/// Read, validate and merge the config dir (upstream's whole config step).
pub fn load(s: &Settings) -> Result<Loaded> {
    load_from(s, read_config_dir(&s.config_dir)?.as_deref())
}

/// Validate and merge what [`read_config_dir`] read (`None`: the directory is missing).
pub fn load_from(s: &Settings, entries: Option<&[RawFile]>) -> Result<Loaded> {
    let Some(entries) = entries else {
        return Ok(Loaded {
            config: defaults(s.all_reserved),
            source: Source::Defaults { dir_missing: true },
            conflicts: Vec::new(),
            notices: vec![format!(
                "config dir {} does not exist; using the default non-masquerade ranges",
                s.config_dir.display()
            )],
        });
    };
    if entries.is_empty() {
        return Ok(Loaded {
            config: defaults(s.all_reserved),
            source: Source::Defaults { dir_missing: false },
            conflicts: Vec::new(),
            notices: Vec::new(),
        });
    }
    let files = entries
        .iter()
        .map(|(p, b)| parse_file(p, b, s.enable_ipv6))
        .collect::<Result<Vec<_>>>()?;
    let (config, conflicts) = merge(&files);
    let mut notices = Vec::new();
    if config.v4.is_empty() && config.v6.is_empty() {
        notices.push(format!(
            "config files exist in {} but list no {KEY_CIDRS}: the default ranges are not used, so every destination except {} is masqueraded",
            s.config_dir.display(),
            if config.masq_link_local {
                "none".to_string()
            } else {
                LINK_LOCAL_V4.to_string()
            }
        ));
    }
    Ok(Loaded {
        config,
        source: Source::Files(entries.iter().map(|(p, _)| p.clone()).collect()),
        conflicts,
        notices,
    })
}

// ---------------------------------------------------------------------------
// Rules
// ---------------------------------------------------------------------------

fn ret(m: Match) -> Rule {
    Rule {
        matches: vec![m],
        action: Action::Return,
    }
}

/// The owned table for `cfg`. Pure.
pub fn build(cfg: &MasqConfig, s: &Settings, table: &str) -> Ruleset {
    let mut sets = vec![Set {
        name: SET_V4.into(),
        key: KeyType::Ipv4Addr,
        interval: true,
        elements: cfg.v4.iter().copied().map(Element::V4).collect(),
    }];
    let mut rules = Vec::new();
    if !cfg.masq_link_local {
        rules.push(ret(Match::Daddr(IpNet::V4(LINK_LOCAL_V4))));
    }
    rules.push(ret(Match::DaddrInSet {
        family: IpFamily::V4,
        set: SET_V4.into(),
    }));
    let mut jump = Vec::new();
    if s.enable_ipv6 {
        sets.push(Set {
            name: SET_V6.into(),
            key: KeyType::Ipv6Addr,
            interval: true,
            elements: cfg.v6.iter().copied().map(Element::V6).collect(),
        });
        if !cfg.masq_link_local_ipv6 {
            rules.push(ret(Match::Daddr(IpNet::V6(LINK_LOCAL_V6))));
        }
        rules.push(ret(Match::DaddrInSet {
            family: IpFamily::V6,
            set: SET_V6.into(),
        }));
    } else {
        // IPv6 is left alone entirely, as upstream without --enable-ipv6.
        jump.push(Match::NfProto(IpFamily::V4));
    }
    rules.push(Rule {
        matches: Vec::new(),
        action: Action::Masquerade {
            fully_random: s.random_fully,
        },
    });
    jump.push(Match::FibDaddrLocal { negate: true });
    Ruleset {
        table: table.to_string(),
        comment: format!("managed by nftkit {COMMAND}"),
        sets,
        chains: vec![
            Chain {
                name: BASE_CHAIN.into(),
                base: Some(BaseChain {
                    kind: ChainType::Nat,
                    hook: Hook::Postrouting,
                    priority: priority::SRCNAT,
                }),
                rules: vec![Rule {
                    matches: jump,
                    action: Action::Jump(s.masq_chain.clone()),
                }],
            },
            Chain {
                name: s.masq_chain.clone(),
                base: None,
                rules,
            },
        ],
    }
}

// ---------------------------------------------------------------------------
// Logging, status report, running
// ---------------------------------------------------------------------------

/// At most this many conflicts are logged one by one.
const CONFLICTS_LOGGED: usize = 10;

fn log_loaded(l: &Loaded, s: &Settings) {
    let files = match &l.source {
        Source::Files(f) => f
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        Source::Defaults { .. } => format!(
            "none (defaults: {})",
            if s.all_reserved {
                "all reserved ranges"
            } else {
                "RFC 1918"
            }
        ),
    };
    tracing::info!(
        config_dir = %s.config_dir.display(),
        files = %files,
        nomasq_v4 = l.config.v4.len(),
        nomasq_v6 = l.config.v6.len(),
        masq_link_local = l.config.masq_link_local,
        masq_link_local_ipv6 = l.config.masq_link_local_ipv6,
        enable_ipv6 = s.enable_ipv6,
        "masquerade configuration"
    );
    for n in &l.notices {
        if matches!(l.source, Source::Defaults { dir_missing: true }) {
            tracing::warn!("{n}");
        } else {
            tracing::info!("notice: {n}");
        }
    }
    for c in l.conflicts.iter().take(CONFLICTS_LOGGED) {
        tracing::warn!("conflicting configuration: {c}");
    }
    if l.conflicts.len() > CONFLICTS_LOGGED {
        tracing::warn!(
            "conflicting configuration: {} more conflicts not shown",
            l.conflicts.len() - CONFLICTS_LOGGED
        );
    }
}

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

fn state_path(table: &str, env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    // Tables of the same name live in every network namespace: key by the namespace.
    let ns = std::fs::metadata("/proc/self/ns/net").ok()?.ino();
    let dir = env("NFTKIT_STATE_DIR")
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| DEFAULT_STATE_DIR.to_string());
    Some(PathBuf::from(dir).join(format!("{COMMAND}.{table}.net{ns}.json")))
}

fn write_report(path: &Option<PathBuf>, r: &Report) {
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

/// The reconcile job: re-reads the config dir every interval.
pub struct MasqJob {
    settings: Settings,
    table: String,
    /// Built at startup before the backend opened; handed to the loop's first call.
    primed: Option<Ruleset>,
    last: Option<Loaded>,
    /// The files read (`None`: no config dir) and the table built from them at the last
    /// successful load: while they stay byte for byte the same, neither is redone.
    cache: Option<(Option<Vec<RawFile>>, Ruleset)>,
    report_path: Option<PathBuf>,
    report: Report,
}

impl MasqJob {
    /// `report_path`: where to keep the `status` report (daemons only), see [`state_path`].
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

    fn reload(&mut self) -> Result<Ruleset> {
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

    fn set_report(&mut self, r: Report) {
        if r != self.report {
            self.report = r;
            write_report(&self.report_path, &self.report);
        }
    }
}

impl runner::Job for MasqJob {
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

/// The desired table for `verify` and `--dry-run` (logs like a run would).
pub fn desired(args: &MasqueradeArgs, table: &str) -> Result<Ruleset> {
    let s = settings(args)?;
    let started = std::time::Instant::now();
    let l = load(&s)?;
    let rs = build(&l.config, &s, table);
    tracing::debug!(
        elapsed_us = started.elapsed().as_micros() as u64,
        "config read and built"
    );
    log_loaded(&l, &s);
    Ok(rs)
}

/// `nftkit masquerade`: validate everything first (exit 2 touches nothing), then apply
/// and, unless `--once`, reconcile every `--resync-interval` until SIGTERM/SIGINT.
pub fn run(
    args: &MasqueradeArgs,
    table: &str,
    env: &dyn Fn(&str) -> Option<String>,
    backend_for: &mut dyn FnMut() -> Result<Box<dyn Backend>>,
) -> Result<()> {
    let s = settings(args)?;
    let interval = s.interval;
    // Only a daemon leaves a report (a one-shot run logs everything it would say).
    let report_path = if args.once {
        None
    } else {
        state_path(table, env)
    };
    let mut job = MasqJob::new(s, table, report_path.clone(), args.persist);
    let result = job.reload().and_then(|first| {
        job.primed = Some(first);
        run_job(args, &mut job, interval, backend_for)
    });
    if let Some(path) = report_path.filter(|_| !args.persist) {
        // The table dies with this process (owner flag): so does its report.
        let _ = std::fs::remove_file(path);
    }
    result
}

fn run_job(
    args: &MasqueradeArgs,
    job: &mut MasqJob,
    interval: Duration,
    backend_for: &mut dyn FnMut() -> Result<Box<dyn Backend>>,
) -> Result<()> {
    let stop = runner::stop_on_signals()?;
    let mut backend = backend_for()?;
    // Tables persist by default; --persist=false ties a daemon's table to it.
    backend.set_process_owned(!args.once && !args.persist);
    let result = runner::run(
        backend.as_mut(),
        job,
        &runner::LoopOptions {
            interval,
            once: args.once,
        },
        &stop,
    );
    if let Err(e) = &result {
        let mut r = job.report.clone();
        r.config_error = Some(e.to_string());
        job.set_report(r);
    }
    result.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A temporary directory removed on drop.
    struct Dir(PathBuf);
    impl Dir {
        fn new() -> Dir {
            static N: AtomicUsize = AtomicUsize::new(0);
            let p = std::env::temp_dir().join(format!(
                "nftkit-masq-unit-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
        fn write(&self, name: &str, content: &str) -> &Self {
            std::fs::write(self.0.join(name), content).unwrap();
            self
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn st(dir: &Path, ipv6: bool, reserved: bool) -> Settings {
        Settings {
            masq_chain: "IP-MASQ-AGENT".into(),
            all_reserved: reserved,
            enable_ipv6: ipv6,
            interval: Duration::from_secs(60),
            config_dir: dir.to_path_buf(),
            random_fully: false,
        }
    }

    fn nets4(c: &MasqConfig) -> Vec<String> {
        c.v4.iter().map(|n| n.to_string()).collect()
    }

    fn parse_str(s: &str, ipv6: bool) -> Result<FileConfig> {
        parse_file(Path::new("/etc/config/ip-masq-agent"), s.as_bytes(), ipv6)
    }

    #[test]
    fn validate_like_upstream() {
        // (items, ok?) — upstream's validate cases plus ours.
        let cases: &[(&[&str], Option<&str>)] = &[
            (&[], None),
            (&["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"], None),
            (&["abcdefg"], Some("could not be parsed")),
            (&["10.256.0.0/16"], Some("could not be parsed")),
            (&["10.0.0.0/8", "abcdefg"], Some("could not be parsed")),
            (&["10.0.0.1/8"], Some("did you mean 10.0.0.0/8")),
            (&["10.0.0.0/33"], Some("could not be parsed")),
            (&["10.0.0.1"], Some("could not be parsed")),
            (&[""], Some("empty item")),
            (&["fd00::/8"], Some("--enable-ipv6")),
            (&["fd00::1/8"], Some("did you mean fd00::/8")),
        ];
        for (items, want) in cases {
            let r: Result<Vec<IpNet>> = items.iter().map(|i| cidr("x", i, false)).collect();
            match (want, r) {
                (None, Ok(_)) => {}
                (Some(needle), Err(e)) => {
                    assert_eq!(e.exit_code(), 2);
                    assert!(e.to_string().contains(needle), "{items:?}: {e}");
                }
                (w, r) => panic!("{items:?}: expected {w:?}, got {r:?}"),
            }
        }
        assert!(cidr("x", "fd00::/8", true).is_ok());
    }

    #[test]
    fn ipv4_cidr_reads_what_ipnet_reads() {
        for ok in [
            "0.0.0.0/0",
            "10.0.0.0/8",
            "255.255.255.255/32",
            "172.16.0.0/30",
            "010.001.0.00/08",
            "1.2.3.4/00",
        ] {
            assert_eq!(
                ipv4_cidr(ok).map(IpNet::V4),
                Some(ok.parse().unwrap()),
                "{ok}"
            );
        }
        for other in [
            "",
            "/8",
            "1.2.3/8",
            "1.2.3.4",
            "1.2.3.4/",
            "1.2.3.4/33",
            "1.2.3.4/008",
            "256.0.0.0/8",
            "1.2.3.0004/8",
            "1.2.3.4/8/",
            "1.2.3.4 /8",
            " 1.2.3.4/8",
            "1.2.3.4/8 ",
            "::/0",
            "::ffff:1.2.3.4/96",
            "1.2.3.4/+8",
            "+1.2.3.4/8",
            "1..3.4/8",
            "1.2.3.4.5/8",
        ] {
            assert_eq!(ipv4_cidr(other), None, "{other:?}");
        }
        // Random near-CIDRs (1-4 digit numbers, mostly the right separators): whenever it
        // reads one, ipnet reads the same; whenever it declines, ipnet reads no IPv4 CIDR.
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        let mut agreed = 0;
        for _ in 0..100_000 {
            let mut t = String::new();
            for part in 0..5 {
                if part > 0 {
                    t.push_str(match (part, next(20)) {
                        (_, 0) => "",
                        (_, 1) => "..",
                        (4, _) => "/",
                        _ => ".",
                    });
                }
                let digits = [1, 1, 2, 2, 3, 3, 0, 4][next(8) as usize];
                for _ in 0..digits {
                    let d = if next(3) == 0 { 0 } else { next(10) };
                    t.push(char::from(b'0' + d as u8));
                }
            }
            if next(20) == 0 {
                t.push(['/', '.', 'x', ' '][next(4) as usize]);
            }
            let ipnet = t.parse::<IpNet>().ok();
            if let Some(n) = ipv4_cidr(&t) {
                assert_eq!(Some(IpNet::V4(n)), ipnet, "{t:?}");
                agreed += 1;
            } else {
                assert!(!matches!(ipnet, Some(IpNet::V4(_))), "{t:?} declined");
            }
        }
        assert!(agreed > 2000, "{agreed}");
    }

    #[test]
    fn parse_files_yaml_and_json() {
        struct Case {
            text: &'static str,
            cidrs: &'static [&'static str],
            ll: Option<bool>,
            ll6: Option<bool>,
        }
        let cases = [
            Case {
                text: "nonMasqueradeCIDRs:\n  - 172.16.0.0/12\n  - 10.0.0.0/16\nmasqLinkLocal: true\nmasqLinkLocalIPv6: true\n",
                cidrs: &["172.16.0.0/12", "10.0.0.0/16"],
                ll: Some(true),
                ll6: Some(true),
            },
            Case {
                text: "nonMasqueradeCIDRs: [172.16.0.0/12, 10.0.0.0/16]",
                cidrs: &["172.16.0.0/12", "10.0.0.0/16"],
                ll: None,
                ll6: None,
            },
            Case {
                text: "masqLinkLocal: true",
                cidrs: &[],
                ll: Some(true),
                ll6: None,
            },
            Case {
                text: r#"{"nonMasqueradeCIDRs": ["172.16.0.0/12", "fd00::/8"], "masqLinkLocal": false}"#,
                cidrs: &["172.16.0.0/12", "fd00::/8"],
                ll: Some(false),
                ll6: None,
            },
            // JSON with tab indentation (libyaml refuses tabs in some places).
            Case {
                text: "{\n\t\"masqLinkLocalIPv6\": true,\n\t\"nonMasqueradeCIDRs\": [\"10.0.0.0/8\"]\n}",
                cidrs: &["10.0.0.0/8"],
                ll: None,
                ll6: Some(true),
            },
            // Unknown keys (v1's cidrLimit, resyncInterval) ignored; keys case-insensitive.
            Case {
                text: "cidrLimit: 64\nresyncInterval: 60s\nNonMasqueradeCidrs: [10.0.0.0/8]\nMASQLINKLOCAL: yes\n",
                cidrs: &["10.0.0.0/8"],
                ll: Some(true),
                ll6: None,
            },
            Case {
                text: "",
                cidrs: &[],
                ll: None,
                ll6: None,
            },
            Case {
                text: "# only a comment\n",
                cidrs: &[],
                ll: None,
                ll6: None,
            },
            Case {
                text: "nonMasqueradeCIDRs:\nmasqLinkLocal: off\n",
                cidrs: &[],
                ll: Some(false),
                ll6: None,
            },
        ];
        for c in cases {
            let f = parse_str(c.text, true).unwrap_or_else(|e| panic!("{:?}: {e}", c.text));
            let got: Vec<String> = f.cidrs.iter().map(|n| n.to_string()).collect();
            assert_eq!(got, c.cidrs, "{:?}", c.text);
            assert_eq!(
                (f.masq_link_local, f.masq_link_local_ipv6),
                (c.ll, c.ll6),
                "{:?}",
                c.text
            );
        }
    }

    #[test]
    fn parse_errors_name_the_file_and_value() {
        let cases = [
            ("{*", "not valid YAML or JSON"),
            ("*", "not valid YAML or JSON"),
            ("nonMasqueradeCIDRs: [10.0.0.0/8, \"\"]", "empty item"),
            ("nonMasqueradeCIDRs:\n  - 10.0.0.0/8\n  -\n", "empty item"),
            ("nonMasqueradeCIDRs: [null]", "empty item"),
            ("nonMasqueradeCIDRs: [10.0.0.1/8]", "\"10.0.0.1/8\""),
            ("nonMasqueradeCIDRs: [fd00::/8]", "--enable-ipv6"),
            ("nonMasqueradeCIDRs: 10.0.0.0/8", "expected a list"),
            ("nonMasqueradeCIDRs: [10]", "expected a CIDR string"),
            ("masqLinkLocal: maybe", "expected true or false"),
            ("- 10.0.0.0/8", "expected a mapping"),
            ("just a string", "expected a mapping"),
        ];
        for (text, needle) in cases {
            let e = parse_str(text, false).unwrap_err();
            let msg = e.to_string();
            assert_eq!(e.exit_code(), 2, "{text}");
            assert!(msg.contains("/etc/config/ip-masq-agent"), "{text}: {msg}");
            assert!(msg.contains(needle), "{text}: {msg}");
            assert!(!msg.contains('\n'), "one line: {msg}");
        }
    }

    fn fc(name: &str, cidrs: &[&str], ll: Option<bool>, ll6: Option<bool>) -> FileConfig {
        FileConfig {
            path: PathBuf::from(format!("/d/{name}")),
            cidrs: cidrs.iter().map(|c| c.parse().unwrap()).collect(),
            masq_link_local: ll,
            masq_link_local_ipv6: ll6,
        }
    }

    #[test]
    fn merge_unions_ors_and_reports_conflicts() {
        // Two files: union + OR, no conflict.
        let (c, k) = merge(&[
            fc("ip-masq-a", &["10.0.0.0/8"], None, None),
            fc("ip-masq-b", &["172.16.0.0/12"], Some(true), None),
        ]);
        assert_eq!(nets4(&c), ["10.0.0.0/8", "172.16.0.0/12"]);
        assert!(c.masq_link_local && !c.masq_link_local_ipv6);
        assert!(k.is_empty(), "{k:?}");

        // Duplicate across three files: kept once, reported naming all three.
        let (c, k) = merge(&[
            fc("ip-masq-a", &["10.0.0.0/8"], None, None),
            fc("ip-masq-b", &["10.0.0.0/8"], None, None),
            fc("ip-masq-c", &["10.0.0.0/8", "10.0.0.0/8"], None, None),
        ]);
        assert_eq!(nets4(&c), ["10.0.0.0/8"]);
        assert_eq!(
            k,
            [
                "CIDR 10.0.0.0/8 is listed 4 times: in /d/ip-masq-a, /d/ip-masq-b, /d/ip-masq-c (2 times)"
            ]
        );

        // Disagreeing booleans: OR wins, both files named.
        let (c, k) = merge(&[
            fc("ip-masq-a", &[], Some(false), Some(true)),
            fc("ip-masq-b", &[], Some(true), None),
        ]);
        assert!(c.masq_link_local && c.masq_link_local_ipv6);
        assert_eq!(
            k,
            [
                "masqLinkLocal is true in /d/ip-masq-b but false in /d/ip-masq-a; using true (any true wins)"
            ]
        );

        // Overlaps merged before they reach the kernel; not a conflict.
        let (c, k) = merge(&[fc(
            "ip-masq-a",
            &[
                "10.0.0.0/8",
                "10.1.0.0/16",
                "10.0.0.0/9",
                "192.168.0.0/24",
                "192.168.1.0/24",
            ],
            None,
            None,
        )]);
        assert_eq!(nets4(&c), ["10.0.0.0/8", "192.168.0.0/23"]);
        assert!(k.is_empty());

        // Missing fields merge as false / empty.
        let (c, _) = merge(&[fc("ip-masq-a", &[], None, None)]);
        assert_eq!(c, MasqConfig::default());
    }

    #[test]
    fn defaults_only_without_files() {
        let d = Dir::new();
        // No files at all (and a non-prefixed one): defaults.
        d.write("other-config", "nonMasqueradeCIDRs: [1.2.3.0/24]");
        let l = load(&st(&d.0, false, false)).unwrap();
        assert_eq!(l.source, Source::Defaults { dir_missing: false });
        assert_eq!(
            nets4(&l.config),
            ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
        );
        let l = load(&st(&d.0, false, true)).unwrap();
        assert_eq!(
            nets4(&l.config),
            [
                "10.0.0.0/8",
                "100.64.0.0/10",
                "172.16.0.0/12",
                "192.0.0.0/24",
                "192.0.2.0/24",
                "192.88.99.0/24",
                "192.168.0.0/16",
                "198.18.0.0/15",
                "198.51.100.0/24",
                "203.0.113.0/24",
                "240.0.0.0/4"
            ]
        );
        // A present but empty file drops the defaults, with a notice.
        d.write("ip-masq-agent", "");
        let l = load(&st(&d.0, false, true)).unwrap();
        assert!(l.config.v4.is_empty());
        assert!(
            l.notices[0].contains("default ranges are not used"),
            "{:?}",
            l.notices
        );
        // Only masqLinkLocal: no CIDRs either.
        d.write("ip-masq-agent", "masqLinkLocal: true");
        let l = load(&st(&d.0, false, false)).unwrap();
        assert!(l.config.v4.is_empty() && l.config.masq_link_local);
        // Missing directory: defaults with a warning notice (upstream crashed).
        let l = load(&st(&d.0.join("nope"), false, false)).unwrap();
        assert_eq!(l.source, Source::Defaults { dir_missing: true });
        assert_eq!(l.config.v4.len(), 3);
        assert!(l.notices[0].contains("does not exist"));
    }

    #[test]
    fn load_merges_files_in_name_order_and_names_the_bad_one() {
        let d = Dir::new();
        d.write(
            "ip-masq-agent",
            "nonMasqueradeCIDRs: [10.0.0.0/8]\nmasqLinkLocal: false\n",
        )
        .write(
            "ip-masq-agent-reconciled",
            r#"{"nonMasqueradeCIDRs": ["203.0.113.0/24", "10.0.0.0/8"], "masqLinkLocal": true}"#,
        )
        .write("README", "not: [config");
        let l = load(&st(&d.0, false, false)).unwrap();
        assert_eq!(nets4(&l.config), ["10.0.0.0/8", "203.0.113.0/24"]);
        assert!(l.config.masq_link_local);
        assert_eq!(l.conflicts.len(), 2, "{:?}", l.conflicts);
        let (a, b) = (
            format!("{}/ip-masq-agent", d.0.display()),
            format!("{}/ip-masq-agent-reconciled", d.0.display()),
        );
        assert_eq!(
            l.conflicts,
            [
                format!(
                    "masqLinkLocal is true in {b} but false in {a}; using true (any true wins)"
                ),
                format!("CIDR 10.0.0.0/8 is listed 2 times: in {a}, {b}"),
            ]
        );
        let Source::Files(files) = &l.source else {
            panic!()
        };
        assert_eq!(files.len(), 2);

        d.write("ip-masq-zz", "nonMasqueradeCIDRs: [10.0.0.1/8]");
        let e = load(&st(&d.0, false, false)).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let msg = e.to_string();
        assert!(
            msg.contains("ip-masq-zz") && msg.contains("10.0.0.1/8"),
            "{msg}"
        );
    }

    #[test]
    fn configmap_symlinks_followed_but_not_out_of_the_dir() {
        use std::os::unix::fs::symlink;
        let d = Dir::new();
        let data = d.0.join("..2024_01_01_00_00_00.123");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(
            data.join("ip-masq-agent"),
            "nonMasqueradeCIDRs: [198.51.100.0/24]",
        )
        .unwrap();
        symlink("..2024_01_01_00_00_00.123", d.0.join("..data")).unwrap();
        symlink("..data/ip-masq-agent", d.0.join("ip-masq-agent")).unwrap();
        let l = load(&st(&d.0, false, false)).unwrap();
        assert_eq!(nets4(&l.config), ["198.51.100.0/24"]);

        // Out of the directory: refused, naming the file.
        let outside = Dir::new();
        outside.write("secret", "nonMasqueradeCIDRs: [0.0.0.0/0]");
        symlink(outside.0.join("secret"), d.0.join("ip-masq-evil")).unwrap();
        let e = load(&st(&d.0, false, false)).unwrap_err();
        assert!(
            e.to_string().contains("ip-masq-evil") && e.to_string().contains("outside"),
            "{e}"
        );
        std::fs::remove_file(d.0.join("ip-masq-evil")).unwrap();

        // Dangling symlink, directory, FIFO: errors, never a hang.
        symlink("..data/missing", d.0.join("ip-masq-dangling")).unwrap();
        let e = load(&st(&d.0, false, false)).unwrap_err();
        assert!(e.to_string().contains("dangling"), "{e}");
        std::fs::remove_file(d.0.join("ip-masq-dangling")).unwrap();
        std::fs::create_dir(d.0.join("ip-masq-dir")).unwrap();
        let e = load(&st(&d.0, false, false)).unwrap_err();
        assert!(e.to_string().contains("is a directory"), "{e}");
        std::fs::remove_dir(d.0.join("ip-masq-dir")).unwrap();
        let fifo = d.0.join("ip-masq-fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = load(&st(&d.0, false, false)).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }

    #[test]
    fn oversized_file_is_refused() {
        let d = Dir::new();
        let f = std::fs::File::create(d.0.join("ip-masq-big")).unwrap();
        f.set_len(MAX_FILE_BYTES + 1).unwrap();
        let e = load(&st(&d.0, false, false)).unwrap_err();
        assert!(e.to_string().contains("limited to 16 MiB"), "{e}");
    }

    #[test]
    fn no_cidr_limit() {
        let mut text = String::from("nonMasqueradeCIDRs:\n");
        for i in 0..5000u32 {
            text.push_str(&format!("  - {}/32\n", Ipv4Addr::from(0x0a00_0000 + i * 2)));
        }
        let f = parse_str(&text, false).unwrap();
        let (c, k) = merge(&[f]);
        assert_eq!(c.v4.len(), 5000);
        assert!(k.is_empty());
    }

    #[test]
    fn flags_validated() {
        let ok = settings(&MasqueradeArgs::default()).unwrap();
        assert_eq!(ok.interval, Duration::from_secs(60));
        assert_eq!(ok.masq_chain, "IP-MASQ-AGENT");
        for (args, needle) in [
            (
                MasqueradeArgs {
                    resync_interval: "0".into(),
                    ..Default::default()
                },
                "--resync-interval",
            ),
            (
                MasqueradeArgs {
                    resync_interval: "60s".into(),
                    ..Default::default()
                },
                "--resync-interval",
            ),
            (
                MasqueradeArgs {
                    masq_chain: "".into(),
                    ..Default::default()
                },
                "--masq-chain",
            ),
            (
                MasqueradeArgs {
                    masq_chain: "bad chain".into(),
                    ..Default::default()
                },
                "--masq-chain",
            ),
            (
                MasqueradeArgs {
                    masq_chain: BASE_CHAIN.into(),
                    ..Default::default()
                },
                "--masq-chain",
            ),
        ] {
            let e = settings(&args).unwrap_err();
            assert_eq!(e.exit_code(), 2);
            assert!(e.to_string().contains(needle), "{e}");
        }
    }

    fn rules(rs: &Ruleset, chain: &str) -> Vec<String> {
        rs.chains
            .iter()
            .find(|c| c.name == chain)
            .unwrap()
            .rules
            .iter()
            .map(crate::render::rule_text)
            .collect()
    }

    #[test]
    fn build_rules_like_upstream() {
        let s = st(Path::new("/x"), false, false);
        // Empty config: link-local return, empty set, masquerade; IPv4 only.
        let rs = build(&MasqConfig::default(), &s, "nftkit-masquerade");
        assert_eq!(
            rules(&rs, BASE_CHAIN),
            ["meta nfproto ipv4 fib daddr type != local jump IP-MASQ-AGENT"]
        );
        assert_eq!(
            rules(&rs, "IP-MASQ-AGENT"),
            [
                "ip daddr 169.254.0.0/16 return",
                "ip daddr @nomasq-v4 return",
                "masquerade"
            ]
        );
        assert!(rs.set(SET_V4).unwrap().elements.is_empty());
        assert!(rs.set(SET_V6).is_none());
        let base = rs.chains[0].base.unwrap();
        assert_eq!(
            (base.kind, base.hook, base.priority),
            (ChainType::Nat, Hook::Postrouting, 100)
        );

        // IPv6 with masqLinkLocal (IPv4) and random-fully, custom chain.
        let s6 = Settings {
            enable_ipv6: true,
            random_fully: true,
            masq_chain: "IP-MASQ".into(),
            ..s.clone()
        };
        let cfg = MasqConfig {
            v4: vec!["10.0.0.0/8".parse().unwrap()],
            v6: vec!["fc00::/7".parse().unwrap()],
            masq_link_local: true,
            masq_link_local_ipv6: false,
        };
        let rs = build(&cfg, &s6, "t");
        assert_eq!(
            rules(&rs, BASE_CHAIN),
            ["fib daddr type != local jump IP-MASQ"]
        );
        assert_eq!(
            rules(&rs, "IP-MASQ"),
            [
                "ip daddr @nomasq-v4 return",
                "ip6 daddr fe80::/10 return",
                "ip6 daddr @nomasq-v6 return",
                "masquerade fully-random"
            ]
        );
        assert_eq!(rs.set(SET_V6).unwrap().elements.len(), 1);
        // masqLinkLocalIPv6: no fe80::/10 rule.
        let cfg = MasqConfig {
            masq_link_local_ipv6: true,
            ..cfg
        };
        assert!(
            !rules(&build(&cfg, &s6, "t"), "IP-MASQ")
                .iter()
                .any(|r| r.contains("fe80"))
        );
    }

    /// The environment of a process whose NFTKIT_STATE_DIR is `state`.
    fn state_env(state: &Dir) -> impl Fn(&str) -> Option<String> + use<> {
        let sdir = state.0.display().to_string();
        move |k: &str| (k == "NFTKIT_STATE_DIR").then(|| sdir.clone())
    }

    /// A daemon's job over config dir `d` keeping its status report in `state`.
    fn job_with_report(d: &Dir, state: &Dir) -> MasqJob {
        let env = state_env(state);
        MasqJob::new(
            st(&d.0, false, false),
            "nftkit-masquerade",
            state_path("nftkit-masquerade", &env),
            false,
        )
    }

    #[test]
    fn job_reports_and_keeps_working_after_a_bad_config() {
        use crate::backend::fake::FakeBackend;
        use crate::runner::{Job, LoopStats, step};
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

    /// `merge` before it sorted instead of hashing: the reference its output must match.
    fn merge_reference(files: &[FileConfig]) -> (MasqConfig, Vec<String>) {
        use std::collections::HashMap;
        let mut cfg = MasqConfig::default();
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        let mut seen: HashMap<IpNet, Vec<usize>> = HashMap::new();
        let mut order: Vec<IpNet> = Vec::new();
        for (i, f) in files.iter().enumerate() {
            for net in &f.cidrs {
                let e = seen.entry(*net).or_default();
                if e.is_empty() {
                    order.push(*net);
                    match net {
                        IpNet::V4(n) => v4.push(*n),
                        IpNet::V6(n) => v6.push(*n),
                    }
                }
                e.push(i);
            }
            cfg.masq_link_local |= f.masq_link_local.unwrap_or(false);
            cfg.masq_link_local_ipv6 |= f.masq_link_local_ipv6.unwrap_or(false);
        }
        cfg.v4 = Ipv4Net::aggregate(&v4);
        cfg.v6 = Ipv6Net::aggregate(&v6);
        let name = |i: usize| files[i].path.display().to_string();
        // The boolean conflicts are unchanged code: take them from `merge`.
        let mut conflicts: Vec<String> = merge(files)
            .1
            .into_iter()
            .filter(|c| !c.starts_with("CIDR "))
            .collect();
        for net in order {
            let listed = &seen[&net];
            if listed.len() < 2 {
                continue;
            }
            let mut where_: Vec<String> = Vec::new();
            for &i in listed {
                let n = listed.iter().filter(|&&j| j == i).count();
                let s = if n > 1 {
                    format!("{} ({n} times)", name(i))
                } else {
                    name(i)
                };
                if !where_.contains(&s) {
                    where_.push(s);
                }
            }
            conflicts.push(format!(
                "CIDR {net} is listed {} times: in {}",
                listed.len(),
                where_.join(", ")
            ));
        }
        (cfg, conflicts)
    }

    /// A small pseudo-random generator (xorshift): `next(n)` is in `0..n`.
    fn xorshift(mut x: u64) -> impl FnMut(u64) -> u64 {
        move |n| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        }
    }

    #[test]
    fn aggregate_matches_ipnet() {
        let mut next = xorshift(0x1234_5678_9abc_def1);
        let (mut apart, mut rounds) = (0, 0);
        for _ in 0..3000 {
            // Few, spread-out blocks (often apart) or many dense ones (often merging);
            // host bits sometimes set (ipnet truncates).
            let few = next(2) == 0;
            let n = 1 + next(if few { 4 } else { 40 });
            let spread = [8, 16, 24][next(3) as usize];
            let v4: Vec<Ipv4Net> = (0..n)
                .map(|_| {
                    let addr = (next(256) as u32) << spread | next(1 << 8) as u32;
                    let len = [0, 1, 8, 16, 24, 30, 31, 32][next(8) as usize];
                    Ipv4Net::new(Ipv4Addr::from(addr), len).unwrap()
                })
                .collect();
            let v6: Vec<Ipv6Net> = v4
                .iter()
                .map(|n| {
                    let a = u128::from(u32::from(n.addr())) << next(97);
                    Ipv6Net::new(Ipv6Addr::from(a), n.prefix_len() * 4).unwrap()
                })
                .collect();
            let (mut s4, mut s6) = (v4.clone(), v6.clone());
            s4.sort_unstable();
            s6.sort_unstable();
            let want = Ipv4Net::aggregate(&v4);
            if want.len() == v4.len() {
                apart += 1;
            }
            rounds += 1;
            assert_eq!(aggregate_v4(s4), want, "{v4:?}");
            assert_eq!(aggregate_v6(s6), Ipv6Net::aggregate(&v6), "{v6:?}");
        }
        assert!(
            apart > rounds / 10 && apart < rounds * 9 / 10,
            "{apart} of {rounds}"
        );
        assert_eq!(aggregate_v4(Vec::new()), []);
        let all = ipv4net(Ipv4Addr::UNSPECIFIED, 0);
        assert_eq!(aggregate_v4(vec![all]), [all]);
        let top = ipv4net(Ipv4Addr::new(255, 255, 255, 255), 32);
        let below = ipv4net(Ipv4Addr::new(255, 255, 255, 252), 31);
        assert_eq!(
            aggregate_v4(vec![below, top]),
            Ipv4Net::aggregate(&vec![below, top])
        );
    }

    #[test]
    fn merge_matches_the_hashing_merge() {
        // A small pseudo-random generator (xorshift): many repeats within and across
        // files, IPv4 and IPv6, overlaps, files sharing a name.
        let mut next = xorshift(0x2545_f491_4f6c_dd1d);
        for round in 0..500 {
            let nfiles = 1 + next(4) as usize;
            let pool = 1 + next(if round % 2 == 0 { 6 } else { 60 });
            let files: Vec<FileConfig> = (0..nfiles)
                .map(|i| {
                    let cidrs = (0..next(12))
                        .map(|_| {
                            let k = next(pool) as u32;
                            if k % 5 == 4 {
                                IpNet::V6(
                                    Ipv6Net::new(
                                        Ipv6Addr::new(0xfd00, k as u16, 0, 0, 0, 0, 0, 0),
                                        32,
                                    )
                                    .unwrap(),
                                )
                            } else {
                                let len = [8u8, 16, 24, 30][(k % 4) as usize];
                                IpNet::V4(
                                    Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + (k << 8)), len)
                                        .unwrap()
                                        .trunc(),
                                )
                            }
                        })
                        .collect();
                    let b = |v: u64| [None, Some(false), Some(true)][v as usize];
                    FileConfig {
                        path: PathBuf::from(format!("/d/ip-masq-{}", i % 3)),
                        cidrs,
                        masq_link_local: b(next(3)),
                        masq_link_local_ipv6: b(next(3)),
                    }
                })
                .collect();
            assert_eq!(merge(&files), merge_reference(&files), "{files:?}");
        }
        // The benchmark's shape: thousands of distinct CIDRs, a few repeats.
        let mut text = String::from("nonMasqueradeCIDRs:\n");
        for i in 0..3000u32 {
            text.push_str(&format!(
                "  - {}/30\n",
                Ipv4Addr::from(0xac10_0000 + (i % 2900) * 8)
            ));
        }
        let f = parse_str(&text, false).unwrap();
        let files = [f, fc("ip-masq-b", &["172.16.0.8/30"], None, None)];
        let (c, k) = merge(&files);
        assert_eq!((c.v4.len(), k.len()), (2900, 100));
        assert_eq!(
            k[1],
            "CIDR 172.16.0.8/30 is listed 3 times: in /etc/config/ip-masq-agent (2 times), /d/ip-masq-b"
        );
        assert_eq!((c, k), merge_reference(&files));
    }
}
