//! A worker thread: one [`Worker`] pinned to its core, polling its ports
//! until told to stop.
//!
//! Everything a worker touches per batch is its own — ports, frame memory
//! handle, connection table, counters — except the snapshot, which it loads
//! lock-free once per poll. The control thread reads the worker's counters
//! (single-writer atomics) and its sockets' statistics (through descriptors
//! of its own) without the worker's help; the one thing it asks of a worker
//! is a listing of connections (`flowgatectl flows`), which the worker
//! answers a bounded step per poll ([`FlowQueryServer`]), and a
//! takeover's first copy of its table, the same way ([`CopyServer`]). No
//! lock, no allocation and no system call on the worker's side for any of
//! it.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::first_copy::CopyServer;
use super::flow_query::FlowQueryServer;
use crate::port::{FrameMemory, Port};
use crate::rules::IdlePolicy;
use crate::table::{Snapshot, SnapshotReader};
use crate::worker::{KernelPath, Worker};

/// Empty polls an adaptive worker spins through before it naps.
const SPIN_POLLS: u32 = 2_000;
/// How long an idle adaptive worker naps between polls, at most: short
/// enough that a burst after a quiet spell waits little. A publish ends
/// the nap at once (the worker is unparked), so a new snapshot does not
/// wait for it.
const NAP: Duration = Duration::from_micros(50);

/// The control thread's handle on a running worker.
#[derive(Debug)]
pub struct WorkerHandle<R> {
    /// Worker index.
    pub index: usize,
    /// Core it is pinned to.
    pub core: usize,
    thread: Option<JoinHandle<R>>,
}

impl<R> WorkerHandle<R> {
    /// Whether the thread has ended (it should only after the stop flag).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Waits for the worker to end (after the stop flag was raised) and
    /// returns what it handed back, or None if it panicked.
    pub fn join(mut self) -> Option<R> {
        self.thread.take().and_then(|t| t.join().ok())
    }
}

/// What a worker thread runs with.
pub struct WorkerSetup<P, M, K> {
    /// Worker index (for names and logs).
    pub index: usize,
    /// Core to pin to.
    pub core: usize,
    /// The worker's state.
    pub worker: Worker,
    /// Its ports, in interface order.
    pub ports: Vec<P>,
    /// Its handle on the frame memory.
    pub memory: M,
    /// Where passed frames go.
    pub kernel: K,
    /// The current rules.
    pub snapshots: SnapshotReader,
    /// What to do when idle.
    pub idle: IdlePolicy,
    /// Raised to stop the worker.
    pub stop: Arc<AtomicBool>,
    /// The daemon's clock origin.
    pub epoch: Instant,
    /// The worker's end of `flowgatectl flows` listings.
    pub flow_queries: FlowQueryServer,
    /// The worker's end of a takeover's first copy of its table.
    pub first_copy: CopyServer,
    /// Whether the worker takes over from another process's: it marks
    /// its first poll and its first frame on the takeover's timeline.
    pub taking_over: bool,
}

/// What a stopped worker hands back: its state and ports, so the daemon
/// can close them in order and account for every frame.
pub struct WorkerExit<P> {
    /// The worker.
    pub worker: Worker,
    /// Its ports.
    pub ports: Vec<P>,
}

/// Starts a worker thread pinned to `setup.core`.
pub fn spawn<P, M, K>(setup: WorkerSetup<P, M, K>) -> io::Result<WorkerHandle<WorkerExit<P>>>
where
    P: Port + Send + 'static,
    M: FrameMemory + Send + 'static,
    K: KernelPath + Send + 'static,
{
    let index = setup.index;
    let core = setup.core;
    let thread = std::thread::Builder::new()
        .name(format!("fg-worker-{index}"))
        .spawn(move || {
            if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                tracing::warn!(
                    worker = index,
                    core,
                    "could not pin worker to its core; running unpinned"
                );
            }
            run(setup)
        })?;
    Ok(WorkerHandle {
        index,
        core,
        thread: Some(thread),
    })
}

/// One turn of a worker thread's loop, everything it does between two
/// snapshot loads: a poll of its ports ([`Worker::poll`]), then one
/// bounded step of the `flows` listing in progress, if any. Benches and
/// tests time and check this as "a poll". Returns the frames received.
pub fn turn<P: Port, M: FrameMemory, K: KernelPath>(
    worker: &mut Worker,
    ports: &mut [P],
    memory: &mut M,
    kernel: &mut K,
    flow_queries: &mut FlowQueryServer,
    snapshot: &Snapshot,
    now_ns: u64,
) -> usize {
    let received = worker.poll(ports, memory, snapshot, kernel, now_ns);
    flow_queries.serve(worker.flows());
    received
}

