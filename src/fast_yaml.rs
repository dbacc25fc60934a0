//! A strict fast path for the block-YAML shape config files almost always have:
//!
//! ```yaml
//! nonMasqueradeCIDRs:
//!   - 10.0.0.0/8
//!   - fd00::/8
//! masqLinkLocal: true
//! ```
//!
//! [`parse`] returns the document serde_norway (libyaml) would give, as a [`Doc`] borrowing
//! from the input (no allocation per list item), or `None` when the input is outside its
//! narrow grammar ("not sure": the caller uses the full parser). Whenever it returns
//! `Some(doc)`, `doc.to_value()` equals `serde_norway::from_slice::<Value>`'s value
//! (tests/it/proptest_fast_yaml.rs checks this on near-miss documents). It takes time linear
//! in the input and never errors, so inputs it accepts cannot blow up.
//!
//! Accepted: printable ASCII and `\n` only (no `\r`, tab, BOM, non-ASCII, control
//! characters, and none of ``" ' # { } [ ] & * ! | > % @ ` ,``), at most
//! [`crate::parse::MAX_NODES`] line ends; blank lines anywhere; at column 0, `key:` or
//! `key: scalar`, `key` being an ASCII letter then letters or digits (at most 128, so
//! never a number), not a YAML boolean or null word (nor YAML 1.1's yes/no/on/off/y/n),
//! and not repeated; after a `key:`, optionally a block sequence of `- scalar` or `-`
//! lines all at one indent (0 included). A scalar is accepted only when its type is
//! unambiguous: empty, `~` or `null`/`Null`/`NULL` (null), `true`/`True`/`TRUE`/`false`/
//! `False`/`FALSE` (boolean), or text containing `/` that starts with a letter, digit,
//! `.`, `/` or `:` and has no `: `, ` :` or trailing `:` (string; CIDRs). Spaces around a
//! scalar are trimmed, as YAML does. Anything else (numbers, other words, nested or
//! continued lines, flow collections, quotes, comments, anchors, tags, document markers)
//! is `None`.

use std::collections::HashSet;

use serde_norway::{Mapping, Value};

/// Longest key accepted (libyaml limits simple keys to 1024 characters).
const MAX_KEY_LEN: usize = 128;

/// Whether `b` may appear in an accepted document: `\n` and printable ASCII but YAML's
/// indicators for quotes, comments, flow collections, anchors, aliases, tags, block
/// scalars, directives, reserved characters, and `,`. Comparisons only, so the check
/// over a whole input vectorises.
#[inline(always)]
fn allowed(b: u8) -> bool {
    let printable = b.wrapping_sub(0x20) < 0x5f;
    let banned = (b == b'"')
        | (b == b'\'')
        | (b == b'#')
        | (b == b'{')
        | (b == b'}')
        | (b == b'[')
        | (b == b']')
        | (b == b'&')
        | (b == b'*')
        | (b == b'!')
        | (b == b'|')
        | (b == b'>')
        | (b == b'%')
        | (b == b'@')
        | (b == b'`')
        | (b == b',');
    (printable & !banned) | (b == b'\n')
}

/// A scalar the fast path accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scalar<'a> {
    Null,
    Bool(bool),
    /// Text containing `/`, spaces around it trimmed.
    Str(&'a str),
}

/// The value of a top-level key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node<'a> {
    Scalar(Scalar<'a>),
    /// A block sequence (`key:` then `- item` lines).
    Seq(Vec<Scalar<'a>>),
}

/// An accepted document: its top-level mapping's entries in file order, keys distinct.
/// No entries: an empty document (null).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Doc<'a> {
    pub entries: Vec<(&'a str, Node<'a>)>,
}

impl Scalar<'_> {
    /// The value serde_norway gives this scalar.
    pub fn to_value(self) -> Value {
        match self {
            Scalar::Null => Value::Null,
            Scalar::Bool(b) => Value::Bool(b),
            Scalar::Str(s) => Value::String(s.to_string()),
        }
    }
}

