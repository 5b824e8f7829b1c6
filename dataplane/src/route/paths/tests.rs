use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::route::prefix::{v4_mask, v6_mask};

fn p(text: &str) -> Prefix {
    text.parse().unwrap()
}

fn b(id: u32) -> BackendRef {
    BackendRef::new(id).unwrap()
}

fn addr(text: &str) -> ClientAddr {
    ClientAddr::from(text.parse::<std::net::IpAddr>().unwrap())
}

fn put(service: u32, prefix: Prefix, backends: &[u32]) -> PathEdit {
    PathEdit::Put {
        service,
        prefix,
        backends: backends.iter().map(|&id| b(id)).collect(),
    }
}

/// What a lookup found, as plain numbers.
fn found(view: &PathView, service: u32, client: ClientAddr) -> Option<Vec<u32>> {
    view.lookup(service, client)
        .map(|target| target.backends().iter().map(|r| r.get()).collect())
}

/// The obviously correct table: a list scanned for the longest match.
#[derive(Default, Clone, Debug)]
struct Reference {
    paths: Vec<(u32, Prefix, Vec<u32>)>,
}

impl Reference {
    fn apply(&mut self, edit: &PathEdit) {
        match edit {
            PathEdit::Put {
                service,
                prefix,
                backends,
            } => {
                let refs: Vec<u32> = backends.iter().map(|r| r.get()).collect();
                match self
                    .paths
                    .iter_mut()
                    .find(|(s, q, _)| s == service && q == prefix)
                {
                    Some(entry) => entry.2 = refs,
                    None => self.paths.push((*service, *prefix, refs)),
                }
            }
            PathEdit::Remove { service, prefix } => {
                self.paths
                    .retain(|(s, q, _)| !(s == service && q == prefix));
            }
        }
    }

    fn has(&self, service: u32, prefix: Prefix) -> bool {
        self.paths
            .iter()
            .any(|(s, q, _)| *s == service && *q == prefix)
    }

    fn lookup(&self, service: u32, client: ClientAddr) -> Option<Vec<u32>> {
        self.paths
            .iter()
            .filter(|(s, prefix, _)| *s == service && prefix.contains(client))
            .max_by_key(|(_, prefix, _)| prefix.length())
            .map(|(_, _, refs)| refs.clone())
    }
}

#[test]
fn longest_match_per_service() {
    let mut table = PathTable::new(1_000);
    let change = table
        .apply(&[
            put(1, p("198.18.0.0/16"), &[10]),
            put(1, p("198.18.4.0/24"), &[11, 12]),
            put(1, p("198.18.4.7"), &[13]),
            put(2, p("198.18.4.7"), &[20]),
            put(1, p("2001:db8::/32"), &[30]),
            put(1, p("2001:db8::7"), &[31]),
        ])
        .unwrap();
    assert_eq!(
        change,
        PathChange {
            added: 6,
            replaced: 0,
            removed: 0
        }
    );
    let view = table.view();
    assert_eq!(found(view, 1, addr("198.18.4.7")), Some(vec![13]));
    assert_eq!(found(view, 1, addr("198.18.4.8")), Some(vec![11, 12]));
    assert_eq!(found(view, 1, addr("198.18.5.1")), Some(vec![10]));
    assert_eq!(found(view, 1, addr("198.19.0.1")), None);
    assert_eq!(found(view, 2, addr("198.18.4.7")), Some(vec![20]));
    assert_eq!(found(view, 2, addr("198.18.4.8")), None);
    assert_eq!(found(view, 3, addr("198.18.4.7")), None);
    assert_eq!(found(view, 1, addr("2001:db8::7")), Some(vec![31]));
    assert_eq!(found(view, 1, addr("2001:db8::8")), Some(vec![30]));
    assert_eq!(found(view, 1, addr("2001:db9::7")), None);
    assert_eq!(found(view, MAX_PATH_SERVICE + 1, addr("198.18.4.7")), None);
    assert_eq!(view.len(), 6);
    assert_eq!(view.generation(), 1);
    // Exact get, not longest match.
    assert!(view.get(1, p("198.18.4.0/24")).is_some());
    assert!(view.get(1, p("198.18.4.0/25")).is_none());
}

#[test]
fn warming_reads_the_slot_the_lookup_probes_first() {
    let mut table = PathTable::new(10);
    let client = addr("2001:db8::7");
    assert_eq!(table.view().warm(5, client), 0, "no path: nothing to read");
    table.insert(5, Prefix::host(client), &[b(1)]).unwrap();
    // Alone in its shard, the path sits in its home slot: its tag is read.
    assert_eq!(table.view().warm(5, client), 5 << 8 | 128);
    assert_eq!(table.view().warm(6, client), 0, "service 6 has no path");
}

