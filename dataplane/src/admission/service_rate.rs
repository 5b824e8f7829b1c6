//! A service's new-flow rate limit: one budget that every worker draws
//! from, in chunks, without a lock.
//!
//! # The budget
//!
//! The shared part, [`ServiceRateBudget`], is GCRA (the virtual-scheduling
//! form of a token bucket) over *chunks* of `k` new flows: one atomic word,
//! the theoretical arrival time `tat` of the next chunk. A chunk may be
//! drawn at time `t` while `max(tat, t) + k·T ≤ t + b·T` (`T = 1/rate`,
//! `b` the burst), and drawing it moves `tat` to `max(tat, t) + k·T`. A
//! worker keeps the chunk in its own [`LocalTokens`] and spends it one new
//! flow at a time with no atomic operation at all; only when it is empty
//! does it draw again, with one compare-and-swap.
//!
//! So the per-flow cost is a decrement, one new flow in `k` pays a CAS on
//! the shared line, and a refused flow pays a relaxed load of that line
//! (which then stays shared in every worker's cache: nobody writes it while
//! the budget is empty). Only whole chunks are drawn: when less than a
//! chunk has accrued the flow is refused and the part stays in the pool for
//! the next draw, so nothing accrued is lost, and a saturated budget costs
//! one CAS per chunk, not one per flow.
//!
//! `k` is the rate's worth of one millisecond, from 1 to 64, and never more
//! than the burst: `clamp(rate / 1000, 1, 64).min(burst)`.
//!
//! # Error bound
//!
//! With `W` workers, over any interval of length `D`:
//!
//! - **never more than** `b + rate·D + W·(k−1)` new flows are admitted: the
//!   chunks drawn in the interval hold at most `b + rate·D` (GCRA's bound),
//!   and each worker may enter it holding `k−1` tokens of an earlier chunk;
//! - **when new flows keep coming faster than the rate** (on one worker or
//!   split in any proportion), at least `rate·D − (W+1)·k` are admitted:
//!   at most one chunk is accruing in the pool and each worker holds at
//!   most `k` unspent. (This assumes no lull long enough for the pool to
//!   fill to the burst; like any token bucket, a full pool drops what
//!   accrues, which is what a burst is.)
//!
//! At rates up to 64 000/s, `(W+1)·k` is `W+1` milliseconds' worth; above,
//! it is `64·(W+1)` flows, under 0.3 % of one second's worth with two
//! workers. Rounding `k·T` to whole nanoseconds adds at most 0.08 %
//! (at the highest rate, 10⁸/s). The tests check both bounds with
//! simulated time, with one and two workers, 50/50 and 90/10, and with two
//! threads racing on the budget.
//!
//! Chunks go to whichever worker asks first once one has accrued, so a
//! worker that sees a tenth of the new flows gets somewhat less than a
//! tenth of a saturated budget (it must also be the first to ask); the
//! budget's total is what the bound is about.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::limits::ServiceRateLimit;

/// Draw attempts before a new flow is refused: each failed compare-and-swap
/// means another worker drew a chunk in between, so this only bounds the
/// work of one decision under extreme contention.
const MAX_DRAW_ATTEMPTS: u32 = 8;

/// The largest chunk a worker takes at once.
pub const MAX_CHUNK: u32 = 64;

/// Identities for budgets, so that a worker's tokens from one budget are
/// never spent on another (a service id reused after a rule change).
static NEXT_BUDGET_ID: AtomicU64 = AtomicU64::new(1);

/// One service's new-flow budget, shared by every worker (see the module
/// documentation). Built by the control side, one per limited service.
#[derive(Debug)]
#[repr(align(64))]
pub struct ServiceRateBudget {
    /// The theoretical arrival time of the next chunk, in nanoseconds on
    /// the workers' clock. At or before now: the pool is full.
    tat_ns: AtomicU64,
    /// This budget's identity.
    id: u64,
    /// New flows per chunk.
    chunk: u32,
    /// A chunk's share of time: `chunk / rate`, in nanoseconds.
    chunk_cost_ns: u64,
    /// How far `tat` may run ahead of now for a chunk to be drawn:
    /// `(burst − chunk) / rate`.
    chunk_slack_ns: u64,
    /// One flow's share of time (for draws without local tokens).
    single_cost_ns: u64,
    /// As `chunk_slack_ns`, for one flow.
    single_slack_ns: u64,
    limit: ServiceRateLimit,
}

