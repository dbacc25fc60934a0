//! Owned chain names.
//!
//! An nftkit table `T` (`nftkit-<command>` or `--table T`) owns, in each iptables table it
//! uses, the chains named `PREFIX-<PART>` with `PREFIX` = `T` upper-cased
//! (`nftkit-redirect` → `NFTKIT-REDIRECT`):
//!
//! - a base chain of the model (hook H) becomes `PREFIX-H`, H the built-in chain it is
//!   jumped to from (`NFTKIT-REDIRECT-OUTPUT`), or the short form (`PRE`, `POST`, `FWD`,
//!   `OUT`, `IN`) when the long one would not fit: `NFTKIT-MASQUERADE-POST`;
//! - a regular chain named N becomes `PREFIX-N` upper-cased, or, when that is too long, a
//!   cut of it plus six hex digits of a hash of N, so distinct names stay distinct:
//!   `IP-MASQ-AGENT` of `nftkit-masquerade` → `NFTKIT-MASQUERADE-IP-<hash>`.
//!
//! iptables refuses names longer than [`MAX_CHAIN_NAME`]; a prefix too long for even the
//! short forms is refused by the caller (`--table` too long for the iptables backends).

/// iptables refuses chain names longer than this (`XT_EXTENSION_MAXNAMELEN` - 1).
pub const MAX_CHAIN_NAME: usize = 28;

/// Built-in chain names and their short forms, longest first (for suffix stripping).
const HOOK_PARTS: &[(&str, &str)] = &[
    ("POSTROUTING", "POST"),
    ("PREROUTING", "PRE"),
    ("FORWARD", "FWD"),
    ("OUTPUT", "OUT"),
    ("INPUT", "IN"),
];

/// The owned chain `NFTKIT-<COMMAND>[-<PART>]`, e.g. `NFTKIT-REDIRECT-OUTPUT`.
/// `None` when the name would not fit iptables' limit.
pub fn chain_name(command: &str, part: Option<&str>) -> Option<String> {
    let mut name = format!("NFTKIT-{}", command.to_ascii_uppercase());
    if let Some(p) = part {
        name.push('-');
        name.push_str(&p.to_ascii_uppercase());
    }
    (name.len() <= MAX_CHAIN_NAME).then_some(name)
}

/// The chain prefix of nftkit table `table`: `nftkit-redirect` → `NFTKIT-REDIRECT`.
pub fn prefix(table: &str) -> String {
    table.to_ascii_uppercase()
}

/// The nftkit table a prefix belongs to (the inverse of [`prefix`] for the lower-case
/// names nftkit uses by default).
pub fn table_of_prefix(prefix: &str) -> String {
    prefix.to_ascii_lowercase()
}

/// Whether `chain` is named like a chain of `prefix` (`PREFIX-…`).
pub fn is_owned(prefix: &str, chain: &str) -> bool {
    chain.len() > prefix.len() + 1
        && chain.starts_with(prefix)
        && chain.as_bytes()[prefix.len()] == b'-'
}

/// The owned chain jumped to from built-in chain `builtin` (`OUTPUT`): `PREFIX-OUTPUT`,
/// or the short form when the long one is too long. `None` if neither fits.
pub fn base_chain_name(prefix: &str, builtin: &str) -> Option<String> {
    let long = format!("{prefix}-{builtin}");
    if long.len() <= MAX_CHAIN_NAME {
        return Some(long);
    }
    let short = HOOK_PARTS
        .iter()
        .find(|(l, _)| *l == builtin)
        .map(|(_, s)| format!("{prefix}-{s}"))?;
    (short.len() <= MAX_CHAIN_NAME).then_some(short)
}

/// The owned chain for a regular (non-base) chain named `name` of the model. `None` if
/// the prefix leaves no room even for the hashed form.
pub fn regular_chain_name(prefix: &str, name: &str) -> Option<String> {
    regular_chain_name_attempt(prefix, name, 0)
}

/// [`regular_chain_name`], or for `attempt` > 0 the hashed form with the attempt number
/// mixed into the hash: how a caller resolves the (rare) clash of two hashed names.
pub fn regular_chain_name_attempt(prefix: &str, name: &str, attempt: u32) -> Option<String> {
    let part = name.to_ascii_uppercase();
    let full = format!("{prefix}-{part}");
    if attempt == 0 && full.len() <= MAX_CHAIN_NAME {
        return Some(full);
    }
    let mut key = name.as_bytes().to_vec();
    if attempt > 0 {
        key.extend_from_slice(format!("#{attempt}").as_bytes());
    }
    // 24 bits: names stay readable; the caller resolves the rare clash (`attempt`).
    let hash = format!("{:06X}", fnv1a(&key) & 0xff_ffff);
    // PREFIX-<cut>-HASH, the cut readable: letters, digits and single dashes.
    let room = MAX_CHAIN_NAME.saturating_sub(prefix.len() + 1 + 1 + hash.len());
    let mut cut = String::new();
    for c in part.chars() {
        if cut.len() >= room {
            break;
        }
        let c = if c.is_ascii_alphanumeric() { c } else { '-' };
        if !(c == '-' && (cut.is_empty() || cut.ends_with('-'))) {
            cut.push(c);
        }
    }
    let cut = cut.trim_end_matches('-');
    let name = if cut.is_empty() {
        format!("{prefix}-{hash}")
    } else {
        format!("{prefix}-{cut}-{hash}")
    };
    (name.len() <= MAX_CHAIN_NAME).then_some(name)
}

