//! The service budget's accuracy on a simulated clock: the bounds of the
//! module documentation, with one and two workers, even and 90/10 splits,
//! and two threads racing on one budget.

use std::sync::{Arc, Barrier};

use proptest::prelude::*;

use super::*;
use crate::admission::sim::{arrivals, pick_worker, Rng, Spacing};

const SECOND: u64 = 1_000_000_000;

fn budget(per_s: i64, burst: Option<i64>) -> ServiceRateBudget {
    ServiceRateBudget::new(ServiceRateLimit::new(per_s, burst).unwrap())
}

/// The admission times of `offered_per_s` new flows over `duration_ns`,
/// spread over workers by `weights`, all drawing from `budget`; and how
/// many each worker admitted.
fn simulate(
    budget: &ServiceRateBudget,
    weights: &[u32],
    offered_per_s: f64,
    duration_ns: u64,
    spacing: Spacing,
    seed: u64,
) -> (Vec<u64>, Vec<u64>) {
    let mut rng = Rng::new(seed);
    let mut locals = vec![LocalTokens::default(); weights.len()];
    let mut per_worker = vec![0u64; weights.len()];
    let mut admitted = Vec::new();
    for t in arrivals(offered_per_s, duration_ns, spacing, &mut rng) {
        let w = pick_worker(weights, &mut rng);
        if budget.admit(&mut locals[w], t) {
            admitted.push(t);
            per_worker[w] += 1;
        }
    }
    (admitted, per_worker)
}

/// Checks the module's bounds for a run from a full budget over
/// `[0, duration)`, and for every window of whole seconds after the first.
fn assert_within_bounds(
    b: &ServiceRateBudget,
    workers: usize,
    admitted: &[u64],
    duration_ns: u64,
    saturated: bool,
) {
    let rate = b.limit().rate();
    let (per_s, burst) = (rate.per_s() as f64, rate.burst() as f64);
    let k = f64::from(b.chunk());
    let w = workers as f64;
    let bound = b.error_bound(workers) as f64;
    let d = duration_ns as f64 / 1e9;
    let n = admitted.len() as f64;
    // Rounding a chunk's cost to whole nanoseconds.
    let rounding = 1.0 + 0.5 / b.chunk_cost_ns as f64;
    let most = (burst + per_s * d * rounding + w * (k - 1.0)).floor();
    assert!(
        n <= most,
        "admitted {n} > {most} (rate {per_s}, burst {burst}, k {k}, {workers} workers)"
    );
    if saturated {
        let least = per_s * d - bound;
        assert!(
            n >= least,
            "admitted {n} < {least} (rate {per_s}, k {k}, {workers} workers)"
        );
        // Within 10 % of the configured rate, counting the burst as
        // the first second's extra (where there are enough flows for a
        // percentage to mean anything).
        assert!(
            per_s * d < 100.0 || (n - burst - per_s * d).abs() <= 0.1 * per_s * d,
            "admitted {n}, expected about {} (rate {per_s})",
            burst + per_s * d
        );
        // Every whole-second window after the first: the same bounds (the
        // pool may have refilled up to the burst during a lull).
        let seconds = duration_ns / SECOND;
        for s in 1..seconds {
            let (from, to) = (s * SECOND, (s + 1) * SECOND);
            let in_window = admitted.iter().filter(|&&t| t >= from && t < to).count() as f64;
            let most = (burst + per_s * rounding + w * (k - 1.0)).floor();
            assert!(
                in_window >= per_s - bound && in_window <= most,
                "second {s}: admitted {in_window}, rate {per_s}, bounds [{}, {most}]",
                per_s - bound
            );
        }
    }
}

#[test]
fn one_worker_admits_the_rate_within_the_bound() {
    for per_s in [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000] {
        let b = budget(per_s, None);
        let (admitted, _) = simulate(
            &b,
            &[1],
            2.0 * per_s as f64,
            3 * SECOND,
            Spacing::Periodic,
            1,
        );
        assert_within_bounds(&b, 1, &admitted, 3 * SECOND, true);
    }
}

