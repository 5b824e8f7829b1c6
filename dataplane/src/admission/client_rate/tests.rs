//! The per-client table: prefixes, exact buckets, eviction that only ever
//! under-limits, and the per-worker split, on a simulated clock.

use std::collections::HashMap;
use std::net::IpAddr;

use proptest::prelude::*;

use super::*;
use crate::admission::sim::{arrivals, Rng, Spacing};
use crate::wire::addr_to_bytes;

const SECOND: u64 = 1_000_000_000;

fn addr(s: &str) -> [u8; 16] {
    addr_to_bytes(s.parse::<IpAddr>().unwrap())
}

fn params(per_s: i64, burst: i64, v4: i64, v6: i64, workers: usize) -> ClientRateParams {
    ClientRateParams::new(
        ClientRateLimit::new(per_s, Some(burst), Some(v4), Some(v6)).unwrap(),
        workers,
    )
}

/// A reference GCRA per key, with unbounded memory: what an exact limiter
/// admits.
#[derive(Default)]
struct Reference(HashMap<(u32, u128), u64>);

impl Reference {
    fn admit(&mut self, service: u32, src: &[u8; 16], p: &ClientRateParams, now: u64) -> bool {
        let tat = self.0.entry((service, p.client_key(src))).or_insert(0);
        let base = (*tat).max(now);
        if base - now > p.tolerance_ns {
            return false;
        }
        *tat = base + p.interval_ns;
        true
    }
}

#[test]
fn a_prefix_makes_one_client() {
    let p = params(10, 1, 24, 64, 1);
    assert_eq!(
        p.client_key(&addr("198.18.5.1")),
        p.client_key(&addr("198.18.5.200"))
    );
    assert_ne!(
        p.client_key(&addr("198.18.5.1")),
        p.client_key(&addr("198.18.6.1"))
    );
    assert_eq!(
        p.client_key(&addr("2001:db8:1:2::1")),
        p.client_key(&addr("2001:db8:1:2:ffff::9"))
    );
    assert_ne!(
        p.client_key(&addr("2001:db8:1:2::1")),
        p.client_key(&addr("2001:db8:1:3::1"))
    );
    let p = params(10, 1, 32, 128, 1);
    assert_ne!(
        p.client_key(&addr("198.18.5.1")),
        p.client_key(&addr("198.18.5.2"))
    );
    assert_ne!(
        p.client_key(&addr("2001:db8::1")),
        p.client_key(&addr("2001:db8::2"))
    );
    let p = params(10, 1, 1, 48, 1);
    assert_eq!(
        p.client_key(&addr("1.2.3.4")),
        p.client_key(&addr("127.0.0.1"))
    );
    assert_ne!(
        p.client_key(&addr("1.2.3.4")),
        p.client_key(&addr("198.18.0.1"))
    );
    assert_eq!(
        p.client_key(&addr("2001:db8:1::1")),
        p.client_key(&addr("2001:db8:1:ffff::1"))
    );
    // IPv4 keys keep the mapping prefix: never equal to an IPv6 key, even
    // under the shortest prefixes.
    let p = params(10, 1, 1, 1, 1);
    assert_ne!(p.client_key(&addr("0.0.0.0")), p.client_key(&addr("::")));
    assert_ne!(
        p.client_key(&addr("128.0.0.1")),
        p.client_key(&addr("8000::1"))
    );
}

#[test]
fn one_client_gets_its_burst_then_its_rate() {
    let p = params(10, 5, 32, 128, 1);
    let mut t = ClientRateTable::new(1024, 1);
    let c = addr("198.18.0.7");
    let at_once = (0..8)
        .filter(|_| t.admit(1, &c, &p, SECOND).admitted())
        .count();
    assert_eq!(at_once, 5);
    // One more every 100 ms.
    assert!(!t.admit(1, &c, &p, SECOND + 99_999_999).admitted());
    assert_eq!(
        t.admit(1, &c, &p, SECOND + 100_000_000),
        ClientOutcome::Admitted
    );
    assert!(!t.admit(1, &c, &p, SECOND + 100_000_000).admitted());
    // Another client of the same /32-less service is not affected.
    assert!(t.admit(1, &addr("198.18.0.8"), &p, SECOND).admitted());
    // Nor is the same client on another service.
    assert!(t.admit(2, &c, &p, SECOND).admitted());
}