/// The prefix of a base chain name (`NFTKIT-REDIRECT-OUTPUT` → `NFTKIT-REDIRECT`), if the
/// name ends in a built-in chain's long or short form.
pub fn prefix_of_base_chain(chain: &str) -> Option<&str> {
    let mut suffixes: Vec<&str> = HOOK_PARTS.iter().flat_map(|(l, s)| [*l, *s]).collect();
    suffixes.sort_by_key(|s| std::cmp::Reverse(s.len()));
    suffixes.into_iter().find_map(|s| {
        chain
            .strip_suffix(s)
            .and_then(|rest| rest.strip_suffix('-'))
            .filter(|p| !p.is_empty())
    })
}

/// 32-bit FNV-1a: stable across builds and platforms (names must not change between
/// releases, or an upgrade would orphan chains).
fn fnv1a(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_names_follow_the_contract() {
        assert_eq!(
            chain_name("redirect", None).as_deref(),
            Some("NFTKIT-REDIRECT")
        );
        assert_eq!(
            chain_name("local-address", Some("input")).as_deref(),
            Some("NFTKIT-LOCAL-ADDRESS-INPUT")
        );
        assert_eq!(chain_name("masquerade", Some("postrouting-extra")), None);
    }

    #[test]
    fn base_chains_use_long_then_short_hook_names() {
        let p = prefix("nftkit-redirect");
        assert_eq!(p, "NFTKIT-REDIRECT");
        assert_eq!(
            base_chain_name(&p, "OUTPUT").as_deref(),
            Some("NFTKIT-REDIRECT-OUTPUT")
        );
        assert_eq!(
            base_chain_name("NFTKIT-MASQUERADE", "POSTROUTING").as_deref(),
            Some("NFTKIT-MASQUERADE-POST")
        );
        assert_eq!(
            base_chain_name("NFTKIT-LOCAL-ADDRESS", "PREROUTING").as_deref(),
            Some("NFTKIT-LOCAL-ADDRESS-PRE")
        );
        assert_eq!(
            base_chain_name("NFTKIT-LOCAL-ADDRESS", "OUTPUT").as_deref(),
            Some("NFTKIT-LOCAL-ADDRESS-OUTPUT")
        );
        assert_eq!(base_chain_name(&"X".repeat(26), "OUTPUT"), None);
        for n in [
            "NFTKIT-REDIRECT-OUTPUT",
            "NFTKIT-MASQUERADE-POST",
            "NFTKIT-LOCAL-ADDRESS-PRE",
        ] {
            assert!(n.len() <= MAX_CHAIN_NAME);
        }
    }

    #[test]
    fn prefixes_are_recovered_from_base_chains() {
        assert_eq!(
            prefix_of_base_chain("NFTKIT-REDIRECT-OUTPUT"),
            Some("NFTKIT-REDIRECT")
        );
        assert_eq!(
            prefix_of_base_chain("NFTKIT-MASQUERADE-POST"),
            Some("NFTKIT-MASQUERADE")
        );
        assert_eq!(
            prefix_of_base_chain("NFTKIT-MASQUERADE-POSTROUTING"),
            Some("NFTKIT-MASQUERADE")
        );
        assert_eq!(prefix_of_base_chain("OUTPUT"), None);
        assert_eq!(prefix_of_base_chain("KUBE-SERVICES"), None);
        assert_eq!(table_of_prefix("NFTKIT-REDIRECT"), "nftkit-redirect");
    }

    #[test]
    fn regular_chains_fit_and_stay_distinct() {
        assert_eq!(
            regular_chain_name("NFTKIT-DNAT", "targets").as_deref(),
            Some("NFTKIT-DNAT-TARGETS")
        );
        let a = regular_chain_name("NFTKIT-MASQUERADE", "IP-MASQ-AGENT").unwrap();
        let b = regular_chain_name("NFTKIT-MASQUERADE", "IP-MASQ-AGENT-2").unwrap();
        assert!(
            a.len() <= MAX_CHAIN_NAME && b.len() <= MAX_CHAIN_NAME,
            "{a} {b}"
        );
        assert!(a.starts_with("NFTKIT-MASQUERADE-IP-"), "{a}");
        assert_ne!(a, b);
        // Deterministic.
        assert_eq!(
            a,
            regular_chain_name("NFTKIT-MASQUERADE", "IP-MASQ-AGENT").unwrap()
        );
        assert!(regular_chain_name(&"X".repeat(25), "abc").is_none());
        // Odd characters are not carried into the cut; clashes get another hash.
        let n = regular_chain_name("NFTKIT-NETPOL", "egress/default/redis-0").unwrap();
        assert!(n.starts_with("NFTKIT-NETPOL-EGRESS-"), "{n}");
        assert!(n.len() <= MAX_CHAIN_NAME, "{n}");
        let m = regular_chain_name_attempt("NFTKIT-NETPOL", "egress/default/redis-0", 1).unwrap();
        assert_ne!(n, m);
        assert!(m.starts_with("NFTKIT-NETPOL-EGRESS-"), "{m}");
    }

    #[test]
    fn ownership_needs_the_dash() {
        assert!(is_owned("NFTKIT-REDIRECT", "NFTKIT-REDIRECT-OUTPUT"));
        assert!(!is_owned("NFTKIT-REDIRECT", "NFTKIT-REDIRECTX-OUTPUT"));
        assert!(!is_owned("NFTKIT-REDIRECT", "NFTKIT-REDIRECT"));
        assert!(!is_owned("NFTKIT-REDIRECT", "NFTKIT-REDIRECT-"));
    }
}
