//! [`same_bytes`]: the one comparison of secret-bearing bytes in `auth` (a cached token, a
//! certificate thumbprint, a sign-in nonce or CSRF token).

/// Whether `a` and `b` hold the same bytes, in a time that depends on their length only:
/// an OR of XORs, which the compiler vectorises (a cached token is over a kilobyte,
/// compared on every call; wider words by hand measured slower on the baseline target).
pub(crate) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::same_bytes;

    proptest::proptest! {
        /// The comparison is plain equality: on pairs of any lengths (around the 16-byte
        /// steps) that differ in one byte anywhere, or not at all.
        #[test]
        fn token_bytes_compare_as_equality(
            a in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80),
            flip in proptest::prelude::any::<proptest::sample::Index>(),
            differ: bool,
            longer: bool,
        ) {
            let mut b = a.clone();
            if differ && !b.is_empty() {
                let at = flip.index(b.len());
                b[at] ^= 0x20;
            }
            if longer {
                b.push(0);
            }
            proptest::prop_assert_eq!(same_bytes(&a, &b), a == b);
        }
    }
}