/// The tokens one worker holds from one budget. Owned by the worker (one
/// per limited service), never shared.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LocalTokens {
    budget: u64,
    tokens: u32,
}

impl LocalTokens {
    /// Unspent tokens held.
    pub fn held(&self) -> u32 {
        self.tokens
    }
}

/// `n / rate` seconds in nanoseconds, rounded to nearest.
fn share_ns(n: u64, per_s: u64) -> u64 {
    let ns = (u128::from(n) * 1_000_000_000 + u128::from(per_s) / 2) / u128::from(per_s.max(1));
    u64::try_from(ns).unwrap_or(u64::MAX)
}

impl ServiceRateBudget {
    /// A full budget for `limit`.
    pub fn new(limit: ServiceRateLimit) -> ServiceRateBudget {
        let rate = limit.rate();
        let (per_s, burst) = (rate.per_s(), rate.burst());
        let chunk = (per_s / 1000).clamp(1, u64::from(MAX_CHUNK)).min(burst);
        let burst_ns = share_ns(burst, per_s);
        let chunk_cost_ns = share_ns(chunk, per_s);
        let single_cost_ns = share_ns(1, per_s);
        ServiceRateBudget {
            tat_ns: AtomicU64::new(0),
            id: NEXT_BUDGET_ID.fetch_add(1, Relaxed),
            chunk: chunk as u32,
            chunk_cost_ns,
            chunk_slack_ns: burst_ns.saturating_sub(chunk_cost_ns),
            single_cost_ns,
            single_slack_ns: burst_ns.saturating_sub(single_cost_ns),
            limit,
        }
    }

    /// The limit this budget enforces.
    pub fn limit(&self) -> ServiceRateLimit {
        self.limit
    }

    /// New flows a worker takes per draw (`k`).
    pub fn chunk(&self) -> u32 {
        self.chunk
    }

    /// The most the admitted count can stray from `rate·D` in a window of
    /// length `D` with `workers` workers, beyond the burst: `(W+1)·k`.
    pub fn error_bound(&self, workers: usize) -> u64 {
        (workers as u64 + 1) * u64::from(self.chunk)
    }

    /// Decides one new flow at `now_ns` for the worker holding `local`:
    /// spends a held token, or draws a chunk from the shared pool.
    #[inline]
    pub fn admit(&self, local: &mut LocalTokens, now_ns: u64) -> bool {
        if local.budget == self.id && local.tokens > 0 {
            local.tokens -= 1;
            return true;
        }
        // Tokens of another budget (a replaced limit) are not this one's.
        local.budget = self.id;
        local.tokens = 0;
        if self.draw(now_ns, self.chunk_cost_ns, self.chunk_slack_ns) {
            local.tokens = self.chunk - 1;
            true
        } else {
            false
        }
    }

    /// Decides one new flow by drawing a single token from the shared
    /// pool: for a worker that keeps no [`LocalTokens`] for this budget.
    /// Costs a CAS per admitted flow.
    #[inline]
    pub fn admit_one(&self, now_ns: u64) -> bool {
        self.draw(now_ns, self.single_cost_ns, self.single_slack_ns)
    }

    /// Gives back the token of a flow admitted by [`admit`](Self::admit)
    /// and then refused by a later check, so that refusal costs the
    /// service nothing.
    #[inline]
    pub fn refund(&self, local: &mut LocalTokens) {
        if local.budget == self.id {
            local.tokens = local.tokens.saturating_add(1);
        }
    }

    /// Draws `cost_ns` worth of time from the pool if `tat` may run that
    /// far ahead: `max(tat, now) ≤ now + slack`.
    #[inline]
    fn draw(&self, now_ns: u64, cost_ns: u64, slack_ns: u64) -> bool {
        let limit = now_ns.saturating_add(slack_ns);
        let mut tat = self.tat_ns.load(Relaxed);
        for _ in 0..MAX_DRAW_ATTEMPTS {
            let base = tat.max(now_ns);
            if base > limit {
                return false;
            }
            match self
                .tat_ns
                .compare_exchange(tat, base.saturating_add(cost_ns), Relaxed, Relaxed)
            {
                Ok(_) => return true,
                Err(current) => tat = current,
            }
        }
        false
    }
}

#[cfg(test)]
mod tests;
