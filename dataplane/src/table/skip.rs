//! The skip rule: which endpoint a new flow gets when its scheduler's pick
//! is not alive.
//!
//! 1. Look the scheduler's table up again with derived hashes
//!    `h_k = mix(h, k)`, `k = 1..=`[`SKIP_LOOKUPS`] (`h` is the hash the
//!    scheduler used: the flow hash, or the source hash for `sh`). Each
//!    lookup is an independent draw in the table's proportions, so
//!    among the alive endpoints the first one found follows the weights.
//! 2. If none of those is alive, walk the service's weighted endpoints (in
//!    identity order: address, then port) from a start chosen by
//!    `h_(K+1)`, and take the first alive one.
//!
//! Everything the rule reads — the hash, the table, the identity order,
//! the liveness — is the same on every gateway with the same rules and the
//! same liveness, so they all pick the same endpoint for a flow without
//! talking. The work is bounded: at most `K` lookups and one walk of the
//! service's weighted endpoints, and it happens only to a new flow whose
//! pick died since the last rebuild (the rebuild takes dead endpoints out
//! of the table).

use super::maglev::reduce;
use super::subset_slots::PackedSlots;
use super::{EndpointId, MaglevTable};

/// Lookups with derived hashes before the walk. With half the weight
/// dead, all eight miss for 1 flow in 256.
pub const SKIP_LOOKUPS: u32 = 8;

/// Hash `k` of the skip rule: SplitMix64's finaliser of `hash + k·φ`.
/// Part of the flow → backend mapping: never change it.
#[inline]
pub fn derived_hash(hash: u64, k: u32) -> u64 {
    let mut x = hash.wrapping_add(u64::from(k).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The table a scheduler picks from.
#[derive(Clone, Copy, Debug)]
pub enum Lookup<'a> {
    /// A Maglev table (`maglev`, `sh`).
    Maglev(&'a MaglevTable),
    /// A weighted round-robin cycle (`wrr`), looked up by hash here.
    Schedule(&'a [EndpointId]),
    /// A Maglev table whose slots hold indices into `ids` (a subset's
    /// compact table): the same endpoint for a hash as the full table.
    Indexed {
        /// The slots.
        slots: &'a PackedSlots,
        /// The endpoint of each index.
        ids: &'a [EndpointId],
    },
}

impl Lookup<'_> {
    #[inline]
    fn get(self, hash: u64) -> Option<EndpointId> {
        match self {
            Lookup::Maglev(table) => table.lookup(hash),
            Lookup::Schedule(cycle) => cycle.get(reduce(hash, cycle.len())).copied(),
            Lookup::Indexed { slots, ids } => {
                let index = slots.get(reduce(hash, slots.len()))?;
                ids.get(index).copied()
            }
        }
    }
}

/// The skip rule (see the module documentation): the first alive endpoint
/// by derived lookups in `table`, then by a walk of `weighted` (the
/// service's endpoints with weight > 0, in identity order). `None` if no
/// candidate is alive.
pub fn next_alive(
    table: Lookup<'_>,
    weighted: &[EndpointId],
    hash: u64,
    mut alive: impl FnMut(EndpointId) -> bool,
) -> Option<EndpointId> {
    for k in 1..=SKIP_LOOKUPS {
        if let Some(id) = table.get(derived_hash(hash, k)) {
            if alive(id) {
                return Some(id);
            }
        }
    }
    let start = reduce(derived_hash(hash, SKIP_LOOKUPS + 1), weighted.len());
    let (head, tail) = weighted.split_at(start.min(weighted.len()));
    tail.iter().chain(head).copied().find(|&id| alive(id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::MaglevBackend;

    fn table(ids: &[EndpointId]) -> MaglevTable {
        let backends: Vec<MaglevBackend> = ids
            .iter()
            .map(|&id| MaglevBackend {
                address: [
                    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 18, 1, id as u8,
                ],
                port: 8080,
                weight: 1,
                id,
            })
            .collect();
        MaglevTable::build(&backends, 1009)
    }

    #[test]
    fn derived_hashes_are_fixed() {
        // Pinned: a change here moves flows between gateway versions.
        assert_eq!(derived_hash(0, 0), 0);
        assert_eq!(derived_hash(0, 1), 0xe220_a839_7b1d_cdaf);
        assert_ne!(derived_hash(7, 1), derived_hash(7, 2));
        assert_ne!(derived_hash(7, 1), derived_hash(8, 1));
    }

    #[test]
    fn the_first_alive_candidate_is_taken_and_all_dead_is_none() {
        let ids = [0, 1, 2, 3];
        let t = table(&ids);
        for h in 0..2_000u64 {
            let hash = h.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let only_two = next_alive(Lookup::Maglev(&t), &ids, hash, |id| id == 2);
            assert_eq!(only_two, Some(2));
            let got = next_alive(Lookup::Maglev(&t), &ids, hash, |id| id != 1);
            assert!(matches!(got, Some(0 | 2 | 3)));
            // The same inputs, the same answer.
            assert_eq!(
                got,
                next_alive(Lookup::Maglev(&t), &ids, hash, |id| id != 1)
            );
        }
        assert_eq!(next_alive(Lookup::Maglev(&t), &ids, 5, |_| false), None);
        assert_eq!(next_alive(Lookup::Schedule(&[]), &[], 5, |_| true), None);
    }

    #[test]
    fn a_dead_endpoints_flows_spread_over_the_rest_by_weight() {
        // Schedule with weights 1, 2, 3, 2 for ids 0..4; id 3 is dead. The
        // flows it loses spread over 0, 1, 2 about 1:2:3.
        let cycle = [2, 1, 3, 2, 0, 1, 2, 3];
        let mut got = [0u32; 4];
        let n = 60_000u64;
        for h in 0..n {
            let hash = h.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let id = next_alive(Lookup::Schedule(&cycle), &[0, 1, 2, 3], hash, |id| id != 3);
            got[id.unwrap() as usize] += 1;
        }
        assert_eq!(got[3], 0);
        for (id, share) in [(0, 1.0 / 6.0), (1, 2.0 / 6.0), (2, 3.0 / 6.0)] {
            let seen = f64::from(got[id]) / n as f64;
            assert!((seen - share).abs() < 0.01, "{id}: {seen} vs {share}");
        }
    }

    #[test]
    fn the_walk_finds_the_one_alive_endpoint_the_lookups_miss() {
        // Ten endpoints, one alive: the derived lookups miss it for most
        // hashes, and the walk still finds it.
        let ids: Vec<EndpointId> = (0..10).collect();
        let t = table(&ids);
        let mut walked = 0;
        for h in 0..1_000u64 {
            let hash = h.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let mut probes = 0;
            let got = next_alive(Lookup::Maglev(&t), &ids, hash, |id| {
                probes += 1;
                id == 9
            });
            assert_eq!(got, Some(9));
            if probes > SKIP_LOOKUPS {
                walked += 1;
            }
        }
        assert!(walked > 300, "{walked}");
    }
}
