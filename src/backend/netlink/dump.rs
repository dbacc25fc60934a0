//! Reads where nlink's general-purpose answer costs more than the read itself: a set's
//! elements as flat wire ranges, a table's raw user data, the ruleset generation. Over a
//! second netfilter netlink socket, blocking, with one reused receive buffer.
//!
//! Why not nlink here: `list_set_elements` allocates each element's key, end, statement
//! list and data separately, keeps every dump message, asks for the set's flags in one
//! more round trip and pairs interval ends in a second copy. At 10 000 ranges that was
//! ~7 MB touched (1 800 page faults) and about a third of `verify`'s time; the kernel's
//! own part (walking the set again for every 32 KiB it sends) is the rest. nlink also has
//! no reader for a table's user data beyond the comment (`record.rs` keeps a second entry
//! there).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nlink::netlink::nftables as nft;

use super::wire::{UDATA_COMMENT, udata_entry};

const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_DUMP: u16 = 0x300;
/// The kernel changed the ruleset while this dump ran: its parts may not agree.
const NLM_F_DUMP_INTR: u16 = 0x10;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNETLINK_V0: u8 = 0;
const NFPROTO_UNSPEC: u8 = 0;
const NFPROTO_INET: u8 = 1;
/// `NFT_SET_ELEM_INTERVAL_END`.
const INTERVAL_END: u32 = 1;
/// A dump message is at most 32 KiB (the kernel caps its buffer there); twice that holds
/// any reply whole.
const RECV_BUFFER: usize = 64 << 10;
/// Dumps the ruleset's changes interrupted are read again, this many times at most.
const DUMP_ATTEMPTS: usize = 10;

/// A key of up to 16 bytes (IPv6 address) and its length: no allocation per element.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct WireKey {
    bytes: [u8; 16],
    len: u8,
}

impl WireKey {
    pub(super) fn new(b: &[u8]) -> Option<Self> {
        let mut bytes = [0u8; 16];
        bytes.get_mut(..b.len())?.copy_from_slice(b);
        Some(WireKey {
            bytes,
            len: b.len() as u8,
        })
    }

    /// The first `len` bytes of `bytes` (as `wire::element_wire` returns them).
    pub(super) fn from_wire(mut bytes: [u8; 16], len: usize) -> Self {
        let len = len.min(16);
        bytes[len..].fill(0);
        WireKey {
            bytes,
            len: len as u8,
        }
    }

    pub(super) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// `self - 1` (big-endian); None at zero.
    fn decrement(mut self) -> Option<Self> {
        let b = &mut self.bytes[..usize::from(self.len)];
        let i = b.iter().rposition(|x| *x != 0)?;
        b[i] -= 1;
        b[i + 1..].fill(0xff);
        Some(self)
    }

    fn top(self) -> Self {
        let mut t = self;
        t.bytes[..usize::from(self.len)].fill(0xff);
        t
    }
}

/// One element of a set as a range `[start, end]` (end inclusive; a plain set's element
/// is `[key, key]`).
pub(super) type WireRange = (WireKey, WireKey);

/// A table as `NFT_MSG_GETTABLE` answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RawTable {
    pub flags: u32,
    pub userdata: Vec<u8>,
}

impl RawTable {
    /// The comment in the user data (`NFTNL_UDATA_TABLE_COMMENT`), as nft shows it.
    pub(super) fn comment(&self) -> Option<String> {
        let value = udata_entry(&self.userdata, UDATA_COMMENT)?;
        let text = value.strip_suffix(&[0]).unwrap_or(value);
        Some(String::from_utf8_lossy(text).into_owned())
    }
}

