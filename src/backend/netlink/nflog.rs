//! Reading the packets `log group N` rules send (nfnetlink_log), for netpol's verdict
//! logs: no ulogd, no kernel log (a syslog `log` writes nothing outside the initial
//! network namespace).

use futures::StreamExt;
use nlink::netlink::{Connection, Nflog};

use super::kernel_error;
use crate::error::{Error, Result};

/// A packet a `log group` rule sent: the rule's prefix and the packet from its network
/// header (at most the copy range).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedPacket {
    pub prefix: String,
    pub payload: Vec<u8>,
}

/// Bind nflog group `group` in this network namespace and hand every packet to `sink`,
/// on a thread of its own, for the life of the process. Returns once the group is bound;
/// an error if it cannot be (EBUSY: another listener has it).
pub fn spawn(
    group: u16,
    copy_range: u32,
    mut sink: impl FnMut(LoggedPacket) + Send + 'static,
) -> Result<()> {
    let (bound, bound_rx) = std::sync::mpsc::channel::<Result<()>>();
    std::thread::Builder::new()
        .name("nflog".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = bound.send(Err(Error::runtime(format!("cannot start runtime: {e}"))));
                    return;
                }
            };
            rt.block_on(async move {
                let conn = match Connection::<Nflog>::new() {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = bound.send(Err(kernel_error("open nfnetlink_log socket", &e)));
                        return;
                    }
                };
                if let Err(e) = conn.bind_group(group, copy_range).await {
                    let _ = bound.send(Err(kernel_error(&format!("bind nflog group {group}"), &e)));
                    return;
                }
                let _ = bound.send(Ok(()));
                let mut events = conn.events().await;
                while let Some(packet) = events.next().await {
                    match packet {
                        Ok(p) => sink(LoggedPacket {
                            prefix: p.prefix.unwrap_or_default(),
                            payload: p.payload,
                        }),
                        // ENOBUFS: the kernel dropped some while we were slow.
                        Err(e) => tracing::debug!(error = %e, "nflog read"),
                    }
                }
            });
        })
        .map_err(|e| Error::runtime(format!("cannot start the nflog reader: {e}")))?;
    bound_rx
        .recv()
        .unwrap_or_else(|_| Err(Error::runtime("the nflog reader stopped")))
}
