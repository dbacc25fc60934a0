//! The constraints a match or an action puts on one iptables rule; `rule.rs` combines
//! them, `matches.rs` and `actions.rs` produce them.

use std::net::SocketAddr;

use ipnet::IpNet;

use crate::model::{IpFamily, L4Proto};

/// One constraint a match or an action puts on a rule.
#[derive(Debug, Clone)]
pub(super) enum C {
    Family(IpFamily),
    Src(IpNet),
    Dst(IpNet),
    Proto(L4Proto),
    NotProto(L4Proto),
    Sport(L4Proto, u16, u16),
    Dport(L4Proto, u16, u16),
    Extra(String),
    DnatTo(SocketAddr),
    /// Set by a verdict map entry: `-g` this (model) chain.
    GotoTo(String),
}
