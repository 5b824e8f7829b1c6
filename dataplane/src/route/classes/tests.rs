use proptest::prelude::*;

use super::*;

fn p(text: &str) -> Prefix {
    text.parse().unwrap()
}

fn class(id: u32) -> ClassId {
    ClassId::new(id).unwrap()
}

fn v4(text: &str) -> ClientAddr {
    ClientAddr::from(text.parse::<std::net::IpAddr>().unwrap())
}

/// The obviously correct answer: scan every prefix, keep the longest match.
fn reference(entries: &[(Prefix, ClassId)], addr: ClientAddr) -> Option<ClassId> {
    entries
        .iter()
        .filter(|(prefix, _)| prefix.contains(addr))
        .max_by_key(|(prefix, _)| prefix.length())
        .map(|&(_, class)| class)
}

#[test]
fn longest_prefix_wins_and_parents_resume_after_children() {
    let entries = [
        (p("198.18.0.0/15"), class(1)),
        (p("198.18.4.0/24"), class(2)),
        (p("198.18.4.128/25"), class(3)),
        (p("198.18.4.200/32"), class(4)),
        (p("198.19.0.0/16"), class(5)),
    ];
    let table = ClientClasses::build(entries).unwrap();
    let cases = [
        ("198.17.255.255", None),
        ("198.18.0.0", Some(1)),
        ("198.18.3.255", Some(1)),
        ("198.18.4.0", Some(2)),
        ("198.18.4.127", Some(2)),
        ("198.18.4.128", Some(3)),
        ("198.18.4.199", Some(3)),
        ("198.18.4.200", Some(4)),
        ("198.18.4.201", Some(3)),
        ("198.18.4.255", Some(3)),
        ("198.18.5.0", Some(1)),
        ("198.19.0.0", Some(5)),
        ("198.19.255.255", Some(5)),
        ("198.20.0.0", None),
        ("0.0.0.0", None),
        ("255.255.255.255", None),
    ];
    for (addr, want) in cases {
        assert_eq!(table.lookup(v4(addr)), want.map(class), "{addr}");
    }
    assert_eq!(table.len(), 5);
}

#[test]
fn whole_space_prefixes_and_the_last_address() {
    let table = ClientClasses::build([
        (p("0.0.0.0/0"), class(7)),
        (p("255.255.255.255/32"), class(8)),
        (p("::/0"), class(9)),
        (p("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"), class(10)),
    ])
    .unwrap();
    assert_eq!(table.lookup(v4("0.0.0.0")), Some(class(7)));
    assert_eq!(table.lookup(v4("255.255.255.254")), Some(class(7)));
    assert_eq!(table.lookup(v4("255.255.255.255")), Some(class(8)));
    assert_eq!(table.lookup(ClientAddr::V6(0)), Some(class(9)));
    assert_eq!(table.lookup(ClientAddr::V6(u128::MAX - 1)), Some(class(9)));
    assert_eq!(table.lookup(ClientAddr::V6(u128::MAX)), Some(class(10)));
}

#[test]
fn families_stay_apart() {
    let table = ClientClasses::build([(p("::/0"), class(1))]).unwrap();
    assert_eq!(table.lookup(v4("198.18.0.1")), None);
    // The IPv4-mapped form the data path carries is an IPv4 client too.
    let mapped = ClientAddr::from_bytes(&crate::wire::v4_mapped([198, 18, 0, 1]));
    assert_eq!(table.lookup(mapped), None);
    assert_eq!(
        table.lookup(ClientAddr::V6(0x2001_0db8 << 96)),
        Some(class(1))
    );

    let table = ClientClasses::build([(p("0.0.0.0/0"), class(2))]).unwrap();
    assert_eq!(table.lookup(ClientAddr::V6(1)), None);
    assert_eq!(table.lookup(mapped), Some(class(2)));
}

#[test]
fn an_empty_table_matches_nothing() {
    let table = ClientClasses::build([]).unwrap();
    assert!(table.is_empty());
    assert_eq!(table.lookup(v4("198.18.0.1")), None);
    assert_eq!(table.lookup(ClientAddr::V6(1)), None);
    assert_eq!(ClientClasses::default().lookup(ClientAddr::V6(1)), None);
}

