//! Client addresses and address prefixes, as the routing tables key them.
//!
//! Addresses are plain integers (`u32` for IPv4, `u128` for IPv6), network
//! order read as big-endian, so that masking and ordering are integer
//! operations. An IPv4 client is always an IPv4 address: the data path's
//! IPv4-mapped form (`::ffff:a.b.c.d`) becomes [`ClientAddr::V4`], so an
//! IPv4 client can never match an IPv6 prefix. For the same reason an IPv6
//! prefix inside `::ffff:0:0/96` is refused: it could never match anything.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::wire::is_v4_mapped;

/// The longest IPv4 prefix.
pub const V4_MAX_LEN: u8 = 32;
/// The longest IPv6 prefix.
pub const V6_MAX_LEN: u8 = 128;

/// A client's source address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClientAddr {
    /// An IPv4 address.
    V4(u32),
    /// An IPv6 address (never an IPv4-mapped one).
    V6(u128),
}

impl ClientAddr {
    /// The address of the data path's 16-byte form: IPv4-mapped is IPv4.
    #[inline]
    pub fn from_bytes(bytes: &[u8; 16]) -> ClientAddr {
        if is_v4_mapped(bytes) {
            ClientAddr::V4(u32::from_be_bytes([
                bytes[12], bytes[13], bytes[14], bytes[15],
            ]))
        } else {
            ClientAddr::V6(u128::from_be_bytes(*bytes))
        }
    }
}

impl From<IpAddr> for ClientAddr {
    fn from(addr: IpAddr) -> ClientAddr {
        match addr {
            IpAddr::V4(a) => ClientAddr::V4(u32::from(a)),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => ClientAddr::V4(u32::from(v4)),
                None => ClientAddr::V6(u128::from(a)),
            },
        }
    }
}

impl From<ClientAddr> for IpAddr {
    fn from(addr: ClientAddr) -> IpAddr {
        match addr {
            ClientAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(a)),
            ClientAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(a)),
        }
    }
}

impl fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        IpAddr::from(*self).fmt(f)
    }
}

/// An address prefix: a network address and a length, with no host bits
/// set. Ordered by family (IPv4 first), then address, then length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Prefix {
    /// An IPv4 prefix, length 0..=32.
    V4 {
        /// The network address.
        addr: u32,
        /// The length in bits.
        len: u8,
    },
    /// An IPv6 prefix, length 0..=128, never inside `::ffff:0:0/96`.
    V6 {
        /// The network address.
        addr: u128,
        /// The length in bits.
        len: u8,
    },
}

/// Why a prefix was refused. Each displays as one line for the operator.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    /// Not an address, or not `ADDRESS/LENGTH`.
    #[error("{text:?} is not an address or a prefix (ADDRESS or ADDRESS/LENGTH)")]
    Malformed {
        /// The text given.
        text: String,
    },
    /// The length is longer than the family's addresses.
    #[error("prefix length {len} is longer than {max}, the length of an {family} address")]
    TooLong {
        /// The length given.
        len: u8,
        /// The family's address length.
        max: u8,
        /// "IPv4" or "IPv6".
        family: &'static str,
    },
    /// Bits past the length are set, so the prefix is ambiguous.
    #[error("{given} has host bits set; the prefix is {network}")]
    HostBitsSet {
        /// The prefix as given.
        given: String,
        /// The prefix with its host bits cleared.
        network: String,
    },
    /// An IPv6 prefix inside the IPv4-mapped range, which no client has.
    #[error("{given} is an IPv4-mapped prefix, which no IPv6 client has; write it as the IPv4 prefix {v4}")]
    Ipv4Mapped {
        /// The prefix as given.
        given: String,
        /// The IPv4 prefix it stands for.
        v4: String,
    },
}

