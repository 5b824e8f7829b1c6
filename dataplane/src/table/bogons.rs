//! The configured bogon prefixes (`[ingress] bogons`), compiled for the
//! one question the pipeline asks of a new flow's source: does it lie in
//! any of them?

use crate::rules::ClientPrefix;

/// Bogon prefixes as (network, mask) pairs over 16-byte addresses, IPv4
/// written IPv4-mapped (as the parser gives every address), so that one
/// masked compare per prefix answers for either family.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bogons {
    prefixes: Vec<(u128, u128)>,
}

/// The IPv4-mapped prefix `::ffff:0:0/96`, under which IPv4 addresses lie.
const V4_MAPPED: u128 = 0xffff_u128 << 32;

impl Bogons {
    /// Compiles `prefixes` (validated: no host bits, lengths within their
    /// family).
    pub fn new(prefixes: &[ClientPrefix]) -> Bogons {
        let prefixes = prefixes
            .iter()
            .map(|p| {
                let (net, len) = match p.address {
                    std::net::IpAddr::V4(a) => {
                        (V4_MAPPED | u128::from(u32::from(a)), 96 + u32::from(p.len))
                    }
                    std::net::IpAddr::V6(a) => (u128::from(a), u32::from(p.len)),
                };
                let mask = u128::MAX.checked_shl(128 - len.min(128)).unwrap_or(0);
                (net & mask, mask)
            })
            .collect();
        Bogons { prefixes }
    }

    /// Whether `addr` (16 bytes, IPv4-mapped for IPv4) lies in a bogon
    /// prefix. A linear scan: a bogon list is a handful of prefixes, and
    /// only a new flow asks.
    #[inline]
    pub fn contains(&self, addr: &[u8; 16]) -> bool {
        let a = u128::from_be_bytes(*addr);
        self.prefixes.iter().any(|&(net, mask)| a & mask == net)
    }

    /// Whether no prefix is configured.
    pub fn is_empty(&self) -> bool {
        self.prefixes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn mapped(a: &str) -> [u8; 16] {
        match a.parse::<IpAddr>().unwrap() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        }
    }

    fn prefix(text: &str) -> ClientPrefix {
        crate::rules::parse::client_prefix(text, "test").unwrap()
    }

    #[test]
    fn each_family_matches_only_its_own_prefixes() {
        let b = Bogons::new(&[
            prefix("10.0.0.0/8"),
            prefix("fc00::/7"),
            prefix("0.0.0.0/0"),
        ]);
        assert!(b.contains(&mapped("10.255.1.2")));
        assert!(b.contains(&mapped("fd00::1")));
        // 0.0.0.0/0 is every IPv4 address, and no IPv6 one.
        assert!(b.contains(&mapped("198.18.0.2")));
        assert!(!b.contains(&mapped("2001:2::2")));
        let b = Bogons::new(&[prefix("10.0.0.0/8"), prefix("192.0.2.1")]);
        assert!(!b.contains(&mapped("11.0.0.1")));
        assert!(b.contains(&mapped("192.0.2.1")));
        assert!(!b.contains(&mapped("192.0.2.2")));
        assert!(Bogons::new(&[]).is_empty());
        assert!(!Bogons::new(&[]).contains(&mapped("10.0.0.1")));
    }
}
