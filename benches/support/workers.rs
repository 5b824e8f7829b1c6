//! Whole workers for the callgrind driver: one or more `Worker`s over
//! in-memory ports on one frame memory, handing frames to each other as
//! the daemon's workers do.
//!
//! Every worker has a client port (0) and a backend port (1). Frames
//! arrive on every worker's client port, a batch each per step, as RSS
//! spreads clients over queues; with two workers about half of each
//! worker's frames belong to the other, which processes them.

use std::sync::Arc;
use std::time::Instant;

use flowgate_dataplane::capture::{CaptureFilter, CaptureHub, CaptureSession, Captured, SNAP_MAX};
use flowgate_dataplane::flow::{FlowTable, FlowTimeouts};
use flowgate_dataplane::handoff::Handoff;
use flowgate_dataplane::port::{MemoryFrames, MemoryPort};
use flowgate_dataplane::table::Snapshot;
use flowgate_dataplane::wire::{self, tcp_flags};
use flowgate_dataplane::worker::{CountingKernelPath, Worker};

use super::{
    client_addr, service_addr, service_of, Gateway, Rng, Template, BACKEND_MAC, BATCH, CLIENT_MAC,
    FRAME_SIZE, GW_BACKEND_MAC, GW_CLIENT_MAC, NOW_NS,
};

/// Descriptors per ring of every port.
const RING: usize = 256;
/// Frames per worker: frames drift between workers' pools as they are
/// handed over (a random walk here, since arrivals are spread evenly), so
/// far more than the rings hold.
const FRAMES_PER_WORKER: u32 = 64 * RING as u32;
/// Frames an inbox holds (the daemon's figure).
const INBOX: usize = 4096;

/// Workers, their ports and the frames they share.
pub struct Workers {
    services: usize,
    snapshot: Arc<Snapshot>,
    memory: MemoryFrames,
    workers: Vec<Worker>,
    /// Per worker: client port, backend port.
    ports: Vec<Vec<MemoryPort>>,
    kernel: CountingKernelPath,
    sent: Vec<Vec<u8>>,
    scratch: Vec<u8>,
    syn: Template,
    syn_ack: Template,
    ack: Template,
    next_client: u64,
    rng: Rng,
    /// Every worker's capture ring, as the daemon links them: a capture
    /// can be armed, and while none is the workers pay what they pay in
    /// production.
    capture: Arc<CaptureHub>,
    session: Option<CaptureSession>,
    captured: Vec<Captured>,
    captured_count: usize,
}

impl Workers {
    /// `count` workers with a connection table of `capacity` each (the
    /// daemon gives every worker the configured capacity).
    pub fn new(gateway: &Gateway, count: usize, capacity: usize) -> Workers {
        let count = count.max(1);
        let frames = FRAMES_PER_WORKER * count as u32;
        let mut memory = MemoryFrames::new(frames, FRAME_SIZE);
        let pools = memory.split_pools(count);
        let handoffs = Handoff::set(count, INBOX, frames as usize);
        let (capture, taps) = CaptureHub::new(count, Vec::new(), Instant::now());
        let workers: Vec<Worker> = pools
            .into_iter()
            .zip(handoffs)
            .zip(taps)
            .map(|((pool, handoff), tap)| {
                let worker = Worker::new(
                    FlowTable::new(capacity, FlowTimeouts::default())
                        .with_established_eviction(true),
                    pool,
                    2,
                    BATCH,
                )
                .with_capture(tap);
                if count > 1 {
                    worker.with_handoff(handoff)
                } else {
                    worker
                }
            })
            .collect();
        let ports = (0..count)
            .map(|w| {
                vec![
                    MemoryPort::new(format!("fg-client/q{w}"), RING),
                    MemoryPort::new(format!("fg-backend/q{w}"), RING),
                ]
            })
            .collect();
        let mut this = Workers {
            services: gateway.services,
            snapshot: Arc::clone(&gateway.snapshot),
            memory,
            workers,
            ports,
            kernel: CountingKernelPath::default(),
            sent: Vec::new(),
            scratch: vec![0; FRAME_SIZE as usize],
            syn: Template::tcp(CLIENT_MAC, GW_CLIENT_MAC, tcp_flags::SYN),
            syn_ack: Template::tcp(BACKEND_MAC, GW_BACKEND_MAC, tcp_flags::SYN | tcp_flags::ACK),
            ack: Template::tcp(CLIENT_MAC, GW_CLIENT_MAC, tcp_flags::ACK),
            next_client: 0,
            rng: Rng::new(0x776f_726b_6572_7321),
            capture,
            session: None,
            captured: Vec::new(),
            captured_count: 0,
        };
        // The first poll hands the ports free frames to receive into.
        this.poll_all();
        this
    }

    /// Number of workers.
    pub fn count(&self) -> usize {
        self.workers.len()
    }

