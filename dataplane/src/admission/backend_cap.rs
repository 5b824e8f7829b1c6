//! Per-backend caps on concurrent connections, with IPVS's upper and lower
//! marks, over connection counts that each worker keeps for itself.
//!
//! # Layout
//!
//! [`BackendConnections`] gives every backend (by endpoint id) one 64-byte
//! line of sixteen 32-bit lanes: lane 0 is the backend's *overloaded*
//! flag, lane `w+1` is worker `w`'s count of its connections to the
//! backend (more workers take more lines). A worker writes only its own
//! lane, with a plain load and store (single writer: no locked
//! instruction); a decision sums the lanes with relaxed loads. Keeping a
//! backend's lanes and flag on one line means a decision reads one line,
//! and both workers read the same line, so they see the same sum and the
//! same flag but for writes still in flight. The line moves between cores
//! when two workers open or close connections to the same backend, which
//! happens once per new flow and once per closed one, never per packet.
//!
//! Lines are allocated in chunks of 1 024 backends by the control side
//! ([`BackendConnections::reserve`], before a snapshot naming the ids is
//! published) and never move, so counts survive rule changes and growth.
//!
//! # Hysteresis
//!
//! As in IPVS: the admission that brings a backend to its upper mark flags
//! it overloaded (as does a decision that finds it at or above the mark),
//! a flagged backend takes no new flow, and it takes new flows again only
//! once it is below its lower mark, which clears the flag. IPVS clears the
//! flag when a connection closes; here the next decision does, which
//! decides the same (while flagged, connections only close). The flag is
//! written with plain stores by whichever worker decides (a write is only
//! ever "set" after seeing the count reach the upper mark, or "clear" after
//! seeing it below the lower one): a stale write is corrected by the next
//! decision, which recomputes from the counts.
//!
//! # Overshoot
//!
//! Every admission saw a sum below the upper mark. Two admissions miss each
//! other only when each worker loaded the lanes before the other's store
//! was visible; each worker has at most one admission in that window at a
//! time (its own stores are visible to itself), so with `W` workers a
//! backend's connections never exceed **`upper + W − 1`** (`upper + 1` with
//! two). The window is the few nanoseconds between a worker's loads and its
//! store draining from the store buffer, against hundreds of nanoseconds
//! between one new flow and the next; a fence would close it, at the cost
//! of a locked instruction per new flow, which a protective cap does not
//! need. Tests check the bound by a worst-case interleaving and by two
//! threads racing to fill a backend thousands of times.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};

use super::limits::ConnectionCap;

/// 32-bit lanes per cache line.
const LANES: usize = 16;

/// Backends per allocation.
pub const CHUNK_BACKENDS: usize = 1024;

/// One cache line of lanes.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Line([AtomicU32; LANES]);

/// Every backend's connection counts and overloaded flag, shared by all
/// workers (see the module documentation).
#[derive(Debug)]
pub struct BackendConnections {
    workers: usize,
    lines_per_backend: usize,
    chunks: Box<[OnceLock<Box<[Line]>>]>,
}

/// What a worker saw of one backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendLoad {
    /// Connections, summed over workers.
    pub connections: u64,
    /// Whether the backend was flagged overloaded.
    pub overloaded: bool,
}

impl BackendConnections {
    /// The counts of `workers` workers for backend ids below
    /// `max_backends`, with one writer handle per worker. Nothing is
    /// allocated for the backends until [`reserve`](Self::reserve).
    pub fn new(
        workers: usize,
        max_backends: u32,
    ) -> (Arc<BackendConnections>, Vec<WorkerConnections>) {
        let workers = workers.max(1);
        let chunks = (max_backends as usize).div_ceil(CHUNK_BACKENDS);
        let table = Arc::new(BackendConnections {
            workers,
            lines_per_backend: (workers + 1).div_ceil(LANES),
            chunks: (0..chunks).map(|_| OnceLock::new()).collect(),
        });
        let handles = (0..workers)
            .map(|worker| WorkerConnections {
                table: Arc::clone(&table),
                worker,
            })
            .collect();
        (table, handles)
    }

    /// Allocates the lines of backend ids below `backends` (control side,
    /// before the ids are published). Ids beyond the table's maximum are
    /// ignored; reserving again is free.
    pub fn reserve(&self, backends: u32) {
        let chunks = (backends as usize).div_ceil(CHUNK_BACKENDS);
        for chunk in self.chunks.iter().take(chunks) {
            chunk.get_or_init(|| {
                (0..CHUNK_BACKENDS * self.lines_per_backend)
                    .map(|_| Line::default())
                    .collect()
            });
        }
    }

    /// The memory allocated so far.
    /// How many workers have lanes.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Bytes allocated for lines so far.
    pub fn memory_bytes(&self) -> usize {
        let chunk = CHUNK_BACKENDS * self.lines_per_backend * std::mem::size_of::<Line>();
        self.chunks.iter().filter(|c| c.get().is_some()).count() * chunk
    }

    /// The lines of `backend`, if reserved.
    #[inline(always)]
    fn block(&self, backend: u32) -> Option<&[Line]> {
        let backend = backend as usize;
        let chunk = self.chunks.get(backend / CHUNK_BACKENDS)?.get()?;
        let first = (backend % CHUNK_BACKENDS) * self.lines_per_backend;
        chunk.get(first..first + self.lines_per_backend)
    }

    /// Connections to `backend` summed over workers, and its flag; `None`
    /// if the id was never reserved.
    #[inline]
    pub fn load(&self, backend: u32) -> Option<BackendLoad> {
        self.block(backend).map(|b| self.load_of(b))
    }

