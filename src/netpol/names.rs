//! Names of the netpol table's objects: directions, and names made of readable parts
//! that stay within the kernel's limits.

/// Longest chain, set or counter name we emit (the kernel allows 255 bytes).
const MAX_NAME: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    pub fn name(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

/// A name from readable parts; too long ones are cut and made unique with a hash.
pub fn object_name(parts: &[&str]) -> String {
    fit(parts.join("/"), MAX_NAME)
}

/// `full`, or if it is longer than `max` bytes its start and a hash of all of it (so two
/// long names stay apart), `max` bytes at most.
pub fn fit(full: String, max: usize) -> String {
    if full.len() <= max {
        return full;
    }
    let h = content_hash(&full);
    let mut cut = max - 17;
    while !full.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}~{h:016x}", &full[..cut])
}

/// A stable 64-bit hash (FNV-1a) of `s`: the same on every run and build.
pub fn content_hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}