pub(super) struct Reader {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl Reader {
    /// A netfilter netlink socket in the current network namespace.
    pub(super) fn open() -> io::Result<Self> {
        // SAFETY: plain socket(2); the fd is owned at once.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_NETFILTER,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a new descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // Errors without the request echoed back.
        let on: libc::c_int = 1;
        // SAFETY: setsockopt with a c_int option value of the right size.
        unsafe {
            libc::setsockopt(
                raw,
                libc::SOL_NETLINK,
                libc::NETLINK_CAP_ACK,
                (&raw const on).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        Ok(Reader {
            fd,
            seq: 0,
            buf: vec![0; RECV_BUFFER],
        })
    }

    /// `NFT_MSG_GETGEN`: the ruleset generation (every committed batch adds one).
    pub(super) fn generation(&mut self) -> io::Result<u32> {
        let mut genid = None;
        self.request(nft::NFT_MSG_GETGEN, 0, &[], |_, payload| {
            for (kind, value) in attrs(payload) {
                if kind == nft::NFTA_GEN_ID && value.len() >= 4 {
                    genid = Some(u32::from_be_bytes([value[0], value[1], value[2], value[3]]));
                }
            }
        })?;
        genid.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no generation id"))
    }

    /// `NFT_MSG_GETTABLE` for inet `name`: None when there is none.
    pub(super) fn table(&mut self, name: &str) -> io::Result<Option<RawTable>> {
        let mut attrs_out = Vec::new();
        put_str(&mut attrs_out, nft::NFTA_TABLE_NAME, name);
        let mut table = RawTable {
            flags: 0,
            userdata: Vec::new(),
        };
        let answer = self.request(nft::NFT_MSG_GETTABLE, NFPROTO_INET, &attrs_out, |_, p| {
            for (kind, value) in attrs(p) {
                match kind {
                    nft::NFTA_TABLE_FLAGS if value.len() >= 4 => {
                        table.flags = u32::from_be_bytes(value[..4].try_into().unwrap());
                    }
                    nft::NFTA_TABLE_USERDATA => table.userdata = value.to_vec(),
                    _ => {}
                }
            }
        });
        match answer {
            Ok(()) => Ok(Some(table)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The family of every table nf_tables holds, any family (one dump).
    pub(super) fn table_families(&mut self) -> io::Result<Vec<u8>> {
        let mut families = Vec::new();
        // A table added or removed meanwhile changes nothing for the caller's question.
        self.dump(nft::NFT_MSG_GETTABLE, NFPROTO_UNSPEC, &[], |family, _| {
            families.push(family)
        })?;
        Ok(families)
    }

    /// Every element of set `set` in inet table `table`, as ranges sorted by start. An
    /// interval set's starts and `end + 1`s (flagged INTERVAL_END) are paired back the
    /// way nlink pairs them: a start with no end runs to the top.
    pub(super) fn set_ranges(
        &mut self,
        table: &str,
        set: &str,
        interval: bool,
    ) -> io::Result<Vec<WireRange>> {
        let raw = self.elements(table, set)?;
        Ok(if interval {
            pair(raw)
        } else {
            let mut keys: Vec<WireRange> = raw.into_iter().map(|(k, _)| (k, k)).collect();
            keys.sort_unstable();
            keys
        })
    }

    /// How many elements `set` holds, as `set_ranges` would return them (an interval
    /// set's ranges are its starts).
    pub(super) fn count(&mut self, table: &str, set: &str) -> io::Result<usize> {
        Ok(self
            .elements(table, set)?
            .iter()
            .filter(|(_, end)| !end)
            .count())
    }

    /// The set's elements as the kernel sends them: (key, is an interval end).
    fn elements(&mut self, table: &str, set: &str) -> io::Result<Vec<(WireKey, bool)>> {
        let mut request = Vec::new();
        put_str(&mut request, nft::NFTA_SET_ELEM_LIST_TABLE, table);
        put_str(&mut request, nft::NFTA_SET_ELEM_LIST_SET, set);
        for _ in 0..DUMP_ATTEMPTS {
            let mut raw = Vec::new();
            let mut malformed = false;
            let complete = self.dump(
                nft::NFT_MSG_GETSETELEM,
                NFPROTO_INET,
                &request,
                |_, payload| {
                    for (kind, list) in attrs(payload) {
                        if kind != nft::NFTA_SET_ELEM_LIST_ELEMENTS {
                            continue;
                        }
                        for (kind, elem) in attrs(list) {
                            if kind != nft::NFTA_LIST_ELEM {
                                continue;
                            }
                            match element_key(elem) {
                                Some(e) => raw.push(e),
                                None => malformed = true,
                            }
                        }
                    }
                },
            )?;
            if malformed {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("set {set}: an element without a readable key"),
                ));
            }
            if complete {
                return Ok(raw);
            }
            tracing::debug!(set, "element dump interrupted by a commit; reading again");
        }
        Err(io::Error::new(
            io::ErrorKind::Interrupted,
            format!("set {set}: the ruleset kept changing while it was read"),
        ))
    }

    /// One request answered by one message (or an error); `each` sees it.
    fn request(
        &mut self,
        msg: u8,
        family: u8,
        attrs: &[u8],
        mut each: impl FnMut(u16, &[u8]),
    ) -> io::Result<()> {
        let seq = self.send(msg, NLM_F_REQUEST | NLM_F_ACK, family, attrs)?;
        loop {
            let n = self.recv()?;
            let mut done = false;
            for m in messages(&self.buf[..n])? {
                if m.seq != seq {
                    continue;
                }
                match m.kind {
                    NLMSG_ERROR => {
                        let code = error_code(m.payload);
                        if code != 0 {
                            return Err(io::Error::from_raw_os_error(-code));
                        }
                        done = true; // the ACK comes after the answer
                    }
                    NLMSG_DONE => done = true,
                    kind => each(kind, m.payload.get(NFGENMSG_LEN..).unwrap_or_default()),
                }
            }
            if done {
                return Ok(());
            }
        }
    }

    /// A dump of `msg` for `family`; `each` sees every answer's family and attributes.
    /// Ok(false) when a commit interrupted it (read to its end, so the socket is clean).
    fn dump(
        &mut self,
        msg: u8,
        family: u8,
        attrs: &[u8],
        mut each: impl FnMut(u8, &[u8]),
    ) -> io::Result<bool> {
        let seq = self.send(msg, NLM_F_REQUEST | NLM_F_DUMP, family, attrs)?;
        let mut interrupted = false;
        loop {
            let n = self.recv()?;
            for m in messages(&self.buf[..n])? {
                if m.seq != seq {
                    continue;
                }
                interrupted |= m.flags & NLM_F_DUMP_INTR != 0;
                match m.kind {
                    NLMSG_ERROR => {
                        let code = error_code(m.payload);
                        if code != 0 {
                            return Err(io::Error::from_raw_os_error(-code));
                        }
                    }
                    NLMSG_DONE => {
                        let code = error_code(m.payload);
                        if code != 0 {
                            return Err(io::Error::from_raw_os_error(-code));
                        }
                        return Ok(!interrupted);
                    }
                    _ => each(
                        m.payload.first().copied().unwrap_or_default(),
                        m.payload.get(NFGENMSG_LEN..).unwrap_or_default(),
                    ),
                }
            }
        }
    }

    fn send(&mut self, msg: u8, flags: u16, family: u8, attrs: &[u8]) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let len = NLMSG_HDRLEN + NFGENMSG_LEN + attrs.len();
        let mut m = Vec::with_capacity(len);
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | u16::from(msg)).to_ne_bytes());
        m.extend_from_slice(&flags.to_ne_bytes());
        m.extend_from_slice(&self.seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&[family, NFNETLINK_V0, 0, 0]);
        m.extend_from_slice(attrs);
        // SAFETY: sockaddr_nl is plain data; all-zero addresses the kernel.
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: `m` and `kernel` outlive the call; lengths are theirs.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                m.as_ptr().cast(),
                m.len(),
                0,
                (&raw const kernel).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(self.seq)
    }

