//! One module per command: its flags, validated config and pure `build` of the ruleset.
pub mod redirect;
