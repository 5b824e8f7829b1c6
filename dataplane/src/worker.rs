//! The worker: one poll step over a set of ports.
//!
//! A worker owns its pipeline, its connection table and its free frames.
//! [`Worker::poll`] is one turn of the DPDK-style loop: recycle completed
//! frames, top up receive rings, receive a burst per port, run the
//! pipeline, and send each frame where its verdict says — all in batches.
//! The production daemon calls it in a pinned `while !quit` loop over
//! AF_XDP ports; `flowgate replay`, tests and benches call it over
//! in-memory ports. The snapshot and the time are passed in, once per poll.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::capture::CaptureTap;
use crate::fastpath::connection_rewrites;
use crate::flow::walk_pace::WalkPace;
use crate::flow::FlowTable;
use crate::handoff::{owner_of_frame, HandedFrame, Handoff};
use crate::pipeline::{
    fanout_reserve, parse_batch, touch_frames, DropReason, Parsed, Pipeline, Verdict,
    DEFAULT_FANOUT_FRAME_SHARE,
};
use crate::port::{Frame, FrameMemory, FramePool, Port};
use crate::table::Snapshot;

/// Most frames taken from one port per poll.
pub const DEFAULT_BATCH: usize = 64;

/// Where frames with the [`Verdict::Pass`] verdict go: the kernel's stack.
pub trait KernelPath {
    /// Hands one frame, received on port `ingress`, to the kernel.
    fn pass(&mut self, ingress: u16, frame: &[u8]);
}

/// A kernel path that only counts (for benches, and tools that do not
/// care about passed frames).
#[derive(Debug, Default)]
pub struct CountingKernelPath {
    /// Frames passed.
    pub frames: u64,
}

impl KernelPath for CountingKernelPath {
    fn pass(&mut self, _ingress: u16, _frame: &[u8]) {
        self.frames += 1;
    }
}

/// What a worker counts outside the pipeline: hand-overs between workers
/// and the snapshot generation it runs. Single writer (the worker), read
/// by the control thread.
#[derive(Debug, Default)]
pub struct WorkerCounters {
    /// Frames handed to the worker that owns their connection.
    pub handed_out: AtomicU64,
    /// Frames received from other workers.
    pub handed_in: AtomicU64,
    /// Frames dropped because the owner's inbox was full.
    pub handoff_full: AtomicU64,
    /// Snapshot generation of the worker's latest batch (0 before any).
    pub generation: AtomicU64,
    /// Polls that found no frame.
    pub idle_polls: AtomicU64,
    /// Polls, busy or idle: flat only when the worker is stuck.
    pub polls: AtomicU64,
}

impl WorkerCounters {
    #[inline]
    fn add(counter: &AtomicU64, n: u64) {
        // Single writer: a plain load and store, no locked instruction.
        counter.store(
            counter.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }
}

/// One worker's state.
pub struct Worker {
    pipeline: Pipeline,
    flows: FlowTable,
    pool: FramePool,
    batch: usize,
    /// Frames received from one port.
    rx: Vec<Frame>,
    /// With other workers: the parse of each frame in `rx`.
    parsed: Vec<Parsed>,
    /// With other workers: the frames of a batch this worker owns, and
    /// their parse (received here, or handed over by their receiver).
    mine: Vec<Frame>,
    mine_parsed: Vec<Parsed>,
    verdicts: Vec<Verdict>,
    /// Frames to send, per egress port.
    tx: Vec<Vec<Frame>>,
    handoff: Option<Handoff>,
    counters: Arc<WorkerCounters>,
    forward_only: bool,
    /// Share of the worker's free frames, in percent, fan-out copies may
    /// hold at once.
    fanout_share: u32,
    /// The most frames the pool held after topping up the receive rings:
    /// the worker's free frames when idle.
    free_high: usize,
    /// Free frames fan-out copies leave in the pool.
    fanout_reserve: usize,
    /// `flowgatectl capture`'s view of decided frames.
    capture: CaptureTap,
    /// The pace of the walks round the table: the expiry sweep and the
    /// fast path's traffic walk, each given the same number of records.
    walk_pace: WalkPace,
}

impl Worker {
    /// A worker for `ports` ports, taking up to `batch` frames per port
    /// per poll. Everything it needs is allocated here.
    pub fn new(flows: FlowTable, pool: FramePool, ports: usize, batch: usize) -> Self {
        let batch = batch.max(1);
        let records = flows.capacity();
        Worker {
            pipeline: Pipeline::new(),
            flows,
            pool,
            batch,
            rx: Vec::with_capacity(batch),
            parsed: Vec::new(),
            mine: Vec::new(),
            mine_parsed: Vec::new(),
            verdicts: Vec::with_capacity(batch),
            // Each port can receive `batch` frames that all go to one port.
            tx: (0..ports)
                .map(|_| Vec::with_capacity(batch * ports))
                .collect(),
            handoff: None,
            counters: Arc::default(),
            forward_only: false,
            fanout_share: DEFAULT_FANOUT_FRAME_SHARE,
            free_high: 0,
            fanout_reserve: 0,
            capture: CaptureTap::detached(),
            walk_pace: WalkPace::new(records),
        }
    }