#[test]
fn duplicates_are_all_reported_with_their_positions() {
    let entries = [
        (p("198.18.0.0/15"), class(1)),
        (p("198.18.0.0/16"), class(2)), // same address, other length: fine
        (p("2001:db8::/32"), class(3)),
        (p("198.18.0.0/15"), class(1)), // same class: still a duplicate
        (p("2001:db8::/32"), class(4)),
        (p("198.18.0.0/15"), class(5)),
    ];
    let err = ClientClasses::build(entries).unwrap_err();
    assert_eq!(
        err.duplicates,
        vec![
            DuplicatePrefix {
                prefix: p("198.18.0.0/15"),
                first: 0,
                duplicate: 3
            },
            DuplicatePrefix {
                prefix: p("2001:db8::/32"),
                first: 2,
                duplicate: 4
            },
            DuplicatePrefix {
                prefix: p("198.18.0.0/15"),
                first: 0,
                duplicate: 5
            },
        ]
    );
    assert_eq!(
        err.to_string(),
        "prefix 198.18.0.0/15 is given twice (entries 0 and 3)\n\
         prefix 2001:db8::/32 is given twice (entries 2 and 4)\n\
         prefix 198.18.0.0/15 is given twice (entries 0 and 5)"
    );
}

#[test]
fn adjacent_intervals_with_one_answer_merge() {
    // Two halves of a /23 with the class of the /23 add no interval.
    let table = ClientClasses::build([
        (p("198.18.0.0/23"), class(1)),
        (p("198.18.0.0/24"), class(1)),
        (p("198.18.1.0/24"), class(1)),
    ])
    .unwrap();
    assert_eq!(table.intervals(), (3, 1));
    assert_eq!(table.lookup(v4("198.18.1.9")), Some(class(1)));
}

/// A prefix from a few random bits near a base, so that random prefixes
/// nest, touch and repeat often.
fn v4_prefix() -> impl Strategy<Value = Prefix> {
    (0u32..64, 0u8..=32).prop_map(|(bits, len)| {
        let addr = 0xC612_0000 | bits.rotate_right(6) | (bits & 7);
        Prefix::v4(addr & v4_mask(len), len).unwrap()
    })
}

fn v6_prefix() -> impl Strategy<Value = Prefix> {
    (0u128..64, 0u8..=128).prop_map(|(bits, len)| {
        let addr = (0x2001_0db8u128 << 96) | bits.rotate_right(7) | (bits & 7);
        Prefix::v6(addr & v6_mask(len), len).unwrap()
    })
}

/// Addresses at and around every prefix's edges, plus random ones.
fn probe_addresses(entries: &[(Prefix, ClassId)], random: &[ClientAddr]) -> Vec<ClientAddr> {
    let mut out = random.to_vec();
    for (prefix, _) in entries {
        match *prefix {
            Prefix::V4 { addr, len } => {
                let end = addr | !v4_mask(len);
                for a in [addr, end, addr.wrapping_sub(1), end.wrapping_add(1)] {
                    out.push(ClientAddr::V4(a));
                }
            }
            Prefix::V6 { addr, len } => {
                let end = addr | !v6_mask(len);
                for a in [addr, end, addr.wrapping_sub(1), end.wrapping_add(1)] {
                    out.push(ClientAddr::V6(a));
                }
            }
        }
    }
    out
}

