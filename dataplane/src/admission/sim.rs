//! Deterministic traffic for the admission tests: a small seeded generator
//! and arrival times on a simulated clock.

/// xorshift64*: small, fast, and the same sequence for the same seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value; 0 is moved off the fixed point).
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15 | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// How arrivals are spaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spacing {
    /// Evenly: one every `1/rate`.
    Periodic,
    /// A Poisson process: exponential gaps of mean `1/rate`.
    Poisson,
}

/// Arrival times in `[0, duration_ns)` at `per_s` on average.
pub fn arrivals(per_s: f64, duration_ns: u64, spacing: Spacing, rng: &mut Rng) -> Vec<u64> {
    let gap = 1e9 / per_s;
    let mut out = Vec::with_capacity((per_s * duration_ns as f64 / 1e9) as usize + 16);
    let mut t = match spacing {
        Spacing::Periodic => 0.0,
        Spacing::Poisson => -gap * (1.0 - rng.unit()).ln(),
    };
    while t < duration_ns as f64 {
        out.push(t as u64);
        t += match spacing {
            Spacing::Periodic => gap,
            Spacing::Poisson => -gap * (1.0 - rng.unit()).ln(),
        };
    }
    out
}

/// Which of the workers gets a flow, by `weights` (e.g. `[9, 1]` for a
/// 90/10 split).
pub fn pick_worker(weights: &[u32], rng: &mut Rng) -> usize {
    let total: u32 = weights.iter().sum();
    let mut x = rng.below(u64::from(total.max(1))) as u32;
    for (i, &w) in weights.iter().enumerate() {
        if x < w {
            return i;
        }
        x -= w;
    }
    weights.len().saturating_sub(1)
}
