//! The two entries of a connection, from its record and the snapshot:
//! exactly what the pipeline writes on a packet of each direction.

use super::layout::{Direction, DirectionRewrite};
use crate::flow::Connection;
use crate::table::Snapshot;
use crate::wire::ip_proto;

/// Connection `conn`'s entries, client → VIP first, then backend →
/// client; `None` when the pipeline would not forward its packets as they
/// are (its backend is gone or changed, no neighbour MAC, an interface
/// without a MAC), or for what the fast path does not carry (protocols
/// other than TCP and UDP, a connection whose two tuples are one).
pub fn connection_rewrites(
    conn: &Connection,
    snapshot: &Snapshot,
) -> Option<[DirectionRewrite; 2]> {
    let protocol = conn.client.protocol;
    if protocol != ip_proto::TCP && protocol != ip_proto::UDP {
        return None;
    }
    let reply = conn.reply_tuple();
    if reply == conn.client {
        return None;
    }
    let backend = snapshot
        .endpoint(conn.endpoint)
        .filter(|ep| ep.address == conn.backend_addr && ep.port == conn.backend_port)?;
    let next_hop = backend.next_hop_mac?;
    let to_backend = Direction {
        tuple: conn.client,
        ingress_port: conn.client_ingress,
        rewrite_dst: true,
        new_addr: conn.backend_addr,
        new_port: conn.backend_port,
        eth_dst: next_hop,
        eth_src: snapshot.interface_mac(backend.egress_port)?,
        egress_port: backend.egress_port,
        client_mac: conn.client_mac,
    };
    let to_client = Direction {
        tuple: reply,
        ingress_port: backend.egress_port,
        rewrite_dst: false,
        new_addr: conn.client.dst,
        new_port: conn.client.dst_port,
        eth_dst: conn.client_mac,
        eth_src: snapshot.interface_mac(conn.client_ingress)?,
        egress_port: conn.client_ingress,
        client_mac: [0; 6],
    };
    Some([
        DirectionRewrite::new(&to_backend),
        DirectionRewrite::new(&to_client),
    ])
}
