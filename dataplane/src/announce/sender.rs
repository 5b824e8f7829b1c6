//! Sends announcements through a packet socket on the client-facing
//! interface.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::libc;

use super::frames::announcement;
use crate::rules::MacAddr;

/// A send-only packet socket (AF_PACKET, SOCK_RAW, protocol 0: it
/// receives nothing) bound to one interface.
#[derive(Debug)]
pub struct Announcer {
    socket: OwnedFd,
    ifindex: u32,
}

impl Announcer {
    /// Opens the socket for the interface `ifindex` (in the calling
    /// thread's network namespace). Needs CAP_NET_RAW, which the daemon
    /// has for AF_XDP anyway.
    pub fn open(ifindex: u32) -> io::Result<Announcer> {
        // SAFETY: socket(2) with constant arguments; the result is checked
        // before it is used as a descriptor.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor that nothing else owns.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Announcer { socket, ifindex })
    }

    /// Announces each of `vips` as reachable at `mac`: one gratuitous ARP
    /// or unsolicited neighbour advertisement each. Returns how many were
    /// sent; a failure is logged and the rest are still tried.
    pub fn announce(&self, vips: impl IntoIterator<Item = IpAddr>, mac: MacAddr) -> usize {
        let mut sent = 0;
        for vip in vips {
            match self.send(&announcement(vip, mac)) {
                Ok(()) => sent += 1,
                Err(e) => tracing::warn!(
                    %vip,
                    ifindex = self.ifindex,
                    error = %e,
                    "could not announce a VIP to its segment"
                ),
            }
        }
        sent
    }

    /// Sends one whole Ethernet frame out of the interface.
    fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: sockaddr_ll is plain data; all zeros is a valid value.
        let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        address.sll_family = libc::AF_PACKET as u16;
        address.sll_ifindex = i32::try_from(self.ifindex).unwrap_or(0);
        address.sll_halen = 6;
        if let Some(dst) = frame.get(..6) {
            address.sll_addr[..6].copy_from_slice(dst);
        }
        let length = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: `frame` and `address` are live for the call, their
        // lengths are theirs, and the descriptor is our open socket.
        let sent = unsafe {
            libc::sendto(
                self.socket.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                libc::MSG_DONTWAIT,
                (&raw const address).cast(),
                length,
            )
        };
        if sent < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}
