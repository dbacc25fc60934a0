//! Evidence gathering for `--backend auto` and `nftkit detect`: a netlink probe of
//! nf_tables and the save output of both iptables flavours. The decision itself is the
//! pure `nft_compat::detect::decide`, unit-tested on recorded evidence.

use nft_compat::detect::{Decision, Evidence, SideEvidence, decide};
use nft_compat::{Flavour, IpVersion, save};

use super::iptables::{Exec, SystemExec};
use crate::error::Result;

/// Probe the kernel and read both flavours' tables. Errors only when the probe fails for
/// another reason than a missing nf_tables (e.g. no CAP_NET_ADMIN): guessing then would
/// pick a backend that fails the same way.
pub fn gather() -> Result<Evidence> {
    gather_with(&SystemExec::default(), super::netlink::probe)
}

pub fn gather_with(
    exec: &dyn Exec,
    probe: impl FnOnce() -> Result<std::result::Result<(), String>>,
) -> Result<Evidence> {
    Ok(Evidence {
        nf_tables: probe()?,
        legacy: side(exec, Flavour::Legacy),
        nft: side(exec, Flavour::Nft),
    })
}

/// One flavour's evidence over both families; None if its IPv4 save is missing or fails.
fn side(exec: &dyn Exec, flavour: Flavour) -> Option<SideEvidence> {
    let mut saves = Vec::new();
    for ip in IpVersion::BOTH {
        let bin = exec.find(&flavour.save_binary(ip))?;
        let out = exec.run(&bin.to_string_lossy(), &[], None).ok();
        match out.filter(|o| o.status.success()) {
            Some(o) => match save::parse(&String::from_utf8_lossy(&o.stdout)) {
                Ok(s) => saves.push(s),
                Err(e) => tracing::debug!(flavour = flavour.name(), error = %e, "unreadable save"),
            },
            None if ip == IpVersion::V4 => return None,
            None => {}
        }
    }
    let refs: Vec<&save::Save> = saves.iter().collect();
    Some(SideEvidence::from_saves(&refs))
}

/// Whether this network namespace has any iptables-legacy table (IPv4 or IPv6); None if
/// the kernel's lists cannot be read. Legacy tables appear here only once something used
/// them, and reading the lists instantiates nothing.
pub(crate) fn legacy_tables_present() -> Option<bool> {
    let mut any = false;
    for f in ["/proc/net/ip_tables_names", "/proc/net/ip6_tables_names"] {
        match std::fs::read_to_string(f) {
            Ok(s) => any |= !s.trim().is_empty(),
            // No legacy support compiled in for this family: no tables.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(_) => return None,
        }
    }
    Some(any)
}

/// Gather and decide. `full`: always read both flavours (`nftkit detect`); otherwise
/// (`--backend auto`, every run) skip the save commands when no legacy table exists,
/// since nothing can then point to iptables-legacy.
pub fn detect(full: bool) -> Result<(Evidence, Decision)> {
    detect_given(full, super::netlink::probe()?)
}

/// [`detect`] with the netlink probe's answer already known.
pub fn detect_given(
    full: bool,
    nf_tables: std::result::Result<(), String>,
) -> Result<(Evidence, Decision)> {
    let e = if !full && legacy_tables_present() == Some(false) {
        Evidence {
            nf_tables,
            legacy: Some(SideEvidence::default()),
            nft: None,
        }
    } else {
        gather_with(&SystemExec::default(), || Ok(nf_tables))?
    };
    let d = decide(&e);
    Ok((e, d))
}

fn side_json(s: &Option<SideEvidence>) -> serde_json::Value {
    match s {
        None => serde_json::Value::Null,
        Some(s) => serde_json::json!({
            "rules": s.rules,
            "nftkit_rules": s.nftkit_rules,
            "kube_chains": s.kube_chains,
        }),
    }
}

/// `nftkit detect --json`.
pub fn report_json(e: &Evidence, d: &Decision) -> serde_json::Value {
    serde_json::json!({
        "backend": d.choice.name(),
        "reason": d.reason,
        "evidence": {
            "nf_tables": match &e.nf_tables {
                Ok(()) => serde_json::json!({ "available": true }),
                Err(why) => serde_json::json!({ "available": false, "error": why }),
            },
            "iptables_legacy": side_json(&e.legacy),
            "iptables_nft": side_json(&e.nft),
        }
    })
}

/// `nftkit detect`.
pub fn report_text(e: &Evidence, d: &Decision) -> String {
    let side = |s: &Option<SideEvidence>| match s {
        None => "not installed or unreadable".to_string(),
        Some(s) => format!(
            "{} rules (plus {} of nftkit's own, not counted), Kubernetes marker chains: {}",
            s.rules,
            s.nftkit_rules,
            if s.kube_chains.is_empty() {
                "none".to_string()
            } else {
                s.kube_chains.join(", ")
            }
        ),
    };
    format!(
        "backend: {}\nreason: {}\nevidence:\n  nf_tables: {}\n  iptables-legacy: {}\n  iptables-nft: {}\n",
        d.choice.name(),
        d.reason,
        match &e.nf_tables {
            Ok(()) => "available".to_string(),
            Err(why) => format!("unavailable ({why})"),
        },
        side(&e.legacy),
        side(&e.nft),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::path::PathBuf;
    use std::process::{ExitStatus, Output};

    /// Replays save output per binary name; binaries not listed are "not installed".
    struct Replay(Vec<(&'static str, &'static str)>);

    impl Exec for Replay {
        fn run(&self, program: &str, _: &[&str], _: Option<&str>) -> std::io::Result<Output> {
            let text = self
                .0
                .iter()
                .find(|(b, _)| *b == program)
                .map(|(_, t)| *t)
                .unwrap_or("");
            Ok(Output {
                status: ExitStatus::from_raw(0),
                stdout: text.as_bytes().to_vec(),
                stderr: Vec::new(),
            })
        }
        fn find(&self, program: &str) -> Option<PathBuf> {
            self.0
                .iter()
                .any(|(b, _)| *b == program)
                .then(|| PathBuf::from(program))
        }
    }

    #[test]
    fn legacy_hint_in_mangle_picks_legacy() {
        let exec = Replay(vec![
            (
                "iptables-legacy-save",
                "*mangle\n:PREROUTING ACCEPT [0:0]\n:KUBE-IPTABLES-HINT - [0:0]\nCOMMIT\n",
            ),
            ("ip6tables-legacy-save", ""),
            ("iptables-nft-save", ""),
            ("ip6tables-nft-save", ""),
        ]);
        let e = gather_with(&exec, || Ok(Ok(()))).unwrap();
        let d = decide(&e);
        assert_eq!(d.choice.name(), "iptables-legacy");
        let text = report_text(&e, &d);
        assert!(text.contains("KUBE-IPTABLES-HINT"), "{text}");
        let j = report_json(&e, &d);
        assert_eq!(j["backend"], "iptables-legacy");
        assert_eq!(
            j["evidence"]["iptables_legacy"]["kube_chains"][0],
            "KUBE-IPTABLES-HINT"
        );
    }

    #[test]
    fn no_binaries_and_nf_tables_gives_nftables() {
        let e = gather_with(&Replay(vec![]), || Ok(Ok(()))).unwrap();
        assert_eq!((e.legacy.clone(), e.nft.clone()), (None, None));
        let d = decide(&e);
        assert_eq!(d.choice.name(), "nftables");
        assert!(report_text(&e, &d).contains("not installed"));
    }
}
