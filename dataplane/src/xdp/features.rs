//! Which devices really send the frames an XDP program sends out of them.
//!
//! A program in native mode that answers XDP_TX, or redirects a frame to
//! another device with `bpf_redirect_map`, has the frame dropped when the
//! device cannot transmit XDP frames — dropped after the program has
//! returned, counted only among the receiving driver's drops. The kernel
//! says which devices can in their `xdp-features`
//! (`NETDEV_XDP_ACT_NDO_XMIT`), read here over the `netdev` generic
//! netlink family (Linux 6.3 and later). A veth has it only while its peer
//! has an XDP program or GRO on; XDP_TX on a veth needs the same. In
//! generic mode frames go out as socket buffers, which every device sends.
//!
//! The messages are built and read here by hand: two requests with one
//! attribute each, not worth a generic netlink crate.

use std::io;

use netlink_sys::{protocols::NETLINK_GENERIC, Socket};

use super::{XdpError, XdpMode};

/// `NETDEV_XDP_ACT_NDO_XMIT`: the device transmits frames redirected to it
/// (and, for veth, frames sent back with XDP_TX).
pub const NDO_XMIT: u64 = 1 << 2;

const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
const NETDEV_CMD_DEV_GET: u8 = 1;
const NETDEV_A_DEV_IFINDEX: u16 = 1;
const NETDEV_A_DEV_XDP_FEATURES: u16 = 3;
/// Header bytes: `nlmsghdr` (16) and `genlmsghdr` (4).
const HEADERS: usize = 20;

/// A device's `xdp-features` bits (`enum netdev_xdp_act`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XdpFeatures(pub u64);

impl XdpFeatures {
    /// Whether the device transmits frames an XDP program sends it.
    pub fn can_transmit(self) -> bool {
        self.0 & NDO_XMIT != 0
    }
}

/// A generic netlink socket asking the kernel for devices' XDP features,
/// in the calling thread's network namespace.
pub struct FeatureReader {
    socket: Socket,
    family: u16,
    sequence: u32,
    buffer: Vec<u8>,
}

impl FeatureReader {
    /// Opens the socket and finds the `netdev` family; an error on a
    /// kernel without it (before 6.3).
    pub fn open() -> Result<FeatureReader, XdpError> {
        let fail = |e: io::Error| XdpError::Other(format!("reading XDP features: {e}"));
        let mut socket = Socket::new(NETLINK_GENERIC).map_err(fail)?;
        socket.bind_auto().map_err(fail)?;
        let mut reader = FeatureReader {
            socket,
            family: 0,
            sequence: 0,
            buffer: Vec::with_capacity(8192),
        };
        let name = attribute(CTRL_ATTR_FAMILY_NAME, b"netdev\0");
        let reply = reader
            .request(GENL_ID_CTRL, CTRL_CMD_GETFAMILY, &name)
            .map_err(|e| {
                XdpError::Other(format!(
                    "the kernel has no netdev netlink family to tell XDP features (Linux 6.3 or later has): {e}"
                ))
            })?;
        let id = find_attribute(&reply, CTRL_ATTR_FAMILY_ID)
            .and_then(|v| v.get(..2))
            .map(|v| u16::from_ne_bytes([v[0], v[1]]))
            .ok_or_else(|| XdpError::Other("the netdev family's id is missing".into()))?;
        reader.family = id;
        Ok(reader)
    }

    /// The XDP features of the device `ifindex`.
    pub fn read(&mut self, ifindex: u32) -> Result<XdpFeatures, XdpError> {
        let index = attribute(NETDEV_A_DEV_IFINDEX, &ifindex.to_ne_bytes());
        let reply = self
            .request(self.family, NETDEV_CMD_DEV_GET, &index)
            .map_err(|e| XdpError::Other(format!("XDP features of ifindex {ifindex}: {e}")))?;
        find_attribute(&reply, NETDEV_A_DEV_XDP_FEATURES)
            .and_then(|v| v.get(..8))
            .map(|v| {
                let mut b = [0u8; 8];
                b.copy_from_slice(v);
                XdpFeatures(u64::from_ne_bytes(b))
            })
            .ok_or_else(|| {
                XdpError::Other(format!(
                    "ifindex {ifindex}: the kernel gave no XDP features"
                ))
            })
    }

