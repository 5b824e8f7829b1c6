//! Wall-time benches of the core pipeline and of Maglev table builds.
//!
//! Every flow bench times `Pipeline::process_batch` over batches of 64
//! frames in frame memory, the shape the worker runs in production, with
//! 1 000 000 connections in the table and 1, 1 000 or 100 000 services:
//!
//! - `established/services/N`: ACKs of random established connections
//!   (each opened by a real handshake through the pipeline in setup), so
//!   every lookup lands on a random table record;
//! - `new_flows_full/services/N`: SYNs of never-seen clients into a full
//!   table of capacity 1 000 000: every insert evicts (the steady state of
//!   a busy gateway);
//! - `new_flows_half/services/N`: the same into a table of capacity
//!   2 000 000 holding 1 000 000; after each timed run the oldest
//!   connections are removed, untimed, to keep it there.
//!
//! An iteration is one batch, and the throughput is given in elements, so
//! criterion's `thrpt` is packets per second on one core. The pipeline
//! rewrites frames in place, so each timed run processes up to 256
//! batches of freshly stamped frames; stamping them is not timed.
//!
//! The same three with every routing policy of issue 10 on, against one
//! service (`routed_established/services/1`, `routed_new_flows_full/…`,
//! `routed_new_flows_half/…`): 10 000 client-class prefixes giving every
//! client a SET and a zone, 18 backends labelled with SETs, zones and a
//! canary group, a 5 % canary, a zone priority, and 1 000 000
//! distribution paths (half IPv4 /32, half IPv6 /128) in the path table
//! the pipeline reads beside the snapshot. One client address in eight
//! has a path; the others' lookups miss and they walk SET, canary and
//! zone. Compare each with its plain row of `services/1` in the same run:
//! `scripts/bench.sh 'services/1$'`.
//!
//! `interleaved` (run alone: `pipeline --bench interleaved`, outside
//! criterion) measures the 0.8× goal on a loaded machine: a plain and a
//! routed world, each with a full table of 1 000 000 connections, take
//! new flows in alternating short rounds (`INTERLEAVED_BATCHES` batches
//! each, the order flipped every round) for `INTERLEAVED_ROUNDS` rounds in
//! one process, so a burst of load from elsewhere falls on both alike. It
//! prints each case's median round (ns a flow, flows a second), the ratio
//! of the medians (routed rate / plain rate), and the median and quartiles
//! of the per-round ratios.
//!
//! `maglev_build/N` builds a Maglev table of N slots for 100 backends;
//! `snapshot_build/N` compiles a one-service config with such a table.
//!
//! Run with `scripts/bench.sh` (it prints a summary of the medians).

mod support;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_main, BenchmarkId, Criterion, Throughput};
use flowgate_dataplane::table::{MaglevTable, Snapshot};

use support::{Gateway, World, BATCH, CONNECTIONS};

/// Service counts of the flow benches (the issue's).
const SERVICE_COUNTS: [usize; 3] = [1, 1_000, 100_000];
/// Batches stamped into frame memory per timed run (16 384 frames, 32 MiB
/// of 2 KiB slots, like a UMEM).
const BATCHES_PER_RUN: usize = 256;
/// Rounds of the interleaved bench, each one run of the plain world and
/// one of the routed world.
const INTERLEAVED_ROUNDS: usize = 1_000;
/// Batches of 64 new flows per world per round (1 024 flows, about
/// 0.1-0.3 ms): short, so that load from elsewhere changes little within
/// a round.
const INTERLEAVED_BATCHES: usize = 16;
/// Maglev table sizes of the build benches (both prime).
const MAGLEV_SIZES: [u32; 2] = [65_537, 655_373];

/// Times `iters` batches: before each run of up to `BATCHES_PER_RUN`,
/// `load` stamps the frames (untimed); after it, `after` may tidy up
/// (untimed).
fn timed_batches(
    world: &mut World,
    iters: u64,
    mut load: impl FnMut(&mut World, usize),
    mut after: impl FnMut(&mut World, usize),
) -> Duration {
    let forwarded = world.forwarded();
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let batches = left.min(world.batches() as u64) as usize;
        load(world, batches);
        let start = Instant::now();
        for batch in 0..batches {
            world.process(batch);
        }
        total += start.elapsed();
        after(world, batches);
        left -= batches as u64;
    }
    // Every frame must have been forwarded, or the figure means nothing.
    assert_eq!(world.forwarded() - forwarded, iters * BATCH as u64);
    total
}

