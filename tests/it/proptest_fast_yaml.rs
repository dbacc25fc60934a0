//! `nftkit::fast_yaml::parse` (masquerade's fast path for block-YAML config files) never
//! disagrees with serde_norway: on documents generated from a grammar mixing the shapes
//! it accepts with near misses (odd keys, indents, dashes, colons, comments, quotes,
//! blank lines, CIDR-, boolean- and number-like scalars, `\r`, tabs, BOM, document
//! markers), it returns `None` or a document whose `to_value()` is exactly
//! `serde_norway::from_slice::<Value>`'s value, and `None` whenever serde_norway fails;
//! `masquerade::parse_file` then gives the same config or error as on the full path.
//! The test also requires both sides to be reached (at least a fifth of the documents
//! accepted, a tenth declined valid, a tenth invalid). `PROPTEST_CASES` sets the case
//! count (default 2000; scripts/test.sh runs 10 000).

use std::cell::Cell;
use std::path::Path;

use nftkit::fast_yaml;
use nftkit::jobs::masquerade;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_norway::Value;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

fn pick(items: &'static [&'static str]) -> impl Strategy<Value = String> + Clone {
    prop::sample::select(items).prop_map(str::to_string)
}

const CLEAN_KEYS: &[&str] = &[
    "nonMasqueradeCIDRs",
    "masqLinkLocal",
    "masqLinkLocalIPv6",
    "a",
    "b",
    "A",
    "cidrLimit",
    "x9",
];

const CLEAN_SCALARS: &[&str] = &[
    "10.0.0.0/8",
    "172.16.0.0/30",
    "fd00::/8",
    "::/0",
    "10.0.0.1/8",
    "a b/c",
    "a  b/c",
    "x/y:z",
    "1/2",
    "/",
    "//",
    "./x",
    "",
    "~",
    "null",
    "Null",
    "NULL",
    "true",
    "True",
    "TRUE",
    "false",
    "False",
    "FALSE",
];

/// Keys: accepted ones (often repeated, to reach duplicates) and near misses.
fn key() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        6 => pick(CLEAN_KEYS),
        3 => pick(&[
            "true", "True", "TRUE", "tRue", "false", "null", "Null", "NULL", "yes", "No",
            "on", "OFF", "y", "n", "inf", "nan", "Infinity", ".inf", "1a", "0x1", "12", "a b",
            "", "-a", "?a", "? a", "a-b", "a_b", "<<", "~", "é", "a\tb", "'a'", "\"a\"", "&a a",
            "!t a", "[a]", "{a}", "a#b", "a #b",
        ]),
        1 => "[a-zA-Z][a-zA-Z0-9]{0,5}",
        1 => Just("k".repeat(200)),
    ]
}

/// Scalars: CIDR-ish, boolean-ish, null-ish, number-ish, and indicator-laden near misses.
fn scalar() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        6 => pick(CLEAN_SCALARS),
        4 => pick(&[
            "x/y: z", "x/y :z", "a/b:", "a/b::", ":/x", "::/x:", "::", "tRue", "nUll", "yes",
            "no", "on", "off", "y", "n", "~/x", "1", "-1", "0x10", "0o7", "0b1", "1.5", "1e3",
            "+1", ".inf", "-.inf", ".nan", "-1/2", "+1/2", "?/x", "? x/y", "?x/y", ",x/y",
            "x,y/z", "'q/x'", "\"q/x\"", "[a/b]", "{a/b}", "&a x/y", "*a", "!t x/y",
            "!!str a/b", "|", ">", "|-\n  a/b", "%x/y", "@x/y", "`x/y", "a/b # c", "a/b#c",
            "x\ty/z", "é/x", "\u{feff}x/y", "a\r/b", "- x/y", "-", "--- a/b", "... a/b",
            ".../x", "a\\/b", "=/x", "<</x", "a\u{7f}/b", "a\u{0}/b", "a\u{85}/b",
            "a\u{2028}/b", "a: b", "a:b", "{}", "[]", "- - a/b", "a/b\n  c/d",
        ]),
        2 => "[0-9a-fA-F:./ ~+-]{0,12}",
        1 => "[a-zA-Z0-9/:., -]{0,10}",
    ]
}

fn indent() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        4 => pick(&["", "  "]),
        2 => pick(&[" ", "   ", "    "]),
        1 => pick(&["\t", " \t", "\t "]),
    ]
}

