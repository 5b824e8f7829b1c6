//! Fan-out in the data path: a client's datagram to a fan-out service goes
//! to every receiver (`table::fanout`), and every receiver's reply comes
//! back from the VIP.
//!
//! The original frame goes to the first receiver, rewritten in place like
//! any new flow's packet; the pipeline notes a copy job for it, and after
//! the batch [`Pipeline::emit_fanout_copies`] copies it, as rewritten,
//! into frames taken from the worker's free pool and rewrites each copy's
//! destination (MACs and address; the TTL is already decremented) for the
//! next receiver. Copies take a frame only while the pool keeps more than
//! a reserve (see [`fanout_reserve`]): when the share of the pool copies
//! may use is spent, copies are dropped and counted
//! (`fanout_copy_no_frame`), never waited for, so other traffic always
//! finds frames to receive into.
//!
//! State: one [`FanoutFlow`] per client flow (5-tuple to the VIP), in a
//! fixed table of [`FANOUT_FLOWS`] entries per worker allocated when the
//! first fan-out service appears. It knows the client's MAC and port and,
//! for `fanout_replies = "first"`, whether the client's latest datagram
//! was answered. It does not list the backends: a reply from any backend
//! of the service finds it through the snapshot's index of fan-out
//! backends (backend → service → VIP) and the client's address and port.
//! So an entry is 64 bytes whatever the number of backends, and a backend
//! added or removed counts from the next datagram on. Entries idle out
//! after the UDP timeout and are replaced in place; a full probe window
//! evicts its oldest entry (counted). A flow lives the UDP timeout after
//! the client's latest datagram; replies do not extend it. When a backend
//! serves several fan-out services and a client sent to more than one of
//! them from the same port, a reply is taken for the service whose
//! datagram was the latest. Fan-out flows never enter the connection
//! table, so the kernel fast path never sees them: every
//! datagram needs the worker for its copies.

use std::time::Duration;

use super::{egress_mac, mac_at, source_mac, DropReason, Pipeline, Verdict};
use crate::hash::table_hash;
use crate::port::{Frame, FrameMemory, FramePool};
use crate::route::ClientAddr;
use crate::rules::FanoutReplies;
use crate::table::{CompiledService, EndpointId, NoReceiver, ServiceId, Snapshot};
use crate::wire::{self, FiveTuple, PacketMeta};

/// Fan-out client flows one worker tracks (64 bytes each: 4 MiB).
pub const FANOUT_FLOWS: usize = 65_536;

/// Share of a worker's frames, in percent, that fan-out copies may hold
/// at once by default.
pub const DEFAULT_FANOUT_FRAME_SHARE: u32 = 50;

/// Entries a key may live in, from its hash's slot on.
const PROBE: usize = 8;

/// The free frames a worker's pool keeps back from fan-out copies, for a
/// worker with `frames` free frames when idle, of which copies may hold
/// `share_percent` %: copies take a frame only while the pool has more
/// than this, so the frames copies hold at once never exceed the share
/// and the rest stay free for receiving.
pub fn fanout_reserve(frames: usize, share_percent: u32) -> usize {
    let share = u64::from(share_percent.min(100));
    let frames = frames as u64;
    (frames - frames * share / 100) as usize
}

/// One client flow of a fan-out service: 64 bytes.
#[derive(Clone, Copy, Debug, Default)]
struct FanoutFlow {
    /// The client's datagrams' tuple (client → VIP): the key.
    client: FiveTuple,
    /// When the client's latest datagram came.
    last_seen_ns: u64,
    service: ServiceId,
    client_mac: [u8; 6],
    client_ingress: u16,
    /// `first`: a reply went to the client since its latest datagram.
    answered: bool,
    used: bool,
}

/// The fixed table of fan-out client flows.
#[derive(Debug)]
struct FanoutFlows {
    slots: Box<[FanoutFlow]>,
    mask: usize,
}

impl FanoutFlows {
    fn new(capacity: usize) -> FanoutFlows {
        let capacity = capacity.next_power_of_two().max(PROBE);
        FanoutFlows {
            slots: vec![FanoutFlow::default(); capacity].into_boxed_slice(),
            mask: capacity - 1,
        }
    }

    /// Whether `flow` is alive at `now_ns` with idle timeout `timeout_ns`.
    #[inline]
    fn live(flow: &FanoutFlow, now_ns: u64, timeout_ns: u64) -> bool {
        flow.used && now_ns.saturating_sub(flow.last_seen_ns) <= timeout_ns
    }

    /// The slot of the live flow `key` (hash `hash`).
    #[inline]
    fn find(&self, key: &FiveTuple, hash: u64, now_ns: u64, timeout_ns: u64) -> Option<usize> {
        let base = hash as usize;
        (0..PROBE).map(|k| (base + k) & self.mask).find(|&i| {
            self.slots
                .get(i)
                .is_some_and(|f| f.client == *key && Self::live(f, now_ns, timeout_ns))
        })
    }

