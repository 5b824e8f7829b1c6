//! The worker's half of the SYN proxy in the pipeline (see
//! [`crate::synproxy::proxy`] for the handshake): a cookie-valid ACK
//! opens the backend side, the backend's SYN-ACK completes it, and every
//! later segment of the connection is translated. All of it out of line:
//! a connection that is not proxied pays one bit test of its record per
//! packet ([`FlowTable::syn_proxy`]).

use super::{
    egress_mac, set_backend_macs, source_mac, to_backend, Context, DropReason, Pipeline, Verdict,
};
use crate::flow::{ConnId, Direction, FlowTable};
use crate::port::{Frame, FrameMemory};
use crate::synproxy::handshake::{is_marked, CookieAck};
use crate::synproxy::proxy::{
    backend_ack_header, backend_syn_header, client_window_header, replace_segment, Layout,
    ProxiedConnection, MAX_HEADER,
};
use crate::table::{Endpoint, EndpointId};
use crate::wire::{self, ip_proto, tcp_flags, PacketMeta, L3};

/// A frame that must grow once the batch is decided: its bytes from
/// `from` to `len` are `tail`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Grown {
    addr: usize,
    from: u32,
    len: u32,
    tail: [u8; MAX_HEADER],
    tail_len: u8,
}

/// Gives each frame in `grown` its new length and the bytes past its old
/// end; `grown` is left empty.
#[cold]
pub(super) fn grow_frames<M: FrameMemory + ?Sized>(
    grown: &mut Vec<Grown>,
    memory: &mut M,
    frames: &mut [Frame],
) {
    for frame in frames.iter_mut() {
        let at = memory.frame(frame).as_ptr() as usize;
        let Some(g) = grown.iter().find(|g| g.addr == at) else {
            continue;
        };
        let old = frame.len();
        frame.set_len(g.len);
        let bytes = memory.frame_mut(frame);
        match (
            bytes.get_mut(g.from as usize..g.len as usize),
            g.tail.get(..usize::from(g.tail_len)),
        ) {
            (Some(dst), Some(src)) if dst.len() == src.len() => dst.copy_from_slice(src),
            // No room in its slot (never with frames of 2 KiB): the frame
            // is left as it was.
            _ => frame.set_len(old),
        }
    }
    grown.clear();
}

/// Whether `frame` is a cookie-valid ACK: a TCP segment with ACK alone
/// among SYN, ACK, FIN and RST, marked by the XDP program.
#[inline]
pub(super) fn is_cookie_ack(frame: &[u8], meta: &PacketMeta) -> bool {
    let flags = tcp_flags::SYN | tcp_flags::ACK | tcp_flags::FIN | tcp_flags::RST;
    meta.tuple.protocol == ip_proto::TCP
        && meta.tcp_flags & flags == tcp_flags::ACK
        && frame
            .get(usize::from(meta.l4_offset)..)
            .is_some_and(is_marked)
}

fn layout(meta: &PacketMeta) -> Layout {
    Layout {
        l3: usize::from(meta.l3_offset),
        l4: usize::from(meta.l4_offset),
        v6: meta.l3 == L3::Ipv6,
    }
}

impl Pipeline {
    /// A cookie-valid ACK after the new-flow decision (`verdict`): if it
    /// was placed (and rewritten toward its backend), its connection
    /// becomes a proxied one and the ACK the SYN to the backend.
    #[cold]
    #[inline(never)]
    pub(super) fn open_backend(
        &mut self,
        frame: &mut [u8],
        meta: &PacketMeta,
        key_hash: u64,
        verdict: Verdict,
        cx: &mut Context<'_>,
    ) -> Verdict {
        let Verdict::Transmit(_) = verdict else {
            return verdict;
        };
        let flows = &mut *cx.flows;
        let Some((id, Direction::FromClient)) = flows.lookup(&meta.tuple, key_hash, cx.now_ns)
        else {
            return Verdict::Drop(DropReason::SynProxyHandshake);
        };
        let at = layout(meta);
        let tcp = frame.get(at.l4..).unwrap_or(&[]);
        let Some(ack) = CookieAck::read(tcp, at.v6) else {
            flows.remove(id);
            return Verdict::Drop(DropReason::SynProxyHandshake);
        };
        let proxied = ProxiedConnection::from_ack(&ack, tcp);
        // The address rewrite made the destination port the backend's.
        let backend_port = tcp
            .get(2..4)
            .map_or(0, |p| u16::from_be_bytes([p[0], p[1]]));
        let mut header = [0u8; MAX_HEADER];
        let n = backend_syn_header(&proxied, (meta.tuple.src_port, backend_port), &mut header);
        if !flows.set_syn_proxy(id, proxied) || !self.replace(frame, at, &mut header[..n], false) {
            flows.remove(id);
            return Verdict::Drop(DropReason::SynProxyHandshake);
        }
        self.counters.synproxy_connections.inc();
        verdict
    }

