//! A worker thread: one [`Worker`] pinned to its core, polling its ports
//! until told to stop.
//!
//! Everything a worker touches per batch is its own — ports, frame memory
//! handle, connection table, counters — except the snapshot, which it loads
//! lock-free once per poll. The control thread reaches a worker only through
//! a query queue the worker drains between polls (for `flowgatectl flows`),
//! never through a lock the worker could wait on.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, Sender, TrySendError};

use crate::flow::FlowTable;
use crate::port::{FrameMemory, Port};
use crate::rules::IdlePolicy;
use crate::table::{Snapshot, SnapshotReader};
use crate::worker::{KernelPath, Worker};

/// Empty polls an adaptive worker spins through before it naps.
const SPIN_POLLS: u32 = 2_000;
/// How long an idle adaptive worker naps between polls. Short enough that
/// a new snapshot is in use well within a millisecond of its publication,
/// and that a burst after a quiet spell waits little.
const NAP: Duration = Duration::from_micros(50);

/// A question for a worker, answered on the worker's thread between polls
/// with read access to its connection table and current snapshot.
pub type WorkerQuery = Box<dyn FnOnce(&FlowTable, &Snapshot) + Send>;

/// The control thread's handle on a running worker.
#[derive(Debug)]
pub struct WorkerHandle<R> {
    /// Worker index.
    pub index: usize,
    /// Core it is pinned to.
    pub core: usize,
    queries: Sender<WorkerQuery>,
    thread: Option<JoinHandle<R>>,
}

impl<R> WorkerHandle<R> {
    /// A sender for queries, for whoever asks later (the control API).
    pub fn query_sender(&self) -> Sender<WorkerQuery> {
        self.queries.clone()
    }

    /// Sends `query` to the worker; false if its queue is full or it has
    /// stopped.
    pub fn ask(&self, query: WorkerQuery) -> bool {
        match self.queries.try_send(query) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }

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

/// Called by a worker, about once a second, with its ports (e.g. to
/// publish their ring statistics).
pub type PortObserver<P> = Box<dyn FnMut(&[P]) + Send>;

/// How often a worker calls its [`PortObserver`].
const OBSERVE_EVERY_NS: u64 = 1_000_000_000;

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
    /// Looks at the ports now and then, off the per-packet path.
    pub observer: Option<PortObserver<P>>,
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
    let (queries, inbox) = crossbeam::channel::bounded(16);
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
            run(setup, inbox)
        })?;
    Ok(WorkerHandle {
        index,
        core,
        queries,
        thread: Some(thread),
    })
}

fn run<P: Port, M: FrameMemory, K: KernelPath>(
    setup: WorkerSetup<P, M, K>,
    queries: Receiver<WorkerQuery>,
) -> WorkerExit<P> {
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
        mut observer,
        ..
    } = setup;
    let mut observed_ns = 0u64;
    tracing::info!(worker = index, ports = ports.len(), "worker started");
    let mut empty_polls: u32 = 0;
    while !stop.load(Ordering::Relaxed) {
        let snapshot = snapshots.load();
        let now_ns = u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let received = worker.poll(&mut ports, &mut memory, &snapshot, &mut kernel, now_ns);
        if let Ok(query) = queries.try_recv() {
            query(worker.flows(), &snapshot);
        }
        if now_ns.wrapping_sub(observed_ns) >= OBSERVE_EVERY_NS {
            observed_ns = now_ns;
            if let Some(observe) = observer.as_mut() {
                observe(&ports);
            }
        }
        drop(snapshot);
        if received > 0 {
            empty_polls = 0;
            continue;
        }
        empty_polls = empty_polls.saturating_add(1);
        if idle == IdlePolicy::Adaptive && empty_polls > SPIN_POLLS {
            std::thread::sleep(NAP);
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
    use crate::flow::FlowTimeouts;
    use crate::port::{MemoryFrames, MemoryPort};
    use crate::rules;
    use crate::table::SnapshotPublisher;
    use crate::worker::CountingKernelPath;

    /// A worker over memory ports answers queries, adopts a new snapshot
    /// within a bounded wait, and stops when asked, handing its state back.
    #[test]
    fn worker_thread_runs_answers_and_stops() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/demo.toml");
        let config = rules::load_file(&path).unwrap();
        let publisher = SnapshotPublisher::new(Snapshot::build(&config, None));
        let stop = Arc::new(AtomicBool::new(false));
        let mut memory = MemoryFrames::new(64, 2048);
        let pool = memory.pool();
        let (seen_ports, ports_seen) = crossbeam::channel::bounded(4);
        let setup = WorkerSetup {
            index: 0,
            core: 0,
            worker: Worker::new(FlowTable::new(64, FlowTimeouts::default()), pool, 2, 16),
            ports: vec![MemoryPort::new("c", 16), MemoryPort::new("b", 16)],
            memory,
            kernel: CountingKernelPath::default(),
            snapshots: publisher.reader(),
            idle: IdlePolicy::Adaptive,
            stop: Arc::clone(&stop),
            epoch: Instant::now(),
            observer: Some(Box::new(move |ports: &[MemoryPort]| {
                let _ = seen_ports.try_send(ports.len());
            })),
        };
        let handle = spawn(setup).unwrap();
        assert_eq!(ports_seen.recv_timeout(Duration::from_secs(5)).unwrap(), 2);
        let (tx, rx) = crossbeam::channel::bounded(1);
        assert!(handle.ask(Box::new(move |flows, snapshot| {
            let _ = tx.send((flows.len(), snapshot.generation()));
        })));
        let (flows, generation) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(flows, 0);
        assert_eq!(generation, publisher.current().generation());

        let next = Snapshot::build(&config, Some(&publisher.current()));
        let want = next.generation();
        publisher.publish(next);
        let (tx, rx) = crossbeam::channel::bounded(1);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut seen = 0;
        while Instant::now() < deadline && seen != want {
            let tx = tx.clone();
            assert!(handle.ask(Box::new(move |_, s| {
                let _ = tx.send(s.generation());
            })));
            seen = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        }
        assert_eq!(seen, want);

        stop.store(true, Ordering::Relaxed);
        let exit = handle.join().unwrap();
        assert_eq!(exit.ports.len(), 2);
        assert_eq!(
            exit.worker.counters().generation.load(Ordering::Relaxed),
            want
        );
    }
}