    /// Lets fan-out copies hold at most `percent` % of the worker's free
    /// frames (default [`DEFAULT_FANOUT_FRAME_SHARE`]): the frames its
    /// pool holds when idle, once the receive rings have theirs. A copy
    /// takes a frame only while the pool keeps the rest.
    pub fn with_fanout_share(mut self, percent: u32) -> Self {
        self.fanout_share = percent;
        self.fanout_reserve = fanout_reserve(self.free_high, percent);
        self
    }

    /// Makes this worker a plain forwarder that sends every frame from
    /// port `i` out of the next port (`(i + 1) % ports`), untouched: no
    /// parsing, no rules, no connection tracking. It measures the I/O
    /// floor — what the rings and the machine cost without the pipeline.
    pub fn forward_only(mut self) -> Self {
        self.forward_only = true;
        self
    }

    /// Makes this worker read distribution paths through `reader`: a new
    /// flow of a service with paths looks its client up first.
    pub fn with_paths(mut self, reader: crate::route::PathReader) -> Self {
        self.pipeline.set_paths(reader);
        self
    }

    /// Lets captures see the frames this worker decides, through `tap`.
    pub fn with_capture(mut self, tap: CaptureTap) -> Self {
        self.capture = tap;
        self
    }

    /// Gives this worker its share of the admission state (see
    /// [`Pipeline::set_admission`]); its connection table counts its
    /// connections on the same backend lanes.
    pub fn with_admission(mut self, admission: crate::admission::WorkerAdmission) -> Self {
        self.flows
            .set_connection_lanes(admission.backends().clone());
        self.pipeline.set_admission(admission);
        self
    }

    /// Makes this worker one of several: frames whose connection another
    /// worker owns are handed to it, and frames handed to this one are
    /// processed here.
    pub fn with_handoff(mut self, handoff: Handoff) -> Self {
        self.handoff = Some(handoff);
        self.parsed = Vec::with_capacity(self.batch);
        self.mine = Vec::with_capacity(self.batch);
        self.mine_parsed = Vec::with_capacity(self.batch);
        self
    }

    /// Counters of hand-overs and the generation in use.
    pub fn counters(&self) -> &Arc<WorkerCounters> {
        &self.counters
    }

    /// The pipeline (counters).
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// The connection table.
    pub fn flows(&self) -> &FlowTable {
        &self.flows
    }

    /// The free frames.
    pub fn pool(&self) -> &FramePool {
        &self.pool
    }

