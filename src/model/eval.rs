//! Offline evaluation of a [`Ruleset`] for one packet, with nf_tables' semantics: the rules
//! of a base chain in order, a rule's matches all holding (a payload match such as
//! `ip daddr` or `tcp dport` implies its family or protocol, as nft adds that dependency),
//! `jump` pushing a return point (at most 16 deep, the kernel's `NFT_JUMP_STACK_SIZE`),
//! `goto` replacing the current chain, `return` or the end of a regular chain going back to
//! the caller, and the base chain's policy (always accept in this model) when the base
//! chain itself returns or ends. Interval sets match an element containing the key,
//! other sets an equal element; a verdict map's hit is a `goto`, a miss the next rule.
//!
//! Pure: no I/O. Used by `nftkit netpol explain` on the very `Ruleset` the kernel gets.

use std::net::IpAddr;

use super::*;

/// `NFT_JUMP_STACK_SIZE`: the kernel refuses deeper jump nesting.
pub const MAX_JUMP_DEPTH: usize = 16;

/// The packet as the ruleset sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub saddr: IpAddr,
    pub daddr: IpAddr,
    pub proto: L4Proto,
    pub sport: u16,
    pub dport: u16,
    /// Its conntrack state (`new` for the first packet of a connection).
    pub ct: CtState,
    /// `fib daddr type local`: the destination is an address of this host.
    pub daddr_local: bool,
    /// `meta skuid`/`meta skgid` of its socket; None for forwarded packets (no socket:
    /// such a match fails, as the kernel's meta expression breaks).
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

impl Packet {
    /// The first packet of a forwarded connection (`ct state new`, no local socket).
    pub fn new_forwarded(saddr: IpAddr, daddr: IpAddr, proto: L4Proto, dport: u16) -> Packet {
        Packet {
            saddr,
            daddr,
            proto,
            sport: 40000,
            dport,
            ct: CtState::New,
            daddr_local: false,
            uid: None,
            gid: None,
        }
    }

    /// The family of its addresses (that of `saddr`).
    pub fn family(&self) -> IpFamily {
        match self.saddr {
            IpAddr::V4(_) => IpFamily::V4,
            IpAddr::V6(_) => IpFamily::V6,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
}

/// One set lookup that matched: the set and the element that holds the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetHit {
    pub set: String,
    pub element: Element,
}

/// A rule whose matches all held, in the order they were reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub chain: String,
    /// Index of the rule in its chain (0-based).
    pub rule: usize,
    pub sets: Vec<SetHit>,
}

/// How the evaluation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// A rule's terminal action (the last step): accept, drop, or a NAT statement
    /// (masquerade, redirect, dnat: accept after setting up the mapping).
    Rule,
    /// The base chain returned or ran out of rules: its policy (accept).
    Policy,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    pub verdict: Verdict,
    pub end: End,
    /// Every rule that matched, in order (jumps, returns, non-terminal statements and the
    /// terminal one).
    pub path: Vec<Step>,
}

impl Evaluation {
    /// The rule that decided (None when the base chain policy did).
    pub fn deciding(&self) -> Option<&Step> {
        match self.end {
            End::Rule => self.path.last(),
            End::Policy => None,
        }
    }
}

/// Whether `set` holds `key`; the element that does.
pub fn set_lookup(set: &Set, key: &Element) -> Option<Element> {
    set.elements
        .iter()
        .find(|e| element_holds(e, key, set.interval))
        .copied()
}

fn element_holds(e: &Element, key: &Element, interval: bool) -> bool {
    match (e, key) {
        (Element::V4(net), Element::V4(k)) if interval => net.contains(&k.addr()),
        (Element::V6(net), Element::V6(k)) if interval => net.contains(&k.addr()),
        // A non-interval set holds single addresses (a full-length prefix).
        (Element::V4(net), Element::V4(k)) => net.prefix_len() == 32 && net.addr() == k.addr(),
        (Element::V6(net), Element::V6(k)) => net.prefix_len() == 128 && net.addr() == k.addr(),
        (Element::Port(a), Element::Port(b)) => a == b,
        (Element::Id(a), Element::Id(b)) => a == b,
        _ => false,
    }
}

