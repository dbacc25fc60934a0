//! `nftkit redirect`: drop-in for kubernetes-qpoint-init (an init container).
//!
//! Table `inet nftkit-redirect`, base chain `nat-output` (type nat, hook output, priority
//! dstnat = -100). First-match order as upstream's `iptables -t nat -A OUTPUT` script:
//!
//! ```text
//! meta l4proto != tcp return                            # UDP untouched
//! ip daddr @accept-v4 return                            # -d BLOCK -j ACCEPT
//! ip6 daddr @accept-v6 return
//! tcp dport @mapped-ports meta skuid @accept-uids return  # --uid-owner U -j ACCEPT
//! tcp dport @mapped-ports meta skgid @accept-gids return  # --gid-owner G -j ACCEPT
//! tcp dport 80 redirect to :10080                       # -j REDIRECT --to-ports 10080
//! ```
//! iptables equivalent: `-t nat -A OUTPUT -p tcp ...` (see README). Upstream's per-mapping
//! uid/gid exemptions become one rule over the set of mapped ports: the exempt sets are the
//! same for every mapping, so the first match is the same.

use std::net::{Ipv4Addr, Ipv6Addr, ToSocketAddrs};
use std::path::Path;

use ipnet::{Ipv4Net, Ipv6Net};

use crate::error::{Error, Result};
use crate::model::*;
use crate::parse::{self, IdKind, IdRange};

pub const COMMAND: &str = "redirect";

impl super::Job for RedirectArgs {
    fn name(&self) -> &'static str {
        COMMAND
    }

    /// Only TO_DOMAIN resolution touches the outside world.
    fn desired(&self, cx: super::Ctx) -> Result<Ruleset> {
        let cfg = parse(self, cx.env, Path::new("/"))?;
        let targets = resolve(&cfg)?;
        log_config(&cfg, &targets);
        Ok(build(&cfg, targets, cx.table))
    }
}

fn log_config(cfg: &RedirectConfig, t: &Targets) {
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
pub const CHAIN: &str = "nat-output";

const DEFAULT_ACCEPT_UIDS: &str = "1010";
const DEFAULT_ACCEPT_GIDS: &str = "1010";
const DEFAULT_PORT_MAPPING: &str = "10080:80,10443:443";
const DEFAULT_IPV4_BLOCKS: &str = "127.0.0.0/8,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16";
const DEFAULT_IPV6_BLOCKS: &str = "::1/128,fc00::/7";

/// Flags of `nftkit redirect`. Each also reads the upstream environment variable named in
/// its help; an unset or empty variable means the default, a flag given as "" an empty list.
#[derive(clap::Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct RedirectArgs {
    /// UIDs whose sockets are never redirected: numbers, ranges a-b or names
    /// [env: ACCEPT_UIDS] [default: 1010]
    #[arg(long, value_name = "LIST")]
    pub accept_uids: Option<String>,
    /// GIDs whose sockets are never redirected [env: ACCEPT_GIDS] [default: 1010]
    #[arg(long, value_name = "LIST")]
    pub accept_gids: Option<String>,
    /// Comma-separated <to_port>:<destination_port>; a lone <to_port> catches every TCP port
    /// [env: PORT_MAPPING] [default: 10080:80,10443:443]
    #[arg(long, value_name = "LIST")]
    pub port_mapping: Option<String>,
    /// DNAT IPv4 traffic to this address instead of redirecting it locally [env: TO_IPV4_ADDR]
    #[arg(long, value_name = "ADDR")]
    pub to_ipv4_addr: Option<String>,
    /// DNAT IPv6 traffic to this address [env: TO_IPV6_ADDR]
    #[arg(long, value_name = "ADDR")]
    pub to_ipv6_addr: Option<String>,
    /// Resolve once; its first A / AAAA address is the DNAT target of a family without
    /// --to-ipv4-addr / --to-ipv6-addr [env: TO_DOMAIN]
    #[arg(long, value_name = "NAME")]
    pub to_domain: Option<String>,
    /// IPv4 destinations never redirected
    /// [env: IPV4_ACCEPT_BLOCKS] [default: 127.0.0.0/8,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16]
    #[arg(long, value_name = "CIDRS")]
    pub ipv4_accept_blocks: Option<String>,
    /// IPv6 destinations never redirected [env: IPV6_ACCEPT_BLOCKS] [default: ::1/128,fc00::/7]
    #[arg(long, value_name = "CIDRS")]
    pub ipv6_accept_blocks: Option<String>,
    /// Both families' blocks in one list, sorted by family (what upstream's script really
    /// read); a per-family option wins for its family [env: ACCEPT_BLOCKS]
    #[arg(long, value_name = "CIDRS")]
    pub accept_blocks: Option<String>,
}

