//! The packet pipeline: parse → flow lookup → (on a miss) service lookup
//! and backend choice → rewrite → a verdict per frame.
//!
//! It is a pure function of (frames, snapshot, flow table, now): it does no
//! I/O, reads no clock, takes no lock and allocates nothing per packet. Time
//! is passed in; frames are passed in; the verdicts come out. Ports and
//! workers are adapters around it — see [`crate::worker`].
//!
//! What happens to each kind of frame:
//! - ARP, and ethertypes the gateway does not process: passed to the kernel.
//! - Malformed frames: dropped, counted by parse reason.
//! - IP fragments: the gateway does not reassemble. A fragment addressed to
//!   a service VIP is dropped (`fragment_to_vip`); any other fragment is
//!   passed to the kernel. Services are expected to carry PMTU-clean
//!   traffic (TCP negotiates its MSS; UDP services keep datagrams small).
//! - A packet of a tracked connection from the client: destination
//!   rewritten to its backend (which it keeps while rules change, until the
//!   connection ends). If the backend was removed from the rules: a TCP
//!   connection ends (dropped, `backend_removed`, entry removed); a UDP flow
//!   is rescheduled to a live backend. If the backend is down or expired,
//!   its service's policy decides: TCP connections are kept (default),
//!   dropped and forgotten (`backend_down`), or answered with a RST from
//!   the VIP and forgotten; UDP flows are rescheduled. Only endpoints the
//!   snapshot flags (`Endpoint::if_dead`) are looked up in the liveness
//!   table, on a cold path; the flag is tested within the address and port
//!   compare every established packet makes anyway.
//! - A packet of a tracked connection from the backend: source rewritten
//!   back to the VIP and port, sent to the MAC and port the client's
//!   packets came from.
//! - A new packet to a service: a backend is chosen by the service's
//!   scheduler, a connection recorded, the packet rewritten. If the pick
//!   is not alive (it died since the tables were built), the skip rule
//!   (`table::skip`) picks another; if none is alive, the service fails
//!   open or closed (`all_backends_down`). A TCP segment
//!   without SYN is picked up mid-stream for consistent schedulers (maglev,
//!   sh: every gateway and a restarted one pick the same backend) and
//!   dropped for `wrr` (`no_connection`), where no choice could be right.
//! - An ICMP error quoting a packet of a tracked connection: translated
//!   through the NAT towards the other end ([`icmp_error`]); one about
//!   the gateway's traffic with no connection: dropped
//!   (`unknown_icmp_error`).
//! - A backend's reply with no connection: translated back to its
//!   service's VIP where exactly one service has that backend, else
//!   dropped (`unknown_reply`) ([`stateless_reply`]).
//! - Anything else (no service matches): passed to the kernel, not dropped.
//! - TTL / hop limit 1 on a packet to forward: dropped (`ttl_expired`).
//!
//! Forwarded packets get the egress interface's MAC as source (or, where
//! the config names no interfaces, the MAC they were sent to) and the next
//! hop's MAC as destination; TTL is decremented; checksums are patched
//! incrementally.
//!
//! Counting: every frame is counted once in [`PipelineCounters`] (received,
//! and forwarded, passed or dropped by reason). Every forwarded frame of a
//! connection, either direction, is also counted against the connection's
//! endpoint in the flow table ([`FlowTable::count_packet`]), so per-endpoint
//! packets add up to `forwarded`. All of it is single-writer counters: a
//! plain load and store each, nothing locked.

mod counters;
mod fanout;
mod icmp_error;
mod ingress;
mod plain;
mod route_counters;
mod stateless_reply;
mod synproxy;
mod verdict;
mod vlan;

pub use counters::{Counter, CounterValues, PipelineCounters};
pub use fanout::{fanout_reserve, DEFAULT_FANOUT_FRAME_SHARE, FANOUT_FLOWS};
use route_counters::RouteSlots;
pub use route_counters::{RouteCounterValues, RouteCounters, ServiceRouteCounters};
pub use verdict::{DropReason, Verdict};

use std::sync::Arc;

use crate::admission::{
    write_reset, AdmittedFlow, ClientRateParams, OverLimitAction, RefusedSegment, ServiceLimits,
    WorkerAdmission,
};
use crate::flow::{
    ConnId, Connection, Direction, FlowState, FlowTable, Found, LookupHint, RewriteDeltas,
};
use crate::hash::{flow_hash, source_hash, table_hash, table_hash_v4, table_hash_v4_words};
use crate::port::{Frame, FrameMemory};
use crate::route::{ClientAddr, PathReader, PathTarget, PathView};
use crate::rules::routing::SetStage;
use crate::rules::{Scheduler, WhenAllDown};
use crate::table::{
    CompiledLimits, CompiledService, Endpoint, EndpointId, IfDead, Mode, RouteQuery, Routed,
    ServiceId, ServiceRoutes, Snapshot,
};
use crate::wire::{self, ip_proto, tcp_flags, FiveTuple, Fragment, PacketMeta, ParseError, L3};

/// What every frame of a batch is decided against.
struct Context<'a> {
    snapshot: &'a Snapshot,
    /// The distribution paths, when this worker reads them.
    paths: Option<&'a PathView>,
    flows: &'a mut FlowTable,
    /// The port the batch arrived on.
    ingress: u16,
    /// Whether that port refuses untagged frames (`untagged = false`).
    refuse_untagged: bool,
    /// That port's interface MAC (all zeros where the config names none):
    /// the destination of every frame the gateway takes.
    own_mac: ingress::MacWord,
    now_ns: u64,
}

/// One worker's pipeline state: its counters and scheduler cursors. The
/// flow table and snapshot are passed in per batch.
#[derive(Debug)]
pub struct Pipeline {
    counters: Arc<PipelineCounters>,
    /// What routing by client decided, per service, for new flows of
    /// routed services.
    route_counters: RouteSlots,
    /// This worker's handle on the distribution paths, if it has one.
    paths: Option<PathReader>,
    /// Weighted round-robin position per service id.
    wrr_cursors: Vec<u32>,
    /// The snapshot generation `wrr_cursors` and `endpoint_limit` were
    /// sized for.
    sized_for: Option<u64>,
    /// One past the highest endpoint id of that snapshot: the flow table's
    /// per-endpoint counters are grown to it before a batch.
    endpoint_limit: usize,
    /// Each frame's parse result and flow hash, between a batch's passes.
    parsed: Vec<Parsed>,
    /// Each frame's connection key as the warm pass found it, for its
    /// lookup.
    hints: Vec<LookupHint>,
    /// Frames of the batch answered in place (a RST to the client), by
    /// the address of their first byte, with their new length: set on
    /// their tokens after the batch, so that frames that are not answered
    /// pay nothing for it.
    answers: Vec<(usize, u32)>,
    /// Fan-out client flows and the batch's copy jobs.
    fanout: fanout::Fanout,
    /// This worker's admission state: its tokens of the services' budgets,
    /// its per-client table, its lanes of the backends' connection counts,
    /// its refusal counters.
    admission: WorkerAdmission,
    /// Per service id, its per-client limit compiled for this worker's
    /// share (sized and filled once per generation).
    client_params: Vec<Option<ClientRateParams>>,
    /// Frames of the batch that must grow (a cookie ACK made the SYN to a
    /// backend, longer with its options): written past their old end
    /// after the batch, once their length is set.
    grown: Vec<synproxy::Grown>,
    /// Whether this batch's frames may grow (false for
    /// [`process_frame_len`](Self::process_frame_len), whose slice cannot).
    can_grow: bool,
    /// Whether the snapshot adopted last proxies some service's SYNs.
    syn_proxied: bool,
}