    /// The sum of a backend's worker lanes, and its flag.
    #[inline(always)]
    fn load_of(&self, block: &[Line]) -> BackendLoad {
        // Lane 0 is the flag, lanes 1..=W the workers' counts.
        let in_use = self.workers + 1;
        let connections: u64 = if let [line] = block {
            // Up to 15 workers: one line.
            let lanes = line.0.get(1..in_use).unwrap_or_default();
            lanes.iter().map(|l| u64::from(l.load(Relaxed))).sum()
        } else {
            block
                .iter()
                .flat_map(|line| &line.0)
                .take(in_use)
                .skip(1)
                .map(|l| u64::from(l.load(Relaxed)))
                .sum()
        };
        let overloaded = block
            .first()
            .is_some_and(|line| line.0[0].load(Relaxed) != 0);
        BackendLoad {
            connections,
            overloaded,
        }
    }

    /// Connections to `backend` summed over workers (0 if never reserved).
    pub fn connections(&self, backend: u32) -> u64 {
        self.load(backend).map_or(0, |l| l.connections)
    }

    /// Whether `backend` is flagged overloaded (taking no new flow).
    pub fn overloaded(&self, backend: u32) -> bool {
        self.load(backend).is_some_and(|l| l.overloaded)
    }
}

/// Lane `i` of a backend's lines.
#[inline(always)]
fn lane(block: &[Line], i: usize) -> Option<&AtomicU32> {
    block.get(i / LANES).map(|line| &line.0[i % LANES])
}

/// Adds `n` to a single-writer lane: a plain load and store.
#[inline(always)]
fn add(lane: &AtomicU32, n: u32) {
    lane.store(lane.load(Relaxed).saturating_add(n), Relaxed);
}

/// IPVS's two marks over a backend's load: says whether a new flow may go
/// to the backend, flags it when this flow brings it to the upper mark (or
/// finds it there), and clears the flag once it is below the lower mark.
#[inline(always)]
fn hysteresis(block: &[Line], load: BackendLoad, cap: &ConnectionCap) -> bool {
    let flag = lane(block, 0);
    let set = |value: u32| {
        if let Some(f) = flag {
            f.store(value, Relaxed);
        }
    };
    let upper = u64::from(cap.upper());
    if load.overloaded {
        if load.connections >= u64::from(cap.lower()) {
            return false;
        }
        // Below the lower mark: resume (and flag again if this very flow
        // reaches the upper mark, as with a mark of 1).
        set(u32::from(load.connections + 1 >= upper));
        true
    } else if load.connections >= upper {
        set(1);
        false
    } else {
        if load.connections + 1 >= upper {
            set(1);
        }
        true
    }
}

/// One worker's writer handle: the only one that writes its lanes. A
/// clone is for the same worker's thread (its connection table counts
/// through one, its admission decides through another): each lane keeps
/// one writing thread.
#[derive(Clone, Debug)]
pub struct WorkerConnections {
    table: Arc<BackendConnections>,
    worker: usize,
}

impl WorkerConnections {
    /// The shared table.
    pub fn table(&self) -> &Arc<BackendConnections> {
        &self.table
    }

    /// This worker's lane of `backend`.
    #[inline(always)]
    fn own(&self, backend: u32) -> Option<&AtomicU32> {
        lane(self.table.block(backend)?, self.worker + 1)
    }

    /// Decides one new flow to `backend` under `cap` and counts it if
    /// admitted. An id that was never reserved is admitted uncounted.
    #[inline]
    pub fn try_open(&self, backend: u32, cap: &ConnectionCap) -> bool {
        let Some(block) = self.table.block(backend) else {
            return true;
        };
        let admitted = hysteresis(block, self.table.load_of(block), cap);
        if admitted {
            if let Some(own) = lane(block, self.worker + 1) {
                add(own, 1);
            }
        }
        admitted
    }

    /// Whether `backend` takes a new flow under `cap` now, without
    /// counting it: for a worker whose connection table counts its
    /// connections ([`open`](Self::open) on insert, [`close`](Self::close)
    /// on every way one leaves). The decision and the flag are
    /// [`try_open`](Self::try_open)'s, which counts the flow itself.
    #[inline]
    pub fn admits(&self, backend: u32, cap: &ConnectionCap) -> bool {
        match self.table.block(backend) {
            Some(block) => hysteresis(block, self.table.load_of(block), cap),
            None => true,
        }
    }

    /// The hysteresis on what [`BackendConnections::load`] saw: updates
    /// the flag and says whether a new flow may go to `backend`. Counts
    /// nothing: [`try_open`](Self::try_open) is this and [`open`](Self::open)
    /// without the time between them (tests use the two halves to
    /// interleave workers at their worst).
    pub fn decide(&self, backend: u32, load: BackendLoad, cap: &ConnectionCap) -> bool {
        self.table
            .block(backend)
            .is_none_or(|block| hysteresis(block, load, cap))
    }

    /// Counts a connection to `backend` without a check (an uncapped
    /// backend, or a connection admitted earlier).
    #[inline]
    pub fn open(&self, backend: u32) {
        if let Some(own) = self.own(backend) {
            add(own, 1);
        }
    }

    /// Counts a connection to `backend` gone (closed, expired, evicted, or
    /// its flow refused after [`try_open`](Self::try_open)).
    #[inline]
    pub fn close(&self, backend: u32) {
        if let Some(own) = self.own(backend) {
            own.store(own.load(Relaxed).saturating_sub(1), Relaxed);
        }
    }

    /// This worker's own connections to `backend`.
    pub fn own_connections(&self, backend: u32) -> u32 {
        self.own(backend).map_or(0, |l| l.load(Relaxed))
    }
}

#[cfg(test)]
mod tests;
