//! Primality, for Maglev table sizes: a prime size makes every backend's
//! permutation (offset + j * skip) visit every slot.

/// Whether `n` is prime. Exact for every `u32` (trial division by 6k ± 1 up
/// to the square root: at most some 11 000 divisions).
pub fn is_prime(n: u32) -> bool {
    if n < 4 {
        return n >= 2;
    }
    if n.is_multiple_of(2) || n.is_multiple_of(3) {
        return false;
    }
    let n = u64::from(n);
    let mut d: u64 = 5;
    while d * d <= n {
        if n.is_multiple_of(d) || n.is_multiple_of(d + 2) {
            return false;
        }
        d += 6;
    }
    true
}

/// The smallest prime `>= n`, if one fits in a `u32`.
pub fn next_prime(n: u32) -> Option<u32> {
    (n..=u32::MAX).find(|&k| is_prime(k))
}

/// The largest prime `<= n`, if there is one (there is none below 2).
pub fn prev_prime(n: u32) -> Option<u32> {
    (2..=n).rev().find(|&k| is_prime(k))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{DEFAULT_MAGLEV_TABLE_SIZE, MAX_MAGLEV_TABLE_SIZE, MIN_MAGLEV_TABLE_SIZE};

    /// Reference: the sieve of Eratosthenes.
    fn sieve(limit: usize) -> Vec<bool> {
        let mut prime = vec![true; limit + 1];
        prime[0] = false;
        prime[1] = false;
        let mut i = 2;
        while i * i <= limit {
            if prime[i] {
                let mut j = i * i;
                while j <= limit {
                    prime[j] = false;
                    j += i;
                }
            }
            i += 1;
        }
        prime
    }

    #[test]
    fn agrees_with_a_sieve_below_100_000() {
        let reference = sieve(100_000);
        for (n, &expected) in reference.iter().enumerate() {
            assert_eq!(is_prime(n as u32), expected, "n = {n}");
        }
    }

    #[test]
    fn knows_the_table_size_bounds_and_large_values() {
        assert!(is_prime(MIN_MAGLEV_TABLE_SIZE));
        assert!(is_prime(MAX_MAGLEV_TABLE_SIZE));
        assert!(is_prime(DEFAULT_MAGLEV_TABLE_SIZE));
        // MIN is the largest prime below 256, MAX the first above 2^24.
        assert_eq!(prev_prime(255), Some(MIN_MAGLEV_TABLE_SIZE));
        assert_eq!(next_prime((1 << 24) + 1), Some(MAX_MAGLEV_TABLE_SIZE));
        assert!(is_prime(4_294_967_291)); // largest u32 prime
        assert!(!is_prime(u32::MAX)); // 3 * 5 * 17 * 257 * 65537
        assert!(!is_prime(65_521 * 65_519)); // product of two large primes
        assert!(!is_prime(65_536));
    }

    #[test]
    fn next_and_prev_prime() {
        assert_eq!(next_prime(65_536), Some(65_537));
        assert_eq!(next_prime(65_537), Some(65_537));
        assert_eq!(prev_prime(65_536), Some(65_521));
        assert_eq!(prev_prime(2), Some(2));
        assert_eq!(prev_prime(1), None);
        assert_eq!(next_prime(0), Some(2));
        assert_eq!(next_prime(4_294_967_292), None);
    }
}
