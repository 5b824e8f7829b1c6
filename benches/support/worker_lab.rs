//! One worker over in-memory ports, turned as its thread turns it, with
//! traffic of established and new TCP connections and a control side that
//! lists connections while it runs.
//!
//! Shared by the worker-poll bench (`benches/worker_poll.rs`, wall time
//! of each turn with 1 000 000 connections) and the allocation test
//! (`tests/worker_alloc.rs`, allocations inside each turn), which include
//! it next to `support/mod.rs`. The table is filled by `support::World`
//! (real handshakes through the pipeline); the lab addresses the same
//! clients, so its ACKs hit those connections.
#![allow(dead_code)] // each user takes its own part

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flowgate_api::FlowEntry;
use flowgate_dataplane::control::{flow_client, flow_entry, flow_vip};
use flowgate_dataplane::daemon::flow_query::{self, FlowQueryClient, FlowQueryServer};
use flowgate_dataplane::daemon::worker_thread;
use flowgate_dataplane::flow::{FlowFilter, FlowRecord, FlowTable};
use flowgate_dataplane::port::{MemoryFrames, MemoryPort};
use flowgate_dataplane::table::Snapshot;
use flowgate_dataplane::wire::builder::FrameBuilder;
use flowgate_dataplane::wire::{self, tcp_flags};
use flowgate_dataplane::worker::{CountingKernelPath, Worker};

use crate::support::{client_addr, service_addr, service_of, Rng};

/// The gateway's client-facing interface MAC (port 0), as in `support`.
const GW_CLIENT_MAC: [u8; 6] = [0x02, 0x66, 0x67, 0, 0, 0x01];
/// The gateway's backend-facing interface MAC (port 1).
const GW_BACKEND_MAC: [u8; 6] = [0x02, 0x66, 0x67, 0, 0x01, 0x01];
/// The clients' router MAC.
const CLIENT_MAC: [u8; 6] = [0x02, 0x66, 0x67, 0, 0, 0x02];
/// Source MAC of backend replies.
const BACKEND_MAC: [u8; 6] = [0x02, 0x66, 0x67, 0x01, 0, 0x02];
/// Frames per port per poll (the daemon's default batch).
pub const BATCH: usize = 64;
/// Frame slots of the lab's frame memory.
const FRAMES: u32 = 4_096;
/// Descriptors each in-memory ring holds.
const RING: usize = 512;
/// The clock: it stands still, so nothing expires.
pub const NOW_NS: u64 = 10_000_000_000;

/// A worker, its ports and frame memory, and the traffic it is given.
pub struct WorkerLab {
    pub worker: Worker,
    ports: Vec<MemoryPort>,
    memory: MemoryFrames,
    kernel: CountingKernelPath,
    pub flow_queries: FlowQueryServer,
    snapshot: Arc<Snapshot>,
    services: usize,
    /// Clients `0..next_client` have been seen.
    next_client: u64,
    /// Clients `0..established` opened their connection in setup.
    established: u64,
    rng: Rng,
    /// SYNs the worker forwarded to backends, answered at the next load.
    to_answer: Vec<(SocketAddr, SocketAddr)>,
    wire: Vec<Vec<u8>>,
}

impl WorkerLab {
    /// A worker with `flows` (holding clients `0..established` of a
    /// `services`-service gateway, opened by `support::World`), answering
    /// listings through `flow_queries`.
    pub fn new(
        snapshot: Arc<Snapshot>,
        services: usize,
        flows: FlowTable,
        established: u64,
        flow_queries: FlowQueryServer,
    ) -> WorkerLab {
        let mut memory = MemoryFrames::new(FRAMES, 2_048);
        let pool = memory.pool();
        let mut lab = WorkerLab {
            worker: Worker::new(flows, pool, 2, BATCH),
            ports: vec![
                MemoryPort::new("fg-client", RING),
                MemoryPort::new("fg-backend", RING),
            ],
            memory,
            kernel: CountingKernelPath::default(),
            flow_queries,
            snapshot,
            services,
            next_client: established,
            established,
            rng: Rng::new(0x6c61_6273),
            to_answer: Vec::with_capacity(2 * BATCH),
            wire: Vec::with_capacity(4 * BATCH),
        };
        // The first turns adopt the snapshot and fill the receive rings.
        for _ in 0..2 {
            lab.turn();
        }
        lab
    }

    /// Puts one poll's traffic on the wire (not part of any turn): the
    /// backends' SYN+ACKs to the SYNs of the last turn on port 1, and on
    /// port 0 `BATCH` client frames of which `new` are SYNs of clients
    /// never seen before and the rest ACKs of random established ones.
    pub fn load(&mut self, new: usize) {
        for (backend, client) in self.to_answer.drain(..) {
            let frame = FrameBuilder::tcp(backend, client, tcp_flags::SYN | tcp_flags::ACK)
                .macs(BACKEND_MAC, GW_BACKEND_MAC)
                .build();
            assert!(
                self.ports[1].inject(&mut self.memory, &frame),
                "port 1 full"
            );
        }
        for i in 0..BATCH {
            let (c, flags) = if i < new {
                self.next_client += 1;
                (self.next_client - 1, tcp_flags::SYN)
            } else {
                (self.rng.below(self.established), tcp_flags::ACK)
            };
            let dst = service_addr(service_of(c, self.services));
            let frame = FrameBuilder::tcp(client_addr(c), dst, flags)
                .macs(CLIENT_MAC, GW_CLIENT_MAC)
                .build();
            assert!(
                self.ports[0].inject(&mut self.memory, &frame),
                "port 0 full"
            );
        }
    }

