//! The worker's longest poll with 1 000 000 connections, with and without
//! a `flowgatectl flows` listing in progress (docs/benchmarks.md).
//!
//! One worker over in-memory ports (`support/worker_lab.rs`), its table
//! filled to its capacity of 1 000 000 by real handshakes through the
//! pipeline, so every new connection pushes one out. Each turn gets a
//! batch of 64 client frames — `NEW_PER_TURN` SYNs of new clients, the
//! rest ACKs of random established ones — and the backends' SYN+ACKs to the
//! last turn's SYNs. A turn is `daemon::worker_thread::turn`, exactly what
//! the worker thread runs between two snapshot loads: the poll of its ports
//! and one bounded step of the listing in progress. Only the turn is timed;
//! putting frames on the wire and taking them off is not.
//!
//! A control thread lists the worker's connections as the daemon does
//! (`flow_query::list`, then sort and format into `FlowEntry`s), in three
//! phases of every round, in rotating order:
//!
//! - `quiet`: no listing;
//! - `all`: every connection, up to the API's limit of 100 000 a listing;
//! - `service`: one service's of 100 (about 1 %), up to 100 000: each
//!   listing looks at the whole table.
//!
//! In the listing phases only the turns that began with a listing at the
//! worker count (a phase runs until `TURNS` of them were timed). Each phase reports its longest turn (and the 99.9th and
//! 50th percentiles); the summary gives the medians over rounds of each
//! phase's longest turn, and their ratios to `quiet`'s.
//!
//! For comparison it ends by timing what one poll cost when a worker
//! answered a listing whole, as it did before.
//!
//! `cargo bench --bench worker_poll [-- ROUNDS]` (default 15). Wall time:
//! run it under `flock /tmp/flowgate-bench.lock` on a machine as quiet as
//! can be had. With `FLOWGATE_BENCH_FIFO=1` (as root) the worker's thread
//! runs SCHED_FIFO, as a worker that owns its core would, so that other
//! programs on a shared machine do not preempt it mid-turn; the control
//! thread stays an ordinary one.

mod support;
#[path = "support/worker_lab.rs"]
mod worker_lab;

use std::sync::Arc;
use std::time::Instant;

use flowgate_api::FlowEntry;
use flowgate_dataplane::control::flow_entry;
use flowgate_dataplane::daemon::flow_query::{self, CHUNK_RECORDS, SCAN_PER_POLL};
use flowgate_dataplane::flow::{FlowFilter, FlowRecord, FlowTable, FlowTimeouts};

use support::{Gateway, World, CONNECTIONS};
use worker_lab::{service_filter, Lister, Listing, WorkerLab};

/// Services of the gateway (a service's listing keeps about 1 %).
const SERVICES: usize = 100;
/// New connections per turn (the rest of the batch are ACKs).
const NEW_PER_TURN: usize = 4;
/// Timed turns per phase.
const TURNS: usize = 4_000;
/// Most turns a phase runs to get them.
const MAX_TURNS: usize = 400_000;
/// Untimed turns at the start of each phase (the listing gets going).
const WARM_TURNS: usize = 300;
/// The API's largest `flows` limit.
const LIMIT: usize = 100_000;
const DEFAULT_ROUNDS: usize = 15;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Quiet,
    All,
    Service,
}

const PHASES: [Phase; 3] = [Phase::Quiet, Phase::All, Phase::Service];

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Quiet => "quiet",
            Phase::All => "all",
            Phase::Service => "service",
        }
    }

    fn listing(self) -> Listing {
        match self {
            Phase::Quiet => Listing::Rest,
            Phase::All => Listing::Only(0),
            Phase::Service => Listing::Only(1),
        }
    }
}

/// One phase's timed turns, in nanoseconds.
struct Measured {
    /// The turns that count: all in `quiet`, those that began with a
    /// listing at the worker in the others.
    turns_ns: Vec<u64>,
    /// Turns run.
    turns: usize,
    listings: u64,
    records: u64,
}

impl Measured {
    fn quantile(&self, q: f64) -> u64 {
        let mut v = self.turns_ns.clone();
        v.sort_unstable();
        let at = ((v.len() as f64 - 1.0) * q).round() as usize;
        v.get(at).copied().unwrap_or(0)
    }

    fn max(&self) -> u64 {
        self.turns_ns.iter().copied().max().unwrap_or(0)
    }
}

fn run_phase(lab: &mut WorkerLab, lister: &Lister, phase: Phase) -> Measured {
    let relaxed = std::sync::atomic::Ordering::Relaxed;
    lister.set(phase.listing());
    let listings = lister.listings.load(relaxed);
    let records = lister.records.load(relaxed);
    let mut turns_ns = Vec::with_capacity(TURNS);
    let mut turns = 0;
    // A listing's records spend part of the time on the control side, and
    // between listings it sorts and formats: go on until enough turns
    // that began with a listing at the worker were timed.
    while turns_ns.len() < TURNS && turns < MAX_TURNS {
        lab.load(NEW_PER_TURN);
        let listing = lab.flow_queries.is_busy();
        let start = Instant::now();
        std::hint::black_box(lab.turn());
        let ns = start.elapsed().as_nanos() as u64;
        lab.drain();
        if turns >= WARM_TURNS && (phase == Phase::Quiet) != listing {
            turns_ns.push(ns);
        }
        turns += 1;
    }
    lister.set(Listing::Rest);
    // Let a listing in progress end before the next phase.
    while lister.is_listing() || lab.flow_queries.is_busy() {
        lab.load(NEW_PER_TURN);
        lab.turn();
        lab.drain();
    }
    Measured {
        turns_ns,
        turns,
        listings: lister.listings.load(relaxed) - listings,
        records: lister.records.load(relaxed) - records,
    }
}

