//! Fan-out speed in the pipeline (docs/benchmarks.md).
//!
//! A fan-out service of `N` backends (10 and 100), 64 clients each sending
//! 64-byte datagrams (Ethernet to the end of the UDP payload) to its VIP.
//! An iteration is one batch of 64 datagrams, one per client, through what
//! the worker runs for a batch: `Pipeline::process_batch`, then
//! `Pipeline::emit_fanout_copies`, which copies each datagram for the other
//! `N - 1` backends into frames of the worker's pool; then every frame,
//! original and copy, goes back to the pool (its transmission completed),
//! so frames are recycled every batch. The frame memory is the daemon's
//! default: 16 384 frames of 2 048 bytes, copies allowed half of them
//! (`DEFAULT_FANOUT_FRAME_SHARE`). Writing the 64 datagrams into their
//! frames (the NIC's job) is not timed.
//!
//! The throughput is in elements, one per datagram delivered to a backend
//! (64 × N a batch: the originals and the copies), so criterion's `thrpt`
//! is deliveries per second on one core. Every run checks that no copy
//! was dropped.
//!
//! `cargo bench --bench fanout`; wall time: run it under
//! `flock /tmp/flowgate-bench.lock`. `fanout count BACKENDS BATCHES` runs
//! the batches untimed, for callgrind.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use flowgate_dataplane::flow::{FlowTable, FlowTimeouts};
use flowgate_dataplane::pipeline::{
    fanout_reserve, DropReason, Pipeline, Verdict, DEFAULT_FANOUT_FRAME_SHARE,
};
use flowgate_dataplane::port::{Frame, FrameMemory, FramePool, MemoryFrames};
use flowgate_dataplane::rules;
use flowgate_dataplane::table::Snapshot;
use flowgate_dataplane::wire::builder::FrameBuilder;

/// The daemon's default frame memory.
const FRAMES: u32 = 16_384;
const FRAME_SIZE: u32 = 2_048;
const BATCH: usize = 64;
const FANOUT: [usize; 2] = [10, 100];
const GW_CLIENT_MAC: [u8; 6] = [0x02, 0x66, 0x67, 0, 0, 0x01];
const CLIENT_MAC: [u8; 6] = [0x02, 0x66, 0x67, 0, 0, 0x02];

fn rules_text(backends: usize) -> String {
    let mut s = String::from(
        "[[interfaces]]\nname = \"fg-client\"\nmac = \"02:66:67:00:00:01\"\n\
         [[interfaces]]\nname = \"fg-backend\"\nmac = \"02:66:67:00:01:01\"\n",
    );
    let address = |i: usize| format!("198.18.{}.{}", 1 + i / 200, 10 + i % 200);
    for i in 0..backends {
        s += &format!(
            "[[neighbours]]\naddress = \"{}\"\nmac = \"02:66:67:00:{:02x}:{:02x}\"\ninterface = \"fg-backend\"\n",
            address(i),
            1 + i / 200,
            i % 200
        );
    }
    s += "[[services]]\nname = \"publish\"\nprotocol = \"udp\"\nvip = \"198.18.100.20\"\nport = 9000\nscheduler = \"fanout\"\n";
    for i in 0..backends {
        s += &format!(
            "[[services.backends]]\naddress = \"{}\"\nport = 7000\n",
            address(i)
        );
    }
    s
}

/// One worker's share of the data path, without ports.
struct Lab {
    memory: MemoryFrames,
    pool: FramePool,
    pipeline: Pipeline,
    flows: FlowTable,
    snapshot: Snapshot,
    reserve: usize,
    datagrams: Vec<Vec<u8>>,
    batch: Vec<Frame>,
    verdicts: Vec<Verdict>,
    tx: Vec<Vec<Frame>>,
}

