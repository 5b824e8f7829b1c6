//! New connections through the pipeline with the kernel fast path's cache
//! attached, beside the same without it, in the same run: what "new flows
//! with the fast path on" cost a worker (docs/benchmarks.md).
//!
//! Each connection is a whole handshake through the pipeline, as
//! `World::establish` makes it (the client's SYN, the backend's SYN+ACK,
//! the client's ACK, 64 connections a batch), into a table of 1 000 000
//! records. With the fast path the table holds a `FastPath` writer over
//! heap caches for both ports (the same code as over the mapped BPF map;
//! no program reads them here): the ACK offers the connection, and
//! `FlowTable::sync_fast_path` — called after every 64 handshakes, as a
//! worker calls it after every poll — computes both directions' rewrites
//! and installs their two entries, and walks 256 records for the
//! program's counts. Without it, none of that. The clock stands still,
//! so nothing expires and nothing is evicted.
//!
//! Wall time, medians of rounds alternating the two tables:
//! `flock /tmp/flowgate-bench.lock cargo bench --bench fastpath_newflows`
//! (`-- ROUNDS CONNECTIONS`, 5 rounds of 20 000 connections by default).
//!
//! Instructions per connection, with callgrind collecting only inside
//! `measured_handshakes` (`count fast|plain CONNECTIONS`):
//! `valgrind --tool=callgrind --collect-atstart=no
//! --toggle-collect='*measured_handshakes*' BENCH_BINARY count fast 20000`.

#[path = "support/mod.rs"]
mod support;

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use flowgate_dataplane::fastpath::{
    connection_rewrites, CacheGeometry, EntryMemory, FastPath, HeapEntries,
};
use support::{Gateway, World, BATCH};

/// The table's records (the other benches' 1 000 000).
const CAPACITY: usize = support::CONNECTIONS as usize;
/// Slots per port's cache partition: room for every connection the bench
/// makes (at most a quarter full by default).
const CACHE_SLOTS: u32 = 1 << 19;

/// A world with one service, its table given a fast path over heap caches
/// when `fast`.
fn world(gateway: &Gateway, fast: bool) -> World {
    let mut w = World::new(gateway, CAPACITY, 1);
    if fast {
        let geometry = CacheGeometry::new(1, CACHE_SLOTS);
        let caches = (0..2)
            .map(|_| {
                let cache = HeapEntries::new(geometry.entries());
                // Zeroed memory comes lazily from the kernel: write it
                // once, so that an install costs no page fault, as in a
                // daemon whose mapped cache has been in use.
                for word in cache.words() {
                    word.store(0, Ordering::Relaxed);
                }
                Some(Arc::new(cache) as Arc<dyn EntryMemory>)
            })
            .collect();
        w.flows
            .set_fast_path(FastPath::new(geometry, 0, caches, CAPACITY, 0));
    }
    w
}

/// `n` handshakes, 64 at a time, each 64 followed by the fast path's sync
/// (nothing without a fast path).
#[inline(never)]
fn measured_handshakes(w: &mut World, gateway: &Gateway, n: u64) {
    let snapshot = &gateway.snapshot;
    let mut done = 0;
    while done < n {
        let count = (n - done).min(BATCH as u64);
        w.establish(count);
        w.flows
            .sync_fast_path(snapshot.generation(), |c| connection_rewrites(c, snapshot));
        done += count;
    }
}

/// Connections the fast path took so far: installed, or tried and left
/// with the worker for want of a free slot within 8 probes (0 without a
/// fast path).
fn installed(w: &World) -> u64 {
    w.flows
        .fast_path()
        .map_or(0, |f| f.stats().installed + f.stats().full)
}

/// Connections refused for want of a slot so far.
fn refused(w: &World) -> u64 {
    w.flows.fast_path().map_or(0, |f| f.stats().full)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// One round of `n` connections: ns per connection.
fn round(w: &mut World, gateway: &Gateway, n: u64) -> f64 {
    let before = installed(w);
    let start = Instant::now();
    measured_handshakes(w, gateway, n);
    let ns = start.elapsed().as_nanos() as f64 / n as f64;
    if w.flows.fast_path().is_some() {
        assert_eq!(installed(w) - before, n, "a connection was not offered");
    }
    ns
}

fn count(mode: &str, n: u64) -> ExitCode {
    let gateway = Gateway::new(1);
    let fast = match mode {
        "fast" => true,
        "plain" => false,
        _ => {
            eprintln!("usage: fastpath_newflows count fast|plain CONNECTIONS");
            return ExitCode::FAILURE;
        }
    };
    let mut w = world(&gateway, fast);
    // Warm the table's first records and the caches' code paths.
    measured_handshakes_untimed(&mut w, &gateway);
    let before = installed(&w);
    measured_handshakes(&mut w, &gateway, n);
    println!(
        "{mode}: {n} handshakes measured, {} installed",
        installed(&w) - before - refused(&w)
    );
    ExitCode::SUCCESS
}

/// The warm-up, outside the measured function.
fn measured_handshakes_untimed(w: &mut World, gateway: &Gateway) {
    let snapshot = &gateway.snapshot;
    w.establish(BATCH as u64);
    w.flows
        .sync_fast_path(snapshot.generation(), |c| connection_rewrites(c, snapshot));
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("count") {
        let n = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(20_000);
        return count(args.get(1).map_or("", String::as_str), n);
    }
    // `cargo bench` passes `--bench`; numbers are ours.
    let mut numbers = args.iter().filter_map(|a| a.parse::<u64>().ok());
    let rounds = numbers.next().unwrap_or(5) as usize;
    let n = numbers.next().unwrap_or(20_000);
    assert!(
        (rounds as u64 + 1) * n < CAPACITY as u64,
        "rounds x connections must fit the table"
    );
    let gateway = Gateway::new(1);
    let mut plain = world(&gateway, false);
    let mut fast = world(&gateway, true);
    // Warm-up round, not counted.
    round(&mut plain, &gateway, n);
    round(&mut fast, &gateway, n);
    let (mut p, mut f) = (Vec::new(), Vec::new());
    for i in 0..rounds {
        // Alternate which goes first.
        if i % 2 == 0 {
            p.push(round(&mut plain, &gateway, n));
            f.push(round(&mut fast, &gateway, n));
        } else {
            f.push(round(&mut fast, &gateway, n));
            p.push(round(&mut plain, &gateway, n));
        }
    }
    let fmt = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "fast path: {} connections left with the worker for want of a slot",
        refused(&fast)
    );
    let (pm, fm) = (median(p.clone()), median(f.clone()));
    println!(
        "{n} new connections per round (SYN, SYN+ACK, ACK), {rounds} rounds, ns per connection:"
    );
    println!("fast path off  {pm:>8.1}   (rounds: {})", fmt(&p));
    println!("fast path on   {fm:>8.1}   (rounds: {})", fmt(&f));
    println!(
        "difference     {:>8.1}   ({:+.1} %); connections per second: {:.0} off, {:.0} on",
        fm - pm,
        100.0 * (fm - pm) / pm,
        1e9 / pm,
        1e9 / fm
    );
    ExitCode::SUCCESS
}