#[test]
fn the_filter_answers_most_clients_without_a_path_and_never_hides_one() {
    let mut table = PathTable::new(1 << 20);
    let host = |i: u32| ClientAddr::V4(0x6440_0000 + i);
    let entries: Vec<PathEntry> = (0..40_000)
        .map(|i| PathEntry {
            service: 1,
            prefix: Prefix::host(host(2 * i)),
            backends: vec![b(1 + i % 7)],
        })
        .collect();
    table.load(&entries).unwrap();
    let filtered = |table: &PathTable| {
        (0..20_000)
            .filter(|i| table.view().warm(1, host(2 * i + 1)) == 0)
            .count()
    };
    // Clients without a path: the filter stops nearly all (warming reads
    // no slot for them).
    assert!(filtered(&table) > 19_000, "{}", filtered(&table));
    // Edits one by one, then many removals (which rebuild filters): every
    // path is still found, and the removed ones are gone.
    for i in 0..2_000 {
        table
            .insert(1, Prefix::host(host(2 * i + 1)), &[b(1)])
            .unwrap();
    }
    for i in 0..30_000 {
        table.remove(1, Prefix::host(host(2 * i))).unwrap();
    }
    let view = table.view();
    for i in 0..40_000 {
        let expect = if i < 30_000 {
            None
        } else {
            Some(vec![1 + i % 7])
        };
        assert_eq!(found(view, 1, host(2 * i)), expect, "path {i}");
    }
    for i in 0..2_000 {
        assert_eq!(found(view, 1, host(2 * i + 1)), Some(vec![1]));
    }
    assert!(filtered(&table) > 17_000, "{}", filtered(&table));
}

#[test]
fn an_ipv4_client_never_matches_an_ipv6_prefix() {
    let mut table = PathTable::new(10);
    table.insert(1, p("::/0"), &[b(1)]).unwrap();
    table.insert(1, p("::/80"), &[b(2)]).unwrap();
    let view = table.view();
    assert_eq!(found(view, 1, addr("198.18.0.1")), None);
    let mapped = ClientAddr::from_bytes(&crate::wire::v4_mapped([198, 18, 0, 1]));
    assert_eq!(found(view, 1, mapped), None);
    assert_eq!(found(view, 1, addr("2001:db8::1")), Some(vec![1]));
    assert_eq!(found(view, 1, addr("::1")), Some(vec![2]));

    table.insert(1, p("0.0.0.0/0"), &[b(3)]).unwrap();
    let view = table.view();
    assert_eq!(found(view, 1, mapped), Some(vec![3]));
    assert_eq!(found(view, 1, addr("2001:db8::1")), Some(vec![1]));
}

#[test]
fn insert_replaces_and_remove_removes() {
    let mut table = PathTable::new(10);
    let client = addr("198.18.0.9");
    table.insert(4, Prefix::host(client), &[b(1)]).unwrap();
    let change = table
        .insert(4, Prefix::host(client), &[b(2), b(3)])
        .unwrap();
    assert_eq!(change.replaced, 1);
    assert_eq!(table.len(), 1);
    assert_eq!(found(table.view(), 4, client), Some(vec![2, 3]));
    let change = table.remove(4, Prefix::host(client)).unwrap();
    assert_eq!(change.removed, 1);
    assert!(table.is_empty());
    assert_eq!(found(table.view(), 4, client), None);
    assert_eq!(table.view().generation(), 3);
}

