//! Address interval arithmetic for `ipBlock` peers: `cidr` minus its `except` blocks,
//! unions of many peers, and the result as the fewest CIDR prefixes (what an interval set
//! holds). Addresses are handled as integers (u128 for both families) with inclusive
//! bounds, so the arithmetic is exact and independent of nft's own merging.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::model::IpFamily;

/// An inclusive range of addresses of one family.
pub type Range = (u128, u128);

fn bits(f: IpFamily) -> u32 {
    match f {
        IpFamily::V4 => 32,
        IpFamily::V6 => 128,
    }
}

/// The inclusive range a prefix covers.
pub fn range_of(net: &IpNet) -> Range {
    match net.trunc() {
        IpNet::V4(n) => (
            u32::from(n.network()) as u128,
            u32::from(n.broadcast()) as u128,
        ),
        IpNet::V6(n) => (u128::from(n.network()), u128::from(n.broadcast())),
    }
}

/// Sort and merge overlapping or adjacent ranges.
pub fn normalize(mut ranges: Vec<Range>) -> Vec<Range> {
    ranges.sort_unstable();
    let mut out: Vec<Range> = Vec::with_capacity(ranges.len());
    for (lo, hi) in ranges {
        match out.last_mut() {
            Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

/// `from` minus every range of `minus` (both any order), normalized.
pub fn subtract(from: Vec<Range>, minus: Vec<Range>) -> Vec<Range> {
    let from = normalize(from);
    let minus = normalize(minus);
    let mut out = Vec::new();
    for (lo, hi) in from {
        let mut cur = lo;
        let mut done = false;
        for &(mlo, mhi) in &minus {
            if mhi < cur || mlo > hi {
                continue;
            }
            if mlo > cur {
                out.push((cur, mlo - 1));
            }
            if mhi >= hi {
                done = true;
                break;
            }
            cur = mhi + 1;
        }
        if !done {
            out.push((cur, hi));
        }
    }
    out
}

/// What an ipBlock allows: `cidr` minus `except` (excepts of another family are ignored;
/// the manifest parser refuses them).
pub fn allowed(cidr: &IpNet, except: &[IpNet]) -> Vec<Range> {
    let f = IpFamily::of(cidr);
    subtract(
        vec![range_of(cidr)],
        except
            .iter()
            .filter(|e| IpFamily::of(e) == f)
            .map(range_of)
            .collect(),
    )
}

/// The fewest prefixes that cover exactly `ranges` (normalized first).
pub fn to_prefixes(f: IpFamily, ranges: Vec<Range>) -> Vec<IpNet> {
    let width = bits(f);
    let mut out = Vec::new();
    for (lo, hi) in normalize(ranges) {
        let mut cur = lo;
        loop {
            // The largest block aligned at `cur` (2^k addresses) that ends within `hi`.
            let mut k = if cur == 0 {
                width
            } else {
                cur.trailing_zeros().min(width)
            };
            let last = loop {
                // `cur` is aligned to 2^k, so the sum cannot overflow.
                let last = if k >= 128 {
                    u128::MAX
                } else {
                    cur + ((1u128 << k) - 1)
                };
                if last <= hi {
                    break last;
                }
                k -= 1;
            };
            out.push(prefix(f, cur, (width - k) as u8));
            if last >= hi {
                break;
            }
            cur = last + 1;
        }
    }
    out
}

fn prefix(f: IpFamily, addr: u128, len: u8) -> IpNet {
    match f {
        IpFamily::V4 => {
            IpNet::V4(Ipv4Net::new(Ipv4Addr::from(addr as u32), len).expect("len <= 32"))
        }
        IpFamily::V6 => IpNet::V6(Ipv6Net::new(Ipv6Addr::from(addr), len).expect("len <= 128")),
    }
}

/// Whether `addr` (of family `f`) lies in one of `ranges`.
pub fn contains(ranges: &[Range], addr: std::net::IpAddr) -> bool {
    let a = match addr {
        std::net::IpAddr::V4(a) => u32::from(a) as u128,
        std::net::IpAddr::V6(a) => u128::from(a),
    };
    ranges.iter().any(|&(lo, hi)| lo <= a && a <= hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }
    fn show(v: Vec<IpNet>) -> Vec<String> {
        v.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn kubernetes_doc_example_cidr_minus_except() {
        // networking.k8s.io/v1 docs: ipBlock cidr 172.17.0.0/16 except 172.17.1.0/24.
        let cidr = "172.17.0.0/16".parse().unwrap();
        let r = allowed(&cidr, &nets(&["172.17.1.0/24"]));
        assert_eq!(
            show(to_prefixes(IpFamily::V4, r)),
            [
                "172.17.0.0/24",
                "172.17.2.0/23",
                "172.17.4.0/22",
                "172.17.8.0/21",
                "172.17.16.0/20",
                "172.17.32.0/19",
                "172.17.64.0/18",
                "172.17.128.0/17"
            ]
        );
    }

    #[test]
    fn except_table() {
        let cases: &[(&str, &[&str], &[&str])] = &[
            ("10.0.0.0/24", &[], &["10.0.0.0/24"]),
            ("10.0.0.0/24", &["10.0.0.0/24"], &[]),
            ("10.0.0.0/24", &["10.0.0.0/25"], &["10.0.0.128/25"]),
            ("10.0.0.0/24", &["10.0.0.128/25"], &["10.0.0.0/25"]),
            (
                "10.0.0.0/30",
                &["10.0.0.1/32", "10.0.0.2/32"],
                &["10.0.0.0/32", "10.0.0.3/32"],
            ),
            // Overlapping excepts, one inside another.
            (
                "10.0.0.0/24",
                &["10.0.0.0/25", "10.0.0.64/26"],
                &["10.0.0.128/25"],
            ),
            ("0.0.0.0/0", &["128.0.0.0/1"], &["0.0.0.0/1"]),
            ("0.0.0.0/0", &[], &["0.0.0.0/0"]),
            ("::/0", &["8000::/1"], &["::/1"]),
            ("2001:db8::/32", &["2001:db8::/33"], &["2001:db8:8000::/33"]),
            ("::/0", &[], &["::/0"]),
            // An except of the other family is not applied.
            ("10.0.0.0/8", &["2001:db8::/32"], &["10.0.0.0/8"]),
        ];
        for (cidr, except, want) in cases {
            let c: IpNet = cidr.parse().unwrap();
            let got = show(to_prefixes(IpFamily::of(&c), allowed(&c, &nets(except))));
            assert_eq!(&got, want, "{cidr} except {except:?}");
        }
    }

    #[test]
    fn union_merges_overlaps_and_neighbours() {
        let r: Vec<Range> = nets(&["10.0.0.0/25", "10.0.0.128/25", "10.0.0.5/32", "10.0.2.0/24"])
            .iter()
            .map(range_of)
            .collect();
        assert_eq!(
            show(to_prefixes(IpFamily::V4, r)),
            ["10.0.0.0/24", "10.0.2.0/24"]
        );
        // Two ipBlocks whose allowed parts together cover their whole cidr.
        let a = allowed(&"10.0.0.0/24".parse().unwrap(), &nets(&["10.0.0.0/25"]));
        let b = allowed(&"10.0.0.0/24".parse().unwrap(), &nets(&["10.0.0.128/25"]));
        let both = [a, b].concat();
        assert_eq!(show(to_prefixes(IpFamily::V4, both)), ["10.0.0.0/24"]);
    }

    #[test]
    fn prefixes_cover_exactly_the_ranges() {
        // Property over pseudo-random ranges: the prefixes are disjoint, each aligned, and
        // cover exactly the input addresses.
        let mut seed = 0x1234_5678u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..300 {
            let a = (next() % 4096) as u128;
            let b = a + (next() % 700) as u128;
            let c = a + (next() % 300) as u128;
            let d = c + (next() % 50) as u128;
            let want = subtract(vec![(a, b)], vec![(c, d)]);
            let pref = to_prefixes(IpFamily::V4, want.clone());
            let covered = normalize(pref.iter().map(range_of).collect());
            assert_eq!(covered, normalize(want.clone()), "{a}-{b} minus {c}-{d}");
            let total: u128 = pref.iter().map(|p| range_of(p).1 - range_of(p).0 + 1).sum();
            let want_total: u128 = want.iter().map(|r| r.1 - r.0 + 1).sum();
            assert_eq!(total, want_total, "prefixes overlap");
        }
    }

    #[test]
    fn contains_checks_family_ranges() {
        let r = allowed(&"10.0.0.0/24".parse().unwrap(), &nets(&["10.0.0.128/25"]));
        assert!(contains(&r, "10.0.0.5".parse().unwrap()));
        assert!(!contains(&r, "10.0.0.200".parse().unwrap()));
    }
}