fn established(world: &mut World, iters: u64) -> Duration {
    let (hits, new) = (world.flow_hits(), world.new_flows());
    let time = timed_batches(world, iters, World::load_established, |_, _| {});
    assert_eq!(world.flow_hits() - hits, iters * BATCH as u64);
    assert_eq!(world.new_flows(), new);
    time
}

fn new_flows(world: &mut World, iters: u64, retire: bool) -> Duration {
    let new = world.new_flows();
    let time = timed_batches(world, iters, World::load_new, |w, batches| {
        if retire {
            w.retire_oldest((batches * BATCH) as u64);
        }
    });
    assert_eq!(world.new_flows() - new, iters * BATCH as u64);
    time
}

/// A table of capacity `capacity` holding `CONNECTIONS` established ones.
fn world(gateway: &Gateway, capacity: usize) -> World {
    let mut world = World::new(gateway, capacity, BATCHES_PER_RUN);
    world.establish(CONNECTIONS);
    world
}

fn flow_benches(c: &mut Criterion) {
    for services in SERVICE_COUNTS {
        // Built on first use, so a filtered run skips what it does not need.
        let mut gateway: Option<Gateway> = None;
        let mut full: Option<World> = None;
        let id = BenchmarkId::new("services", services);

        let mut group = c.benchmark_group("established");
        group.throughput(Throughput::Elements(BATCH as u64));
        group.bench_function(id.clone(), |b| {
            let gw = gateway.get_or_insert_with(|| Gateway::new(services));
            let w = full.get_or_insert_with(|| world(gw, CONNECTIONS as usize));
            b.iter_custom(|iters| established(w, iters));
        });
        group.finish();

        // Runs after `established`: its inserts evict that bench's flows.
        let mut group = c.benchmark_group("new_flows_full");
        group.throughput(Throughput::Elements(BATCH as u64));
        group.bench_function(id.clone(), |b| {
            let gw = gateway.get_or_insert_with(|| Gateway::new(services));
            let w = full.get_or_insert_with(|| world(gw, CONNECTIONS as usize));
            b.iter_custom(|iters| new_flows(w, iters, false));
        });
        group.finish();
        drop(full);

        let mut half: Option<World> = None;
        let mut group = c.benchmark_group("new_flows_half");
        group.throughput(Throughput::Elements(BATCH as u64));
        group.bench_function(id, |b| {
            let gw = gateway.get_or_insert_with(|| Gateway::new(services));
            let w = half.get_or_insert_with(|| world(gw, 2 * CONNECTIONS as usize));
            b.iter_custom(|iters| new_flows(w, iters, true));
        });
        group.finish();
    }
}

/// The flow benches of one routed service (see the module documentation).
fn routed_benches(c: &mut Criterion) {
    let mut gateway: Option<Gateway> = None;
    let mut full: Option<World> = None;
    let id = BenchmarkId::new("services", 1);

    let mut group = c.benchmark_group("routed_established");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function(id.clone(), |b| {
        let gw = gateway.get_or_insert_with(Gateway::routed);
        let w = full.get_or_insert_with(|| world(gw, CONNECTIONS as usize));
        b.iter_custom(|iters| established(w, iters));
    });
    group.finish();

    let mut group = c.benchmark_group("routed_new_flows_full");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function(id.clone(), |b| {
        let gw = gateway.get_or_insert_with(Gateway::routed);
        let w = full.get_or_insert_with(|| world(gw, CONNECTIONS as usize));
        b.iter_custom(|iters| new_flows(w, iters, false));
    });
    group.finish();
    if let Some(w) = full.take() {
        report_routing(&w);
    }

    let mut half: Option<World> = None;
    let mut group = c.benchmark_group("routed_new_flows_half");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function(id, |b| {
        let gw = gateway.get_or_insert_with(Gateway::routed);
        let w = half.get_or_insert_with(|| world(gw, 2 * CONNECTIONS as usize));
        b.iter_custom(|iters| new_flows(w, iters, true));
    });
    group.finish();
    if let Some(w) = half.take() {
        report_routing(&w);
    }
}

/// One round of the interleaved bench: `batches` batches of new flows
/// into `world`'s full table, stamped untimed; nanoseconds a flow.
fn new_flow_round(world: &mut World, batches: usize) -> f64 {
    let new = world.new_flows();
    world.load_new(batches);
    let start = Instant::now();
    for batch in 0..batches {
        world.process(batch);
    }
    let elapsed = start.elapsed();
    let flows = (batches * BATCH) as u64;
    assert_eq!(world.new_flows() - new, flows, "every frame a new flow");
    elapsed.as_nanos() as f64 / flows as f64
}

/// The value at quantile `q` (0..=1) of `sorted` (nearest rank).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let at = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

