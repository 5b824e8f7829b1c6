//! The kernel's neighbour table: dumped, watched, and asked to resolve.

use std::collections::HashMap;
use std::net::IpAddr;

use netlink_packet_core::{NetlinkPayload, NLM_F_CREATE};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage,
    NeighbourState as RawState,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::socket::{Expect, NotificationSocket, RequestSocket};
use super::NeighError;

/// `RTNLGRP_NEIGH`: the multicast group of neighbour changes.
const RTNLGRP_NEIGH: u32 = 3;
/// Most datagrams one [`NeighbourWatcher::poll_changes`] reads, so a
/// storm of changes cannot hold the caller.
const MAX_DATAGRAMS_PER_POLL: usize = 256;

/// The state of a neighbour entry (the kernel's `NUD_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NeighbourState {
    /// Being resolved; no MAC yet.
    Incomplete,
    /// Resolved and recently confirmed.
    Reachable,
    /// Resolved, not confirmed lately; still used (and re-confirmed on use).
    Stale,
    /// Used while stale; waiting before probing.
    Delay,
    /// Being re-confirmed by unicast probes.
    Probe,
    /// Resolution failed.
    Failed,
    /// No resolution needed (the MAC is fixed or irrelevant).
    NoArp,
    /// Static, configured by an administrator.
    Permanent,
    /// No state.
    None,
    /// A state this crate does not know (the raw `NUD_*` bits).
    Other(u16),
}

impl NeighbourState {
    fn from_raw(state: RawState) -> NeighbourState {
        match state {
            RawState::Incomplete => NeighbourState::Incomplete,
            RawState::Reachable => NeighbourState::Reachable,
            RawState::Stale => NeighbourState::Stale,
            RawState::Delay => NeighbourState::Delay,
            RawState::Probe => NeighbourState::Probe,
            RawState::Failed => NeighbourState::Failed,
            RawState::Noarp => NeighbourState::NoArp,
            RawState::Permanent => NeighbourState::Permanent,
            RawState::None => NeighbourState::None,
            other => NeighbourState::Other(u16::from(other)),
        }
    }

    /// Whether an entry in this state holds a MAC frames may be sent to.
    pub fn has_valid_mac(self) -> bool {
        matches!(
            self,
            NeighbourState::Reachable
                | NeighbourState::Stale
                | NeighbourState::Delay
                | NeighbourState::Probe
                | NeighbourState::Permanent
                | NeighbourState::NoArp
        )
    }
}

/// One entry of the kernel's neighbour table (ARP or NDP).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelNeighbour {
    /// The interface it lives on.
    pub ifindex: u32,
    /// Its IP address.
    pub address: IpAddr,
    /// Its MAC; all zero when the entry has none (yet).
    pub mac: [u8; 6],
    /// The entry's state.
    pub state: NeighbourState,
}

impl KernelNeighbour {
    /// Whether frames may be sent to it: a state with a valid link address
    /// (reachable, stale, delay, probe, permanent, or no-ARP) and a MAC.
    pub fn is_usable(&self) -> bool {
        self.state.has_valid_mac() && self.mac != [0; 6]
    }

    /// The entry in a neighbour message; `None` for what is not an IPv4 or
    /// IPv6 neighbour (e.g. a bridge's forwarding entries).
    fn from_message(message: &NeighbourMessage) -> Option<KernelNeighbour> {
        if !matches!(
            message.header.family,
            AddressFamily::Inet | AddressFamily::Inet6
        ) {
            return None;
        }
        let mut address = None;
        let mut mac = [0u8; 6];
        for attribute in &message.attributes {
            match attribute {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => {
                    address = Some(IpAddr::V4(*a));
                }
                NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                    address = Some(IpAddr::V6(*a));
                }
                NeighbourAttribute::LinkLocalAddress(bytes) => {
                    if let Ok(m) = <[u8; 6]>::try_from(bytes.as_slice()) {
                        mac = m;
                    }
                }
                _ => {}
            }
        }
        Some(KernelNeighbour {
            ifindex: message.header.ifindex,
            address: address?,
            mac,
            state: NeighbourState::from_raw(message.header.state),
        })
    }
}

/// What happened to a neighbour entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NeighbourChange {
    /// An entry the watcher did not know appeared.
    Added,
    /// A known entry changed its MAC or state.
    Changed,
    /// An entry was deleted.
    Removed,
}

/// One change of the kernel's neighbour table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeighbourEvent {
    /// What happened.
    pub change: NeighbourChange,
    /// The entry as the kernel reported it with the change.
    pub neighbour: KernelNeighbour,
}