#[test]
fn a_refused_change_lists_every_problem_and_changes_nothing() {
    let mut table = PathTable::new(3);
    table.insert(1, p("198.18.0.1"), &[b(1)]).unwrap();
    let before = table.view().generation();
    let err = table
        .apply(&[
            put(1, p("198.18.0.2"), &[2]), // fine alone
            PathEdit::Remove {
                service: 1,
                prefix: p("198.18.0.3"),
            }, // not there
            put(1, p("198.18.0.2"), &[3]), // twice
            put(MAX_PATH_SERVICE + 1, p("198.18.0.4"), &[4]), // service too big
            put(1, p("198.18.0.5"), &[]),  // no backend
            put(1, p("198.18.0.6"), &[1; MAX_PATH_BACKENDS + 1]),
        ])
        .unwrap_err();
    let lines: Vec<String> = err.problems.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            "entry 1: service 1 has no path for 198.18.0.3/32",
            "entries 0 and 2 are both the path of 198.18.0.2/32 in service 1",
            "entry 3: service id 16777216 is over the path table's limit of 16777215",
            "entry 4: a path names 1 to 16 backends, not 0",
            "entry 5: a path names 1 to 16 backends, not 17",
        ]
    );
    assert_eq!(table.view().generation(), before);
    assert_eq!(table.len(), 1);
    assert_eq!(found(table.view(), 1, addr("198.18.0.2")), None);

    // Over the limit: refused whole, with the count it would reach.
    let err = table
        .apply(&[
            put(1, p("198.18.0.2"), &[2]),
            put(1, p("198.18.0.3"), &[2]),
            put(1, p("198.18.0.4"), &[2]),
        ])
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the path table holds at most 3 paths; this change would make 4"
    );
    assert_eq!(table.len(), 1);
    // Replacing and removing within the limit is fine.
    table
        .apply(&[
            put(1, p("198.18.0.1"), &[7]),
            put(1, p("198.18.0.2"), &[2]),
            put(1, p("198.18.0.3"), &[2]),
        ])
        .unwrap();
    assert_eq!(table.len(), 3);
}

#[test]
fn load_replaces_everything_and_reports_every_duplicate() {
    let mut table = PathTable::new(100);
    table.insert(9, p("198.18.9.9"), &[b(9)]).unwrap();
    let entry = |service, prefix: &str, backends: &[u32]| PathEntry {
        service,
        prefix: p(prefix),
        backends: backends.iter().map(|&id| b(id)).collect(),
    };
    let entries = vec![
        entry(1, "198.18.0.1", &[1]),
        entry(1, "2001:db8::1", &[2]),
        entry(2, "198.18.0.1", &[3]), // other service: not a duplicate
        entry(1, "198.18.0.1", &[4]),
        entry(1, "2001:db8::1", &[5]),
        entry(1, "198.18.0.1", &[6]),
    ];
    let err = table.load(&entries).unwrap_err();
    let lines: Vec<String> = err.problems.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            "entries 0 and 3 are both the path of 198.18.0.1/32 in service 1",
            "entries 1 and 4 are both the path of 2001:db8::1/128 in service 1",
            "entries 0 and 5 are both the path of 198.18.0.1/32 in service 1",
        ]
    );
    assert_eq!(found(table.view(), 9, addr("198.18.9.9")), Some(vec![9]));

    table.load(&entries[..3]).unwrap();
    let view = table.view();
    assert_eq!(view.len(), 3);
    assert_eq!(found(view, 9, addr("198.18.9.9")), None);
    assert_eq!(found(view, 1, addr("198.18.0.1")), Some(vec![1]));
    assert_eq!(found(view, 1, addr("2001:db8::1")), Some(vec![2]));
    assert_eq!(found(view, 2, addr("198.18.0.1")), Some(vec![3]));

    let err = PathTable::new(2).load(&entries[..3]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the path table holds at most 2 paths; this change would make 3"
    );
}

#[test]
fn removing_a_service_removes_its_paths_only() {
    let mut table = PathTable::new(1_000);
    let mut edits = Vec::new();
    for i in 0..100u32 {
        edits.push(put(1, Prefix::v4(0xC612_0000 + i, 32).unwrap(), &[i]));
        edits.push(put(2, Prefix::v4(0xC612_0000 + i, 32).unwrap(), &[i]));
        edits.push(put(
            1,
            Prefix::v6((0x2001_0db8 << 96) + u128::from(i), 128).unwrap(),
            &[i],
        ));
    }
    table.apply(&edits).unwrap();
    assert_eq!(table.remove_service(1), 200);
    assert_eq!(table.remove_service(1), 0);
    assert_eq!(table.len(), 100);
    let view = table.view();
    assert_eq!(found(view, 1, ClientAddr::V4(0xC612_0005)), None);
    assert_eq!(found(view, 2, ClientAddr::V4(0xC612_0005)), Some(vec![5]));
}

