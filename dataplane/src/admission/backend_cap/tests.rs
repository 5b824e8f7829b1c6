//! The connection cap: IPVS's hysteresis, agreement between workers, and
//! the overshoot bound, by a worst-case interleaving and by real threads.

use std::sync::Barrier;

use proptest::prelude::*;

use super::*;

fn cap(upper: i64, lower: i64) -> ConnectionCap {
    ConnectionCap::new(upper, Some(lower)).unwrap()
}

fn table(workers: usize, backends: u32) -> (Arc<BackendConnections>, Vec<WorkerConnections>) {
    let (table, handles) = BackendConnections::new(workers, backends);
    table.reserve(backends);
    (table, handles)
}

#[test]
fn a_backend_stops_at_the_upper_mark_and_resumes_below_the_lower() {
    let (t, w) = table(1, 8);
    let c = cap(10, 7);
    for _ in 0..10 {
        assert!(w[0].try_open(3, &c));
    }
    assert!(!w[0].try_open(3, &c));
    assert!(t.overloaded(3));
    assert_eq!(t.connections(3), 10);
    // Down to the lower mark: still no new flow.
    for _ in 0..3 {
        w[0].close(3);
    }
    assert_eq!(t.connections(3), 7);
    assert!(!w[0].try_open(3, &c));
    // Below it: new flows again, up to the upper mark.
    w[0].close(3);
    assert!(w[0].try_open(3, &c));
    assert!(!t.overloaded(3));
    assert!(w[0].try_open(3, &c));
    assert!(w[0].try_open(3, &c));
    assert!(w[0].try_open(3, &c));
    assert!(!w[0].try_open(3, &c));
    // Other backends are untouched.
    assert_eq!(t.connections(2), 0);
    assert!(w[0].try_open(2, &c));
}

#[test]
fn two_workers_see_one_sum_and_one_flag() {
    let (t, w) = table(2, 4);
    let c = cap(4, 2);
    assert!(w[0].try_open(1, &c));
    assert!(w[1].try_open(1, &c));
    assert!(w[0].try_open(1, &c));
    assert!(w[1].try_open(1, &c));
    // Either worker stops the other.
    assert!(!w[0].try_open(1, &c));
    assert!(!w[1].try_open(1, &c));
    assert_eq!((w[0].own_connections(1), w[1].own_connections(1)), (2, 2));
    // Worker 1's connections close; worker 0 sees the backend resume.
    w[1].close(1);
    assert!(!w[0].try_open(1, &c));
    w[1].close(1);
    assert!(!w[0].try_open(1, &c), "2 is not below the lower mark");
    w[0].close(1);
    assert!(w[1].try_open(1, &c));
    assert_eq!(t.connections(1), 2);
}

#[test]
fn an_unreserved_backend_is_admitted_uncounted() {
    let (t, w) = BackendConnections::new(2, 4096);
    assert_eq!(t.memory_bytes(), 0);
    assert!(w[0].try_open(5, &cap(1, 1)));
    assert!(w[0].try_open(5, &cap(1, 1)));
    assert_eq!(t.connections(5), 0);
    t.reserve(2000);
    assert_eq!(t.memory_bytes(), 2 * CHUNK_BACKENDS * 64);
    assert!(w[0].try_open(5, &cap(1, 1)));
    assert!(!w[1].try_open(5, &cap(1, 1)));
    // Beyond the maximum: never allocated, always admitted.
    t.reserve(u32::MAX);
    assert_eq!(t.memory_bytes(), 4 * CHUNK_BACKENDS * 64);
    assert!(w[0].try_open(5000, &cap(1, 1)));
    // Closing never goes below zero.
    w[1].close(5);
    assert_eq!(t.connections(5), 1);
}

#[test]
fn many_workers_take_more_than_one_line() {
    let (t, w) = table(20, 2);
    assert_eq!(t.lines_per_backend, 2);
    let c = cap(20, 20);
    for h in &w {
        assert!(h.try_open(1, &c));
    }
    assert_eq!(t.connections(1), 20);
    assert!(!w[19].try_open(1, &c));
    assert_eq!(t.connections(0), 0);
}

