//! Netlink attributes written by hand, where nlink has no builder or a slow one: set
//! element lists (the bulk of a big batch), host-endian uid/gid sets, the anonymous maps
//! of DNAT map rules; and the socket's send buffer for big batches.

use std::net::IpAddr;

use nlink::netlink::nftables::{self as nft, Family, Register, SetKeyType};

use super::{TYPE_GID, TYPE_UID};
use crate::model::{self, Element, IpFamily, KeyType};

/// Elements per NEWSETELEM message. An IPv6 interval range is two wire elements of
/// ~60 bytes, so 256 ranges stay well below the 64 KiB limit of one attribute nest.
pub(super) const ELEMENTS_PER_MESSAGE: usize = 256;
/// Send buffer for big batches (a 50 000-range IPv6 set is ~6 MB on the wire).
const SEND_BUFFER: i32 = 64 << 20;

pub(super) const NLA_F_NESTED: u16 = 0x8000;
const NFTA_SET_ELEM_LIST_SET_ID: u16 = 4;
/// `NFT_SET_ELEM_INTERVAL_END`: the element ends an interval (one past its last value).
const NFT_SET_ELEM_INTERVAL_END: u32 = 1;
/// The name nft gives an anonymous map; the kernel numbers it (`__map0`).
pub(super) const ANON_MAP_NAME: &str = "__map%d";

/// Raise SO_SNDBUF (forcing past wmem_max, which needs CAP_NET_ADMIN) so a batch of tens
/// of thousands of elements goes out in one sendmsg; best effort.
pub(super) fn raise_send_buffer(fd: i32) {
    let size = SEND_BUFFER;
    let ptr = &size as *const i32 as *const libc::c_void;
    let len = std::mem::size_of::<i32>() as libc::socklen_t;
    // SAFETY: fd is the live netlink socket; the option value is a valid c_int.
    unsafe {
        if libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, ptr, len) != 0 {
            libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, ptr, len);
        }
    }
}

/// NEWSET for a set of host-endian keys (uid, gid), with nft's userdata: key byte order
/// "host" and the comment. The set id only has to be unique in the batch; nlink numbers its
/// own from 1, so ours start high.
pub(super) fn host_order_set(
    table: &str,
    set: &model::Set,
    comment: &str,
    index: u32,
) -> nft::RawMessage {
    const NFTNL_UDATA_SET_KEYBYTEORDER: u8 = 0;
    const NFTNL_UDATA_SET_COMMENT: u8 = 7;
    const BYTEORDER_HOST_ENDIAN: u32 = 1;
    let type_id = nl_key(set.key).type_id();
    let mut udata = vec![NFTNL_UDATA_SET_KEYBYTEORDER, 4];
    udata.extend_from_slice(&BYTEORDER_HOST_ENDIAN.to_ne_bytes());
    let mut text = comment.as_bytes().to_vec();
    text.truncate(126);
    text.push(0);
    udata.push(NFTNL_UDATA_SET_COMMENT);
    udata.push(text.len() as u8);
    udata.extend_from_slice(&text);
    let mut attrs = Vec::new();
    put_attr(&mut attrs, nft::NFTA_SET_TABLE, &nul_terminated(table));
    put_attr(&mut attrs, nft::NFTA_SET_NAME, &nul_terminated(&set.name));
    put_attr(&mut attrs, nft::NFTA_SET_FLAGS, &0u32.to_be_bytes());
    put_attr(&mut attrs, nft::NFTA_SET_KEY_TYPE, &type_id.to_be_bytes());
    put_attr(&mut attrs, nft::NFTA_SET_KEY_LEN, &4u32.to_be_bytes());
    put_attr(&mut attrs, nft::NFTA_SET_USERDATA, &udata);
    put_attr(
        &mut attrs,
        nft::NFTA_SET_ID,
        &(0x4000_0000 + index).to_be_bytes(),
    );
    nft::RawMessage::new(nft::NFT_MSG_NEWSET, Family::Inet)
        .flags(libc::NLM_F_CREATE as u16 | libc::NLM_F_EXCL as u16)
        .attrs(attrs)
}

