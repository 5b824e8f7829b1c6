//! ICMP errors about a connection, translated through the NAT.
//!
//! An error about a packet the gateway sent travels towards that packet's
//! source, which the NAT made. Untranslated it would tell its receiver of
//! a packet it never sent, and be ignored: a path-MTU limit on the backend
//! side would never reach the client. So an error the workers receive is
//! looked up by the packet it quotes (reversed: the quote is of a packet
//! the gateway sent, the table knows the direction it came from):
//!
//! - quoting client → backend (a packet sent to a backend): it came from
//!   the backend's side (the backend, or a router towards it) and goes to
//!   the client as an error about client → VIP — the quote's destination
//!   becomes the VIP and port, the outer source the VIP (as Linux's NAT
//!   and IPVS do: the client hears of its VIP, not of the backend side's
//!   routers), sent where the connection's replies go;
//! - quoting VIP → client (a reply the gateway sent): it came from the
//!   client's side and goes to the backend as an error about backend →
//!   client — the quote's source becomes the backend's address and port,
//!   the outer destination the backend — sent to the backend's next hop.
//!
//! The outer packet's TTL is decremented like any forwarded packet's.
//! Every checksum follows: the quoted IPv4 header's, the quoted TCP/UDP
//! checksum where it was quoted, the outer ICMP checksum (for ICMPv6 with
//! its pseudo-header's changed address) and the outer IPv4 header's
//! ([`wire::quoted`], [`wire::rewrite`]).
//!
//! An error whose quote names a VIP's service (quoting a reply from it) or
//! a backend (quoting a packet to it) but no connection of this gateway is
//! dropped as `unknown_icmp_error`: there is no one to translate it for,
//! and untranslated it would only mislead. Any other ICMP is not ours and
//! is passed to the kernel as before. Errors about errors, redirects and
//! parameter problems are not translated.

use super::{egress_mac, Context, DropReason, Pipeline, Verdict};
use crate::flow::Direction;
use crate::hash::table_hash;
use crate::wire::quoted::{self, QuotedEnd, QuotedPacket};
use crate::wire::{self, PacketMeta};

impl Pipeline {
    /// An ICMP error ([`quoted::is_translated_error`]) for no service:
    /// translated for the connection it quotes, dropped if it is about
    /// the gateway's traffic but no connection, otherwise passed.
    #[cold]
    #[inline(never)]
    pub(super) fn icmp_error(
        &mut self,
        frame: &mut [u8],
        meta: &PacketMeta,
        cx: &mut Context<'_>,
    ) -> Verdict {
        let Some(quote) = quoted::parse_quoted(frame, meta) else {
            return Verdict::Pass;
        };
        // The quote is of a packet the gateway sent; its connection was
        // found by the packets that came the other way.
        let about = quote.tuple.reversed();
        let hash = table_hash(&about);
        let found = cx.flows.lookup(&about, hash, cx.now_ns);
        if found.is_none() {
            return if is_about_ours(&quote, cx) {
                Verdict::Drop(DropReason::UnknownIcmpError)
            } else {
                Verdict::Pass
            };
        }
        if meta.ttl <= 1 {
            return Verdict::Drop(DropReason::TtlExpired);
        }
        let icmp_at = usize::from(meta.l4_offset);
        let snapshot = cx.snapshot;
        let verdict = match found {
            // The quote is client → backend: tell the client of its VIP.
            Some((id, Direction::FromBackend)) => {
                let conn = cx.flows.get(id);
                let (vip, port) = (conn.client.dst, conn.client.dst_port);
                let (ingress, client_mac) = (conn.client_ingress, conn.client_mac);
                let end = QuotedEnd::Destination;
                quoted::rewrite_quoted(frame, icmp_at, &quote, end, &vip, port);
                wire::rewrite::rewrite_src(frame, meta, &vip, 0);
                let src_mac = egress_mac(frame, snapshot, ingress);
                wire::rewrite::set_macs(frame, src_mac, client_mac);
                Verdict::Transmit(ingress)
            }
            // The quote is VIP → client: tell the backend of its reply.
            Some((id, Direction::FromClient)) => {
                let conn = cx.flows.get(id);
                let (addr, port) = (conn.backend_addr, conn.backend_port);
                let backend = snapshot
                    .endpoint(conn.endpoint)
                    .filter(|e| e.address == addr && e.port == port);
                let Some(backend) = backend else {
                    return Verdict::Drop(DropReason::UnknownIcmpError);
                };
                let Some(next_hop) = backend.next_hop_mac else {
                    return Verdict::Drop(DropReason::NoNeighbour);
                };
                let egress = backend.egress_port;
                let end = QuotedEnd::Source;
                quoted::rewrite_quoted(frame, icmp_at, &quote, end, &addr, port);
                wire::rewrite::rewrite_dst(frame, meta, &addr, 0);
                let src_mac = egress_mac(frame, snapshot, egress);
                wire::rewrite::set_macs(frame, src_mac, next_hop);
                Verdict::Transmit(egress)
            }
            None => return Verdict::Pass,
        };
        wire::rewrite::decrement_ttl(frame, meta);
        self.counters.icmp_errors_translated.inc();
        verdict
    }
}

/// Whether the quoted packet is one of the gateway's: a reply from a
/// service's VIP and port, or a packet to a backend. The XDP program
/// hands up the same errors, by the same two keys.
fn is_about_ours(quote: &QuotedPacket, cx: &Context<'_>) -> bool {
    let t = &quote.tuple;
    cx.snapshot
        .lookup_service(t.protocol, &t.src, t.src_port)
        .is_some()
        || cx
            .snapshot
            .reply_sources()
            .lookup(t.protocol, &t.dst, t.dst_port)
            .is_some()
}