    /// The slot for a new flow `key`: a free or idle one of its window,
    /// else its oldest (whose flow is evicted: the `bool`).
    #[inline]
    fn place(&self, hash: u64, now_ns: u64, timeout_ns: u64) -> (usize, bool) {
        let base = hash as usize;
        let mut oldest = (base & self.mask, u64::MAX);
        for k in 0..PROBE {
            let i = (base + k) & self.mask;
            let Some(f) = self.slots.get(i) else {
                continue;
            };
            if !Self::live(f, now_ns, timeout_ns) {
                return (i, false);
            }
            if f.last_seen_ns < oldest.1 {
                oldest = (i, f.last_seen_ns);
            }
        }
        (oldest.0, true)
    }
}

/// A frame of the batch whose copies are still to be made.
#[derive(Clone, Copy, Debug)]
struct CopyJob {
    /// The frame, by the address of its first byte.
    at: usize,
    meta: PacketMeta,
    service: ServiceId,
    /// The receiver the frame itself went to.
    first: EndpointId,
}

/// A worker's fan-out state: its client flows and the batch's copy jobs.
#[derive(Debug, Default)]
pub(super) struct Fanout {
    flows: Option<FanoutFlows>,
    jobs: Vec<CopyJob>,
    /// The frame being copied, as rewritten for its first receiver.
    scratch: Vec<u8>,
    /// The batch's time.
    now_ns: u64,
}

impl Fanout {
    /// Starts a batch of `frames` frames at `now_ns`: no jobs, room for
    /// one per frame.
    #[inline]
    pub(super) fn begin(&mut self, frames: usize, now_ns: u64) {
        self.jobs.clear();
        self.jobs.reserve(frames);
        self.now_ns = now_ns;
    }

    /// Makes room for client flows once a snapshot has a fan-out service.
    pub(super) fn adopt(&mut self, snapshot: &Snapshot) {
        if self.flows.is_none() && !snapshot.fanout_index().is_empty() {
            self.flows = Some(FanoutFlows::new(FANOUT_FLOWS));
        }
    }
}