pub(super) fn nul_terminated(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// One netlink attribute: length, type, payload padded to 4 bytes.
pub(super) fn put_attr(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    buf.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(buf.len().next_multiple_of(4), 0);
}

/// NEWSETELEM adding `elements` to `set`, encoded here rather than through nlink's
/// `SetElement`s (two allocations per element, then two more per interval end): the same
/// bytes nlink and nft write. An interval set holds a range `[a, b]` as the start `a` and
/// `b + 1` flagged INTERVAL_END; a range that runs to the top has no end element.
pub(super) fn element_message(
    table: &str,
    set: &model::Set,
    elements: &[Element],
) -> nft::RawMessage {
    let mut attrs = Vec::with_capacity(64 + elements.len() * if set.interval { 40 } else { 20 });
    put_element_list_head(&mut attrs, table, &set.name);
    let list = begin_nest(&mut attrs, nft::NFTA_SET_ELEM_LIST_ELEMENTS);
    for e in elements {
        let (key, last, n) = element_wire(e, set.interval);
        put_element(&mut attrs, &key, n, 0);
        if set.interval {
            let mut after = last;
            // `last + 1`, big-endian; none when `last` is the maximum value.
            if let Some(i) = after[..n].iter().rposition(|b| *b != 0xff) {
                after[i] += 1;
                after[i + 1..n].fill(0);
                put_element(&mut attrs, &after, n, NFT_SET_ELEM_INTERVAL_END);
            }
        }
    }
    end_nest(&mut attrs, list);
    nft::RawMessage::new(nft::NFT_MSG_NEWSETELEM, Family::Inet)
        .flags(libc::NLM_F_CREATE as u16)
        .attrs(attrs)
}

/// One set element, `NFTA_LIST_ELEM { NFTA_SET_ELEM_KEY { NFTA_DATA_VALUE key[..n] }
/// [NFTA_SET_ELEM_FLAGS flags] }`, as `begin_nest` / `put_attr` / `end_nest` would write
/// it (`key` is zero past `n`, which pads it). Written into a stack buffer at fixed offsets
/// and appended once: the size-optimised release build does not inline
/// `extend_from_slice`, and eight small appends per element were 850 000 `memcpy` calls
/// for 50 000 CIDRs, which tripled the batch's build time.
fn put_element(attrs: &mut Vec<u8>, key: &[u8; 16], n: usize, flags: u32) {
    let padded = n.next_multiple_of(4);
    let key_nest = 4 + 4 + padded;
    let len = 4 + key_nest + if flags != 0 { 8 } else { 0 };
    let mut b = [0u8; 4 + 4 + 4 + 16 + 8];
    b[0..2].copy_from_slice(&(len as u16).to_ne_bytes());
    b[2..4].copy_from_slice(&(nft::NFTA_LIST_ELEM | NLA_F_NESTED).to_ne_bytes());
    b[4..6].copy_from_slice(&(key_nest as u16).to_ne_bytes());
    b[6..8].copy_from_slice(&(nft::NFTA_SET_ELEM_KEY | NLA_F_NESTED).to_ne_bytes());
    b[8..10].copy_from_slice(&((4 + n) as u16).to_ne_bytes());
    b[10..12].copy_from_slice(&nft::NFTA_DATA_VALUE.to_ne_bytes());
    b[12..28].copy_from_slice(key);
    if flags != 0 {
        let at = 4 + key_nest;
        b[at..at + 2].copy_from_slice(&8u16.to_ne_bytes());
        b[at + 2..at + 4].copy_from_slice(&nft::NFTA_SET_ELEM_FLAGS.to_ne_bytes());
        b[at + 4..at + 8].copy_from_slice(&flags.to_be_bytes());
    }
    attrs.extend_from_slice(&b[..len]);
}

/// The table and set a NEWSETELEM's element list belongs to.
fn put_element_list_head(buf: &mut Vec<u8>, table: &str, set: &str) {
    put_attr(buf, nft::NFTA_SET_ELEM_LIST_TABLE, &nul_terminated(table));
    put_attr(buf, nft::NFTA_SET_ELEM_LIST_SET, &nul_terminated(set));
}

/// Start a nested attribute of type `kind`; returns where its header is for `end_nest`.
fn begin_nest(buf: &mut Vec<u8>, kind: u16) -> usize {
    let at = buf.len();
    buf.extend_from_slice(&0u16.to_ne_bytes());
    buf.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
    at
}

fn end_nest(buf: &mut [u8], at: usize) {
    let len = (buf.len() - at) as u16;
    buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
}

/// An element's wire key and inclusive end (as `element_message` writes it and nlink pairs
/// it back), in a fixed buffer with the key length: no allocation per element.
pub(super) fn element_wire(e: &Element, interval: bool) -> ([u8; 16], [u8; 16], usize) {
    let mut k = [0u8; 16];
    let mut end = [0u8; 16];
    let n = match e {
        Element::V4(n) => {
            k[..4].copy_from_slice(&n.network().octets());
            let last = if interval { n.broadcast() } else { n.addr() };
            end[..4].copy_from_slice(&last.octets());
            if !interval {
                k[..4].copy_from_slice(&n.addr().octets());
            }
            4
        }
        Element::V6(n) => {
            k.copy_from_slice(&n.network().octets());
            let last = if interval { n.broadcast() } else { n.addr() };
            end.copy_from_slice(&last.octets());
            if !interval {
                k.copy_from_slice(&n.addr().octets());
            }
            16
        }
        Element::Port(p) => {
            k[..2].copy_from_slice(&p.to_be_bytes());
            end[..2].copy_from_slice(&p.to_be_bytes());
            2
        }
        Element::Id(id) => {
            k[..4].copy_from_slice(&id.to_ne_bytes());
            end[..4].copy_from_slice(&id.to_ne_bytes());
            4
        }
    };
    (k, end, n)
}

/// Key (and data) layout of a DNAT map for `family`: nft's concatenated type id, the
/// padded length in bytes, and the register the port lands in.
pub(super) fn dnat_map_layout(family: IpFamily) -> (u32, u32, Register) {
    const TYPE_BITS: u32 = 6;
    const INET_SERVICE: u32 = 13;
    match family {
        IpFamily::V4 => ((7 << TYPE_BITS) | INET_SERVICE, 8, Register::Reg32_01),
        IpFamily::V6 => ((8 << TYPE_BITS) | INET_SERVICE, 20, Register::R1),
    }
}

/// `ip daddr . tcp dport` as nft records it in the set's userdata (typeof of the key), so
/// `nft list` reads our map exactly as one it made itself.
fn dnat_map_udata(family: IpFamily, proto: model::L4Proto) -> Vec<u8> {
    const KEYBYTEORDER: u8 = 0;
    const DATABYTEORDER: u8 = 1;
    const KEY_TYPEOF: u8 = 3;
    const DATA_INTERVAL: u8 = 6;
    const TYPEOF_EXPR: u8 = 0;
    const TYPEOF_DATA: u8 = 1;
    const EXPR_PAYLOAD: u32 = 7;
    const EXPR_CONCAT: u32 = 13;
    let u32_item = |buf: &mut Vec<u8>, kind: u8, v: u32| {
        buf.push(kind);
        buf.push(4);
        buf.extend_from_slice(&v.to_ne_bytes());
    };
    let nest = |buf: &mut Vec<u8>, kind: u8, inner: Vec<u8>| {
        buf.push(kind);
        buf.push(inner.len() as u8);
        buf.extend_from_slice(&inner);
    };
    // (proto desc, field) of nft's payload templates.
    let (net_desc, net_field) = match family {
        IpFamily::V4 => (12, 12),
        IpFamily::V6 => (13, 9),
    };
    let l4_desc = match proto {
        model::L4Proto::Tcp => 8,
        model::L4Proto::Udp => 6,
        model::L4Proto::Sctp => 10,
    };
    let payload = |desc: u32, field: u32| {
        let mut data = Vec::new();
        u32_item(&mut data, 0, desc);
        u32_item(&mut data, 1, field);
        let mut e = Vec::new();
        u32_item(&mut e, TYPEOF_EXPR, EXPR_PAYLOAD);
        nest(&mut e, TYPEOF_DATA, data);
        e
    };
    let mut parts = Vec::new();
    nest(&mut parts, 0, payload(net_desc, net_field));
    nest(&mut parts, 1, payload(l4_desc, 2));
    let mut key = Vec::new();
    u32_item(&mut key, TYPEOF_EXPR, EXPR_CONCAT);
    nest(&mut key, TYPEOF_DATA, parts);
    let mut out = Vec::new();
    u32_item(&mut out, KEYBYTEORDER, 0);
    u32_item(&mut out, DATABYTEORDER, 0);
    nest(&mut out, KEY_TYPEOF, key);
    u32_item(&mut out, DATA_INTERVAL, 0);
    out
}

/// Address and port as one padded map field.
fn addr_port_bytes(sa: &std::net::SocketAddr) -> Vec<u8> {
    let mut v = match sa.ip() {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    v.extend_from_slice(&sa.port().to_be_bytes());
    v.extend_from_slice(&[0, 0]);
    v
}

/// NEWSET and NEWSETELEM messages of the anonymous map of a `DnatMap` rule.
pub(super) fn dnat_map_messages(
    table: &str,
    family: IpFamily,
    proto: model::L4Proto,
    entries: &[(std::net::SocketAddr, std::net::SocketAddr)],
    set_id: u32,
) -> Vec<nft::RawMessage> {
    let (type_id, len, _) = dnat_map_layout(family);
    let flags = nft::NFT_SET_ANONYMOUS | nft::NFT_SET_CONSTANT | nft::NFT_SET_MAP;
    let mut attrs = Vec::new();
    put_attr(&mut attrs, nft::NFTA_SET_TABLE, &nul_terminated(table));
    put_attr(
        &mut attrs,
        nft::NFTA_SET_NAME,
        &nul_terminated(ANON_MAP_NAME),
    );
    put_attr(&mut attrs, nft::NFTA_SET_FLAGS, &flags.to_be_bytes());
    put_attr(&mut attrs, nft::NFTA_SET_KEY_TYPE, &type_id.to_be_bytes());
    put_attr(&mut attrs, nft::NFTA_SET_KEY_LEN, &len.to_be_bytes());
    put_attr(&mut attrs, nft::NFTA_SET_DATA_TYPE, &type_id.to_be_bytes());
    put_attr(&mut attrs, nft::NFTA_SET_DATA_LEN, &len.to_be_bytes());
    put_attr(&mut attrs, nft::NFTA_SET_ID, &set_id.to_be_bytes());
    let mut desc = Vec::new();
    put_attr(
        &mut desc,
        nft::NFTA_SET_DESC_SIZE,
        &(entries.len() as u32).to_be_bytes(),
    );
    put_attr(&mut attrs, nft::NFTA_SET_DESC | NLA_F_NESTED, &desc);
    put_attr(
        &mut attrs,
        nft::NFTA_SET_USERDATA,
        &dnat_map_udata(family, proto),
    );
    let create = libc::NLM_F_CREATE as u16 | libc::NLM_F_EXCL as u16;
    let mut out = vec![
        nft::RawMessage::new(nft::NFT_MSG_NEWSET, Family::Inet)
            .flags(create)
            .attrs(attrs),
    ];
    for chunk in entries.chunks(ELEMENTS_PER_MESSAGE) {
        let mut elements = Vec::new();
        for (orig, target) in chunk {
            let mut key = Vec::new();
            put_attr(&mut key, nft::NFTA_DATA_VALUE, &addr_port_bytes(orig));
            let mut data = Vec::new();
            put_attr(&mut data, nft::NFTA_DATA_VALUE, &addr_port_bytes(target));
            let mut elem = Vec::new();
            put_attr(&mut elem, nft::NFTA_SET_ELEM_KEY | NLA_F_NESTED, &key);
            put_attr(&mut elem, nft::NFTA_SET_ELEM_DATA | NLA_F_NESTED, &data);
            put_attr(&mut elements, nft::NFTA_LIST_ELEM | NLA_F_NESTED, &elem);
        }
        let mut attrs = Vec::new();
        put_element_list_head(&mut attrs, table, ANON_MAP_NAME);
        put_attr(&mut attrs, NFTA_SET_ELEM_LIST_SET_ID, &set_id.to_be_bytes());
        put_attr(
            &mut attrs,
            nft::NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED,
            &elements,
        );
        out.push(
            nft::RawMessage::new(nft::NFT_MSG_NEWSETELEM, Family::Inet)
                .flags(create)
                .attrs(attrs),
        );
    }
    out
}

/// The kernel key type of a set of `k` (uid/gid: nftables' own type ids, host order).
pub(super) fn nl_key(k: KeyType) -> SetKeyType {
    match k {
        KeyType::Ipv4Addr => SetKeyType::Ipv4Addr,
        KeyType::Ipv6Addr => SetKeyType::Ipv6Addr,
        KeyType::InetService => SetKeyType::InetService,
        KeyType::Uid => SetKeyType::Other {
            type_id: TYPE_UID,
            len: 4,
        },
        KeyType::Gid => SetKeyType::Other {
            type_id: TYPE_GID,
            len: 4,
        },
    }
}

/// The nft name of a set key type id (`ipv4_addr`, ...), for diffs.
pub(super) fn key_name(type_id: u32) -> String {
    match type_id {
        7 => "ipv4_addr".into(),
        8 => "ipv6_addr".into(),
        13 => "inet_service".into(),
        TYPE_UID => "uid".into(),
        TYPE_GID => "gid".into(),
        n => format!("type#{n}"),
    }
}

/// Append the text of wire value `b` of key type `type_id` (an address, a port, an id).
pub(super) fn push_wire_value(out: &mut String, type_id: u32, b: &[u8]) {
    use std::fmt::Write as _;
    match (type_id, b.len()) {
        (7, 4) => {
            // By hand: Ipv4Addr's Display costs several times more, 20 000 times a verify.
            for (i, octet) in b.iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                let o = *octet;
                if o >= 100 {
                    out.push((b'0' + o / 100) as char);
                }
                if o >= 10 {
                    out.push((b'0' + o / 10 % 10) as char);
                }
                out.push((b'0' + o % 10) as char);
            }
        }
        (8, 16) => {
            let _ = write!(
                out,
                "{}",
                std::net::Ipv6Addr::from(<[u8; 16]>::try_from(b).unwrap_or_default())
            );
        }
        (13, 2) => {
            let _ = write!(out, "{}", u16::from_be_bytes([b[0], b[1]]));
        }
        (TYPE_UID | TYPE_GID, 4) => {
            let _ = write!(out, "{}", u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
        }
        _ => out.push_str(&hex(b)),
    }
}

pub(super) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `NFTNL_UDATA_TABLE_COMMENT`: the user data entry nft shows as the table's comment.
pub(super) const UDATA_COMMENT: u8 = 0;

/// The value of the first entry of type `kind` in user data (entries of type, length,
/// value, as `new_table` writes them); None if there is none or it is cut short.
pub(super) fn udata_entry(userdata: &[u8], kind: u8) -> Option<&[u8]> {
    let mut rest = userdata;
    while let [k, len, tail @ ..] = rest {
        let value = tail.get(..usize::from(*len))?;
        if *k == kind {
            return Some(value);
        }
        rest = &tail[usize::from(*len)..];
    }
    None
}

/// NEWTABLE for inet `name` with `flags`; its user data is the comment's entry, then
/// `more_udata` (entries of types nft does not know, which it skips when it lists).
pub(super) fn new_table(
    name: &str,
    flags: u32,
    comment: &str,
    more_udata: &[u8],
) -> nft::RawMessage {
    // A comment is one entry of at most 255 bytes with its NUL; ours are short
    // (`managed by nftkit <command>`).
    let text = &comment.as_bytes()[..comment.len().min(254)];
    let mut udata = Vec::with_capacity(text.len() + 3 + more_udata.len());
    udata.extend_from_slice(&[UDATA_COMMENT, (text.len() + 1) as u8]);
    udata.extend_from_slice(text);
    udata.push(0);
    udata.extend_from_slice(more_udata);
    let mut attrs = Vec::new();
    put_attr(&mut attrs, nft::NFTA_TABLE_NAME, &nul_terminated(name));
    if flags != 0 {
        put_attr(&mut attrs, nft::NFTA_TABLE_FLAGS, &flags.to_be_bytes());
    }
    put_attr(&mut attrs, nft::NFTA_TABLE_USERDATA, &udata);
    nft::RawMessage::new(nft::NFT_MSG_NEWTABLE, Family::Inet)
        .flags(libc::NLM_F_CREATE as u16 | libc::NLM_F_EXCL as u16)
        .attrs(attrs)
}

/// One message of the replace batch, as nlink builds it.
pub(super) enum Step {
    DestroyTable,
    DelTable,
    AddTable {
        flags: u32,
        /// User data entries after the comment's (the elements record, `record.rs`); set
        /// by the backend.
        udata: Vec<u8>,
    },
    AddObject(nft::Object),
    AddSet(nft::Set),
    /// NEWSETELEM through nlink (verdict map entries).
    AddElements(nft::Set, Vec<nft::SetElement>),
    Raw(nft::RawMessage),
    AddChain(nft::Chain),
    AddRule(nft::Rule),
}

impl Step {
    /// Queue this message on `tx` (the table's name and comment are `rs`'s).
    pub(super) fn queue(self, tx: nft::Transaction, rs: &model::Ruleset) -> nft::Transaction {
        let t = rs.table.as_str();
        match self {
            Step::DestroyTable => tx.destroy_table(t, Family::Inet),
            Step::DelTable => tx.del_table(t, Family::Inet),
            Step::AddTable { flags, udata } => tx.raw(new_table(t, flags, &rs.comment, &udata)),
            Step::AddObject(o) => tx.add_object(&o),
            Step::AddSet(s) => tx.add_set(s),
            Step::AddElements(s, elements) => tx.add_set_elements(&s, &elements),
            Step::Raw(m) => tx.raw(m),
            Step::AddChain(c) => tx.add_chain(c),
            Step::AddRule(r) => tx.add_rule(r),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::decode::elements_text;
    use super::super::encode::{OldTable, build_batch};
    use super::super::{BatchOp, TYPE_UID};
    use super::*;
    use crate::model::{Action, Chain, KeyType, Rule, Ruleset, Set};

    #[test]
    fn put_element_writes_what_the_nest_helpers_write() {
        for n in [2, 4, 16] {
            for flags in [0, NFT_SET_ELEM_INTERVAL_END] {
                let mut key = [0u8; 16];
                for (i, b) in key[..n].iter_mut().enumerate() {
                    *b = 0xa0 + i as u8;
                }
                let mut want = vec![0xee; 4];
                let elem = begin_nest(&mut want, nft::NFTA_LIST_ELEM);
                let k = begin_nest(&mut want, nft::NFTA_SET_ELEM_KEY);
                put_attr(&mut want, nft::NFTA_DATA_VALUE, &key[..n]);
                end_nest(&mut want, k);
                if flags != 0 {
                    put_attr(&mut want, nft::NFTA_SET_ELEM_FLAGS, &flags.to_be_bytes());
                }
                end_nest(&mut want, elem);
                let mut got = vec![0xee; 4];
                put_element(&mut got, &key, n, flags);
                assert_eq!(got, want, "key length {n}, flags {flags}");
            }
        }
    }

    /// The attributes of `b` as (type without NLA_F_NESTED, payload).
    fn attrs(mut b: &[u8]) -> Vec<(u16, &[u8])> {
        let mut out = Vec::new();
        while b.len() >= 4 {
            let len = usize::from(u16::from_ne_bytes([b[0], b[1]]));
            assert!(len >= 4 && len <= b.len(), "attribute overruns its buffer");
            out.push((u16::from_ne_bytes([b[2], b[3]]) & !NLA_F_NESTED, &b[4..len]));
            b = &b[len.next_multiple_of(4).min(b.len())..];
        }
        assert!(b.is_empty());
        out
    }

    fn attr(b: &[u8], kind: u16) -> Option<&[u8]> {
        attrs(b)
            .into_iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, v)| v)
    }

    /// A NEWSETELEM's elements as (key, flags), in wire order.
    fn wire_elements(m: &nft::RawMessage) -> Vec<(Vec<u8>, u32)> {
        assert_eq!(m.msg, nft::NFT_MSG_NEWSETELEM);
        let list = attr(&m.attrs, nft::NFTA_SET_ELEM_LIST_ELEMENTS).unwrap();
        attrs(list)
            .into_iter()
            .map(|(kind, elem)| {
                assert_eq!(kind, nft::NFTA_LIST_ELEM);
                let key = attr(elem, nft::NFTA_SET_ELEM_KEY).unwrap();
                let value = attr(key, nft::NFTA_DATA_VALUE).unwrap().to_vec();
                let flags = attr(elem, nft::NFTA_SET_ELEM_FLAGS)
                    .map_or(0, |f| u32::from_be_bytes(f.try_into().unwrap()));
                (value, flags)
            })
            .collect()
    }

    /// Pair interval starts with their ends (`end - 1`; none: to the top), as a dump does.
    fn ranges(wire: &[(Vec<u8>, u32)], interval: bool) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < wire.len() {
            let (key, flags) = &wire[i];
            assert_eq!(*flags, 0, "an interval end without a start");
            let mut end = key.clone();
            if interval {
                end = vec![0xff; key.len()];
                if let Some((after, NFT_SET_ELEM_INTERVAL_END)) = wire.get(i + 1) {
                    end = after.clone();
                    let j = end.iter().rposition(|b| *b != 0).unwrap();
                    end[j] -= 1;
                    end[j + 1..].fill(0xff);
                    i += 1;
                }
            }
            out.push((key.clone(), end));
            i += 1;
        }
        out
    }

    fn set(key: KeyType, interval: bool, elements: &[&str]) -> Set {
        let elements = elements
            .iter()
            .map(|e| match key {
                KeyType::Ipv4Addr => Element::V4(e.parse().unwrap()),
                KeyType::Ipv6Addr => Element::V6(e.parse().unwrap()),
                KeyType::InetService => Element::Port(e.parse().unwrap()),
                KeyType::Uid | KeyType::Gid => Element::Id(e.parse().unwrap()),
            })
            .collect();
        Set {
            name: "s".into(),
            key,
            interval,
            elements,
        }
    }

    /// Encode `set`'s elements, decode them as the kernel's dump pairs them, and check
    /// they are what `element_wire` (the expected side) says, then their texts.
    fn round_trip(set: &Set, type_id: u32, wire_count: usize, want: &[&str]) {
        let m = element_message("t", set, &set.elements);
        assert_eq!(
            attr(&m.attrs, nft::NFTA_SET_ELEM_LIST_TABLE),
            Some(&b"t\0"[..])
        );
        let wire = wire_elements(&m);
        assert_eq!(wire.len(), wire_count);
        let got = ranges(&wire, set.interval);
        let expected: Vec<(Vec<u8>, Vec<u8>)> = set
            .elements
            .iter()
            .map(|e| element_wire(e, set.interval))
            .map(|(k, e, n)| (k[..n].to_vec(), e[..n].to_vec()))
            .collect();
        assert_eq!(got, expected);
        let mut pairs: Vec<(&[u8], &[u8])> = got.iter().map(|(k, e)| (&k[..], &e[..])).collect();
        assert_eq!(elements_text(type_id, &mut pairs), want);
    }

    #[test]
    fn interval_elements_round_trip_with_an_end_unless_they_run_to_the_top() {
        let v4 = set(
            KeyType::Ipv4Addr,
            true,
            &["255.255.255.0/24", "10.0.0.0/8", "192.168.1.1/32"],
        );
        let want = [
            "10.0.0.0-10.255.255.255",
            "192.168.1.1",
            "255.255.255.0-255.255.255.255",
        ];
        round_trip(&v4, 7, 5, &want);
        let v6 = set(KeyType::Ipv6Addr, true, &["fd00:1::/64", "::1/128"]);
        round_trip(&v6, 8, 4, &["::1", "fd00:1::-fd00:1::ffff:ffff:ffff:ffff"]);
    }

    #[test]
    fn plain_elements_round_trip_ports_big_endian_and_ids_host_order() {
        let ports = set(KeyType::InetService, false, &["443", "80"]);
        round_trip(&ports, 13, 2, &["80", "443"]);
        let m = element_message("t", &ports, &ports.elements);
        assert_eq!(wire_elements(&m)[0].0, 443u16.to_be_bytes());
        let uids = set(KeyType::Uid, false, &["1010"]);
        round_trip(&uids, TYPE_UID, 1, &["1010"]);
        let m = element_message("t", &uids, &uids.elements);
        assert_eq!(wire_elements(&m)[0].0, 1010u32.to_ne_bytes());
    }

    #[test]
    fn attributes_are_padded_and_nests_measure_their_contents() {
        let mut b = Vec::new();
        let at = begin_nest(&mut b, 3);
        put_attr(&mut b, 1, b"abcde");
        end_nest(&mut b, at);
        assert_eq!(b.len(), 4 + 12);
        let outer = attrs(&b);
        assert_eq!(outer.len(), 1);
        assert_eq!(u16::from_ne_bytes([b[2], b[3]]), 3 | NLA_F_NESTED);
        assert_eq!(attrs(outer[0].1), [(1, &b"abcde"[..])]);
    }

    #[test]
    fn uid_sets_are_marked_host_endian_with_the_comment() {
        let uids = set(KeyType::Uid, false, &[]);
        let m = host_order_set("t", &uids, "ours", 2);
        assert_eq!(m.msg, nft::NFT_MSG_NEWSET);
        assert_eq!(attr(&m.attrs, nft::NFTA_SET_NAME), Some(&b"s\0"[..]));
        let type_id = attr(&m.attrs, nft::NFTA_SET_KEY_TYPE).unwrap();
        assert_eq!(type_id, TYPE_UID.to_be_bytes());
        let id = attr(&m.attrs, nft::NFTA_SET_ID).unwrap();
        assert_eq!(id, 0x4000_0002u32.to_be_bytes());
        let udata = attr(&m.attrs, nft::NFTA_SET_USERDATA).unwrap();
        assert_eq!(udata[..2], [0, 4]);
        assert_eq!(udata[2..6], 1u32.to_ne_bytes());
        assert_eq!(&udata[6..], b"\x07\x05ours\0");
    }

    #[test]
    fn dnat_maps_are_an_anonymous_set_and_element_messages_sharing_one_id() {
        let entries: Vec<(std::net::SocketAddr, std::net::SocketAddr)> = (0..300u16)
            .map(|i| {
                let orig = format!("10.0.0.1:{}", 1000 + i).parse().unwrap();
                (orig, "10.1.0.1:80".parse().unwrap())
            })
            .collect();
        let msgs = dnat_map_messages("t", IpFamily::V4, model::L4Proto::Tcp, &entries, 77);
        assert_eq!(msgs.len(), 3);
        assert_eq!(msgs[0].msg, nft::NFT_MSG_NEWSET);
        assert_eq!(
            attr(&msgs[0].attrs, nft::NFTA_SET_ID),
            Some(&77u32.to_be_bytes()[..])
        );
        let mut keys = 0;
        for m in &msgs[1..] {
            assert_eq!(m.msg, nft::NFT_MSG_NEWSETELEM);
            let id = attr(&m.attrs, NFTA_SET_ELEM_LIST_SET_ID);
            assert_eq!(id, Some(&77u32.to_be_bytes()[..]));
            let list = attr(&m.attrs, nft::NFTA_SET_ELEM_LIST_ELEMENTS).unwrap();
            for (_, elem) in attrs(list) {
                let key = attr(
                    attr(elem, nft::NFTA_SET_ELEM_KEY).unwrap(),
                    nft::NFTA_DATA_VALUE,
                );
                let port = (1000 + keys as u16).to_be_bytes();
                assert_eq!(key, Some(&[10, 0, 0, 1, port[0], port[1], 0, 0][..]));
                let data = attr(
                    attr(elem, nft::NFTA_SET_ELEM_DATA).unwrap(),
                    nft::NFTA_DATA_VALUE,
                );
                assert_eq!(data, Some(&[10, 1, 0, 1, 0, 80, 0, 0][..]));
                keys += 1;
            }
        }
        assert_eq!(keys, 300);
    }

    /// A big set goes out as several element messages, each inside the nest limit, all in
    /// the one batch between its NEWSET and the chains.
    #[test]
    fn large_element_lists_are_split_into_several_messages_of_one_batch() {
        let big: Vec<String> = (0..600u32)
            .map(|i| format!("fd00:{:x}::/64", i + 1))
            .collect();
        let big: Vec<&str> = big.iter().map(String::as_str).collect();
        let rs = Ruleset {
            table: "t".into(),
            comment: "ours".into(),
            sets: vec![
                set(KeyType::Ipv6Addr, true, &big),
                set(KeyType::Uid, false, &["0"]),
            ],
            maps: Vec::new(),
            chains: vec![Chain {
                name: "c".into(),
                base: None,
                rules: vec![Rule {
                    matches: vec![],
                    action: Action::Drop,
                }],
            }],
        };
        let mut steps = Vec::new();
        let mut wire_counts = Vec::new();
        build_batch(&rs, OldTable::Destroy, false, &mut |step, op| {
            let kind = match &step {
                Step::DestroyTable => "destroy",
                Step::AddTable { .. } => "table",
                Step::AddSet(_) => "set",
                Step::AddElements(..) => "map elements",
                Step::Raw(m) if m.msg == nft::NFT_MSG_NEWSET => "raw set",
                Step::Raw(m) => {
                    assert!(m.attrs.len() < 65536);
                    wire_counts.push(wire_elements(m).len());
                    "elements"
                }
                Step::AddChain(_) => "chain",
                Step::AddObject(_) => "object",
                Step::AddRule(_) => "rule",
                Step::DelTable => "delete",
            };
            steps.push((kind, op));
        })
        .unwrap();
        let elements = |set, range| ("elements", BatchOp::AddElements { set, range });
        assert_eq!(
            steps,
            [
                ("destroy", BatchOp::RemoveTable),
                ("table", BatchOp::AddTable),
                ("set", BatchOp::AddSet(0)),
                elements(0, 0..256),
                elements(0, 256..512),
                elements(0, 512..600),
                ("raw set", BatchOp::AddSet(1)),
                elements(1, 0..1),
                ("chain", BatchOp::AddChain(0)),
                ("rule", BatchOp::AddRule { chain: 0, rule: 0 }),
            ]
        );
        // A /64 range is a start and an end element.
        assert_eq!(wire_counts, [512, 512, 176, 1]);
    }
}
