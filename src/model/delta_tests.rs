//! Unit tests of `delta`: what is structure (None), what is elements, and property checks
//! that the delta applied to the old ruleset gives the new one.

use proptest::prelude::*;

use super::super::fixtures::{regular, rs, rule, v4set};
use super::super::{Action, KeyType, VerdictMap};
use super::*;

fn v4(s: &str) -> Element {
    Element::V4(s.parse().unwrap())
}

fn with_map(mut r: Ruleset, entries: &[(&str, &str)]) -> Ruleset {
    r.maps.push(VerdictMap {
        name: "pods".into(),
        key: KeyType::Ipv4Addr,
        entries: entries
            .iter()
            .map(|(k, c)| (v4(k), c.to_string()))
            .collect(),
    });
    r
}

fn base() -> Ruleset {
    rs(
        vec![
            v4set("peers", true, &["10.0.0.0/24", "10.1.0.0/16"]),
            v4set("pods", false, &["10.244.1.2/32", "10.244.1.3/32"]),
        ],
        vec![regular("c", vec![rule(vec![], Action::Drop)])],
    )
}

#[test]
fn element_changes_are_a_delta_of_removes_and_adds() {
    let old = base();
    let mut new = base();
    new.sets[0].elements = vec![v4("10.0.0.0/24"), v4("10.2.0.0/16")];
    new.sets[1].elements.push(v4("10.244.1.9/32"));
    let d = element_delta(&old, &new).unwrap();
    assert_eq!(
        d.sets,
        vec![
            SetDelta {
                name: "peers".into(),
                remove: vec![v4("10.1.0.0/16")],
                add: vec![v4("10.2.0.0/16")],
            },
            SetDelta {
                name: "pods".into(),
                remove: vec![],
                add: vec![v4("10.244.1.9/32")],
            },
        ]
    );
    assert_eq!((d.removed(), d.added()), (1, 2));
    assert!(!d.touches_maps() && !d.is_empty());
    assert_eq!(d.apply_to(&old).unwrap(), normalized(&new));
}

#[test]
fn the_same_elements_in_another_order_are_an_empty_delta() {
    let old = base();
    let mut new = base();
    new.sets[0].elements.reverse();
    let d = element_delta(&old, &new).unwrap();
    assert!(d.is_empty(), "{d:?}");
    assert!(element_delta(&old, &old).unwrap().is_empty());
}

