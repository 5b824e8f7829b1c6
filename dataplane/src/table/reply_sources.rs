//! Which service a backend's packet answers when no connection says so.
//!
//! A backend's reply normally finds its connection. When it does not —
//! the connection was evicted, expired, or made by another gateway of a
//! fleet — the rules may still name exactly one service the reply can
//! belong to: the only service with a backend at that (protocol, address,
//! port). Then it can be turned back into the service's VIP and port
//! without any state. A backend shared by several services is ambiguous:
//! no choice of VIP could be known right.
//!
//! [`ReplySources`] is that map, compiled with each snapshot from its
//! endpoints (draining and down backends included: their connections
//! still reply), and the next hops towards clients the static and learned
//! neighbours give, where a stateless reply is sent.

use hashbrown::HashMap;

use super::snapshot::{Endpoint, EndpointId, ServiceId};

/// What the rules say about one backend (protocol, address, port).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplySource {
    /// Exactly one service has a backend here: this endpoint.
    One(EndpointId),
    /// Several services have a backend here.
    Shared,
}

/// (protocol, backend address, backend port).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct SourceKey {
    address: u128,
    port: u16,
    protocol: u8,
}

/// Backends by (protocol, address, port), and next hops by address.
#[derive(Debug, Default)]
pub struct ReplySources {
    sources: HashMap<SourceKey, ReplySource>,
    next_hops: HashMap<u128, ([u8; 6], u16)>,
}

impl ReplySources {
    /// The map of `endpoints` (indexed by endpoint id; each with its
    /// service's protocol, from `protocol_of`), and the next hops
    /// (address, MAC, interface index) of the neighbours.
    pub(super) fn build<'a>(
        endpoints: impl Iterator<Item = (EndpointId, &'a Endpoint)>,
        protocol_of: impl Fn(ServiceId) -> Option<u8>,
        next_hops: impl Iterator<Item = ([u8; 16], [u8; 6], u16)>,
    ) -> ReplySources {
        let mut sources = HashMap::new();
        for (id, endpoint) in endpoints {
            let Some(protocol) = protocol_of(endpoint.service) else {
                continue;
            };
            let key = SourceKey {
                address: u128::from_be_bytes(endpoint.address),
                port: endpoint.port,
                protocol,
            };
            sources
                .entry(key)
                .and_modify(|source| *source = ReplySource::Shared)
                .or_insert(ReplySource::One(id));
        }
        let next_hops = next_hops
            .map(|(address, mac, port)| (u128::from_be_bytes(address), (mac, port)))
            .collect();
        ReplySources { sources, next_hops }
    }

    /// This map with the endpoints `gone` taken out and `added` put in
    /// (each with its service's protocol), and the next hops `next_hops`
    /// (as [`ReplySources::build`] takes them): what
    /// [`ReplySources::build`] makes of the endpoints after the change,
    /// at a cost that follows the change. A source `gone` leaves shared
    /// is decided again from `all`, the endpoints after the change
    /// (walked only then, which takes a backend of several services).
    pub(super) fn patched<'a>(
        &self,
        gone: impl Iterator<Item = (EndpointId, u8, [u8; 16], u16)>,
        added: impl Iterator<Item = (EndpointId, u8, [u8; 16], u16)>,
        all: impl FnOnce() -> Vec<(EndpointId, u8, &'a Endpoint)>,
        next_hops: impl Iterator<Item = ([u8; 16], [u8; 6], u16)>,
    ) -> ReplySources {
        let mut next = ReplySources {
            sources: self.sources.clone(),
            next_hops: next_hops
                .map(|(address, mac, port)| (u128::from_be_bytes(address), (mac, port)))
                .collect(),
        };
        let mut undecided: hashbrown::HashSet<SourceKey> = hashbrown::HashSet::new();
        for (id, protocol, address, port) in gone {
            let key = SourceKey {
                address: u128::from_be_bytes(address),
                port,
                protocol,
            };
            match next.sources.get(&key) {
                Some(ReplySource::One(one)) if *one == id => {
                    next.sources.remove(&key);
                }
                Some(ReplySource::Shared) => {
                    undecided.insert(key);
                }
                _ => {}
            }
        }
        if !undecided.is_empty() {
            for key in &undecided {
                next.sources.remove(key);
            }
            for (id, protocol, endpoint) in all() {
                let key = SourceKey {
                    address: u128::from_be_bytes(endpoint.address),
                    port: endpoint.port,
                    protocol,
                };
                if undecided.contains(&key) {
                    next.sources
                        .entry(key)
                        .and_modify(|source| *source = ReplySource::Shared)
                        .or_insert(ReplySource::One(id));
                }
            }
        }
        // The walk above saw `added` at the sources it decided.
        next.with_added(added, &undecided)
    }

    /// Puts in `added`, but not at `decided` (sources already decided
    /// from every endpoint).
    fn with_added(
        mut self,
        added: impl Iterator<Item = (EndpointId, u8, [u8; 16], u16)>,
        decided: &hashbrown::HashSet<SourceKey>,
    ) -> ReplySources {
        for (id, protocol, address, port) in added {
            let key = SourceKey {
                address: u128::from_be_bytes(address),
                port,
                protocol,
            };
            if decided.contains(&key) {
                continue;
            }
            self.sources
                .entry(key)
                .and_modify(|source| *source = ReplySource::Shared)
                .or_insert(ReplySource::One(id));
        }
        self
    }

    /// What the rules say about a packet from `address` and `port` over
    /// `protocol`: `None` if no backend is there.
    #[inline]
    pub fn lookup(&self, protocol: u8, address: &[u8; 16], port: u16) -> Option<ReplySource> {
        let key = SourceKey {
            address: u128::from_be_bytes(*address),
            port,
            protocol,
        };
        self.sources.get(&key).copied()
    }

    /// The MAC and interface index of the neighbour at `address`, if one
    /// is known (static, or learned from the kernel).
    #[inline]
    pub fn next_hop(&self, address: &[u8; 16]) -> Option<([u8; 6], u16)> {
        self.next_hops.get(&u128::from_be_bytes(*address)).copied()
    }

    /// How many backends (protocol, address, port) the map holds.
    pub fn len(&self) -> usize {
        self.sources.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }
}
