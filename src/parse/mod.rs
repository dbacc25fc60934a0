//! Parsers shared by the commands' configs. Each names the option it reads (`what`) in
//! its error, so a message says which variable or flag held the bad value.
//!
//! Go's value forms (booleans, durations) are in [`go`], re-exported here; the one CIDR
//! parser, with each caller's rules named, is [`cidr::parse`].

pub mod cidr;
pub mod go;

pub use cidr::{CidrError, CidrRules};
use go::{MAX_DURATION_SECS, duration_or};
pub use go::{go_bool, go_duration};

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::error::{Error, Result};

/// Split a comma-separated list: whitespace around items and one trailing comma are
/// tolerated; any other empty item is an error.
pub fn list<'a>(what: &str, raw: &'a str) -> Result<Vec<&'a str>> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Ok(Vec::new());
    }
    let body = trimmed.strip_suffix(',').unwrap_or(trimmed);
    body.split(',')
        .map(|item| {
            let item = item.trim();
            if item.is_empty() {
                Err(Error::invalid(
                    what,
                    raw,
                    "empty item in comma-separated list",
                ))
            } else {
                Ok(item)
            }
        })
        .collect()
}

/// A TCP/UDP port 1-65535.
pub fn port(what: &str, raw: &str) -> Result<u16> {
    match raw.trim().parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(p as u16),
        _ => Err(Error::invalid(what, raw, "port must be a number 1-65535")),
    }
}

/// A CIDR (`10.0.0.0/8`) or a bare address (a host prefix), as nftkit's own flags and
/// variables take it ([`CidrRules::OPTION`]). Host bits must be zero, as upstream's
/// validation demands (`10.0.0.1/8` is refused, not silently widened).
pub fn cidr(what: &str, raw: &str) -> Result<IpNet> {
    let raw = raw.trim();
    cidr::parse(raw, CidrRules::OPTION).map_err(|e| match e {
        CidrError::HostBits { suggested } => Error::invalid(
            what,
            raw,
            format!("host bits are set; did you mean {suggested}?"),
        ),
        CidrError::Empty | CidrError::NoPrefix | CidrError::Unparsable => {
            Error::invalid(what, raw, "expected a CIDR such as 10.0.0.0/8 or fc00::/7")
        }
    })
}

pub fn cidr_v4(what: &str, raw: &str) -> Result<Ipv4Net> {
    match cidr(what, raw)? {
        IpNet::V4(n) => Ok(n),
        IpNet::V6(_) => Err(Error::invalid(what, raw, "expected an IPv4 CIDR")),
    }
}

pub fn cidr_v6(what: &str, raw: &str) -> Result<Ipv6Net> {
    match cidr(what, raw)? {
        IpNet::V6(n) => Ok(n),
        IpNet::V4(_) => Err(Error::invalid(what, raw, "expected an IPv6 CIDR")),
    }
}

pub fn ipv4(what: &str, raw: &str) -> Result<Ipv4Addr> {
    raw.trim()
        .parse()
        .map_err(|_| Error::invalid(what, raw, "expected an IPv4 address such as 203.0.113.10"))
}

/// An IPv6 address, brackets tolerated (`[2001:db8::10]`).
pub fn ipv6(what: &str, raw: &str) -> Result<Ipv6Addr> {
    let t = raw.trim();
    let t = t
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(t);
    t.parse()
        .map_err(|_| Error::invalid(what, raw, "expected an IPv6 address such as 2001:db8::10"))
}

/// An inclusive id range (uid or gid).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct IdRange {
    pub first: u32,
    pub last: u32,
}

/// Why an IPv4-mapped IPv6 address (`::ffff:10.96.0.2`) is refused where rules match on
/// it: the kernel sees IPv4 traffic as IPv4, so ip6 rules for such an address never match.
/// None for any other address.
pub fn ipv4_mapped_refusal(ip: std::net::IpAddr) -> Option<String> {
    match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map(|v4| {
            format!("an IPv4-mapped IPv6 address never matches IPv4 traffic: write {v4}")
        }),
        std::net::IpAddr::V4(_) => None,
    }
}

/// A list as users write it in flags and env vars: items joined by commas (`1010,2000-2999`).
pub fn comma_list<T: std::fmt::Display>(items: &[T]) -> String {
    let shown: Vec<String> = items.iter().map(T::to_string).collect();
    shown.join(",")
}

/// As users write it: `1010`, or `1000-1999`.
impl std::fmt::Display for IdRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// Which account database names resolve against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    User,
    Group,
}

impl IdKind {
    fn db(self) -> &'static str {
        match self {
            IdKind::User => "/etc/passwd",
            IdKind::Group => "/etc/group",
        }
    }
}

/// The largest valid id: (uid_t)-1 means "no owner" to the kernel.
const MAX_ID: u32 = u32::MAX - 1;

