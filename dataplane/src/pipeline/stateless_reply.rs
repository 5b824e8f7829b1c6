//! A backend's reply with no connection, translated by the rules alone.
//!
//! A reply whose connection the table does not hold — evicted, expired, or
//! made by another gateway of a fleet — used to be passed to the kernel,
//! which cannot un-NAT it (and under AF_XDP cannot even receive it back).
//! Now, when the rules make the answer unambiguous — exactly one service
//! has a backend at the reply's (protocol, source address, source port)
//! ([`ReplySources`](crate::table::ReplySources)) — the reply is turned
//! back into one from that service's VIP and port, as the connection would
//! have done, with no state made. It is sent to the client's neighbour
//! entry (static, or learned from the kernel). A client with no neighbour
//! entry is behind a router: a reply that came in on the clients' port
//! (port 0) came from that router — in a fleet, the router spreading the
//! backends' replies over the gateways by ECMP — so it goes back out of
//! port 0 to the MAC it came from, and the router takes it on to the
//! client. Any other reply with no way to its client is dropped as
//! `no_neighbour`. A reply from a backend several services
//! share is dropped as `unknown_reply`: no VIP could be known to be the
//! right one. Packets from anything that is not a backend are not ours
//! and are passed, as before.
//!
//! This runs only after the connection lookup and the service lookup both
//! missed, so packets of known connections never pay for it. With the
//! kernel fast path on, a reply the cache misses goes to the worker, which
//! decides it here.

use super::{egress_mac, source_mac, DropReason, Pipeline, Verdict};
use crate::table::{ReplySource, Snapshot};
use crate::wire::{self, PacketMeta};

/// The clients' port: the first interface of the config.
const CLIENTS_PORT: u16 = 0;

impl Pipeline {
    /// A packet that matched no connection and no service: a backend's
    /// reply translated without state, dropped, or passed (see the
    /// module docs). `ingress` is the port it came in on.
    #[cold]
    #[inline(never)]
    pub(super) fn stateless_reply(
        &mut self,
        frame: &mut [u8],
        meta: &PacketMeta,
        snapshot: &Snapshot,
        ingress: u16,
    ) -> Verdict {
        let t = &meta.tuple;
        let sources = snapshot.reply_sources();
        let id = match sources.lookup(t.protocol, &t.src, t.src_port) {
            None => return Verdict::Pass,
            Some(ReplySource::Shared) => return Verdict::Drop(DropReason::UnknownReply),
            Some(ReplySource::One(id)) => id,
        };
        let service = snapshot
            .endpoint(id)
            .and_then(|endpoint| snapshot.service(endpoint.service));
        let Some(service) = service else {
            return Verdict::Drop(DropReason::UnknownReply);
        };
        if meta.ttl <= 1 {
            return Verdict::Drop(DropReason::TtlExpired);
        }
        let next_hop = sources
            .next_hop(&t.dst)
            .or_else(|| (ingress == CLIENTS_PORT).then(|| (source_mac(frame), ingress)));
        let Some((client_mac, port)) = next_hop else {
            return Verdict::Drop(DropReason::NoNeighbour);
        };
        let src_mac = egress_mac(frame, snapshot, port);
        wire::rewrite::set_macs(frame, src_mac, client_mac);
        wire::rewrite::rewrite_src(frame, meta, service.vip(), service.port());
        wire::rewrite::decrement_ttl(frame, meta);
        self.counters.stateless_replies.inc();
        Verdict::Transmit(port)
    }
}
