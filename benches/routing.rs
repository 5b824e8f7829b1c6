//! The routing tables of `flowgate_dataplane::route`: how fast they answer,
//! how fast they build and change, and how much memory they take.
//!
//! - `classes`: a `ClientClasses` of 10 000 prefixes (6 000 IPv4 of
//!   lengths 8–32, 4 000 IPv6 of lengths 16–128, random); build time,
//!   memory, and lookups of random addresses that hit a prefix and that
//!   miss every one.
//! - `paths`: a `PathTable` of 1 000 000 paths (500 000 IPv4 /32 and
//!   500 000 IPv6 /128, over 1 000 services, one backend each); bulk-load
//!   time, memory, lookups of random clients with a path (hits) and
//!   without (misses, in services that have paths of that family); the
//!   writer's cost of one insert and one remove; and update-to-visible
//!   latency: the writer inserts or removes one path while a reader thread
//!   spins on lookups until it sees the change (1 000 updates). Memory is
//!   also given with 10 % of the paths naming a list of 4 backends.
//!
//! - `api`: one path added or removed through the control API, with
//!   1 000 and with 1 000 000 paths in the service's rules: the whole
//!   request (`ControlState::handle` of a one-edit `path add` or `path
//!   del` batch, as `flowgatectl path add|del` sends it, over the daemon's
//!   `Gateway`) until a worker's reader (spinning on a lookup, as in
//!   `paths`) sees it, 2 000 requests each; and the call a change of
//!   whole rules that differ only in paths takes (`Gateway::apply_paths`,
//!   as a reload or etcd makes, which compares the changed service's
//!   paths in full).
//!
//! Lookups are timed per batch of 64, the way a worker runs them (the path
//! view loaded once per batch), with `Instant` read once per batch; the
//! figure is the median batch's nanoseconds per lookup, with the 99th
//! percentile beside it. "Dependent" lookups take their next client from
//! the previous answer, so they cannot overlap: that is one lookup's
//! latency. Memory is counted by this binary's allocator (bytes requested
//! and not yet freed), not estimated; the tables' own `heap_bytes` is
//! printed beside it.
//!
//! Run: `flock /tmp/flowgate-bench.lock cargo bench --bench routing`
//! (about a minute). docs/benchmarks.md keeps the results.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashSet;
use std::hint::black_box;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use flowgate_api::{Batch, Edit, PathKey, PathSpec, Reply, Request};
use flowgate_api::{FlowEntry, StatsReport, StatusReport};
use flowgate_dataplane::control::{status_report, Applied, ApplyError, ControlState, Dataplane};
use flowgate_dataplane::daemon::Gateway;
use flowgate_dataplane::route::{
    BackendRef, ClassId, ClientAddr, ClientClasses, PathEntry, PathReader, PathTable, PathView,
    Prefix,
};
use flowgate_dataplane::rules::{load_str, ClientPrefix, Config, DistributionPath};
use flowgate_dataplane::table::PathUpdate;

/// Counts the bytes the program holds: requested sizes, not the
/// allocator's own overhead.
struct CountingAllocator;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to the system allocator with the caller's
// arguments unchanged, so it keeps the system allocator's guarantees; the
// counting touches no memory the caller owns.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `alloc`'s contract.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `alloc_zeroed`'s contract.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is; `ptr` came from this allocator with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `realloc`'s contract.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            LIVE_BYTES.fetch_add(new_size, Ordering::Relaxed);
            LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn live_bytes() -> usize {
    LIVE_BYTES.load(Ordering::Relaxed)
}

/// SplitMix64: a small, fixed-seed generator, so every run draws the same.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
}

const BATCH: usize = 64;

/// Median and 99th percentile of `samples` (sorted here).
fn median_p99(samples: &mut [f64]) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}

