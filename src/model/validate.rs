//! [`Ruleset::validate`]: what the kernel would refuse, found before anything is sent, so
//! the fake backend fails where the kernel would and a bug in a builder is one clear
//! message, not an errno from the middle of a batch (knftables' Fake does the same).

use std::collections::{HashMap, HashSet};

use super::*;

/// The kernel's limit for table, chain and set names (NFT_NAME_MAXLEN, with the NUL).
pub const NAME_MAX: usize = 255;

/// The kernel's limit for a log prefix (NF_LOG_PREFIXLEN, with the NUL).
pub const LOG_PREFIX_MAX: usize = 127;

impl Ruleset {
    /// Ok, or the first problem the kernel would refuse the batch for: names empty, too
    /// long or repeated; a jump/goto to a chain that is missing or a base chain, or a
    /// loop of them (ELOOP); a set that is missing or of the wrong key type; elements of
    /// the wrong type or ranges in a set without `flags interval`; counter names empty or
    /// too long (a rule's named counter is declared by the table); empty ranges; a nat
    /// chain at forward; NAT and notrack actions at hooks where the kernel refuses them
    /// (also through regular chains, which are validated for every hook reaching them);
    /// verdict maps: names shared with sets, key types other than addresses, keys of
    /// the wrong family, prefixes or twice, entries going to a missing or base chain, a
    /// vmap rule naming a missing map or one of the other family (a map's chains count
    /// as goto targets of its vmap rules for loops and hooks).
    pub fn validate(&self) -> Result<(), String> {
        name("table", &self.table)?;
        let mut chains: HashMap<&str, &Chain> = HashMap::new();
        for c in &self.chains {
            name("chain", &c.name)?;
            if chains.insert(&c.name, c).is_some() {
                return Err(format!("chain {} is declared twice", c.name));
            }
            if let Some(b) = c.base
                && b.kind == ChainType::Nat
                && b.hook == Hook::Forward
            {
                return Err(format!("chain {}: a nat chain cannot hook forward", c.name));
            }
        }
        let mut sets: HashMap<&str, &Set> = HashMap::new();
        for s in &self.sets {
            name("set", &s.name)?;
            if sets.insert(&s.name, s).is_some() {
                return Err(format!("set {} is declared twice", s.name));
            }
            for e in &s.elements {
                element_fits(s, e)?;
            }
        }
        let mut maps: HashMap<&str, &VerdictMap> = HashMap::new();
        for m in &self.maps {
            name("map", &m.name)?;
            if sets.contains_key(m.name.as_str()) {
                return Err(format!("map {} has the name of a set", m.name));
            }
            if maps.insert(&m.name, m).is_some() {
                return Err(format!("map {} is declared twice", m.name));
            }
            map_fits(m, &chains)?;
        }
        for c in &self.chains {
            for r in &c.rules {
                rule_fits(c, r, &chains, &sets, &maps)?;
            }
        }
        for counter in self.counters() {
            name("counter", counter)?;
        }
        let mut limits: HashMap<&str, u32> = HashMap::new();
        for m in self
            .chains
            .iter()
            .flat_map(|c| &c.rules)
            .flat_map(|r| &r.matches)
        {
            match m {
                Match::Limit {
                    name: n,
                    per_second,
                } => {
                    name("limit", n)?;
                    if *per_second == 0 {
                        return Err(format!("limit {n}: a rate of 0 packets a second"));
                    }
                    if *limits.entry(n).or_insert(*per_second) != *per_second {
                        return Err(format!("limit {n} is declared with two rates"));
                    }
                }
                Match::Log { prefix, .. } if prefix.len() > LOG_PREFIX_MAX => {
                    return Err(format!(
                        "log prefix {prefix:?} is {} bytes, the kernel takes at most {LOG_PREFIX_MAX}",
                        prefix.len()
                    ));
                }
                _ => {}
            }
        }
        self.check_reach(&chains, &maps)
    }