    /// Sends one request and returns its reply's attributes.
    fn request(&mut self, family: u16, command: u8, attributes: &[u8]) -> io::Result<Vec<u8>> {
        self.sequence = self.sequence.wrapping_add(1);
        let len = HEADERS + attributes.len();
        let mut message = Vec::with_capacity(len);
        message.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_ne_bytes());
        message.extend_from_slice(&family.to_ne_bytes());
        message.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
        message.extend_from_slice(&self.sequence.to_ne_bytes());
        message.extend_from_slice(&0u32.to_ne_bytes());
        message.extend_from_slice(&[command, 1, 0, 0]);
        message.extend_from_slice(attributes);
        self.socket.send(&message, 0)?;
        // The kernel answers a request at once; a bound number of
        // datagrams guards against stray ones.
        for _ in 0..16 {
            self.buffer.clear();
            self.socket.recv(&mut self.buffer, 0)?;
            let b = &self.buffer;
            if b.len() < 16 {
                continue;
            }
            let kind = u16::from_ne_bytes([b[4], b[5]]);
            let sequence = u32::from_ne_bytes([b[8], b[9], b[10], b[11]]);
            if sequence != self.sequence {
                continue;
            }
            if kind == NLMSG_ERROR {
                let code = b
                    .get(16..20)
                    .map_or(0, |c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]));
                return Err(io::Error::from_raw_os_error(code.saturating_neg()));
            }
            let end = usize::try_from(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                .unwrap_or(usize::MAX)
                .min(b.len());
            return Ok(b.get(HEADERS..end).unwrap_or_default().to_vec());
        }
        Err(io::Error::other("no reply from the kernel"))
    }
}

/// One netlink attribute, padded to 4 bytes.
fn attribute(kind: u16, value: &[u8]) -> Vec<u8> {
    let len = 4 + value.len();
    let mut a = Vec::with_capacity(len.next_multiple_of(4));
    a.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_ne_bytes());
    a.extend_from_slice(&kind.to_ne_bytes());
    a.extend_from_slice(value);
    a.resize(len.next_multiple_of(4), 0);
    a
}

/// The value of the first attribute of type `kind` in `attributes`.
fn find_attribute(mut attributes: &[u8], kind: u16) -> Option<&[u8]> {
    while attributes.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([attributes[0], attributes[1]]));
        // The top two bits of the type are flags (nested, byte order).
        let this = u16::from_ne_bytes([attributes[2], attributes[3]]) & 0x3fff;
        if len < 4 || len > attributes.len() {
            return None;
        }
        if this == kind {
            return attributes.get(4..len);
        }
        attributes = attributes
            .get(len.next_multiple_of(4)..)
            .unwrap_or_default();
    }
    None
}

/// The ports a program instance attached in `mode` may send fast path
/// frames out of, as [`crate::fastpath::FastConfig::egress_ready`] bits:
/// every port in generic mode; in native mode the ports `p` whose device
/// can transmit XDP frames (`can_transmit[p]`). Ports past 63 never.
pub fn egress_ready(mode: XdpMode, can_transmit: &[bool]) -> u64 {
    can_transmit
        .iter()
        .take(64)
        .enumerate()
        .filter(|&(_, &ready)| ready || mode == XdpMode::Generic)
        .fold(0, |mask, (port, _)| mask | 1 << port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_and_found_again() {
        let mut all = attribute(7, b"ab");
        assert_eq!(all.len(), 8);
        all.extend(attribute(NETDEV_A_DEV_XDP_FEATURES, &0x47u64.to_ne_bytes()));
        assert_eq!(find_attribute(&all, 7), Some(&b"ab"[..]));
        assert_eq!(
            find_attribute(&all, NETDEV_A_DEV_XDP_FEATURES),
            Some(&0x47u64.to_ne_bytes()[..])
        );
        assert_eq!(find_attribute(&all, 9), None);
        // A length past the end stops the walk.
        assert_eq!(find_attribute(&[200, 0, 7, 0, 1, 2], 7), None);
    }

    #[test]
    fn native_mode_sends_only_where_the_device_transmits() {
        assert_eq!(egress_ready(XdpMode::Native, &[true, false, true]), 0b101);
        assert_eq!(egress_ready(XdpMode::Generic, &[true, false, true]), 0b111);
        assert_eq!(egress_ready(XdpMode::Native, &[]), 0);
        assert_eq!(egress_ready(XdpMode::Generic, &[true; 70]), u64::MAX);
        assert!(XdpFeatures(0x47).can_transmit());
        assert!(!XdpFeatures(0x23).can_transmit());
    }

    #[test]
    fn a_veth_transmits_xdp_frames_only_while_its_peer_has_gro_or_a_program() {
        use crate::testnet::{self, NetNs};
        if !testnet::privileged() {
            return;
        }
        let a = NetNs::new("fgf").unwrap();
        let b = NetNs::new("fgf").unwrap();
        testnet::veth_pair(&a, "fa", &b, "fb", 1).unwrap();
        let ifindex = a
            .enter(|| crate::neigh::link_info("fa").map(|l| l.ifindex))
            .unwrap()
            .unwrap();
        let read = || {
            a.enter(move || FeatureReader::open()?.read(ifindex))
                .unwrap()
                .unwrap()
        };
        assert!(!read().can_transmit(), "peer without GRO: {:?}", read());
        b.exec("ethtool", &["-K", "fb", "gro", "on"]).unwrap();
        assert!(read().can_transmit(), "peer with GRO: {:?}", read());
        b.exec("ethtool", &["-K", "fb", "gro", "off"]).unwrap();
        assert!(!read().can_transmit());
        // A bad index is a clear error, not a panic.
        let missing = a.enter(|| FeatureReader::open()?.read(999_999)).unwrap();
        assert!(missing.is_err());
    }
}
