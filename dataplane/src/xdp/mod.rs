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
//! extension headers and fragments are handled. On the client-facing
//! interface it also answers ARP requests and neighbour solicitations for
//! announced VIPs (`announce = "arp"`, [`OwnedTraffic::announced`]) with
//! XDP_TX (bpf/flowgate_announce.h).
//!
//! What rules own ([`OwnedTraffic`]) and how many keys the program's maps
//! hold ([`XdpCapacity`], from dataplane/bpf/flowgate_limits.h, which the C
//! program includes too) need no kernel: the control side checks every
//! change against them before anything is published. The rest needs the
//! `daemon` feature:
//!
//! [`XdpFilter::attach`] loads one instance of the program per interface
//! and attaches it through a bpf_link (so it goes away with the process);
//! [`XdpFilter::set_socket`] fills its socket map; [`XdpFilter::widen`],
//! [`XdpFilter::undo`] and [`XdpFilter::narrow`] (or
//! [`XdpFilter::update`], all three in one) keep its maps equal to
//! [`OwnedTraffic::from_snapshot`]; [`XdpFilter::set_local_addresses`]
//! keeps its set of the box's own addresses equal to
//! [`crate::neigh::local_addresses`]; [`XdpFilter::set_redirect_all`]
//! switches the daemon's forward-only mode; [`XdpFilter::read_maps`] and
//! [`read_attached_maps`] read what the kernel's maps hold.

mod capacity;
mod owned;

mod counters;
#[cfg(feature = "daemon")]
mod error;
#[cfg(feature = "daemon")]
mod fast_map;
#[cfg(feature = "daemon")]
pub mod features;
#[cfg(feature = "daemon")]
mod filter;
#[cfg(feature = "daemon")]
mod key_set;
#[cfg(feature = "daemon")]
mod link;
#[cfg(feature = "daemon")]
mod maps;
#[cfg(feature = "daemon")]
mod per_cpu;
#[cfg(feature = "daemon")]
mod prefilter;
#[cfg(feature = "daemon")]
mod program;
#[cfg(feature = "daemon")]
mod stale;
#[cfg(feature = "daemon")]
mod syscall;
#[cfg(feature = "daemon")]
pub mod test_run;
#[cfg(feature = "daemon")]
mod tester;
#[cfg(feature = "daemon")]
mod verdict_counters;

pub use capacity::{CapacityError, Shortfall, XdpCapacity, XdpDemand, XdpMap};
pub use owned::{syn_proxies_of, OwnedTraffic, TrafficKey};

pub use counters::{FastHandUps, XdpCounters};
#[cfg(feature = "daemon")]
pub use error::XdpError;
#[cfg(feature = "daemon")]
pub use fast_map::MappedEntries;
#[cfg(feature = "daemon")]
pub use features::{FeatureReader, XdpFeatures};
#[cfg(feature = "daemon")]
pub use filter::{KeyDrift, Unowned, Widening, XdpFilter, XdpMode};
#[cfg(feature = "daemon")]
pub use maps::{read_attached_counters, read_attached_maps, set_attached_socket, XdpMapKeys};
#[cfg(feature = "daemon")]
pub use tester::{ProgramOutcome, XdpTester};

/// The compiled XDP program, an ELF object with its code in section `xdp`
/// (for tools and tests, e.g. `ip link set dev X xdpgeneric obj FILE sec xdp`).
#[cfg(feature = "daemon")]
pub fn program_object() -> &'static [u8] {
    program::OBJECT
}
