//! Ownership on the iptables backends (CONTRACT.md "Ownership"). What is provably ours
//! (the comment on a rule, never the name alone) is nft-compat's `state`; this module
//! decides what an apply may replace and a delete may remove, and words the refusal
//! for what is named like ours without that proof (exit 1; `--force` takes it over on
//! apply, deletes it by name on delete).

use nft_compat::save::Save;
use nft_compat::state::FamilyState;
use nft_compat::{IpVersion, Table, naming};

use crate::error::Error;

/// What an apply of `want` replaces in family `ip` (`save` read just before): the chains
/// and jumps proven ours, and the descriptions of foreign objects that refuse it — a
/// foreign chain it would write, or a foreign rule entering one of our chains that it
/// writes or deletes (that rule would keep the chain referenced). With `force` there is
/// no refusal: those chains (and the jumps into them) are taken over, with a warning.
pub(super) fn before_apply(
    backend: &str,
    ip: IpVersion,
    save: &Save,
    prefix: &str,
    want: &FamilyState,
    force: bool,
) -> (FamilyState, Vec<String>) {
    let ours = FamilyState::from_save(save, prefix);
    let foreign = FamilyState::foreign(save, prefix);
    let stale = |t: Table, n: &str| ours.has_chain(t, n) && !want.has_chain(t, n);
    let found = describe(
        ip,
        &foreign,
        |t, n| want.has_chain(t, n),
        |t, n| want.has_chain(t, n) && !ours.has_chain(t, n) || stale(t, n),
    );
    if found.is_empty() || !force {
        return (ours, found);
    }
    tracing::warn!(
        backend,
        taken_over = %found.join("; "),
        "replacing chains and rules not managed by nftkit (--force)"
    );
    let claimed = FamilyState::from_save_claiming(save, prefix, |t, n| {
        want.has_chain(t, n) || ours.has_chain(t, n)
    });
    (claimed, Vec::new())
}

/// What a delete removes in family `ip`: the chains and jumps proven ours, and the
/// descriptions of everything else named like them, which refuse it. With `force`:
/// everything named like ours, no refusal.
pub(super) fn before_delete(
    ip: IpVersion,
    save: &Save,
    prefix: &str,
    force: bool,
) -> (FamilyState, Vec<String>) {
    if force {
        return (
            FamilyState::from_save_claiming(save, prefix, |_, _| true),
            Vec::new(),
        );
    }
    let foreign = FamilyState::foreign(save, prefix);
    let found = describe(ip, &foreign, |_, _| true, |_, _| true);
    (FamilyState::from_save(save, prefix), found)
}

/// The refusal for objects named like ours that are not provably ours
/// (CONTRACT.md "Ownership"): exit 1 naming them, their table and the way out.
pub(super) fn refuse(backend: &str, clashes: &[String], table: &str, replace: bool) -> Error {
    const SHOWN: usize = 5;
    let mut list = clashes
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if clashes.len() > SHOWN {
        list.push_str(&format!("; and {} more", clashes.len() - SHOWN));
    }
    Error::runtime(format!(
        "backend {}: {list}: named like nftkit table {table}'s chains ({}-*) but not managed by nftkit (no ownership comment on it or on a rule that enters it); refusing to {} (--force {})",
        backend,
        naming::prefix(table),
        if replace { "replace it" } else { "delete it" },
        if replace {
            "takes it over"
        } else {
            "deletes by name"
        },
    ))
}

