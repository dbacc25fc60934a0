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
    /// (also through regular chains, which are validated for every hook reaching them).
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
        for c in &self.chains {
            for r in &c.rules {
                rule_fits(c, r, &chains, &sets)?;
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
        self.check_reach(&chains)
    }

    /// Walk from every base chain through jumps and gotos: no loops, and every NAT or
    /// notrack action sits in a chain only hooks that allow it reach.
    fn check_reach(&self, chains: &HashMap<&str, &Chain>) -> Result<(), String> {
        let mut reached: HashMap<&str, HashSet<(ChainType, Hook)>> = HashMap::new();
        for c in &self.chains {
            let Some(b) = c.base else { continue };
            let mut path = Vec::new();
            walk(c, (b.kind, b.hook), chains, &mut reached, &mut path)?;
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

fn rule_fits(
    c: &Chain,
    r: &Rule,
    chains: &HashMap<&str, &Chain>,
    sets: &HashMap<&str, &Set>,
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

/// Record that `c` is reached from a base chain of (`kind`, `hook`), and follow its jumps.
fn walk<'a>(
    c: &'a Chain,
    at: (ChainType, Hook),
    chains: &HashMap<&str, &'a Chain>,
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
        if let Action::Jump(t) | Action::Goto(t) = &r.action
            && let Some(next) = chains.get(t.as_str())
        {
            walk(next, at, chains, reached, path)?;
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
    use crate::model::fixtures::{regular, rs, rule, v4set};

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
}
