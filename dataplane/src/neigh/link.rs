//! What the kernel knows of one interface (RTM_GETLINK).

use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage, LinkXdp};
use netlink_packet_route::RouteNetlinkMessage;
use nix::libc::ENODEV;

use super::socket::{Expect, RequestSocket};
use super::NeighError;

/// One interface as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    /// Its name.
    pub name: String,
    /// Its index.
    pub ifindex: u32,
    /// Its own MAC (zero for an interface without a 6-byte link address).
    pub mac: [u8; 6],
    /// Its MTU.
    pub mtu: u32,
    /// Number of receive queues.
    pub rx_queues: u32,
    /// Number of transmit queues.
    pub tx_queues: u32,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// XDP programs attached to it, by mode.
    pub xdp: AttachedXdp,
}

/// Ids of the XDP programs attached to an interface, one per mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AttachedXdp {
    /// Native (driver) mode.
    pub native: Option<u32>,
    /// Generic (skb) mode.
    pub generic: Option<u32>,
    /// Offloaded to the NIC.
    pub offloaded: Option<u32>,
}

impl AttachedXdp {
    /// Whether no XDP program is attached.
    pub fn is_empty(&self) -> bool {
        self.native.is_none() && self.generic.is_none() && self.offloaded.is_none()
    }
}

/// The interface called `name` in the calling thread's network namespace.
pub fn link_info(name: &str) -> Result<LinkInfo, NeighError> {
    let mut socket = RequestSocket::open()?;
    let mut request = LinkMessage::default();
    request
        .attributes
        .push(LinkAttribute::IfName(name.to_string()));
    let replies = socket
        .request(
            RouteNetlinkMessage::GetLink(request),
            0,
            Expect::Ack,
            "RTM_GETLINK",
        )
        .map_err(|e| match e {
            NeighError::Kernel { ref source, .. } if source.raw_os_error() == Some(ENODEV) => {
                NeighError::NoSuchInterface(name.to_string())
            }
            other => other,
        })?;
    replies
        .into_iter()
        .find_map(|reply| match reply {
            RouteNetlinkMessage::NewLink(link) => Some(from_message(link)),
            _ => None,
        })
        .ok_or_else(|| {
            NeighError::Decode(format!(
                "no usable RTM_NEWLINK reply for {name}{}",
                socket
                    .last_decode_error()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ))
        })
}

fn from_message(link: LinkMessage) -> LinkInfo {
    let mut info = LinkInfo {
        name: String::new(),
        ifindex: link.header.index,
        mac: [0; 6],
        mtu: 0,
        rx_queues: 0,
        tx_queues: 0,
        up: link.header.flags.contains(LinkFlags::Up),
        xdp: AttachedXdp::default(),
    };
    for attribute in link.attributes {
        match attribute {
            LinkAttribute::IfName(name) => info.name = name,
            LinkAttribute::Address(address) => {
                if let Ok(mac) = <[u8; 6]>::try_from(address.as_slice()) {
                    info.mac = mac;
                }
            }
            LinkAttribute::Mtu(mtu) => info.mtu = mtu,
            LinkAttribute::NumRxQueues(n) => info.rx_queues = n,
            LinkAttribute::NumTxQueues(n) => info.tx_queues = n,
            LinkAttribute::Xdp(xdp) => info.xdp = attached_xdp(&xdp),
            _ => {}
        }
    }
    info
}

fn attached_xdp(attributes: &[LinkXdp]) -> AttachedXdp {
    let mut attached = AttachedXdp::default();
    for attribute in attributes {
        match *attribute {
            LinkXdp::DrvProgId(id) if id != 0 => attached.native = Some(id),
            LinkXdp::SkbProgId(id) if id != 0 => attached.generic = Some(id),
            LinkXdp::HwProgId(id) if id != 0 => attached.offloaded = Some(id),
            _ => {}
        }
    }
    attached
}