/// Reads the slot a new flow's path lookup will read first (its service's
/// path of the longest length present), so that the lookup finds it in
/// cache; nothing for a frame of no service or a service with no path.
/// `last` is the service of the frame warmed before: a batch's frames
/// mostly share a few services, so one compare often saves the lookup.
#[inline]
fn warm_path(
    view: &PathView,
    tuple: Option<FiveTuple>,
    snapshot: &Snapshot,
    last: &mut LastService,
) {
    if let Some(t) = &tuple {
        let key = (t.protocol, t.dst, t.dst_port);
        if last.0 != Some(key) {
            let found = snapshot.lookup_service(t.protocol, &t.dst, t.dst_port);
            *last = (Some(key), found.map(|(id, _)| id));
        }
        if let Some(id) = last.1 {
            std::hint::black_box(view.warm(id, ClientAddr::from_bytes(&t.src)));
        }
    }
}

/// Warms the record a lookup of `parsed`'s flow will most likely read
/// ([`FlowTable::warm_record`]) and returns its hint; `NONE` for a frame
/// with no flow hash. Always inlined: a closure called from two loops
/// was not.
#[inline(always)]
fn warm_record(flows: &FlowTable, parsed: &Parsed) -> LookupHint {
    parsed
        .hash()
        .map_or(LookupHint::NONE, |hash| flows.warm_record(hash))
}

/// The (protocol, VIP, port) [`warm_path`] looked up last, and its
/// service.
type LastService = (Option<(u8, [u8; 16], u16)>, Option<ServiceId>);

/// Clients each worker's per-client table tracks by default (16 bytes
/// each: 1 MiB).
pub const DEFAULT_CLIENT_TABLE_ENTRIES: usize = 65_536;

/// A frame after the parse pass: what `wire::parse` found and, for a
/// frame that will look up a connection, its flow hash. Made once per
/// frame; the worker decides ownership by it and the hand-over carries it,
/// so that no frame is parsed or hashed twice.
///
/// The common frame (untagged IPv4 with no options, TCP or UDP, not a
/// fragment: what [`wire::parse_plain_ipv4`] accepts) keeps no meta: an
/// established connection's packet of that kind is read in place
/// ([`wire::PlainV4Frame`]), and a path that needs its meta reads it
/// from the frame again ([`meta`](Self::meta)). So the parse pass writes
/// two fields for it, not 64 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parsed {
    /// What the parse found; `None` for the common frame.
    meta: Option<Result<PacketMeta, ParseError>>,
    /// The flow hash where `hashed` (0 otherwise): not an `Option`, so
    /// that a `Parsed` is 64 bytes, one cache line of the batch's `Vec`.
    hash: u64,
    hashed: bool,
}

impl Parsed {
    /// Parses and hashes `frame`: the common frame checked at fixed
    /// offsets and hashed from its bytes in line (never ARP nor a
    /// fragment, so always hashed), any other parsed out of line.
    #[inline(always)]
    pub fn of(frame: &[u8]) -> Parsed {
        if wire::is_plain_ipv4(frame) {
            // The key's words as they lie in the frame.
            if let Some((lo, hi)) = wire::plain_ipv4_key_words(frame) {
                return Parsed {
                    meta: None,
                    hash: table_hash_v4_words(lo, hi),
                    hashed: true,
                };
            }
        }
        Parsed::of_any(frame)
    }

    /// [`of`](Self::of) a frame the fixed-offset parse does not read.
    #[inline(never)]
    fn of_any(frame: &[u8]) -> Parsed {
        let meta = wire::parse_any(frame);
        let hash = match &meta {
            Ok(m) if m.l3 != L3::Arp && m.fragment == Fragment::None => Some(table_hash(&m.tuple)),
            _ => None,
        };
        Parsed {
            meta: Some(meta),
            hash: hash.unwrap_or(0),
            hashed: hash.is_some(),
        }
    }

    /// The parse of a frame of a connection whose flow hash is `hash`, as
    /// [`flow`](Self::flow) gave them: what `Parsed::of` the same bytes
    /// decides alike.
    #[inline]
    pub fn of_flow(meta: PacketMeta, hash: u64) -> Parsed {
        Parsed {
            meta: Some(Ok(meta)),
            hash,
            hashed: true,
        }
    }

    /// What the parser found in `frame`, the bytes this was made of: the
    /// common frame's meta is read from them again, without the checks
    /// the parse made.
    #[inline(always)]
    pub fn meta(&self, frame: &[u8]) -> Result<PacketMeta, ParseError> {
        match &self.meta {
            Some(meta) => *meta,
            None => match wire::plain_ipv4_meta(frame) {
                Some(meta) => Ok(meta),
                None => wire::parse(frame),
            },
        }
    }

    /// The meta the parse kept: every frame's but the common one's.
    #[inline]
    pub fn kept_meta(&self) -> Option<&PacketMeta> {
        match &self.meta {
            Some(Ok(meta)) => Some(meta),
            _ => None,
        }
    }

    /// The flow of a frame that can belong to a connection, read from
    /// `frame` (the bytes this was made of) for the common frame; `None`
    /// for anything else.
    #[inline]
    pub fn tuple(&self, frame: &[u8]) -> Option<FiveTuple> {
        if !self.hashed {
            return None;
        }
        match &self.meta {
            Some(Ok(meta)) => Some(meta.tuple),
            Some(Err(_)) => None,
            None => wire::plain_ipv4_tuple(frame),
        }
    }

    /// The flow hash, for a frame that can belong to a connection.
    #[inline(always)]
    fn hash(&self) -> Option<u64> {
        self.hashed.then_some(self.hash)
    }

    /// The parse and flow hash of a frame that can belong to a
    /// connection (IP, not a fragment), `frame` being the bytes this was
    /// made of; `None` for anything else.
    #[inline]
    pub fn flow(&self, frame: &[u8]) -> Option<(PacketMeta, u64)> {
        let hash = self.hash()?;
        self.meta(frame).ok().map(|meta| (meta, hash))
    }
}

/// The first two passes over a batch: touch every frame's first cache
/// line, then parse and hash every frame into `parsed` (cleared first;
/// one entry per frame, in order). [`Pipeline::process_parsed`] takes it
/// from there.
#[inline]
pub fn parse_batch<M: FrameMemory + ?Sized>(
    memory: &M,
    frames: &[Frame],
    parsed: &mut Vec<Parsed>,
) {
    parsed.clear();
    touch_frames(memory, frames);
    parsed.extend(frames.iter().map(|frame| Parsed::of(memory.frame(frame))));
}

/// Loads every frame's first byte: the first pass over a batch. Frames
/// arrive cold (written by the NIC, the kernel or another core); each
/// pass is a tight loop, so that many of its loads are in flight at once.
#[inline]
pub fn touch_frames<M: FrameMemory + ?Sized>(memory: &M, frames: &[Frame]) {
    for frame in frames {
        std::hint::black_box(memory.warm(frame));
    }
}

impl Default for Pipeline {
    fn default() -> Self {
        Self::new()
    }
}