#[test]
fn two_workers_even_or_90_10_share_one_budget_within_the_bound() {
    for weights in [[1, 1], [9, 1], [1, 9]] {
        for per_s in [10, 100, 1_000, 10_000, 300_000] {
            for spacing in [Spacing::Periodic, Spacing::Poisson] {
                // Poisson gaps can outlast a tiny burst (at 10/s the
                // default is 1), and then any token bucket loses what
                // accrues meanwhile: give them room for ten.
                let burst = (spacing == Spacing::Poisson).then_some((per_s / 10).max(10));
                let b = budget(per_s, burst);
                let (admitted, per_worker) =
                    simulate(&b, &weights, 2.0 * per_s as f64, 3 * SECOND, spacing, 7);
                assert_within_bounds(&b, 2, &admitted, 3 * SECOND, true);
                // Both workers are served.
                assert!(
                    per_worker.iter().all(|&n| n > 0),
                    "{per_worker:?} at {per_s}/s"
                );
            }
        }
    }
}

#[test]
fn the_90_10_split_holds_under_a_heavy_overload() {
    // Ten times the limit, 90 % of it on one worker, over five seconds.
    let b = budget(50_000, Some(5_000));
    let (admitted, per_worker) = simulate(&b, &[9, 1], 500_000.0, 5 * SECOND, Spacing::Poisson, 11);
    assert_within_bounds(&b, 2, &admitted, 5 * SECOND, true);
    let total = admitted.len() as f64;
    let expected = 5_000.0 + 250_000.0;
    assert!(
        (total - expected).abs() / expected < 0.01,
        "{total} vs {expected}"
    );
    // The small worker's share of a saturated budget is below its share of
    // the traffic (it must also ask first), but it is not starved.
    let small = per_worker[1] as f64 / total;
    assert!(small > 0.03 && small < 0.12, "small worker got {small}");
}

#[test]
fn traffic_under_the_limit_is_never_refused() {
    for weights in [&[1][..], &[1, 1], &[9, 1]] {
        for per_s in [10, 1_000, 100_000] {
            let b = budget(per_s, None);
            let offered = 0.8 * per_s as f64;
            let mut rng = Rng::new(3);
            let times = arrivals(offered, 3 * SECOND, Spacing::Periodic, &mut rng);
            let (admitted, _) = simulate(&b, weights, offered, 3 * SECOND, Spacing::Periodic, 3);
            assert_eq!(admitted.len(), times.len(), "{weights:?} at {per_s}/s");
        }
    }
}

#[test]
fn a_full_budget_gives_its_burst_then_the_rate() {
    let b = budget(1_000, Some(500));
    let mut local = LocalTokens::default();
    // 600 flows at the same instant: the burst, no more.
    let at_once = (0..600).filter(|_| b.admit(&mut local, SECOND)).count();
    assert_eq!(at_once, 500);
    // Then one chunk (1 flow at 1 000/s) per millisecond.
    assert!(!b.admit(&mut local, SECOND + 999_999));
    assert!(b.admit(&mut local, SECOND + 1_000_000));
    assert!(!b.admit(&mut local, SECOND + 1_000_000));
}

#[test]
fn chunk_is_a_millisecond_of_the_rate_within_1_to_64_and_the_burst() {
    assert_eq!(budget(10, None).chunk(), 1);
    assert_eq!(budget(5_000, None).chunk(), 5);
    assert_eq!(budget(1_000_000, None).chunk(), 64);
    assert_eq!(budget(1_000_000, Some(10)).chunk(), 10);
    assert_eq!(budget(100_000_000, None).chunk_cost_ns, 640);
}

#[test]
fn only_whole_chunks_are_drawn_and_nothing_accrued_is_lost() {
    // 64 000/s: a chunk of 64 every millisecond.
    let b = budget(64_000, Some(64));
    let mut local = LocalTokens::default();
    assert!(b.admit(&mut local, 0));
    assert_eq!(local.held(), 63);
    for _ in 0..63 {
        assert!(b.admit(&mut local, 0));
    }
    // Half a chunk accrued: refused, with no write to the pool.
    let before = b.tat_ns.load(Relaxed);
    assert!(!b.admit(&mut local, 500_000));
    assert_eq!(b.tat_ns.load(Relaxed), before);
    // A whole chunk: 64 more.
    let more = (0..100).filter(|_| b.admit(&mut local, 1_000_000)).count();
    assert_eq!(more, 64);
}

