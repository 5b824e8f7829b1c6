//! Smooth weighted round-robin, precomputed.
//!
//! A service's schedule is one full cycle of the smooth weighted
//! round-robin sequence (the one nginx uses): every step each backend gains
//! its weight in credit, the richest backend (the earliest on a tie) is
//! picked and pays the total weight. Picks are spread out, not bunched:
//! weights 5, 1, 1 give `a a b a c a a`, never `a a a a a b c`.
//!
//! The cycle has `Σw / gcd(w)` entries and is capped at
//! [`MAX_SCHEDULE_LEN`] by scaling the weights down proportionally (a
//! weight above 0 keeps at least 1). A worker keeps a cursor per service and
//! takes `schedule[cursor % len]` for each new flow: no arithmetic on
//! weights on the per-packet path.

use std::sync::Arc;

use super::EndpointId;

/// Longest schedule built. With more backends of weight > 0 than this, the
/// schedule has one entry per such backend (weights cannot go below 1).
pub const MAX_SCHEDULE_LEN: usize = crate::rules::routing::MAX_WRR_CYCLE;

/// Builds the schedule for `(endpoint, weight)` pairs, in the given order
/// (which breaks ties; callers pass a canonical order). Weight-0 entries are
/// left out; no weight above 0 gives an empty schedule.
///
/// Cost: O(len · distinct weights). Backends of equal weight are picked in
/// turn (see [`WeightClass`]), and a cycle of at most 65 536 entries holds at
/// most ~360 distinct weights, so even thousands of backends build quickly.
pub fn build_schedule(backends: &[(EndpointId, u32)]) -> Arc<[EndpointId]> {
    let weighted: Vec<(EndpointId, u64)> = backends
        .iter()
        .filter(|(_, w)| *w > 0)
        .map(|&(id, w)| (id, u64::from(w)))
        .collect();
    let weights = reduced_weights(&weighted);
    let total: u64 = weights.iter().sum();
    let mut classes = weight_classes(&weighted, &weights);

    // Backend i's credit after step t's top-up is t·w_i − total·picks_i;
    // the richest is picked, the earliest on a tie (nginx's rule). Values
    // stay below 2^33: t, w_i ≤ 2^16 after reduction.
    let total = total as i64;
    let mut schedule = Vec::with_capacity(total as usize);
    for step in 1..=total {
        let mut best: Option<(i64, usize, usize)> = None; // credit, position, class
        for (c, class) in classes.iter().enumerate() {
            let Some(&(position, _)) = class.members.get(class.cursor) else {
                continue;
            };
            let credit = step * class.weight - total * class.rounds;
            let better = match best {
                None => true,
                Some((b_credit, b_position, _)) => {
                    credit > b_credit || (credit == b_credit && position < b_position)
                }
            };
            if better {
                best = Some((credit, position, c));
            }
        }
        let Some(class) = best.and_then(|(_, _, c)| classes.get_mut(c)) else {
            break;
        };
        if let Some(&(_, id)) = class.members.get(class.cursor) {
            schedule.push(id);
        }
        class.cursor += 1;
        if class.cursor >= class.members.len() {
            class.cursor = 0;
            class.rounds += 1;
        }
    }
    Arc::from(schedule)
}

/// Backends of one weight. Among them the richest is always the earliest
/// one not yet picked in the current round (they gain credit at the same
/// rate and pay the same price), so they are picked strictly in turn and
/// one credit value per class is enough.
struct WeightClass {
    weight: i64,
    /// (position in the input order, endpoint), in input order.
    members: Vec<(usize, EndpointId)>,
    /// The member whose turn it is.
    cursor: usize,
    /// Picks of each member from the cursor on (those before it have one
    /// more).
    rounds: i64,
}

fn weight_classes(weighted: &[(EndpointId, u64)], weights: &[u64]) -> Vec<WeightClass> {
    let mut classes: Vec<WeightClass> = Vec::new();
    let mut by_weight: hashbrown::HashMap<u64, usize> = hashbrown::HashMap::new();
    for (position, (&(id, _), &w)) in weighted.iter().zip(weights).enumerate() {
        let c = *by_weight.entry(w).or_insert_with(|| {
            classes.push(WeightClass {
                weight: w as i64,
                members: Vec::new(),
                cursor: 0,
                rounds: 0,
            });
            classes.len() - 1
        });
        if let Some(class) = classes.get_mut(c) {
            class.members.push((position, id));
        }
    }
    classes
}