/// Plain and routed new flows into full tables, interleaved round by
/// round in one process (see the module documentation): the ratio of
/// their rates with the machine's load shared between them.
fn interleaved_new_flows() {
    let plain_gateway = Gateway::new(1);
    let routed_gateway = Gateway::routed();
    let mut plain = world(&plain_gateway, CONNECTIONS as usize);
    let mut routed = world(&routed_gateway, CONNECTIONS as usize);
    // Warm-up: a few rounds each, untimed, so both tables are in steady
    // state (every insert evicts) and the code is paged in.
    for _ in 0..8 {
        new_flow_round(&mut plain, INTERLEAVED_BATCHES);
        new_flow_round(&mut routed, INTERLEAVED_BATCHES);
    }
    let mut plain_ns = Vec::with_capacity(INTERLEAVED_ROUNDS);
    let mut routed_ns = Vec::with_capacity(INTERLEAVED_ROUNDS);
    let mut ratios = Vec::with_capacity(INTERLEAVED_ROUNDS);
    for round in 0..INTERLEAVED_ROUNDS {
        let (p, r) = if round % 2 == 0 {
            let p = new_flow_round(&mut plain, INTERLEAVED_BATCHES);
            (p, new_flow_round(&mut routed, INTERLEAVED_BATCHES))
        } else {
            let r = new_flow_round(&mut routed, INTERLEAVED_BATCHES);
            (new_flow_round(&mut plain, INTERLEAVED_BATCHES), r)
        };
        plain_ns.push(p);
        routed_ns.push(r);
        // Routed rate over plain rate.
        ratios.push(p / r);
    }
    for v in [&mut plain_ns, &mut routed_ns, &mut ratios] {
        v.sort_by(f64::total_cmp);
    }
    let (p, r) = (quantile(&plain_ns, 0.5), quantile(&routed_ns, 0.5));
    println!(
        "interleaved new flows into a full table of {CONNECTIONS}, {INTERLEAVED_ROUNDS} rounds of \
         {INTERLEAVED_BATCHES} batches of {BATCH} each"
    );
    for (name, v) in [("plain", &plain_ns), ("routed", &routed_ns)] {
        println!(
            "{name:>6}: median {:.1} ns a flow ({:.0} K/s), quartiles {:.1} / {:.1}, min {:.1}",
            quantile(v, 0.5),
            1e6 / quantile(v, 0.5),
            quantile(v, 0.25),
            quantile(v, 0.75),
            v[0]
        );
    }
    println!(
        "ratio of medians (routed rate / plain rate): {:.3}; per-round ratios: median {:.3}, \
         quartiles {:.3} / {:.3}",
        p / r,
        quantile(&ratios, 0.5),
        quantile(&ratios, 0.25),
        quantile(&ratios, 0.75)
    );
    report_routing(&routed);
}

/// Prints how the routing decided a routed world's new flows, so that a
/// run shows every stage was taken.
fn report_routing(world: &World) {
    let c = world.pipeline.route_counters().snapshot();
    println!(
        "routing of {} new flows: path {}, path fallback {}, SET {}, SET closed {}, canary {}, \
         first choice {}, zone fallback {}, unplaced {}",
        world.new_flows(),
        c.path_flows,
        c.path_fallbacks,
        c.set_flows,
        c.set_closed,
        c.canary_flows,
        c.first_choice,
        c.fallbacks,
        c.unplaced
    );
}

fn maglev_benches(c: &mut Criterion) {
    let backends = support::maglev_backends();
    let mut group = c.benchmark_group("maglev_build");
    for size in MAGLEV_SIZES {
        group.bench_function(BenchmarkId::from_parameter(size), |b| {
            b.iter(|| MaglevTable::build(black_box(&backends), black_box(size)));
        });
    }
    group.finish();

    let mut group = c.benchmark_group("snapshot_build");
    for size in MAGLEV_SIZES {
        let config = support::maglev_config(size);
        group.bench_function(BenchmarkId::from_parameter(size), |b| {
            b.iter(|| Snapshot::build(black_box(&config), None));
        });
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

/// Every bench here, under `config()` and the command line's options: what
/// `criterion_group!` defines, written out so it can carry a doc comment.
fn benches() {
    // `interleaved` is not a criterion bench: run alone when named.
    if std::env::args().skip(1).any(|a| a == "interleaved") {
        interleaved_new_flows();
        return;
    }
    let mut criterion = config().configure_from_args();
    maglev_benches(&mut criterion);
    flow_benches(&mut criterion);
    routed_benches(&mut criterion);
}
criterion_main!(benches);