    /// Opens `n` connections (clients `0..n`) with a full handshake
    /// through the workers, each batch arriving on the next worker in
    /// turn (the owner takes each frame over). Panics unless every packet
    /// is forwarded.
    pub fn establish(&mut self, n: u64) {
        let end = self.next_client + n;
        let mut turn = 0;
        while self.next_client < end {
            let first = self.next_client;
            let count = (end - first).min(BATCH as u64);
            let at = turn % self.count();
            turn += 1;
            for c in first..first + count {
                let dst = service_addr(service_of(c, self.services));
                self.inject(at, 0, Kind::Syn, client_addr(c), dst);
            }
            self.poll_checked(count);
            // The backends answer, from where each SYN went.
            let mut syns = Vec::new();
            for w in 0..self.count() {
                self.ports[w][1].take_transmitted(&self.memory, &mut syns);
            }
            assert_eq!(syns.len() as u64, count, "every SYN forwarded");
            for frame in &syns {
                let t = wire::parse(frame).expect("a forwarded SYN parses").tuple;
                let client = std::net::SocketAddr::new(t.src_ip(), t.src_port);
                let backend = std::net::SocketAddr::new(t.dst_ip(), t.dst_port);
                self.inject(at, 1, Kind::SynAck, backend, client);
            }
            self.poll_checked(count);
            self.drain();
            for c in first..first + count {
                let dst = service_addr(service_of(c, self.services));
                self.inject(at, 0, Kind::Ack, client_addr(c), dst);
            }
            self.poll_checked(count);
            self.drain();
            self.next_client += count;
        }
    }

    /// Puts a batch of ACKs of random established connections on every
    /// worker's client port.
    pub fn load_established(&mut self) {
        let live = self.next_client;
        for w in 0..self.count() {
            for _ in 0..BATCH {
                let c = self.rng.below(live);
                let dst = service_addr(service_of(c, self.services));
                self.inject(w, 0, Kind::Ack, client_addr(c), dst);
            }
        }
    }

    /// Puts a batch of SYNs of clients never seen before on every
    /// worker's client port.
    pub fn load_new(&mut self) {
        for w in 0..self.count() {
            for _ in 0..BATCH {
                let c = self.next_client;
                self.next_client += 1;
                let dst = service_addr(service_of(c, self.services));
                self.inject(w, 0, Kind::Syn, client_addr(c), dst);
            }
        }
    }

    /// One poll of every worker, in order.
    #[inline]
    pub fn poll_all(&mut self) {
        for (worker, ports) in self.workers.iter_mut().zip(&mut self.ports) {
            worker.poll(
                ports,
                &mut self.memory,
                &self.snapshot,
                &mut self.kernel,
                NOW_NS,
            );
        }
    }

    /// Arms a capture of every frame (`sample_every` 1), one in
    /// `sample_every`, or (`drops_only`) of drops only, which forwarded
    /// frames never match. It runs until the workers are dropped; `drain`
    /// empties the rings.
    pub fn arm_capture(&mut self, sample_every: u32, drops_only: bool) {
        let filter = CaptureFilter {
            drops_only,
            reason: None,
            keys: Vec::new(),
            sample_every,
            snap: SNAP_MAX,
        };
        self.session = self.capture.start(filter).ok();
    }

    /// Frames captured so far, and frames lost to full rings.
    pub fn captured(&self) -> (usize, u64) {
        let lost = self.session.as_ref().map_or(0, CaptureSession::lost);
        (self.captured_count, lost)
    }

    /// Takes every transmitted frame off the wire, completing it, and
    /// every captured frame out of the rings (counted, then let go).
    pub fn drain(&mut self) {
        if let Some(session) = &mut self.session {
            loop {
                self.captured.clear();
                let n = session.drain(1024, &mut self.captured);
                self.captured_count += n;
                if n == 0 {
                    break;
                }
            }
        }
        for ports in &mut self.ports {
            for port in ports {
                self.sent.clear();
                port.take_transmitted(&self.memory, &mut self.sent);
            }
        }
    }

    /// Frames forwarded, by every worker.
    pub fn forwarded(&self) -> u64 {
        self.sum(|w| w.pipeline().counters().forwarded.get())
    }

    /// Flow-table hits, by every worker.
    pub fn flow_hits(&self) -> u64 {
        self.sum(|w| w.pipeline().counters().flow_hits.get())
    }

    /// Connections created, by every worker.
    pub fn new_flows(&self) -> u64 {
        self.sum(|w| w.pipeline().counters().new_flows.get())
    }

    /// Frames handed to another worker.
    pub fn handed_over(&self) -> u64 {
        self.sum(|w| {
            w.counters()
                .handed_out
                .load(std::sync::atomic::Ordering::Relaxed)
        })
    }

    /// Connections in every worker's table.
    pub fn connections(&self) -> usize {
        self.workers.iter().map(|w| w.flows().len()).sum()
    }

    fn sum(&self, f: impl Fn(&Worker) -> u64) -> u64 {
        self.workers.iter().map(f).sum()
    }

    /// Polls until `count` more frames are forwarded: a frame handed to
    /// a worker polled earlier in the round waits for the next round.
    fn poll_checked(&mut self, count: u64) {
        let before = self.forwarded();
        for _ in 0..2 {
            self.poll_all();
        }
        assert_eq!(self.forwarded() - before, count, "setup frames forwarded");
    }

    fn inject(
        &mut self,
        worker: usize,
        port: usize,
        kind: Kind,
        src: std::net::SocketAddr,
        dst: std::net::SocketAddr,
    ) {
        let template = match kind {
            Kind::Syn => &self.syn,
            Kind::SynAck => &self.syn_ack,
            Kind::Ack => &self.ack,
        };
        let len = template.stamp(&mut self.scratch, src, dst);
        let injected = self.ports[worker][port].inject(&mut self.memory, &self.scratch[..len]);
        assert!(injected, "no free frame on worker {worker} port {port}");
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Syn,
    SynAck,
    Ack,
}
