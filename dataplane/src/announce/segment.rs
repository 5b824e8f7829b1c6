//! VIPs that lie on the client-facing interface's own segment without
//! being announced: clients there resolve such a VIP by ARP or NDP instead
//! of sending it to a router, and nothing answers them.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::rules::{Announce, Config};

/// A connected subnet: an address of the interface and its prefix length.
pub type Subnet = (IpAddr, u8);

/// Whether `address` lies in `subnet`.
pub fn contains(subnet: Subnet, address: IpAddr) -> bool {
    let (network, len) = subnet;
    match (network, address) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let len = u32::from(len.min(32));
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let len = u32::from(len.min(128));
            let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// One warning per VIP address of `config` that lies inside one of
/// `subnets` (the connected subnets of `interface`, the client-facing
/// interface) and is not announced, in address order.
pub fn unannounced_on_segment(config: &Config, interface: &str, subnets: &[Subnet]) -> Vec<String> {
    // Each VIP address on the segment: its first service, whether it is
    // announced (every service of an address agrees: the validator sees to
    // it) and its subnet. Services off the segment cost one comparison
    // per subnet, so a reload of many services stays cheap.
    let mut vips: BTreeMap<IpAddr, (&str, Announce, Subnet)> = BTreeMap::new();
    for service in &config.services {
        if let Some(&subnet) = subnets.iter().find(|&&s| contains(s, service.vip)) {
            vips.entry(service.vip)
                .or_insert((service.name.as_str(), service.announce, subnet));
        }
    }
    vips.into_iter()
        .filter(|(_, (_, announce, _))| !announce.is_announced())
        .map(|(vip, (service, _, subnet))| {
            format!(
                "VIP {vip} (service {service:?}) lies in {}/{}, a connected subnet of {interface} \
                 (the client-facing interface), and is not announced: clients on that segment ask \
                 for it by ARP or neighbour discovery and get no answer; set announce = \"arp\" \
                 on its services, or move the VIP out of the subnet",
                network(subnet),
                subnet.1
            )
        })
        .collect()
}

/// The network address of `subnet` (its host bits cleared).
fn network(subnet: Subnet) -> IpAddr {
    match subnet {
        (IpAddr::V4(a), len) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(len.min(32)))
                .unwrap_or(0);
            IpAddr::V4((u32::from(a) & mask).into())
        }
        (IpAddr::V6(a), len) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(len.min(128)))
                .unwrap_or(0);
            IpAddr::V6((u128::from(a) & mask).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::load_str;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn containment_follows_the_prefix() {
        let s = (ip("198.18.0.1"), 24);
        assert!(contains(s, ip("198.18.0.50")));
        assert!(!contains(s, ip("198.18.1.50")));
        assert!(contains((ip("198.18.0.1"), 0), ip("203.0.113.1")));
        assert!(contains((ip("198.18.0.1"), 32), ip("198.18.0.1")));
        assert!(!contains((ip("198.18.0.1"), 32), ip("198.18.0.2")));
        let s6 = (ip("2001:2::1"), 64);
        assert!(contains(s6, ip("2001:2::50")));
        assert!(!contains(s6, ip("2001:2:0:1::50")));
        assert!(!contains(s, ip("2001:2::50")), "families never mix");
    }

    #[test]
    fn only_vips_on_the_segment_that_are_not_announced_are_named() {
        let config = load_str(
            r#"
[[services]]
name = "on-segment"
protocol = "tcp"
vip = "198.18.0.50"
port = 80
[[services.backends]]
address = "198.18.1.11"
port = 80
[[services]]
name = "on-segment-dns"
protocol = "udp"
vip = "198.18.0.50"
port = 53
[[services.backends]]
address = "198.18.1.11"
port = 53
[[services]]
name = "announced"
protocol = "tcp"
vip = "198.18.0.51"
port = 80
announce = "arp"
[[services.backends]]
address = "198.18.1.11"
port = 80
[[services]]
name = "routed"
protocol = "tcp"
vip = "198.18.100.10"
port = 80
[[services.backends]]
address = "198.18.1.11"
port = 80
[[services]]
name = "web6"
protocol = "tcp"
vip = "2001:2::50"
port = 80
[[services.backends]]
address = "2001:2:0:1::11"
port = 80
"#,
            "t.toml",
        )
        .unwrap();
        let subnets = [(ip("198.18.0.1"), 24), (ip("2001:2::1"), 64)];
        let warnings = unannounced_on_segment(&config, "fg-client", &subnets);
        assert_eq!(
            warnings,
            [
                "VIP 198.18.0.50 (service \"on-segment\") lies in 198.18.0.0/24, a connected \
                 subnet of fg-client (the client-facing interface), and is not announced: clients \
                 on that segment ask for it by ARP or neighbour discovery and get no answer; set \
                 announce = \"arp\" on its services, or move the VIP out of the subnet",
                "VIP 2001:2::50 (service \"web6\") lies in 2001:2::/64, a connected subnet of \
                 fg-client (the client-facing interface), and is not announced: clients on that \
                 segment ask for it by ARP or neighbour discovery and get no answer; set \
                 announce = \"arp\" on its services, or move the VIP out of the subnet",
            ]
        );
        assert!(unannounced_on_segment(&config, "fg-client", &[]).is_empty());
    }
}
