//! A worker's turn allocates nothing: not for packets, and not for the
//! control side's questions.
//!
//! This binary's global allocator counts the calls made by any thread that
//! has switched counting on; the test switches it on around each turn of
//! the worker loop (`daemon::worker_thread::turn`: a poll of in-memory
//! ports, then a step of the `flows` listing in progress) and off around
//! everything else — putting frames on the wire, taking them off, and the
//! control thread, which lists connections the whole time and allocates
//! as it pleases.

#[path = "../benches/support/mod.rs"]
mod support;
#[path = "../benches/support/worker_lab.rs"]
mod worker_lab;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use flowgate_dataplane::daemon::flow_query::flow_queries;
use flowgate_dataplane::flow::{FlowFilter, FlowTable, FlowTimeouts};
use flowgate_dataplane::table::Snapshot;

use support::{gateway_config, Gateway, World};
use worker_lab::{service_filter, Lister, Listing, WorkerLab, BATCH};

/// The system allocator, counting the calls of threads that ask it to.
struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static REALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static DEALLOCATIONS: AtomicU64 = AtomicU64::new(0);

fn note(counter: &AtomicU64) {
    // `try_with`: a thread being torn down may still free memory.
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        counter.fetch_add(1, Relaxed);
    }
}

// SAFETY: every call is passed on unchanged to the system allocator, which
// keeps GlobalAlloc's contract; counting touches only atomics and a
// const-initialised thread-local, neither of which allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(&ALLOCATIONS);
        // SAFETY: the caller's contract for `alloc`, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(&ALLOCATIONS);
        // SAFETY: the caller's contract for `alloc_zeroed`, passed on.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(&REALLOCATIONS);
        // SAFETY: the caller's contract for `realloc`, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(&DEALLOCATIONS);
        // SAFETY: the caller's contract for `dealloc`, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Allocator calls made by one stretch of code on this thread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Calls {
    alloc: u64,
    realloc: u64,
    dealloc: u64,
}

impl Calls {
    fn add(&mut self, other: Calls) {
        self.alloc += other.alloc;
        self.realloc += other.realloc;
        self.dealloc += other.dealloc;
    }
}

/// Runs `f` with counting on for this thread only.
fn counted<T>(f: impl FnOnce() -> T) -> (T, Calls) {
    let read = || {
        (
            ALLOCATIONS.load(Relaxed),
            REALLOCATIONS.load(Relaxed),
            DEALLOCATIONS.load(Relaxed),
        )
    };
    // Other threads do not count, so the counters move only with `f`.
    let before = read();
    COUNTING.with(|c| c.set(true));
    let out = f();
    COUNTING.with(|c| c.set(false));
    let after = read();
    let calls = Calls {
        alloc: after.0 - before.0,
        realloc: after.1 - before.1,
        dealloc: after.2 - before.2,
    };
    (out, calls)
}

const SERVICES: usize = 4;
/// Connections the table holds; setup opens most, the traffic fills it.
const CAPACITY: usize = 8_192;
const ESTABLISHED: u64 = 6_000;
/// New connections per turn (the rest of a batch are ACKs).
const NEW_PER_TURN: usize = 8;

/// A lab whose table holds `ESTABLISHED` connections, and the control
/// side's end of its listings.
fn lab(
    gateway: &Gateway,
) -> (
    WorkerLab,
    flowgate_dataplane::daemon::flow_query::FlowQueryClient,
) {
    let mut world = World::new(gateway, CAPACITY, 1);
    world.establish(ESTABLISHED);
    let flows = std::mem::replace(&mut world.flows, FlowTable::new(1, FlowTimeouts::default()));
    let (client, server) = flow_queries();
    let lab = WorkerLab::new(
        Arc::clone(&gateway.snapshot),
        SERVICES,
        flows,
        ESTABLISHED,
        server,
    );
    (lab, client)
}

