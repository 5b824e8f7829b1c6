//! The host routes a gateway offers its BGP daemon (`announce = "bgp"`),
//! on a device that lives exactly as long as the process.
//!
//! The device is a TUN device created without `TUNSETPERSIST`: the kernel
//! deletes it, and every route on it, when the last descriptor of it
//! closes, which an exit of any kind does (SIGKILL and a crash included).
//! The BGP daemon's kernel protocol learns the routes (BIRD: `learn`) and
//! withdraws them when they go. No packet is ever sent to the device: the
//! XDP program takes the VIPs' traffic before the kernel routes it.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

use netlink_packet_core::NLM_F_CREATE;
use netlink_packet_route::link::{LinkFlags, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::neigh::socket::{Expect, RequestSocket};

/// `TUNSETIFF` (`_IOW('T', 202, int)`).
const TUNSETIFF: nix::libc::c_ulong = 0x4004_54ca;
/// `IFF_TUN | IFF_NO_PI`.
const TUN_FLAGS: i16 = 0x0001 | 0x1000;

/// `struct ifreq` as `TUNSETIFF` reads it: the name, the flags, padding
/// to the structure's 40 bytes.
#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: i16,
    padding: [u8; 22],
}

/// The device and the routes on it.
pub struct VipRoutes {
    /// Held open for the process's life: closing it deletes the device.
    _tun: File,
    name: String,
    ifindex: u32,
    socket: RequestSocket,
    installed: BTreeSet<IpAddr>,
}

impl VipRoutes {
    /// Creates the TUN device `name` (1 to 15 bytes), sets it up, with no
    /// routes yet.
    pub fn open(name: &str) -> io::Result<VipRoutes> {
        let tun = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(nix::libc::O_CLOEXEC)
            .open("/dev/net/tun")?;
        let mut request = IfReq {
            name: [0; 16],
            flags: TUN_FLAGS,
            padding: [0; 22],
        };
        let bytes = name.as_bytes();
        if bytes.is_empty() || bytes.len() > 15 {
            return Err(io::Error::other(format!(
                "device name {name:?} is not 1 to 15 bytes"
            )));
        }
        request.name[..bytes.len()].copy_from_slice(bytes);
        // SAFETY: `tun` is an open /dev/net/tun descriptor, and TUNSETIFF
        // reads (and writes back the name into) a `struct ifreq`, which
        // `IfReq` lays out with its full size; the pointer is to a live,
        // exclusively borrowed value for the call's duration.
        let result = unsafe { nix::libc::ioctl(tun.as_raw_fd(), TUNSETIFF, &raw mut request) };
        if result < 0 {
            return Err(io::Error::last_os_error());
        }
        let ifindex = nix::net::if_::if_nametoindex(name).map_err(io::Error::from)?;
        let mut socket = RequestSocket::open().map_err(io::Error::other)?;
        let mut up = LinkMessage::default();
        up.header.index = ifindex;
        up.header.flags = LinkFlags::Up;
        up.header.change_mask = LinkFlags::Up;
        socket
            .request(
                RouteNetlinkMessage::SetLink(up),
                0,
                Expect::Ack,
                "RTM_SETLINK (VIP device up)",
            )
            .map_err(io::Error::other)?;
        Ok(VipRoutes {
            _tun: tun,
            name: name.to_owned(),
            ifindex,
            socket,
            installed: BTreeSet::new(),
        })
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The VIPs routed now.
    pub fn installed(&self) -> &BTreeSet<IpAddr> {
        &self.installed
    }

    /// Makes the routes on the device exactly `wanted`: adds the missing,
    /// removes the rest. A failure leaves what it could not change as it
    /// was (tried again at the next call) and is returned.
    pub fn set(&mut self, wanted: &BTreeSet<IpAddr>) -> io::Result<()> {
        let mut first_error = None;
        let gone: Vec<IpAddr> = self.installed.difference(wanted).copied().collect();
        for vip in gone {
            match self.route(vip, false) {
                Ok(()) => {
                    self.installed.remove(&vip);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        let new: Vec<IpAddr> = wanted.difference(&self.installed).copied().collect();
        for vip in new {
            match self.route(vip, true) {
                Ok(()) => {
                    self.installed.insert(vip);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Adds (or deletes) the host route of `vip` on the device.
    fn route(&mut self, vip: IpAddr, add: bool) -> io::Result<()> {
        let mut message = RouteMessage::default();
        message.header.table = RouteHeader::RT_TABLE_MAIN;
        message.header.protocol = RouteProtocol::Static;
        message.header.scope = RouteScope::Link;
        message.header.kind = RouteType::Unicast;
        match vip {
            IpAddr::V4(v4) => {
                message.header.address_family = AddressFamily::Inet;
                message.header.destination_prefix_length = 32;
                message
                    .attributes
                    .push(RouteAttribute::Destination(RouteAddress::Inet(v4)));
            }
            IpAddr::V6(v6) => {
                message.header.address_family = AddressFamily::Inet6;
                message.header.destination_prefix_length = 128;
                message
                    .attributes
                    .push(RouteAttribute::Destination(RouteAddress::Inet6(v6)));
            }
        }
        message.attributes.push(RouteAttribute::Oif(self.ifindex));
        let (request, flags, what) = if add {
            (
                RouteNetlinkMessage::NewRoute(message),
                NLM_F_CREATE,
                "RTM_NEWROUTE (VIP)",
            )
        } else {
            (
                RouteNetlinkMessage::DelRoute(message),
                0,
                "RTM_DELROUTE (VIP)",
            )
        };
        match self.socket.request(request, flags, Expect::Ack, what) {
            Ok(_) => Ok(()),
            // Already there, or already gone: the state wanted.
            Err(crate::neigh::NeighError::Kernel { source, .. })
                if matches!(
                    source.raw_os_error(),
                    Some(nix::libc::EEXIST | nix::libc::ESRCH)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(io::Error::other(e)),
        }
    }
}
