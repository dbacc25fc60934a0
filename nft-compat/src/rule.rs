//! One iptables rule, rendered exactly as `iptables-save` prints it (both flavours,
//! iptables 1.8.9), so desired and read-back text compare equal.
//!
//! Canonical order, learned by restoring and saving in a namespace: `-s`, `-d`, `[!] -p`,
//! then the `-m` matches in the order given (save keeps it), then `-j`/`-g`. Addresses
//! carry their prefix length (`10.1.2.3/32`, `2001:db8::1/128`); `-p tcp --dport` gets an
//! explicit `-m tcp`; strings are quoted as `xtables_save_string` quotes them.

use std::fmt::Write;

/// `-j TARGET [ARGS]` or `-g CHAIN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `-j` with the target and its options, e.g. `REDIRECT --to-ports 10080`.
    Jump(String),
    /// `-g CHAIN`.
    Goto(String),
}

/// A rule spec: everything after `-A CHAIN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `-s` network, canonical (`10.0.0.0/8`, `192.0.2.1/32`).
    pub source: Option<String>,
    /// `-d` network, canonical.
    pub destination: Option<String>,
    /// `[!] -p NAME`: (negated, protocol name).
    pub protocol: Option<(bool, String)>,
    /// `-m` fragments in order, each canonical (`-m tcp --dport 80`,
    /// `-m owner --uid-owner 1010`).
    pub matches: Vec<String>,
    /// `-m comment --comment TEXT`, rendered after the other matches.
    pub comment: Option<String>,
    pub target: Target,
}

impl Rule {
    pub fn new(target: Target) -> Rule {
        Rule {
            source: None,
            destination: None,
            protocol: None,
            matches: Vec::new(),
            comment: None,
            target,
        }
    }

    /// The canonical spec, e.g.
    /// `-d 10.0.0.0/8 -m comment --comment "managed by nftkit redirect" -j RETURN`.
    pub fn spec(&self) -> String {
        let mut out = String::new();
        if let Some(s) = &self.source {
            let _ = write!(out, " -s {s}");
        }
        if let Some(d) = &self.destination {
            let _ = write!(out, " -d {d}");
        }
        if let Some((neg, p)) = &self.protocol {
            let _ = write!(out, "{} -p {p}", if *neg { " !" } else { "" });
        }
        for m in &self.matches {
            out.push(' ');
            out.push_str(m);
        }
        if let Some(c) = &self.comment {
            let _ = write!(out, " -m comment --comment {}", quote(c));
        }
        match &self.target {
            Target::Jump(t) => {
                let _ = write!(out, " -j {t}");
            }
            Target::Goto(c) => {
                let _ = write!(out, " -g {c}");
            }
        }
        out.trim_start().to_string()
    }
}

/// A string argument as `iptables-save` writes it (`xtables_save_string`): bare when it is
/// only letters, digits, `_` and `-`; otherwise double-quoted with `"`, `\` and `'`
/// backslash-escaped.
pub fn quote(s: &str) -> String {
    let bare = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if matches!(c, '"' | '\\' | '\'') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Split a saved rule into arguments the way iptables-restore does: whitespace separates,
/// double quotes group, a backslash escapes the next character inside quotes.
pub fn tokens(spec: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_token = false;
    let mut quoted = false;
    let mut chars = spec.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                in_token = true;
            }
            '\\' if quoted => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            c if c.is_whitespace() && !quoted => {
                if in_token {
                    out.push(std::mem::take(&mut cur));
                    in_token = false;
                }
            }
            c => {
                cur.push(c);
                in_token = true;
            }
        }
    }
    if in_token {
        out.push(cur);
    }
    out
}

/// The jump (`-j`) or goto (`-g`) target of a spec: (is_goto, target). The last one
/// wins, as in iptables.
pub fn target_of(spec: &str) -> Option<(bool, String)> {
    let t = tokens(spec);
    let mut found = None;
    for w in t.windows(2) {
        match w[0].as_str() {
            "-j" | "--jump" => found = Some((false, w[1].clone())),
            "-g" | "--goto" => found = Some((true, w[1].clone())),
            _ => {}
        }
    }
    found
}

/// The text of the first `--comment` of a spec.
pub fn comment_of(spec: &str) -> Option<String> {
    let t = tokens(spec);
    t.windows(2)
        .find(|w| w[0] == "--comment")
        .map(|w| w[1].clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_order_and_quoting() {
        let mut r = Rule::new(Target::Jump("REDIRECT --to-ports 10080".into()));
        r.protocol = Some((false, "tcp".into()));
        r.matches.push("-m tcp --dport 80".into());
        r.matches.push("-m owner --uid-owner 1010".into());
        r.destination = Some("198.51.100.0/24".into());
        r.comment = Some("managed by nftkit redirect".into());
        assert_eq!(
            r.spec(),
            r#"-d 198.51.100.0/24 -p tcp -m tcp --dport 80 -m owner --uid-owner 1010 -m comment --comment "managed by nftkit redirect" -j REDIRECT --to-ports 10080"#
        );
        let mut r = Rule::new(Target::Goto("X".into()));
        r.protocol = Some((true, "tcp".into()));
        assert_eq!(r.spec(), "! -p tcp -g X");
        assert_eq!(quote("abc"), "abc");
        assert_eq!(quote(r#"a"b"#), r#""a\"b""#);
        assert_eq!(quote(r"a b\c"), r#""a b\\c""#);
        assert_eq!(quote(""), r#""""#);
    }

    #[test]
    fn tokens_targets_and_comments_round_trip() {
        let spec =
            r#"-m comment --comment "managed by nftkit \"x\" \\ y" -j NFTKIT-REDIRECT-OUTPUT"#;
        assert_eq!(
            comment_of(spec).as_deref(),
            Some(r#"managed by nftkit "x" \ y"#)
        );
        assert_eq!(
            target_of(spec),
            Some((false, "NFTKIT-REDIRECT-OUTPUT".into()))
        );
        assert_eq!(target_of("-p tcp -g NK-X"), Some((true, "NK-X".into())));
        assert_eq!(target_of("-p tcp"), None);
        assert_eq!(tokens(r#"a  "b c" """#), vec!["a", "b c", ""]);
        let c = r#"it's "q" \ "#;
        let mut r = Rule::new(Target::Jump("ACCEPT".into()));
        r.comment = Some(c.into());
        assert_eq!(comment_of(&r.spec()).as_deref(), Some(c));
    }
}