impl Pipeline {
    /// A client's datagram to fan-out service `service`: recorded as (or
    /// refreshing) its client flow, rewritten for the first receiver, and
    /// noted for copies to the others.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    pub(super) fn fanout_datagram(
        &mut self,
        frame: &mut [u8],
        meta: &PacketMeta,
        hash: u64,
        service_id: ServiceId,
        service: &CompiledService,
        udp_timeout_ns: u64,
        snapshot: &Snapshot,
        ingress: u16,
    ) -> Verdict {
        let now_ns = self.fanout.now_ns;
        let client = ClientAddr::from_bytes(&meta.tuple.src);
        let targets = match snapshot.fanout_targets(service, client, now_ns) {
            Ok(targets) => targets,
            Err(NoReceiver::AllDown) => return Verdict::Drop(DropReason::AllBackendsDown),
            Err(NoReceiver::None) => return Verdict::Drop(DropReason::NoBackend),
        };
        let first = targets
            .first(snapshot, now_ns)
            .and_then(|i| targets.list().get(i).copied());
        let Some((first, backend)) = first.and_then(|id| Some((id, snapshot.endpoint(id)?))) else {
            return Verdict::Drop(DropReason::NoBackend);
        };
        if backend.next_hop_mac.is_none() {
            return Verdict::Drop(DropReason::NoNeighbour);
        }
        let Some(flows) = self.fanout.flows.as_mut() else {
            return Verdict::Drop(DropReason::FlowTableFull);
        };
        let key = meta.tuple;
        let slot = match flows.find(&key, hash, now_ns, udp_timeout_ns) {
            Some(i) => i,
            None => {
                let (i, evicted) = flows.place(hash, now_ns, udp_timeout_ns);
                if evicted {
                    self.counters.fanout_flow_evictions.inc();
                }
                self.counters.new_flows.inc();
                i
            }
        };
        if let Some(flow) = flows.slots.get_mut(slot) {
            *flow = FanoutFlow {
                client: key,
                last_seen_ns: now_ns,
                service: service_id,
                client_mac: source_mac(frame),
                client_ingress: ingress,
                answered: false,
                used: true,
            };
        }
        self.counters.fanout_datagrams.inc();
        self.fanout.jobs.push(CopyJob {
            at: frame.as_ptr() as usize,
            meta: *meta,
            service: service_id,
            first,
        });
        super::to_backend(frame, meta, backend)
    }

    /// A frame with no connection, to no service: a reply of a fan-out
    /// backend to its client goes back from the VIP (for `first`, only
    /// the first after each client datagram); anything else goes to the
    /// kernel.
    #[inline]
    pub(super) fn fanout_reply(
        &mut self,
        frame: &mut [u8],
        meta: &PacketMeta,
        udp_timeout_ns: u64,
        snapshot: &Snapshot,
    ) -> Verdict {
        if snapshot.fanout_index().is_empty() {
            return Verdict::Pass;
        }
        self.fanout_reply_of_member(frame, meta, udp_timeout_ns, snapshot)
    }

    #[cold]
    #[inline(never)]
    fn fanout_reply_of_member(
        &mut self,
        frame: &mut [u8],
        meta: &PacketMeta,
        udp_timeout_ns: u64,
        snapshot: &Snapshot,
    ) -> Verdict {
        let t = &meta.tuple;
        let members = snapshot
            .fanout_index()
            .members(t.protocol, &t.src, t.src_port);
        let now_ns = self.fanout.now_ns;
        let Some(flows) = self.fanout.flows.as_mut() else {
            return Verdict::Pass;
        };
        // A backend of several fan-out services may answer a client that
        // sent to more than one of them from the same port: the reply is
        // the most recent datagram's.
        let mut found: Option<(usize, &CompiledService, FiveTuple)> = None;
        for &(service_id, _) in members {
            let Some(service) = snapshot.service(service_id) else {
                continue;
            };
            let key = FiveTuple {
                src: t.dst,
                dst: *service.vip(),
                src_port: t.dst_port,
                dst_port: service.port(),
                protocol: t.protocol,
            };
            let slot = flows
                .find(&key, table_hash(&key), now_ns, udp_timeout_ns)
                .filter(|&i| flows.slots.get(i).is_some_and(|f| f.service == service_id));
            let newer = |i: usize, j: usize| {
                let seen = |k: usize| flows.slots.get(k).map_or(0, |f| f.last_seen_ns);
                seen(i) > seen(j)
            };
            match (slot, found) {
                (Some(i), Some((j, _, _))) if !newer(i, j) => {}
                (Some(i), _) => found = Some((i, service, key)),
                (None, _) => {}
            }
        }
        let Some((slot, service, key)) = found else {
            return Verdict::Pass;
        };
        let Some(flow) = flows.slots.get_mut(slot) else {
            return Verdict::Pass;
        };
        if meta.ttl <= 1 {
            return Verdict::Drop(DropReason::TtlExpired);
        }
        if service.scheduler().fanout() == Some(FanoutReplies::First) {
            if flow.answered {
                return Verdict::Drop(DropReason::FanoutReplyAfterFirst);
            }
            flow.answered = true;
        }
        // Replies do not keep a flow: it lives the UDP timeout after the
        // client's latest datagram.
        let (mac, port) = (flow.client_mac, flow.client_ingress);
        self.counters.flow_hits.inc();
        let src_mac = egress_mac(frame, snapshot, port);
        wire::rewrite::set_macs(frame, src_mac, mac);
        wire::rewrite::rewrite_src(frame, meta, &key.dst, key.dst_port);
        wire::rewrite::decrement_ttl(frame, meta);
        Verdict::Transmit(port)
    }

    /// Makes the copies the last batch's fan-out datagrams need: each
    /// frame of `frames` that [`fanout_datagram`](Self::fanout_datagram)
    /// sent to its first receiver is copied, as rewritten, for every other
    /// receiver, into a frame from `pool`, and queued on `tx[port]`. A
    /// copy takes a frame only while `pool` holds more than `reserve`;
    /// the ones that find none are dropped and counted. Call it after the
    /// batch's pipeline call, before its frames move on, with the same
    /// snapshot.
    pub fn emit_fanout_copies<M: FrameMemory + ?Sized>(
        &mut self,
        memory: &mut M,
        frames: &[Frame],
        snapshot: &Snapshot,
        pool: &mut FramePool,
        reserve: usize,
        tx: &mut [Vec<Frame>],
    ) {
        if self.fanout.jobs.is_empty() {
            return;
        }
        let jobs = std::mem::take(&mut self.fanout.jobs);
        let mut scratch = std::mem::take(&mut self.fanout.scratch);
        let now_ns = self.fanout.now_ns;
        // Jobs are in frame order: one walk finds their frames.
        let mut frames = frames.iter();
        for job in &jobs {
            let Some(frame) = frames.find(|f| memory.frame(f).as_ptr() as usize == job.at) else {
                break;
            };
            scratch.clear();
            scratch.extend_from_slice(memory.frame(frame));
            if snapshot.vlans().configured() {
                super::vlan::untag_sent(&mut scratch, &job.meta);
            }
            self.copy_to_receivers(memory, &scratch, job, snapshot, now_ns, pool, reserve, tx);
        }
        self.fanout.scratch = scratch;
        self.fanout.jobs = jobs;
        self.fanout.jobs.clear();
    }

    /// The copies of one frame (`bytes`, as sent to `job.first`).
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn copy_to_receivers<M: FrameMemory + ?Sized>(
        &self,
        memory: &mut M,
        bytes: &[u8],
        job: &CopyJob,
        snapshot: &Snapshot,
        now_ns: u64,
        pool: &mut FramePool,
        reserve: usize,
        tx: &mut [Vec<Frame>],
    ) {
        let c = &*self.counters;
        let Some(service) = snapshot.service(job.service) else {
            return;
        };
        let client = ClientAddr::from_bytes(&job.meta.tuple.src);
        let Ok(targets) = snapshot.fanout_targets(service, client, now_ns) else {
            return;
        };
        // Where the config names no interfaces, copies leave from the MAC
        // the original now leaves from (ours).
        let own_mac = mac_at(bytes, 6);
        let mut made = 0u64;
        for &id in targets.list() {
            if id == job.first || !targets.takes(snapshot, id, now_ns) {
                continue;
            }
            let Some(backend) = snapshot.endpoint(id) else {
                continue;
            };
            let Some(next_hop) = backend.next_hop_mac else {
                continue;
            };
            let Some(queue) = tx.get_mut(usize::from(backend.egress_port)) else {
                c.drop_for(DropReason::NoEgressPort);
                continue;
            };
            let taken = if pool.len() > reserve {
                pool.take()
            } else {
                None
            };
            let Some(mut frame) = taken else {
                c.drop_for(DropReason::FanoutCopyNoFrame);
                continue;
            };
            if !memory.write(&mut frame, bytes) {
                pool.put(frame);
                c.drop_for(DropReason::FanoutCopyNoFrame);
                continue;
            }
            let out = memory.frame_mut(&mut frame);
            let src_mac = snapshot
                .interface_mac(backend.egress_port)
                .unwrap_or(own_mac);
            wire::rewrite::set_macs(out, src_mac, next_hop);
            wire::rewrite::rewrite_dst(out, &job.meta, &backend.address, backend.port);
            if let Some(id) = snapshot.vlans().port(backend.egress_port).egress() {
                // The copy leaves tagged with its port's id.
                let len = frame.len();
                frame.set_len(len + 4);
                if !super::vlan::push_tag(memory.frame_mut(&mut frame), len as usize, id) {
                    frame.set_len(len);
                    pool.put(frame);
                    c.drop_for(DropReason::VlanNoRoom);
                    continue;
                }
            }
            queue.push(frame);
            made += 1;
        }
        c.fanout_copies.add(made);
    }
}