    /// One turn of the loop over `ports` (port index = position). Returns
    /// how many frames were received (from ports and from other workers).
    pub fn poll<P: Port, M: FrameMemory + ?Sized, K: KernelPath>(
        &mut self,
        ports: &mut [P],
        memory: &mut M,
        snapshot: &Snapshot,
        kernel: &mut K,
        now_ns: u64,
    ) -> usize {
        self.counters
            .generation
            .store(snapshot.generation(), Ordering::Relaxed);
        for port in ports.iter_mut() {
            port.reclaim(&mut self.pool);
            port.refill(&mut self.pool);
        }
        if self.pool.len() > self.free_high {
            self.free_high = self.pool.len();
            self.fanout_reserve = fanout_reserve(self.free_high, self.fanout_share);
        }
        let mut received = 0;
        for (ingress, port) in ports.iter_mut().enumerate() {
            let n = port.receive(&mut self.rx, self.batch);
            if n == 0 {
                continue;
            }
            received += n;
            let ingress = u16::try_from(ingress).unwrap_or(u16::MAX);
            let mut rx = std::mem::take(&mut self.rx);
            if self.handoff.is_some() && !self.forward_only {
                self.process_shared(&mut rx, ingress, memory, snapshot, kernel, now_ns);
            } else {
                self.process(&mut rx, None, ingress, memory, snapshot, kernel, now_ns);
            }
            self.rx = rx;
        }
        received += self.process_handed(memory, snapshot, kernel, now_ns);
        self.send(ports);
        // The kernel fast path: install what became established, check
        // the entries against a new snapshot (nothing without one).
        // The walks round the table (the fast path's traffic, the expiry
        // sweep) go at a pace set by time, not by polls (`WalkPace`).
        let walk_budget = self.walk_pace.budget(now_ns);
        self.flows
            .sync_fast_path_walking(snapshot.generation(), walk_budget, |c| {
                connection_rewrites(c, snapshot)
            });
        if walk_budget > 0 {
            self.flows.expire(now_ns, walk_budget);
        }
        if let Some(handoff) = &self.handoff {
            handoff.balance(&mut self.pool);
        }
        WorkerCounters::add(&self.counters.polls, 1);
        if received == 0 {
            WorkerCounters::add(&self.counters.idle_polls, 1);
        }
        received
    }

    /// With other workers: parses and hashes the frames of one port once,
    /// hands the ones another worker owns to it with their parse and
    /// hash (a full inbox drops the frame, counted), and processes the
    /// rest with theirs. Empties `frames`.
    #[allow(clippy::too_many_arguments)]
    fn process_shared<M: FrameMemory + ?Sized, K: KernelPath>(
        &mut self,
        frames: &mut Vec<Frame>,
        ingress: u16,
        memory: &mut M,
        snapshot: &Snapshot,
        kernel: &mut K,
        now_ns: u64,
    ) {
        let Some(handoff) = self.handoff.take() else {
            return;
        };
        let (me, workers) = (handoff.me(), handoff.workers());
        let mut parsed = std::mem::take(&mut self.parsed);
        let mut mine = std::mem::take(&mut self.mine);
        let mut mine_parsed = std::mem::take(&mut self.mine_parsed);
        parse_batch(memory, frames, &mut parsed);
        mine.clear();
        mine_parsed.clear();
        let (mut out, mut full) = (0, 0);
        for (i, frame) in frames.drain(..).enumerate() {
            let Some(p) = parsed.get(i) else {
                // `parse_batch` parses every frame; were one left out, it
                // would be parsed here, not lost.
                mine_parsed.push(Parsed::of(memory.frame(&frame)));
                mine.push(frame);
                continue;
            };
            let bytes = memory.frame(&frame);
            let owner = owner_of_frame(p, bytes, snapshot, workers, me);
            // `owner_of` names another worker only for frames of a flow.
            let flow = if owner == me { None } else { p.flow(bytes) };
            let Some((meta, hash)) = flow else {
                mine_parsed.push(*p);
                mine.push(frame);
                continue;
            };
            let handed = HandedFrame {
                frame,
                meta,
                hash,
                ingress,
            };
            match handoff.send(owner, handed) {
                Ok(()) => out += 1,
                Err(back) => {
                    full += 1;
                    self.pool.put(back.frame);
                }
            }
        }
        WorkerCounters::add(&self.counters.handed_out, out);
        WorkerCounters::add(&self.counters.handoff_full, full);
        self.handoff = Some(handoff);
        self.process(
            &mut mine,
            Some(&mine_parsed),
            ingress,
            memory,
            snapshot,
            kernel,
            now_ns,
        );
        self.parsed = parsed;
        self.mine = mine;
        self.mine_parsed = mine_parsed;
    }