impl Pipeline {
    /// A pipeline with zeroed counters.
    pub fn new() -> Self {
        Pipeline {
            counters: Arc::new(PipelineCounters::default()),
            route_counters: RouteSlots::default(),
            paths: None,
            wrr_cursors: Vec::new(),
            sized_for: None,
            endpoint_limit: 0,
            parsed: Vec::new(),
            hints: Vec::new(),
            answers: Vec::with_capacity(64),
            fanout: fanout::Fanout::default(),
            admission: WorkerAdmission::single(DEFAULT_CLIENT_TABLE_ENTRIES, client_table_seed()),
            client_params: Vec::new(),
            grown: Vec::new(),
            can_grow: false,
            syn_proxied: false,
        }
    }

    /// Makes this pipeline one of several workers' by giving it its share
    /// of the admission state (its lanes of the backends' connection
    /// counts, shared with the other workers, and its client table). Its
    /// connection tables count on the same lanes from their next batch.
    pub fn set_admission(&mut self, admission: WorkerAdmission) {
        self.admission = admission;
        self.sized_for = None;
    }

    /// This worker's admission state (its counters, for the metrics).
    pub fn admission(&self) -> &WorkerAdmission {
        &self.admission
    }

    /// This worker's counters (share the `Arc` with whoever reports them).
    pub fn counters(&self) -> &Arc<PipelineCounters> {
        &self.counters
    }

    /// Reads distribution paths through `reader` from the next batch on:
    /// a new flow of a service with paths looks its client up first.
    pub fn set_paths(&mut self, reader: PathReader) {
        self.paths = Some(reader);
    }

    /// This worker's routing counters, per service id (share the `Arc`
    /// with whoever reports them).
    pub fn route_counters(&self) -> &Arc<RouteCounters> {
        self.route_counters.shared()
    }