/// The mask of an IPv4 prefix of `len` bits (`len` ≤ 32).
#[inline]
pub(crate) fn v4_mask(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

/// The mask of an IPv6 prefix of `len` bits (`len` ≤ 128).
#[inline]
pub(crate) fn v6_mask(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

/// `::ffff:0:0/96`, the IPv4-mapped range.
const V4_MAPPED_NETWORK: u128 = 0xffff_0000_0000;

impl Prefix {
    /// An IPv4 prefix; refused if `len` > 32 or host bits are set.
    pub fn v4(addr: u32, len: u8) -> Result<Prefix, PrefixError> {
        if len > V4_MAX_LEN {
            return Err(PrefixError::TooLong {
                len,
                max: V4_MAX_LEN,
                family: "IPv4",
            });
        }
        if addr & !v4_mask(len) != 0 {
            return Err(PrefixError::HostBitsSet {
                given: format!("{}/{len}", Ipv4Addr::from(addr)),
                network: format!("{}/{len}", Ipv4Addr::from(addr & v4_mask(len))),
            });
        }
        Ok(Prefix::V4 { addr, len })
    }

    /// An IPv6 prefix; refused if `len` > 128, host bits are set, or it lies
    /// inside `::ffff:0:0/96`.
    pub fn v6(addr: u128, len: u8) -> Result<Prefix, PrefixError> {
        if len > V6_MAX_LEN {
            return Err(PrefixError::TooLong {
                len,
                max: V6_MAX_LEN,
                family: "IPv6",
            });
        }
        if addr & !v6_mask(len) != 0 {
            return Err(PrefixError::HostBitsSet {
                given: format!("{}/{len}", Ipv6Addr::from(addr)),
                network: format!("{}/{len}", Ipv6Addr::from(addr & v6_mask(len))),
            });
        }
        if len >= 96 && addr & v6_mask(96) == V4_MAPPED_NETWORK {
            // Truncation intended: the low 32 bits are the IPv4 address.
            let v4 = Ipv4Addr::from(addr as u32);
            return Err(PrefixError::Ipv4Mapped {
                given: format!("{}/{len}", Ipv6Addr::from(addr)),
                v4: format!("{v4}/{}", len - 96),
            });
        }
        Ok(Prefix::V6 { addr, len })
    }

    /// A prefix of `len` bits at `addr` (an IPv4-mapped IPv6 address is
    /// refused like [`Prefix::v6`] refuses it).
    pub fn new(addr: IpAddr, len: u8) -> Result<Prefix, PrefixError> {
        match addr {
            IpAddr::V4(a) => Prefix::v4(u32::from(a), len),
            IpAddr::V6(a) => Prefix::v6(u128::from(a), len),
        }
    }

    /// The prefix that matches exactly one address.
    pub fn host(addr: ClientAddr) -> Prefix {
        match addr {
            ClientAddr::V4(addr) => Prefix::V4 {
                addr,
                len: V4_MAX_LEN,
            },
            ClientAddr::V6(addr) => Prefix::V6 {
                addr,
                len: V6_MAX_LEN,
            },
        }
    }

    /// Its length in bits.
    pub fn length(&self) -> u8 {
        match *self {
            Prefix::V4 { len, .. } | Prefix::V6 { len, .. } => len,
        }
    }

    /// Whether it is an IPv4 prefix.
    pub fn is_ipv4(&self) -> bool {
        matches!(self, Prefix::V4 { .. })
    }

    /// Its network address.
    pub fn network(&self) -> IpAddr {
        match *self {
            Prefix::V4 { addr, .. } => IpAddr::V4(Ipv4Addr::from(addr)),
            Prefix::V6 { addr, .. } => IpAddr::V6(Ipv6Addr::from(addr)),
        }
    }

    /// Whether `addr` lies inside it (never across families).
    pub fn contains(&self, addr: ClientAddr) -> bool {
        match (*self, addr) {
            (Prefix::V4 { addr: net, len }, ClientAddr::V4(a)) => a & v4_mask(len) == net,
            (Prefix::V6 { addr: net, len }, ClientAddr::V6(a)) => a & v6_mask(len) == net,
            _ => false,
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network(), self.length())
    }
}

impl FromStr for Prefix {
    type Err = PrefixError;

    /// `ADDRESS/LENGTH`, or a bare `ADDRESS` for its host prefix (/32 or
    /// /128).
    fn from_str(text: &str) -> Result<Prefix, PrefixError> {
        let malformed = || PrefixError::Malformed {
            text: text.to_string(),
        };
        let (addr, len) = match text.split_once('/') {
            Some((addr, len)) => {
                // Digits only: `u8::from_str` would also take "+8".
                if len.is_empty() || len.len() > 3 || !len.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(malformed());
                }
                let addr: IpAddr = addr.parse().map_err(|_| malformed())?;
                let len: u16 = len.parse().map_err(|_| malformed())?;
                let len = u8::try_from(len).unwrap_or(u8::MAX);
                (addr, len)
            }
            None => {
                let addr: IpAddr = text.parse().map_err(|_| malformed())?;
                let len = if addr.is_ipv4() {
                    V4_MAX_LEN
                } else {
                    V6_MAX_LEN
                };
                (addr, len)
            }
        };
        Prefix::new(addr, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Prefix {
        text.parse().unwrap()
    }

    #[test]
    fn parses_prefixes_and_bare_addresses() {
        assert_eq!(
            p("198.18.0.0/15"),
            Prefix::V4 {
                addr: 0xC612_0000,
                len: 15
            }
        );
        assert_eq!(p("198.18.0.7"), Prefix::v4(0xC612_0007, 32).unwrap());
        assert_eq!(p("2001:db8::/32").length(), 32);
        assert_eq!(p("2001:db8::1").length(), 128);
        assert_eq!(p("0.0.0.0/0"), Prefix::V4 { addr: 0, len: 0 });
        assert_eq!(p("::/0"), Prefix::V6 { addr: 0, len: 0 });
        assert_eq!(p("198.18.0.0/15").to_string(), "198.18.0.0/15");
        assert_eq!(p("2001:db8::/32").to_string(), "2001:db8::/32");
    }

    #[test]
    fn refuses_bad_prefixes_with_a_clear_message() {
        let err = |text: &str| text.parse::<Prefix>().unwrap_err().to_string();
        assert_eq!(
            err("198.18.0.1/15"),
            "198.18.0.1/15 has host bits set; the prefix is 198.18.0.0/15"
        );
        assert_eq!(
            err("198.18.0.0/33"),
            "prefix length 33 is longer than 32, the length of an IPv4 address"
        );
        assert_eq!(
            err("2001:db8::/129"),
            "prefix length 129 is longer than 128, the length of an IPv6 address"
        );
        assert_eq!(
            err("::ffff:198.18.0.0/112"),
            "::ffff:198.18.0.0/112 is an IPv4-mapped prefix, which no IPv6 client has; \
             write it as the IPv4 prefix 198.18.0.0/16"
        );
        for bad in [
            "",
            "/8",
            "198.18.0.0/",
            "198.18.0.0/+8",
            "198.18.0.0/1000",
            "198.18.0/24",
            "x",
        ] {
            assert!(
                matches!(
                    bad.parse::<Prefix>(),
                    Err(PrefixError::Malformed { .. } | PrefixError::TooLong { .. })
                ),
                "{bad:?}"
            );
        }
        // Shorter prefixes that contain the mapped range are IPv6 prefixes.
        assert!("::/80".parse::<Prefix>().is_ok());
    }

    #[test]
    fn ipv4_mapped_clients_are_ipv4_clients() {
        let mapped = crate::wire::v4_mapped([198, 18, 0, 7]);
        assert_eq!(ClientAddr::from_bytes(&mapped), ClientAddr::V4(0xC612_0007));
        let v6: IpAddr = "::ffff:198.18.0.7".parse().unwrap();
        assert_eq!(ClientAddr::from(v6), ClientAddr::V4(0xC612_0007));
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(
            ClientAddr::from_bytes(&crate::wire::addr_to_bytes(v6)),
            ClientAddr::V6(0x2001_0db8_0000_0000_0000_0000_0000_0001)
        );
        // An IPv4 client never matches an IPv6 prefix, not even ::/0.
        assert!(!p("::/0").contains(ClientAddr::V4(0xC612_0007)));
        assert!(p("0.0.0.0/0").contains(ClientAddr::V4(0xC612_0007)));
        assert!(!p("0.0.0.0/0").contains(ClientAddr::V6(1)));
    }

    #[test]
    fn masks_cover_every_length() {
        assert_eq!(v4_mask(0), 0);
        assert_eq!(v4_mask(1), 0x8000_0000);
        assert_eq!(v4_mask(32), u32::MAX);
        assert_eq!(v6_mask(0), 0);
        assert_eq!(v6_mask(128), u128::MAX);
        assert_eq!(v6_mask(96), !0xFFFF_FFFF);
    }
}
