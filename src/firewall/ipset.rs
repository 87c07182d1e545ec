//! A compiled set of address ranges: sorted, merged, searched in logarithmic time.
//!
//! Cloud providers publish allow lists of thousands of prefixes; a linear scan over them
//! would cost tens of microseconds per call, so prefixes become disjoint inclusive ranges
//! (`u32` for IPv4, `u128` for IPv6) looked up by binary search.

use ipnet::IpNet;
use std::net::IpAddr;

/// A set of IPv4 and IPv6 addresses built from CIDRs and bare addresses.
///
/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are treated as the IPv4 address both
/// when building and when looking up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpSet {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

/// An entry that is neither a CIDR nor an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not an IP address or CIDR")]
pub struct BadEntry {
    /// The entry as written.
    pub text: String,
}

/// Collects entries, then [`IpSetBuilder::build`] sorts and merges them once.
#[derive(Debug, Default)]
pub struct IpSetBuilder {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

/// The IPv4 address behind an IPv4-mapped IPv6 address, or the address itself.
pub fn normalize(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

impl IpSetBuilder {
    /// Adds one CIDR (`10.0.0.0/8`, `2001:db8::/32`) or bare address (`/32` or `/128`).
    ///
    /// # Errors
    /// [`BadEntry`] when the text is neither.
    pub fn add(&mut self, text: &str) -> Result<(), BadEntry> {
        let trimmed = text.trim();
        let net = if trimmed.contains('/') {
            trimmed.parse::<IpNet>().map_err(|_| BadEntry { text: text.to_owned() })?
        } else {
            let ip = trimmed.parse::<IpAddr>().map_err(|_| BadEntry { text: text.to_owned() })?;
            IpNet::from(ip)
        };
        self.add_net(net);
        Ok(())
    }

    /// Adds a parsed network (host bits are ignored).
    pub fn add_net(&mut self, net: IpNet) {
        match net.trunc() {
            IpNet::V4(n) => self.v4.push((u32::from(n.network()), u32::from(n.broadcast()))),
            IpNet::V6(n) => {
                let first = n.network();
                // ::ffff:0:0/96 and narrower: the IPv4 range it maps.
                if n.prefix_len() >= 96 && first.to_ipv4_mapped().is_some() {
                    let v4_first = first.to_ipv4_mapped().map_or(0, u32::from);
                    let host_bits = 128 - u32::from(n.prefix_len());
                    let span = if host_bits >= 32 { u32::MAX } else { (1u32 << host_bits) - 1 };
                    self.v4.push((v4_first, v4_first | span));
                } else {
                    self.v6.push((u128::from(first), u128::from(n.broadcast())));
                }
            }
        }
    }

    /// Sorts and merges overlapping or adjacent ranges.
    pub fn build(self) -> IpSet {
        IpSet { v4: merge(self.v4), v6: merge(self.v6) }
    }
}

fn merge<T: Copy + Ord + num_like::Step>(mut ranges: Vec<(T, T)>) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (lo, hi) in ranges {
        match out.last_mut() {
            Some(last) if lo <= last.1.next_or_max() => {
                if hi > last.1 {
                    last.1 = hi;
                }
            }
            _ => out.push((lo, hi)),
        }
    }
    out.shrink_to_fit();
    out
}

mod num_like {
    /// The successor of an address, saturating at the top of the space.
    pub(super) trait Step {
        fn next_or_max(self) -> Self;
    }
    impl Step for u32 {
        fn next_or_max(self) -> Self {
            self.saturating_add(1)
        }
    }
    impl Step for u128 {
        fn next_or_max(self) -> Self {
            self.saturating_add(1)
        }
    }
}

fn find<T: Copy + Ord>(ranges: &[(T, T)], value: T) -> bool {
    // Index of the first range starting after `value`; the one before it may hold it.
    let idx = ranges.partition_point(|&(lo, _)| lo <= value);
    idx > 0 && ranges[idx - 1].1 >= value
}

impl IpSet {
    /// Builds a set from entries.
    ///
    /// # Errors
    /// The first entry that does not parse.
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<Self, BadEntry> {
        let mut builder = IpSetBuilder::default();
        for entry in entries {
            builder.add(entry)?;
        }
        Ok(builder.build())
    }

    /// True when `ip` (normalised) lies in the set.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match normalize(ip) {
            IpAddr::V4(v4) => find(&self.v4, u32::from(v4)),
            IpAddr::V6(v6) => find(&self.v6, u128::from(v6)),
        }
    }

    /// True when the set holds no address.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// Disjoint ranges after merging (IPv4 plus IPv6); for reports and tests.
    pub fn range_count(&self) -> usize {
        self.v4.len() + self.v6.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v4_and_v6_prefixes_and_bare_addresses() {
        let set = IpSet::parse(["10.0.0.0/8", "192.0.2.7", "2001:db8::/32", "::1"]).unwrap();
        assert!(set.contains(ip("10.255.0.1")));
        assert!(!set.contains(ip("11.0.0.0")));
        assert!(set.contains(ip("192.0.2.7")));
        assert!(!set.contains(ip("192.0.2.8")));
        assert!(set.contains(ip("2001:db8:ffff::1")));
        assert!(!set.contains(ip("2001:db9::1")));
        assert!(set.contains(ip("::1")));
        assert!(!set.contains(ip("::2")));
    }

    #[test]
    fn mapped_addresses_are_normalised_both_ways() {
        let set = IpSet::parse(["127.0.0.2", "::ffff:10.1.0.0/112"]).unwrap();
        assert!(set.contains(ip("::ffff:127.0.0.2")));
        assert!(set.contains(ip("10.1.200.3")));
        assert!(!set.contains(ip("10.2.0.0")));
    }

    #[test]
    fn overlapping_and_adjacent_ranges_merge() {
        let set = IpSet::parse(["10.0.0.0/25", "10.0.0.128/25", "10.0.0.5", "0.0.0.0/0"]).unwrap();
        assert_eq!(set.range_count(), 1);
        let set = IpSet::parse(["10.0.0.0/25", "10.0.0.128/25"]).unwrap();
        assert_eq!(set.range_count(), 1);
        assert!(set.contains(ip("10.0.0.255")));
    }

    #[test]
    fn whole_spaces_and_edges() {
        let set = IpSet::parse(["255.255.255.255", "::/0"]).unwrap();
        assert!(set.contains(ip("255.255.255.255")));
        assert!(!set.contains(ip("0.0.0.0")));
        assert!(set.contains(ip("ffff::1")));
    }

    #[test]
    fn garbage_is_refused() {
        assert_eq!(IpSet::parse(["10.0.0.0/33"]).unwrap_err().text, "10.0.0.0/33");
        assert!(IpSet::parse(["example.com"]).is_err());
    }

    #[test]
    fn hundred_thousand_prefixes_compile() {
        let mut builder = IpSetBuilder::default();
        for i in 0..100_000u32 {
            let base = Ipv4Addr::from(0x0a00_0000u32 + i * 512);
            builder.add(&format!("{base}/24")).unwrap();
        }
        let set = builder.build();
        assert_eq!(set.range_count(), 100_000);
        assert!(set.contains(ip("10.0.2.1")));
        assert!(!set.contains(ip("10.0.1.1")));
    }
}