    /// Processes a batch of frames received on port `ingress`, rewriting
    /// them in place. `verdicts` is cleared and gets one verdict per frame,
    /// in order (give it capacity for a whole batch: then nothing
    /// allocates).
    ///
    /// Passes, so that the batch's memory waits overlap instead of
    /// queueing: touch every frame's headers; parse and hash every frame;
    /// warm its connection-index bucket; warm the connection records
    /// those buckets point at; then decide each frame. With a million
    /// connections a lookup is a DRAM access or two; one at a time they
    /// would dominate the cost.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub fn process_batch<M: FrameMemory + ?Sized>(
        &mut self,
        memory: &mut M,
        frames: &mut [Frame],
        ingress: u16,
        snapshot: &Snapshot,
        flows: &mut FlowTable,
        now_ns: u64,
        verdicts: &mut Vec<Verdict>,
    ) {
        let mut parsed = std::mem::take(&mut self.parsed);
        parse_batch(memory, frames, &mut parsed);
        self.decide_batch(
            memory, frames, &parsed, ingress, snapshot, flows, now_ns, verdicts,
        );
        self.parsed = parsed;
    }

    /// [`process_batch`](Self::process_batch) for frames already parsed
    /// and hashed: `parsed[i]` must be [`Parsed::of`] `frames[i]`'s bytes
    /// (from [`parse_batch`], or carried with a frame handed over by
    /// another worker). Frames past the end of `parsed` get no verdict.
    /// The frames are not parsed, nor touched: frames that may be cold
    /// (handed over from another core) go through [`touch_frames`] first.
    #[allow(clippy::too_many_arguments)]
    pub fn process_parsed<M: FrameMemory + ?Sized>(
        &mut self,
        memory: &mut M,
        frames: &mut [Frame],
        parsed: &[Parsed],
        ingress: u16,
        snapshot: &Snapshot,
        flows: &mut FlowTable,
        now_ns: u64,
        verdicts: &mut Vec<Verdict>,
    ) {
        self.decide_batch(
            memory, frames, parsed, ingress, snapshot, flows, now_ns, verdicts,
        );
    }

    /// The passes after parsing: warm index buckets, warm records, decide.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn decide_batch<M: FrameMemory + ?Sized>(
        &mut self,
        memory: &mut M,
        frames: &mut [Frame],
        parsed: &[Parsed],
        ingress: u16,
        snapshot: &Snapshot,
        flows: &mut FlowTable,
        now_ns: u64,
        verdicts: &mut Vec<Verdict>,
    ) {
        verdicts.clear();
        self.adopt(snapshot, flows);
        self.fanout.begin(frames.len(), now_ns);
        for hash in parsed.iter().filter_map(Parsed::hash) {
            flows.warm_index(hash);
        }
        // The paths' version is loaded once per batch, as the snapshot is.
        let mut paths = self.paths.take();
        let view = paths.as_mut().map(|reader| reader.load());
        // Each frame's hint goes to its lookup: where the warm pass found
        // the key, the lookup does not scan the bucket again.
        let hints = &mut self.hints;
        hints.clear();
        match view.filter(|view| !view.is_empty()) {
            None => hints.extend(parsed.iter().map(|p| warm_record(flows, p))),
            // A frame whose index bucket holds no candidate is most likely
            // a new flow: its path lookup's slot is warmed too, so that
            // the batch's path misses overlap. Other frames pay the test.
            Some(view) => {
                let mut last = (None, None);
                for (p, frame) in parsed.iter().zip(frames.iter()) {
                    let found = warm_record(flows, p);
                    if p.hashed && !found.is_some() {
                        let tuple = p.tuple(memory.frame(frame));
                        warm_path(view, tuple, snapshot, &mut last);
                    }
                    hints.push(found);
                }
            }
        }
        let hints = std::mem::take(&mut self.hints);
        // Room for every frame to be answered: nothing allocates below.
        self.answers.reserve(frames.len());
        self.grown.reserve(frames.len());
        self.can_grow = true;
        let mut cx = Context {
            snapshot,
            paths: view,
            flows,
            ingress,
            refuse_untagged: !snapshot.vlans().port(ingress).untagged(),
            own_mac: ingress::MacWord::of(snapshot.interface_mac(ingress).unwrap_or_default()),
            now_ns,
        };
        if snapshot.vlans().configured() {
            self.decide_vlan_frames(memory, frames, parsed, &mut cx, verdicts);
        } else {
            // Received frames and bytes are counted once for the batch.
            // One `extend`: the verdicts' length is kept in a register,
            // not stored back per frame as `push` does.
            // So is what the common packet's lane forwards.
            let (mut received, mut bytes, mut laned) = (0, 0, 0);
            let decided = frames.iter_mut().zip(parsed).zip(&hints);
            verdicts.extend(decided.map(|((frame, p), &hint)| {
                let frame = memory.frame_mut(frame);
                received += 1;
                bytes += frame.len() as u64;
                if p.meta.is_none() && hint.is_some() {
                    if let Some(port) = self.plain_established(frame, hint, &mut cx) {
                        laned += 1;
                        return Verdict::Transmit(port);
                    }
                }
                self.decide_out_of_line(frame, p, hint, &mut cx)
            }));
            let c = &*self.counters;
            c.rx_packets.add(received);
            c.rx_bytes.add(bytes);
            c.forwarded.add(laned);
            c.flow_hits.add(laned);
        }
        self.paths = paths;
        self.hints = hints;
        if !self.answers.is_empty() {
            self.resize_answers(memory, frames);
        }
        if !self.grown.is_empty() {
            synproxy::grow_frames(&mut self.grown, memory, frames);
        }
    }

    /// The deciding pass of a gateway with VLAN settings ([`vlan`]):
    /// each frame is offered four bytes of room past its end, for a tag,
    /// and gets the length of what it sends.
    #[inline(never)]
    fn decide_vlan_frames<M: FrameMemory + ?Sized>(
        &mut self,
        memory: &mut M,
        frames: &mut [Frame],
        parsed: &[Parsed],
        cx: &mut Context<'_>,
        verdicts: &mut Vec<Verdict>,
    ) {
        for (frame, p) in frames.iter_mut().zip(parsed) {
            let len = frame.len();
            // Room for a tag, where the frame's slot has it.
            frame.set_len(len.saturating_add(4));
            if memory.frame(frame).is_empty() {
                frame.set_len(len);
            }
            let room = memory.frame_mut(frame);
            let (verdict, out) = self.count_vlan(room, len as usize, *p, cx);
            frame.set_len(u32::try_from(out).unwrap_or(len));
            verdicts.push(verdict);
        }
    }

    /// Gives each frame answered in place its answer's length.
    #[cold]
    fn resize_answers<M: FrameMemory + ?Sized>(&mut self, memory: &M, frames: &mut [Frame]) {
        for frame in frames.iter_mut() {
            let at = memory.frame(frame).as_ptr() as usize;
            if let Some(&(_, len)) = self.answers.iter().find(|&&(a, _)| a == at) {
                frame.set_len(len);
            }
        }
        self.answers.clear();
    }

    /// Sizes per-service state and the flow table's per-endpoint counters
    /// for `snapshot` — once per generation (and for a table that has not
    /// seen it), so that nothing allocates per packet.
    #[inline]
    fn adopt(&mut self, snapshot: &Snapshot, flows: &mut FlowTable) {
        if self.sized_for != Some(snapshot.generation()) {
            self.wrr_cursors.resize(snapshot.service_id_limit(), 0);
            self.route_counters.reserve(snapshot.service_id_limit());
            self.endpoint_limit = snapshot.endpoint_id_limit();
            self.adopt_limits(snapshot);
            self.sized_for = Some(snapshot.generation());
            self.fanout.adopt(snapshot);
            self.syn_proxied = snapshot.services().any(|(_, s)| s.syn_proxy().is_enabled());
        }
        if self.syn_proxied && !flows.has_syn_proxy() {
            flows.reserve_syn_proxy();
        }
        if !flows.has_connection_lanes() {
            flows.set_connection_lanes(self.admission.backends().clone());
        }
        if flows.endpoint_slots() < self.endpoint_limit {
            flows.reserve_endpoints(self.endpoint_limit);
        }
    }

    /// Sizes the admission state for `snapshot`'s services: their tokens
    /// and counters, and each per-client limit compiled for this worker's
    /// share of it.
    #[cold]
    fn adopt_limits(&mut self, snapshot: &Snapshot) {
        let limit = snapshot.service_id_limit();
        self.admission.reserve_services(limit);
        self.client_params.clear();
        self.client_params.resize(limit, None);
        let workers = self.admission.workers();
        for (id, service) in snapshot.services() {
            let Some(limits) = service.limits() else {
                continue;
            };
            self.admission.claim_service(id, service.serial());
            if let (Some(slot), Some(client)) =
                (self.client_params.get_mut(id as usize), limits.client())
            {
                *slot = Some(ClientRateParams::new(*client, workers));
            }
        }
    }

    /// Processes one frame received on port `ingress`, rewriting it in
    /// place, and returns its verdict (already counted). A frame answered
    /// in place (a RST to the client) holds its answer at its start; its
    /// length is what [`process_frame_len`](Self::process_frame_len) says.
    pub fn process_frame(
        &mut self,
        frame: &mut [u8],
        ingress: u16,
        snapshot: &Snapshot,
        flows: &mut FlowTable,
        now_ns: u64,
    ) -> Verdict {
        self.process_frame_len(frame, ingress, snapshot, flows, now_ns)
            .0
    }

    /// [`process_frame`](Self::process_frame), and how many of the
    /// frame's bytes are to be sent: its length, or the length of the
    /// answer written over it.
    pub fn process_frame_len(
        &mut self,
        frame: &mut [u8],
        ingress: u16,
        snapshot: &Snapshot,
        flows: &mut FlowTable,
        now_ns: u64,
    ) -> (Verdict, usize) {
        let len = frame.len();
        self.process_frame_in(frame, len, ingress, snapshot, flows, now_ns)
    }

    /// [`process_frame_len`](Self::process_frame_len) of the frame
    /// `room[..len]`, which may grow into the rest of `room` (a VLAN tag
    /// added on the way out needs four bytes).
    pub fn process_frame_in(
        &mut self,
        room: &mut [u8],
        len: usize,
        ingress: u16,
        snapshot: &Snapshot,
        flows: &mut FlowTable,
        now_ns: u64,
    ) -> (Verdict, usize) {
        let len = len.min(room.len());
        self.adopt(snapshot, flows);
        self.fanout.begin(1, now_ns);
        let parsed = Parsed::of(&room[..len]);
        self.answers.clear();
        self.grown.clear();
        self.can_grow = false;
        let mut paths = self.paths.take();
        let mut cx = Context {
            snapshot,
            paths: paths.as_mut().map(|reader| reader.load()),
            flows,
            ingress,
            refuse_untagged: !snapshot.vlans().port(ingress).untagged(),
            own_mac: ingress::MacWord::of(snapshot.interface_mac(ingress).unwrap_or_default()),
            now_ns,
        };
        if snapshot.vlans().configured() {
            let verdict = self.count_vlan(room, len, parsed, &mut cx);
            self.paths = paths;
            return verdict;
        }
        let verdict = self.count(&mut room[..len], &parsed, &mut cx);
        self.paths = paths;
        let len = match self.answers.pop() {
            Some((_, len)) => len as usize,
            None => len,
        };
        (verdict, len)
    }

    /// Decides one frame's fate and counts it.
    #[inline]
    fn count(&mut self, frame: &mut [u8], parsed: &Parsed, cx: &mut Context<'_>) -> Verdict {
        let c = &*self.counters;
        c.rx_packets.inc();
        c.rx_bytes.add(frame.len() as u64);
        self.decide_counted(frame, parsed, LookupHint::NONE, cx)
    }

    /// [`decide_counted`](Self::decide_counted) as a call of its own: the
    /// batch loop keeps its registers for the common packet's lane.
    #[inline(never)]
    fn decide_out_of_line(
        &mut self,
        frame: &mut [u8],
        parsed: &Parsed,
        hint: LookupHint,
        cx: &mut Context<'_>,
    ) -> Verdict {
        self.decide_counted(frame, parsed, hint, cx)
    }

    /// Decides one frame's fate and counts the verdict (the caller counts
    /// it received). `hint` is the frame's from the warm pass, if it had
    /// one.
    #[inline(always)]
    fn decide_counted(
        &mut self,
        frame: &mut [u8],
        parsed: &Parsed,
        hint: LookupHint,
        cx: &mut Context<'_>,
    ) -> Verdict {
        let verdict = self.decide(frame, parsed, hint, cx);
        let c = &*self.counters;
        match verdict {
            Verdict::Transmit(_) => c.forwarded.inc(),
            Verdict::Pass => c.passed.inc(),
            Verdict::Drop(reason) => c.drop_for(reason),
        }
        verdict
    }

    #[inline]
    fn decide(
        &mut self,
        frame: &mut [u8],
        parsed: &Parsed,
        hint: LookupHint,
        cx: &mut Context<'_>,
    ) -> Verdict {
        // Ingress sanity (`ingress`), in the XDP program's order.
        let mut not_ours = match ingress::destination(frame, cx.own_mac) {
            ingress::Destination::Own => None,
            ingress::Destination::OtherHost => return Verdict::Drop(DropReason::OtherHost),
            ingress::Destination::Group(reason) => Some(reason),
        };
        // Read in place: the parse result is not copied.
        let (reread, parsed_again);
        let meta = match &parsed.meta {
            Some(Ok(meta)) => meta,
            Some(Err(e)) => return parse_error(*e),
            None => {
                // The common frame (the batch loop tried its lane).
                // Read where it is returned, not moved: not through
                // `Parsed::meta`, whose `Result` is a copy.
                reread = wire::plain_ipv4_meta(frame);
                match &reread {
                    Some(meta) => meta,
                    None => {
                        parsed_again = wire::parse(frame);
                        match &parsed_again {
                            Ok(meta) => meta,
                            Err(e) => return parse_error(*e),
                        }
                    }
                }
            }
        };
        let Context {
            snapshot,
            ref mut flows,
            now_ns,
            ..
        } = *cx;
        if meta.l3 == L3::Arp {
            return Verdict::Pass;
        }
        if not_ours.is_none() && (meta.vlan_tags != 0 || cx.refuse_untagged) {
            not_ours = Some(DropReason::VlanNotConfigured);
        }
        if let Some(reason) = not_ours {
            return ingress::refuse_if_ours(frame, meta, snapshot, reason);
        }
        let Some(hash) = parsed.hash() else {
            // Fragments have no hash: the gateway does not reassemble.
            return if snapshot.is_vip(&meta.tuple.dst) {
                Verdict::Drop(DropReason::FragmentToVip)
            } else {
                Verdict::Pass
            };
        };
        match flows.lookup_found(&meta.tuple, hash, hint, now_ns) {
            Some(Found {
                id,
                direction: Direction::FromClient,
                conn,
                syn_proxied,
            }) => {
                let endpoint = conn.endpoint;
                // An endpoint that is gone, or that the snapshot flags for
                // a look at its liveness, takes the cold path; the flag is
                // tested in the port compare made anyway.
                let backend = snapshot
                    .endpoint(endpoint)
                    .filter(|ep| ep.is_plain(&conn.backend_addr, conn.backend_port));
                match backend {
                    Some(backend) => {
                        let to = (id, endpoint, backend);
                        let proxied = syn_proxied;
                        match self.forward_established(frame, meta, to, proxied, flows, now_ns) {
                            Some(verdict) => verdict,
                            // A proxied connection's client began a new
                            // one on its tuple: decided as any new flow.
                            None => self.new_flow(frame, meta, hash, cx),
                        }
                    }
                    None => self.unusual_backend(frame, meta, hash, id, cx),
                }
            }
            Some(Found {
                id,
                direction: Direction::FromBackend,
                ..
            }) => {
                if meta.ttl <= 1 {
                    return Verdict::Drop(DropReason::TtlExpired);
                }
                if flows.syn_proxy(id).is_some() {
                    return self.proxied_from_backend(frame, meta, id, cx);
                }
                flows.observe(id, Direction::FromBackend, meta.tcp_flags, now_ns);
                self.counters.flow_hits.inc();
                let conn = flows.get(id);
                flows.count_packet(conn.endpoint, frame.len() as u64);
                let src_mac = egress_mac(frame, snapshot, conn.client_ingress);
                wire::rewrite::set_macs(frame, src_mac, conn.client_mac);
                let (vip, vip_port) = (&conn.client.dst, conn.client.dst_port);
                let deltas = flows.rewrite_deltas(id).to_client;
                wire::rewrite::forward_rewrite_src(frame, meta, vip, vip_port, deltas);
                Verdict::Transmit(conn.client_ingress)
            }
            None => self.new_flow(frame, meta, hash, cx),
        }
    }

    /// A client's packet of connection `id`, to its endpoint `backend`
    /// (whose id is `endpoint`): `to` is `(id, endpoint, backend)`;
    /// `proxied` is whether the SYN proxy is in it. `None` when the
    /// packet begins a new connection on the tuple of a proxied one,
    /// which is then gone.
    #[inline(always)]
    fn forward_established(
        &mut self,
        frame: &mut [u8],
        meta: &PacketMeta,
        (id, endpoint, backend): (ConnId, EndpointId, &Endpoint),
        proxied: bool,
        flows: &mut FlowTable,
        now_ns: u64,
    ) -> Option<Verdict> {
        if meta.ttl <= 1 {
            return Some(Verdict::Drop(DropReason::TtlExpired));
        }
        if proxied {
            let to = (id, endpoint, backend);
            return self.proxied_from_client(frame, meta, to, flows, now_ns);
        }
        // The client's router, read before the MACs are written.
        let client_mac = source_mac(frame);
        if !set_backend_macs(frame, backend) {
            return Some(Verdict::Drop(DropReason::NoNeighbour));
        }
        // Observed, counted, and the client's router followed if it
        // changed (failover); the connection's own checksum changes: its
        // backend is this endpoint's address and port (`is_plain`, or the
        // cold path's compare).
        let (flags, bytes) = (meta.tcp_flags, frame.len() as u64);
        let deltas = flows.forward_from_client(id, flags, client_mac, bytes, now_ns);
        self.counters.flow_hits.inc();
        wire::rewrite::forward_rewrite_dst(frame, meta, &backend.address, backend.port, deltas);
        Some(Verdict::Transmit(backend.egress_port))
    }

    /// A client's packet of connection `id` whose endpoint is gone from
    /// the rules, or flagged for a look at its liveness.
    ///
    /// Gone: a TCP connection ends (`backend_removed`), a UDP flow is
    /// scheduled afresh. Flagged and not alive: its service's policy
    /// decides ([`dead_backend`](Self::dead_backend)). Flagged and alive:
    /// forwarded as usual.
    #[cold]
    #[inline(never)]
    fn unusual_backend(
        &mut self,
        frame: &mut [u8],
        meta: &PacketMeta,
        hash: u64,
        id: ConnId,
        cx: &mut Context<'_>,
    ) -> Verdict {
        let snapshot = cx.snapshot;
        let conn = cx.flows.get(id);
        let endpoint = conn.endpoint;
        let backend = snapshot
            .endpoint(endpoint)
            .filter(|ep| ep.address == conn.backend_addr && ep.port == conn.backend_port);
        let Some(backend) = backend else {
            cx.flows.remove(id);
            if meta.tuple.protocol == ip_proto::TCP {
                return Verdict::Drop(DropReason::BackendRemoved);
            }
            return self.new_flow(frame, meta, hash, cx);
        };
        if let Some(action) = backend.if_dead {
            if !snapshot.liveness().is_alive(endpoint, cx.now_ns) {
                return self.dead_backend(frame, meta, hash, id, action, cx);
            }
        }
        let to = (id, endpoint, backend);
        let proxied = cx.flows.syn_proxy(id).is_some();
        match self.forward_established(frame, meta, to, proxied, cx.flows, cx.now_ns) {
            Some(verdict) => verdict,
            None => self.new_flow(frame, meta, hash, cx),
        }
    }

    /// A packet with no connection: schedule it if it is for a service.
    /// `key_hash` is its tuple's [`table_hash`]; its backend is chosen by
    /// the pinned [`flow_hash`], worked out here.
    #[inline]
    fn new_flow(
        &mut self,
        frame: &mut [u8],
        meta: &PacketMeta,
        key_hash: u64,
        cx: &mut Context<'_>,
    ) -> Verdict {
        let snapshot = cx.snapshot;
        let t = &meta.tuple;
        let Some((service_id, service)) = snapshot.lookup_service(t.protocol, &t.dst, t.dst_port)
        else {
            return self.no_service(frame, meta, cx);
        };
        // A source no host can have never makes a connection.
        if let Some(reason) = ingress::refused_source(&t.src, meta.l3, snapshot) {
            return Verdict::Drop(reason);
        }
        if meta.ttl <= 1 {
            return Verdict::Drop(DropReason::TtlExpired);
        }
        if service.scheduler().fanout().is_some() {
            let udp_timeout = fanout::udp_timeout_ns(cx.flows);
            return self.fanout_datagram(
                frame,
                meta,
                key_hash,
                service_id,
                service,
                udp_timeout,
                snapshot,
                cx.ingress,
            );
        }
        // Flow control, once per new flow: a service without limits pays
        // this one test.
        let admitted = match service.limits() {
            None => None,
            Some(limits) => match self.admit_new_flow(service_id, limits, meta, cx.now_ns) {
                Some(flow) => Some((flow, limits)),
                None => return self.refuse_new_flow(frame, meta, service_id, limits, cx),
            },
        };
        // A cookie-valid ACK (the XDP program's mark, honoured for a
        // proxied service only) opens the connection as a SYN would.
        let marked = service.syn_proxy().is_enabled() && synproxy::is_cookie_ack(frame, meta);
        let syn = meta.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN || marked;
        // The backend choice's hash: pinned, so that every gateway and
        // every release choose alike.
        let hash = flow_hash(t);
        let path = match cx.paths {
            Some(view) => self.path_choice(view, service_id, service, meta, hash, cx),
            None => None,
        };
        let chosen = match (path, service.routes()) {
            (Some(id), _) => Ok(id),
            (None, None) => self.scheduled_choice(service_id, service, meta, hash, syn, cx),
            (None, Some(routes)) => {
                self.routed_choice(service_id, service, routes, meta, hash, syn, cx)
            }
        };
        let verdict = match (admitted, chosen) {
            (None, Ok(endpoint_id)) => {
                let to = (service_id, endpoint_id);
                self.place_new_flow(frame, meta, key_hash, to, syn, cx)
            }
            (None, Err(verdict)) => verdict,
            (Some((flow, limits)), chosen) => {
                let to = (service_id, chosen, syn);
                self.place_admitted(frame, meta, key_hash, to, flow, limits, cx)
            }
        };
        if marked {
            return self.open_backend(frame, meta, key_hash, verdict, cx);
        }
        verdict
    }

    /// The client and service rate checks of a new flow of a limited
    /// service; `None` when one refuses (counted by reason).
    #[inline(never)]
    fn admit_new_flow(
        &mut self,
        service_id: ServiceId,
        limits: &CompiledLimits,
        meta: &PacketMeta,
        now_ns: u64,
    ) -> Option<AdmittedFlow> {
        let client = self
            .client_params
            .get(service_id as usize)
            .copied()
            .flatten();
        let view = limits.worker_view(client.as_ref());
        self.admission
            .admit_flow(service_id, &meta.tuple.src, view, now_ns)
            .ok()
    }

    /// The rest of an admitted new flow: no backend gives its charges
    /// back; its backend's cap is checked; a connection that cannot be
    /// recorded gives its charges back too. `to` is the service id, the
    /// scheduler's choice and whether the packet is a SYN.
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn place_admitted(
        &mut self,
        frame: &mut [u8],
        meta: &PacketMeta,
        key_hash: u64,
        (service_id, chosen, syn): (ServiceId, Result<EndpointId, Verdict>, bool),
        flow: AdmittedFlow,
        limits: &CompiledLimits,
        cx: &mut Context<'_>,
    ) -> Verdict {
        let client = self
            .client_params
            .get(service_id as usize)
            .copied()
            .flatten();
        let view: ServiceLimits<'_> = limits.worker_view(client.as_ref());
        let endpoint_id = match chosen {
            Ok(id) => id,
            Err(verdict) => {
                self.admission.cancel(flow, view);
                return verdict;
            }
        };
        if limits.capped() {
            if let Some(cap) = cx.snapshot.endpoint_cap(endpoint_id) {
                if self
                    .admission
                    .check_backend(&flow, view, endpoint_id, cap)
                    .is_err()
                {
                    return self.refuse_new_flow(frame, meta, service_id, limits, cx);
                }
            }
        }
        let to = (service_id, endpoint_id);
        let verdict = self.place_new_flow(frame, meta, key_hash, to, syn, cx);
        if let Verdict::Transmit(_) = verdict {
            self.admission.done(flow);
        } else {
            self.admission.cancel(flow, view);
        }
        verdict
    }

    /// What a refused new flow gets (already counted by reason): dropped
    /// (`over_limit`), or for `over_limit = "reset"` answered with a RST
    /// from the VIP, out of the port it came in on.
    #[cold]
    #[inline(never)]
    fn refuse_new_flow(
        &mut self,
        frame: &mut [u8],
        meta: &PacketMeta,
        service_id: ServiceId,
        limits: &CompiledLimits,
        cx: &Context<'_>,
    ) -> Verdict {
        if limits.over_limit() == OverLimitAction::Reset {
            let written = RefusedSegment::from_frame(frame, meta)
                .and_then(|segment| write_reset(&segment, frame).ok());
            // A RST from the client is not answered.
            if let Some(len) = written {
                // Never longer than the segment it answers.
                self.answers.push((frame.as_ptr() as usize, len as u32));
                self.admission.reset_sent(service_id);
                return Verdict::Transmit(cx.ingress);
            }
        }
        Verdict::Drop(DropReason::OverLimit)
    }

    /// A packet of no connection and no service: an ICMP error about a
    /// connection ([`icmp_error`]), a backend's reply with no connection
    /// ([`stateless_reply`]), or not ours (passed).
    #[cold]
    #[inline(never)]
    fn no_service(&mut self, frame: &mut [u8], meta: &PacketMeta, cx: &mut Context<'_>) -> Verdict {
        if wire::quoted::is_translated_error(meta) {
            return self.icmp_error(frame, meta, cx);
        }
        // A fan-out backend's reply finds its client in the fan-out table
        // (`fanout_reply` passes at once while no service fans out); one
        // that finds none goes on as any reply with no connection.
        let udp_timeout = fanout::udp_timeout_ns(cx.flows);
        let verdict = self.fanout_reply(frame, meta, udp_timeout, cx.snapshot);
        if verdict != Verdict::Pass {
            return verdict;
        }
        self.stateless_reply(frame, meta, cx.snapshot, cx.ingress)
    }

    /// The endpoint a distribution path sends a new flow to: the path's
    /// backend for the flow if it is alive, else the first alive one of
    /// the path's others (in the order given, from the flow's); `None`
    /// when the client has no path, or none of its backends takes new
    /// flows (down, draining, gone), counted as a fallback.
    #[inline]
    fn path_choice(
        &mut self,
        view: &PathView,
        service_id: ServiceId,
        service: &CompiledService,
        meta: &PacketMeta,
        hash: u64,
        cx: &Context<'_>,
    ) -> Option<EndpointId> {
        let client = ClientAddr::from_bytes(&meta.tuple.src);
        let target = view.lookup(service_id, client)?;
        let (snapshot, now_ns) = (cx.snapshot, cx.now_ns);
        let takes = |backend| {
            let id = service.path_backend(backend)?;
            let weighted = snapshot.endpoint(id).is_some_and(|e| e.weight > 0);
            (weighted && snapshot.liveness().is_alive(id, now_ns)).then_some(id)
        };
        let chosen = takes(target.pick(hash)).or_else(|| match target {
            PathTarget::One(_) => None,
            // The others, from the flow's own (no allocation).
            PathTarget::Many(list) => {
                let start = ((u128::from(hash) * target.len() as u128) >> 64) as usize;
                let rest = list.iter().take(start);
                list.iter().skip(start).chain(rest).find_map(takes)
            }
        });
        if let Some(c) = self.route_counters.service(service_id) {
            match chosen {
                Some(_) => c.path_flows.inc(),
                None => c.path_fallbacks.inc(),
            }
        }
        chosen
    }

    /// The endpoint a new flow of a service that does not route by client
    /// gets: its scheduler's pick over the whole service, or the skip
    /// rule's, or the service's `when_all_down`; `Err` with the verdict
    /// when it gets none.
    #[inline(always)]
    fn scheduled_choice(
        &mut self,
        service_id: ServiceId,
        service: &CompiledService,
        meta: &PacketMeta,
        hash: u64,
        syn: bool,
        cx: &Context<'_>,
    ) -> Result<EndpointId, Verdict> {
        let (snapshot, now_ns) = (cx.snapshot, cx.now_ns);
        let t = &meta.tuple;
        let is_tcp = t.protocol == ip_proto::TCP;
        let (pick, pick_hash) = match service.scheduler() {
            Scheduler::Maglev => (service.maglev_lookup(hash), hash),
            Scheduler::Sh => {
                let source = source_hash(&t.src);
                (service.maglev_lookup(source), source)
            }
            Scheduler::Wrr => {
                if is_tcp && !syn {
                    return Err(Verdict::Drop(DropReason::NoConnection));
                }
                (self.next_wrr(service_id, service.wrr_schedule()), hash)
            }
            // Fan-out datagrams never reach a scheduler.
            Scheduler::Fanout(_) => return Err(Verdict::Drop(DropReason::NoBackend)),
        };
        let Some(pick) = pick else {
            return Err(Verdict::Drop(match service.mode() {
                Mode::AllDownClosed => DropReason::AllBackendsDown,
                _ => DropReason::NoBackend,
            }));
        };
        self.alive_choice(service, pick, pick_hash, snapshot, now_ns)
            .ok_or(Verdict::Drop(DropReason::AllBackendsDown))
    }

    /// The endpoint a new flow of a service that routes by client gets:
    /// the routing decision's (`Snapshot::route_new_flow`), counted by
    /// stage; with nothing alive, `Err` for a SET client (failing closed)
    /// or the service's own choice otherwise. Out of line: a service that
    /// does not route by client pays one test for it.
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn routed_choice(
        &mut self,
        service_id: ServiceId,
        service: &CompiledService,
        routes: &ServiceRoutes,
        meta: &PacketMeta,
        hash: u64,
        syn: bool,
        cx: &Context<'_>,
    ) -> Result<EndpointId, Verdict> {
        let t = &meta.tuple;
        let pick_hash = match service.scheduler() {
            Scheduler::Maglev => hash,
            Scheduler::Sh => source_hash(&t.src),
            Scheduler::Wrr => {
                if t.protocol == ip_proto::TCP && !syn {
                    return Err(Verdict::Drop(DropReason::NoConnection));
                }
                hash
            }
            Scheduler::Fanout(_) => return Err(Verdict::Drop(DropReason::NoBackend)),
        };
        let query = RouteQuery {
            client: ClientAddr::from_bytes(&t.src),
            hash,
            pick_hash,
            now_ns: cx.now_ns,
        };
        // Every id of an adopted snapshot has a slot; a lone stand-in
        // keeps the counting branch-free otherwise.
        let stand_in = ServiceRouteCounters::default();
        let c = self.route_counters.service(service_id).unwrap_or(&stand_in);
        match cx.snapshot.route_new_flow(service, routes, &query, &mut ()) {
            Routed::Placed {
                endpoint,
                set,
                step,
                skipped,
                canary,
                ..
            } => {
                if !matches!(set, SetStage::None) {
                    c.set_flows.inc();
                }
                if canary {
                    c.canary_flows.inc();
                }
                if step == 0 {
                    c.first_choice.inc();
                } else {
                    c.fallbacks.inc();
                }
                if skipped {
                    self.counters.liveness_skips.inc();
                }
                Ok(endpoint)
            }
            Routed::Closed { .. } => {
                c.set_closed.inc();
                Err(Verdict::Drop(DropReason::AllBackendsDown))
            }
            Routed::Unplaced => {
                c.unplaced.inc();
                self.scheduled_choice(service_id, service, meta, hash, syn, cx)
            }
            Routed::Plain => self.scheduled_choice(service_id, service, meta, hash, syn, cx),
        }
    }

    /// Records the new flow of service `service_id` on `endpoint_id` and
    /// rewrites its packet.
    #[inline(always)]
    fn place_new_flow(
        &mut self,
        frame: &mut [u8],
        meta: &PacketMeta,
        key_hash: u64,
        (service_id, endpoint_id): (ServiceId, EndpointId),
        syn: bool,
        cx: &mut Context<'_>,
    ) -> Verdict {
        let Context {
            snapshot,
            ref mut flows,
            ingress,
            now_ns,
            ..
        } = *cx;
        let t = &meta.tuple;
        let is_tcp = t.protocol == ip_proto::TCP;
        let Some(backend) = snapshot.endpoint(endpoint_id) else {
            return Verdict::Drop(DropReason::NoBackend);
        };
        if backend.next_hop_mac.is_none() {
            return Verdict::Drop(DropReason::NoNeighbour);
        }
        let state = if !is_tcp {
            FlowState::Udp
        } else if syn {
            FlowState::TcpSyn
        } else if meta.tcp_flags & (tcp_flags::FIN | tcp_flags::RST) != 0 {
            FlowState::TcpClosing
        } else {
            FlowState::TcpEstablished
        };
        let conn = Connection {
            client: *t,
            backend_addr: backend.address,
            backend_port: backend.port,
            endpoint: endpoint_id,
            client_mac: source_mac(frame),
            client_ingress: ingress,
            state,
            last_seen_ns: now_ns,
        };
        // An IPv4 packet's client address is IPv4-mapped: of the reply
        // tuple's two addresses only the backend's needs asking.
        let reply = conn.reply_tuple();
        let reply_hash = if meta.l3 == L3::Ipv4 && wire::is_v4_mapped(&backend.address) {
            table_hash_v4(&reply)
        } else {
            table_hash(&reply)
        };
        // The checksum changes: the endpoint's, worked out at the build,
        // where it is a backend of the service the packet is for (its
        // VIP and port are the packet's destination: the service lookup
        // is exact); any other, a distribution path's say, works them out.
        let deltas = if backend.service == service_id {
            let (to_backend, to_client) = backend.vip_deltas();
            RewriteDeltas {
                to_backend,
                to_client,
            }
        } else {
            conn.rewrite_deltas()
        };
        // Every way here starts from a lookup of the client tuple that
        // missed, or from removing its record.
        let id = flows.insert_absent_with(conn, deltas, key_hash, reply_hash, now_ns);
        if id.is_none() {
            return Verdict::Drop(DropReason::FlowTableFull);
        }
        self.counters.new_flows.inc();
        flows.count_packet(endpoint_id, frame.len() as u64);
        // The bytes `to_backend` would write, without working them out.
        let deltas = deltas.to_backend;
        // A neighbour is known (above): the MACs are written.
        set_backend_macs(frame, backend);
        wire::rewrite::forward_rewrite_dst(frame, meta, &backend.address, backend.port, deltas);
        Verdict::Transmit(backend.egress_port)
    }

    /// The endpoint a new flow gets, given its scheduler's `pick` by
    /// `pick_hash`: the pick if it is alive (or the service ignores health
    /// in its mode), else the skip rule's; `None` if none is alive and the
    /// service fails closed. The common case — a healthy service whose
    /// pick is alive — is one load and a compare; the rest is out of line.
    #[inline(always)]
    fn alive_choice(
        &self,
        service: &CompiledService,
        pick: EndpointId,
        pick_hash: u64,
        snapshot: &Snapshot,
        now_ns: u64,
    ) -> Option<EndpointId> {
        if service.mode() == Mode::Healthy && snapshot.liveness().is_alive(pick, now_ns) {
            return Some(pick);
        }
        self.other_choice(service, pick, pick_hash, snapshot, now_ns)
    }

    /// [`alive_choice`](Self::alive_choice) when the pick is dead or the
    /// service is not healthy.
    #[cold]
    #[inline(never)]
    fn other_choice(
        &self,
        service: &CompiledService,
        pick: EndpointId,
        pick_hash: u64,
        snapshot: &Snapshot,
        now_ns: u64,
    ) -> Option<EndpointId> {
        let c = &*self.counters;
        match service.mode() {
            Mode::Healthy => {
                let liveness = snapshot.liveness();
                match service.next_alive(pick_hash, |id| liveness.is_alive(id, now_ns)) {
                    Some(id) => {
                        c.liveness_skips.inc();
                        Some(id)
                    }
                    None => match service.failover().when_all_down {
                        WhenAllDown::Open => {
                            c.failed_open_flows.inc();
                            Some(pick)
                        }
                        WhenAllDown::Closed => None,
                    },
                }
            }
            Mode::Panic => {
                c.panic_flows.inc();
                Some(pick)
            }
            Mode::AllDownOpen => {
                c.failed_open_flows.inc();
                Some(pick)
            }
            // Its tables are empty: no pick reaches here.
            Mode::AllDownClosed => None,
        }
    }

    /// A packet of connection `id`, from its client, whose endpoint is not
    /// alive and whose service acts on that (`action`): the connection is
    /// forgotten, and the packet dropped, answered with a RST, or (UDP)
    /// scheduled afresh.
    fn dead_backend(
        &mut self,
        frame: &mut [u8],
        meta: &PacketMeta,
        hash: u64,
        id: ConnId,
        action: IfDead,
        cx: &mut Context<'_>,
    ) -> Verdict {
        cx.flows.remove(id);
        match action {
            IfDead::Drop => Verdict::Drop(DropReason::BackendDown),
            IfDead::Reschedule => {
                self.counters.dead_backend_rescheduled.inc();
                self.new_flow(frame, meta, hash, cx)
            }
            IfDead::Reset => {
                let written = RefusedSegment::from_frame(frame, meta)
                    .ok_or(())
                    .and_then(|segment| write_reset(&segment, frame).map_err(drop));
                match written {
                    Ok(len) => {
                        // The RST is never longer than the segment it
                        // answers (same headers, no options, no payload).
                        self.answers.push((frame.as_ptr() as usize, len as u32));
                        self.counters.dead_backend_resets.inc();
                        Verdict::Transmit(cx.ingress)
                    }
                    // A RST from the client is not answered.
                    Err(()) => Verdict::Drop(DropReason::BackendDown),
                }
            }
        }
    }

    /// The next backend of a `wrr` service for this worker.
    #[inline]
    fn next_wrr(&mut self, service: ServiceId, schedule: &[u32]) -> Option<u32> {
        if schedule.is_empty() {
            return None;
        }
        // adopt() sized the cursors for this snapshot's service ids.
        let cursor = self.wrr_cursors.get_mut(service as usize)?;
        let pick = schedule.get(*cursor as usize % schedule.len()).copied();
        *cursor = cursor.wrapping_add(1);
        pick
    }
}