#[test]
fn tokens_of_a_replaced_budget_are_not_spent_on_the_new_one() {
    let old = budget(64_000, Some(64));
    let mut local = LocalTokens::default();
    assert!(old.admit(&mut local, 0));
    assert_eq!(local.held(), 63);
    // The new budget is empty: the 63 old tokens must not pass for it.
    let new = budget(64_000, Some(64));
    let drained = (0..64).filter(|_| new.admit(&mut local, 0)).count();
    assert_eq!(drained, 64);
    assert!(!new.admit(&mut local, 0));
}

#[test]
fn a_refund_returns_the_token() {
    let b = budget(1, Some(1));
    let mut local = LocalTokens::default();
    assert!(b.admit(&mut local, 0));
    assert!(!b.admit(&mut local, 0));
    b.refund(&mut local);
    assert!(b.admit(&mut local, 0));
    assert!(!b.admit(&mut local, 0));
}

#[test]
fn admit_one_follows_the_rate_without_local_tokens() {
    let b = budget(100, Some(10));
    let admitted = (0..3_000u64)
        .filter(|i| b.admit_one(i * SECOND / 1_000))
        .count();
    // 10 at once, then 100 per second for 3 s.
    assert!((309..=311).contains(&admitted), "{admitted}");
}

/// Two threads draw from one budget for real (compare-and-swap races and
/// all), on a simulated clock they advance together a millisecond at a
/// time: thread 0 gets 90 % of the new flows, thread 1 the rest.
#[test]
fn two_threads_90_10_draw_from_one_budget_within_the_bound() {
    for (per_s, offered) in [
        (100_000u64, 200_000u64),
        (1_000_000, 3_000_000),
        (2_000, 10_000),
    ] {
        let budget = Arc::new(budget(per_s as i64, None));
        let steps = 3_000u64; // 3 s of 1 ms
        let step_ns = 1_000_000u64;
        let barrier = Arc::new(Barrier::new(2));
        let per_step = offered / 1_000;
        let handles: Vec<_> = [9u64, 1]
            .into_iter()
            .map(|share| {
                let (budget, barrier) = (Arc::clone(&budget), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    let mut local = LocalTokens::default();
                    let mut admitted = 0u64;
                    let mine = per_step * share / 10;
                    for s in 0..steps {
                        barrier.wait();
                        for i in 0..mine {
                            let now = s * step_ns + i * step_ns / mine.max(1);
                            admitted += u64::from(budget.admit(&mut local, now));
                        }
                    }
                    admitted
                })
            })
            .collect();
        let per_thread: Vec<u64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let total = per_thread.iter().sum::<u64>() as f64;
        let (rate, burst) = (per_s as f64, budget.limit().rate().burst() as f64);
        let k = f64::from(budget.chunk());
        let most = burst + rate * 3.0 + 2.0 * (k - 1.0);
        let least = rate * 3.0 - budget.error_bound(2) as f64;
        assert!(
            total <= most && total >= least,
            "{per_s}/s: admitted {total} ({per_thread:?}), bounds [{least}, {most}]"
        );
        assert!(per_thread.iter().all(|&n| n > 0), "{per_thread:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Any rate, burst, number of workers, split and load: never more than
    /// the upper bound; under overload, never less than the lower one.
    #[test]
    fn bounds_hold_for_any_limit_split_and_load(
        per_s in 1i64..20_000,
        burst_tenths in 1i64..30,
        weights in proptest::collection::vec(1u32..10, 1..4),
        load in 0.2f64..4.0,
        poisson in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let burst = (per_s * burst_tenths / 10).max(1);
        let b = budget(per_s, Some(burst));
        let spacing = if poisson { Spacing::Poisson } else { Spacing::Periodic };
        let duration = 2 * SECOND;
        let (admitted, _) = simulate(&b, &weights, load * per_s as f64, duration, spacing, seed);
        let (rate, burst) = (per_s as f64, burst as f64);
        let k = f64::from(b.chunk());
        let w = weights.len() as f64;
        let rounding = 1.0 + 0.5 / b.chunk_cost_ns as f64;
        let n = admitted.len() as f64;
        prop_assert!(n <= (burst + rate * 2.0 * rounding + w * (k - 1.0)).floor());
        if load >= 1.5 && !poisson {
            prop_assert!(n >= rate * 2.0 - b.error_bound(weights.len()) as f64);
        }
    }
}
