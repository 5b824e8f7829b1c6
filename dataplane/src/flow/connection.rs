//! One tracked connection and its handle.

use super::state::{Direction, FlowState};
use crate::wire::rewrite::EndpointDeltas;
use crate::wire::FiveTuple;

/// A handle to a connection in a [`FlowTable`](super::FlowTable).
///
/// Valid until the table's next insert, remove or expire; a stale handle
/// never panics (it reads a dead or reused record).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct ConnId(pub(super) u32);

impl ConnId {
    /// No connection: what a refused insert answers.
    pub const NONE: ConnId = ConnId(u32::MAX);

    /// Whether this names no connection.
    pub fn is_none(self) -> bool {
        self == ConnId::NONE
    }

    /// The record's position in the table (for logs and listings).
    pub fn index(self) -> u32 {
        self.0
    }
}

/// A DNAT connection: the client's tuple, the backend it was given, and
/// what replies need to get back to the client.
///
/// One record serves both directions: it is found by the client tuple
/// (client → VIP) and by the reply tuple (backend → client).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Connection {
    /// The tuple as the client sent it (dst = VIP, dst_port = service port).
    pub client: FiveTuple,
    /// The backend's address (IPv4-mapped for IPv4).
    pub backend_addr: [u8; 16],
    /// The backend's port.
    pub backend_port: u16,
    /// EndpointId in the snapshot the connection was scheduled with.
    pub endpoint: u32,
    /// Source MAC of the client's frames: replies are sent there.
    pub client_mac: [u8; 6],
    /// Port index the client's frames arrive on: replies leave there.
    pub client_ingress: u16,
    /// Where the connection is in its life; decides its idle timeout.
    pub state: FlowState,
    /// When a packet of either direction was last seen. A table keeps it
    /// to the even nanosecond below: bit 0 is its eviction's clock-hand
    /// mark ("not seen since the hand passed").
    pub last_seen_ns: u64,
}

/// The checksum changes of a connection's two rewrites of an IPv4
/// packet, worked out when the table records it, so that a packet of it
/// only adds them ([`EndpointDeltas`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct RewriteDeltas {
    /// A client's packet: the VIP and service port become the backend's.
    pub to_backend: EndpointDeltas,
    /// A backend's reply: its address and port become the VIP's.
    pub to_client: EndpointDeltas,
}

impl Connection {
    /// Whether `other` is the same connection: the same client tuple to
    /// the same backend through the same endpoint.
    pub fn is_same_as(&self, other: &Connection) -> bool {
        self.client == other.client
            && self.backend_addr == other.backend_addr
            && self.backend_port == other.backend_port
            && self.endpoint == other.endpoint
    }

    /// Whether `other` is the same connection in the same state, from the
    /// same client MAC on the same port (all but the times).
    pub fn same_condition(&self, other: &Connection) -> bool {
        self.is_same_as(other)
            && self.client_mac == other.client_mac
            && self.client_ingress == other.client_ingress
            && self.state == other.state
    }
    /// The checksum changes of this connection's two rewrites.
    pub fn rewrite_deltas(&self) -> RewriteDeltas {
        let (vip, vip_port) = (&self.client.dst, self.client.dst_port);
        let (backend, backend_port) = (&self.backend_addr, self.backend_port);
        RewriteDeltas {
            to_backend: EndpointDeltas::v4(vip, vip_port, backend, backend_port),
            to_client: EndpointDeltas::v4(backend, backend_port, vip, vip_port),
        }
    }

    /// The tuple of the backend's replies: (protocol, backend → client).
    #[inline]
    pub fn reply_tuple(&self) -> FiveTuple {
        FiveTuple {
            src: self.backend_addr,
            dst: self.client.src,
            src_port: self.backend_port,
            dst_port: self.client.src_port,
            protocol: self.client.protocol,
        }
    }