/// A uid/gid item: a number, a range `a-b`, or a name looked up in /etc/passwd or
/// /etc/group (as iptables' owner match did in the init image).
pub fn id(what: &str, raw: &str, kind: IdKind, db_root: &Path) -> Result<IdRange> {
    let item = raw.trim();
    let number = |s: &str| -> Option<u32> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse::<u32>().ok().filter(|n| *n <= MAX_ID)
    };
    if let Some((a, b)) = item.split_once('-') {
        let (Some(first), Some(last)) = (number(a.trim()), number(b.trim())) else {
            return Err(Error::invalid(
                what,
                raw,
                "range must be two numbers a-b (0-4294967294)",
            ));
        };
        if first > last {
            return Err(Error::invalid(
                what,
                raw,
                "range start must not exceed its end",
            ));
        }
        return Ok(IdRange { first, last });
    }
    if let Some(n) = number(item) {
        return Ok(IdRange { first: n, last: n });
    }
    if item.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::invalid(what, raw, "id must be 0-4294967294"));
    }
    let db = db_root.join(kind.db().trim_start_matches('/'));
    let text = std::fs::read_to_string(&db).map_err(|_| {
        Error::invalid(
            what,
            raw,
            format!("expected a number or range; names need {}", kind.db()),
        )
    })?;
    for line in text.lines() {
        let mut fields = line.split(':');
        if fields.next() == Some(item)
            && let Some(n) = fields.nth(1).and_then(number)
        {
            return Ok(IdRange { first: n, last: n });
        }
    }
    Err(Error::invalid(
        what,
        raw,
        format!("no such name in {}", kind.db()),
    ))
}

/// Deepest `[` / `{` nesting accepted in a YAML or JSON input. serde_norway refuses deeper
/// documents anyway (its recursion limit is 128), but only after libyaml has scanned the
/// whole input, which takes time quadratic in the nesting depth (100 000 levels: ~50 s).
/// [`flow_depth`] finds it in one linear pass first (tests/it/reliability_input.rs).
pub const MAX_FLOW_DEPTH: usize = 128;

/// Most YAML nodes (counted as [`flow_depth`]'s `nodes`) accepted in one input. libyaml
/// (serde_norway) holds every event of a document in memory, ~240 bytes each: 15 MB of
/// `[[]]` took 3.6 GB. Two million is twice a 1 000 000-CIDR list (~260 MB RSS).
pub const MAX_NODES: usize = 2_000_000;