fn trail() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        6 => Just(String::new()),
        2 => pick(&[" ", "   "]),
        1 => pick(&[" # c", "#c", "\t", " \t", ":", " :"]),
    ]
}

/// Any line, near misses included, without its end.
fn noisy_line() -> impl Strategy<Value = String> {
    let colon = prop_oneof![
        6 => Just(": ".to_string()),
        2 => Just(":".to_string()),
        1 => pick(&[":  ", " :", " : ", ":\t", "::", "-"]),
    ];
    let dash = prop_oneof![
        6 => Just("- ".to_string()),
        2 => pick(&["-", "-   "]),
        1 => pick(&["--", "- - ", "-\t", "?", "? ", ": ", "* ", "+ "]),
    ];
    // A key with an empty value more often, so block sequences follow.
    let key_line = (
        prop::bool::weighted(0.9),
        indent(),
        key(),
        colon,
        prop::bool::weighted(0.5),
        scalar(),
        trail(),
    )
        .prop_map(|(col0, ind, k, c, empty, v, t)| {
            let ind = if col0 { String::new() } else { ind };
            let v = if empty { String::new() } else { v };
            format!("{ind}{k}{c}{v}{t}")
        });
    let item_line =
        (indent(), dash, scalar(), trail()).prop_map(|(ind, d, v, t)| format!("{ind}{d}{v}{t}"));
    prop_oneof![
        4 => key_line,
        6 => item_line,
        2 => pick(&["", " ", "   "]),
        1 => pick(&[
            "---", "--- a/b", "...", "# c", "  # c", "%YAML 1.2", "%TAG ! t:", "? a", ": b",
            "  c/d", "c/d", "a: {b: c}", "a: [b/c]", "[a/b]", "{", "  b: c/d", "- a: b/c",
            "  -  - a/b", "a: |", "a: >-", "a: &x", "b: *x", "<<: *x",
        ]),
    ]
}

/// One mapping entry in the fast path's grammar: `key: scalar`, or `key:` followed by
/// zero or more `- scalar` items (a few scalars are near misses).
fn clean_entry() -> impl Strategy<Value = (Option<String>, Vec<String>)> {
    // Mostly accepted scalars, some near misses.
    let value = || {
        prop_oneof![
            10 => pick(CLEAN_SCALARS),
            1 => scalar(),
        ]
    };
    prop_oneof![
        1 => value().prop_map(|v| (Some(v), Vec::new())),
        3 => prop::collection::vec(value(), 0..6).prop_map(|items| (None, items)),
    ]
}

const MAX_LINES: usize = 40;

/// A document: a mapping in the fast path's grammar (distinct keys; items at one indent;
/// extra spaces and blank lines), in which each line may be replaced by any line (near
/// misses included) with the document's noise probability, or end in `\r`; sometimes a
/// BOM or document marker first, sometimes no final line end.
fn document() -> impl Strategy<Value = String> {
    let keys = prop::sample::subsequence(CLEAN_KEYS, 0..=5).prop_shuffle();
    let entries = keys.prop_flat_map(|keys| {
        let n = keys.len();
        (Just(keys), prop::collection::vec(clean_entry(), n))
    });
    let spaces = prop::collection::vec(pick(&["", "", "", "", " ", "  "]), MAX_LINES);
    let blanks = prop::collection::vec(prop::bool::weighted(0.1), MAX_LINES);
    let noise = prop::collection::vec((0.0..1.0f64, noisy_line()), MAX_LINES);
    let ends = prop::collection::vec(
        prop_oneof![
            40 => Just("\n"),
            1 => Just("\r\n"),
            1 => Just("\r"),
        ],
        MAX_LINES,
    );
    let prefix = prop_oneof![
        40 => Just(""),
        1 => Just("\u{feff}"),
        1 => Just("---\n"),
        1 => Just("%YAML 1.1\n---\n"),
    ];
    (
        (
            entries,
            pick(&["", "  ", "    "]),
            pick(&["- ", "- ", "-  "]),
        ),
        (spaces, blanks),
        (
            prop::sample::select(&[0.0, 0.0, 0.02, 0.1, 0.3, 1.0][..]),
            noise,
        ),
        (ends, prefix, any::<bool>()),
    )
        .prop_map(
            |(
                ((keys, entries), indent, dash),
                (spaces, blanks),
                (level, noise),
                (ends, prefix, last_end),
            )| {
                let mut lines = Vec::new();
                for (k, (value, items)) in keys.iter().zip(entries) {
                    match value {
                        Some(v) => lines.push(format!("{k}: {v}")),
                        None => lines.push(format!("{k}:")),
                    }
                    lines.extend(items.iter().map(|v| format!("{indent}{dash}{v}")));
                }
                let mut out = Vec::new();
                for (i, l) in lines.into_iter().enumerate().take(MAX_LINES) {
                    if blanks[i] {
                        out.push(spaces[i].clone());
                    }
                    let (roll, other) = &noise[i];
                    out.push(if *roll < level {
                        other.clone()
                    } else {
                        format!("{l}{}", spaces[MAX_LINES - 1 - i])
                    });
                }
                let mut doc = prefix.to_string();
                let n = out.len();
                for (i, l) in out.into_iter().enumerate() {
                    doc.push_str(&l);
                    if i + 1 < n || last_end {
                        doc.push_str(ends[i]);
                    }
                }
                doc
            },
        )
}