    /// Makes the frame's segment `tcp` ([`replace_segment`]), its length
    /// set after the batch; false (the frame unusable) if it cannot be.
    fn replace(&mut self, frame: &mut [u8], at: Layout, tcp: &mut [u8], swap: bool) -> bool {
        let old_len = frame.len();
        let Some(new_len) = replace_segment(frame, at, tcp, swap) else {
            return false;
        };
        let addr = frame.as_ptr() as usize;
        if new_len > old_len {
            let from = old_len.saturating_sub(at.l4);
            let (Some(rest), true) = (tcp.get(from..), self.can_grow) else {
                return false;
            };
            let mut tail = [0u8; MAX_HEADER];
            let Some(dst) = tail.get_mut(..rest.len()) else {
                return false;
            };
            dst.copy_from_slice(rest);
            self.grown.push(Grown {
                addr,
                from: old_len as u32,
                len: new_len as u32,
                tail,
                tail_len: rest.len() as u8,
            });
        } else if new_len < old_len {
            self.answers.push((addr, new_len as u32));
        }
        true
    }

    /// A client's segment of proxied connection `id` to its endpoint
    /// `backend`: dropped until the backend answered, then forwarded as
    /// any with its numbers translated into the backend's. `None` for a
    /// cookie-valid ACK: the XDP program marks one only for a handshake
    /// it answered after forgetting the tuple on the client's SYN, so
    /// the client has begun a new connection on this tuple (a client
    /// port reused while the old connection's record lingers): the old
    /// one is removed and the ACK is decided as a new flow. Translated
    /// with the old connection's offsets, it would reach the backend as
    /// a stray segment and the client would be reset.
    #[cold]
    #[inline(never)]
    pub(super) fn proxied_from_client(
        &mut self,
        frame: &mut [u8],
        meta: &PacketMeta,
        (id, endpoint, backend): (ConnId, EndpointId, &Endpoint),
        flows: &mut FlowTable,
        now_ns: u64,
    ) -> Option<Verdict> {
        if is_cookie_ack(frame, meta) {
            flows.remove_replaced(id);
            return None;
        }
        let Some(&proxied) = flows.syn_proxy(id) else {
            return Some(Verdict::Drop(DropReason::SynProxyHandshake));
        };
        if !proxied.answered {
            // A client that gives up before the backend answered ends it.
            if meta.tcp_flags & tcp_flags::RST != 0 {
                flows.remove(id);
            }
            return Some(Verdict::Drop(DropReason::SynProxyHandshake));
        }
        if backend.next_hop_mac.is_none() {
            return Some(Verdict::Drop(DropReason::NoNeighbour));
        }
        flows.observe(id, Direction::FromClient, meta.tcp_flags, now_ns);
        flows.get_mut(id).client_mac = source_mac(frame);
        self.counters.flow_hits.inc();
        flows.count_packet(endpoint, frame.len() as u64);
        let verdict = to_backend(frame, meta, backend);
        if let Some(tcp) = frame.get_mut(usize::from(meta.l4_offset)..) {
            proxied.offset.to_backend(tcp);
        }
        Some(verdict)
    }