#[test]
fn each_worker_enforces_its_share_of_the_rate_with_the_full_burst() {
    let p = params(10, 3, 32, 128, 2);
    assert_eq!(p.interval_ns, 200_000_000);
    let mut t = ClientRateTable::new(1024, 1);
    let c = addr("2001:2::9");
    assert_eq!(
        (0..5).filter(|_| t.admit(0, &c, &p, 0).admitted()).count(),
        3
    );
    assert!(!t.admit(0, &c, &p, 199_999_999).admitted());
    assert!(t.admit(0, &c, &p, 200_000_000).admitted());
}

#[test]
fn a_new_client_takes_a_free_entry_then_the_one_that_owes_least() {
    // One set of four.
    let p = params(1, 1, 32, 128, 1);
    let mut t = ClientRateTable::new(4, 9);
    assert_eq!(t.capacity(), 4);
    let clients: Vec<[u8; 16]> = (1..=5).map(|i| addr(&format!("198.18.0.{i}"))).collect();
    // Four clients at 0, 100, 200, 300 ms: each owes until a second later.
    for (i, c) in clients[..4].iter().enumerate() {
        let now = i as u64 * 100_000_000;
        assert_eq!(t.admit(0, c, &p, now), ClientOutcome::Admitted);
    }
    assert_eq!(t.owing(300_000_000), 4);
    // A fifth while all four owe: the first (owing least) is forgotten.
    assert_eq!(
        t.admit(0, &clients[4], &p, 400_000_000),
        ClientOutcome::AdmittedEvicting
    );
    // The forgotten client finds a full bucket again: under-limited, and
    // it takes the entry of the client owing least now (the second).
    assert_eq!(
        t.admit(0, &clients[0], &p, 450_000_000),
        ClientOutcome::AdmittedEvicting
    );
    // The others kept their state.
    assert!(!t.admit(0, &clients[2], &p, 450_000_000).admitted());
    assert!(!t.admit(0, &clients[3], &p, 450_000_000).admitted());
    // Once buckets are full again, entries are reused with no eviction.
    assert_eq!(
        t.admit(0, &addr("198.18.9.9"), &p, 10 * SECOND),
        ClientOutcome::Admitted
    );
}

#[test]
fn a_refund_returns_the_charge() {
    let p = params(1, 1, 32, 128, 1);
    let mut t = ClientRateTable::new(64, 1);
    let c = addr("198.18.0.1");
    assert!(t.admit(3, &c, &p, 0).admitted());
    assert!(!t.admit(3, &c, &p, 0).admitted());
    t.refund(3, &c, &p);
    assert!(t.admit(3, &c, &p, 0).admitted());
    // A refund for a client the table does not know does nothing.
    t.refund(3, &addr("198.18.0.2"), &p);
    assert!(!t.admit(3, &c, &p, 0).admitted());
}

#[test]
fn memory_is_16_bytes_an_entry_and_fixed() {
    let t = ClientRateTable::new(1 << 16, 1);
    assert_eq!(std::mem::size_of::<ClientSet>(), 64);
    assert_eq!(t.capacity(), 1 << 16);
    assert_eq!(t.memory_bytes(), 16 << 16);
    // Rounded up to whole, power-of-two sets.
    assert_eq!(ClientRateTable::new(5, 1).capacity(), 8);
    assert_eq!(ClientRateTable::new(0, 1).capacity(), 4);
}

