//! Small rulesets for unit tests (the model's `validate` and `eval`, and the code that
//! takes rulesets: live mode's updates, the iptables lowering).

use super::*;

pub fn rule(matches: Vec<Match>, action: Action) -> Rule {
    Rule { matches, action }
}

pub fn regular(name: &str, rules: Vec<Rule>) -> Chain {
    Chain {
        name: name.into(),
        base: None,
        rules,
    }
}

pub fn rs(sets: Vec<Set>, chains: Vec<Chain>) -> Ruleset {
    Ruleset {
        table: "t".into(),
        comment: "managed by nftkit test".into(),
        sets,
        maps: Vec::new(),
        chains,
    }
}

pub fn v4set(name: &str, interval: bool, elems: &[&str]) -> Set {
    Set {
        name: name.into(),
        key: KeyType::Ipv4Addr,
        interval,
        elements: elems
            .iter()
            .map(|e| Element::V4(e.parse().unwrap()))
            .collect(),
    }
}

/// A verdict map of IPv4 addresses: (address, chain) entries.
pub fn v4map(name: &str, entries: &[(&str, &str)]) -> VerdictMap {
    VerdictMap {
        name: name.into(),
        key: KeyType::Ipv4Addr,
        entries: entries
            .iter()
            .map(|(a, c)| (Element::V4(a.parse().unwrap()), c.to_string()))
            .collect(),
    }
}

/// `r` with `maps` declared.
pub fn with_maps(mut r: Ruleset, maps: Vec<VerdictMap>) -> Ruleset {
    r.maps = maps;
    r
}

/// `ip daddr vmap @map` (or `ip6`, `saddr`).
pub fn vmap(family: IpFamily, field: AddrField, map: &str) -> Rule {
    rule(
        vec![],
        Action::GotoMap {
            family,
            field,
            map: map.into(),
        },
    )
}
