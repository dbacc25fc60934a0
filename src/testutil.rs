//! Helpers shared by unit tests of more than one module.

/// A small pseudo-random generator (xorshift): `next(n)` is in `0..n`.
pub(crate) fn xorshift(mut x: u64) -> impl FnMut(u64) -> u64 {
    move |n| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    }
}