    /// Processes frames other workers handed over, with the parse and
    /// hash they came with, in runs of one ingress port (in the order
    /// they arrived). Returns how many.
    fn process_handed<M: FrameMemory + ?Sized, K: KernelPath>(
        &mut self,
        memory: &mut M,
        snapshot: &Snapshot,
        kernel: &mut K,
        now_ns: u64,
    ) -> usize {
        let Some(handoff) = self.handoff.take() else {
            return 0;
        };
        let max = self.batch * self.tx.len().max(1);
        let mut mine = std::mem::take(&mut self.mine);
        let mut mine_parsed = std::mem::take(&mut self.mine_parsed);
        mine.clear();
        mine_parsed.clear();
        let mut run_ingress = 0;
        let mut n = 0;
        while n < max {
            let Some(handed) = handoff.receive() else {
                break;
            };
            n += 1;
            if !mine.is_empty() && (handed.ingress != run_ingress || mine.len() >= self.batch) {
                // Parsed on another core: warmed here as a batch first.
                touch_frames(memory, &mine);
                self.process(
                    &mut mine,
                    Some(&mine_parsed),
                    run_ingress,
                    memory,
                    snapshot,
                    kernel,
                    now_ns,
                );
                mine_parsed.clear();
            }
            let HandedFrame {
                frame,
                meta,
                hash,
                ingress,
            } = handed;
            run_ingress = ingress;
            mine.push(frame);
            mine_parsed.push(Parsed::of_flow(meta, hash));
        }
        touch_frames(memory, &mine);
        self.process(
            &mut mine,
            Some(&mine_parsed),
            run_ingress,
            memory,
            snapshot,
            kernel,
            now_ns,
        );
        if n > 0 {
            WorkerCounters::add(&self.counters.handed_in, n as u64);
        }
        self.handoff = Some(handoff);
        self.mine = mine;
        self.mine_parsed = mine_parsed;
        n
    }

    /// Runs the pipeline over `frames` from port `ingress` (with their
    /// parse, if known: then the frames must be warm, as `parse_batch` or
    /// `touch_frames` leaves them) and queues, passes or frees each frame
    /// as its verdict says. Empties `frames`.
    #[allow(clippy::too_many_arguments)]
    fn process<M: FrameMemory + ?Sized, K: KernelPath>(
        &mut self,
        frames: &mut Vec<Frame>,
        parsed: Option<&[Parsed]>,
        ingress: u16,
        memory: &mut M,
        snapshot: &Snapshot,
        kernel: &mut K,
        now_ns: u64,
    ) {
        if frames.is_empty() {
            return;
        }
        if self.forward_only {
            let counters = self.pipeline.counters();
            counters.rx_packets.add(frames.len() as u64);
            let ports = self.tx.len().max(1);
            match self.tx.get_mut((usize::from(ingress) + 1) % ports) {
                Some(queue) => queue.append(frames),
                None => {
                    for frame in frames.drain(..) {
                        self.pool.put(frame);
                    }
                }
            }
            return;
        }
        match parsed {
            Some(parsed) => self.pipeline.process_parsed(
                memory,
                frames,
                parsed,
                ingress,
                snapshot,
                &mut self.flows,
                now_ns,
                &mut self.verdicts,
            ),
            None => self.pipeline.process_batch(
                memory,
                frames,
                ingress,
                snapshot,
                &mut self.flows,
                now_ns,
                &mut self.verdicts,
            ),
        }
        self.pipeline.emit_fanout_copies(
            memory,
            frames,
            snapshot,
            &mut self.pool,
            self.fanout_reserve,
            &mut self.tx,
        );
        // A capture's one look per batch: an atomic load while none runs.
        if let Some(mut capture) = self.capture.armed() {
            for (frame, verdict) in frames.iter().zip(&self.verdicts) {
                capture.offer(|| memory.frame(frame), ingress, *verdict, now_ns);
            }
        }
        for (i, frame) in frames.drain(..).enumerate() {
            // The pipeline gives one verdict per frame; were one missing,
            // the frame would go back to the pool, not be lost.
            let verdict = self
                .verdicts
                .get(i)
                .copied()
                .unwrap_or(Verdict::Drop(DropReason::NoEgressPort));
            match verdict {
                Verdict::Transmit(egress) => match self.tx.get_mut(egress as usize) {
                    Some(queue) => queue.push(frame),
                    None => {
                        self.pipeline.counters().drop_for(DropReason::NoEgressPort);
                        self.pool.put(frame);
                    }
                },
                Verdict::Pass => {
                    kernel.pass(ingress, memory.frame(&frame));
                    self.pool.put(frame);
                }
                Verdict::Drop(_) => self.pool.put(frame),
            }
        }
    }

