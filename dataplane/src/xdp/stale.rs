//! Removing XDP programs left on an interface by someone else.
//!
//! A program attached through netlink stays after its loader is gone: a
//! crashed loader that used netlink, `ip link set … xdp obj …`, or libxdp's
//! dispatcher (libxdp attaches through netlink). Such a program must never
//! block the next start, so it is detached here (RTM_SETLINK with
//! `IFLA_XDP_FD` = -1, per mode) before ours is attached. A program
//! attached through a bpf_link cannot be removed this way, and does not
//! need to be: the link goes away with the last process holding it. If one
//! is there, a live process (or a pin on bpffs) holds it, and attaching
//! fails with [`XdpError::Busy`] rather than pulling it from under its
//! owner.

use aya::programs::XdpFlags;
use netlink_packet_route::link::{LinkAttribute, LinkMessage, LinkXdp};
use netlink_packet_route::RouteNetlinkMessage;
use nix::libc::EBUSY;

use super::XdpError;
use crate::neigh::socket::{Expect, RequestSocket};
use crate::neigh::{LinkInfo, NeighError};

/// Detaches every XDP program attached to `link`'s interface, logging a
/// warning for each.
pub(crate) fn remove_stale_programs(link: &LinkInfo) -> Result<(), XdpError> {
    let attached = [
        (link.xdp.native, XdpFlags::DRV_MODE, "native"),
        (link.xdp.generic, XdpFlags::SKB_MODE, "generic"),
        (link.xdp.offloaded, XdpFlags::HW_MODE, "offloaded"),
    ];
    let mut socket = None;
    for (program, flags, mode) in attached {
        let Some(program) = program else { continue };
        tracing::warn!(
            interface = %link.name,
            program,
            mode,
            "an XDP program is already attached; detaching it to attach ours"
        );
        let socket = match &mut socket {
            Some(s) => s,
            None => socket.insert(RequestSocket::open().map_err(other)?),
        };
        let mut request = LinkMessage::default();
        request.header.index = link.ifindex;
        request.attributes.push(LinkAttribute::Xdp(vec![
            LinkXdp::Fd(-1),
            LinkXdp::Flags(flags.bits()),
        ]));
        match socket.request(
            RouteNetlinkMessage::SetLink(request),
            0,
            Expect::Ack,
            "RTM_SETLINK (detach XDP)",
        ) {
            Ok(_) => {}
            Err(NeighError::Kernel { ref source, .. }) if source.raw_os_error() == Some(EBUSY) => {
                return Err(XdpError::Busy {
                    interface: link.name.clone(),
                    program,
                })
            }
            Err(NeighError::Kernel { ref source, .. }) => {
                return Err(XdpError::from_io(
                    &format!("detaching XDP program {program} from {}", link.name),
                    source,
                ))
            }
            Err(e) => return Err(other(e)),
        }
    }
    Ok(())
}

fn other(error: NeighError) -> XdpError {
    XdpError::Other(error.to_string())
}
