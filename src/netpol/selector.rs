//! Kubernetes label selectors (`metav1.LabelSelector`): `matchLabels` and
//! `matchExpressions` with In, NotIn, Exists, DoesNotExist. All requirements are ANDed; an
//! empty selector matches everything.

use std::collections::BTreeMap;

/// A pod's or namespace's labels.
pub type Labels = BTreeMap<String, String>;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selector {
    /// `matchLabels`: each key must be present with exactly this value.
    pub match_labels: Labels,
    /// `matchExpressions`.
    pub expressions: Vec<Requirement>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub op: Operator,
    /// Non-empty for In/NotIn, empty for Exists/DoesNotExist (validated when parsed).
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl Operator {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "In" => Operator::In,
            "NotIn" => Operator::NotIn,
            "Exists" => Operator::Exists,
            "DoesNotExist" => Operator::DoesNotExist,
            _ => return None,
        })
    }
}

impl Selector {
    /// The empty selector (`{}`): matches every object.
    pub fn everything() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.expressions.is_empty()
    }

    /// Whether `labels` satisfy every requirement (apimachinery `labels.Selector.Matches`).
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.expressions.iter().all(|r| r.matches(labels))
    }
}

impl Requirement {
    pub fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.key);
        match self.op {
            Operator::In => value.is_some_and(|v| self.values.contains(v)),
            // A missing key satisfies NotIn (as in apimachinery).
            Operator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn req(key: &str, op: Operator, values: &[&str]) -> Requirement {
        Requirement {
            key: key.into(),
            op,
            values: values.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn selector_table() {
        let frontend = labels(&[("role", "frontend"), ("env", "prod")]);
        let db = labels(&[("role", "db")]);
        let none = labels(&[]);
        let ml = |pairs: &[(&str, &str)]| Selector {
            match_labels: labels(pairs),
            expressions: vec![],
        };
        let ex = |r: Vec<Requirement>| Selector {
            match_labels: Labels::new(),
            expressions: r,
        };
        use Operator::*;
        let cases: Vec<(Selector, &Labels, bool)> = vec![
            (Selector::everything(), &frontend, true),
            (Selector::everything(), &none, true),
            (ml(&[("role", "frontend")]), &frontend, true),
            (ml(&[("role", "frontend")]), &db, false),
            (ml(&[("role", "frontend")]), &none, false),
            (
                ml(&[("role", "frontend"), ("env", "prod")]),
                &frontend,
                true,
            ),
            (
                ml(&[("role", "frontend"), ("env", "dev")]),
                &frontend,
                false,
            ),
            (ex(vec![req("role", In, &["db", "cache"])]), &db, true),
            (
                ex(vec![req("role", In, &["db", "cache"])]),
                &frontend,
                false,
            ),
            (ex(vec![req("role", In, &["db"])]), &none, false),
            (ex(vec![req("role", NotIn, &["db"])]), &db, false),
            (ex(vec![req("role", NotIn, &["db"])]), &frontend, true),
            (ex(vec![req("role", NotIn, &["db"])]), &none, true),
            (ex(vec![req("env", Exists, &[])]), &frontend, true),
            (ex(vec![req("env", Exists, &[])]), &db, false),
            (ex(vec![req("env", DoesNotExist, &[])]), &db, true),
            (ex(vec![req("env", DoesNotExist, &[])]), &frontend, false),
            // matchLabels and matchExpressions are ANDed.
            (
                Selector {
                    match_labels: labels(&[("role", "frontend")]),
                    expressions: vec![req("env", In, &["dev"])],
                },
                &frontend,
                false,
            ),
            (
                Selector {
                    match_labels: labels(&[("role", "frontend")]),
                    expressions: vec![req("env", In, &["prod"]), req("tier", DoesNotExist, &[])],
                },
                &frontend,
                true,
            ),
        ];
        for (i, (sel, l, want)) in cases.iter().enumerate() {
            assert_eq!(sel.matches(l), *want, "case {i}: {sel:?} on {l:?}");
        }
    }
}