    /// A backend's segment of proxied connection `id`: its SYN-ACK
    /// completes the handshake (answered with the ACK in the client's
    /// name); anything else before it is dropped; after it, forwarded to
    /// the client as any reply, its numbers translated into the client's.
    #[cold]
    #[inline(never)]
    pub(super) fn proxied_from_backend(
        &mut self,
        frame: &mut [u8],
        meta: &PacketMeta,
        id: ConnId,
        cx: &mut Context<'_>,
    ) -> Verdict {
        let (snapshot, now_ns) = (cx.snapshot, cx.now_ns);
        let flows = &mut *cx.flows;
        let Some(&proxied) = flows.syn_proxy(id) else {
            return Verdict::Drop(DropReason::SynProxyHandshake);
        };
        let flags = meta.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK | tcp_flags::RST);
        if flags == tcp_flags::SYN | tcp_flags::ACK {
            return self.complete_backend(frame, meta, id, proxied, cx);
        }
        if !proxied.answered {
            return Verdict::Drop(DropReason::SynProxyHandshake);
        }
        flows.observe(id, Direction::FromBackend, meta.tcp_flags, now_ns);
        self.counters.flow_hits.inc();
        let conn = flows.get(id);
        flows.count_packet(conn.endpoint, frame.len() as u64);
        let src_mac = egress_mac(frame, snapshot, conn.client_ingress);
        wire::rewrite::set_macs(frame, src_mac, conn.client_mac);
        wire::rewrite::rewrite_src(frame, meta, &conn.client.dst, conn.client.dst_port);
        wire::rewrite::decrement_ttl(frame, meta);
        if let Some(tcp) = frame.get_mut(usize::from(meta.l4_offset)..) {
            proxied.offset.to_client(tcp);
        }
        Verdict::Transmit(conn.client_ingress)
    }

    /// The backend's SYN-ACK. The first: the offsets recorded, and the
    /// frame made the ACK that opens the client's window (the cookie
    /// SYN-ACK offered 0), from the VIP; the client's next segment, its
    /// ACK translated, completes the backend's handshake. A retransmitted
    /// one (the backend heard nothing from the client yet: our ACK was
    /// lost, or the client has nothing to say first): the frame made the
    /// ACK to the backend in the client's name.
    fn complete_backend(
        &mut self,
        frame: &mut [u8],
        meta: &PacketMeta,
        id: ConnId,
        mut proxied: ProxiedConnection,
        cx: &mut Context<'_>,
    ) -> Verdict {
        let (snapshot, now_ns) = (cx.snapshot, cx.now_ns);
        let flows = &mut *cx.flows;
        let conn = flows.get(id);
        let (endpoint, client_ingress, client_mac) =
            (conn.endpoint, conn.client_ingress, conn.client_mac);
        let (vip, vip_port) = (conn.client.dst, conn.client.dst_port);
        let Some(backend) = snapshot.endpoint(endpoint) else {
            return Verdict::Drop(DropReason::NoBackend);
        };
        let at = layout(meta);
        let syn_ack = frame.get(at.l4..).unwrap_or(&[]);
        let first = !proxied.answered;
        let mut header = [0u8; MAX_HEADER];
        if first {
            proxied.answer(syn_ack);
            let n = client_window_header(&proxied, syn_ack, vip_port, &mut header);
            if let Some(slot) = flows.syn_proxy_mut(id) {
                *slot = proxied;
            }
            wire::rewrite::rewrite_src(frame, meta, &vip, vip_port);
            if !self.replace(frame, at, &mut header[..n], false) {
                return Verdict::Drop(DropReason::SynProxyHandshake);
            }
            // The backend answered, and the client's side is open:
            // established.
            flows.observe(id, Direction::FromBackend, meta.tcp_flags, now_ns);
            flows.observe(id, Direction::FromClient, tcp_flags::ACK, now_ns);
            self.counters.synproxy_established.inc();
            flows.count_packet(endpoint, frame.len() as u64);
            let src_mac = egress_mac(frame, snapshot, client_ingress);
            wire::rewrite::set_macs(frame, src_mac, client_mac);
            return Verdict::Transmit(client_ingress);
        }
        if backend.next_hop_mac.is_none() {
            return Verdict::Drop(DropReason::NoNeighbour);
        }
        let n = backend_ack_header(&proxied, syn_ack, &mut header);
        if !self.replace(frame, at, &mut header[..n], true) {
            return Verdict::Drop(DropReason::SynProxyHandshake);
        }
        flows.observe(id, Direction::FromBackend, meta.tcp_flags, now_ns);
        flows.count_packet(endpoint, frame.len() as u64);
        // A neighbour is known (above): the MACs are written.
        set_backend_macs(frame, backend);
        Verdict::Transmit(backend.egress_port)
    }
}