#[test]
fn a_turn_allocates_nothing_while_flows_are_listed() {
    let gateway = Gateway::new(SERVICES);
    let (mut lab, client) = lab(&gateway);
    let filters = vec![FlowFilter::All, service_filter(&gateway.snapshot, 1)];
    let lister = Lister::start(client, Arc::clone(&gateway.snapshot), filters, 100_000);

    // Warm up until the table is full, so that new connections evict.
    lister.set(Listing::Cycle);
    let warm_turns = (CAPACITY - ESTABLISHED as usize) / NEW_PER_TURN + 100;
    for _ in 0..warm_turns {
        lab.load(NEW_PER_TURN);
        lab.turn();
        lab.drain();
    }
    assert_eq!(lab.worker.flows().len(), CAPACITY, "the table is full");

    let stats = lab.worker.flows().stats();
    let counters = lab.worker.pipeline().counters();
    let (hits, new_flows) = (counters.flow_hits.get(), counters.new_flows.get());
    let listings = lister.listings.load(Relaxed);
    let mut calls = Calls::default();
    let mut worst = (Calls::default(), 0);
    let (mut sent, mut with_listing) = (0, 0);
    const TURNS: usize = 3_000;
    for turn in 0..TURNS {
        lab.load(NEW_PER_TURN);
        with_listing += usize::from(lab.flow_queries.is_busy());
        let (_, c) = counted(|| lab.turn());
        calls.add(c);
        if c != Calls::default() && worst.0 == Calls::default() {
            worst = (c, turn);
        }
        sent += lab.drain();
    }
    let listings = lister.listings.load(Relaxed) - listings;
    let records = lister.records.load(Relaxed);
    let client = lister.stop(|| {
        lab.turn();
    });
    drop(client);

    // The turns did what they are for: traffic, new connections pushing
    // out old ones, and listings answered.
    // (An ACK whose connection was pushed out opens it again: Maglev
    // picks TCP up mid-stream.)
    let counters = lab.worker.pipeline().counters();
    let new_flows = counters.new_flows.get() - new_flows;
    let hits = counters.flow_hits.get() - hits;
    assert!(
        new_flows >= (TURNS * NEW_PER_TURN) as u64,
        "{new_flows} new"
    );
    assert!(hits >= (TURNS * BATCH / 4) as u64, "{hits} hits");
    assert!(sent >= TURNS * BATCH, "{sent} frames sent");
    assert!(lab.worker.flows().stats().evicted > stats.evicted);
    assert!(
        with_listing >= 100,
        "a listing was in progress in only {with_listing} of {TURNS} turns"
    );
    assert!(listings >= 5, "{listings} listings, {records} records");
    eprintln!(
        "{TURNS} turns, {with_listing} with a listing in progress; {listings} listings \
         answered; {sent} frames sent, {hits} hits, {new_flows} new connections"
    );
    assert_eq!(
        calls,
        Calls::default(),
        "allocator calls in {TURNS} turns; the first at turn {}: {:?}",
        worst.1,
        worst.0
    );
}

#[test]
fn a_new_snapshot_costs_allocations_on_its_first_turn_at_most() {
    let gateway = Gateway::new(SERVICES);
    let (mut lab, _client) = lab(&gateway);
    for _ in 0..10 {
        lab.load(NEW_PER_TURN);
        lab.turn();
        lab.drain();
    }
    // The same services with a fifth backend each: new endpoint ids, so
    // the per-endpoint counters have to grow.
    let mut config = gateway_config(SERVICES, CAPACITY);
    for (k, service) in config.services.iter_mut().enumerate() {
        let extra = std::net::Ipv4Addr::new(198, 19, 1, 200 + k as u8);
        service
            .backends
            .push(flowgate_dataplane::rules::Backend::new(extra.into(), 8080));
    }
    let next = Arc::new(Snapshot::build(&config, Some(&gateway.snapshot)));
    assert!(next.endpoint_id_limit() > gateway.snapshot.endpoint_id_limit());
    lab.set_snapshot(Arc::clone(&next));
    let mut per_turn = Vec::new();
    for _ in 0..50 {
        lab.load(NEW_PER_TURN);
        let (_, c) = counted(|| lab.turn());
        per_turn.push(c);
        lab.drain();
    }
    eprintln!(
        "allocator calls on adopting a new snapshot: {:?}",
        per_turn[0]
    );
    assert!(
        per_turn[1..].iter().all(|c| *c == Calls::default()),
        "allocations after the first turn of a generation: {per_turn:?}"
    );
    assert!(lab.worker.flows().endpoint_slots() >= next.endpoint_id_limit());
}
