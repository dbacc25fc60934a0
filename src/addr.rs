//! Addresses on interfaces over rtnetlink (`nlink`'s route API), for `local-address`:
//! add one host address (IPv4 /32, IPv6 /128) idempotently, check it, remove it.
//!
//! CLI equivalents: `ip addr add 10.96.0.2/32 dev lo`, `ip -6 addr add 2001:db8::2/128
//! dev lo nodad`, `ip addr show dev lo`, `ip addr del 10.96.0.2/32 dev lo`.
//! The interface is looked up by name on every call, so an interface that was deleted and
//! created again (new index) is found again.

use std::net::IpAddr;

use nlink::netlink::addr::{Ipv4Address, Ipv6Address};
use nlink::netlink::{Connection, Route};

use crate::error::{Error, Result};

/// What [`AddrManager::ensure`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ensured {
    /// The address was already on the interface: nothing was sent.
    Present,
    /// The address was missing and has been added.
    Added,
}

/// A route netlink socket in the current network namespace.
pub struct AddrManager {
    rt: tokio::runtime::Runtime,
    conn: Connection<Route>,
}

/// The host prefix length of `ip`'s family.
pub fn host_prefix(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

fn nl_error(op: &str, e: &nlink::Error) -> Error {
    let hint = match e.errno() {
        // The kernel answers EACCES, not a capability error, when IPv6 is disabled on
        // the interface (its extended ack says so): do not send the user after
        // CAP_NET_ADMIN (tests/netns/reliability_kernel.rs).
        Some(libc::EACCES) if e.to_string().contains("IPv6 is disabled") => {
            " (net.ipv6.conf.<interface>.disable_ipv6 is 1 here: enable IPv6 or use an IPv4 address)"
        }
        Some(libc::EPERM) | Some(libc::EACCES) => " (needs CAP_NET_ADMIN)",
        _ => "",
    };
    Error::runtime(format!("{op}: {e}{hint}"))
}

impl AddrManager {
    pub fn connect() -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::runtime(format!("cannot start runtime: {e}")))?;
        let conn = rt
            .block_on(async { Connection::<Route>::new() })
            .map_err(|e| nl_error("open route netlink socket", &e))?;
        Ok(AddrManager { rt, conn })
    }

    /// The index of interface `name`, or a runtime error naming it when it does not exist.
    pub fn ifindex(&self, name: &str) -> Result<u32> {
        let link = self
            .rt
            .block_on(self.conn.get_link_by_name(name))
            .map_err(|e| nl_error(&format!("look up interface {name}"), &e))?;
        match link {
            Some(l) => Ok(l.ifindex()),
            None => Err(Error::runtime(format!(
                "interface {name} does not exist (nftkit adds the address to an existing interface; it never creates one)"
            ))),
        }
    }

    /// Every (interface index, address, prefix length) in this namespace.
    fn all(&self) -> Result<Vec<(u32, IpAddr, u8)>> {
        let addrs = self
            .rt
            .block_on(self.conn.get_addresses())
            .map_err(|e| nl_error("list addresses", &e))?;
        Ok(addrs
            .iter()
            .filter_map(|a| {
                let ip = a.local().or(a.address()).copied()?;
                Some((a.ifindex(), ip, a.prefix_len()))
            })
            .collect())
    }

    /// Whether `ip` (host prefix) is on interface `ifname`.
    pub fn has(&self, ifname: &str, ip: IpAddr) -> Result<bool> {
        let idx = self.ifindex(ifname)?;
        let want = (idx, ip, host_prefix(ip));
        Ok(self.all()?.contains(&want))
    }

    /// Names of the *other* interfaces that also hold `ip` (any prefix length).
    pub fn also_on(&self, ifname: &str, ip: IpAddr) -> Result<Vec<String>> {
        let idx = self.ifindex(ifname)?;
        let mut out = Vec::new();
        for (i, a, _) in self.all()? {
            if a == ip && i != idx {
                let name = self
                    .rt
                    .block_on(self.conn.get_link_by_index(i))
                    .ok()
                    .flatten()
                    .and_then(|l| l.name().map(str::to_string))
                    .unwrap_or_else(|| format!("#{i}"));
                out.push(name);
            }
        }
        Ok(out)
    }

    /// Add `ip` (host prefix; IPv6 without duplicate address detection, so it is usable at
    /// once) to `ifname` unless it is there. Read-only when it is.
    pub fn ensure(&self, ifname: &str, ip: IpAddr) -> Result<Ensured> {
        let idx = self.ifindex(ifname)?;
        let prefix = host_prefix(ip);
        if self.all()?.contains(&(idx, ip, prefix)) {
            return Ok(Ensured::Present);
        }
        let res = match ip {
            IpAddr::V4(a) => self.rt.block_on(
                self.conn
                    .add_address(Ipv4Address::with_index(idx, a, prefix)),
            ),
            IpAddr::V6(a) => self.rt.block_on(
                self.conn
                    .add_address(Ipv6Address::with_index(idx, a, prefix).nodad()),
            ),
        };
        match res {
            Ok(()) => Ok(Ensured::Added),
            // Someone added it between our check and our add.
            Err(e) if e.is_already_exists() => Ok(Ensured::Present),
            Err(e) => Err(nl_error(&format!("add {ip}/{prefix} to {ifname}"), &e)),
        }
    }

    /// Remove `ip` (host prefix) from `ifname`; Ok(false) when it (or the interface) was
    /// not there. Never removes the interface.
    pub fn remove(&self, ifname: &str, ip: IpAddr) -> Result<bool> {
        let prefix = host_prefix(ip);
        let idx = match self.ifindex(ifname) {
            Ok(i) => i,
            Err(_) => return Ok(false),
        };
        if !self.all()?.contains(&(idx, ip, prefix)) {
            return Ok(false);
        }
        match self
            .rt
            .block_on(self.conn.del_address_by_index(idx, ip, prefix))
        {
            Ok(()) => Ok(true),
            Err(e) if e.is_not_found() || e.errno() == Some(libc::EADDRNOTAVAIL) => Ok(false),
            Err(e) => Err(nl_error(&format!("remove {ip}/{prefix} from {ifname}"), &e)),
        }
    }
}