fn in_net(net: &ipnet::IpNet, a: IpAddr) -> bool {
    net.contains(&a)
}

/// Whether `m` holds for `p`; set hits are pushed on `hits`.
fn matches(rs: &Ruleset, m: &Match, p: &Packet, hits: &mut Vec<SetHit>) -> Result<bool, String> {
    let lookup = |set: &str, key: Element, hits: &mut Vec<SetHit>| -> Result<bool, String> {
        let s = rs
            .set(set)
            .ok_or_else(|| format!("a rule refers to set {set:?}, which is not declared"))?;
        Ok(match set_lookup(s, &key) {
            Some(element) => {
                hits.push(SetHit {
                    set: set.to_string(),
                    element,
                });
                true
            }
            None => false,
        })
    };
    Ok(match m {
        // Statements, not conditions; a named limit only decides whether a log rule logs
        // (offline it has room).
        Match::Count { .. } | Match::Log { .. } | Match::Limit { .. } => true,
        Match::NfProto(f) => p.family() == *f,
        Match::L4Proto { proto, negate } => (p.proto == *proto) != *negate,
        Match::DaddrInSet { family, set } => {
            p.family() == *family && lookup(set, Element::from(p.daddr), hits)?
        }
        Match::SaddrInSet { family, set } => {
            p.family() == *family && lookup(set, Element::from(p.saddr), hits)?
        }
        Match::Daddr(net) => in_net(net, p.daddr),
        Match::Saddr(net) => in_net(net, p.saddr),
        Match::Dport { proto, port } => p.proto == *proto && p.dport == *port,
        Match::Sport { proto, port } => p.proto == *proto && p.sport == *port,
        Match::DportRange { proto, first, last } => {
            p.proto == *proto && (*first..=*last).contains(&p.dport)
        }
        Match::FibDaddrLocal { negate } => p.daddr_local != *negate,
        Match::CtState(states) => states.contains(&p.ct),
        Match::DportInSet { proto, set } => {
            p.proto == *proto && lookup(set, Element::Port(p.dport), hits)?
        }
        Match::OwnerInSet { owner, set } => {
            let id = match owner {
                Owner::Uid => p.uid,
                Owner::Gid => p.gid,
            };
            match id {
                Some(id) => lookup(set, Element::Id(id), hits)?,
                None => false,
            }
        }
        Match::OwnerRange { owner, first, last } => {
            let id = match owner {
                Owner::Uid => p.uid,
                Owner::Gid => p.gid,
            };
            id.is_some_and(|id| (*first..=*last).contains(&id))
        }
    })
}