    /// One datagram into the buffer; its length.
    fn recv(&mut self) -> io::Result<usize> {
        loop {
            // SAFETY: the buffer is ours and `len` is its length. MSG_TRUNC: the return
            // value is the datagram's real length, so a cut one is seen.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    libc::MSG_TRUNC,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let n = n as usize;
            if n > self.buf.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("netlink message of {n} bytes exceeds the receive buffer"),
                ));
            }
            return Ok(n);
        }
    }
}

struct Message<'a> {
    kind: u16,
    flags: u16,
    seq: u32,
    payload: &'a [u8],
}

/// The netlink messages of one datagram.
fn messages(mut b: &[u8]) -> io::Result<Vec<Message<'_>>> {
    let mut out = Vec::new();
    while b.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes(b[0..4].try_into().unwrap()) as usize;
        if len < NLMSG_HDRLEN || len > b.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "malformed netlink message",
            ));
        }
        out.push(Message {
            kind: u16::from_ne_bytes([b[4], b[5]]),
            flags: u16::from_ne_bytes([b[6], b[7]]),
            seq: u32::from_ne_bytes(b[8..12].try_into().unwrap()),
            payload: &b[NLMSG_HDRLEN..len],
        });
        b = &b[len.next_multiple_of(4).min(b.len())..];
    }
    Ok(out)
}