/// A secret seed for a worker's per-client table, so that a flood cannot
/// aim its sources at one set.
/// The verdict on a frame the parser refused: a protocol the gateway
/// does not handle is the kernel's, anything else malformed.
fn parse_error(e: ParseError) -> Verdict {
    match e {
        ParseError::UnsupportedEthertype => Verdict::Pass,
        e => Verdict::Drop(DropReason::Malformed(e)),
    }
}

fn client_table_seed() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(0x666c_6f77_6761_7465_u64)
}

/// Rewrites a client's packet towards `backend` and names its port; the
/// caller has checked that a neighbour is known for it.
#[inline]
fn to_backend(frame: &mut [u8], meta: &PacketMeta, backend: &Endpoint) -> Verdict {
    set_backend_macs(frame, backend);
    wire::rewrite::rewrite_dst(frame, meta, &backend.address, backend.port);
    wire::rewrite::decrement_ttl(frame, meta);
    Verdict::Transmit(backend.egress_port)
}

/// The source MAC for a frame leaving on `port`: the interface's MAC, or
/// where the config names none, the MAC the frame was sent to (ours).
#[inline]
fn egress_mac(frame: &[u8], snapshot: &Snapshot, port: u16) -> [u8; 6] {
    snapshot
        .interface_mac(port)
        .unwrap_or_else(|| mac_at(frame, 0))
}