#[test]
fn listing_pages_through_every_path_once() {
    let mut table = PathTable::new(10_000);
    let mut reference = Reference::default();
    let mut edits = Vec::new();
    for i in 0..1_000u32 {
        let service = i % 3;
        let prefix = if i % 2 == 0 {
            Prefix::v4(0xC612_0000 + i, 32).unwrap()
        } else {
            Prefix::v6((0x2001_0db8 << 96) + u128::from(i), 128).unwrap()
        };
        edits.push(put(service, prefix, &[i, i + 1][..1 + (i % 2) as usize]));
    }
    for edit in &edits {
        reference.apply(edit);
    }
    table.apply(&edits).unwrap();
    for filter in [None, Some(1)] {
        let mut listed = Vec::new();
        let mut after = None;
        let mut pages = 0;
        loop {
            let page = table.list(filter, after.as_ref(), 97);
            assert!(page.entries.len() <= 97);
            listed.extend(page.entries);
            pages += 1;
            assert!(pages < 100, "listing does not end");
            match page.next {
                // Cursors survive being shown and read back.
                Some(next) => after = Some(next.to_string().parse().unwrap()),
                None => break,
            }
        }
        let mut want: Vec<(u32, Prefix, Vec<u32>)> = reference
            .paths
            .iter()
            .filter(|(s, _, _)| filter.is_none_or(|f| *s == f))
            .cloned()
            .collect();
        let mut got: Vec<(u32, Prefix, Vec<u32>)> = listed
            .into_iter()
            .map(|e| {
                (
                    e.service,
                    e.prefix,
                    e.backends.iter().map(|r| r.get()).collect(),
                )
            })
            .collect();
        want.sort();
        got.sort();
        assert_eq!(got, want);
    }
    assert!("0-zz".parse::<PathCursor>().is_err());
    assert!(table.list(None, None, 0).entries.is_empty());
}

#[test]
fn memory_follows_the_count_down() {
    let mut table = PathTable::new(100_000);
    let empty_bytes = table.heap_bytes();
    let entries: Vec<PathEntry> = (0..20_000u32)
        .map(|i| PathEntry {
            service: i % 7,
            prefix: Prefix::v4(0xC612_0000 + i, 32).unwrap(),
            backends: vec![b(i)],
        })
        .collect();
    table.load(&entries).unwrap();
    let full = table.heap_bytes();
    assert!(full > empty_bytes + 20_000 * 12, "{full}");
    assert!(full < empty_bytes + 20_000 * 64, "{full}");
    let removes: Vec<PathEdit> = entries[..19_000]
        .iter()
        .map(|e| PathEdit::Remove {
            service: e.service,
            prefix: e.prefix,
        })
        .collect();
    table.apply(&removes).unwrap();
    let after = table.heap_bytes();
    // What is left takes what a table loaded with just those paths takes:
    // the removed paths' memory is gone, whatever order they went in.
    let mut fresh = PathTable::new(100_000);
    fresh.load(&entries[19_000..]).unwrap();
    let fresh = fresh.heap_bytes();
    assert!(
        after <= fresh + 1_024,
        "empty {empty_bytes}, full {full}, after removing 95 % {after}, fresh {fresh}"
    );
    assert!(full - after > 19_000 * 12);
}

/// Edits over a small pool of keys (so that puts replace, removes hit, and
/// prefixes nest), in random batches.
fn edit_strategy() -> impl Strategy<Value = (u32, Prefix, Option<Vec<u32>>)> {
    let v4 = (0u32..16, 20u8..=32).prop_map(|(bits, len)| {
        let a = 0xC612_0000 | (bits << 8) | bits;
        Prefix::v4(a & v4_mask(len), len).unwrap()
    });
    let v6 = (0u128..16, 116u8..=128).prop_map(|(bits, len)| {
        let a = (0x2001_0db8u128 << 96) | (bits << 8) | bits;
        Prefix::v6(a & v6_mask(len), len).unwrap()
    });
    (
        0u32..3,
        prop_oneof![v4, v6],
        prop::option::weighted(0.7, prop::collection::vec(0u32..1000, 1..4)),
    )
}