impl Node<'_> {
    /// The value serde_norway gives this node.
    pub fn to_value(&self) -> Value {
        match self {
            Node::Scalar(s) => s.to_value(),
            Node::Seq(items) => Value::Sequence(items.iter().map(|s| s.to_value()).collect()),
        }
    }
}

impl Doc<'_> {
    /// The value serde_norway gives this document.
    pub fn to_value(&self) -> Value {
        if self.entries.is_empty() {
            return Value::Null;
        }
        let mut m = Mapping::with_capacity(self.entries.len());
        for (k, v) in &self.entries {
            m.insert(Value::String(k.to_string()), v.to_value());
        }
        Value::Mapping(m)
    }
}

/// The document `bytes` holds if it is in the fast path's grammar (see the module
/// documentation), else `None`.
pub fn parse(bytes: &[u8]) -> Option<Doc<'_>> {
    // One pass over the input in chunks (short enough for byte-wide counters, so it
    // vectorises): allowed bytes only, and the number of line ends.
    let mut line_ends = 0usize;
    let mut chunks = bytes.chunks_exact(64);
    for chunk in chunks.by_ref() {
        let (mut bad, mut ends) = (0u8, 0u8);
        for &b in chunk {
            bad |= u8::from(!allowed(b));
            ends += u8::from(b == b'\n');
        }
        if bad != 0 {
            return None;
        }
        line_ends += usize::from(ends);
    }
    for &b in chunks.remainder() {
        if !allowed(b) {
            return None;
        }
        line_ends += usize::from(b == b'\n');
    }
    // The full path refuses more nodes than this (crate::parse::check_yaml_size; without
    // quotes, comments, brackets and commas its count is the number of line ends): leave
    // such input to it so its error stays the same.
    if line_ends > crate::parse::MAX_NODES {
        return None;
    }
    // ASCII only (checked above), so every slice below is valid UTF-8.
    let text = std::str::from_utf8(bytes).ok()?;

    let mut doc = Doc::default();
    let mut keys: HashSet<&str> = HashSet::new();
    // The last entry is `key:` so far: a sequence may follow (else its value is null).
    let mut pending = false;
    // The open block sequence (the last entry's value): its items' indent and items.
    let mut seq: Option<(usize, Vec<Scalar<'_>>)> = None;
    let mut lines_left = line_ends + 1;
    let mut rest_of_text = text;
    while lines_left > 0 {
        lines_left -= 1;
        let end = rest_of_text
            .bytes()
            .position(|b| b == b'\n')
            .unwrap_or(rest_of_text.len());
        let line = &rest_of_text[..end];
        rest_of_text = rest_of_text.get(end + 1..).unwrap_or("");

        let body = trim_start(line);
        if body.is_empty() {
            continue;
        }
        let indent = line.len() - body.len();
        if indent == 0 && body.as_bytes()[0].is_ascii_alphabetic() {
            close(&mut doc, seq.take());
            let (key, rest) = key_line(body)?;
            if !keys.insert(key) {
                return None;
            }
            let value = trim(rest);
            pending = value.is_empty();
            let node = if pending {
                Node::Scalar(Scalar::Null)
            } else {
                Node::Scalar(scalar(value)?)
            };
            doc.entries.push((key, node));
            continue;
        }
        // `- scalar` or `-`: a sequence item, after `key:` or after items at this indent.
        let rest = body.strip_prefix('-')?;
        if !(rest.is_empty() || rest.starts_with(' ')) {
            return None;
        }
        let item = scalar(trim(rest))?;
        match &mut seq {
            None if pending => {
                pending = false;
                // Room for every line left (up to a bound): rarely reallocated.
                let mut items = Vec::with_capacity((lines_left + 1).min(1 << 16));
                items.push(item);
                seq = Some((indent, items));
            }
            Some((at, items)) if *at == indent => items.push(item),
            _ => return None,
        }
    }
    close(&mut doc, seq);
    Some(doc)
}