/// Watches the kernel's neighbour table of the network namespace it was
/// opened in.
///
/// Subscribes first, then dumps, so no change falls between the two: a
/// change that raced the dump shows up once more as an event. It remembers
/// the entries it has seen, to tell an added entry from a changed one and
/// to skip notifications that change nothing.
pub struct NeighbourWatcher {
    requests: RequestSocket,
    notifications: NotificationSocket,
    known: HashMap<(u32, IpAddr), KernelNeighbour>,
}

impl NeighbourWatcher {
    /// Opens the watcher in the calling thread's network namespace,
    /// subscribed to neighbour notifications on a non-blocking socket.
    pub fn open() -> Result<NeighbourWatcher, NeighError> {
        Ok(NeighbourWatcher {
            notifications: NotificationSocket::subscribe(RTNLGRP_NEIGH)?,
            requests: RequestSocket::open()?,
            known: HashMap::new(),
        })
    }

    /// Every IPv4 and IPv6 neighbour entry the kernel has now
    /// (RTM_GETNEIGH), whatever its state. Also resets what the watcher
    /// remembers, e.g. after [`NeighError::EventsLost`].
    pub fn dump(&mut self) -> Result<Vec<KernelNeighbour>, NeighError> {
        let replies = self.requests.request(
            RouteNetlinkMessage::GetNeighbour(NeighbourMessage::default()),
            0,
            Expect::Dump,
            "RTM_GETNEIGH",
        )?;
        let entries: Vec<KernelNeighbour> = replies
            .iter()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewNeighbour(m) => KernelNeighbour::from_message(m),
                _ => None,
            })
            .collect();
        self.known = entries
            .iter()
            .map(|n| ((n.ifindex, n.address), *n))
            .collect();
        Ok(entries)
    }

    /// Appends the changes notified since the last call to `out`, without
    /// blocking, and returns how many it appended. Reads at most a bounded
    /// number of notification batches per call; call again for more.
    ///
    /// [`NeighError::EventsLost`] means the kernel dropped notifications
    /// because they were not read fast enough: [`Self::dump`] again.
    pub fn poll_changes(&mut self, out: &mut Vec<NeighbourEvent>) -> Result<usize, NeighError> {
        let before = out.len();
        for _ in 0..MAX_DATAGRAMS_PER_POLL {
            let Some(messages) = self.notifications.next_datagram()? else {
                break;
            };
            for message in messages {
                // A notification this crate cannot decode is not ours to
                // report; the next dump has the entry if it matters.
                let Ok(message) = message else { continue };
                let NetlinkPayload::InnerMessage(inner) = message.payload else {
                    continue;
                };
                if let Some(event) = classify(&mut self.known, &inner) {
                    out.push(event);
                }
            }
        }
        Ok(out.len() - before)
    }

    /// Asks the kernel to resolve `address` on interface `ifindex`
    /// (RTM_NEWNEIGH with `NTF_USE`, creating the entry if needed: the
    /// kernel then sends ARP or neighbour solicitations as if a packet were
    /// waiting). Returns once the kernel has accepted the request; the
    /// result arrives as a change of the entry (see
    /// [`Self::poll_changes`]). An entry that is already usable is left as
    /// it is.
    pub fn resolve(&mut self, ifindex: u32, address: IpAddr) -> Result<(), NeighError> {
        let mut message = NeighbourMessage::default();
        message.header.family = match address {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        message.header.ifindex = ifindex;
        message.header.state = RawState::None;
        message.header.flags = NeighbourFlags::Use;
        message
            .attributes
            .push(NeighbourAttribute::Destination(match address {
                IpAddr::V4(a) => NeighbourAddress::Inet(a),
                IpAddr::V6(a) => NeighbourAddress::Inet6(a),
            }));
        self.requests.request(
            RouteNetlinkMessage::NewNeighbour(message),
            NLM_F_CREATE,
            Expect::Ack,
            "RTM_NEWNEIGH (resolve)",
        )?;
        Ok(())
    }
}

/// The event a notification means, given what is known; updates `known`.
/// `None` for what is not an IP neighbour or changes nothing.
fn classify(
    known: &mut HashMap<(u32, IpAddr), KernelNeighbour>,
    message: &RouteNetlinkMessage,
) -> Option<NeighbourEvent> {
    match message {
        RouteNetlinkMessage::NewNeighbour(m) => {
            let neighbour = KernelNeighbour::from_message(m)?;
            let change = match known.insert((neighbour.ifindex, neighbour.address), neighbour) {
                None => NeighbourChange::Added,
                Some(previous) if previous == neighbour => return None,
                Some(_) => NeighbourChange::Changed,
            };
            Some(NeighbourEvent { change, neighbour })
        }
        RouteNetlinkMessage::DelNeighbour(m) => {
            let neighbour = KernelNeighbour::from_message(m)?;
            known.remove(&(neighbour.ifindex, neighbour.address));
            Some(NeighbourEvent {
                change: NeighbourChange::Removed,
                neighbour,
            })
        }
        _ => None,
    }
}