/// Per-lookup nanoseconds of each batch of 64 lookups over `0..count`
/// (`per_batch` runs one batch, including any per-batch load of a view),
/// as (median, p99, mean).
fn time_batches(
    count: usize,
    mut per_batch: impl FnMut(std::ops::Range<usize>) -> u64,
) -> (f64, f64, f64) {
    let mut samples = Vec::with_capacity(count / BATCH);
    let mut sink = 0u64;
    let start = Instant::now();
    for first in (0..count).step_by(BATCH) {
        let t = Instant::now();
        sink = sink.wrapping_add(per_batch(first..(first + BATCH).min(count)));
        samples.push(t.elapsed().as_nanos() as f64 / BATCH as f64);
    }
    let mean = start.elapsed().as_nanos() as f64 / count as f64;
    black_box(sink);
    let (median, p99) = median_p99(&mut samples);
    (median, p99, mean)
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn bench_classes() {
    println!("== classes: 10 000 prefixes (6 000 IPv4 /8–/32, 4 000 IPv6 /16–/128)");
    let mut rng = Rng(1);
    let mut seen = HashSet::new();
    let mut entries: Vec<(Prefix, ClassId)> = Vec::new();
    while entries.len() < 10_000 {
        let prefix = if entries.len() < 6_000 {
            // Everything under 0.0.0.0/1, so 128.0.0.0/1 is all misses.
            let len = 8 + rng.below(25) as u8;
            let addr = (rng.next() as u32) >> 1;
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            Prefix::v4(addr & mask, len).unwrap()
        } else {
            // Under 2000::/4, so 3000::/4 is all misses.
            let len = 16 + rng.below(113) as u8;
            let addr =
                (0x2u128 << 124) | (u128::from(rng.next()) << 64 | u128::from(rng.next())) >> 4;
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            Prefix::v6(addr & mask, len).unwrap()
        };
        if seen.insert(prefix) {
            let class = ClassId::new(rng.below(64) as u32).unwrap();
            entries.push((prefix, class));
        }
    }

    let mut builds = Vec::new();
    let mut table = ClientClasses::default();
    let mut bytes = 0;
    for _ in 0..11 {
        drop(table);
        let before = live_bytes();
        let t = Instant::now();
        table = ClientClasses::build(entries.iter().copied()).unwrap();
        builds.push(t.elapsed().as_secs_f64() * 1e6);
        bytes = live_bytes() - before;
    }
    let (build_median, _) = median_p99(&mut builds);
    let (v4_intervals, v6_intervals) = table.intervals();
    println!(
        "build: {build_median:.0} µs (median of 11); intervals: {v4_intervals} IPv4 + {v6_intervals} IPv6"
    );
    println!(
        "memory: {bytes} B counted by the allocator ({:.1} B per prefix); heap_bytes() {}",
        bytes as f64 / 10_000.0,
        table.heap_bytes()
    );

    // Hits: a random address inside a random prefix. Misses: addresses in
    // the halves no prefix is in.
    const LOOKUPS: usize = 1 << 20;
    let hits: Vec<ClientAddr> = (0..LOOKUPS)
        .map(|_| {
            let (prefix, _) = entries[rng.below(entries.len() as u64) as usize];
            match prefix {
                Prefix::V4 { addr, len } => {
                    let host = (rng.next() as u32).checked_shr(u32::from(len)).unwrap_or(0);
                    ClientAddr::V4(addr | host)
                }
                Prefix::V6 { addr, len } => {
                    let random = u128::from(rng.next()) << 64 | u128::from(rng.next());
                    ClientAddr::V6(addr | random.checked_shr(u32::from(len)).unwrap_or(0))
                }
            }
        })
        .collect();
    let misses: Vec<ClientAddr> = (0..LOOKUPS)
        .map(|i| {
            if i.is_multiple_of(2) {
                ClientAddr::V4(0x8000_0000 | rng.next() as u32)
            } else {
                ClientAddr::V6((0x3u128 << 124) | u128::from(rng.next()))
            }
        })
        .collect();
    assert!(hits.iter().all(|&a| table.lookup(a).is_some()));
    assert!(misses.iter().all(|&a| table.lookup(a).is_none()));
    for (name, addrs) in [("hits", &hits), ("misses", &misses)] {
        let (median, p99, mean) = time_batches(addrs.len(), |range| {
            range
                .map(|i| table.lookup(addrs[i]).map_or(0, |c| u64::from(c.get())))
                .sum()
        });
        // Dependent: the next address's index depends on this answer.
        let mut next = 0usize;
        let (dep_median, dep_p99, _) = time_batches(addrs.len(), |range| {
            let mut sum = 0;
            for _ in range {
                let class = table.lookup(addrs[next]).map_or(0, |c| u64::from(c.get()));
                next = (next + 1 + (class & 1) as usize) % addrs.len();
                sum += class;
            }
            sum
        });
        println!(
            "lookup {name}: {median:.1} ns (p99 {p99:.1}, mean {mean:.1}); dependent {dep_median:.1} ns (p99 {dep_p99:.1})"
        );
    }
}

/// The client of path `i`: IPv4 for even `i`, IPv6 for odd; unique.
fn path_client(i: u32) -> ClientAddr {
    if i.is_multiple_of(2) {
        // An odd multiplier is a bijection on the low 24 bits.
        ClientAddr::V4(0x0A00_0000 | ((i / 2).wrapping_mul(0x9E37_79B1) & 0x00FF_FFFF))
    } else {
        ClientAddr::V6(
            (0x2001_0db8u128 << 96) | u128::from(i.wrapping_mul(0x9E37_79B1)) << 32 | u128::from(i),
        )
    }
}

const PATHS: u32 = 1_000_000;
const SERVICES: u32 = 1_000;

fn path_entries(lists_every: Option<u32>) -> Vec<PathEntry> {
    (0..PATHS)
        .map(|i| {
            let backends = match lists_every {
                Some(n) if i.is_multiple_of(n) => {
                    (0..4).map(|k| BackendRef::new(i + k).unwrap()).collect()
                }
                _ => vec![BackendRef::new(i).unwrap()],
            };
            PathEntry {
                service: i % SERVICES,
                prefix: Prefix::host(path_client(i)),
                backends,
            }
        })
        .collect()
}

fn bench_paths() {
    println!("== paths: 1 000 000 (500 000 IPv4 /32 + 500 000 IPv6 /128), {SERVICES} services");
    let entries = path_entries(None);
    let mut table = bulk_load(&entries);
    memory_with_lists();

    let (hits, misses) = path_queries();
    let mut reader = table.reader();
    assert!(hits
        .iter()
        .all(|&(s, c)| reader.load().lookup(s, c).is_some()));
    assert!(misses
        .iter()
        .all(|&(s, c)| reader.load().lookup(s, c).is_none()));
    for (name, queries) in [("hits", &hits), ("misses", &misses)] {
        path_lookups(&mut reader, name, queries);
    }

    in_flow_work(&mut reader, &hits);
    writer_edits(&mut table);
    update_to_visible(&mut table);
    drop(entries);
}

/// Loads `entries` into a fresh table three times; prints the load time
/// and the memory the table holds, and returns the last table.
fn bulk_load(entries: &[PathEntry]) -> PathTable {
    let mut loads = Vec::new();
    let mut table = PathTable::new(2_000_000);
    let mut bytes = 0;
    for _ in 0..3 {
        drop(table);
        let before = live_bytes();
        table = PathTable::new(2_000_000);
        let t = Instant::now();
        table.load(entries).unwrap();
        loads.push(t.elapsed().as_secs_f64() * 1e3);
        bytes = live_bytes() - before;
    }
    let (load_median, _) = median_p99(&mut loads);
    println!(
        "bulk load: {load_median:.0} ms (median of 3: {:.0}, {:.0}, {:.0}); {:.1} M paths/s",
        loads[0],
        loads[1],
        loads[2],
        f64::from(PATHS) / load_median / 1e3
    );
    println!(
        "memory: {bytes} B ({:.1} MiB) counted by the allocator = {:.1} B per path; heap_bytes() {}",
        mib(bytes),
        bytes as f64 / f64::from(PATHS),
        table.heap_bytes()
    );
    table
}

/// The memory of a table where every tenth path names a list of 4
/// backends.
fn memory_with_lists() {
    let with_lists = path_entries(Some(10));
    let before = live_bytes();
    let mut listed = PathTable::new(2_000_000);
    listed.load(&with_lists).unwrap();
    let bytes = live_bytes() - before;
    println!(
        "memory with 10 % lists of 4 backends: {bytes} B = {:.1} B per path",
        bytes as f64 / f64::from(PATHS)
    );
}

/// One path lookup: a service and a client.
type PathQuery = (u32, ClientAddr);

/// Lookups for the path benches: queries that have a path (hits), and
/// queries whose client has none in a service that holds paths of its
/// family (misses).
fn path_queries() -> (Vec<PathQuery>, Vec<PathQuery>) {
    let mut rng = Rng(2);
    const LOOKUPS: usize = 1 << 20;
    let hits: Vec<PathQuery> = (0..LOOKUPS)
        .map(|_| {
            let i = rng.below(u64::from(PATHS)) as u32;
            (i % SERVICES, path_client(i))
        })
        .collect();
    let misses: Vec<PathQuery> = (0..LOOKUPS)
        .map(|i| {
            let service = rng.below(u64::from(SERVICES)) as u32;
            let client = if i.is_multiple_of(2) {
                ClientAddr::V4(0x0B00_0000 | (rng.next() as u32 >> 8))
            } else {
                ClientAddr::V6((0x2001_0db9u128 << 96) | u128::from(rng.next()))
            };
            (service, client)
        })
        .collect();
    (hits, misses)
}

/// The lookups of one batch, `range` of `queries`, in `view`: the sum of
/// the backends picked, so the work cannot be optimised away.
fn lookup_batch(view: &PathView, queries: &[PathQuery], range: Range<usize>) -> u64 {
    range
        .map(|i| {
            let (service, client) = queries[i];
            view.lookup(service, client)
                .map_or(0, |t| u64::from(t.pick(i as u64).get()))
        })
        .sum()
}

/// Times `queries` as batches three ways — in place, with each batch's
/// slots warmed first, and dependent — and prints the figures as `name`.
fn path_lookups(reader: &mut PathReader, name: &str, queries: &[PathQuery]) {
    let mut runs = Vec::new();
    for _ in 0..5 {
        runs.push(time_batches(queries.len(), |range| {
            lookup_batch(reader.load(), queries, range)
        }));
    }
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (median, p99, mean) = runs[2];
    // The same, each batch warming its slots first (`PathView::warm`).
    let mut warmed = Vec::new();
    for _ in 0..5 {
        warmed.push(time_batches(queries.len(), |range| {
            let view = reader.load();
            for i in range.clone() {
                let (service, client) = queries[i];
                black_box(view.warm(service, client));
            }
            lookup_batch(view, queries, range)
        }));
    }
    warmed.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (warm_median, warm_p99, _) = warmed[2];
    let mut next = 0usize;
    let (dep_median, dep_p99, _) = time_batches(queries.len(), |range| {
        let view = reader.load();
        let mut sum = 0;
        for _ in range {
            let (service, client) = queries[next];
            let got = view
                .lookup(service, client)
                .map_or(0, |t| u64::from(t.pick(0).get()));
            // A miss's answer is a predictable branch, not data: tie the
            // next query to the slot's contents too.
            let tag = u64::from(view.warm(service, client));
            next = (next + 1 + ((got ^ tag) & 1) as usize) % queries.len();
            sum += got;
        }
        sum
    });
    println!(
        "lookup {name}: {median:.1} ns (p99 {p99:.1}, mean {mean:.1}; median of 5 runs' medians); \
         warmed batch {warm_median:.1} ns (p99 {warm_p99:.1}); dependent {dep_median:.1} ns (p99 {dep_p99:.1})"
    );
}

/// The writer's cost of one edit, 1 000 each way.
fn writer_edits(table: &mut PathTable) {
    let mut inserts = Vec::new();
    let mut removes = Vec::new();
    for k in 0..1_000u32 {
        let prefix = Prefix::host(ClientAddr::V4(0x0C00_0000 + k * 7919));
        let backend = BackendRef::new(k).unwrap();
        let t = Instant::now();
        table.insert(k % SERVICES, prefix, &[backend]).unwrap();
        inserts.push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        table.remove(k % SERVICES, prefix).unwrap();
        removes.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let (insert_median, insert_p99) = median_p99(&mut inserts);
    let (remove_median, remove_p99) = median_p99(&mut removes);
    println!(
        "writer, one edit with 1 M loaded: insert {insert_median:.1} µs (p99 {insert_p99:.1}), remove {remove_median:.1} µs (p99 {remove_p99:.1})"
    );
}

/// Stands in for the rest of a new flow's work in the pipeline (about
/// 1 500 dependent instructions, more than the CPU's reorder window), so
/// that a lookup's cache miss cannot hide behind the next flow's.
#[inline(never)]
fn other_flow_work(seed: u64) -> u64 {
    let mut h = seed;
    for _ in 0..500 {
        h = h.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(17) ^ 1;
    }
    h
}

/// What a path lookup adds to a new flow when it sits inside other work
/// whose result depends on it: looked up in place, or with the batch's
/// slots warmed first (`PathView::warm`).
fn in_flow_work(reader: &mut PathReader, hits: &[PathQuery]) {
    const FLOWS: usize = 1 << 16;
    let mut base = Vec::new();
    let mut plain = Vec::new();
    let mut warmed = Vec::new();
    for _ in 0..5 {
        base.push(time_batches(FLOWS, |range| {
            range
                .map(|i| other_flow_work(i as u64))
                .fold(0, u64::wrapping_add)
        }));
        plain.push(time_batches(FLOWS, |range| {
            let view = reader.load();
            range
                .map(|i| {
                    let (service, client) = hits[i];
                    let got = view.lookup(service, client).map_or(0, |t| t.pick(0).get());
                    other_flow_work(i as u64 ^ u64::from(got))
                })
                .fold(0, u64::wrapping_add)
        }));
        warmed.push(time_batches(FLOWS, |range| {
            let view = reader.load();
            for i in range.clone() {
                let (service, client) = hits[i];
                black_box(view.warm(service, client));
            }
            range
                .map(|i| {
                    let (service, client) = hits[i];
                    let got = view.lookup(service, client).map_or(0, |t| t.pick(0).get());
                    other_flow_work(i as u64 ^ u64::from(got))
                })
                .fold(0, u64::wrapping_add)
        }));
    }
    let median = |runs: &mut Vec<(f64, f64, f64)>| {
        runs.sort_by(|a, b| a.0.total_cmp(&b.0));
        runs[2].0
    };
    let (base, plain, warmed) = (median(&mut base), median(&mut plain), median(&mut warmed));
    println!(
        "inside other per-flow work ({base:.0} ns a flow without a lookup): a lookup adds {:.1} ns in place, {:.1} ns with the batch warmed first",
        plain - base,
        warmed - base
    );
}

/// A reader thread spins on one lookup; the writer makes 1 000 changes
/// (insert, remove, alternately) one after another, each once the reader
/// has seen the previous one. Latency: from before the writer's call to
/// the reader's first lookup that returns the new state.
fn update_to_visible(table: &mut PathTable) {
    const UPDATES: usize = 1_000;
    let service = 7;
    let client = ClientAddr::V6((0x2001_0db8_ffffu128 << 80) | 1);
    let prefix = Prefix::host(client);
    let backend = BackendRef::new(42).unwrap();
    // Update `n` (from 1) makes the path present when `n` is odd.
    let requested = AtomicU64::new(0);
    let seen = AtomicU64::new(0);
    let mut reader = table.reader();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut starts = Vec::with_capacity(UPDATES);
    let seen_at = thread::scope(|scope| {
        let (requested, seen) = (&requested, &seen);
        let spinner = scope.spawn(move || {
            let mut times = Vec::with_capacity(UPDATES);
            let mut done = 0u64;
            while done < UPDATES as u64 && Instant::now() < deadline {
                let want = requested.load(Ordering::Acquire);
                if want == done {
                    std::hint::spin_loop();
                    continue;
                }
                let present = reader.load().lookup(service, client).is_some();
                let should_be_present = !want.is_multiple_of(2);
                if present == should_be_present {
                    times.push(Instant::now());
                    done = want;
                    seen.store(done, Ordering::Release);
                }
            }
            times
        });
        for n in 1..=UPDATES as u64 {
            while seen.load(Ordering::Acquire) != n - 1 && Instant::now() < deadline {
                thread::yield_now();
            }
            requested.store(n, Ordering::Release);
            starts.push(Instant::now());
            if !n.is_multiple_of(2) {
                table.insert(service, prefix, &[backend]).unwrap();
            } else {
                table.remove(service, prefix).unwrap();
            }
        }
        spinner.join().unwrap()
    });
    assert_eq!(
        seen_at.len(),
        UPDATES,
        "the reader missed updates before the deadline"
    );
    let mut latencies: Vec<f64> = starts
        .iter()
        .zip(&seen_at)
        .map(|(start, seen)| seen.saturating_duration_since(*start).as_secs_f64() * 1e6)
        .collect();
    let (median, p99) = median_p99(&mut latencies);
    let max = latencies.last().copied().unwrap_or(0.0);
    println!(
        "update to visible, {UPDATES} updates with 1 M loaded: median {median:.1} µs, p99 {p99:.1} µs, max {max:.1} µs"
    );
}

/// One service (198.18.100.10:80) of four named backends, `paths`
/// distribution paths to them (half IPv4 /32 in 100.64.0.0/10, half IPv6
/// /128 in 2001:2::/48), no other policy.
fn api_config(paths: u32) -> Config {
    let mut text = String::from(
        "[[interfaces]]\nname = \"c\"\nmac = \"02:66:67:00:00:01\"\n\
         [[interfaces]]\nname = \"b\"\nmac = \"02:66:67:00:01:01\"\n",
    );
    for k in 1..=4 {
        text += &format!(
            "[[neighbours]]\naddress = \"198.18.1.{k}\"\nmac = \"02:66:67:00:01:{k:02x}\"\ninterface = \"b\"\n"
        );
    }
    text +=
        "[[services]]\nname = \"svc\"\nprotocol = \"tcp\"\nvip = \"198.18.100.10\"\nport = 80\n\
             maglev_table_size = 1009\n";
    for k in 1..=4 {
        text += &format!(
            "[[services.backends]]\naddress = \"198.18.1.{k}\"\nport = 8080\nname = \"p{k}\"\n"
        );
    }
    let mut config = load_str(&text, "api.toml").expect("the bench rules are valid");
    config.services[0].routing.paths = (0..paths)
        .map(|i| {
            let address = if i.is_multiple_of(2) {
                std::net::IpAddr::from(std::net::Ipv4Addr::from(0x6440_0000 + i / 2))
            } else {
                std::net::IpAddr::from(std::net::Ipv6Addr::from(
                    (0x2001_0002u128 << 96) | u128::from(i),
                ))
            };
            DistributionPath {
                client: ClientPrefix::host(address),
                backends: vec![format!("p{}", 1 + i % 4)],
            }
        })
        .collect();
    config
}

/// The client of the path the API benches add and remove: in no other
/// path.
const API_CLIENT: std::net::Ipv4Addr = std::net::Ipv4Addr::new(198, 18, 7, 7);

/// `base` with the API benches' path added.
fn with_api_path(base: &Config) -> Config {
    let mut config = base.clone();
    config.services[0].routing.paths.push(DistributionPath {
        client: ClientPrefix::host(API_CLIENT.into()),
        backends: vec!["p2".into()],
    });
    config
}

/// `updates` changes through `Gateway::apply_paths` on a gateway whose
/// rules hold `paths` paths, alternately adding and removing one path,
/// while a reader thread spins on its lookup: the time from before the
/// call to the reader's first answer with the change, and the call's own
/// time. The configs each call takes are cloned beforehand, untimed.
fn api_apply_paths(paths: u32, updates: usize) {
    let base = api_config(paths);
    let added = with_api_path(&base);
    let setup = Instant::now();
    let gateway = Gateway::start(base.clone(), Vec::new(), Vec::new(), Vec::new(), Vec::new())
        .expect("the gateway starts");
    let started = setup.elapsed();
    let mut reader = gateway.path_reader();
    let client = ClientAddr::V4(u32::from(API_CLIENT));
    assert!(reader.load().lookup(0, client).is_none());
    let requested = AtomicU64::new(0);
    let seen = AtomicU64::new(0);
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut starts = Vec::with_capacity(updates);
    let mut calls = Vec::with_capacity(updates);
    let seen_at = thread::scope(|scope| {
        let (requested, seen) = (&requested, &seen);
        let spinner = scope.spawn(move || {
            let mut times = Vec::with_capacity(updates);
            let mut done = 0u64;
            while done < updates as u64 && Instant::now() < deadline {
                let want = requested.load(Ordering::Acquire);
                if want == done {
                    std::hint::spin_loop();
                    continue;
                }
                let present = reader.load().lookup(0, client).is_some();
                if present != want.is_multiple_of(2) {
                    times.push(Instant::now());
                    done = want;
                    seen.store(done, Ordering::Release);
                }
            }
            times
        });
        for n in 1..=updates as u64 {
            let next = if n.is_multiple_of(2) {
                base.clone()
            } else {
                added.clone()
            };
            while seen.load(Ordering::Acquire) != n - 1 && Instant::now() < deadline {
                thread::yield_now();
            }
            requested.store(n, Ordering::Release);
            let t = Instant::now();
            starts.push(t);
            let applied = gateway.apply_paths(next).expect("the change applies");
            calls.push(t.elapsed().as_secs_f64() * 1e6);
            assert!(applied.warnings.is_empty(), "{:?}", applied.warnings);
        }
        spinner.join().unwrap()
    });
    assert_eq!(seen_at.len(), updates, "the reader missed updates");
    let mut latencies: Vec<f64> = starts
        .iter()
        .zip(&seen_at)
        .map(|(start, seen)| seen.saturating_duration_since(*start).as_secs_f64() * 1e6)
        .collect();
    let (median, p99) = median_p99(&mut latencies);
    let (call_median, call_p99) = median_p99(&mut calls);
    println!(
        "apply_paths with {paths} paths ({updates} updates; gateway start {:.0} ms): visible to a worker's reader \
         median {median:.1} µs, p99 {p99:.1} µs; the call itself median {call_median:.1} µs, p99 {call_p99:.1} µs",
        started.as_secs_f64() * 1e3
    );
}

/// The daemon's gateway as the control API sees it, for the API bench:
/// changes go to the real `Gateway` (its path table and snapshots); the
/// reads the bench does not make answer empty.
struct GatewayDataplane(Gateway);

impl Dataplane for GatewayDataplane {
    fn apply(&self, config: &Config) -> Result<Applied, ApplyError> {
        self.0.apply(config.clone())
    }

    fn apply_paths(&self, config: &Config) -> Result<Applied, ApplyError> {
        self.0.apply_paths(config.clone())
    }

    fn apply_path_updates(
        &self,
        config: &Config,
        updates: &[PathUpdate],
    ) -> Result<Applied, ApplyError> {
        self.0.apply_path_updates(config.clone(), updates)
    }

    fn status(&self) -> StatusReport {
        status_report(self.generation(), 0)
    }

    fn stats(&self) -> StatsReport {
        StatsReport::default()
    }

    fn flows(&self, _: Option<&str>, _: usize) -> Vec<FlowEntry> {
        Vec::new()
    }

    fn generation(&self) -> u64 {
        self.0.snapshot().generation()
    }
}

/// `requests` requests through `ControlState::handle`, alternately a
/// one-edit `path add` and `path del` batch as `flowgatectl path add|del`
/// sends it, over the daemon's `Gateway`, with `paths` paths in the rules,
/// while a reader thread spins on the path's lookup: the time from before
/// the call to the reader's first answer with the change, and the
/// request's own time.
fn api_requests(paths: u32, requests: usize) {
    let base = api_config(paths);
    let setup = Instant::now();
    let gateway = Gateway::start(base.clone(), Vec::new(), Vec::new(), Vec::new(), Vec::new())
        .expect("the gateway starts");
    let mut reader = gateway.path_reader();
    let dataplane = Arc::new(GatewayDataplane(gateway));
    let mut state = ControlState::new(base, "api.toml", dataplane.clone());
    let started = setup.elapsed();
    let client = ClientAddr::V4(u32::from(API_CLIENT));
    assert!(reader.load().lookup(0, client).is_none());
    let generation = dataplane.generation();
    let requested = AtomicU64::new(0);
    let seen = AtomicU64::new(0);
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut starts = Vec::with_capacity(requests);
    let mut calls = Vec::with_capacity(requests);
    let seen_at = thread::scope(|scope| {
        let (requested, seen) = (&requested, &seen);
        let spinner = scope.spawn(move || {
            let mut times = Vec::with_capacity(requests);
            let mut done = 0u64;
            while done < requests as u64 && Instant::now() < deadline {
                let want = requested.load(Ordering::Acquire);
                if want == done {
                    std::hint::spin_loop();
                    continue;
                }
                let present = reader.load().lookup(0, client).is_some();
                if present != want.is_multiple_of(2) {
                    times.push(Instant::now());
                    done = want;
                    seen.store(done, Ordering::Release);
                }
            }
            times
        });
        for n in 1..=requests as u64 {
            let edit = if n.is_multiple_of(2) {
                Edit::PathDel(PathKey {
                    service: "svc".into(),
                    client: API_CLIENT.to_string(),
                })
            } else {
                Edit::PathAdd(PathSpec {
                    service: "svc".into(),
                    client: API_CLIENT.to_string(),
                    backends: vec!["p2".into()],
                })
            };
            let request = Request::Batch(Batch {
                edits: vec![edit],
                dry_run: false,
            });
            while seen.load(Ordering::Acquire) != n - 1 && Instant::now() < deadline {
                thread::yield_now();
            }
            requested.store(n, Ordering::Release);
            let t = Instant::now();
            starts.push(t);
            let reply = state.handle(request);
            calls.push(t.elapsed().as_secs_f64() * 1e6);
            match reply {
                Ok(Reply::Changed(report)) => {
                    assert!(report.applied, "{report:?}");
                    assert_eq!(report.generation, generation, "no snapshot is built");
                }
                other => panic!("{other:?}"),
            }
        }
        spinner.join().unwrap()
    });
    assert_eq!(seen_at.len(), requests, "the reader missed changes");
    assert_eq!(
        state.config().services[0].routing.paths.len(),
        paths as usize,
        "as many adds as removes"
    );
    let mut latencies: Vec<f64> = starts
        .iter()
        .zip(&seen_at)
        .map(|(start, seen)| seen.saturating_duration_since(*start).as_secs_f64() * 1e6)
        .collect();
    let (median, p99) = median_p99(&mut latencies);
    let max = latencies.last().copied().unwrap_or(0.0);
    let (call_median, call_p99) = median_p99(&mut calls);
    println!(
        "path add/del request (ControlState::handle over the Gateway) with {paths} paths \
         ({requests} requests; setup {:.0} ms): visible to a worker's reader median {median:.1} µs, \
         p99 {p99:.1} µs, max {max:.1} µs; the request itself median {call_median:.1} µs, \
         p99 {call_p99:.1} µs",
        started.as_secs_f64() * 1e3
    );
}

fn bench_api() {
    println!("== api: one path added or removed through the control API");
    api_requests(1_000, 2_000);
    api_requests(1_000_000, 2_000);
    api_apply_paths(1_000, 1_000);
    api_apply_paths(1_000_000, 10);
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing
    // useful either: there is only one mode. A first argument `api`,
    // `classes` or `paths` runs that section alone.
    let only = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let runs = |name: &str| only.as_deref().is_none_or(|o| o == name);
    if runs("classes") {
        bench_classes();
    }
    if runs("paths") {
        bench_paths();
    }
    if runs("api") {
        bench_api();
    }
}
