//! The worker: one poll step over a set of ports.
//!
//! A worker owns its pipeline, its connection table and its free frames.
//! [`Worker::poll`] is one turn of the DPDK-style loop: recycle completed
//! frames, top up receive rings, receive a burst per port, run the
//! pipeline, and send each frame where its verdict says — all in batches.
//! The production daemon calls it in a pinned `while !quit` loop over
//! AF_XDP ports; `flowgate replay`, tests and benches call it over
//! in-memory ports. The snapshot and the time are passed in, once per poll.

use crate::flow::FlowTable;
use crate::pipeline::{DropReason, Pipeline, Verdict};
use crate::port::{FrameDesc, FrameMemory, FramePool, Port};
use crate::table::Snapshot;

/// Most frames taken from one port per poll.
pub const DEFAULT_BATCH: usize = 64;

/// Connection records examined for expiry per poll: keeps the table's
/// size honest without a stop-the-world sweep.
const EXPIRE_BUDGET: usize = 64;

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

/// One worker's state.
pub struct Worker {
    pipeline: Pipeline,
    flows: FlowTable,
    pool: FramePool,
    batch: usize,
    rx: Vec<FrameDesc>,
    verdicts: Vec<Verdict>,
    /// Frames to send, per egress port.
    tx: Vec<Vec<FrameDesc>>,
}

impl Worker {
    /// A worker for `ports` ports, taking up to `batch` frames per port
    /// per poll. Everything it needs is allocated here.
    pub fn new(flows: FlowTable, pool: FramePool, ports: usize, batch: usize) -> Self {
        let batch = batch.max(1);
        Worker {
            pipeline: Pipeline::new(),
            flows,
            pool,
            batch,
            rx: Vec::with_capacity(batch),
            verdicts: Vec::with_capacity(batch),
            // Each port can receive `batch` frames that all go to one port.
            tx: (0..ports)
                .map(|_| Vec::with_capacity(batch * ports))
                .collect(),
        }
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
    /// how many frames were received.
    pub fn poll<P: Port, M: FrameMemory + ?Sized, K: KernelPath>(
        &mut self,
        ports: &mut [P],
        memory: &mut M,
        snapshot: &Snapshot,
        kernel: &mut K,
        now_ns: u64,
    ) -> usize {
        for port in ports.iter_mut() {
            port.reclaim(&mut self.pool);
            port.refill(&mut self.pool);
        }
        let mut received = 0;
        for (ingress, port) in ports.iter_mut().enumerate() {
            self.rx.clear();
            let n = port.receive(&mut self.rx, self.batch);
            if n == 0 {
                continue;
            }
            received += n;
            let ingress = u16::try_from(ingress).unwrap_or(u16::MAX);
            self.pipeline.process_batch(
                memory,
                &self.rx,
                ingress,
                snapshot,
                &mut self.flows,
                now_ns,
                &mut self.verdicts,
            );
            for (&desc, &verdict) in self.rx.iter().zip(&self.verdicts) {
                match verdict {
                    Verdict::Transmit(egress) => match self.tx.get_mut(egress as usize) {
                        Some(queue) => queue.push(desc),
                        None => {
                            self.pipeline.counters().drop_for(DropReason::NoEgressPort);
                            free(&mut self.pool, desc);
                        }
                    },
                    Verdict::Pass => {
                        kernel.pass(ingress, memory.frame(desc));
                        free(&mut self.pool, desc);
                    }
                    Verdict::Drop(_) => free(&mut self.pool, desc),
                }
            }
        }
        self.send(ports);
        self.flows.expire(now_ns, EXPIRE_BUDGET);
        received
    }

    /// Sends every queued frame on its port; frames a full ring refuses
    /// are dropped and counted.
    fn send<P: Port>(&mut self, ports: &mut [P]) {
        let counters = self.pipeline.counters();
        for (queue, port) in self.tx.iter_mut().zip(ports.iter_mut()) {
            if queue.is_empty() {
                continue;
            }
            let accepted = port.transmit(queue);
            let sent = queue.get(..accepted).unwrap_or(&[]);
            counters.tx_packets.add(sent.len() as u64);
            counters
                .tx_bytes
                .add(sent.iter().map(|d| u64::from(d.len)).sum());
            for &desc in queue.get(accepted..).unwrap_or(&[]) {
                counters.drop_for(DropReason::TxRingFull);
                free(&mut self.pool, desc);
            }
            queue.clear();
            port.flush();
        }
    }
}

/// Returns a frame to the pool. A refused put means a frame was freed twice:
/// a bug, loud in debug builds, harmless (the frame stays free) in release.
#[inline]
fn free(pool: &mut FramePool, desc: FrameDesc) {
    let freed = pool.put(desc.addr);
    debug_assert!(freed, "frame {} freed twice", desc.addr);
}
