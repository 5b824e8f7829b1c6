//! VIPs announced on the clients' segment (`announce = "arp"`): what the
//! control side does beside the XDP program, which answers ARP requests
//! and neighbour solicitations for them (bpf/flowgate_announce.h).
//!
//! - [`frames`]: the gratuitous ARP and unsolicited neighbour
//!   advertisement that tell the segment a VIP is here, sent when it
//!   appears (at start, and when a reload or an edit adds it);
//! - [`segment`]: which VIPs lie inside a connected subnet of the
//!   client-facing interface without being announced (`flowgate check`, the
//!   start and every reload warn about them: clients there resolve the VIP
//!   by ARP or NDP, and nothing answers);
//! - `Announcer` (feature `daemon`): sends the frames through a packet
//!   socket on the client-facing interface;
//! - [`bgp`] (`announce = "bgp"`): which VIPs the gateway offers its BGP
//!   daemon, and `VipRoutes` (feature `daemon`), the host routes that
//!   offer them, on a device that dies with the process.

pub mod bgp;
pub mod frames;
pub mod segment;

#[cfg(feature = "daemon")]
mod routes;
#[cfg(feature = "daemon")]
mod sender;

#[cfg(feature = "daemon")]
pub use routes::VipRoutes;
#[cfg(feature = "daemon")]
pub use sender::Announcer;