fn random_addr() -> impl Strategy<Value = ClientAddr> {
    prop_oneof![
        any::<u32>().prop_map(ClientAddr::V4),
        (0u32..1 << 20).prop_map(|low| ClientAddr::V4(0xC612_0000 | low)),
        any::<u128>().prop_map(ClientAddr::V6),
        (0u128..1 << 20).prop_map(|low| ClientAddr::V6((0x2001_0db8u128 << 96) | low)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn matches_the_reference_scan(
        prefixes in prop::collection::vec(prop_oneof![v4_prefix(), v6_prefix()], 0..60),
        random in prop::collection::vec(random_addr(), 0..40),
    ) {
        // Keep the first of each prefix (duplicates are refused, tested
        // above), with a class per entry.
        let mut seen = std::collections::HashSet::new();
        let entries: Vec<(Prefix, ClassId)> = prefixes
            .into_iter()
            .filter(|prefix| seen.insert(*prefix))
            .enumerate()
            .map(|(i, prefix)| (prefix, class(i as u32)))
            .collect();
        let table = ClientClasses::build(entries.iter().copied()).unwrap();
        for addr in probe_addresses(&entries, &random) {
            prop_assert_eq!(table.lookup(addr), reference(&entries, addr), "{}", addr);
        }
        let (v4_intervals, v6_intervals) = table.intervals();
        prop_assert!(v4_intervals + v6_intervals <= 2 * entries.len() + 2);
    }

    #[test]
    fn any_duplicate_is_refused(
        prefixes in prop::collection::vec(prop_oneof![v4_prefix(), v6_prefix()], 1..40),
        pick in any::<prop::sample::Index>(),
    ) {
        let copy = prefixes[pick.index(prefixes.len())];
        let mut entries: Vec<(Prefix, ClassId)> =
            prefixes.iter().map(|&prefix| (prefix, class(0))).collect();
        entries.push((copy, class(1)));
        let err = ClientClasses::build(entries.iter().copied()).unwrap_err();
        prop_assert!(err
            .duplicates
            .iter()
            .any(|d| d.prefix == copy && d.duplicate == entries.len() - 1));
        for d in &err.duplicates {
            prop_assert!(d.first < d.duplicate);
            prop_assert_eq!(entries[d.first].0, d.prefix);
            prop_assert_eq!(entries[d.duplicate].0, d.prefix);
        }
    }
}

#[test]
fn a_large_ipv4_table_answers_through_its_trie_as_the_reference_scan() {
    // 1 024 /28s of one /16 (the routed bench's shape), with nested
    // /20s, /24s, /30s and /32s over them and a few short prefixes around.
    let mut prefixes: Vec<Prefix> = (0..1_024u32)
        .map(|i| Prefix::v4(0xC612_0000 + (i << 4), 28).unwrap())
        .collect();
    prefixes.extend((0..16u32).map(|i| Prefix::v4(0xC612_0000 + (i << 12), 20).unwrap()));
    prefixes.extend((0..40u32).map(|i| Prefix::v4(0xC612_0000 + i * 0x1_05, 32).unwrap()));
    prefixes.extend((0..40u32).map(|i| Prefix::v4(0xC612_0000 + i * 0x3_10 + 4, 30).unwrap()));
    prefixes.extend((0..8u32).map(|i| Prefix::v4(0xC612_0000 + (i << 9), 24).unwrap()));
    prefixes.extend([
        Prefix::v4(0xC600_0000, 8).unwrap(),
        Prefix::v4(0xC612_0000, 15).unwrap(),
        Prefix::v4(0x0A00_0000, 8).unwrap(),
        Prefix::v4(0xFFFF_FFFF, 32).unwrap(),
        Prefix::v4(0, 32).unwrap(),
    ]);
    let mut seen = std::collections::HashSet::new();
    prefixes.retain(|p| seen.insert(*p));
    let entries: Vec<(Prefix, ClassId)> = prefixes
        .iter()
        .enumerate()
        .map(|(i, &prefix)| (prefix, class(i as u32 % 97)))
        .collect();
    let table = ClientClasses::build(entries.iter().copied()).unwrap();
    assert!(table.has_direct_v4());
    let random: Vec<ClientAddr> = (0..4_000u32)
        .map(|i| ClientAddr::V4(0xC612_0000 | (i.wrapping_mul(0x9E37_79B9) >> 12)))
        .collect();
    for addr in probe_addresses(&entries, &random) {
        assert_eq!(table.lookup(addr), reference(&entries, addr), "{addr}");
    }
}