fn run<P: Port, M: FrameMemory, K: KernelPath>(setup: WorkerSetup<P, M, K>) -> WorkerExit<P> {
    let WorkerSetup {
        index,
        mut worker,
        mut ports,
        mut memory,
        mut kernel,
        snapshots,
        idle,
        stop,
        epoch,
        mut flow_queries,
        mut first_copy,
        taking_over,
        ..
    } = setup;
    tracing::info!(worker = index, ports = ports.len(), "worker started");
    snapshots.wake_on_publish();
    let mut empty_polls: u32 = 0;
    // Until the first frame of a takeover is marked.
    let mut first_frame_due = taking_over;
    if taking_over {
        super::takeover::mark("new: a worker polls");
    }
    while !stop.load(Ordering::Relaxed) {
        let snapshot = snapshots.load();
        let now_ns = u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let received = turn(
            &mut worker,
            &mut ports,
            &mut memory,
            &mut kernel,
            &mut flow_queries,
            &snapshot,
            now_ns,
        );
        drop(snapshot);
        first_copy.serve(worker.flows());
        if first_frame_due && received > 0 {
            first_frame_due = false;
            super::takeover::mark("new: a worker's first frame");
        }
        // A listing or a copy in progress is work: it goes on at full
        // speed.
        if received > 0 || flow_queries.is_busy() || first_copy.is_busy() {
            empty_polls = 0;
            continue;
        }
        empty_polls = empty_polls.saturating_add(1);
        if idle == IdlePolicy::Adaptive && empty_polls > SPIN_POLLS {
            std::thread::park_timeout(NAP);
        } else {
            std::hint::spin_loop();
        }
    }
    tracing::info!(worker = index, "worker stopped");
    WorkerExit { worker, ports }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::flow_query::{self, flow_queries};
    use crate::flow::{Connection, FlowFilter, FlowRecord, FlowState, FlowTable, FlowTimeouts};
    use crate::hash::table_hash;
    use crate::port::{MemoryFrames, MemoryPort};
    use crate::rules;
    use crate::table::SnapshotPublisher;
    use crate::wire::{v4_mapped, FiveTuple};
    use crate::worker::CountingKernelPath;

    fn connections(n: u8) -> FlowTable {
        let mut flows = FlowTable::new(64, FlowTimeouts::default());
        for i in 0..n {
            let c = Connection {
                client: FiveTuple::v4([198, 18, 0, i], [198, 18, 100, 10], 40_000, 80, 6),
                backend_addr: v4_mapped([198, 18, 1, 11]),
                backend_port: 8080,
                endpoint: 0,
                client_mac: [2, 0, 0, 0, 0, 1],
                client_ingress: 0,
                state: FlowState::TcpEstablished,
                last_seen_ns: u64::from(i),
            };
            let (ch, rh) = (table_hash(&c.client), table_hash(&c.reply_tuple()));
            flows.insert(c, ch, rh, 0);
        }
        flows
    }

    /// A worker over memory ports answers a listing, adopts a new snapshot
    /// within a bounded wait, and stops when asked, handing its state back.
    #[test]
    fn worker_thread_runs_answers_and_stops() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/demo.toml");
        let config = rules::load_file(&path).unwrap();
        let publisher = SnapshotPublisher::new(Snapshot::build(&config, None));
        let stop = Arc::new(AtomicBool::new(false));
        let flows = connections(20);
        let want: Vec<FlowRecord> = flows.iter().map(FlowRecord::of).collect();
        let mut memory = MemoryFrames::new(64, 2048);
        let pool = memory.pool();
        let worker = Worker::new(flows, pool, 2, 16);
        let counters = Arc::clone(worker.counters());
        let (client, server) = flow_queries();
        let setup = WorkerSetup {
            index: 0,
            core: 0,
            worker,
            ports: vec![MemoryPort::new("c", 16), MemoryPort::new("b", 16)],
            memory,
            kernel: CountingKernelPath::default(),
            snapshots: publisher.reader(),
            idle: IdlePolicy::Adaptive,
            stop: Arc::clone(&stop),
            epoch: Instant::now(),
            flow_queries: server,
            first_copy: crate::daemon::first_copy::copy_channel().1,
            taking_over: false,
        };
        let handle = spawn(setup).unwrap();
        let mut clients = [client];
        let deadline = Instant::now() + Duration::from_secs(5);
        let listed = flow_query::list(&mut clients, FlowFilter::All, 100, deadline);
        assert!(listed[0].complete);
        assert_eq!(listed[0].records, want);

        let next = Snapshot::build(&config, Some(&publisher.current()));
        let generation = next.generation();
        publisher.publish(next);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && counters.generation.load(Ordering::Relaxed) != generation
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(counters.generation.load(Ordering::Relaxed), generation);

        stop.store(true, Ordering::Relaxed);
        let exit = handle.join().unwrap();
        assert_eq!(exit.ports.len(), 2);
        assert_eq!(exit.worker.flows().len(), 20);
    }
}