/// `chain NAME in table T (iptables/ip6tables)` for each foreign chain of `foreign` that
/// `pick` selects, and `rule "-A B SPEC" in table T (...)` for each foreign jump it selects.
fn describe(
    ip: IpVersion,
    foreign: &FamilyState,
    chain: impl Fn(Table, &str) -> bool,
    jump: impl Fn(Table, &str) -> bool,
) -> Vec<String> {
    let mut out = Vec::new();
    for t in &foreign.tables {
        for c in t.chains.iter().filter(|c| chain(t.table, &c.name)) {
            out.push(format!(
                "chain {} in table {} ({})",
                c.name,
                t.table.name(),
                ip.command()
            ));
        }
        for j in &t.jumps {
            let target = nft_compat::rule::target_of(&j.spec)
                .map(|(_, t)| t)
                .unwrap_or_default();
            if jump(t.table, &target) {
                out.push(format!(
                    "rule \"-A {} {}\" in table {} ({})",
                    j.from,
                    j.spec,
                    t.table.name(),
                    ip.command()
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::process::Output;

    use nft_compat::Flavour;

    use super::super::{Exec, IptablesBackend};
    use crate::backend::Backend;
    use crate::model::Ruleset;

    /// Replays one IPv4 save (IPv6: empty) and records every restore input.
    struct Recorder {
        save_v4: String,
        restores: std::rc::Rc<std::cell::RefCell<Vec<String>>>,
    }

    impl Exec for Recorder {
        fn run(&self, p: &str, _: &[&str], stdin: Option<&str>) -> std::io::Result<Output> {
            use std::os::unix::process::ExitStatusExt;
            let stdout = if p == "iptables-nft-save" {
                self.save_v4.clone().into_bytes()
            } else {
                Vec::new()
            };
            if let Some(input) = stdin {
                self.restores.borrow_mut().push(input.to_string());
            }
            Ok(Output {
                status: std::process::ExitStatus::from_raw(0),
                stdout,
                stderr: Vec::new(),
            })
        }
        fn find(&self, program: &str) -> Option<PathBuf> {
            Some(PathBuf::from(program))
        }
    }

    /// kube-proxy's chains under `--table kube`: an apply writing KUBE-POSTROUTING and a
    /// delete are refused before any restore runs; --force takes over only the chain it
    /// writes.
    #[test]
    fn clashing_foreign_chains_are_refused_before_anything_is_written() {
        use crate::model::{Action, BaseChain, Chain, ChainType, Hook, Rule, priority};
        let save_v4 = "*nat\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n\
             :KUBE-SERVICES - [0:0]\n:KUBE-POSTROUTING - [0:0]\n\
             -A PREROUTING -j KUBE-SERVICES\n-A POSTROUTING -j KUBE-POSTROUTING\n\
             -A KUBE-SERVICES -d 192.0.2.1/32 -j RETURN\n\
             -A KUBE-POSTROUTING -j RETURN\nCOMMIT\n";
        let restores = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let open = |force| {
            IptablesBackend::with_exec(
                Flavour::Nft,
                Box::new(Recorder {
                    save_v4: save_v4.into(),
                    restores: restores.clone(),
                }),
                crate::backend::Options {
                    force,
                    ..Default::default()
                },
            )
            .unwrap()
        };
        let mut b = open(false);
        let rs = Ruleset {
            table: "kube".into(),
            comment: "managed by nftkit masquerade".into(),
            sets: vec![],
            maps: Vec::new(),
            chains: vec![Chain {
                name: "nat-postrouting".into(),
                base: Some(BaseChain {
                    kind: ChainType::Nat,
                    hook: Hook::Postrouting,
                    priority: priority::SRCNAT,
                }),
                rules: vec![Rule {
                    matches: vec![crate::model::Match::NfProto(crate::model::IpFamily::V4)],
                    action: Action::Masquerade {
                        fully_random: false,
                    },
                }],
            }],
        };
        let msg = b.apply(&rs).unwrap_err().to_string();
        assert!(
            msg.contains("chain KUBE-POSTROUTING in table nat (iptables)")
                && msg.contains("iptables-nft")
                && msg.contains("--force")
                && !msg.contains("KUBE-SERVICES"),
            "{msg}"
        );
        let msg = b.delete("kube").unwrap_err().to_string();
        assert!(
            msg.contains("chain KUBE-SERVICES in table nat") && msg.contains("--force"),
            "{msg}"
        );
        assert!(restores.borrow().is_empty(), "{:?}", restores.borrow());

        let mut b = open(true);
        b.apply(&rs).unwrap();
        let input = restores.borrow()[0].clone();
        assert!(input.contains(":KUBE-POSTROUTING - [0:0]"), "{input}");
        assert!(
            input.contains("-D POSTROUTING -j KUBE-POSTROUTING"),
            "{input}"
        );
        assert!(!input.contains("KUBE-SERVICES"), "{input}");
    }
}