/// A flood of fresh sources that overflows the table many times over
/// leaves a client hammering its limit limited: it owes the most in its
/// set, so it is the last to be evicted.
#[test]
fn a_flood_of_fresh_sources_does_not_free_a_client_at_its_limit() {
    let p = params(100, 10, 32, 64, 1);
    let mut t = ClientRateTable::new(4096, 5);
    let mut rng = Rng::new(17);
    let abuser = addr("198.18.7.7");
    let mut admitted = 0u64;
    // 2 s: the flood at 1 M fresh sources a second (each owes 10 ms: 10 000
    // owing at once, 2.4 times the table), the abuser at 1 000 a second.
    for i in 0..2_000_000u64 {
        let now = i * 1_000;
        let src = (0x2001_0db8u128 << 96 | u128::from(rng.next_u64())).to_be_bytes();
        t.admit(0, &src, &p, now);
        if i % 1_000 == 0 {
            admitted += u64::from(t.admit(0, &abuser, &p, now).admitted());
        }
    }
    // Its limit over 2 s is 10 + 200.
    assert!((200..=210).contains(&admitted), "{admitted}");
}

/// Two workers, the client's flows spread at random (the owner hash of
/// its ports): a client at 80 % of its limit is not refused, and one at
/// five times its limit gets its rate, its bursts at most W·burst.
#[test]
fn two_workers_split_a_client_s_rate() {
    let p = params(50, 10, 32, 64, 2);
    let mut workers = [ClientRateTable::new(1024, 1), ClientRateTable::new(1024, 2)];
    let mut rng = Rng::new(23);
    let client = addr("198.18.3.3");
    let times = arrivals(40.0, 60 * SECOND, Spacing::Periodic, &mut rng);
    let refused = times
        .iter()
        .filter(|&&now| {
            !workers[rng.below(2) as usize]
                .admit(0, &client, &p, now)
                .admitted()
        })
        .count();
    assert_eq!(refused, 0, "of {}", times.len());

    let mut workers = [ClientRateTable::new(1024, 1), ClientRateTable::new(1024, 2)];
    let abuser = addr("198.18.3.4");
    let times = arrivals(250.0, 10 * SECOND, Spacing::Poisson, &mut rng);
    let admitted = times
        .iter()
        .filter(|&&now| {
            workers[rng.below(2) as usize]
                .admit(0, &abuser, &p, now)
                .admitted()
        })
        .count() as f64;
    // 50/s for 10 s, plus the burst on each worker.
    assert!((480.0..=520.0).contains(&admitted), "{admitted}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Whatever else the table sees, a client is never admitted less than
    /// an exact limiter with unbounded memory would admit it (evictions
    /// only forget debts), and with no eviction the two agree exactly.
    #[test]
    fn the_table_never_limits_a_client_more_than_an_exact_limiter(
        per_s in 1i64..1_000,
        burst in 1i64..20,
        prefix_v4 in 16i64..=32,
        sets_log2 in 0u32..4,
        events in proptest::collection::vec((0u8..6, 0u64..50_000_000, 0u16..512), 1..600),
        seed in any::<u64>(),
    ) {
        let p = params(per_s, burst, prefix_v4, 64, 1);
        let mut table = ClientRateTable::new(WAYS << sets_log2, seed);
        let mut reference = Reference::default();
        let watched = addr("198.18.200.1");
        let (mut got, mut exact, mut evictions) = (0u64, 0u64, 0u64);
        let mut now = 0u64;
        for (kind, gap, n) in events {
            now += gap;
            // Kinds 0-1: the watched client; the rest: other sources of
            // the same service and of others.
            let (service, src) = if kind < 2 {
                (0, watched)
            } else {
                (u32::from(kind) % 3, (0xffffu128 << 32 | u128::from(n) << 8 | u128::from(kind)).to_be_bytes())
            };
            let outcome = table.admit(service, &src, &p, now);
            evictions += u64::from(outcome == ClientOutcome::AdmittedEvicting);
            let reference_admits = reference.admit(service, &src, &p, now);
            if kind < 2 {
                got += u64::from(outcome.admitted());
                exact += u64::from(reference_admits);
                prop_assert!(got >= exact, "table {got} < exact {exact}");
            }
            if evictions == 0 {
                prop_assert_eq!(outcome.admitted(), reference_admits);
            }
        }
    }
}
