//! Daemons that accept traffic (local-address, dnat) warn when another table's base
//! chain can still drop it: an nftables accept ends only our own base chain.

use crate::backend::{Backend, ForeignDrop};
use crate::model::{Hook, IpFamily};

/// Warns once per change about other tables' chains that drop at the hooks we accept at.
#[derive(Default)]
pub struct ForeignDropWatch {
    last: Option<Vec<ForeignDrop>>,
}

impl ForeignDropWatch {
    /// Check `hooks` for chains seeing `family`; log when the finding changes. Read-only.
    pub fn check(
        &mut self,
        backend: &mut dyn Backend,
        table: &str,
        hooks: &[Hook],
        family: &[IpFamily],
        what: &str,
    ) {
        let mut found = Vec::new();
        for hook in hooks {
            match backend.foreign_drop_chains(table, *hook) {
                Ok(list) => found.extend(
                    list.into_iter()
                        .filter(|c| family.iter().any(|f| c.covers(*f)))
                        .map(|c| (hook, c)),
                ),
                Err(e) => {
                    tracing::debug!(error = %e, "cannot list other tables' chains");
                    return;
                }
            }
        }
        let chains: Vec<ForeignDrop> = found.iter().map(|(_, c)| c.clone()).collect();
        if self.last.as_ref() == Some(&chains) {
            return;
        }
        if !chains.is_empty() {
            let named: Vec<String> = found
                .iter()
                .map(|(h, c)| format!("{c} at hook {}", h.nft_name()))
                .collect();
            tracing::warn!(
                chains = %named.join("; "),
                "another table can drop {what} despite our accept: an nftables accept ends only our own base chain; allow it in those chains too"
            );
        } else if self.last.is_some() {
            tracing::info!("no other table drops {what} any more");
        }
        self.last = Some(chains);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreign_drop_watch_warns_once_per_change() {
        use crate::backend::fake::FakeBackend;
        let mut b = FakeBackend::new();
        let mut w = ForeignDropWatch::default();
        w.check(&mut b, "t", &[Hook::Input], &[IpFamily::V4], "x");
        assert_eq!(w.last, Some(vec![]));
        b.foreign_drops.push((
            Hook::Input,
            ForeignDrop {
                family: "ip6",
                table: "filter".into(),
                chain: "INPUT".into(),
                policy_drop: true,
                drop_rules: 0,
            },
        ));
        w.check(&mut b, "t", &[Hook::Input], &[IpFamily::V4], "x");
        assert_eq!(w.last, Some(vec![]), "an ip6 chain does not see IPv4");
        b.foreign_drops[0].1.family = "ip";
        w.check(&mut b, "t", &[Hook::Input], &[IpFamily::V4], "x");
        assert_eq!(w.last.as_ref().map(Vec::len), Some(1));
        w.check(&mut b, "t", &[Hook::Output], &[IpFamily::V4], "x");
        assert_eq!(w.last, Some(vec![]), "other hook");
    }
}