    /// Sends every queued frame on its port; frames a full ring refuses
    /// come back, and are dropped and counted.
    fn send<P: Port>(&mut self, ports: &mut [P]) {
        let counters = self.pipeline.counters();
        for (queue, port) in self.tx.iter_mut().zip(ports.iter_mut()) {
            if queue.is_empty() {
                continue;
            }
            let queued = queue.len();
            let bytes: u64 = queue.iter().map(|f| u64::from(f.len())).sum();
            let accepted = port.transmit(queue);
            let refused_bytes: u64 = queue.iter().map(|f| u64::from(f.len())).sum();
            counters.tx_packets.add(accepted.min(queued) as u64);
            counters.tx_bytes.add(bytes.saturating_sub(refused_bytes));
            for frame in queue.drain(..) {
                counters.drop_for(DropReason::TxRingFull);
                self.pool.put(frame);
            }
            port.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::FlowTimeouts;
    use crate::handoff::owner_of;
    use crate::port::{MemoryFrames, MemoryPort};
    use crate::rules;
    use crate::wire::builder::FrameBuilder;
    use std::net::SocketAddr;

    const GW_CLIENT: [u8; 6] = [0x02, 0x66, 0x67, 0, 0, 0x01];
    const GW_BACKEND: [u8; 6] = [0x02, 0x66, 0x67, 0, 0x01, 0x01];
    const CLIENT: [u8; 6] = [0x02, 0x66, 0x67, 0, 0, 0x02];

    fn demo_snapshot() -> Snapshot {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/demo.toml");
        Snapshot::build(&rules::load_file(&path).unwrap(), None)
    }

    /// Two workers, each with queue `w` of both interfaces, on one frame
    /// memory; both directions of every flow are injected on worker 0's
    /// queues, and must leave on its owner's.
    #[test]
    fn frames_of_another_workers_flow_are_handed_over_both_ways() {
        let snapshot = demo_snapshot();
        let mut memory = MemoryFrames::new(256, 2048);
        let mut pools = memory.split_pools(2);
        let handoffs = Handoff::set(2, 64, 256);
        let timeouts = FlowTimeouts::default();
        let mut workers: Vec<Worker> = handoffs
            .into_iter()
            .map(|h| {
                let pool = pools.remove(0);
                Worker::new(FlowTable::new(1024, timeouts), pool, 2, 16).with_handoff(h)
            })
            .collect();
        let mut ports: Vec<Vec<MemoryPort>> = (0..2)
            .map(|w| {
                vec![
                    MemoryPort::new(format!("fg-client/q{w}"), 64),
                    MemoryPort::new(format!("fg-backend/q{w}"), 64),
                ]
            })
            .collect();
        let mut kernel = CountingKernelPath::default();
        let mut poll_all = |workers: &mut Vec<Worker>,
                            ports: &mut Vec<Vec<MemoryPort>>,
                            memory: &mut MemoryFrames| {
            for _ in 0..3 {
                for (w, worker) in workers.iter_mut().enumerate() {
                    worker.poll(&mut ports[w], memory, &snapshot, &mut kernel, 1);
                }
            }
        };
        // Prime the fill rings.
        poll_all(&mut workers, &mut ports, &mut memory);

        let clients: Vec<SocketAddr> = (20_000..20_016u16)
            .map(|p| SocketAddr::new("198.18.0.2".parse().unwrap(), p))
            .collect();
        let vip: SocketAddr = "198.18.100.10:53".parse().unwrap();
        for client in &clients {
            let frame = FrameBuilder::udp(*client, vip)
                .macs(CLIENT, GW_CLIENT)
                .build();
            assert!(ports[0][0].inject(&mut memory, &frame));
        }
        poll_all(&mut workers, &mut ports, &mut memory);

        // Every request left on its owner's backend-facing queue.
        let mut backend_of = Vec::new();
        for (w, worker_ports) in ports.iter_mut().enumerate() {
            let mut out = Vec::new();
            worker_ports[1].take_transmitted(&memory, &mut out);
            for frame in out {
                let meta = crate::wire::parse(&frame).unwrap();
                let client = SocketAddr::new(meta.tuple.src_ip(), meta.tuple.src_port);
                let request = FrameBuilder::udp(client, vip).build();
                assert_eq!(
                    owner_of(&Parsed::of(&request), &request, &snapshot, 2, 9),
                    w
                );
                backend_of.push((
                    client,
                    SocketAddr::new(meta.tuple.dst_ip(), meta.tuple.dst_port),
                ));
            }
        }
        assert_eq!(backend_of.len(), clients.len());
        let handed = workers[0].counters().handed_out.load(Ordering::Relaxed);
        assert!(handed > 0 && handed < 16, "{handed} of 16 handed over");
        assert_eq!(
            workers[1].counters().handed_in.load(Ordering::Relaxed),
            handed
        );

        // Replies, all on worker 0's backend queue, find their connection
        // at the owner and go back to the client from the VIP.
        for (client, backend) in &backend_of {
            let frame = FrameBuilder::udp(*backend, *client)
                .macs([2, 0x66, 0x67, 0, 1, 0x11], GW_BACKEND)
                .build();
            assert!(ports[0][1].inject(&mut memory, &frame));
        }
        poll_all(&mut workers, &mut ports, &mut memory);
        let mut replies = 0;
        for worker_ports in ports.iter_mut() {
            let mut out = Vec::new();
            worker_ports[0].take_transmitted(&memory, &mut out);
            for frame in out {
                let meta = crate::wire::parse(&frame).unwrap();
                assert_eq!(
                    SocketAddr::new(meta.tuple.src_ip(), meta.tuple.src_port),
                    vip
                );
                replies += 1;
            }
        }
        assert_eq!(replies, clients.len());
        let dropped: u64 = workers
            .iter()
            .map(|w| w.pipeline().counters().dropped())
            .sum();
        assert_eq!(dropped, 0);
        // No frame lost: every frame is free again, in one pool or spare.
        poll_all(&mut workers, &mut ports, &mut memory);
        let held: usize = ports.iter().flatten().map(MemoryPort::frames_held).sum();
        let free: usize = workers.iter().map(|w| w.pool().len()).sum();
        let spare = workers[0].handoff.as_ref().unwrap().spare_frames();
        assert_eq!(held + free + spare, 256);
    }

    /// Traffic that all arrives on one worker's queues, half of it for the
    /// other worker, moves frames to the other worker's pool; the spare
    /// queue must bring them back, or the receiving worker runs dry.
    #[test]
    fn one_sided_traffic_does_not_starve_the_receiving_worker() {
        let snapshot = demo_snapshot();
        let mut memory = MemoryFrames::new(128, 2048);
        let pools = memory.split_pools(2);
        let handoffs = Handoff::set(2, 64, 128);
        let mut workers: Vec<Worker> = pools
            .into_iter()
            .zip(handoffs)
            .map(|(pool, h)| {
                Worker::new(FlowTable::new(4096, FlowTimeouts::default()), pool, 2, 16)
                    .with_handoff(h)
            })
            .collect();
        let mut ports: Vec<Vec<MemoryPort>> = (0..2)
            .map(|_| vec![MemoryPort::new("c", 8), MemoryPort::new("b", 8)])
            .collect();
        let mut kernel = CountingKernelPath::default();
        let vip: SocketAddr = "198.18.100.10:53".parse().unwrap();
        let mut out = Vec::new();
        let mut sent = 0;
        for round in 0..200u16 {
            for (w, worker) in workers.iter_mut().enumerate() {
                worker.poll(&mut ports[w], &mut memory, &snapshot, &mut kernel, 1);
            }
            for i in 0..8 {
                let client = SocketAddr::new("198.18.0.2".parse().unwrap(), 1024 + round * 8 + i);
                let frame = FrameBuilder::udp(client, vip)
                    .macs(CLIENT, GW_CLIENT)
                    .build();
                assert!(
                    ports[0][0].inject(&mut memory, &frame),
                    "worker 0 has no free frame in round {round}"
                );
            }
            for (w, worker) in workers.iter_mut().enumerate() {
                worker.poll(&mut ports[w], &mut memory, &snapshot, &mut kernel, 1);
            }
            for worker_ports in ports.iter_mut() {
                sent += worker_ports[1].take_transmitted(&memory, &mut out);
            }
        }
        // The last round's hand-overs leave on the next poll.
        for (w, worker) in workers.iter_mut().enumerate() {
            worker.poll(&mut ports[w], &mut memory, &snapshot, &mut kernel, 1);
        }
        for worker_ports in ports.iter_mut() {
            sent += worker_ports[1].take_transmitted(&memory, &mut out);
        }
        assert_eq!(sent, 1600);
        assert!(workers[1].counters().handed_in.load(Ordering::Relaxed) > 400);
    }

    /// The owner of a handed frame processes it with the parse and hash
    /// it came with: a frame whose bytes would not parse is forwarded as
    /// its carried parse says.
    #[test]
    fn a_handed_frame_is_processed_with_the_parse_it_came_with() {
        let snapshot = demo_snapshot();
        let mut memory = MemoryFrames::new(64, 2048);
        let mut pool = memory.pool();
        let mut handoffs = Handoff::set(2, 8, 64);
        let sender = handoffs.remove(0);
        let mut owner = Worker::new(
            FlowTable::new(64, FlowTimeouts::default()),
            FramePool::with_capacity(64),
            2,
            16,
        )
        .with_handoff(handoffs.remove(0));
        let mut ports = vec![MemoryPort::new("c", 16), MemoryPort::new("b", 16)];
        let mut kernel = CountingKernelPath::default();

        let request = FrameBuilder::udp(
            "198.18.0.2:20000".parse().unwrap(),
            "198.18.100.10:53".parse().unwrap(),
        )
        .macs(CLIENT, GW_CLIENT)
        .build();
        let parsed = Parsed::of(&request);
        let (meta, hash) = parsed.flow(&request).unwrap();
        let mut frame = pool.take().unwrap();
        // Junk after the destination MAC (which the ingress check reads
        // from the frame).
        let mut junk = vec![0xee; request.len()];
        junk[..6].copy_from_slice(&request[..6]);
        assert!(crate::wire::parse(&junk).is_err());
        assert!(memory.write(&mut frame, &junk));
        let handed = HandedFrame {
            frame,
            meta,
            hash,
            ingress: 0,
        };
        assert!(sender.send(1, handed).is_ok());

        assert_eq!(
            owner.poll(&mut ports, &mut memory, &snapshot, &mut kernel, 1),
            1
        );
        let c = owner.pipeline().counters().snapshot();
        assert_eq!((c.rx_packets, c.new_flows, c.tx_packets), (1, 1, 1));
        assert_eq!(owner.counters().handed_in.load(Ordering::Relaxed), 1);
        let mut out = Vec::new();
        ports[1].take_transmitted(&memory, &mut out);
        assert_eq!(out.len(), 1, "sent towards the backend");
        // The frame comes back to the owner's pool.
        owner.poll(&mut ports, &mut memory, &snapshot, &mut kernel, 2);
        assert_eq!(
            owner.pool().len() + ports[0].frames_held() + ports[1].frames_held(),
            1
        );
    }

    #[test]
    fn forward_only_sends_every_frame_out_of_the_other_port_untouched() {
        let snapshot = demo_snapshot();
        let mut memory = MemoryFrames::new(32, 2048);
        let pool = memory.pool();
        let mut worker =
            Worker::new(FlowTable::new(16, FlowTimeouts::default()), pool, 2, 8).forward_only();
        let mut ports = vec![MemoryPort::new("a", 8), MemoryPort::new("b", 8)];
        let mut kernel = CountingKernelPath::default();
        worker.poll(&mut ports, &mut memory, &snapshot, &mut kernel, 1);
        // Not for any service, not even IP: forwarded all the same.
        let junk = [0xabu8; 60];
        let udp = FrameBuilder::udp(
            "198.18.0.2:9".parse().unwrap(),
            "198.18.1.11:9".parse().unwrap(),
        )
        .build();
        assert!(ports[0].inject(&mut memory, &junk));
        assert!(ports[1].inject(&mut memory, &udp));
        worker.poll(&mut ports, &mut memory, &snapshot, &mut kernel, 2);
        let (mut out_a, mut out_b) = (Vec::new(), Vec::new());
        ports[0].take_transmitted(&memory, &mut out_a);
        ports[1].take_transmitted(&memory, &mut out_b);
        assert_eq!(out_b, vec![junk.to_vec()]);
        assert_eq!(out_a, vec![udp]);
        assert_eq!(kernel.frames, 0);
        assert_eq!(worker.pipeline().counters().rx_packets.get(), 2);
    }
}
