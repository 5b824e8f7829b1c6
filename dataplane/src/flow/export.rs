//! Listing a connection table a little at a time, for `flowgatectl flows`.
//!
//! The table belongs to its worker, so a listing has to be made on the
//! worker's thread, between its polls, without costing the polls their
//! time. [`FlowTable::export`](super::FlowTable::export) therefore does a
//! bounded step: it looks at a fixed number of record positions from a
//! cursor and copies the connections a [`FlowFilter`] keeps, as plain
//! [`FlowRecord`]s, into a [`FlowRecords`] buffer that was allocated
//! elsewhere and never grows. Names, strings and sorting are for whoever
//! reads the records.
//!
//! Records never move in the table, so a cursor over positions stays
//! meaningful while the table changes between steps: a connection that is
//! live for the whole of a listing is copied exactly once; one opened or
//! closed during it may or may not be.

use super::state::FlowState;
use super::Connection;
use crate::wire::FiveTuple;

/// One connection as a listing needs it: plain values, no strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowRecord {
    /// The tuple as the client sent it (dst = VIP, dst_port = service port).
    pub client: FiveTuple,
    /// The backend's address (IPv4-mapped for IPv4).
    pub backend_addr: [u8; 16],
    /// The backend's port.
    pub backend_port: u16,
    /// The endpoint id it was scheduled to.
    pub endpoint: u32,
    /// Where the connection is in its life.
    pub state: FlowState,
    /// When a packet of either direction was last seen (the worker's clock).
    pub last_seen_ns: u64,
}

impl FlowRecord {
    /// The listing's view of `connection`.
    #[inline]
    pub fn of(connection: &Connection) -> FlowRecord {
        FlowRecord {
            client: connection.client,
            backend_addr: connection.backend_addr,
            backend_port: connection.backend_port,
            endpoint: connection.endpoint,
            state: connection.state,
            last_seen_ns: connection.last_seen_ns,
        }
    }
}

/// Which connections a listing keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowFilter {
    /// Every connection.
    All,
    /// The connections clients opened to one (protocol, address, port):
    /// one service's, whatever endpoint they were given.
    To {
        /// IP protocol number.
        protocol: u8,
        /// The address the clients sent to (IPv4-mapped for IPv4).
        address: [u8; 16],
        /// The port the clients sent to.
        port: u16,
    },
}

impl FlowFilter {
    /// Whether the listing keeps `connection`.
    #[inline]
    pub fn keeps(&self, connection: &Connection) -> bool {
        match self {
            FlowFilter::All => true,
            FlowFilter::To {
                protocol,
                address,
                port,
            } => {
                let c = &connection.client;
                c.dst_port == *port && c.protocol == *protocol && c.dst == *address
            }
        }
    }
}

/// Where a listing is in a table: the next record position to look at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExportCursor {
    pub(super) next: usize,
    pub(super) done: bool,
}

impl ExportCursor {
    /// A cursor at the table's first record.
    pub fn start() -> ExportCursor {
        ExportCursor::default()
    }

    /// Whether the listing has looked at every record of the table.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Record positions looked at so far.
    pub fn position(&self) -> usize {
        self.next
    }
}

/// A buffer of records with a fixed capacity: allocated once by whoever
/// asks for a listing, filled without allocating by the table's owner.
#[derive(Debug)]
pub struct FlowRecords {
    records: Vec<FlowRecord>,
    /// How many it takes before it is full (at most its capacity).
    room: usize,
    capacity: usize,
}

impl FlowRecords {
    /// An empty buffer for `capacity` records (at least 1); the only
    /// allocation it ever makes.
    pub fn with_capacity(capacity: usize) -> FlowRecords {
        let capacity = capacity.max(1);
        FlowRecords {
            records: Vec::with_capacity(capacity),
            room: capacity,
            capacity,
        }
    }

    /// Empties the buffer and lets it take `room` records (at most its
    /// capacity) before it is full.
    pub fn reset(&mut self, room: usize) {
        self.records.clear();
        self.room = room.min(self.capacity);
    }

    /// Appends `record` unless the buffer is full; never allocates.
    #[inline]
    pub fn push(&mut self, record: FlowRecord) -> bool {
        if self.is_full() {
            return false;
        }
        self.records.push(record);
        true
    }

    /// Whether it takes no more records.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.records.len() >= self.room
    }

    /// The records taken so far.
    pub fn as_slice(&self) -> &[FlowRecord] {
        &self.records
    }

    /// How many records it holds.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The most records it can ever hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{ip_proto, v4_mapped};

    fn conn(dst: [u8; 4], port: u16, protocol: u8) -> Connection {
        Connection {
            client: FiveTuple::v4([198, 18, 0, 1], dst, 40_000, port, protocol),
            backend_addr: v4_mapped([198, 18, 2, 5]),
            backend_port: 8080,
            endpoint: 3,
            client_mac: [2, 0, 0, 0, 0, 1],
            client_ingress: 0,
            state: FlowState::TcpEstablished,
            last_seen_ns: 7,
        }
    }

    #[test]
    fn a_service_filter_keeps_only_its_protocol_address_and_port() {
        let filter = FlowFilter::To {
            protocol: ip_proto::TCP,
            address: v4_mapped([198, 18, 1, 10]),
            port: 80,
        };
        assert!(filter.keeps(&conn([198, 18, 1, 10], 80, ip_proto::TCP)));
        assert!(!filter.keeps(&conn([198, 18, 1, 11], 80, ip_proto::TCP)));
        assert!(!filter.keeps(&conn([198, 18, 1, 10], 81, ip_proto::TCP)));
        assert!(!filter.keeps(&conn([198, 18, 1, 10], 80, ip_proto::UDP)));
        assert!(FlowFilter::All.keeps(&conn([198, 18, 1, 11], 81, ip_proto::UDP)));
    }

    #[test]
    fn a_record_carries_what_a_listing_shows() {
        let c = conn([198, 18, 1, 10], 80, ip_proto::TCP);
        let r = FlowRecord::of(&c);
        assert_eq!(r.client, c.client);
        assert_eq!((r.backend_addr, r.backend_port), (c.backend_addr, 8080));
        assert_eq!((r.endpoint, r.state, r.last_seen_ns), (3, c.state, 7));
    }

    #[test]
    fn a_buffer_takes_no_more_than_its_room_and_never_grows() {
        let r = FlowRecord::of(&conn([198, 18, 1, 10], 80, ip_proto::TCP));
        let mut b = FlowRecords::with_capacity(3);
        assert!(b.push(r) && b.push(r) && b.push(r));
        assert!(b.is_full());
        assert!(!b.push(r));
        assert_eq!(b.len(), 3);
        b.reset(2);
        assert!(b.is_empty());
        assert!(b.push(r) && b.push(r));
        assert!(!b.push(r), "room 2");
        b.reset(10);
        assert!(
            b.push(r) && b.push(r) && b.push(r) && !b.push(r),
            "room capped at 3"
        );
        assert_eq!(b.capacity(), 3);
        assert_eq!(FlowRecords::with_capacity(0).capacity(), 1);
    }
}
