//! The one CIDR parser. Its callers differ in two rules, named in [`CidrRules`]; each maps
//! a [`CidrError`] to its own message (the variable or field it read, its wording).
//! Which address families a caller takes (ip-masq-agent's IPv6 only with
//! `--enable-ipv6`, a per-family option's IPv4 or IPv6 only) is the caller's check, after
//! this parse.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};

/// A CIDR whose address has bits set past its prefix (`10.0.0.1/8`). The callers differ
/// on purpose:
/// - nftkit's own flags and variables ([`CidrRules::OPTION`]) and ip-masq-agent's config
///   files ([`CidrRules::GO_PARSE_CIDR`]) refuse it: upstream ip-masq-agent's validation
///   does, and CONTRACT.md keeps that everywhere a user writes a CIDR, so a typo never
///   silently widens a rule.
/// - a NetworkPolicy's ipBlock ([`CidrRules::API_SERVER`]) is truncated: the API server
///   (before 1.33's strict validation) stores `10.0.0.1/8` as given and means the whole
///   prefix, and Kubernetes enforces such a policy; refusing it would drop it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostBits {
    /// [`CidrError::HostBits`], naming the aligned prefix.
    Refuse,
    /// The prefix the address lies in (`10.0.0.0/8`).
    Truncate,
}

/// An address without a prefix (`10.1.2.3`):
/// - nftkit's own flags and variables ([`CidrRules::OPTION`]) read it as a host prefix;
/// - ip-masq-agent (Go's `net.ParseCIDR`) and the API server's ipBlock.cidr demand a
///   prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BareAddress {
    /// `/32` or `/128`.
    HostPrefix,
    /// [`CidrError::NoPrefix`].
    Refuse,
}

/// How one caller reads a CIDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CidrRules {
    pub bare_address: BareAddress,
    pub host_bits: HostBits,
}

impl CidrRules {
    /// nftkit's own flags and environment variables (`ACCEPT_BLOCKS`, ...;
    /// [`super::cidr()`]): a bare address is a host, host bits are refused.
    pub const OPTION: CidrRules = CidrRules {
        bare_address: BareAddress::HostPrefix,
        host_bits: HostBits::Refuse,
    };
    /// ip-masq-agent's config files: Go's `net.ParseCIDR` (a prefix is required) and
    /// upstream's validation (host bits refused).
    pub const GO_PARSE_CIDR: CidrRules = CidrRules {
        bare_address: BareAddress::Refuse,
        host_bits: HostBits::Refuse,
    };
    /// A NetworkPolicy's ipBlock.cidr and except[] as the API server stores them: a prefix
    /// is required, host bits are truncated.
    pub const API_SERVER: CidrRules = CidrRules {
        bare_address: BareAddress::Refuse,
        host_bits: HostBits::Truncate,
    };
}

/// Why a text is not a CIDR under the rules given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CidrError {
    /// Nothing but whitespace.
    Empty,
    /// An address without `/prefix`, under [`BareAddress::Refuse`].
    NoPrefix,
    /// Neither a CIDR nor an address (a prefix too long for its family included).
    Unparsable,
    /// Host bits set, under [`HostBits::Refuse`]; `suggested` is the aligned prefix.
    HostBits { suggested: IpNet },
}