#[test]
fn anything_but_elements_is_no_delta() {
    let old = base();
    type Change = (&'static str, fn(&mut Ruleset));
    let changes: Vec<Change> = vec![
        ("table", |r| r.table = "u".into()),
        ("comment", |r| r.comment = "managed by nftkit other".into()),
        ("set name", |r| r.sets[0].name = "other".into()),
        ("set key", |r| r.sets[1].key = KeyType::Ipv6Addr),
        ("interval flag", |r| r.sets[0].interval = false),
        ("set added", |r| r.sets.push(v4set("more", false, &[]))),
        ("set removed", |r| {
            r.sets.pop();
        }),
        ("sets reordered", |r| r.sets.swap(0, 1)),
        ("rule", |r| r.chains[0].rules[0].action = Action::Accept),
        ("chain added", |r| r.chains.push(regular("d", vec![]))),
        ("map added", |r| *r = with_map(r.clone(), &[])),
    ];
    for (what, change) in changes {
        let mut new = old.clone();
        change(&mut new);
        assert_eq!(element_delta(&old, &new), None, "{what}");
    }
    // A map's name or key is structure too.
    let a = with_map(base(), &[]);
    let mut b = a.clone();
    b.maps[0].name = "other".into();
    assert_eq!(element_delta(&a, &b), None);
    let mut b = a.clone();
    b.maps[0].key = KeyType::Ipv6Addr;
    assert_eq!(element_delta(&a, &b), None);
}

#[test]
fn a_map_entry_with_a_new_chain_is_removed_and_added() {
    let old = with_map(
        base(),
        &[("10.244.1.2/32", "pod-a"), ("10.244.1.3/32", "pod-b")],
    );
    let new = with_map(
        base(),
        &[("10.244.1.2/32", "pod-a2"), ("10.244.1.4/32", "pod-c")],
    );
    let d = element_delta(&old, &new).unwrap();
    assert!(d.sets.is_empty());
    assert_eq!(
        d.maps,
        vec![MapDelta {
            name: "pods".into(),
            remove: vec![
                (v4("10.244.1.2/32"), "pod-a".into()),
                (v4("10.244.1.3/32"), "pod-b".into())
            ],
            add: vec![
                (v4("10.244.1.2/32"), "pod-a2".into()),
                (v4("10.244.1.4/32"), "pod-c".into())
            ],
        }]
    );
    assert!(d.touches_maps());
    assert_eq!(d.apply_to(&old).unwrap(), normalized(&new));
    // A map holding one key twice with two chains is not something to patch.
    let twice = with_map(base(), &[("10.244.1.2/32", "a"), ("10.244.1.2/32", "b")]);
    assert_eq!(element_delta(&old, &twice), None);
}

#[test]
fn elements_are_compared_as_the_kernel_tells_them_apart() {
    // An interval set holds the range: host bits do not make another element.
    let old = rs(vec![v4set("s", true, &["10.0.0.0/24"])], vec![]);
    let new = rs(vec![v4set("s", true, &["10.0.0.7/24"])], vec![]);
    assert!(element_delta(&old, &new).unwrap().is_empty());
    // A plain set holds addresses: the prefix length is not part of the element.
    let old = rs(vec![v4set("s", false, &["10.0.0.7/32"])], vec![]);
    let new = rs(
        vec![v4set("s", false, &["10.0.0.7/24", "10.0.0.7/32"])],
        vec![],
    );
    assert!(element_delta(&old, &new).unwrap().is_empty());
}

#[test]
fn removing_an_element_the_set_lacks_is_an_error() {
    let d = Delta {
        sets: vec![SetDelta {
            name: "peers".into(),
            remove: vec![v4("192.0.2.0/24")],
            add: vec![],
        }],
        ..Default::default()
    };
    assert!(d.apply_to(&base()).is_err());
    let d = Delta {
        sets: vec![SetDelta {
            name: "nope".into(),
            remove: vec![],
            add: vec![],
        }],
        ..Default::default()
    };
    assert!(d.apply_to(&base()).is_err());
}

/// Non-overlapping prefixes of 10.0.0.0/16 as netpol writes them: a bit per /20, merged
/// pairs where aligned.
fn interval_set(bits: u16) -> Vec<Element> {
    let mut out = Vec::new();
    let mut i = 0u16;
    while i < 16 {
        if bits & (1 << i) == 0 {
            i += 1;
            continue;
        }
        // Merge an aligned pair into a /19.
        if i.is_multiple_of(2) && bits & (1 << (i + 1)) != 0 {
            out.push(v4(&format!("10.0.{}.0/19", u32::from(i) * 16)));
            i += 2;
        } else {
            out.push(v4(&format!("10.0.{}.0/20", u32::from(i) * 16)));
            i += 1;
        }
    }
    out
}

fn ruleset_of(interval_bits: u16, pods: &[u8], map: &[(u8, u8)]) -> Ruleset {
    let mut r = base();
    r.sets[0].elements = interval_set(interval_bits);
    r.sets[1].elements = pods
        .iter()
        .map(|p| v4(&format!("10.244.1.{p}/32")))
        .collect();
    let entries: std::collections::BTreeMap<u8, u8> = map.iter().copied().collect();
    let entries: Vec<(String, String)> = entries
        .iter()
        .map(|(k, c)| (format!("10.244.2.{k}/32"), format!("pod-{c}")))
        .collect();
    let entries: Vec<(&str, &str)> = entries
        .iter()
        .map(|(k, c)| (k.as_str(), c.as_str()))
        .collect();
    with_map(r, &entries)
}

/// Whether two prefixes of an interval set overlap.
fn overlaps(set: &[Element]) -> bool {
    set.iter().enumerate().any(|(i, a)| {
        set[i + 1..].iter().any(|b| match (a, b) {
            (Element::V4(a), Element::V4(b)) => a.contains(b) || b.contains(a),
            _ => false,
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Old with the delta applied is new; removing old - new then adding new - old never
    /// passes through overlapping ranges; the delta back applied to new is old.
    #[test]
    fn applying_the_delta_to_old_gives_new(
        (ia, ib) in (any::<u16>(), any::<u16>()),
        pa in proptest::collection::vec(1u8..40, 0..20),
        pb in proptest::collection::vec(1u8..40, 0..20),
        ma in proptest::collection::vec((1u8..20, 0u8..4), 0..12),
        mb in proptest::collection::vec((1u8..20, 0u8..4), 0..12),
    ) {
        let old = ruleset_of(ia, &pa, &ma);
        let new = ruleset_of(ib, &pb, &mb);
        let d = element_delta(&old, &new).expect("only elements differ");
        prop_assert_eq!(d.apply_to(&old).unwrap(), normalized(&new));
        let back = element_delta(&new, &old).unwrap();
        prop_assert_eq!(back.apply_to(&new).unwrap(), normalized(&old));
        prop_assert_eq!(d.is_empty(), normalized(&old) == normalized(&new));
        // The states in between: after the removes, after the adds.
        let mut removed = d.clone();
        for s in &mut removed.sets {
            s.add.clear();
        }
        for m in &mut removed.maps {
            m.add.clear();
        }
        let between = removed.apply_to(&old).unwrap();
        prop_assert!(!overlaps(&between.sets[0].elements));
        prop_assert!(!overlaps(&d.apply_to(&old).unwrap().sets[0].elements));
        // Nothing is removed and added at once in a set.
        for s in &d.sets {
            prop_assert!(s.remove.iter().all(|e| !s.add.contains(e)));
        }
    }
}