/// One PORT_MAPPING entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortMapping {
    /// REDIRECT/DNAT port.
    pub to: u16,
    /// Destination port matched; `None` = every TCP port.
    pub dest: Option<u16>,
}

/// As PORT_MAPPING writes it: `10080:80`, or a lone `10080`.
impl std::fmt::Display for PortMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.dest {
            Some(d) => write!(f, "{}:{d}", self.to),
            None => write!(f, "{}", self.to),
        }
    }
}

/// Validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectConfig {
    pub accept_uids: Vec<IdRange>,
    pub accept_gids: Vec<IdRange>,
    pub mappings: Vec<PortMapping>,
    pub to_ipv4: Option<Ipv4Addr>,
    pub to_ipv6: Option<Ipv6Addr>,
    pub to_domain: Option<String>,
    pub blocks_v4: Vec<Ipv4Net>,
    pub blocks_v6: Vec<Ipv6Net>,
}

/// DNAT targets per family after TO_DOMAIN resolution; `None` = REDIRECT locally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Targets {
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
}

/// A flag's value if given (even empty), else the variable's if non-empty.
fn pick(
    flag: &Option<String>,
    var: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<(String, String)> {
    if let Some(v) = flag {
        let name = format!("--{}", var.to_ascii_lowercase().replace('_', "-"));
        return Some((name, v.clone()));
    }
    env(var)
        .filter(|v| !v.is_empty())
        .map(|v| (var.to_string(), v))
}

/// Validate flags and environment into a config. `db_root` is where /etc/passwd and
/// /etc/group are looked up (`/` in production).
pub fn parse(
    args: &RedirectArgs,
    env: &dyn Fn(&str) -> Option<String>,
    db_root: &Path,
) -> Result<RedirectConfig> {
    let ids = |flag: &Option<String>, var: &str, default: &str, kind| -> Result<Vec<IdRange>> {
        let (what, raw) = pick(flag, var, env).unwrap_or((var.to_string(), default.to_string()));
        let mut out = parse::list(&what, &raw)?
            .into_iter()
            .map(|item| parse::id(&what, item, kind, db_root))
            .collect::<Result<Vec<_>>>()?;
        out.sort();
        out.dedup();
        Ok(out)
    };
    let accept_uids = ids(
        &args.accept_uids,
        "ACCEPT_UIDS",
        DEFAULT_ACCEPT_UIDS,
        IdKind::User,
    )?;
    let accept_gids = ids(
        &args.accept_gids,
        "ACCEPT_GIDS",
        DEFAULT_ACCEPT_GIDS,
        IdKind::Group,
    )?;

    let (what, raw) = pick(&args.port_mapping, "PORT_MAPPING", env)
        .unwrap_or(("PORT_MAPPING".into(), DEFAULT_PORT_MAPPING.into()));
    let mappings = parse::list(&what, &raw)?
        .into_iter()
        .map(|entry| port_mapping(&what, entry))
        .collect::<Result<Vec<_>>>()?;
    if mappings.is_empty() {
        return Err(Error::invalid(
            &what,
            &raw,
            "at least one <to_port>[:<destination_port>] entry is needed",
        ));
    }

    let to_ipv4 = pick(&args.to_ipv4_addr, "TO_IPV4_ADDR", env)
        .filter(|(_, v)| !v.trim().is_empty())
        .map(|(w, v)| parse::ipv4(&w, &v))
        .transpose()?;
    let to_ipv6 = pick(&args.to_ipv6_addr, "TO_IPV6_ADDR", env)
        .filter(|(_, v)| !v.trim().is_empty())
        .map(|(w, v)| parse::ipv6(&w, &v))
        .transpose()?;
    let to_domain = pick(&args.to_domain, "TO_DOMAIN", env)
        .map(|(w, v)| (w, v.trim().to_string()))
        .filter(|(_, v)| !v.is_empty())
        .map(|(w, v)| domain(&w, v))
        .transpose()?;

    // ACCEPT_BLOCKS feeds both families; a per-family option, when set, wins for its family.
    let mut mixed_v4 = None;
    let mut mixed_v6 = None;
    if let Some((what, raw)) = pick(&args.accept_blocks, "ACCEPT_BLOCKS", env) {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for item in parse::list(&what, &raw)? {
            match parse::cidr(&what, item)? {
                ipnet::IpNet::V4(n) => v4.push(n),
                ipnet::IpNet::V6(n) => v6.push(n),
            }
        }
        // A family the mixed list does not name keeps its default.
        if !v4.is_empty() || raw.trim().is_empty() {
            mixed_v4 = Some(v4);
        }
        if !v6.is_empty() || raw.trim().is_empty() {
            mixed_v6 = Some(v6);
        }
    }
    let blocks_v4 = match pick(&args.ipv4_accept_blocks, "IPV4_ACCEPT_BLOCKS", env) {
        Some((what, raw)) => parse::list(&what, &raw)?
            .into_iter()
            .map(|i| parse::cidr_v4(&what, i))
            .collect::<Result<Vec<_>>>()?,
        None => match mixed_v4 {
            Some(v) => v,
            None => default_list(DEFAULT_IPV4_BLOCKS, parse::cidr_v4),
        },
    };
    let blocks_v6 = match pick(&args.ipv6_accept_blocks, "IPV6_ACCEPT_BLOCKS", env) {
        Some((what, raw)) => parse::list(&what, &raw)?
            .into_iter()
            .map(|i| parse::cidr_v6(&what, i))
            .collect::<Result<Vec<_>>>()?,
        None => match mixed_v6 {
            Some(v) => v,
            None => default_list(DEFAULT_IPV6_BLOCKS, parse::cidr_v6),
        },
    };

    Ok(RedirectConfig {
        accept_uids,
        accept_gids,
        mappings,
        to_ipv4,
        to_ipv6,
        to_domain,
        // Interval sets refuse overlapping elements: merge first.
        blocks_v4: Ipv4Net::aggregate(&blocks_v4),
        blocks_v6: Ipv6Net::aggregate(&blocks_v6),
    })
}

fn default_list<T>(raw: &str, f: fn(&str, &str) -> Result<T>) -> Vec<T> {
    raw.split(',')
        .filter_map(|i| f("default", i).ok())
        .collect()
}

fn port_mapping(what: &str, entry: &str) -> Result<PortMapping> {
    let bad = |why: &str| Error::invalid(format!("{what} entry"), entry, why);
    let fields: Vec<&str> = entry.split(':').map(str::trim).collect();
    let port = |s: &str, which: &str| -> Result<u16> {
        parse::port(what, s).map_err(|_| bad(&format!("{which} port must be 1-65535")))
    };
    match fields.as_slice() {
        [to] => Ok(PortMapping {
            to: port(to, "redirect")?,
            dest: None,
        }),
        [to, dest] => Ok(PortMapping {
            to: port(to, "redirect")?,
            dest: Some(port(dest, "destination")?),
        }),
        _ => Err(bad("expected <to_port> or <to_port>:<destination_port>")),
    }
}

fn domain(what: &str, name: String) -> Result<String> {
    let ok = name.len() <= 253
        && name.trim_end_matches('.').split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if ok {
        Ok(name)
    } else {
        Err(Error::invalid(
            what,
            &name,
            "expected a DNS name such as proxy.example.com",
        ))
    }
}

/// Resolve TO_DOMAIN (once, through the system resolver) for the families that have no
/// explicit address. A name that does not resolve at all is a runtime error (exit 1).
pub fn resolve(cfg: &RedirectConfig) -> Result<Targets> {
    let mut t = Targets {
        v4: cfg.to_ipv4,
        v6: cfg.to_ipv6,
    };
    let Some(name) = &cfg.to_domain else {
        return Ok(t);
    };
    if t.v4.is_some() && t.v6.is_some() {
        return Ok(t);
    }
    tracing::info!(domain = %name, "resolving TO_DOMAIN");
    let addrs: Vec<_> = (name.as_str(), 0u16)
        .to_socket_addrs()
        .map_err(|e| Error::runtime(format!("TO_DOMAIN {name:?} does not resolve: {e}")))?
        .map(|sa| sa.ip())
        .collect();
    if t.v4.is_none() {
        t.v4 = addrs.iter().find_map(|a| match a {
            std::net::IpAddr::V4(v) => Some(*v),
            _ => None,
        });
    }
    if t.v6.is_none() {
        t.v6 = addrs.iter().find_map(|a| match a {
            std::net::IpAddr::V6(v) => Some(*v),
            _ => None,
        });
    }
    Ok(t)
}

/// The owned table for `cfg` with resolved `targets`. Pure.
pub fn build(cfg: &RedirectConfig, targets: Targets, table: &str) -> Ruleset {
    let mut sets = Vec::new();
    let mut rules = vec![Rule {
        matches: vec![Match::L4Proto {
            proto: L4Proto::Tcp,
            negate: true,
        }],
        action: Action::Return,
    }];

    if !cfg.blocks_v4.is_empty() {
        sets.push(Set {
            name: "accept-v4".into(),
            key: KeyType::Ipv4Addr,
            interval: true,
            elements: cfg.blocks_v4.iter().copied().map(Element::V4).collect(),
        });
        rules.push(Rule {
            matches: vec![Match::DaddrInSet {
                family: IpFamily::V4,
                set: "accept-v4".into(),
            }],
            action: Action::Return,
        });
    }
    if !cfg.blocks_v6.is_empty() {
        sets.push(Set {
            name: "accept-v6".into(),
            key: KeyType::Ipv6Addr,
            interval: true,
            elements: cfg.blocks_v6.iter().copied().map(Element::V6).collect(),
        });
        rules.push(Rule {
            matches: vec![Match::DaddrInSet {
                family: IpFamily::V6,
                set: "accept-v6".into(),
            }],
            action: Action::Return,
        });
    }

    // Owner exemptions apply on mapped ports only; a lone to_port maps every port.
    let every_port = cfg.mappings.iter().any(|m| m.dest.is_none());
    let has_exemptions = !cfg.accept_uids.is_empty() || !cfg.accept_gids.is_empty();
    let port_scope: Vec<Match> = if every_port || !has_exemptions {
        Vec::new()
    } else {
        let mut ports: Vec<u16> = cfg.mappings.iter().filter_map(|m| m.dest).collect();
        ports.sort_unstable();
        ports.dedup();
        sets.push(Set {
            name: "mapped-ports".into(),
            key: KeyType::InetService,
            interval: false,
            elements: ports.into_iter().map(Element::Port).collect(),
        });
        vec![Match::DportInSet {
            proto: L4Proto::Tcp,
            set: "mapped-ports".into(),
        }]
    };
    for (owner, ranges, set_name, key) in [
        (Owner::Uid, &cfg.accept_uids, "accept-uids", KeyType::Uid),
        (Owner::Gid, &cfg.accept_gids, "accept-gids", KeyType::Gid),
    ] {
        let singles: Vec<Element> = ranges
            .iter()
            .filter(|r| r.first == r.last)
            .map(|r| Element::Id(r.first))
            .collect();
        if !singles.is_empty() {
            sets.push(Set {
                name: set_name.into(),
                key,
                interval: false,
                elements: singles,
            });
            let mut matches = port_scope.clone();
            matches.push(Match::OwnerInSet {
                owner,
                set: set_name.into(),
            });
            rules.push(Rule {
                matches,
                action: Action::Return,
            });
        }
        for r in ranges.iter().filter(|r| r.first != r.last) {
            let mut matches = port_scope.clone();
            matches.push(Match::OwnerRange {
                owner,
                first: r.first,
                last: r.last,
            });
            rules.push(Rule {
                matches,
                action: Action::Return,
            });
        }
    }

    for m in &cfg.mappings {
        // A lone to_port still needs a TCP match: nft maps ports only after one.
        let dport = vec![match m.dest {
            Some(port) => Match::Dport {
                proto: L4Proto::Tcp,
                port,
            },
            None => Match::L4Proto {
                proto: L4Proto::Tcp,
                negate: false,
            },
        }];
        match (targets.v4, targets.v6) {
            (None, None) => rules.push(Rule {
                matches: dport,
                action: Action::Redirect { port: m.to },
            }),
            (v4, v6) => {
                for (family, target) in [
                    (IpFamily::V4, v4.map(Into::into)),
                    (IpFamily::V6, v6.map(Into::into)),
                ] {
                    let mut matches = vec![Match::NfProto(family)];
                    matches.extend(dport.iter().cloned());
                    let action = match target {
                        Some(addr) => Action::Dnat { addr, port: m.to },
                        None => Action::Redirect { port: m.to },
                    };
                    rules.push(Rule { matches, action });
                }
            }
        }
    }

    Ruleset {
        table: table.to_string(),
        comment: format!("managed by nftkit {COMMAND}"),
        sets,
        maps: Vec::new(),
        chains: vec![Chain {
            name: CHAIN.into(),
            base: Some(BaseChain {
                kind: ChainType::Nat,
                hook: Hook::Output,
                priority: priority::DSTNAT,
            }),
            rules,
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(vars: &[(&str, &str)], args: RedirectArgs) -> Result<RedirectConfig> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse(&args, &|k| map.get(k).cloned(), Path::new("/nonexistent"))
    }

    fn err(vars: &[(&str, &str)]) -> String {
        let e = cfg(vars, RedirectArgs::default()).unwrap_err();
        assert_eq!(e.exit_code(), 2, "{e}");
        e.to_string()
    }

    #[test]
    fn defaults_match_upstream() {
        let c = cfg(&[], RedirectArgs::default()).unwrap();
        assert_eq!(
            c.accept_uids,
            vec![IdRange {
                first: 1010,
                last: 1010
            }]
        );
        assert_eq!(
            c.accept_gids,
            vec![IdRange {
                first: 1010,
                last: 1010
            }]
        );
        assert_eq!(
            c.mappings,
            vec![
                PortMapping {
                    to: 10080,
                    dest: Some(80)
                },
                PortMapping {
                    to: 10443,
                    dest: Some(443)
                }
            ]
        );
        assert_eq!(c.blocks_v4.len(), 4);
        assert_eq!(
            c.blocks_v6
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>(),
            ["::1/128", "fc00::/7"]
        );
        assert_eq!((c.to_ipv4, c.to_ipv6, c.to_domain), (None, None, None));
    }

    #[test]
    fn empty_env_means_default_but_empty_flag_means_empty() {
        let c = cfg(&[("ACCEPT_UIDS", "")], RedirectArgs::default()).unwrap();
        assert_eq!(c.accept_uids.len(), 1);
        let c = cfg(
            &[],
            RedirectArgs {
                accept_uids: Some(String::new()),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(c.accept_uids.is_empty());
    }

    #[test]
    fn flag_wins_over_env() {
        let args = RedirectArgs {
            port_mapping: Some("15001".into()),
            ..Default::default()
        };
        let c = cfg(&[("PORT_MAPPING", "abc:80")], args).unwrap();
        assert_eq!(
            c.mappings,
            vec![PortMapping {
                to: 15001,
                dest: None
            }]
        );
    }

    #[test]
    fn port_mapping_errors_name_variable_and_value() {
        for (bad, needle) in [
            ("abc:80", "redirect port"),
            ("10080:http", "destination port"),
            ("10080:80:90", "expected <to_port>"),
            (":80", "redirect port"),
            ("0:80", "redirect port"),
            ("70000:80", "redirect port"),
            ("10080:0", "destination port"),
            ("10080,,10443", "empty item"),
        ] {
            let e = err(&[("PORT_MAPPING", bad)]);
            assert!(e.contains("PORT_MAPPING"), "{bad}: {e}");
            assert!(e.contains(needle), "{bad}: {e}");
        }
        let e = err(&[("PORT_MAPPING", "10080:http")]);
        assert_eq!(
            e,
            r#"invalid PORT_MAPPING entry "10080:http": destination port must be 1-65535"#
        );
    }

    #[test]
    fn tolerant_lists() {
        let c = cfg(
            &[
                ("PORT_MAPPING", " 10080:80 , 10443:443,"),
                ("ACCEPT_UIDS", "1010, 2000-2999"),
            ],
            Default::default(),
        )
        .unwrap();
        assert_eq!(c.mappings.len(), 2);
        assert_eq!(
            c.accept_uids,
            vec![
                IdRange {
                    first: 1010,
                    last: 1010
                },
                IdRange {
                    first: 2000,
                    last: 2999
                }
            ]
        );
    }

    #[test]
    fn id_errors() {
        assert!(err(&[("ACCEPT_UIDS", "x1")]).contains("ACCEPT_UIDS"));
        assert!(err(&[("ACCEPT_GIDS", "-1")]).contains("ACCEPT_GIDS"));
        assert!(err(&[("ACCEPT_UIDS", "0,,5")]).contains("empty item"));
    }

    #[test]
    fn cidr_errors() {
        let e = err(&[("IPV4_ACCEPT_BLOCKS", "10.0.0.1/8")]);
        assert!(
            e.contains("IPV4_ACCEPT_BLOCKS") && e.contains("10.0.0.0/8"),
            "{e}"
        );
        assert!(err(&[("IPV4_ACCEPT_BLOCKS", "fc00::/7")]).contains("IPv4"));
        assert!(err(&[("IPV6_ACCEPT_BLOCKS", "10.0.0.0/8")]).contains("IPv6"));
        assert!(err(&[("ACCEPT_BLOCKS", "10.0.0.0/33")]).contains("ACCEPT_BLOCKS"));
        assert!(err(&[("TO_IPV4_ADDR", "2001:db8::1")]).contains("TO_IPV4_ADDR"));
        assert!(err(&[("TO_IPV6_ADDR", "203.0.113.1")]).contains("TO_IPV6_ADDR"));
        assert!(err(&[("TO_DOMAIN", "bad domain!")]).contains("TO_DOMAIN"));
    }

    #[test]
    fn accept_blocks_sorted_by_family_and_per_family_wins() {
        let c = cfg(
            &[("ACCEPT_BLOCKS", "10.0.0.0/8, fd00::/8")],
            Default::default(),
        )
        .unwrap();
        assert_eq!(
            c.blocks_v4
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>(),
            ["10.0.0.0/8"]
        );
        assert_eq!(
            c.blocks_v6
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>(),
            ["fd00::/8"]
        );
        // A family that ACCEPT_BLOCKS does not name keeps its default.
        let c = cfg(&[("ACCEPT_BLOCKS", "10.0.0.0/8")], Default::default()).unwrap();
        assert_eq!(c.blocks_v6.len(), 2);
        let c = cfg(
            &[
                ("ACCEPT_BLOCKS", "10.0.0.0/8"),
                ("IPV4_ACCEPT_BLOCKS", "192.0.2.0/24"),
            ],
            Default::default(),
        )
        .unwrap();
        assert_eq!(
            c.blocks_v4
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>(),
            ["192.0.2.0/24"]
        );
    }

    #[test]
    fn overlapping_blocks_are_merged() {
        let c = cfg(
            &[("IPV4_ACCEPT_BLOCKS", "10.0.0.0/8,10.1.0.0/16,10.0.0.0/8")],
            Default::default(),
        )
        .unwrap();
        assert_eq!(
            c.blocks_v4
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>(),
            ["10.0.0.0/8"]
        );
    }

    #[test]
    fn build_default_order() {
        let c = cfg(&[], Default::default()).unwrap();
        let rs = build(&c, Targets::default(), "nftkit-redirect");
        let text: Vec<String> = rs.chains[0]
            .rules
            .iter()
            .map(crate::render::rule_text)
            .collect();
        assert_eq!(
            text,
            [
                "meta l4proto != tcp return",
                "ip daddr @accept-v4 return",
                "ip6 daddr @accept-v6 return",
                "tcp dport @mapped-ports meta skuid @accept-uids return",
                "tcp dport @mapped-ports meta skgid @accept-gids return",
                "tcp dport 80 redirect to :10080",
                "tcp dport 443 redirect to :10443",
            ]
        );
    }

    #[test]
    fn build_dnat_per_family_and_lone_port() {
        let c = cfg(
            &[
                ("PORT_MAPPING", "15001"),
                ("ACCEPT_UIDS", "1010,2000-2999"),
                ("ACCEPT_GIDS", ""),
            ],
            Default::default(),
        )
        .unwrap();
        let t = Targets {
            v4: Some("203.0.113.10".parse().unwrap()),
            v6: None,
        };
        let rs = build(&c, t, "x");
        let text: Vec<String> = rs.chains[0]
            .rules
            .iter()
            .map(crate::render::rule_text)
            .collect();
        assert_eq!(
            &text[3..],
            [
                "meta skuid @accept-uids return",
                "meta skuid 2000-2999 return",
                "meta skgid @accept-gids return",
                "meta nfproto ipv4 meta l4proto tcp dnat ip to 203.0.113.10:15001",
                "meta nfproto ipv6 meta l4proto tcp redirect to :15001",
            ]
        );
        assert!(rs.set("mapped-ports").is_none());
    }
}
