//! The common packet's lane: a packet of an established connection,
//! either way, in the common frame (untagged IPv4 with no options, TCP or
//! UDP), forwarded from its bytes with no parse result
//! ([`wire::PlainV4Frame`]), the connection taken from the warm pass's
//! hint with no bucket scan.
//!
//! The lane takes a packet only where nothing about it is unusual, and
//! checks all of that before it writes anything; any other packet goes
//! the general way, which would decide a packet the lane takes the same
//! (the property tests hold the two to that). What the lane does not
//! take: a frame without a hint, a TTL below 2, a connection idle past
//! its timeout or with the SYN proxy in it; a client's packet whose
//! endpoint is gone, changed or flagged for a look at its liveness, or
//! whose MACs the snapshot does not know;
//! and any frame not addressed to the gateway or on a port that refuses
//! untagged frames.
//!
//! The batch loop tries the lane first for every common frame with a
//! hint, and counts what it takes once per batch.

use super::{ingress, Context, Pipeline};
use crate::flow::{Direction, LookupHint};
use crate::wire::PlainV4Frame;

impl Pipeline {
    /// The egress port of `frame` (the common frame) if it is a packet of
    /// an established connection that `hint` names, either way, addressed
    /// to the gateway on a port that takes untagged frames: the frame is
    /// forwarded, its connection observed and counted, and the caller
    /// counts the packet forwarded and a flow hit. `None`, with nothing
    /// changed, for anything else.
    #[inline(always)]
    pub(super) fn plain_established(
        &mut self,
        frame: &mut [u8],
        hint: LookupHint,
        cx: &mut Context<'_>,
    ) -> Option<u16> {
        if !hint.is_some()
            || cx.refuse_untagged
            || ingress::destination(frame, cx.own_mac) != ingress::Destination::Own
        {
            return None;
        }
        if hint.direction() == Direction::FromBackend {
            return plain_reply(frame, hint, cx);
        }
        let bytes = frame.len() as u64;
        let plain = PlainV4Frame::of(frame)?;
        let from_client = Direction::FromClient;
        let (id, conn) = cx
            .flows
            .established(hint, from_client, &plain.tuple(), cx.now_ns)?;
        // Gone, changed, or flagged for a look at its liveness: the port
        // compare made anyway tests the flag.
        let backend = cx
            .snapshot
            .endpoint(conn.endpoint)
            .filter(|ep| ep.is_plain(&conn.backend_addr, conn.backend_port))?;
        let macs = backend.egress_macs.as_ref()?;
        // Observed, counted, and the client's router followed if it
        // changed (failover).
        let (flags, client_mac) = (plain.tcp_flags(), plain.source_mac());
        let deltas = cx
            .flows
            .forward_from_client(id, flags, client_mac, bytes, cx.now_ns);
        plain.forward_dst(macs, &backend.address, backend.port, deltas);
        Some(backend.egress_port)
    }
}

/// [`Pipeline::plain_established`] of a backend's reply (`hint` is for
/// the reply direction), sent as the general path sends it: observed and
/// counted, from the client's interface (the frame's own destination MAC
/// where the rules name none) to the client's router, from the VIP and
/// service port. Returns the client's port. Out of line: a client's
/// packet keeps the lane's registers.
#[inline(never)]
fn plain_reply(frame: &mut [u8], hint: LookupHint, cx: &mut Context<'_>) -> Option<u16> {
    let bytes = frame.len() as u64;
    let plain = PlainV4Frame::of(frame)?;
    let from_backend = Direction::FromBackend;
    let (id, _) = cx
        .flows
        .established(hint, from_backend, &plain.tuple(), cx.now_ns)?;
    let flows = &mut *cx.flows;
    flows.observe(id, Direction::FromBackend, plain.tcp_flags(), cx.now_ns);
    let conn = flows.get(id);
    flows.count_packet(conn.endpoint, bytes);
    let src_mac = cx
        .snapshot
        .interface_mac(conn.client_ingress)
        .unwrap_or_else(|| plain.destination_mac());
    let mut macs = [0u8; 12];
    macs[..6].copy_from_slice(&conn.client_mac);
    macs[6..].copy_from_slice(&src_mac);
    let (vip, vip_port) = (conn.client.dst, conn.client.dst_port);
    let client_port = conn.client_ingress;
    let deltas = flows.rewrite_deltas(id).to_client;
    plain.forward_src(&macs, &vip, vip_port, deltas);
    Some(client_port)
}
