//! The box's own addresses (RTM_GETADDR).

use std::net::IpAddr;

use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::socket::{Expect, RequestSocket};
use super::NeighError;

/// Every IPv4 and IPv6 address configured on any interface of the calling
/// thread's network namespace, the loopback's included, as (interface
/// index, address), in the kernel's order and without repeats. Addresses
/// still in duplicate address detection count: the box owns them.
///
/// The daemon tells the XDP program these, so that answers to the box's
/// own connections to a backend reach the box's kernel.
pub fn local_addresses() -> Result<Vec<(u32, IpAddr)>, NeighError> {
    let mut socket = RequestSocket::open()?;
    // AF_UNSPEC: both families in one dump.
    let replies = socket.request(
        RouteNetlinkMessage::GetAddress(AddressMessage::default()),
        0,
        Expect::Dump,
        "RTM_GETADDR",
    )?;
    let mut addresses: Vec<(u32, IpAddr)> = Vec::with_capacity(replies.len());
    for reply in &replies {
        if let RouteNetlinkMessage::NewAddress(message) = reply {
            if let Some(entry) = local_address(message) {
                // The same address may be configured twice on one
                // interface (with two prefix lengths).
                if !addresses.contains(&entry) {
                    addresses.push(entry);
                }
            }
        }
    }
    Ok(addresses)
}

/// The connected subnets of interface `ifindex`: each of its IPv4 and
/// IPv6 addresses with its prefix length (link-local ones included), in
/// the kernel's order.
pub fn connected_subnets(ifindex: u32) -> Result<Vec<(IpAddr, u8)>, NeighError> {
    let mut socket = RequestSocket::open()?;
    let replies = socket.request(
        RouteNetlinkMessage::GetAddress(AddressMessage::default()),
        0,
        Expect::Dump,
        "RTM_GETADDR",
    )?;
    let mut subnets = Vec::new();
    for reply in &replies {
        if let RouteNetlinkMessage::NewAddress(message) = reply {
            if let Some((index, address)) = local_address(message) {
                let subnet = (address, message.header.prefix_len);
                if index == ifindex && !subnets.contains(&subnet) {
                    subnets.push(subnet);
                }
            }
        }
    }
    Ok(subnets)
}

/// The interface and the box's own address in one address message;
/// `None` for what is not IPv4 or IPv6.
///
/// `IFA_LOCAL` is the box's address when present; `IFA_ADDRESS` is then
/// the peer's on a point-to-point link (`ip addr add A peer B`), and the
/// box's own otherwise (IPv6 sends only it).
fn local_address(message: &AddressMessage) -> Option<(u32, IpAddr)> {
    if !matches!(
        message.header.family,
        AddressFamily::Inet | AddressFamily::Inet6
    ) {
        return None;
    }
    let mut local = None;
    let mut address = None;
    for attribute in &message.attributes {
        match attribute {
            AddressAttribute::Local(a) => local = Some(*a),
            AddressAttribute::Address(a) => address = Some(*a),
            _ => {}
        }
    }
    Some((message.header.index, local.or(address)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(
        family: AddressFamily,
        index: u32,
        attributes: &[AddressAttribute],
    ) -> AddressMessage {
        let mut message = AddressMessage::default();
        message.header.family = family;
        message.header.index = index;
        message.attributes = attributes.to_vec();
        message
    }

    #[test]
    fn the_local_attribute_wins_over_a_peers_address() {
        let local: IpAddr = "198.18.63.1".parse().unwrap();
        let peer: IpAddr = "198.18.63.9".parse().unwrap();
        let m = message(
            AddressFamily::Inet,
            4,
            &[
                AddressAttribute::Address(peer),
                AddressAttribute::Local(local),
            ],
        );
        assert_eq!(local_address(&m), Some((4, local)));
    }

    #[test]
    fn without_a_local_attribute_the_address_is_the_boxs() {
        let own: IpAddr = "2001:2:0:63::1".parse().unwrap();
        let m = message(AddressFamily::Inet6, 7, &[AddressAttribute::Address(own)]);
        assert_eq!(local_address(&m), Some((7, own)));
    }

    #[test]
    fn other_families_and_messages_without_an_address_are_skipped() {
        let own: IpAddr = "198.18.63.1".parse().unwrap();
        let m = message(AddressFamily::Packet, 1, &[AddressAttribute::Address(own)]);
        assert_eq!(local_address(&m), None);
        let m = message(
            AddressFamily::Inet,
            1,
            &[AddressAttribute::Label("x0".into())],
        );
        assert_eq!(local_address(&m), None);
    }
}