impl Lab {
    fn new(backends: usize) -> Lab {
        let config = rules::load_str(&rules_text(backends), "bench.toml").unwrap();
        let mut memory = MemoryFrames::new(FRAMES, FRAME_SIZE);
        let pool = memory.pool();
        let vip: SocketAddr = "198.18.100.20:9000".parse().unwrap();
        let datagrams = (0..BATCH as u16)
            .map(|i| {
                let client = SocketAddr::new("198.18.0.2".parse().unwrap(), 20_000 + i);
                let frame = FrameBuilder::udp(client, vip)
                    .macs(CLIENT_MAC, GW_CLIENT_MAC)
                    .payload(&[0x5a; 22])
                    .build();
                assert_eq!(frame.len(), 64);
                frame
            })
            .collect();
        Lab {
            memory,
            reserve: fanout_reserve(pool.len(), DEFAULT_FANOUT_FRAME_SHARE),
            pool,
            pipeline: Pipeline::new(),
            flows: FlowTable::new(1024, FlowTimeouts::from(&config.flows)),
            snapshot: Snapshot::build(&config, None),
            datagrams,
            batch: Vec::with_capacity(BATCH),
            verdicts: Vec::with_capacity(BATCH),
            tx: (0..2).map(|_| Vec::with_capacity(BATCH * 100)).collect(),
        }
    }

    /// Writes the next batch's datagrams into frames (untimed).
    fn receive(&mut self) {
        for datagram in &self.datagrams {
            let mut frame = self.pool.take().expect("a free frame");
            assert!(self.memory.write(&mut frame, datagram));
            self.batch.push(frame);
        }
    }

    /// One batch: the pipeline, the copies, and every frame back to the
    /// pool. Returns the frames that went out.
    #[inline]
    fn batch(&mut self, now_ns: u64) -> usize {
        self.pipeline.process_batch(
            &mut self.memory,
            &mut self.batch,
            0,
            &self.snapshot,
            &mut self.flows,
            now_ns,
            &mut self.verdicts,
        );
        self.pipeline.emit_fanout_copies(
            &mut self.memory,
            &self.batch,
            &self.snapshot,
            &mut self.pool,
            self.reserve,
            &mut self.tx,
        );
        let mut sent = 0;
        for (frame, verdict) in self.batch.drain(..).zip(&self.verdicts) {
            if let Verdict::Transmit(_) = verdict {
                sent += 1;
            }
            self.pool.put(frame);
        }
        for queue in &mut self.tx {
            sent += queue.len();
            for frame in queue.drain(..) {
                self.pool.put(frame);
            }
        }
        sent
    }
}

fn fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout");
    for backends in FANOUT {
        let mut lab = Lab::new(backends);
        group.throughput(Throughput::Elements((BATCH * backends) as u64));
        group.bench_function(BenchmarkId::new("backends", backends), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for i in 0..iters {
                    lab.receive();
                    let start = Instant::now();
                    let sent = lab.batch(1_000 + i);
                    total += start.elapsed();
                    black_box(sent);
                }
                total
            });
        });
        let counters = lab.pipeline.counters();
        assert_eq!(counters.drops_for(DropReason::FanoutCopyNoFrame), 0);
        assert_eq!(counters.dropped(), 0);
        let c = counters.snapshot();
        assert_eq!(c.fanout_copies, c.fanout_datagrams * (backends as u64 - 1));
        assert_eq!(lab.pool.len(), FRAMES as usize, "every frame back");
    }
    group.finish();
}

/// `count BACKENDS BATCHES`: runs that many batches with no timing, for
/// callgrind (instructions of BATCHES batches less those of 0 batches,
/// over the datagrams delivered, is the cost of one delivery).
fn count(backends: usize, batches: u64) {
    let mut lab = Lab::new(backends);
    let mut sent = 0;
    for i in 0..batches {
        lab.receive();
        sent += lab.batch(1_000 + i);
    }
    assert_eq!(sent as u64, batches * (BATCH * backends) as u64);
    println!("{backends} backends: {batches} batches, {sent} datagrams delivered");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("count") {
        let number =
            |i: usize, default: u64| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default);
        count(number(1, 10) as usize, number(2, 100));
        return;
    }
    let mut criterion = Criterion::default()
        .sample_size(30)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1))
        .configure_from_args();
    fanout(&mut criterion);
    criterion.final_summary();
}