/// Run `p` through base chain `base` of `rs`. Err: the ruleset is not one the kernel would
/// load (an unknown chain or set, a jump to a base chain, nesting deeper than
/// [`MAX_JUMP_DEPTH`]).
pub fn evaluate(rs: &Ruleset, base: &str, p: &Packet) -> Result<Evaluation, String> {
    let chain = |name: &str| -> Result<&Chain, String> {
        rs.chains
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| format!("no chain {name:?}"))
    };
    let start = chain(base)?;
    if start.base.is_none() {
        return Err(format!("chain {base:?} is not a base chain"));
    }
    let mut path = Vec::new();
    // Return points: (chain, index of the next rule).
    let mut stack: Vec<(&Chain, usize)> = Vec::new();
    let (mut cur, mut next) = (start, 0usize);
    loop {
        let Some(rule) = cur.rules.get(next) else {
            // End of a chain: implicit return (the policy, for the base chain).
            match stack.pop() {
                Some((c, i)) => {
                    (cur, next) = (c, i);
                    continue;
                }
                None => {
                    return Ok(Evaluation {
                        verdict: Verdict::Accept,
                        end: End::Policy,
                        path,
                    });
                }
            }
        };
        let index = next;
        next += 1;
        let mut hits = Vec::new();
        let mut all = true;
        for m in &rule.matches {
            if !matches(rs, m, p, &mut hits)? {
                all = false;
                break;
            }
        }
        if !all {
            continue;
        }
        path.push(Step {
            chain: cur.name.clone(),
            rule: index,
            sets: hits,
        });
        let terminal = |verdict| Evaluation {
            verdict,
            end: End::Rule,
            path: Vec::new(),
        };
        let done = match &rule.action {
            Action::Accept
            | Action::Masquerade { .. }
            | Action::Redirect { .. }
            | Action::Dnat { .. }
            | Action::DnatMap { .. } => Some(terminal(Verdict::Accept)),
            Action::Drop => Some(terminal(Verdict::Drop)),
            Action::Notrack => None,
            // Counts or logs and goes on: not a step of the decision.
            Action::Continue => {
                path.pop();
                None
            }
            Action::Return => match stack.pop() {
                Some((c, i)) => {
                    (cur, next) = (c, i);
                    None
                }
                None => Some(Evaluation {
                    verdict: Verdict::Accept,
                    end: End::Policy,
                    path: Vec::new(),
                }),
            },
            // A hit is a goto (the lookup is the step's set hit); a miss: the next rule,
            // and no step of the decision.
            Action::GotoMap { family, field, map } => {
                let m = rs.map(map).ok_or_else(|| {
                    format!("a rule refers to map {map:?}, which is not declared")
                })?;
                let key = Element::from(match field {
                    AddrField::Saddr => p.saddr,
                    AddrField::Daddr => p.daddr,
                });
                let hit = (p.family() == *family)
                    .then(|| {
                        m.entries
                            .iter()
                            .find(|(e, _)| element_holds(e, &key, false))
                    })
                    .flatten();
                match hit {
                    None => {
                        path.pop();
                    }
                    Some((element, target)) => {
                        let t = chain(target)?;
                        if t.base.is_some() {
                            return Err(format!("map {map:?} goes to base chain {target:?}"));
                        }
                        if let Some(step) = path.last_mut() {
                            step.sets.push(SetHit {
                                set: map.clone(),
                                element: *element,
                            });
                        }
                        (cur, next) = (t, 0);
                    }
                }
                None
            }
            Action::Jump(target) | Action::Goto(target) => {
                let t = chain(target)?;
                if t.base.is_some() {
                    return Err(format!("{:?} jumps to base chain {target:?}", cur.name));
                }
                if matches!(rule.action, Action::Jump(_)) {
                    if stack.len() >= MAX_JUMP_DEPTH {
                        return Err(format!(
                            "jumps nest deeper than {MAX_JUMP_DEPTH} at {target:?}"
                        ));
                    }
                    stack.push((cur, next));
                }
                (cur, next) = (t, 0);
                None
            }
        };
        if let Some(mut e) = done {
            e.path = path;
            return Ok(e);
        }
        // A goto loop never grows the stack: bound the walk by the rules it can visit.
        if path.len() > (MAX_JUMP_DEPTH + 1) * rs.rule_count().max(1) {
            return Err("the chains loop".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fixtures::{regular, rs, rule, v4map, v4set, vmap, with_maps};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> ipnet::IpNet {
        s.parse().unwrap()
    }

    fn base(name: &str, rules: Vec<Rule>) -> Chain {
        Chain {
            name: name.into(),
            base: Some(BaseChain {
                kind: ChainType::Filter,
                hook: Hook::Forward,
                priority: priority::FILTER,
            }),
            rules,
        }
    }

    fn tcp(s: &str, d: &str, port: u16) -> Packet {
        Packet::new_forwarded(ip(s), ip(d), L4Proto::Tcp, port)
    }

    fn trail(e: &Evaluation) -> Vec<(String, usize)> {
        e.path.iter().map(|s| (s.chain.clone(), s.rule)).collect()
    }

    #[test]
    fn empty_base_chain_falls_to_the_policy() {
        let r = rs(vec![], vec![base("f", vec![])]);
        let e = evaluate(&r, "f", &tcp("10.0.0.1", "10.0.0.2", 80)).unwrap();
        assert_eq!(e.verdict, Verdict::Accept);
        assert_eq!(e.end, End::Policy);
        assert!(e.path.is_empty() && e.deciding().is_none());
    }

    #[test]
    fn first_terminal_rule_wins_and_non_matching_rules_are_skipped() {
        let r = rs(
            vec![],
            vec![base(
                "f",
                vec![
                    rule(
                        vec![Match::Dport {
                            proto: L4Proto::Udp,
                            port: 80,
                        }],
                        Action::Accept,
                    ),
                    rule(vec![Match::NfProto(IpFamily::V4)], Action::Notrack),
                    rule(
                        vec![Match::Dport {
                            proto: L4Proto::Tcp,
                            port: 80,
                        }],
                        Action::Drop,
                    ),
                    rule(vec![], Action::Accept),
                ],
            )],
        );
        let e = evaluate(&r, "f", &tcp("10.0.0.1", "10.0.0.2", 80)).unwrap();
        assert_eq!(e.verdict, Verdict::Drop);
        // notrack is not terminal: it is on the path, then rule 2 drops.
        assert_eq!(trail(&e), [("f".into(), 1), ("f".into(), 2)]);
        assert_eq!(e.deciding().unwrap().rule, 2);
        let e = evaluate(&r, "f", &tcp("10.0.0.1", "10.0.0.2", 81)).unwrap();
        assert_eq!((e.verdict, e.end), (Verdict::Accept, End::Rule));
        assert_eq!(e.deciding().unwrap().rule, 3);
    }

    #[test]
    fn jump_returns_to_the_next_rule_goto_does_not() {
        let chains = vec![
            base(
                "f",
                vec![
                    rule(
                        vec![Match::Saddr(net("10.0.0.1/32"))],
                        Action::Jump("a".into()),
                    ),
                    rule(
                        vec![Match::Saddr(net("10.0.0.2/32"))],
                        Action::Goto("a".into()),
                    ),
                    rule(
                        vec![Match::Dport {
                            proto: L4Proto::Tcp,
                            port: 22,
                        }],
                        Action::Drop,
                    ),
                ],
            ),
            regular(
                "a",
                vec![
                    rule(
                        vec![Match::Dport {
                            proto: L4Proto::Tcp,
                            port: 80,
                        }],
                        Action::Return,
                    ),
                    rule(
                        vec![Match::Dport {
                            proto: L4Proto::Tcp,
                            port: 443,
                        }],
                        Action::Jump("b".into()),
                    ),
                    // Falls off the end for other ports: implicit return.
                ],
            ),
            regular(
                "b",
                vec![
                    rule(vec![Match::Daddr(net("10.9.0.0/16"))], Action::Accept),
                    rule(vec![], Action::Return),
                    rule(vec![], Action::Drop),
                ],
            ),
        ];
        let r = rs(vec![], chains);
        // return from a: back in f at rule 1, 2 does not match port 80: policy.
        let e = evaluate(&r, "f", &tcp("10.0.0.1", "10.1.0.1", 80)).unwrap();
        assert_eq!((e.verdict, e.end), (Verdict::Accept, End::Policy));
        assert_eq!(trail(&e), [("f".into(), 0), ("a".into(), 0)]);
        // Implicit return at the end of a, then f's drop for port 22.
        let e = evaluate(&r, "f", &tcp("10.0.0.1", "10.1.0.1", 22)).unwrap();
        assert_eq!(e.verdict, Verdict::Drop);
        assert_eq!(trail(&e), [("f".into(), 0), ("f".into(), 2)]);
        // Nested jump: accept in b ends everything.
        let e = evaluate(&r, "f", &tcp("10.0.0.1", "10.9.1.1", 443)).unwrap();
        assert_eq!((e.verdict, e.end), (Verdict::Accept, End::Rule));
        assert_eq!(
            trail(&e),
            [("f".into(), 0), ("a".into(), 1), ("b".into(), 0)]
        );
        // b returns to a (after rule 1), a ends, back to f rule 1, 2 (no match: port 443).
        let e = evaluate(&r, "f", &tcp("10.0.0.1", "10.1.0.1", 443)).unwrap();
        assert_eq!(e.end, End::Policy);
        assert_eq!(
            trail(&e),
            [("f".into(), 0), ("a".into(), 1), ("b".into(), 1)]
        );
        // goto: a's return goes back to f's caller (none: the policy), f's drop is skipped.
        let e = evaluate(&r, "f", &tcp("10.0.0.2", "10.1.0.1", 80)).unwrap();
        assert_eq!(e.end, End::Policy);
        assert_eq!(trail(&e), [("f".into(), 1), ("a".into(), 0)]);
        let e = evaluate(&r, "f", &tcp("10.0.0.2", "10.1.0.1", 22)).unwrap();
        assert_eq!(
            (e.verdict, e.end),
            (Verdict::Accept, End::Policy),
            "goto: the drop in f after rule 1 is never reached"
        );
    }

    #[test]
    fn return_in_the_base_chain_is_its_policy() {
        let r = rs(
            vec![],
            vec![base(
                "f",
                vec![rule(vec![], Action::Return), rule(vec![], Action::Drop)],
            )],
        );
        let e = evaluate(&r, "f", &tcp("10.0.0.1", "10.0.0.2", 1)).unwrap();
        assert_eq!((e.verdict, e.end), (Verdict::Accept, End::Policy));
        assert_eq!(trail(&e), [("f".into(), 0)]);
    }

    #[test]
    fn interval_sets_match_prefixes_and_report_the_element() {
        let r = rs(
            vec![
                v4set("in", true, &["10.0.0.0/8", "192.0.2.128/25"]),
                v4set("exact", false, &["192.0.2.1/32"]),
            ],
            vec![base(
                "f",
                vec![
                    rule(
                        vec![Match::SaddrInSet {
                            family: IpFamily::V4,
                            set: "in".into(),
                        }],
                        Action::Accept,
                    ),
                    rule(
                        vec![Match::DaddrInSet {
                            family: IpFamily::V4,
                            set: "exact".into(),
                        }],
                        Action::Accept,
                    ),
                    rule(vec![], Action::Drop),
                ],
            )],
        );
        let e = evaluate(&r, "f", &tcp("192.0.2.200", "8.8.8.8", 1)).unwrap();
        assert_eq!(e.verdict, Verdict::Accept);
        assert_eq!(
            e.path[0].sets,
            [SetHit {
                set: "in".into(),
                element: Element::V4("192.0.2.128/25".parse().unwrap())
            }]
        );
        // Just outside both prefixes.
        let e = evaluate(&r, "f", &tcp("192.0.2.127", "8.8.8.8", 1)).unwrap();
        assert_eq!(e.verdict, Verdict::Drop);
        let e = evaluate(&r, "f", &tcp("11.0.0.0", "192.0.2.1", 1)).unwrap();
        assert_eq!((e.verdict, e.path[0].rule), (Verdict::Accept, 1));
        let e = evaluate(&r, "f", &tcp("11.0.0.0", "192.0.2.2", 1)).unwrap();
        assert_eq!(e.verdict, Verdict::Drop);
        // An IPv6 packet never matches an `ip saddr` set.
        let e = evaluate(&r, "f", &tcp("::a00:1", "::1", 1)).unwrap();
        assert_eq!(e.verdict, Verdict::Drop);
    }

    #[test]
    fn ports_protocols_ct_state_fib_and_owner() {
        let ports = Set {
            name: "p".into(),
            key: KeyType::InetService,
            interval: false,
            elements: vec![Element::Port(53), Element::Port(5353)],
        };
        let uids = Set {
            name: "u".into(),
            key: KeyType::Uid,
            interval: false,
            elements: vec![Element::Id(1000)],
        };
        let r = rs(
            vec![ports, uids],
            vec![base(
                "f",
                vec![
                    rule(
                        vec![Match::CtState(vec![CtState::Established, CtState::Related])],
                        Action::Accept,
                    ),
                    rule(
                        vec![Match::DportInSet {
                            proto: L4Proto::Udp,
                            set: "p".into(),
                        }],
                        Action::Accept,
                    ),
                    rule(
                        vec![Match::DportRange {
                            proto: L4Proto::Tcp,
                            first: 8000,
                            last: 8010,
                        }],
                        Action::Accept,
                    ),
                    rule(
                        vec![Match::OwnerInSet {
                            owner: Owner::Uid,
                            set: "u".into(),
                        }],
                        Action::Accept,
                    ),
                    rule(
                        vec![
                            Match::FibDaddrLocal { negate: true },
                            Match::L4Proto {
                                proto: L4Proto::Sctp,
                                negate: false,
                            },
                        ],
                        Action::Accept,
                    ),
                    rule(vec![], Action::Drop),
                ],
            )],
        );
        let at = |p: &Packet| {
            let e = evaluate(&r, "f", p).unwrap();
            (e.verdict, e.deciding().map(|s| s.rule))
        };
        let mut p = tcp("10.0.0.1", "10.0.0.2", 53);
        assert_eq!(at(&p), (Verdict::Drop, Some(5)));
        p.ct = CtState::Established;
        assert_eq!(at(&p), (Verdict::Accept, Some(0)));
        p.ct = CtState::New;
        p.proto = L4Proto::Udp;
        assert_eq!(at(&p), (Verdict::Accept, Some(1)));
        p.proto = L4Proto::Tcp;
        for (port, want) in [(7999, 5), (8000, 2), (8010, 2), (8011, 5)] {
            p.dport = port;
            assert_eq!(at(&p).1, Some(want), "port {port}");
        }
        p.uid = Some(1000);
        assert_eq!(at(&p), (Verdict::Accept, Some(3)));
        p.uid = None;
        p.proto = L4Proto::Sctp;
        assert_eq!(at(&p), (Verdict::Accept, Some(4)));
        p.daddr_local = true;
        assert_eq!(at(&p), (Verdict::Drop, Some(5)));
    }

    #[test]
    fn broken_rulesets_are_errors_not_panics() {
        let r = rs(
            vec![],
            vec![
                base(
                    "f",
                    vec![rule(
                        vec![Match::SaddrInSet {
                            family: IpFamily::V4,
                            set: "nope".into(),
                        }],
                        Action::Accept,
                    )],
                ),
                base("g", vec![rule(vec![], Action::Jump("missing".into()))]),
                base("h", vec![rule(vec![], Action::Jump("f".into()))]),
                base("l", vec![rule(vec![], Action::Jump("loop".into()))]),
                regular("loop", vec![rule(vec![], Action::Jump("loop".into()))]),
                base("gl", vec![rule(vec![], Action::Goto("gloop".into()))]),
                regular("gloop", vec![rule(vec![], Action::Goto("gloop".into()))]),
            ],
        );
        let p = tcp("10.0.0.1", "10.0.0.2", 1);
        for chain in ["f", "g", "h", "l", "gl", "loop", "absent"] {
            assert!(evaluate(&r, chain, &p).is_err(), "{chain}");
        }
    }

    #[test]
    fn a_verdict_map_goes_to_the_chain_of_the_address_or_on_to_the_next_rule() {
        let r = with_maps(
            rs(
                vec![],
                vec![
                    base(
                        "f",
                        vec![
                            rule(
                                vec![Match::Dport {
                                    proto: L4Proto::Tcp,
                                    port: 22,
                                }],
                                Action::Jump("j".into()),
                            ),
                            vmap(IpFamily::V4, AddrField::Daddr, "m"),
                            rule(vec![], Action::Drop),
                        ],
                    ),
                    regular("j", vec![vmap(IpFamily::V4, AddrField::Saddr, "m")]),
                    regular(
                        "a",
                        vec![rule(
                            vec![Match::Dport {
                                proto: L4Proto::Tcp,
                                port: 80,
                            }],
                            Action::Accept,
                        )],
                    ),
                    regular("b", vec![rule(vec![], Action::Drop)]),
                ],
            ),
            vec![v4map("m", &[("10.0.0.1/32", "a"), ("10.0.0.2/32", "b")])],
        );
        // Found: goto a, which accepts port 80.
        let e = evaluate(&r, "f", &tcp("192.0.2.1", "10.0.0.1", 80)).unwrap();
        assert_eq!((e.verdict, e.end), (Verdict::Accept, End::Rule));
        assert_eq!(trail(&e), [("f".into(), 1), ("a".into(), 0)]);
        assert_eq!(
            e.path[0].sets,
            [SetHit {
                set: "m".into(),
                element: Element::V4("10.0.0.1/32".parse().unwrap())
            }]
        );
        // goto: a falls off its end for port 81, back to f's caller (the policy), so f's
        // drop after the vmap is not reached.
        let e = evaluate(&r, "f", &tcp("192.0.2.1", "10.0.0.1", 81)).unwrap();
        assert_eq!((e.verdict, e.end), (Verdict::Accept, End::Policy));
        let e = evaluate(&r, "f", &tcp("192.0.2.1", "10.0.0.2", 80)).unwrap();
        assert_eq!(e.verdict, Verdict::Drop);
        assert_eq!(trail(&e), [("f".into(), 1), ("b".into(), 0)]);
        // Not in the map: the next rule, and the vmap rule is no step.
        let e = evaluate(&r, "f", &tcp("192.0.2.1", "10.0.0.3", 80)).unwrap();
        assert_eq!(e.verdict, Verdict::Drop);
        assert_eq!(trail(&e), [("f".into(), 2)]);
        // An IPv6 packet never matches an `ip daddr vmap`.
        let e = evaluate(&r, "f", &tcp("::1", "::a00:1", 80)).unwrap();
        assert_eq!(trail(&e), [("f".into(), 2)]);
        // Inside a jump, the goto replaces j: a's end returns to f after the jump.
        let e = evaluate(&r, "f", &tcp("10.0.0.1", "10.0.0.3", 22)).unwrap();
        assert_eq!(e.verdict, Verdict::Drop);
        assert_eq!(
            trail(&e),
            [("f".into(), 0), ("j".into(), 0), ("f".into(), 2)]
        );
    }

    #[test]
    fn a_broken_verdict_map_is_an_error() {
        let chains = |map: &str| {
            vec![
                base("f", vec![vmap(IpFamily::V4, AddrField::Saddr, map)]),
                base("g", vec![]),
            ]
        };
        let p = tcp("10.0.0.1", "10.0.0.2", 1);
        let missing = rs(vec![], chains("nope"));
        assert!(evaluate(&missing, "f", &p).unwrap_err().contains("nope"));
        let to_base = with_maps(
            rs(vec![], chains("m")),
            vec![v4map("m", &[("10.0.0.1/32", "g")])],
        );
        assert!(evaluate(&to_base, "f", &p).is_err());
        let to_nowhere = with_maps(
            rs(vec![], chains("m")),
            vec![v4map("m", &[("10.0.0.1/32", "x")])],
        );
        assert!(evaluate(&to_nowhere, "f", &p).is_err());
    }
}
