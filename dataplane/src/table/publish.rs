//! Lock-free publication of snapshots.
//!
//! The control thread owns a [`SnapshotPublisher`] and swaps in a new
//! [`Snapshot`] with one atomic pointer store; workers hold
//! [`SnapshotReader`]s and load the current snapshot once per batch. A load
//! takes no lock and, in the common case, does not touch the reference
//! count shared with other threads (arc-swap's per-thread debt slots), so
//! workers on different cores do not contend. A snapshot is freed when the
//! publisher has replaced it and the last reader's guard is dropped.
//!
//! A worker that naps while idle registers its thread
//! ([`SnapshotReader::wake_on_publish`]) and naps with
//! [`std::thread::park_timeout`]: each publish unparks it, so it takes a
//! new snapshot at once instead of at the end of its nap. The registry's
//! lock is taken on registration and by the publisher, never per batch.

use std::sync::{Arc, Mutex};
use std::thread::Thread;

use arc_swap::ArcSwap;

use super::snapshot::Snapshot;

/// What [`SnapshotReader::load`] returns: derefs to the snapshot and keeps
/// it alive until dropped. Hold it for one batch, not longer.
pub type SnapshotGuard = arc_swap::Guard<Arc<Snapshot>>;

/// The control thread's handle: publishes new snapshots.
#[derive(Debug)]
pub struct SnapshotPublisher {
    current: Arc<ArcSwap<Snapshot>>,
    sleepers: Sleepers,
}

/// The threads to unpark on each publish.
type Sleepers = Arc<Mutex<Vec<Thread>>>;

/// A worker's handle: loads the current snapshot. Cheap to clone; one per
/// worker thread.
#[derive(Clone, Debug)]
pub struct SnapshotReader {
    current: Arc<ArcSwap<Snapshot>>,
    sleepers: Sleepers,
}

impl SnapshotPublisher {
    /// A publisher whose current snapshot is `initial`.
    pub fn new(initial: Snapshot) -> SnapshotPublisher {
        SnapshotPublisher {
            current: Arc::new(ArcSwap::from_pointee(initial)),
            sleepers: Sleepers::default(),
        }
    }

    /// Makes `next` the current snapshot: every load from now on sees it,
    /// and every thread registered with
    /// [`SnapshotReader::wake_on_publish`] is unparked. The replaced
    /// snapshot is freed once no reader holds it.
    pub fn publish(&self, next: Snapshot) {
        self.current.store(Arc::new(next));
        let sleepers = self.sleepers.lock().unwrap_or_else(|p| p.into_inner());
        for thread in sleepers.iter() {
            thread.unpark();
        }
    }

    /// The current snapshot (e.g. to build the next one from it).
    pub fn current(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// A new reader of this publisher's snapshots.
    pub fn reader(&self) -> SnapshotReader {
        SnapshotReader {
            current: Arc::clone(&self.current),
            sleepers: Arc::clone(&self.sleepers),
        }
    }
}

impl SnapshotReader {
    /// The current snapshot, held until the guard is dropped. Call once per
    /// batch.
    #[inline]
    pub fn load(&self) -> SnapshotGuard {
        self.current.load()
    }