/// `raw` (surrounding whitespace ignored) as a CIDR under `rules`.
#[inline]
pub fn parse(raw: &str, rules: CidrRules) -> Result<IpNet, CidrError> {
    let t = raw.trim();
    if t.is_empty() {
        return Err(CidrError::Empty);
    }
    // The usual case first, without ipnet's backtracking parser: 50 000 CIDRs in one
    // ip-masq-agent config are read on every resync.
    let net = match ipv4_cidr(t) {
        // Aligned, the common case, checked on the IPv4 type directly.
        Some(n) if n.trunc() == n => return Ok(IpNet::V4(n)),
        Some(n) => IpNet::V4(n),
        None if t.contains('/') => t.parse::<IpNet>().map_err(|_| CidrError::Unparsable)?,
        None => {
            let addr = t.parse::<IpAddr>().map_err(|_| CidrError::Unparsable)?;
            match rules.bare_address {
                BareAddress::HostPrefix => IpNet::from(addr),
                BareAddress::Refuse => return Err(CidrError::NoPrefix),
            }
        }
    };
    let aligned = net.trunc();
    if aligned == net {
        return Ok(net);
    }
    match rules.host_bits {
        HostBits::Refuse => Err(CidrError::HostBits { suggested: aligned }),
        HostBits::Truncate => Ok(aligned),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::xorshift;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn host_bits_refused_or_truncated_by_policy() {
        let refuse = CidrRules {
            bare_address: BareAddress::Refuse,
            host_bits: HostBits::Refuse,
        };
        let truncate = CidrRules {
            host_bits: HostBits::Truncate,
            ..refuse
        };
        for (raw, aligned) in [
            ("10.0.0.1/8", "10.0.0.0/8"),
            ("10.0.0.1/8 ", "10.0.0.0/8"),
            ("192.168.1.77/24", "192.168.1.0/24"),
            ("fd00::1/8", "fd00::/8"),
        ] {
            assert_eq!(
                parse(raw, refuse),
                Err(CidrError::HostBits {
                    suggested: net(aligned)
                }),
                "{raw}"
            );
            assert_eq!(parse(raw, truncate), Ok(net(aligned)), "{raw}");
        }
        // Aligned CIDRs are the same under both.
        for raw in ["10.0.0.0/8", "0.0.0.0/0", "1.2.3.4/32", "fd00::/8"] {
            assert_eq!(parse(raw, refuse), Ok(net(raw)), "{raw}");
            assert_eq!(parse(raw, truncate), Ok(net(raw)), "{raw}");
        }
        assert_eq!(CidrRules::OPTION.host_bits, HostBits::Refuse);
        assert_eq!(CidrRules::GO_PARSE_CIDR.host_bits, HostBits::Refuse);
        assert_eq!(CidrRules::API_SERVER.host_bits, HostBits::Truncate);
    }

    #[test]
    fn bare_addresses_are_hosts_or_refused_by_policy() {
        let host = CidrRules::OPTION;
        let refuse = CidrRules {
            bare_address: BareAddress::Refuse,
            ..host
        };
        for (raw, want) in [("10.1.2.3", "10.1.2.3/32"), (" ::1", "::1/128")] {
            assert_eq!(parse(raw, host), Ok(net(want)), "{raw}");
            assert_eq!(parse(raw, refuse), Err(CidrError::NoPrefix), "{raw}");
        }
        for rules in [host, refuse] {
            for empty in ["", "  ", "\t"] {
                assert_eq!(parse(empty, rules), Err(CidrError::Empty), "{empty:?}");
            }
            for bad in [
                "abc",
                "10.0.0.0/33",
                "300.0.0.0/8",
                "10.256.0.0/16",
                "10.0.0.0/",
                "/8",
                "fc00::/129",
                "10.0.0.0/8/8",
            ] {
                assert_eq!(parse(bad, rules), Err(CidrError::Unparsable), "{bad}");
            }
        }
    }

    #[test]
    fn cidrs() {
        // The flags' and variables' wrappers (CidrRules::OPTION) and their messages.
        use crate::parse::{cidr, cidr_v4, cidr_v6};
        assert_eq!(cidr("C", "10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(cidr("C", "10.1.2.3").unwrap().to_string(), "10.1.2.3/32");
        assert_eq!(cidr("C", "::1").unwrap().to_string(), "::1/128");
        let e = cidr("C", "10.0.0.1/8").unwrap_err().to_string();
        assert!(e.contains("did you mean 10.0.0.0/8"), "{e}");
        for bad in [
            "10.0.0.0/33",
            "300.0.0.0/8",
            "abc",
            "10.0.0.0/",
            "fc00::/129",
        ] {
            assert!(cidr("C", bad).is_err(), "{bad}");
        }
        assert!(cidr_v4("C", "fc00::/7").is_err());
        assert!(cidr_v6("C", "10.0.0.0/8").is_err());
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
}
