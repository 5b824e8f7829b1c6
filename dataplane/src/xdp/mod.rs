//! Our XDP program: it sends the traffic the gateway owns to the AF_XDP
//! sockets and everything else to the kernel.
//!
//! The program (dataplane/bpf/flowgate_xdp.c, compiled by build.rs and
//! embedded here) redirects, to the socket of the frame's receive queue:
//! TCP/UDP to a service's (protocol, VIP, port), TCP/UDP replies from a
//! backend's (protocol, address, port), and fragments to a VIP address (the
//! pipeline counts and drops those). ARP, NDP, ICMP, other protocols and
//! traffic to the box's own addresses pass to the kernel, so the box stays
//! reachable and the kernel resolves neighbours; so do frames from a
//! backend's (protocol, address, port) to one of the box's own addresses,
//! the answers to the box's own connections (health checks, an operator's
//! curl), as the gateway's own replies only ever go to clients. Owned
//! traffic that finds no socket on its queue is dropped and counted; the C
//! source's header says why, and how VLAN tags, IPv4 options, IPv6
//! extension headers and fragments are handled.
//!
//! [`XdpFilter::attach`] loads one instance of the program per interface
//! and attaches it through a bpf_link (so it goes away with the process);
//! [`XdpFilter::set_socket`] fills its socket map, [`XdpFilter::update`]
//! keeps its maps equal to [`OwnedTraffic::from_snapshot`],
//! [`XdpFilter::set_local_addresses`] keeps its set of the box's own
//! addresses equal to [`crate::neigh::local_addresses`], and
//! [`XdpFilter::set_redirect_all`] switches the daemon's forward-only mode.

mod counters;
mod error;
mod filter;
mod key_set;
mod owned;
mod program;
mod stale;

pub use counters::XdpCounters;
pub use error::XdpError;
pub use filter::{XdpFilter, XdpMode};
pub use owned::{OwnedTraffic, TrafficKey};

/// The compiled XDP program, an ELF object with its code in section `xdp`
/// (for tools and tests, e.g. `ip link set dev X xdpgeneric obj FILE sec xdp`).
pub fn program_object() -> &'static [u8] {
    program::OBJECT
}