    /// Has every later publish unpark the calling thread, so that a nap in
    /// [`std::thread::park_timeout`] ends as soon as there is a new
    /// snapshot. Call once, at the thread's start (it takes a lock).
    pub fn wake_on_publish(&self) {
        let mut sleepers = self.sleepers.lock().unwrap_or_else(|p| p.into_inner());
        let me = std::thread::current();
        if !sleepers.iter().any(|t| t.id() == me.id()) {
            sleepers.push(me);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{Backend, Config, Protocol, Scheduler, Service};
    use std::sync::atomic::{AtomicBool, Ordering};

    fn config(port: u16) -> Config {
        Config {
            ingress: Default::default(),
            gateway: Default::default(),
            daemon: Default::default(),
            flows: Default::default(),
            health: Default::default(),
            interfaces: Vec::new(),
            neighbours: Vec::new(),
            services: vec![Service {
                limits: Default::default(),

                announce: Default::default(),
                name: "web".into(),
                protocol: Protocol::Tcp,
                vip: "198.19.0.1".parse().unwrap(),
                port,
                scheduler: Scheduler::Wrr,
                maglev_table_size: 251,
                failover: Default::default(),
                health: Default::default(),
                backends: vec![Backend {
                    max_connections: None,
                    address: "198.18.0.10".parse().unwrap(),
                    port: 8080,
                    weight: 1,
                    zone: None,
                    set: None,
                    group: None,
                    health: Default::default(),
                    name: None,
                }],
                routing: Default::default(),
            }]
            .into(),
            routing: Default::default(),
        }
    }

    #[test]
    fn a_reader_sees_a_publish_on_its_next_load() {
        let publisher = SnapshotPublisher::new(Snapshot::empty());
        let reader = publisher.reader();
        assert_eq!(reader.load().generation(), 0);

        let first = Snapshot::build(&config(80), Some(&*publisher.current()));
        publisher.publish(first);
        let loaded = reader.load();
        assert_eq!(loaded.generation(), 1);
        assert_eq!(loaded.service_count(), 1);
        assert_eq!(publisher.current().generation(), 1);
        // A clone reads the same publisher.
        assert_eq!(reader.clone().load().generation(), 1);
    }

    #[test]
    fn a_publish_ends_a_registered_threads_nap_at_once() {
        let publisher = SnapshotPublisher::new(Snapshot::empty());
        let reader = publisher.reader();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let napper = std::thread::spawn(move || {
            reader.wake_on_publish();
            ready_tx.send(()).unwrap();
            let start = std::time::Instant::now();
            // Spurious wakeups aside, only a publish ends this nap early.
            while reader.load().generation() == 0
                && start.elapsed() < std::time::Duration::from_secs(10)
            {
                std::thread::park_timeout(std::time::Duration::from_secs(10));
            }
            (reader.load().generation(), start.elapsed())
        });
        ready_rx.recv().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        publisher.publish(Snapshot::build(&config(80), Some(&*publisher.current())));
        let (generation, napped) = napper.join().unwrap();
        assert_eq!(generation, 1);
        assert!(napped < std::time::Duration::from_secs(5), "{napped:?}");
    }

    #[test]
    fn old_snapshots_are_freed_when_no_reader_holds_them() {
        let publisher = SnapshotPublisher::new(Snapshot::build(&config(80), None));
        let reader = publisher.reader();
        let first = Arc::downgrade(&publisher.current());

        // A reader mid-batch keeps the old snapshot alive across a publish.
        let held = reader.load();
        publisher.publish(Snapshot::build(&config(81), Some(&**held)));
        assert!(first.upgrade().is_some(), "freed while a reader held it");
        assert_eq!(held.generation(), 1, "a held snapshot never changes");
        assert_eq!(reader.load().generation(), 2);

        drop(held);
        assert!(first.upgrade().is_none(), "not freed after the last reader");

        // Without readers holding it, a replaced snapshot goes at once.
        let second = Arc::downgrade(&publisher.current());
        publisher.publish(Snapshot::build(&config(82), Some(&*publisher.current())));
        assert!(second.upgrade().is_none());
    }

    #[test]
    fn readers_on_other_threads_see_whole_snapshots_while_publishing() {
        const PUBLISHES: u64 = 200;
        let publisher = SnapshotPublisher::new(Snapshot::build(&config(1), None));
        let done = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let reader = publisher.reader();
                let done = Arc::clone(&done);
                std::thread::spawn(move || {
                    let mut last = 0;
                    let mut loads = 0u64;
                    // Bounded: stops when told, or after many loads.
                    while !done.load(Ordering::Acquire) && loads < 5_000_000 {
                        let snapshot = reader.load();
                        let generation = snapshot.generation();
                        assert!(generation >= last, "generation went back");
                        // Each snapshot's rules match its generation: the
                        // service port is the generation (never torn).
                        let (_, service) = snapshot.services().next().unwrap();
                        assert_eq!(u64::from(service.port()), generation);
                        last = generation;
                        loads += 1;
                    }
                    last
                })
            })
            .collect();

        for generation in 2..=PUBLISHES {
            let next = Snapshot::build(&config(generation as u16), Some(&*publisher.current()));
            assert_eq!(next.generation(), generation);
            publisher.publish(next);
        }
        done.store(true, Ordering::Release);
        for worker in workers {
            let last = worker.join().unwrap();
            assert!(last <= PUBLISHES);
        }
        assert_eq!(publisher.reader().load().generation(), PUBLISHES);
    }
}