    /// Walk from every base chain through jumps and gotos: no loops, and every NAT or
    /// notrack action sits in a chain only hooks that allow it reach.
    fn check_reach(
        &self,
        chains: &HashMap<&str, &Chain>,
        maps: &HashMap<&str, &VerdictMap>,
    ) -> Result<(), String> {
        let mut reached: HashMap<&str, HashSet<(ChainType, Hook)>> = HashMap::new();
        for c in &self.chains {
            let Some(b) = c.base else { continue };
            let mut path = Vec::new();
            let graph = Graph { chains, maps };
            walk(c, (b.kind, b.hook), &graph, &mut reached, &mut path)?;
        }
        for c in &self.chains {
            let hooks = reached.get(c.name.as_str());
            for r in &c.rules {
                let Some(allowed) = allowed_at(&r.action) else {
                    continue;
                };
                for (kind, hook) in hooks.into_iter().flatten() {
                    if !allowed(*kind, *hook) {
                        return Err(format!(
                            "chain {}: {} is not allowed in a {} chain at hook {}",
                            c.name,
                            action_name(&r.action),
                            kind.nft_name(),
                            hook.nft_name()
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

fn name(what: &str, n: &str) -> Result<(), String> {
    if n.is_empty() {
        Err(format!("a {what} name is empty"))
    } else if n.len() > NAME_MAX {
        Err(format!(
            "{what} name {}... is {} bytes, the kernel takes at most {NAME_MAX}",
            &n[..n.char_indices().nth(20).map_or(n.len(), |(i, _)| i)],
            n.len()
        ))
    } else {
        Ok(())
    }
}

fn element_fits(s: &Set, e: &Element) -> Result<(), String> {
    let (fits, single) = match (s.key, e) {
        (KeyType::Ipv4Addr, Element::V4(n)) => (true, n.prefix_len() == 32),
        (KeyType::Ipv6Addr, Element::V6(n)) => (true, n.prefix_len() == 128),
        (KeyType::InetService, Element::Port(_)) => (true, true),
        (KeyType::Uid | KeyType::Gid, Element::Id(_)) => (true, true),
        _ => (false, true),
    };
    if !fits {
        return Err(format!(
            "set {} (type {}) cannot hold {:?}",
            s.name,
            s.key.nft_name(),
            e
        ));
    }
    if !single && !s.interval {
        return Err(format!(
            "set {} holds a prefix but has no interval flag",
            s.name
        ));
    }
    Ok(())
}

/// A verdict map's key type, its entries' keys (single addresses of that type, each
/// once) and the chains they go to (declared regular chains).
fn map_fits(m: &VerdictMap, chains: &HashMap<&str, &Chain>) -> Result<(), String> {
    if !matches!(m.key, KeyType::Ipv4Addr | KeyType::Ipv6Addr) {
        return Err(format!(
            "map {}: a verdict map's key is ipv4_addr or ipv6_addr, not {}",
            m.name,
            m.key.nft_name()
        ));
    }
    let mut keys = std::collections::BTreeSet::new();
    for (e, target) in &m.entries {
        let single = match (m.key, e) {
            (KeyType::Ipv4Addr, Element::V4(n)) => n.prefix_len() == 32,
            (KeyType::Ipv6Addr, Element::V6(n)) => n.prefix_len() == 128,
            _ => {
                return Err(format!(
                    "map {} (type {}) cannot hold {:?}",
                    m.name,
                    m.key.nft_name(),
                    e
                ));
            }
        };
        if !single {
            return Err(format!(
                "map {}: key {} is a prefix, not a single address",
                m.name, e
            ));
        }
        if !keys.insert(e) {
            return Err(format!("map {}: key {} is listed twice", m.name, e));
        }
        match chains.get(target.as_str()) {
            None => {
                return Err(format!("map {}: goto to missing chain {target}", m.name));
            }
            Some(t) if t.base.is_some() => {
                return Err(format!("map {}: goto to base chain {target}", m.name));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

fn rule_fits(
    c: &Chain,
    r: &Rule,
    chains: &HashMap<&str, &Chain>,
    sets: &HashMap<&str, &Set>,
    maps: &HashMap<&str, &VerdictMap>,
) -> Result<(), String> {
    let set_of = |set: &str, key: KeyType| -> Result<(), String> {
        match sets.get(set) {
            None => Err(format!("chain {}: set @{set} does not exist", c.name)),
            Some(s) if s.key != key => Err(format!(
                "chain {}: set @{set} has type {}, the rule needs {}",
                c.name,
                s.key.nft_name(),
                key.nft_name()
            )),
            Some(_) => Ok(()),
        }
    };
    let addr_key = |f: IpFamily| match f {
        IpFamily::V4 => KeyType::Ipv4Addr,
        IpFamily::V6 => KeyType::Ipv6Addr,
    };
    for m in &r.matches {
        match m {
            Match::DaddrInSet { family, set } | Match::SaddrInSet { family, set } => {
                set_of(set, addr_key(*family))?
            }
            Match::DportInSet { set, .. } => set_of(set, KeyType::InetService)?,
            Match::OwnerInSet { owner, set } => set_of(
                set,
                match owner {
                    Owner::Uid => KeyType::Uid,
                    Owner::Gid => KeyType::Gid,
                },
            )?,
            Match::DportRange { first, last, .. } if first >= last => {
                return Err(format!("chain {}: empty port range {first}-{last}", c.name));
            }
            Match::OwnerRange { first, last, .. } if first > last => {
                return Err(format!("chain {}: empty id range {first}-{last}", c.name));
            }
            Match::CtState(states) if states.is_empty() => {
                return Err(format!("chain {}: ct state without a state", c.name));
            }
            _ => {}
        }
    }
    match &r.action {
        Action::Jump(t) | Action::Goto(t) => match chains.get(t.as_str()) {
            None => Err(format!("chain {}: jump to missing chain {t}", c.name)),
            Some(target) if target.base.is_some() => {
                Err(format!("chain {}: jump to base chain {t}", c.name))
            }
            Some(_) => Ok(()),
        },
        Action::GotoMap { family, map, .. } => match maps.get(map.as_str()) {
            None => Err(format!("chain {}: map @{map} does not exist", c.name)),
            Some(m) if m.key != addr_key(*family) => Err(format!(
                "chain {}: map @{map} has type {}, the rule needs {}",
                c.name,
                m.key.nft_name(),
                addr_key(*family).nft_name()
            )),
            Some(_) => Ok(()),
        },
        Action::DnatMap {
            family, entries, ..
        } => {
            let of_family = |a: &std::net::SocketAddr| match family {
                IpFamily::V4 => a.is_ipv4(),
                IpFamily::V6 => a.is_ipv6(),
            };
            if !r.matches.is_empty() {
                Err(format!(
                    "chain {}: a DNAT map rule takes no matches",
                    c.name
                ))
            } else if entries.is_empty() {
                Err(format!("chain {}: an empty DNAT map", c.name))
            } else if !entries.iter().all(|(k, v)| of_family(k) && of_family(v)) {
                Err(format!("chain {}: a DNAT map mixes families", c.name))
            } else {
                Ok(())
            }
        }
        _ => Ok(()),
    }
}

/// The chains and verdict maps by name: what jumps, gotos and map lookups lead to.
struct Graph<'g, 'a> {
    chains: &'g HashMap<&'a str, &'a Chain>,
    maps: &'g HashMap<&'a str, &'a VerdictMap>,
}

impl<'a> Graph<'_, 'a> {
    /// The chains a rule's action can continue in: its jump or goto target, or every
    /// chain of its verdict map.
    fn next(&self, a: &Action) -> Vec<&'a Chain> {
        match a {
            Action::Jump(t) | Action::Goto(t) => {
                self.chains.get(t.as_str()).copied().into_iter().collect()
            }
            Action::GotoMap { map, .. } => self
                .maps
                .get(map.as_str())
                .into_iter()
                .flat_map(|m| &m.entries)
                .filter_map(|(_, t)| self.chains.get(t.as_str()).copied())
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// Record that `c` is reached from a base chain of (`kind`, `hook`), and follow its jumps,
/// gotos and verdict maps.
fn walk<'a>(
    c: &'a Chain,
    at: (ChainType, Hook),
    graph: &Graph<'_, 'a>,
    reached: &mut HashMap<&'a str, HashSet<(ChainType, Hook)>>,
    path: &mut Vec<&'a str>,
) -> Result<(), String> {
    if path.contains(&c.name.as_str()) {
        return Err(format!(
            "chains {} -> {} form a loop",
            path.join(" -> "),
            c.name
        ));
    }
    if !reached.entry(&c.name).or_default().insert(at) && !path.is_empty() {
        return Ok(()); // already walked from this hook
    }
    path.push(&c.name);
    for r in &c.rules {
        for next in graph.next(&r.action) {
            walk(next, at, graph, reached, path)?;
        }
    }
    path.pop();
    Ok(())
}

/// Where the kernel allows an action (its `validate` callbacks), None for anywhere.
fn allowed_at(a: &Action) -> Option<fn(ChainType, Hook) -> bool> {
    match a {
        Action::Masquerade { .. } => Some(|k, h| k == ChainType::Nat && h == Hook::Postrouting),
        Action::Redirect { .. } | Action::Dnat { .. } | Action::DnatMap { .. } => {
            Some(|k, h| k == ChainType::Nat && matches!(h, Hook::Prerouting | Hook::Output))
        }
        Action::Notrack => Some(|_, h| matches!(h, Hook::Prerouting | Hook::Output)),
        _ => None,
    }
}

fn action_name(a: &Action) -> &'static str {
    match a {
        Action::Masquerade { .. } => "masquerade",
        Action::Redirect { .. } => "redirect",
        Action::Dnat { .. } | Action::DnatMap { .. } => "dnat",
        Action::Notrack => "notrack",
        _ => "this action",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fixtures::{regular, rs, rule, v4map, v4set, vmap, with_maps};

    fn base(name: &str, kind: ChainType, hook: Hook, rules: Vec<Rule>) -> Chain {
        Chain {
            name: name.into(),
            base: Some(BaseChain {
                kind,
                hook,
                priority: 0,
            }),
            rules,
        }
    }

    #[test]
    fn a_sound_ruleset_passes() {
        let r = rs(
            vec![v4set("nomasq", true, &["10.0.0.0/8"])],
            vec![
                base(
                    "post",
                    ChainType::Nat,
                    Hook::Postrouting,
                    vec![rule(vec![], Action::Jump("masq".into()))],
                ),
                regular(
                    "masq",
                    vec![
                        rule(
                            vec![Match::DaddrInSet {
                                family: IpFamily::V4,
                                set: "nomasq".into(),
                            }],
                            Action::Return,
                        ),
                        rule(
                            vec![],
                            Action::Masquerade {
                                fully_random: false,
                            },
                        ),
                    ],
                ),
            ],
        );
        assert_eq!(r.validate(), Ok(()));
    }

    #[test]
    fn what_the_kernel_refuses_is_named() {
        let jump = |t: &str| rule(vec![], Action::Jump(t.into()));
        let cases: Vec<(Ruleset, &str)> = vec![
            (
                rs(
                    vec![],
                    vec![base(
                        "a",
                        ChainType::Filter,
                        Hook::Input,
                        vec![jump("nope")],
                    )],
                ),
                "jump to missing chain nope",
            ),
            (
                rs(
                    vec![],
                    vec![
                        base("a", ChainType::Filter, Hook::Input, vec![jump("b")]),
                        base("b", ChainType::Filter, Hook::Output, vec![]),
                    ],
                ),
                "jump to base chain b",
            ),
            (
                rs(
                    vec![],
                    vec![
                        base("a", ChainType::Filter, Hook::Input, vec![jump("b")]),
                        regular("b", vec![jump("c")]),
                        regular("c", vec![jump("b")]),
                    ],
                ),
                "a -> b -> c -> b form a loop",
            ),
            (
                rs(
                    vec![],
                    vec![base(
                        "a",
                        ChainType::Filter,
                        Hook::Input,
                        vec![rule(
                            vec![Match::DaddrInSet {
                                family: IpFamily::V4,
                                set: "s".into(),
                            }],
                            Action::Accept,
                        )],
                    )],
                ),
                "set @s does not exist",
            ),
            (
                rs(
                    vec![v4set("s", true, &["10.0.0.0/8"])],
                    vec![base(
                        "a",
                        ChainType::Filter,
                        Hook::Input,
                        vec![rule(
                            vec![Match::DportInSet {
                                proto: L4Proto::Tcp,
                                set: "s".into(),
                            }],
                            Action::Accept,
                        )],
                    )],
                ),
                "set @s has type ipv4_addr, the rule needs inet_service",
            ),
            (
                rs(vec![v4set("s", false, &["10.0.0.0/8"])], vec![]),
                "set s holds a prefix but has no interval flag",
            ),
            (
                rs(
                    vec![],
                    vec![
                        base("a", ChainType::Nat, Hook::Output, vec![jump("m")]),
                        regular(
                            "m",
                            vec![rule(
                                vec![],
                                Action::Masquerade {
                                    fully_random: false,
                                },
                            )],
                        ),
                    ],
                ),
                "chain m: masquerade is not allowed in a nat chain at hook output",
            ),
            (
                rs(
                    vec![],
                    vec![base(
                        "a",
                        ChainType::Filter,
                        Hook::Input,
                        vec![rule(vec![], Action::Notrack)],
                    )],
                ),
                "notrack is not allowed in a filter chain at hook input",
            ),
            (
                rs(
                    vec![],
                    vec![base("a", ChainType::Nat, Hook::Forward, vec![])],
                ),
                "a nat chain cannot hook forward",
            ),
            (
                rs(vec![], vec![regular("x", vec![]), regular("x", vec![])]),
                "chain x is declared twice",
            ),
            (
                rs(vec![], vec![regular(&"c".repeat(256), vec![])]),
                "is 256 bytes, the kernel takes at most 255",
            ),
        ];
        for (r, want) in cases {
            let e = r.validate().expect_err(want);
            assert!(e.contains(want), "{e:?} should contain {want:?}");
        }
    }

    fn forward(rules: Vec<Rule>) -> Chain {
        base("f", ChainType::Filter, Hook::Forward, rules)
    }

    fn dispatch(maps: Vec<VerdictMap>, map: &str) -> Ruleset {
        with_maps(
            rs(
                vec![v4set("s", false, &["10.0.0.9/32"])],
                vec![
                    forward(vec![vmap(IpFamily::V4, AddrField::Daddr, map)]),
                    regular("a", vec![rule(vec![], Action::Drop)]),
                    regular("b", vec![rule(vec![], Action::Accept)]),
                ],
            ),
            maps,
        )
    }

    #[test]
    fn a_verdict_map_and_its_vmap_rule_pass() {
        let m = v4map("m", &[("10.0.0.1/32", "a"), ("10.0.0.2/32", "b")]);
        assert_eq!(dispatch(vec![m.clone()], "m").validate(), Ok(()));
        // An empty map is fine (no pod yet).
        let empty = v4map("m", &[]);
        assert_eq!(dispatch(vec![empty], "m").validate(), Ok(()));
        let v6 = VerdictMap {
            name: "m6".into(),
            key: KeyType::Ipv6Addr,
            entries: vec![(Element::V6("fd00::1/128".parse().unwrap()), "a".into())],
        };
        let mut r = dispatch(vec![m, v6], "m");
        r.chains[0]
            .rules
            .push(vmap(IpFamily::V6, AddrField::Saddr, "m6"));
        assert_eq!(r.validate(), Ok(()));
    }

    #[test]
    fn what_the_kernel_refuses_in_a_verdict_map_is_named() {
        let ok = || v4map("m", &[("10.0.0.1/32", "a")]);
        let keyed = |key: KeyType, e: Element| VerdictMap {
            name: "m".into(),
            key,
            entries: vec![(e, "a".into())],
        };
        let cases: Vec<(Ruleset, &str)> = vec![
            (
                dispatch(vec![ok()], "nope"),
                "chain f: map @nope does not exist",
            ),
            (
                dispatch(
                    vec![keyed(
                        KeyType::Ipv6Addr,
                        Element::V6("fd00::1/128".parse().unwrap()),
                    )],
                    "m",
                ),
                "map @m has type ipv6_addr, the rule needs ipv4_addr",
            ),
            (
                dispatch(vec![keyed(KeyType::InetService, Element::Port(80))], "m"),
                "a verdict map's key is ipv4_addr or ipv6_addr, not inet_service",
            ),
            (
                dispatch(
                    vec![keyed(
                        KeyType::Ipv4Addr,
                        Element::V6("fd00::1/128".parse().unwrap()),
                    )],
                    "m",
                ),
                "map m (type ipv4_addr) cannot hold",
            ),
            (
                dispatch(vec![v4map("m", &[("10.0.0.0/24", "a")])], "m"),
                "key 10.0.0.0/24 is a prefix, not a single address",
            ),
            (
                dispatch(
                    vec![v4map("m", &[("10.0.0.1/32", "a"), ("10.0.0.1/32", "b")])],
                    "m",
                ),
                "map m: key 10.0.0.1 is listed twice",
            ),
            (
                dispatch(vec![v4map("m", &[("10.0.0.1/32", "zz")])], "m"),
                "map m: goto to missing chain zz",
            ),
            (
                dispatch(vec![v4map("m", &[("10.0.0.1/32", "f")])], "m"),
                "map m: goto to base chain f",
            ),
            (dispatch(vec![ok(), ok()], "m"), "map m is declared twice"),
            (
                dispatch(vec![v4map("s", &[])], "s"),
                "map s has the name of a set",
            ),
            (dispatch(vec![v4map("", &[])], "m"), "a map name is empty"),
        ];
        for (r, want) in cases {
            let e = r.validate().expect_err(want);
            assert!(e.contains(want), "{e:?} should contain {want:?}");
        }
    }

    #[test]
    fn verdict_map_targets_are_walked_for_loops_and_hooks() {
        // f -> (map) a -> jump c -> (map) a: a loop only through the map.
        let mut r = dispatch(vec![v4map("m", &[("10.0.0.1/32", "a")])], "m");
        r.chains[1].rules = vec![rule(vec![], Action::Jump("c".into()))];
        r.chains.push(regular(
            "c",
            vec![vmap(IpFamily::V4, AddrField::Saddr, "m")],
        ));
        let e = r.validate().unwrap_err();
        assert!(e.contains("f -> a -> c -> a form a loop"), "{e}");
        // A chain reached only through the map is checked at the map's hook.
        let mut r = dispatch(vec![v4map("m", &[("10.0.0.1/32", "a")])], "m");
        r.chains[1].rules = vec![rule(vec![], Action::Notrack)];
        let e = r.validate().unwrap_err();
        assert!(
            e.contains("chain a: notrack is not allowed in a filter chain at hook forward"),
            "{e}"
        );
    }
}
