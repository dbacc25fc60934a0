//! nft-compat: nftkit's compatibility layer for hosts without usable nf_tables.
//!
//! It will render nftkit's desired state as `iptables-restore` / `ip6tables-restore`
//! input for the iptables-legacy and iptables-nft flavours and read it back through
//! `iptables-save`. For now it holds the naming rules those backends share.

/// iptables refuses chain names longer than this (`XT_EXTENSION_MAXNAMELEN` - 1).
pub const MAX_CHAIN_NAME: usize = 28;

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
}
