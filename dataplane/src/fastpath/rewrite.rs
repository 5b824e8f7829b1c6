//! The two entries of a connection, from its record and the snapshot:
//! exactly what the pipeline writes on a packet of each direction.

use super::layout::{Direction, DirectionRewrite, SeqTranslation};
use crate::flow::Connection;
use crate::synproxy::SeqOffset;
use crate::table::{PortVlan, Snapshot};
use crate::wire::ip_proto;

/// Connection `conn`'s entries, client → VIP first, then backend →
/// client; `None` when the pipeline would not forward its packets as they
/// are (its backend is gone or changed, no neighbour MAC, an interface
/// without a MAC), when its packets need the worker's look at the
/// backend's liveness (a backend the snapshot watches: down, or kept alive
/// by heartbeats, in a service that acts on dead backends), or for what
/// the fast path does not carry (protocols other than TCP and UDP, a
/// connection whose two tuples are one, a connection through an interface
/// with a VLAN setting).
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
        .filter(|ep| ep.is_plain(&conn.backend_addr, conn.backend_port))?;
    // Tags are the workers' to take off and put on: a connection through
    // an interface with a VLAN setting stays with them.
    let vlans = snapshot.vlans();
    if vlans.configured()
        && (*vlans.port(conn.client_ingress) != PortVlan::default()
            || *vlans.port(backend.egress_port) != PortVlan::default())
    {
        return None;
    }
    let next_hop = backend.next_hop_mac?;
    let to_backend = Direction {
        tuple: conn.client,
        ingress_port: conn.client_ingress,
        rewrite_dst: true,
        new_addr: conn.backend_addr,
        new_port: conn.backend_port,
        eth_dst: next_hop,
        eth_src: backend.egress_mac?,
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

/// A SYN-proxied connection's entries: `entries`
/// ([`connection_rewrites`]) with the translation of `offset` — toward the
/// backend the acknowledgement number and TSecr less the offsets, toward
/// the client the sequence number and TSval plus them and the window
/// rescaled from the backend's scale to the client's.
pub fn synproxy_rewrites(
    entries: [DirectionRewrite; 2],
    offset: &SeqOffset,
) -> [DirectionRewrite; 2] {
    let [to_backend, to_client] = entries;
    [
        to_backend.with_synproxy(SeqTranslation {
            seq_add: offset.seq.wrapping_neg(),
            ts_add: offset.ts.wrapping_neg(),
            ..SeqTranslation::default()
        }),
        to_client.with_synproxy(SeqTranslation {
            seq_add: offset.seq,
            ts_add: offset.ts,
            wscale_backend: offset.backend_wscale.min(14),
            wscale_client: offset.client_wscale.min(14),
        }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::FlowState;
    use crate::rules;
    use crate::wire::{v4_mapped, FiveTuple};

    /// One TCP service over two backends with `on_backend_down = POLICY`
    /// (one of two down is no panic: the service still acts on health).
    fn snapshot(policy: &str, previous: Option<&Snapshot>) -> Snapshot {
        let text = format!(
            "[[interfaces]]\nname = \"c\"\nmac = \"02:00:00:00:00:01\"\n\
             [[interfaces]]\nname = \"b\"\nmac = \"02:00:00:00:01:01\"\n\
             [[neighbours]]\naddress = \"198.18.1.11\"\nmac = \"02:00:00:00:01:11\"\ninterface = \"b\"\n\
             [[services]]\nname = \"web\"\nprotocol = \"tcp\"\nvip = \"198.18.100.10\"\nport = 80\n\
             on_backend_down = \"{policy}\"\n\
             [[services.backends]]\naddress = \"198.18.1.11\"\nport = 8080\n\
             [[services.backends]]\naddress = \"198.18.1.12\"\nport = 8080\n"
        );
        Snapshot::build(&rules::load_str(&text, "t.toml").unwrap(), previous)
    }

    fn connection(snapshot: &Snapshot) -> Connection {
        let (_, web) = snapshot.services().next().unwrap();
        Connection {
            client: FiveTuple::v4(
                [198, 18, 0, 2],
                [198, 18, 100, 10],
                40000,
                80,
                ip_proto::TCP,
            ),
            backend_addr: v4_mapped([198, 18, 1, 11]),
            backend_port: 8080,
            endpoint: *web
                .endpoints()
                .iter()
                .find(|&&e| snapshot.endpoint(e).unwrap().address == v4_mapped([198, 18, 1, 11]))
                .unwrap(),
            client_mac: [2, 0, 0, 0, 0, 2],
            client_ingress: 0,
            state: FlowState::TcpEstablished,
            last_seen_ns: 0,
        }
    }

    #[test]
    fn a_backend_the_snapshot_watches_is_left_to_the_worker() {
        for (policy, carried_when_down) in [("keep", true), ("drop", false), ("reset", false)] {
            let alive = snapshot(policy, None);
            let conn = connection(&alive);
            assert!(
                connection_rewrites(&conn, &alive).is_some(),
                "{policy}: alive"
            );
            // The backend goes down; the rebuild that follows flags it
            // where the service acts on dead backends, and its packets go
            // to the worker, which applies the policy.
            alive.liveness().set_up(conn.endpoint, false).unwrap();
            let rebuilt = snapshot(policy, Some(&alive));
            assert_eq!(
                connection_rewrites(&conn, &rebuilt).is_some(),
                carried_when_down,
                "{policy}: down"
            );
        }
    }
}