    /// Whether the reply tuple is the client tuple (`reply_tuple() ==
    /// client`): a degenerate connection, indexed once. The ports first,
    /// which differ for nearly every connection, so the addresses are
    /// seldom compared.
    #[inline]
    pub(super) fn tuples_coincide(&self) -> bool {
        let c = &self.client;
        self.backend_port == c.src_port
            && c.src_port == c.dst_port
            && self.backend_addr == c.src
            && c.src == c.dst
    }

    /// Whether `tuple` is this connection's tuple in `direction`, compared
    /// field by field without building the reply tuple.
    #[inline]
    pub(super) fn has_tuple(&self, tuple: &FiveTuple, direction: Direction) -> bool {
        match direction {
            Direction::FromClient => self.client == *tuple,
            Direction::FromBackend => {
                tuple.src == self.backend_addr
                    && tuple.dst == self.client.src
                    && tuple.src_port == self.backend_port
                    && tuple.dst_port == self.client.src_port
                    && tuple.protocol == self.client.protocol
            }
        }
    }

    /// The filler of records not in use.
    pub(super) fn vacant() -> Self {
        Connection {
            client: FiveTuple::default(),
            backend_addr: [0; 16],
            backend_port: 0,
            endpoint: 0,
            client_mac: [0; 6],
            client_ingress: 0,
            state: FlowState::Other,
            last_seen_ns: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{ip_proto, v4_mapped};

    fn conn() -> Connection {
        Connection {
            client: FiveTuple::v4([198, 18, 0, 1], [198, 18, 1, 10], 40000, 80, ip_proto::TCP),
            backend_addr: v4_mapped([198, 18, 2, 5]),
            backend_port: 8080,
            endpoint: 3,
            client_mac: [2, 0, 0, 0, 0, 1],
            client_ingress: 0,
            state: FlowState::TcpSyn,
            last_seen_ns: 0,
        }
    }

    #[test]
    fn reply_tuple_runs_from_backend_to_client() {
        let c = conn();
        let r = c.reply_tuple();
        assert_eq!(
            r,
            FiveTuple::v4([198, 18, 2, 5], [198, 18, 0, 1], 8080, 40000, ip_proto::TCP)
        );
        assert!(c.has_tuple(&r, Direction::FromBackend));
        assert!(!c.has_tuple(&r, Direction::FromClient));
        assert!(c.has_tuple(&c.client, Direction::FromClient));
        assert!(!c.has_tuple(&c.client, Direction::FromBackend));
    }

    #[test]
    fn has_tuple_checks_every_field_of_the_reply() {
        let c = conn();
        let r = c.reply_tuple();
        let variants = [
            FiveTuple {
                src: v4_mapped([198, 18, 2, 6]),
                ..r
            },
            FiveTuple {
                dst: v4_mapped([198, 18, 0, 2]),
                ..r
            },
            FiveTuple {
                src_port: 8081,
                ..r
            },
            FiveTuple {
                dst_port: 40001,
                ..r
            },
            FiveTuple {
                protocol: ip_proto::UDP,
                ..r
            },
        ];
        for v in variants {
            assert!(!c.has_tuple(&v, Direction::FromBackend), "{v:?}");
        }
    }

    proptest::proptest! {
        /// Addresses and ports from two values each, so that every way
        /// of coinciding or not comes up.
        #[test]
        fn tuples_coincide_exactly_when_the_reply_tuple_is_the_client_tuple(
            fields in proptest::array::uniform4(0..2u8),
            ports in proptest::array::uniform3(0..2u16),
        ) {
            let addr = |i: u8| v4_mapped([198, 18, 0, i]);
            let c = Connection {
                client: FiveTuple {
                    src: addr(fields[0]),
                    dst: addr(fields[1]),
                    src_port: ports[0],
                    dst_port: ports[1],
                    protocol: if fields[3] == 0 { ip_proto::TCP } else { ip_proto::UDP },
                },
                backend_addr: addr(fields[2]),
                backend_port: ports[2],
                ..conn()
            };
            proptest::prop_assert_eq!(c.tuples_coincide(), c.reply_tuple() == c.client);
        }
    }
}