/// The worst interleaving: every worker loads before any stores. Each
/// admission saw a sum below the mark, and the backend ends `W − 1` over.
#[test]
fn the_worst_interleaving_overshoots_by_workers_minus_one() {
    for workers in [2usize, 3, 4] {
        let (t, w) = table(workers, 1);
        let c = cap(10, 5);
        for _ in 0..9 {
            assert!(w[0].try_open(0, &c));
        }
        let seen: Vec<BackendLoad> = w.iter().map(|_| t.load(0).unwrap()).collect();
        for (h, load) in w.iter().zip(seen) {
            assert!(h.decide(0, load, &c));
            h.open(0);
        }
        assert_eq!(t.connections(0), 10 + workers as u64 - 1);
        assert!(w.iter().all(|h| !h.try_open(0, &c)));
    }
}

/// Two threads race to fill one backend, thousands of times over: each
/// stops at its first refusal, and the backend ends at the upper mark or
/// at most one over it.
#[test]
fn two_threads_racing_overshoot_by_at_most_one() {
    const ROUNDS: usize = 3_000;
    let (t, w) = table(2, 1);
    let c = cap(32, 32);
    let barrier = Barrier::new(2);
    let totals: Vec<u64> = std::thread::scope(|s| {
        let runs: Vec<_> = w
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let (t, barrier) = (&t, &barrier);
                s.spawn(move || {
                    let mut totals = Vec::with_capacity(ROUNDS);
                    for _ in 0..ROUNDS {
                        barrier.wait();
                        let mut mine = 0;
                        while h.try_open(0, &c) {
                            mine += 1;
                        }
                        barrier.wait();
                        if i == 0 {
                            totals.push(t.connections(0));
                        }
                        barrier.wait();
                        for _ in 0..mine {
                            h.close(0);
                        }
                    }
                    totals
                })
            })
            .collect();
        runs.into_iter().next().map(|h| h.join().unwrap()).unwrap()
    });
    assert_eq!(totals.len(), ROUNDS);
    assert!(
        totals.iter().all(|&n| n == 32 || n == 33),
        "{:?}",
        totals.iter().max()
    );
    assert_eq!(t.connections(0), 0);
}

/// IPVS's rule, with one counter: a flag set when an admission brings the
/// connections to the upper mark, cleared when a close brings them below
/// the lower one.
struct Ipvs {
    connections: u64,
    overloaded: bool,
}

proptest! {
    /// Any sequence of opens and closes from any worker, one at a time:
    /// the decisions are IPVS's, exactly.
    #[test]
    fn decisions_match_ipvs_for_any_sequence(
        upper in 1i64..40,
        below in 0i64..40,
        workers in 1usize..4,
        ops in proptest::collection::vec((any::<bool>(), 0usize..4), 1..400),
    ) {
        let lower = (upper - below).max(1);
        let c = cap(upper, lower);
        let (t, w) = table(workers, 1);
        let mut ipvs = Ipvs { connections: 0, overloaded: false };
        let mut open = vec![0u32; workers];
        for (is_open, worker) in ops {
            let worker = worker % workers;
            if is_open {
                let expected = !ipvs.overloaded;
                prop_assert_eq!(w[worker].try_open(0, &c), expected);
                if expected {
                    ipvs.connections += 1;
                    open[worker] += 1;
                    ipvs.overloaded = ipvs.connections >= upper as u64;
                }
            } else if open[worker] > 0 {
                w[worker].close(0);
                open[worker] -= 1;
                ipvs.connections -= 1;
                if ipvs.connections < lower as u64 {
                    ipvs.overloaded = false;
                }
            }
            prop_assert_eq!(t.connections(0), ipvs.connections);
            prop_assert!(ipvs.connections <= upper as u64);
        }
    }
}
