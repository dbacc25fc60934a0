//! One module per command: its flags, validated config and pure `build` of the ruleset.
pub mod dnat;
pub mod local_address;
pub mod masquerade;
pub mod netpol;
pub mod redirect;