/// Make the open sequence, if any, the last entry's value.
fn close<'a>(doc: &mut Doc<'a>, seq: Option<(usize, Vec<Scalar<'a>>)>) {
    if let (Some((_, items)), Some((_, node))) = (seq, doc.entries.last_mut()) {
        *node = Node::Seq(items);
    }
}

/// `key:` or `key: rest` (a line at column 0): the key and what follows the `:`.
fn key_line(line: &str) -> Option<(&str, &str)> {
    let end = line
        .bytes()
        .position(|b| !b.is_ascii_alphanumeric())
        .unwrap_or(line.len());
    let (key, rest) = line.split_at(end);
    let rest = rest.strip_prefix(':')?;
    if key.len() > MAX_KEY_LEN || !(rest.is_empty() || rest.starts_with(' ')) {
        return None;
    }
    // Words any YAML schema (1.1 or 1.2) reads as something other than a string.
    const SPECIAL: &[&str] = &["true", "false", "null", "yes", "no", "on", "off", "y", "n"];
    if SPECIAL.iter().any(|w| key.eq_ignore_ascii_case(w)) {
        return None;
    }
    Some((key, rest))
}

/// `s` without leading spaces.
fn trim_start(s: &str) -> &str {
    let n = s.bytes().take_while(|&b| b == b' ').count();
    &s[n..]
}

/// `s` without leading and trailing spaces.
fn trim(s: &str) -> &str {
    let s = trim_start(s);
    let n = s.bytes().rev().take_while(|&b| b == b' ').count();
    &s[..s.len() - n]
}

