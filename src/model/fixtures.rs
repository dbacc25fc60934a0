//! Small rulesets for the model's unit tests (`validate`, `eval`).

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