/// NLMSG_ERROR's / NLMSG_DONE's error code (negative errno, 0 for an ACK).
fn error_code(payload: &[u8]) -> i32 {
    payload
        .get(..4)
        .map_or(0, |b| i32::from_ne_bytes(b.try_into().unwrap()))
}

/// The attributes of `b` as (type without the nested/byte-order bits, payload); stops at
/// the first malformed one.
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([b[0], b[1]]));
        if len < 4 || len > b.len() {
            return None;
        }
        let kind = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        let value = &b[4..len];
        b = &b[len.next_multiple_of(4).min(b.len())..];
        Some((kind, value))
    })
}

fn put_str(buf: &mut Vec<u8>, kind: u16, s: &str) {
    buf.extend_from_slice(&((4 + s.len() + 1) as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(s.as_bytes());
    buf.push(0);
    buf.resize(buf.len().next_multiple_of(4), 0);
}

/// An element nest's key and whether it is an interval end.
fn element_key(elem: &[u8]) -> Option<(WireKey, bool)> {
    let mut key = None;
    let mut flags = 0;
    for (kind, value) in attrs(elem) {
        match kind {
            nft::NFTA_SET_ELEM_KEY => {
                let (_, data) = attrs(value).find(|(k, _)| *k == nft::NFTA_DATA_VALUE)?;
                key = Some(WireKey::new(data)?);
            }
            nft::NFTA_SET_ELEM_FLAGS if value.len() >= 4 => {
                flags = u32::from_be_bytes(value[..4].try_into().unwrap());
            }
            _ => {}
        }
    }
    Some((key?, flags & INTERVAL_END != 0))
}

/// Starts and interval ends back into ranges, as nlink's `pair_elements` does: sorted by
/// key (an end before a start at the same key), a start is closed by the next end (its
/// key minus one); a start followed by another start, or by nothing, runs to the top; an
/// end with no open start is the kernel's leading `0 interval-end`, dropped.
fn pair(mut raw: Vec<(WireKey, bool)>) -> Vec<WireRange> {
    // The kernel's tree walk sends keys in descending order: one reversed run to sort.
    raw.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    let mut out = Vec::with_capacity(raw.len() / 2 + 1);
    let mut open: Option<WireKey> = None;
    for (key, end) in raw {
        if end {
            if let Some(start) = open.take()
                && let Some(last) = key.decrement()
            {
                out.push((start, last));
            }
        } else {
            if let Some(start) = open.replace(key) {
                out.push((start, start.top()));
            }
        }
    }
    if let Some(start) = open {
        out.push((start, start.top()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(b: &[u8]) -> WireKey {
        WireKey::new(b).unwrap()
    }

    #[test]
    fn pairs_like_nlink_in_any_order() {
        // [10.0.0.0, 10.0.0.3], [10.0.0.8, top]; a leading 0 interval-end.
        let raw = vec![
            (k(&[10, 0, 0, 8]), false),
            (k(&[10, 0, 0, 4]), true),
            (k(&[10, 0, 0, 0]), false),
            (k(&[0, 0, 0, 0]), true),
        ];
        let want = vec![
            (k(&[10, 0, 0, 0]), k(&[10, 0, 0, 3])),
            (k(&[10, 0, 0, 8]), k(&[255, 255, 255, 255])),
        ];
        assert_eq!(pair(raw.clone()), want);
        let mut rev = raw;
        rev.reverse();
        assert_eq!(pair(rev), want);
    }

    #[test]
    fn an_end_and_a_start_at_one_key_close_then_open() {
        // [1, 4] and [5, 6]: the end `5` and the start `5` share a key.
        let raw = vec![
            (k(&[0, 5]), false),
            (k(&[0, 7]), true),
            (k(&[0, 1]), false),
            (k(&[0, 5]), true),
        ];
        assert_eq!(
            pair(raw),
            vec![(k(&[0, 1]), k(&[0, 4])), (k(&[0, 5]), k(&[0, 6]))]
        );
    }

    #[test]
    fn malformed_attributes_end_the_walk_without_panicking() {
        assert_eq!(attrs(&[8, 0, 1, 0, 1]).count(), 0);
        assert_eq!(attrs(&[2, 0, 1, 0]).count(), 0);
        assert!(element_key(&[1, 2, 3]).is_none());
        assert!(messages(&[200, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }
}