    /// One turn of the worker thread's loop: what is timed and counted.
    #[inline]
    pub fn turn(&mut self) -> usize {
        worker_thread::turn(
            &mut self.worker,
            &mut self.ports,
            &mut self.memory,
            &mut self.kernel,
            &mut self.flow_queries,
            &self.snapshot,
            NOW_NS,
        )
    }

    /// Takes what the worker sent off the wire (not part of any turn),
    /// noting the SYNs to backends for their answers; returns how many
    /// frames it sent.
    pub fn drain(&mut self) -> usize {
        self.wire.clear();
        let to_clients = self.ports[0].take_transmitted(&self.memory, &mut self.wire);
        self.wire.clear();
        let to_backends = self.ports[1].take_transmitted(&self.memory, &mut self.wire);
        for frame in &self.wire {
            let Ok(meta) = wire::parse(frame) else {
                continue;
            };
            if meta.tcp_flags & tcp_flags::SYN != 0 {
                let t = meta.tuple;
                let backend = SocketAddr::new(t.dst_ip(), t.dst_port);
                let client = SocketAddr::new(t.src_ip(), t.src_port);
                self.to_answer.push((backend, client));
            }
        }
        to_clients + to_backends
    }

    /// The snapshot the worker runs.
    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.snapshot
    }

    /// Gives the worker new rules from its next turn on.
    pub fn set_snapshot(&mut self, snapshot: Arc<Snapshot>) {
        self.snapshot = snapshot;
    }
}

/// What the control side's thread does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listing {
    /// Nothing.
    Rest,
    /// Lists with each of its filters in turn.
    Cycle,
    /// Lists with filter `i` only.
    Only(usize),
}

impl Listing {
    fn code(self) -> usize {
        match self {
            Listing::Rest => 0,
            Listing::Cycle => 1,
            Listing::Only(i) => 2 + i,
        }
    }
}

/// The control side, listing connections over and over on its own thread,
/// as `flowgatectl flows` would: ask the worker for raw records, then sort
/// and format them (the daemon's own steps).
pub struct Lister {
    mode: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    /// Whether a listing is under way (from asking to formatting).
    busy: Arc<AtomicBool>,
    /// Listings finished.
    pub listings: Arc<AtomicU64>,
    /// Records received over all listings.
    pub records: Arc<AtomicU64>,
    thread: Option<JoinHandle<FlowQueryClient>>,
}

impl Lister {
    /// Starts the control thread, resting until [`Lister::set`] says
    /// otherwise; each listing takes up to `limit` records.
    pub fn start(
        client: FlowQueryClient,
        snapshot: Arc<Snapshot>,
        filters: Vec<FlowFilter>,
        limit: usize,
    ) -> Lister {
        let mode = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let busy = Arc::new(AtomicBool::new(false));
        let listings = Arc::new(AtomicU64::new(0));
        let records = Arc::new(AtomicU64::new(0));
        let thread = std::thread::spawn({
            let (mode, stop, busy) = (Arc::clone(&mode), Arc::clone(&stop), Arc::clone(&busy));
            let (listings, total) = (Arc::clone(&listings), Arc::clone(&records));
            move || {
                let mut clients = [client];
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    // Busy before the mode is read: whoever set the mode
                    // and then sees "not busy" knows it took effect.
                    busy.store(true, Ordering::SeqCst);
                    let filter = match mode.load(Ordering::SeqCst) {
                        0 => {
                            busy.store(false, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_micros(200));
                            continue;
                        }
                        1 => {
                            n += 1;
                            filters[n % filters.len()]
                        }
                        i => filters[i - 2],
                    };
                    let deadline = Instant::now() + Duration::from_secs(10);
                    let listed = flow_query::list(&mut clients, filter, limit, deadline);
                    let mut got: Vec<(usize, FlowRecord)> = listed
                        .into_iter()
                        .flat_map(|part| part.records.into_iter().map(|r| (0, r)))
                        .collect();
                    got.sort_by_key(|(_, r)| (flow_client(r), flow_vip(r)));
                    let entries: Vec<FlowEntry> = got
                        .iter()
                        .map(|(w, r)| flow_entry(*w, r, &snapshot, NOW_NS))
                        .collect();
                    std::hint::black_box(&entries);
                    total.fetch_add(entries.len() as u64, Ordering::Relaxed);
                    listings.fetch_add(1, Ordering::Relaxed);
                }
                busy.store(false, Ordering::SeqCst);
                let [client] = clients;
                client
            }
        });
        Lister {
            mode,
            stop,
            busy,
            listings,
            records,
            thread: Some(thread),
        }
    }

    /// What to do from the next listing on.
    pub fn set(&self, listing: Listing) {
        self.mode.store(listing.code(), Ordering::SeqCst);
    }

    /// Whether a listing is under way.
    pub fn is_listing(&self) -> bool {
        self.busy.load(Ordering::SeqCst)
    }

    /// Stops the thread and hands back the client end, calling `turn`
    /// (the worker's turns) until the listing in progress has ended.
    pub fn stop(mut self, mut turn: impl FnMut()) -> FlowQueryClient {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().expect("started");
        while !thread.is_finished() {
            turn();
        }
        thread.join().expect("the control thread")
    }
}

/// The filter of one service's connections.
pub fn service_filter(snapshot: &Snapshot, k: u64) -> FlowFilter {
    let addr = service_addr(k);
    let (_, service) = snapshot
        .services()
        .find(|(_, s)| s.port() == addr.port() && *s.vip() == wire::addr_to_bytes(addr.ip()))
        .expect("the service exists");
    FlowFilter::To {
        protocol: service.protocol(),
        address: *service.vip(),
        port: service.port(),
    }
}