/// The weights of one cycle: scaled down to fit [`MAX_SCHEDULE_LEN`] if
/// needed (never below 1), then divided by their gcd.
fn reduced_weights(weighted: &[(EndpointId, u64)]) -> Vec<u64> {
    let total: u64 = weighted.iter().map(|&(_, w)| w).sum();
    let cap = MAX_SCHEDULE_LEN as u64;
    let mut weights: Vec<u64> = weighted.iter().map(|&(_, w)| w).collect();
    if total > cap {
        // Scale into `cap - n` and round each up to at least 1: the sum is
        // then at most `cap` (when n < cap).
        let room = cap.saturating_sub(weights.len() as u64);
        for w in weights.iter_mut() {
            *w = (*w * room / total).max(1);
        }
    }
    let divisor = weights.iter().copied().fold(0, gcd);
    if divisor > 1 {
        for w in weights.iter_mut() {
            *w /= divisor;
        }
    }
    weights
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(schedule: &[EndpointId], id: EndpointId) -> usize {
        schedule.iter().filter(|&&x| x == id).count()
    }

    #[test]
    fn five_one_one_is_interleaved() {
        let s = build_schedule(&[(10, 5), (11, 1), (12, 1)]);
        assert_eq!(&*s, &[10, 10, 11, 10, 12, 10, 10]);
    }

    #[test]
    fn one_cycle_has_exact_proportions() {
        let s = build_schedule(&[(0, 300), (1, 200), (2, 100), (3, 0)]);
        // gcd 100: weights 3, 2, 1.
        assert_eq!(s.len(), 6);
        assert_eq!(count(&s, 0), 3);
        assert_eq!(count(&s, 1), 2);
        assert_eq!(count(&s, 2), 1);
        assert_eq!(count(&s, 3), 0, "weight 0 is never scheduled");

        let s = build_schedule(&[(0, 7), (1, 5), (2, 3), (3, 1)]);
        assert_eq!(s.len(), 16);
        assert_eq!(
            [0, 1, 2, 3].map(|id| count(&s, id)),
            [7, 5, 3, 1],
            "schedule {s:?}"
        );
    }

    #[test]
    fn equal_weights_alternate() {
        let s = build_schedule(&[(4, 3), (5, 3), (6, 3)]);
        assert_eq!(&*s, &[4, 5, 6]);
    }

    #[test]
    fn picks_are_spread_out() {
        // Weights 2 and 8: the light backend's two picks are half a cycle
        // apart, not adjacent.
        let s = build_schedule(&[(0, 8), (1, 2)]);
        let at: Vec<usize> = (0..s.len()).filter(|&i| s[i] == 1).collect();
        assert_eq!(s.len(), 5);
        assert_eq!(at.len(), 1);
        let s = build_schedule(&[(0, 7), (1, 2)]);
        let at: Vec<usize> = (0..s.len()).filter(|&i| s[i] == 1).collect();
        assert_eq!(at.len(), 2);
        assert!(at[1] - at[0] >= 3, "picks at {at:?} in {s:?}");
    }

    #[test]
    fn long_schedules_are_capped_and_keep_every_backend() {
        // Σw = 10 000 · 10 + 1 = 100 001 > cap, gcd 1.
        let mut backends: Vec<(EndpointId, u32)> = (0..10).map(|i| (i, 10_000)).collect();
        backends.push((10, 1));
        let s = build_schedule(&backends);
        assert!(s.len() <= MAX_SCHEDULE_LEN, "len {}", s.len());
        assert!(s.len() > MAX_SCHEDULE_LEN / 2);
        assert_eq!(count(&s, 10), 1, "a tiny weight keeps one entry");
        let heavy = count(&s, 0);
        assert!((0..10).all(|id| count(&s, id) == heavy));
    }

    #[test]
    fn more_backends_than_the_cap_get_one_entry_each() {
        let backends: Vec<(EndpointId, u32)> = (0..70_000).map(|i| (i, 2 + i % 3)).collect();
        let s = build_schedule(&backends);
        assert_eq!(s.len(), 70_000);
    }

    /// nginx's algorithm as written: one credit per backend, O(len · n).
    fn reference(backends: &[(EndpointId, u32)]) -> Vec<EndpointId> {
        let weighted: Vec<(EndpointId, u64)> = backends
            .iter()
            .filter(|(_, w)| *w > 0)
            .map(|&(id, w)| (id, u64::from(w)))
            .collect();
        let weights: Vec<i64> = reduced_weights(&weighted)
            .iter()
            .map(|&w| w as i64)
            .collect();
        let total: i64 = weights.iter().sum();
        let mut credit = vec![0i64; weights.len()];
        let mut out = Vec::new();
        for _ in 0..total {
            let mut best = 0;
            for i in 0..credit.len() {
                credit[i] += weights[i];
                if credit[i] > credit[best] {
                    best = i;
                }
            }
            credit[best] -= total;
            out.push(weighted[best].0);
        }
        out
    }

    proptest::proptest! {
        #[test]
        fn matches_the_one_credit_per_backend_algorithm(
            weights in proptest::collection::vec(0u32..12, 0..12)
        ) {
            let backends: Vec<(EndpointId, u32)> =
                weights.iter().enumerate().map(|(i, &w)| (i as u32 * 3, w)).collect();
            let s = build_schedule(&backends);
            proptest::prop_assert_eq!(&*s, &reference(&backends)[..]);
            let total: u32 = weights.iter().sum();
            if total > 0 {
                let g = weights.iter().copied().fold(0u32, |a, b| gcd(a.into(), b.into()) as u32);
                proptest::prop_assert_eq!(s.len() as u32, total / g);
                for &(id, w) in &backends {
                    proptest::prop_assert_eq!(count(&s, id) as u32, w / g);
                }
            }
        }
    }

    #[test]
    fn nothing_weighted_gives_an_empty_schedule() {
        assert!(build_schedule(&[]).is_empty());
        assert!(build_schedule(&[(1, 0), (2, 0)]).is_empty());
    }
}