fn probes(reference: &Reference) -> Vec<ClientAddr> {
    let mut out = Vec::new();
    for bits in 0..16u32 {
        out.push(ClientAddr::V4(0xC612_0000 | (bits << 8) | bits));
        out.push(ClientAddr::V4(0xC612_0000 | (bits << 8) | (bits + 1)));
        let v6 = (0x2001_0db8u128 << 96) | u128::from((bits << 8) | bits);
        out.push(ClientAddr::V6(v6));
        out.push(ClientAddr::V6(v6 + 1));
    }
    for (_, prefix, _) in &reference.paths {
        out.push(match *prefix {
            Prefix::V4 { addr, len } => ClientAddr::V4(addr | !v4_mask(len)),
            Prefix::V6 { addr, len } => ClientAddr::V6(addr | !v6_mask(len)),
        });
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn matches_the_reference_scan_over_random_edits(
        batches in prop::collection::vec(prop::collection::vec(edit_strategy(), 1..12), 1..12),
    ) {
        let mut table = PathTable::new(10_000);
        let mut reference = Reference::default();
        for batch in batches {
            // Turn the random batch into a valid one: each key once, and
            // removals only of paths that exist.
            let mut seen = std::collections::HashSet::new();
            let edits: Vec<PathEdit> = batch
                .into_iter()
                .filter(|(service, prefix, _)| seen.insert((*service, *prefix)))
                .filter_map(|(service, prefix, refs)| match refs {
                    Some(refs) => Some(put(service, prefix, &refs)),
                    None => reference
                        .has(service, prefix)
                        .then_some(PathEdit::Remove { service, prefix }),
                })
                .collect();
            table.apply(&edits).unwrap();
            for edit in &edits {
                reference.apply(edit);
            }
            prop_assert_eq!(table.len(), reference.paths.len());
            for client in probes(&reference) {
                for service in 0..3 {
                    prop_assert_eq!(
                        found(table.view(), service, client),
                        reference.lookup(service, client),
                        "service {} client {}", service, client
                    );
                }
            }
        }
        // A bulk load of the same paths answers the same.
        let entries: Vec<PathEntry> = reference
            .paths
            .iter()
            .map(|(service, prefix, refs)| PathEntry {
                service: *service,
                prefix: *prefix,
                backends: refs.iter().map(|&id| b(id)).collect(),
            })
            .collect();
        let mut loaded = PathTable::new(10_000);
        loaded.load(&entries).unwrap();
        for client in probes(&reference) {
            for service in 0..3 {
                prop_assert_eq!(
                    found(loaded.view(), service, client),
                    reference.lookup(service, client)
                );
            }
        }
    }
}

/// Readers spin on lookups while the writer adds, replaces and removes
/// paths: every answer is the old or the new value of that path, never
/// anything else, and paths nobody touches never change.
#[test]
fn concurrent_readers_see_old_or_new_never_garbage() {
    const STABLE: u32 = 20_000;
    const ROUNDS: u32 = 300;
    let mut table = PathTable::new(100_000);
    // Stable paths share shards with the changing ones, so every rebuild
    // copies some of them.
    let entries: Vec<PathEntry> = (0..STABLE)
        .map(|i| PathEntry {
            service: 1,
            prefix: if i % 2 == 0 {
                Prefix::v4(0xC612_0000 + i, 32).unwrap()
            } else {
                Prefix::v6((0x2001_0db8 << 96) + u128::from(i), 128).unwrap()
            },
            backends: vec![b(i)],
        })
        .collect();
    table.load(&entries).unwrap();
    let hot_v4 = ClientAddr::V4(0xC613_0001);
    let hot_v6 = ClientAddr::V6((0x2001_0db9 << 96) + 1);
    let stop = AtomicBool::new(false);
    let deadline = Instant::now() + Duration::from_secs(20);
    thread::scope(|scope| {
        let mut readers = Vec::new();
        for r in 0..2 {
            let mut reader = table.reader();
            let stop = &stop;
            readers.push(scope.spawn(move || {
                let mut reads = 0u64;
                let mut last_generation = 0;
                let mut i = r;
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let view = reader.load();
                    assert!(view.generation() >= last_generation, "went back in time");
                    last_generation = view.generation();
                    for hot in [hot_v4, hot_v6] {
                        // The writer only ever puts [1], [2, 3] or nothing.
                        let got = found(view, 1, hot);
                        assert!(
                            matches!(got.as_deref(), None | Some([1]) | Some([2, 3])),
                            "{got:?}"
                        );
                    }
                    i = (i + 7919) % STABLE;
                    let client = if i % 2 == 0 {
                        ClientAddr::V4(0xC612_0000 + i)
                    } else {
                        ClientAddr::V6((0x2001_0db8 << 96) + u128::from(i))
                    };
                    assert_eq!(found(view, 1, client), Some(vec![i]));
                    reads += 1;
                }
                reads
            }));
        }
        for round in 0..ROUNDS {
            for hot in [hot_v4, hot_v6] {
                let prefix = Prefix::host(hot);
                match round % 3 {
                    0 => table.insert(1, prefix, &[b(1)]).unwrap(),
                    1 => table.insert(1, prefix, &[b(2), b(3)]).unwrap(),
                    _ => table.remove(1, prefix).unwrap(),
                };
            }
            // A wider prefix comes and goes under the hot ones too.
            if round % 2 == 0 {
                table.insert(1, p("198.19.0.0/16"), &[b(1)]).unwrap();
            } else {
                table.remove(1, p("198.19.0.0/16")).unwrap();
            }
            thread::yield_now();
        }
        stop.store(true, Ordering::Relaxed);
        for reader in readers {
            let reads = reader.join().unwrap();
            assert!(reads > 0);
        }
    });
    assert_eq!(table.len(), STABLE as usize);
}