/// Makes this thread (the worker's; the control thread is already
/// running) a SCHED_FIFO thread, as a worker owning its core would be:
/// other programs on a shared machine no longer preempt it. `chrt` on the
/// process id changes the main thread only; needs root.
fn worker_owns_its_core() {
    let pid = std::process::id().to_string();
    let status = std::process::Command::new("chrt")
        .args(["--fifo", "--pid", "1", &pid])
        .status();
    match status {
        Ok(s) if s.success() => eprintln!("the worker's thread runs SCHED_FIFO 1"),
        other => eprintln!("chrt failed ({other:?}): the worker's thread shares its core"),
    }
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

fn us(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1_000.0)
}

fn main() {
    // `cargo bench` passes `--bench`; a bare number is the round count.
    let rounds = std::env::args()
        .skip(1)
        .find_map(|a| a.parse::<usize>().ok())
        .unwrap_or(DEFAULT_ROUNDS)
        .max(1);
    eprintln!(
        "worker_poll: {CONNECTIONS} connections, {SERVICES} services, {rounds} rounds of \
         {TURNS} timed turns per phase; a step looks at {SCAN_PER_POLL} records and \
         copies at most {CHUNK_RECORDS}"
    );
    let setup = Instant::now();
    let gateway = Gateway::new(SERVICES);
    let mut world = World::new(&gateway, CONNECTIONS as usize, 1);
    world.establish(CONNECTIONS);
    let flows = std::mem::replace(&mut world.flows, FlowTable::new(1, FlowTimeouts::default()));
    drop(world);
    assert_eq!(flows.len(), CONNECTIONS as usize);
    let (client, server) = flow_query::flow_queries();
    let mut lab = WorkerLab::new(
        Arc::clone(&gateway.snapshot),
        SERVICES,
        flows,
        CONNECTIONS,
        server,
    );
    let filters = vec![FlowFilter::All, service_filter(&gateway.snapshot, 7)];
    let lister = Lister::start(client, Arc::clone(&gateway.snapshot), filters, LIMIT);
    eprintln!("setup {:.1} s", setup.elapsed().as_secs_f64());
    if std::env::var_os("FLOWGATE_BENCH_FIFO").is_some() {
        worker_owns_its_core();
    }

    println!("round  phase     turns  timed  listings  records  max_us  p999_us  p50_us");
    let mut maxima: [Vec<u64>; 3] = Default::default();
    for round in 0..rounds {
        for k in 0..PHASES.len() {
            let i = (round + k) % PHASES.len();
            let phase = PHASES[i];
            let m = run_phase(&mut lab, &lister, phase);
            assert!(
                m.turns_ns.len() >= TURNS,
                "{}: only {} of {} turns counted",
                phase.name(),
                m.turns_ns.len(),
                m.turns
            );
            println!(
                "{round:5}  {:7}  {:6}  {:6}  {:8}  {:7}  {:>6}  {:>7}  {:>6}",
                phase.name(),
                m.turns,
                m.turns_ns.len(),
                m.listings,
                m.records,
                us(m.max()),
                us(m.quantile(0.999)),
                us(m.quantile(0.5)),
            );
            maxima[i].push(m.max());
        }
    }
    assert_eq!(
        lab.worker.flows().len(),
        CONNECTIONS as usize,
        "the table stays full"
    );
    let counters = lab.worker.pipeline().counters();
    eprintln!(
        "worker: {} new connections, {} flow-table hits, {} pushed out",
        counters.new_flows.get(),
        counters.flow_hits.get(),
        lab.worker.flows().stats().evicted
    );
    let quiet = median(maxima[0].clone());
    println!("median of the longest turns over {rounds} rounds:");
    for (i, phase) in PHASES.iter().enumerate() {
        let m = median(maxima[i].clone());
        println!(
            "  {:7}  {:>6} us  {:.2}x quiet",
            phase.name(),
            us(m),
            m as f64 / quiet.max(1) as f64
        );
    }
    drop(lister.stop(|| {
        lab.turn();
    }));
    whole_listing_in_one_poll(&lab, &gateway);
}

/// What one poll cost when a worker answered `flows` whole (before the
/// listing was split into steps): walk the table, make each connection an
/// entry with strings and its service's name, keep the service's, up to
/// the limit. Timed here on the bench thread, median of 5.
fn whole_listing_in_one_poll(lab: &WorkerLab, gateway: &Gateway) {
    let flows = lab.worker.flows();
    let snapshot = &gateway.snapshot;
    let service = support::service_addr(7);
    for (name, wanted) in [("all", None), ("service", Some("svc7"))] {
        let mut times = Vec::new();
        for _ in 0..5 {
            let start = Instant::now();
            let entries: Vec<FlowEntry> = flows
                .iter()
                .filter_map(|c| {
                    let e = flow_entry(0, &FlowRecord::of(c), snapshot, 0);
                    match wanted {
                        Some(n) if e.service.as_deref() != Some(n) => None,
                        _ => Some(e),
                    }
                })
                .take(LIMIT)
                .collect();
            times.push(start.elapsed().as_micros() as u64);
            assert!(entries.iter().all(|e| wanted.is_none() || e.vip == service));
            std::hint::black_box(entries);
        }
        println!(
            "a whole `{name}` listing in one poll, as before: {} us",
            median(times)
        );
    }
}