/// The UDP idle timeout of fan-out flows, from the connection table's.
#[inline]
pub(super) fn udp_timeout_ns(flows: &crate::flow::FlowTable) -> u64 {
    flows
        .timeouts()
        .udp_ns
        .max(Duration::from_millis(1).as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fanout_flow_is_64_bytes() {
        assert_eq!(std::mem::size_of::<FanoutFlow>(), 64);
    }

    #[test]
    fn the_reserve_leaves_copies_their_share() {
        assert_eq!(fanout_reserve(16_384, 50), 8_192);
        assert_eq!(fanout_reserve(1_000, 0), 1_000);
        assert_eq!(fanout_reserve(1_000, 100), 0);
        assert_eq!(fanout_reserve(1_000, 250), 0);
    }

    fn tuple(port: u16) -> FiveTuple {
        FiveTuple {
            src: [9; 16],
            dst: [1; 16],
            src_port: port,
            dst_port: 53,
            protocol: 17,
        }
    }

    #[test]
    fn flows_are_found_until_they_idle_out_and_a_full_window_evicts_its_oldest() {
        let mut flows = FanoutFlows::new(8);
        // Eight flows, all in one window (same hash).
        for p in 0..8u16 {
            let (i, evicted) = flows.place(0, u64::from(p), 100);
            assert!(!evicted);
            flows.slots[i] = FanoutFlow {
                client: tuple(p),
                last_seen_ns: u64::from(p),
                used: true,
                ..FanoutFlow::default()
            };
        }
        for p in 0..8u16 {
            assert!(flows.find(&tuple(p), 0, 10, 100).is_some());
        }
        // The ninth evicts the oldest (port 0).
        let (i, evicted) = flows.place(0, 10, 100);
        assert!(evicted);
        assert_eq!(flows.slots[i].client, tuple(0));
        // Past the timeout a flow is gone, and its slot free.
        assert!(flows.find(&tuple(7), 0, 107, 100).is_some());
        assert!(flows.find(&tuple(0), 0, 101, 100).is_none());
        assert_eq!(flows.place(0, 101, 100), (i, false));
    }
}