/// A plain scalar (spaces around it already trimmed) whose type is unambiguous.
fn scalar(s: &str) -> Option<Scalar<'_>> {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Some(Scalar::Null),
        "true" | "True" | "TRUE" => return Some(Scalar::Bool(true)),
        "false" | "False" | "FALSE" => return Some(Scalar::Bool(false)),
        _ => {}
    }
    let b = s.as_bytes();
    if !(b[0].is_ascii_alphanumeric() || matches!(b[0], b'.' | b'/' | b':')) {
        return None;
    }
    let (slash, colon) = b.iter().fold((false, false), |(s, c), &x| {
        (s | (x == b'/'), c | (x == b':'))
    });
    if !slash {
        return None;
    }
    // `: ` (or `:` at the end) is a mapping; ` :` is declined to be safe.
    if colon
        && b.iter().enumerate().any(|(i, &c)| {
            c == b':' && (i + 1 == b.len() || b[i + 1] == b' ' || (i > 0 && b[i - 1] == b' '))
        })
    {
        return None;
    }
    Some(Scalar::Str(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(s: &str) -> Value {
        serde_norway::from_slice(s.as_bytes()).unwrap()
    }

    #[test]
    fn accepts_the_common_shapes_like_serde_norway() {
        for doc in [
            "",
            "\n\n  \n",
            "nonMasqueradeCIDRs:\n  - 172.16.0.0/30\n  - 172.16.0.8/30\n",
            "nonMasqueradeCIDRs:\n- 10.0.0.0/8\n- fd00::/8\nmasqLinkLocal: true\n",
            "nonMasqueradeCIDRs:\n    -   10.0.0.0/8   \n\n    - ::/0\nmasqLinkLocalIPv6: False",
            "nonMasqueradeCIDRs:\nmasqLinkLocal: off/x\n",
            "nonMasqueradeCIDRs:  \n",
            "nonMasqueradeCIDRs:\n  -\n  - ~\n  - null\n  - TRUE\n  - a b/c\n  - x/y:z\n",
            "masqLinkLocal: true\nmasqLinkLocalIPv6: NULL\ncidrLimit: ~\n",
            "a: 1.2.3.4/32",
            "a1B2: 1/2\nINF: 1/2\nnan:\n",
        ] {
            let fast = parse(doc.as_bytes()).map(|d| d.to_value());
            assert_eq!(fast, Some(yaml(doc)), "{doc:?}");
        }
        let doc =
            parse(b"nonMasqueradeCIDRs:\n  - 10.0.0.0/8\n  -\nmasqLinkLocal: true\nb:\n").unwrap();
        assert_eq!(
            doc.entries,
            [
                (
                    "nonMasqueradeCIDRs",
                    Node::Seq(vec![Scalar::Str("10.0.0.0/8"), Scalar::Null])
                ),
                ("masqLinkLocal", Node::Scalar(Scalar::Bool(true))),
                ("b", Node::Scalar(Scalar::Null)),
            ]
        );
        assert_eq!(parse(b"\n \n").unwrap(), Doc::default());
    }

    #[test]
    fn declines_everything_else() {
        for doc in [
            // Line ends, tabs, BOM, non-ASCII, control characters.
            "nonMasqueradeCIDRs:\r\n  - 10.0.0.0/8\r\n",
            "nonMasqueradeCIDRs:\n\t- 10.0.0.0/8\n",
            "\u{feff}nonMasqueradeCIDRs:\n  - 10.0.0.0/8\n",
            "nonMasqueradeCIDRs:\n  - 10.0.0.0/8\u{85}\n",
            "nonMasqueradeCIDRs:\n  - 10.0.0.0/8\x01\n",
            // Flow collections, quotes, comments, anchors, tags, block scalars, JSON.
            "nonMasqueradeCIDRs: [10.0.0.0/8]",
            r#"{"nonMasqueradeCIDRs": ["10.0.0.0/8"]}"#,
            "nonMasqueradeCIDRs:\n  - \"10.0.0.0/8\"\n",
            "nonMasqueradeCIDRs:\n  - '10.0.0.0/8'\n",
            "# comment\nnonMasqueradeCIDRs:\n  - 10.0.0.0/8\n",
            "nonMasqueradeCIDRs:\n  - 10.0.0.0/8 # comment\n",
            "a: &x 1/2\nb: *x\n",
            "a: !!str 1/2\n",
            "a: |\n  1/2\n",
            // Document markers, directives.
            "---\na: 1/2\n",
            "a: 1/2\n...\n",
            "%YAML 1.2\n---\na: 1/2\n",
            // Other types or doubtful words.
            "masqLinkLocal: yes\n",
            "masqLinkLocal: tRUE\n",
            "cidrLimit: 64\n",
            "resyncInterval: 60s\n",
            "a: 0x1/2:\n",
            "a: b/c: d\n",
            "a: b/c :d\n",
            "a: -1/2\n",
            "a: ?/x\n",
            // Keys.
            "true: 1/2\n",
            "No: 1/2\n",
            "y:\n",
            "1a: 1/2\n",
            "a b: 1/2\n",
            "a :1/2\n",
            "a:1/2\n",
            "a: 1/2\na: 1/2\n",
            "  a: 1/2\n",
            // Nesting, continuation, mixed indents, sequences elsewhere.
            "a:\n  b: 1/2\n",
            "a: 1/2\n  c/d\n",
            "a:\n  - 1/2\n    c/d\n",
            "a:\n  - 1/2\n   - 3/4\n",
            "a:\n  - - 1/2\n",
            "a:\n  - b: 1/2\n",
            "a:\n  -1/2\n",
            "- 1/2\n",
            "a: 1/2\n- 3/4\n",
            "just a/string\n",
        ] {
            assert_eq!(parse(doc.as_bytes()), None, "{doc:?}");
        }
    }

    #[test]
    fn too_many_lines_left_to_the_full_parser() {
        let doc = "\n".repeat(crate::parse::MAX_NODES + 1);
        assert_eq!(parse(doc.as_bytes()), None);
        let doc = "\n".repeat(crate::parse::MAX_NODES);
        assert_eq!(parse(doc.as_bytes()), Some(Doc::default()));
    }
}