#[test]
fn fast_path_is_none_or_equals_serde_norway() {
    let cases = cases();
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let (accepted, declined_valid, declined_invalid) = (Cell::new(0), Cell::new(0), Cell::new(0));
    runner
        .run(&document(), |doc| {
            let full = serde_norway::from_slice::<Value>(doc.as_bytes());
            match (fast_yaml::parse(doc.as_bytes()).map(|d| d.to_value()), full) {
                (Some(fast), Ok(full)) => {
                    prop_assert_eq!(&fast, &full, "document {:?}", doc);
                    // masquerade reads accepted documents without building a Value: same
                    // result, errors included, as the full path on the same document (as
                    // JSON, which the fast path declines).
                    let json = serde_json::to_string(&full).unwrap();
                    prop_assert!(fast_yaml::parse(json.as_bytes()).is_none());
                    let path = Path::new("/etc/config/ip-masq-agent");
                    for ipv6 in [false, true] {
                        let got = masquerade::parse_file(path, doc.as_bytes(), ipv6);
                        let want = masquerade::parse_file(path, json.as_bytes(), ipv6);
                        prop_assert_eq!(
                            got.map_err(|e| e.to_string()),
                            want.map_err(|e| e.to_string()),
                            "document {:?}",
                            doc
                        );
                    }
                    accepted.set(accepted.get() + 1);
                }
                (Some(fast), Err(e)) => {
                    prop_assert!(
                        false,
                        "fast path gave {:?} where serde_norway fails ({}) on {:?}",
                        fast,
                        e,
                        doc
                    );
                }
                (None, Ok(_)) => declined_valid.set(declined_valid.get() + 1),
                (None, Err(_)) => declined_invalid.set(declined_invalid.get() + 1),
            }
            Ok(())
        })
        .unwrap();
    let (a, dv, di) = (accepted.get(), declined_valid.get(), declined_invalid.get());
    eprintln!(
        "{cases} documents: {a} accepted by the fast path (all equal to serde_norway's), \
         {dv} valid YAML declined, {di} invalid YAML declined"
    );
    // The grammar must reach both sides, or the property says little.
    assert!(a * 5 >= cases, "only {a} of {cases} documents accepted");
    assert!(
        dv * 10 >= cases,
        "only {dv} of {cases} valid documents declined"
    );
    assert!(
        di * 10 >= cases,
        "only {di} of {cases} invalid documents declined"
    );
}

/// Large accepted documents (the benchmark's shape, plus nulls and booleans) agree too.
#[test]
fn large_block_lists_agree() {
    for (n, indent) in [(0, ""), (1, ""), (1000, "  "), (20_000, "    "), (5000, "")] {
        let mut doc = String::from("masqLinkLocal: true\nnonMasqueradeCIDRs:\n");
        for i in 0..n {
            let item = match i % 97 {
                0 => String::new(),
                1 => "null".to_string(),
                2 => "false".to_string(),
                _ => format!("172.{}.{}.{}/30", 16 + i / 65536, (i / 256) % 256, i % 256),
            };
            doc.push_str(&format!("{indent}- {item}\n"));
        }
        doc.push_str("masqLinkLocalIPv6: False\n");
        let fast = fast_yaml::parse(doc.as_bytes())
            .expect("accepted")
            .to_value();
        let full: Value = serde_norway::from_slice(doc.as_bytes()).unwrap();
        assert_eq!(fast, full, "{n} items");
    }
}