/// The deepest flow-collection nesting of a YAML/JSON text (`[` and `{` outside quoted
/// scalars and comments; a quote counts only where a scalar can start, as in YAML, so
/// `don't` is plain text; unbalanced closers never go below zero), and an upper bound of
/// its node count (flow openers, commas and lines).
pub fn flow_depth(text: &[u8]) -> (usize, usize) {
    let (mut depth, mut max, mut nodes) = (0usize, 0usize, 0usize);
    let mut i = 0;
    let mut prev = b'\n';
    while i < text.len() {
        let c = text[i];
        let at_start = matches!(prev, b'\n' | b' ' | b'\t' | b'[' | b'{' | b',' | b':');
        match c {
            b'"' if at_start => {
                i += 1;
                while i < text.len() && text[i] != b'"' {
                    i += if text[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'\'' if at_start => {
                i += 1;
                // '' is an escaped quote: the loop simply reopens at the second one.
                while i < text.len() && text[i] != b'\'' {
                    i += 1;
                }
            }
            b'#' if matches!(prev, b'\n' | b' ' | b'\t') => {
                while i < text.len() && text[i] != b'\n' {
                    i += 1;
                }
                prev = b'\n';
                i += 1;
                continue;
            }
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b',' | b'\n' => nodes += 1,
            _ => {}
        }
        if c == b'[' || c == b'{' {
            nodes += 1;
        }
        prev = c;
        i += 1;
    }
    (max, nodes)
}

/// [`flow_depth`] within [`MAX_FLOW_DEPTH`] and [`MAX_NODES`], else why not.
pub fn check_yaml_size(text: &[u8]) -> std::result::Result<(), String> {
    let (depth, nodes) = flow_depth(text);
    if depth > MAX_FLOW_DEPTH {
        return Err(format!(
            "lists/maps nest {depth} levels deep; at most {MAX_FLOW_DEPTH} are accepted"
        ));
    }
    if nodes > MAX_NODES {
        return Err(format!(
            "has more than {MAX_NODES} items/lines ({nodes}); split it or use fewer, wider CIDRs"
        ));
    }
    Ok(())
}

/// A reconcile interval as every daemon takes it: whole seconds (`60`, as
/// ip-masq-agent's `--resync-interval` is written) or a Go duration (`1m`, `90s`, as
/// apiserver-proxy's `--sync-interval` is), positive and at most 1e9 s.
pub fn interval(what: &str, raw: &str) -> Result<std::time::Duration> {
    let t = raw.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return match t.parse::<u64>() {
            Ok(0) => Err(Error::invalid(what, raw, "interval must be positive")),
            Ok(secs) if (secs as f64) < MAX_DURATION_SECS => {
                Ok(std::time::Duration::from_secs(secs))
            }
            _ => Err(Error::invalid(
                what,
                raw,
                "interval too large: at most 277777h (about 31 years)",
            )),
        };
    }
    duration_or(
        what,
        raw,
        "expected whole seconds (60) or a duration such as 30s, 1m or 1m30s",
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn values_print_as_users_write_them() {
        use super::{IdRange, comma_list};
        let ids = [
            IdRange {
                first: 1010,
                last: 1010,
            },
            IdRange {
                first: 2000,
                last: 2999,
            },
        ];
        assert_eq!(comma_list(&ids), "1010,2000-2999");
    }

    #[test]
    fn flow_depth_counts_nesting_outside_quotes_and_comments() {
        use super::flow_depth;
        let d = |s: &[u8]| flow_depth(s).0;
        assert_eq!(d(b"a: [1, [2, {b: 3}]]"), 3);
        assert_eq!(d(b"a: \"[[[[\"\nb: '[[[' # [[[[\n"), 0);
        assert_eq!(d(b"a: [ \"]\", [ \"]\", [ ] ] ]"), 3);
        assert_eq!(d(b"a: don't [x]"), 1);
        assert_eq!(d(b"]]]] [[ ]]"), 2);
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(flow_depth(deep.as_bytes()), (100_000, 100_000));
        assert_eq!(flow_depth(b"a: [1, 2]\nb: 3\n").1, 4);
    }

    use super::*;

    #[test]
    fn list_tolerates_spaces_and_one_trailing_comma() {
        assert_eq!(list("X", " 1, 2 ,3,").unwrap(), vec!["1", "2", "3"]);
        assert_eq!(list("X", "").unwrap(), Vec::<&str>::new());
        assert_eq!(list("X", "  ").unwrap(), Vec::<&str>::new());
    }

    #[test]
    fn list_rejects_inner_empty_items() {
        for bad in ["0,,5", ",5", "5,,", ","] {
            let e = list("ACCEPT_UIDS", bad).unwrap_err();
            assert!(e.to_string().contains("ACCEPT_UIDS"), "{e}");
            assert_eq!(e.exit_code(), 2);
        }
    }

    #[test]
    fn ports() {
        assert_eq!(port("P", "443").unwrap(), 443);
        assert_eq!(port("P", "65535").unwrap(), 65535);
        for bad in ["0", "65536", "70000", "-1", "http", "", "1.5"] {
            assert!(port("P", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn intervals_take_whole_seconds_and_go_durations() {
        use std::time::Duration;
        for (raw, secs) in [
            ("60", 60.0),
            (" 5 ", 5.0),
            ("1m", 60.0),
            ("1m30s", 90.0),
            ("500ms", 0.5),
        ] {
            assert_eq!(
                interval("--resync-interval", raw).unwrap(),
                Duration::from_secs_f64(secs),
                "{raw}"
            );
        }
        for bad in [
            "",
            "0",
            "0s",
            "-1",
            "-1s",
            "1x",
            "1 minute",
            "99999999999999999999",
            "2000000000",
        ] {
            let e = interval("--resync-interval", bad).unwrap_err().to_string();
            assert!(e.contains("--resync-interval"), "{bad}: {e}");
        }
    }

    #[test]
    fn addresses() {
        assert!(ipv4("A", "203.0.113.10").is_ok());
        assert!(ipv4("A", "2001:db8::1").is_err());
        assert_eq!(
            ipv6("A", "[2001:db8::10]").unwrap().to_string(),
            "2001:db8::10"
        );
        assert!(ipv6("A", "10.0.0.1").is_err());
    }

    #[test]
    fn ids() {
        let dir = std::env::temp_dir().join(format!("nftkit-ids-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        std::fs::write(
            dir.join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nproxy:x:1010:1010::/:/bin/false\n",
        )
        .unwrap();
        let u = |s| id("ACCEPT_UIDS", s, IdKind::User, &dir);
        assert_eq!(
            u("1010").unwrap(),
            IdRange {
                first: 1010,
                last: 1010
            }
        );
        assert_eq!(
            u(" 2000-2999 ").unwrap(),
            IdRange {
                first: 2000,
                last: 2999
            }
        );
        assert_eq!(
            u("proxy").unwrap(),
            IdRange {
                first: 1010,
                last: 1010
            }
        );
        assert_eq!(u("root").unwrap(), IdRange { first: 0, last: 0 });
        for bad in [
            "-1",
            "x1",
            "5-3",
            "4294967295",
            "99999999999",
            "1-",
            "nobody",
        ] {
            let e = u(bad).unwrap_err();
            assert!(e.to_string().contains("ACCEPT_UIDS"), "{bad}: {e}");
        }
        // No /etc/group under this root: names cannot resolve.
        let e = id("ACCEPT_GIDS", "proxy", IdKind::Group, &dir)
            .unwrap_err()
            .to_string();
        assert!(e.contains("/etc/group"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