/// Writes the MACs of a frame sent to `backend`: its next hop's, and
/// its egress interface's ([`egress_mac`] of its egress port, as the
/// build looked it up); false, writing nothing, where no neighbour is
/// known for it. Every path towards a backend writes them so.
#[inline(always)]
fn set_backend_macs(frame: &mut [u8], backend: &Endpoint) -> bool {
    if let Some(macs) = &backend.egress_macs {
        wire::rewrite::set_mac_header(frame, macs);
        return true;
    }
    let Some(next_hop) = backend.next_hop_mac else {
        return false;
    };
    let src_mac = backend.egress_mac.unwrap_or_else(|| mac_at(frame, 0));
    wire::rewrite::set_macs(frame, src_mac, next_hop);
    true
}

/// The frame's source MAC.
#[inline]
fn source_mac(frame: &[u8]) -> [u8; 6] {
    mac_at(frame, 6)
}

#[inline]
fn mac_at(frame: &[u8], offset: usize) -> [u8; 6] {
    let mut mac = [0u8; 6];
    if let Some(bytes) = frame.get(offset..offset + 6) {
        mac.copy_from_slice(bytes);
    }
    mac
}

#[cfg(test)]
mod limits_tests;
#[cfg(test)]
mod plain_tests;
#[cfg(test)]
mod synproxy_tests;
#[cfg(test)]
mod tests;
