//! Interfaces and neighbours, as the kernel knows them, over route netlink.
//!
//! The daemon reads each interface's index, MAC and queue count with
//! [`link_info`], learns next-hop MACs from the kernel's neighbour table
//! with a [`NeighbourWatcher`] (a dump, then change notifications), asks the
//! kernel to resolve backends it lacks ([`NeighbourWatcher::resolve`]), and
//! joins what it learned with the config's static neighbours
//! ([`merge_neighbours`]) before building a snapshot. It also reads the
//! box's own addresses ([`local_addresses`]), which the XDP program leaves
//! to the kernel as destinations of replies.
//!
//! The kernel does the resolving (ARP and NDP stay with it: the XDP program
//! passes them up); this module only reads the result. Every socket here
//! belongs to the network namespace of the thread that opened it.

mod address;
mod link;
mod merge;
pub(crate) mod socket;
mod watch;

#[cfg(test)]
mod tests;

use std::io;

pub use address::{connected_subnets, local_addresses};
pub use link::{link_info, AttachedXdp, LinkInfo};
pub use merge::merge_neighbours;
pub use watch::{
    KernelNeighbour, NeighbourChange, NeighbourEvent, NeighbourState, NeighbourWatcher,
};

/// Why a netlink request or the neighbour watcher failed.
#[derive(Debug, thiserror::Error)]
pub enum NeighError {
    /// The interface does not exist (in this network namespace).
    #[error("no such network interface: {0}")]
    NoSuchInterface(String),
    /// The netlink socket could not be opened or used.
    #[error("netlink socket: {0}")]
    Socket(#[source] io::Error),
    /// The kernel refused a request.
    #[error("{what} failed: {source}")]
    Kernel {
        /// The request.
        what: &'static str,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
    /// A message from the kernel could not be decoded.
    #[error("undecodable netlink message: {0}")]
    Decode(String),
    /// Notifications were lost (the socket's buffer overran): dump again.
    #[error("neighbour notifications were lost (socket buffer overrun); dump the table again")]
    EventsLost,
}
