//! Tests of the connection table: behaviour, eviction, and a model test.

use super::*;
use crate::flow::state::FlowState;
use crate::flow::{ExportCursor, FlowFilter, FlowRecord, FlowRecords};
use crate::hash::table_hash;
use crate::wire::tcp_flags::{ACK, FIN, SYN};
use crate::wire::{ip_proto, v4_mapped};
use proptest::prelude::*;

const TIMEOUTS: FlowTimeouts = FlowTimeouts {
    tcp_syn_ns: 10,
    tcp_established_ns: 100,
    tcp_closing_ns: 20,
    udp_ns: 30,
    other_ns: 40,
};

/// A connection from client 198.18.0.`client`:`port` to VIP
/// 198.18.1.`vip`:80, scheduled to backend 198.18.2.`backend`:8080.
fn conn(client: u8, port: u16, vip: u8, backend: u8, state: FlowState, now: u64) -> Connection {
    let protocol = match state {
        FlowState::Udp => ip_proto::UDP,
        FlowState::Other => ip_proto::ICMP,
        _ => ip_proto::TCP,
    };
    Connection {
        client: FiveTuple::v4([198, 18, 0, client], [198, 18, 1, vip], port, 80, protocol),
        backend_addr: v4_mapped([198, 18, 2, backend]),
        backend_port: 8080,
        endpoint: u32::from(backend),
        client_mac: [2, 0, 0, 0, 0, client],
        client_ingress: 1,
        state,
        last_seen_ns: now,
    }
}

fn insert(table: &mut FlowTable, c: Connection, now: u64) -> ConnId {
    let (ch, rh) = (table_hash(&c.client), table_hash(&c.reply_tuple()));
    table.insert(c, ch, rh, now)
}

fn lookup(table: &mut FlowTable, t: &FiveTuple, now: u64) -> Option<(ConnId, Direction)> {
    table.lookup(t, table_hash(t), now)
}

#[test]
fn both_tuples_find_the_same_record() {
    let mut t = FlowTable::new(16, TIMEOUTS);
    let c = conn(1, 40000, 10, 5, FlowState::TcpSyn, 0);
    let id = insert(&mut t, c.clone(), 0);
    let (a, da) = lookup(&mut t, &c.client, 1).unwrap();
    let (b, db) = lookup(&mut t, &c.reply_tuple(), 1).unwrap();
    assert_eq!((a, da), (id, Direction::FromClient));
    assert_eq!((b, db), (id, Direction::FromBackend));
    assert_eq!(t.get(id), &c);
    assert_eq!(t.len(), 1);
    t.audit();
}

#[test]
fn unknown_tuples_miss() {
    let mut t = FlowTable::new(16, TIMEOUTS);
    let c = conn(1, 40000, 10, 5, FlowState::TcpEstablished, 0);
    insert(&mut t, c.clone(), 0);
    // The client tuple reversed (VIP → client) is not a key: replies come
    // from the backend's address.
    assert_eq!(lookup(&mut t, &c.client.reversed(), 1), None);
    assert_eq!(lookup(&mut t, &c.reply_tuple().reversed(), 1), None);
    let other = conn(1, 40001, 10, 5, FlowState::TcpEstablished, 0);
    assert_eq!(lookup(&mut t, &other.client, 1), None);
    // The right tuple under a wrong hash is a miss, never a panic.
    assert_eq!(t.lookup(&c.client, !table_hash(&c.client), 1), None);
    assert_eq!(t.len(), 1);
}

#[test]
fn each_state_expires_after_its_own_timeout() {
    for state in [
        FlowState::TcpSyn,
        FlowState::TcpEstablished,
        FlowState::TcpClosing,
        FlowState::Udp,
        FlowState::Other,
    ] {
        let timeout = TIMEOUTS.for_state(state);
        let mut t = FlowTable::new(8, TIMEOUTS);
        let c = conn(1, 40000, 10, 5, state, 1000);
        insert(&mut t, c.clone(), 1000);
        assert!(
            lookup(&mut t, &c.reply_tuple(), 1000 + timeout).is_some(),
            "{state:?}"
        );
        assert_eq!(
            lookup(&mut t, &c.client, 1000 + timeout + 1),
            None,
            "{state:?}"
        );
        assert_eq!(t.len(), 0);
        assert_eq!(t.stats().expired, 1);
        // Gone for both tuples.
        assert_eq!(lookup(&mut t, &c.reply_tuple(), 1000 + timeout + 1), None);
        t.audit();
    }
}

#[test]
fn client_traffic_keeps_a_quiet_backends_reply_mapping() {
    let mut t = FlowTable::new(8, TIMEOUTS);
    let c = conn(1, 40000, 10, 5, FlowState::Udp, 0);
    insert(&mut t, c.clone(), 0);
    let mut now = 0;
    for _ in 0..10 {
        now += 25; // < udp timeout (30) each time, 250 in all
        let (id, d) = lookup(&mut t, &c.client, now).unwrap();
        assert_eq!(d, Direction::FromClient);
        t.observe(id, d, 0, now);
    }
    assert!(lookup(&mut t, &c.reply_tuple(), now + 30).is_some());
    assert_eq!(lookup(&mut t, &c.reply_tuple(), now + 31), None);
}

#[test]
fn handshake_moves_the_connection_to_the_established_timeout() {
    let mut t = FlowTable::new(8, TIMEOUTS);
    let c = conn(1, 40000, 10, 5, FlowState::TcpSyn, 0);
    let id = insert(&mut t, c.clone(), 0);
    t.observe(id, Direction::FromClient, SYN, 0);
    t.observe(id, Direction::FromBackend, SYN | ACK, 1);
    assert_eq!(t.get(id).state, FlowState::TcpSyn);
    t.observe(id, Direction::FromClient, ACK, 2);
    assert_eq!(t.get(id).state, FlowState::TcpEstablished);
    assert_eq!(t.get(id).last_seen_ns, 2);
    // Idle for far longer than the SYN timeout: still there.
    assert!(lookup(&mut t, &c.client, 2 + 100).is_some());
    t.observe(id, Direction::FromBackend, FIN | ACK, 102);
    assert_eq!(t.get(id).state, FlowState::TcpClosing);
    assert_eq!(lookup(&mut t, &c.client, 102 + 21), None);
}

#[test]
fn the_handshake_bit_starts_clear_on_a_reused_record() {
    let mut t = FlowTable::new(1, TIMEOUTS);
    let a = conn(1, 40000, 10, 5, FlowState::TcpSyn, 0);
    let id = insert(&mut t, a.clone(), 0);
    t.observe(id, Direction::FromBackend, SYN | ACK, 1);
    t.remove(id);
    let b = conn(2, 40000, 10, 5, FlowState::TcpSyn, 2);
    let id = insert(&mut t, b, 2);
    t.observe(id, Direction::FromClient, ACK, 3);
    assert_eq!(t.get(id).state, FlowState::TcpSyn);
}

#[test]
fn a_full_table_gives_up_embryonic_then_closing_connections_and_keeps_established_ones() {
    let mut t = FlowTable::new(6, TIMEOUTS);
    let established = conn(1, 40000, 10, 5, FlowState::TcpEstablished, 1);
    let answered_udp = conn(2, 40000, 10, 5, FlowState::Udp, 2);
    let closing = conn(3, 40000, 10, 5, FlowState::TcpClosing, 3);
    // Embryonic, and seen more recently than everything above.
    let syn = conn(4, 40000, 10, 5, FlowState::TcpSyn, 4);
    let one_way_udp = conn(5, 40000, 10, 5, FlowState::Udp, 5);
    let other_established = conn(6, 40000, 10, 5, FlowState::TcpEstablished, 0);
    for c in [
        &established,
        &answered_udp,
        &closing,
        &syn,
        &one_way_udp,
        &other_established,
    ] {
        insert(&mut t, c.clone(), c.last_seen_ns);
    }
    let (id, _) = lookup(&mut t, &answered_udp.reply_tuple(), 6).unwrap();
    t.observe(id, Direction::FromBackend, 0, 6);
    let gone = |t: &mut FlowTable, c: &Connection| lookup(t, &c.client, 7).is_none();
    // Embryonic first (least recently seen first), then closing.
    let mut now = 7;
    for leaving in [&syn, &one_way_udp, &closing] {
        now += 1;
        let newcomer = conn(100 + now as u8, 1, 10, 5, FlowState::TcpEstablished, now);
        let newcomer_id = insert(&mut t, newcomer.clone(), now);
        assert!(!newcomer_id.is_none(), "a place for {newcomer:?}");
        assert!(gone(&mut t, leaving), "{leaving:?} made room");
        t.audit();
    }
    // Only established connections are left: the next one is refused.
    let refused = conn(200, 1, 10, 5, FlowState::TcpSyn, 20);
    assert!(insert(&mut t, refused.clone(), 20).is_none());
    assert!(gone(&mut t, &refused));
    for kept in [&established, &answered_udp, &other_established] {
        assert!(!gone(&mut t, kept), "{kept:?} kept");
    }
    let s = t.stats();
    assert_eq!((s.evicted, s.refused, t.len()), (3, 1, 6), "{s:?}");
    t.audit();
    // Allowed, an established one goes: the one not seen since the clock
    // hand passed it (the refused insert's scan passed every record).
    let mut t = t.with_established_eviction(true);
    let others: Vec<FiveTuple> = t
        .iter()
        .filter(|c| c.client != other_established.client)
        .map(|c| c.client)
        .collect();
    for tuple in &others {
        let (id, d) = lookup(&mut t, tuple, 21).unwrap();
        t.observe(id, d, ACK, 21);
    }
    assert!(!insert(&mut t, refused.clone(), 22).is_none());
    assert!(gone(&mut t, &other_established));
    for tuple in &others {
        assert!(lookup(&mut t, tuple, 22).is_some(), "{tuple:?} kept");
    }
    t.audit();
}

#[test]
fn the_clock_hand_takes_the_first_record_not_seen_since_it_passed() {
    let mut t = FlowTable::new(16, TIMEOUTS).with_established_eviction(true);
    // Records 0..16 in slab order, each seen earlier than the one before.
    let cs: Vec<_> = (0..16u8)
        .map(|i| {
            conn(
                i + 1,
                40000,
                10,
                5,
                FlowState::TcpEstablished,
                40 - u64::from(i),
            )
        })
        .collect();
    for c in &cs {
        insert(&mut t, c.clone(), c.last_seen_ns);
    }
    let present = |t: &mut FlowTable, c: &Connection, now| lookup(t, &c.client, now).is_some();
    // The hand's first turn: no record has been passed, so each insert
    // takes the least recently seen of the 8 records it passes, and marks
    // them all.
    let a = conn(100, 1, 10, 5, FlowState::TcpEstablished, 50);
    let b = conn(101, 1, 10, 5, FlowState::TcpEstablished, 52);
    insert(&mut t, a.clone(), 50);
    assert!(!present(&mut t, &cs[7], 50), "the oldest of records 0..8");
    insert(&mut t, b.clone(), 52);
    assert!(!present(&mut t, &cs[15], 52), "the oldest of records 8..16");
    // A packet of record 0 after the hand passed it gives it a second
    // chance; record 1 has had none since: it goes, although records
    // 2..7 were seen before it.
    let (id, d) = lookup(&mut t, &cs[0].client, 54).unwrap();
    t.observe(id, d, ACK, 54);
    let c = conn(102, 1, 10, 5, FlowState::TcpEstablished, 56);
    insert(&mut t, c.clone(), 56);
    assert!(!present(&mut t, &cs[1], 56), "the first idle record");
    for kept in [&cs[0], &cs[2], &cs[3], &cs[4], &cs[5], &cs[6], &a, &b, &c] {
        assert!(present(&mut t, kept, 56), "{kept:?} kept");
    }
    assert_eq!((t.stats().evicted, t.len()), (3, 16));
    t.audit();
    // Idle or not, an established connection stays where the table keeps
    // them: the insert is refused.
    let mut t = t.with_established_eviction(false);
    let refused = conn(103, 1, 10, 5, FlowState::TcpSyn, 58);
    assert!(insert(&mut t, refused, 58).is_none());
    assert_eq!((t.stats().evicted, t.stats().refused, t.len()), (3, 1, 16));
    t.audit();
}

#[test]
fn a_key_that_finds_no_room_without_evicting_an_established_connection_is_refused_whole() {
    let mut t = FlowTable::new(64, TIMEOUTS);
    let mut refused = 0;
    for i in 0..100u16 {
        let c = conn(1, i, 10, 5, FlowState::TcpEstablished, u64::from(i));
        // Every key in one bucket pair: at most 16 keys fit.
        if t.insert(c.clone(), 0, 0, u64::from(i)).is_none() {
            refused += 1;
            assert_eq!(t.lookup(&c.client, 0, 100), None, "nothing of it stays");
        }
        t.audit();
    }
    let s = t.stats();
    assert_eq!((s.evicted, s.refused), (0, refused), "{s:?}");
    assert_eq!(t.len() as u64, 100 - refused);
    assert!(refused >= 92, "{s:?}");
}

#[test]
fn a_full_table_evicts_the_least_recently_seen() {
    let mut t = FlowTable::new(4, TIMEOUTS).with_established_eviction(true);
    let cs: Vec<_> = (1..=5)
        .map(|i| conn(i, 40000, 10, 5, FlowState::TcpEstablished, u64::from(i)))
        .collect();
    let ids: Vec<_> = cs[..4]
        .iter()
        .map(|c| insert(&mut t, c.clone(), c.last_seen_ns))
        .collect();
    t.observe(ids[0], Direction::FromClient, ACK, 5);
    insert(&mut t, cs[4].clone(), 6);
    assert_eq!(t.len(), 4);
    assert_eq!(t.stats().evicted, 1);
    assert_eq!(t.stats().evicted_bucket_full, 0);
    // With 4 records the clock hand sees them all: exact LRU.
    assert_eq!(lookup(&mut t, &cs[1].client, 7), None);
    assert_eq!(lookup(&mut t, &cs[1].reply_tuple(), 7), None);
    for c in [&cs[0], &cs[2], &cs[3], &cs[4]] {
        assert!(lookup(&mut t, &c.reply_tuple(), 7).is_some());
    }
    t.audit();
}

#[test]
fn a_full_table_reclaims_an_expired_record_before_a_live_one() {
    let mut t = FlowTable::new(4, TIMEOUTS);
    let udp = conn(1, 40000, 10, 5, FlowState::Udp, 0);
    insert(&mut t, udp.clone(), 0);
    for i in 2..=4 {
        insert(
            &mut t,
            conn(i, 40000, 10, 5, FlowState::TcpEstablished, 0),
            0,
        );
    }
    insert(
        &mut t,
        conn(9, 40000, 10, 5, FlowState::TcpEstablished, 31),
        31,
    );
    assert_eq!(t.stats().expired, 1);
    assert_eq!(t.stats().evicted, 0);
    assert_eq!(lookup(&mut t, &udp.client, 31), None);
    assert_eq!(t.len(), 4);
}

#[test]
fn insert_after_expiry_reuses_the_space() {
    let mut t = FlowTable::new(2, TIMEOUTS);
    insert(&mut t, conn(1, 1, 10, 5, FlowState::Udp, 0), 0);
    insert(&mut t, conn(2, 1, 10, 5, FlowState::Udp, 0), 0);
    assert_eq!(t.expire(100, 10), 2);
    assert!(t.is_empty());
    let a = conn(3, 1, 10, 5, FlowState::Udp, 100);
    let b = conn(4, 1, 10, 5, FlowState::Udp, 100);
    insert(&mut t, a.clone(), 100);
    insert(&mut t, b.clone(), 100);
    assert_eq!(t.stats().evicted, 0);
    assert_eq!(t.len(), 2);
    assert!(lookup(&mut t, &a.client, 101).is_some());
    assert!(lookup(&mut t, &b.client, 101).is_some());
    t.audit();
}

#[test]
fn a_second_connection_with_the_same_reply_tuple_takes_it_over() {
    let mut t = FlowTable::new(16, TIMEOUTS);
    // One client address and port, two VIPs, the same backend.
    let first = conn(1, 40000, 10, 5, FlowState::TcpEstablished, 0);
    let second = conn(1, 40000, 11, 5, FlowState::TcpEstablished, 1);
    assert_eq!(first.reply_tuple(), second.reply_tuple());
    insert(&mut t, first.clone(), 0);
    let id = insert(&mut t, second.clone(), 1);
    assert_eq!(t.stats().reply_conflicts, 1);
    assert_eq!(t.len(), 1);
    assert_eq!(lookup(&mut t, &first.client, 2), None);
    assert_eq!(
        lookup(&mut t, &second.reply_tuple(), 2),
        Some((id, Direction::FromBackend))
    );
    assert_eq!(t.get(id).client, second.client);
    t.audit();
}

#[test]
fn reinserting_a_client_tuple_replaces_the_record() {
    let mut t = FlowTable::new(16, TIMEOUTS);
    let old = conn(1, 40000, 10, 5, FlowState::TcpSyn, 0);
    let new = conn(1, 40000, 10, 6, FlowState::TcpSyn, 1);
    insert(&mut t, old.clone(), 0);
    let id = insert(&mut t, new.clone(), 1);
    assert_eq!(t.stats().replaced, 1);
    assert_eq!(t.len(), 1);
    assert_eq!(t.get(id).backend_addr, new.backend_addr);
    assert_eq!(lookup(&mut t, &old.reply_tuple(), 2), None);
    assert_eq!(
        lookup(&mut t, &new.client, 2),
        Some((id, Direction::FromClient))
    );
    t.audit();
}

#[test]
fn expire_looks_at_no_more_than_its_budget() {
    let mut t = FlowTable::new(100, TIMEOUTS);
    for i in 0..100u16 {
        insert(&mut t, conn(1, i, 10, 5, FlowState::Udp, 0), 0);
    }
    assert_eq!(t.expire(30, 100), 0, "nothing is expired yet");
    assert_eq!(t.expire(31, 0), 0);
    assert_eq!(t.expire(31, 10), 10);
    assert_eq!(t.len(), 90);
    let mut sweeps = 0;
    while !t.is_empty() {
        assert!(t.expire(31, 25) <= 25);
        sweeps += 1;
        assert!(sweeps <= 4);
    }
    assert_eq!(t.stats().expired, 100);
    t.audit();
}

#[test]
fn remove_takes_both_keys_and_tolerates_stale_ids() {
    let mut t = FlowTable::new(4, TIMEOUTS);
    let c = conn(1, 40000, 10, 5, FlowState::Udp, 0);
    let id = insert(&mut t, c.clone(), 0);
    t.remove(id);
    t.remove(id);
    t.observe(id, Direction::FromClient, 0, 5);
    assert_eq!(t.stats().removed, 1);
    assert_eq!(lookup(&mut t, &c.client, 1), None);
    assert_eq!(lookup(&mut t, &c.reply_tuple(), 1), None);
    let foreign = ConnId(1_000_000);
    let _ = t.get(foreign);
    t.get_mut(foreign).endpoint = 7;
    t.observe(foreign, Direction::FromBackend, SYN, 1);
    t.remove(foreign);
    assert!(t.is_empty());
    t.audit();
}

#[test]
fn iter_lists_the_live_connections() {
    let mut t = FlowTable::new(8, TIMEOUTS);
    let a = conn(1, 1, 10, 5, FlowState::Udp, 0);
    let b = conn(2, 1, 10, 5, FlowState::Udp, 0);
    let ia = insert(&mut t, a.clone(), 0);
    insert(&mut t, b.clone(), 0);
    t.remove(ia);
    let live: Vec<_> = t.iter().cloned().collect();
    assert_eq!(live, vec![b]);
}

/// Runs a whole listing in steps of `budget` positions into buffers of
/// `chunk` records, calling `between` after every step.
fn export_all(
    t: &mut FlowTable,
    filter: FlowFilter,
    budget: usize,
    chunk: usize,
    mut between: impl FnMut(&mut FlowTable, usize),
) -> Vec<FlowRecord> {
    let mut cursor = ExportCursor::start();
    let mut out = FlowRecords::with_capacity(chunk);
    let mut all = Vec::new();
    let mut steps = 0;
    while !cursor.is_done() {
        let before = cursor.position();
        t.export(&mut cursor, &filter, budget, &mut out);
        assert!(
            cursor.position() - before <= budget,
            "looked past its budget"
        );
        if out.is_full() || cursor.is_done() {
            all.extend_from_slice(out.as_slice());
            out.reset(chunk);
        }
        steps += 1;
        assert!(steps <= 10 * t.capacity(), "a listing that does not end");
        between(t, steps);
    }
    all
}

#[test]
fn export_lists_each_live_connection_once_in_bounded_steps() {
    let mut t = FlowTable::new(64, TIMEOUTS);
    let mut want = Vec::new();
    for i in 0..40u8 {
        let vip = if i % 4 == 0 { 11 } else { 10 };
        let c = conn(i, 1000 + u16::from(i), vip, 5, FlowState::TcpEstablished, 0);
        let id = insert(&mut t, c.clone(), 0);
        want.push((id, c));
    }
    for (id, _) in want.iter().filter(|(id, _)| id.index() % 5 == 0) {
        t.remove(*id);
    }
    want.retain(|(id, _)| id.index() % 5 != 0);
    for (budget, chunk) in [(1, 1), (3, 2), (7, 64), (1000, 5)] {
        let got = export_all(&mut t, FlowFilter::All, budget, chunk, |_, _| {});
        let expected: Vec<FlowRecord> = want.iter().map(|(_, c)| FlowRecord::of(c)).collect();
        assert_eq!(got, expected, "budget {budget}, chunk {chunk}");
    }
    let vip11 = FlowFilter::To {
        protocol: ip_proto::TCP,
        address: v4_mapped([198, 18, 1, 11]),
        port: 80,
    };
    let got = export_all(&mut t, vip11, 4, 3, |_, _| {});
    let expected: Vec<FlowRecord> = want
        .iter()
        .filter(|(_, c)| c.client.dst == v4_mapped([198, 18, 1, 11]))
        .map(|(_, c)| FlowRecord::of(c))
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(got, expected);
}

#[test]
fn a_listing_while_the_table_changes_sees_the_steady_connections_exactly_once() {
    let mut t = FlowTable::new(128, TIMEOUTS);
    let mut steady = Vec::new();
    let mut churn = Vec::new();
    for i in 0..60u8 {
        let c = conn(i, 2000, 10, 5, FlowState::TcpEstablished, 0);
        let id = insert(&mut t, c.clone(), 0);
        if i % 3 == 0 {
            churn.push(id);
        } else {
            steady.push(FlowRecord::of(&c));
        }
    }
    let mut next = 100u8;
    let got = export_all(&mut t, FlowFilter::All, 5, 4, |t, step| {
        // Close one churning connection and open another, between steps.
        if let Some(id) = churn.pop() {
            t.remove(id);
        }
        let c = conn(next, 3000 + step as u16, 10, 6, FlowState::TcpSyn, 0);
        churn.insert(0, insert(t, c, 0));
        next = next.wrapping_add(1);
    });
    for s in &steady {
        let n = got.iter().filter(|r| *r == s).count();
        assert_eq!(n, 1, "{s:?} listed {n} times");
    }
    let mut clients: Vec<_> = got.iter().map(|r| r.client).collect();
    clients.sort_by_key(|c| (c.src, c.src_port));
    let len = clients.len();
    clients.dedup();
    assert_eq!(clients.len(), len, "a connection listed twice");
    t.audit();
}

#[test]
fn colliding_hashes_evict_within_their_buckets_and_keep_invariants() {
    let mut t = FlowTable::new(64, TIMEOUTS).with_established_eviction(true);
    let mut last = None;
    for i in 0..100u16 {
        let c = conn(1, i, 10, 5, FlowState::TcpEstablished, u64::from(i));
        // Every key in one bucket pair: at most 16 keys fit.
        last = Some((t.insert(c.clone(), 0, 0, u64::from(i)), c));
        t.audit();
    }
    assert!(t.len() <= 8);
    assert!(t.stats().evicted_bucket_full > 0);
    let (id, c) = last.unwrap();
    assert_eq!(
        t.lookup(&c.client, 0, 100),
        Some((id, Direction::FromClient))
    );
    assert_eq!(
        t.lookup(&c.reply_tuple(), 0, 100),
        Some((id, Direction::FromBackend))
    );
}

#[test]
fn keys_moved_to_make_room_are_still_found() {
    let mut t = FlowTable::new(64, TIMEOUTS);
    let mut inserted = Vec::new();
    for i in 0..48u16 {
        let c = conn(1, i, 10, 5, FlowState::TcpEstablished, 0);
        // Primaries crowd into 4 buckets; tags vary, so keys can move.
        let crowd = |h: u64| h & 0xffff_0000_0000_0003;
        let (ch, rh) = (
            crowd(splitmix(2 * u64::from(i))),
            crowd(splitmix(2 * u64::from(i) + 1)),
        );
        t.insert(c.clone(), ch, rh, 0);
        inserted.push((c, ch, rh));
        t.audit();
        let live: Vec<_> = t.iter().map(|c| c.client).collect();
        for (c, ch, rh) in &inserted {
            let found = t.lookup(&c.client, *ch, 0);
            assert_eq!(found.is_some(), live.contains(&c.client));
            if let Some((id, _)) = found {
                assert_eq!(
                    t.lookup(&c.reply_tuple(), *rh, 0),
                    Some((id, Direction::FromBackend))
                );
            }
        }
    }
    // Without the moves, some of these would have been evicted.
    assert_eq!(t.stats().evicted, 0);
    assert_eq!(t.len(), 48);
}

#[test]
fn a_degenerate_connection_with_equal_tuples_is_indexed_once() {
    let mut t = FlowTable::new(4, TIMEOUTS);
    let addr = v4_mapped([198, 18, 0, 1]);
    let c = Connection {
        client: FiveTuple {
            src: addr,
            dst: addr,
            src_port: 7,
            dst_port: 7,
            protocol: ip_proto::UDP,
        },
        backend_addr: addr,
        backend_port: 7,
        ..conn(1, 7, 1, 1, FlowState::Udp, 0)
    };
    assert_eq!(c.client, c.reply_tuple());
    let id = insert(&mut t, c.clone(), 0);
    assert_eq!(
        lookup(&mut t, &c.client, 1),
        Some((id, Direction::FromClient))
    );
    t.audit();
}

#[test]
fn a_million_inserts_into_a_hundred_thousand_stay_bounded() {
    const CAP: usize = 100_000;
    // Nothing expires: every record that leaves is an eviction.
    let forever = FlowTimeouts {
        tcp_established_ns: u64::MAX,
        ..TIMEOUTS
    };
    let mut t = FlowTable::new(CAP, forever).with_established_eviction(true);
    let mut last = None;
    for i in 0..1_000_000u32 {
        let b = i.to_be_bytes();
        let mut c = conn(
            0,
            b[3].into(),
            10,
            5,
            FlowState::TcpEstablished,
            u64::from(i),
        );
        c.client.src = v4_mapped([198, 18, b[1], b[2]]);
        c.client.src_port = u16::from(b[3]) | u16::from(b[0]) << 8;
        // Any well-spread hash serves the table; a cheap one keeps this fast.
        let (ch, rh) = (splitmix(u64::from(i)), splitmix(u64::from(i) | 1 << 40));
        last = Some((t.insert(c.clone(), ch, rh, u64::from(i)), c, ch, rh));
        if i % 65_536 == 0 {
            assert!(t.len() <= CAP);
        }
    }
    assert_eq!(t.len(), CAP);
    let s = t.stats();
    assert_eq!(s.inserted, 1_000_000);
    assert_eq!(s.evicted, 1_000_000 - CAP as u64);
    assert_eq!(s.expired + s.replaced + s.reply_conflicts + s.removed, 0);
    // Bucket-full evictions are rare at the index's load.
    assert_eq!(s.evicted_bucket_full, 0, "{s:?}");
    let (id, c, ch, rh) = last.unwrap();
    assert_eq!(
        t.lookup(&c.client, ch, 1_000_000),
        Some((id, Direction::FromClient))
    );
    assert_eq!(
        t.lookup(&c.reply_tuple(), rh, 1_000_000),
        Some((id, Direction::FromBackend))
    );
    t.audit();
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[test]
fn memory_per_connection_is_small() {
    assert_eq!(std::mem::size_of::<Connection>(), 80);
    assert_eq!(std::mem::size_of::<Record>(), 96);
    let t = FlowTable::new(1 << 16, TIMEOUTS);
    assert_eq!(t.memory_bytes() / t.capacity(), 128);
}

#[test]
fn capacity_is_clamped() {
    assert_eq!(FlowTable::new(0, TIMEOUTS).capacity(), 1);
    assert_eq!(MAX_CAPACITY, 33_554_432);
    assert!(MAX_CAPACITY < NOWHERE as usize);
    // Every index position of the largest table fits a record's fields.
    assert!(MAX_BUCKETS * SLOTS <= NO_POS as usize);
}

// ---- Per-endpoint counters ---------------------------------------------

/// Endpoint `id`'s (new, active) connections.
fn counts(t: &FlowTable, id: u32) -> (u64, u64) {
    let v = t.counters().endpoint(id);
    (v.new_flows, v.active_flows)
}

#[test]
fn active_connections_follow_insert_removal_and_expiry() {
    let mut t = FlowTable::new(16, TIMEOUTS);
    t.reserve_endpoints(8);
    let a = insert(&mut t, conn(1, 1, 10, 5, FlowState::Udp, 0), 0);
    insert(&mut t, conn(2, 1, 10, 5, FlowState::TcpEstablished, 0), 0);
    let sweep = conn(3, 1, 10, 6, FlowState::Udp, 0);
    insert(&mut t, sweep.clone(), 0);
    let found = conn(4, 1, 10, 6, FlowState::Udp, 0);
    insert(&mut t, found.clone(), 0);
    assert_eq!((counts(&t, 5), counts(&t, 6)), ((2, 2), (2, 2)));
    assert_eq!(t.counters().connections(), 4);

    t.remove(a);
    t.remove(a);
    assert_eq!(counts(&t, 5), (2, 1), "removal, once");
    // Found expired by a lookup.
    assert_eq!(lookup(&mut t, &found.reply_tuple(), 31), None);
    assert_eq!(counts(&t, 6), (2, 1));
    // Swept.
    assert_eq!(t.expire(31, 16), 1);
    assert_eq!(counts(&t, 6), (2, 0));
    assert_eq!(counts(&t, 5), (2, 1), "the TCP one is still live");
    assert_eq!(t.counters().connections(), 1);
    t.audit();
}

#[test]
fn replacement_conflict_and_eviction_count_the_old_connection_out() {
    let mut t = FlowTable::new(2, TIMEOUTS);
    t.reserve_endpoints(8);
    insert(&mut t, conn(1, 1, 10, 5, FlowState::TcpSyn, 0), 0);
    // Same client tuple, other backend: replaced.
    insert(&mut t, conn(1, 1, 10, 6, FlowState::TcpSyn, 1), 1);
    assert_eq!((counts(&t, 5), counts(&t, 6)), ((1, 0), (1, 1)));
    // Same reply tuple through another VIP: a conflict.
    insert(&mut t, conn(1, 1, 11, 6, FlowState::TcpSyn, 2), 2);
    assert_eq!(counts(&t, 6), (2, 1));
    // A full table evicts the least recently seen.
    insert(&mut t, conn(2, 1, 10, 5, FlowState::TcpSyn, 3), 3);
    insert(&mut t, conn(3, 1, 10, 7, FlowState::TcpSyn, 4), 4);
    assert_eq!(t.stats().evicted, 1);
    assert_eq!(t.len(), 2);
    assert_eq!(
        (counts(&t, 5), counts(&t, 6), counts(&t, 7)),
        ((2, 1), (2, 0), (1, 1))
    );
    t.audit();
}

#[test]
fn growing_the_counters_keeps_counts_and_live_connections() {
    let mut t = FlowTable::new(64, TIMEOUTS);
    t.reserve_endpoints(2);
    let before = Arc::clone(t.counters());
    let early = insert(&mut t, conn(1, 1, 10, 1, FlowState::Udp, 0), 0);
    t.count_packet(1, 100);
    // Not counted: no slot for id 9 yet, so it is never counted out either.
    let uncounted = insert(&mut t, conn(2, 1, 10, 9, FlowState::Udp, 0), 0);
    t.count_packet(9, 100);
    t.reserve_endpoints(10);
    assert!(t.endpoint_slots() >= 10);
    insert(&mut t, conn(3, 1, 10, 9, FlowState::Udp, 0), 0);
    t.count_packet(1, 50);
    t.count_packet(9, 70);
    let one = t.counters().endpoint(1);
    assert_eq!(
        (one.packets, one.bytes, one.new_flows, one.active_flows),
        (2, 150, 1, 1)
    );
    let nine = t.counters().endpoint(9);
    assert_eq!(
        (nine.packets, nine.bytes, nine.new_flows, nine.active_flows),
        (1, 70, 1, 1)
    );
    // A scraper that took the handle before growing sees the new array.
    assert_eq!(before.endpoint(1), one);
    t.remove(uncounted);
    t.remove(early);
    assert_eq!(counts(&t, 9), (1, 1));
    assert_eq!(counts(&t, 1), (1, 0));
    t.audit();
}

#[test]
fn a_counted_record_reused_after_removal_starts_uncounted() {
    let mut t = FlowTable::new(1, TIMEOUTS);
    t.reserve_endpoints(4);
    let id = insert(&mut t, conn(1, 1, 10, 3, FlowState::Udp, 0), 0);
    t.remove(id);
    // Reuses the one record, for an id with no slot.
    insert(&mut t, conn(2, 1, 10, 200, FlowState::Udp, 0), 0);
    t.expire(1_000, 1);
    assert_eq!(counts(&t, 3), (1, 0));
    t.audit();
}

// ---- Model test ---------------------------------------------------------

/// Picks a tuple from a small universe, so that keys collide often.
#[derive(Clone, Copy, Debug)]
struct Pick {
    client: u8,
    port: u16,
    vip: u8,
    backend: u8,
    udp: bool,
    reply: bool,
}

#[derive(Clone, Debug)]
enum Op {
    Insert(Pick, u8),
    Lookup(Pick),
    Observe(Pick, u8),
    Remove(Pick),
    Advance(u64),
    Expire(usize),
}

fn pick() -> impl Strategy<Value = Pick> {
    (
        1..=3u8,
        1..=2u16,
        1..=2u8,
        1..=2u8,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(client, port, vip, backend, udp, reply)| Pick {
            client,
            port,
            vip,
            backend,
            udp,
            reply,
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (pick(), 0..3u8).prop_map(|(p, s)| Op::Insert(p, s)),
        3 => pick().prop_map(Op::Lookup),
        3 => (pick(), prop::sample::select(vec![0, SYN, SYN | ACK, ACK, FIN | ACK, 0x04]))
            .prop_map(|(p, f)| Op::Observe(p, f)),
        1 => pick().prop_map(Op::Remove),
        2 => (0..60u64).prop_map(Op::Advance),
        1 => (0..8usize).prop_map(Op::Expire),
    ]
}

impl Pick {
    fn conn(self, state: u8, now: u64) -> Connection {
        let state = match (self.udp, state) {
            (true, _) => FlowState::Udp,
            (false, 0) => FlowState::TcpSyn,
            (false, 1) => FlowState::TcpEstablished,
            (false, _) => FlowState::TcpClosing,
        };
        conn(self.client, self.port, self.vip, self.backend, state, now)
    }

    fn tuple(self) -> FiveTuple {
        let c = self.conn(0, 0);
        if self.reply {
            c.reply_tuple()
        } else {
            c.client
        }
    }
}

/// The obvious table: a list, searched in full.
#[derive(Default)]
struct Model {
    conns: Vec<(Connection, bool)>,
}

impl Model {
    fn insert(&mut self, c: Connection) {
        let (client, reply) = (c.client, c.reply_tuple());
        self.conns.retain(|(m, _)| {
            let keys = [m.client, m.reply_tuple()];
            !keys.contains(&client) && !keys.contains(&reply)
        });
        self.conns.push((c, false));
    }

    fn lookup(&mut self, t: &FiveTuple, now: u64) -> Option<(usize, Direction)> {
        let found = self
            .conns
            .iter()
            .position(|(m, _)| m.client == *t)
            .map(|i| (i, Direction::FromClient))
            .or_else(|| {
                self.conns
                    .iter()
                    .position(|(m, _)| m.reply_tuple() == *t)
                    .map(|i| (i, Direction::FromBackend))
            })?;
        let m = &self.conns[found.0].0;
        if TIMEOUTS.is_expired(m.state, m.last_seen_ns, now) {
            self.conns.remove(found.0);
            return None;
        }
        Some(found)
    }

    fn live(&self, now: u64) -> Vec<Connection> {
        let mut v: Vec<_> = self
            .conns
            .iter()
            .filter(|(m, _)| !TIMEOUTS.is_expired(m.state, m.last_seen_ns, now))
            .map(|(m, _)| m.clone())
            .collect();
        v.sort_by_key(|m| format!("{m:?}"));
        v
    }
}

fn check_lookup(
    t: &mut FlowTable,
    m: &mut Model,
    p: Pick,
    now: u64,
) -> Result<Option<(ConnId, usize, Direction)>, TestCaseError> {
    let tuple = p.tuple();
    let got = lookup(t, &tuple, now);
    let want = m.lookup(&tuple, now);
    match (got, want) {
        (None, None) => Ok(None),
        (Some((id, d)), Some((i, md))) => {
            prop_assert_eq!(d, md);
            prop_assert_eq!(t.get(id), &m.conns[i].0);
            Ok(Some((id, i, d)))
        }
        (got, want) => Err(TestCaseError::fail(format!(
            "lookup {tuple:?}: table {got:?}, model {want:?}"
        ))),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn the_table_behaves_like_a_list_when_it_never_fills(ops in prop::collection::vec(op(), 1..200)) {
        let mut t = FlowTable::new(1024, TIMEOUTS);
        t.reserve_endpoints(3);
        let mut m = Model::default();
        let mut now = 0u64;
        for op in ops {
            match op {
                Op::Insert(p, s) => {
                    let c = p.conn(s, now);
                    insert(&mut t, c.clone(), now);
                    // The table keeps a packet's time to the even
                    // nanosecond below (bit 0 is the clock hand's mark).
                    m.insert(p.conn(s, now & !1));
                }
                Op::Lookup(p) => {
                    check_lookup(&mut t, &mut m, p, now)?;
                }
                Op::Observe(p, flags) => {
                    if let Some((id, i, d)) = check_lookup(&mut t, &mut m, p, now)? {
                        t.observe(id, d, flags, now);
                        let (c, replied) = &mut m.conns[i];
                        c.last_seen_ns = c.last_seen_ns.max(now & !1);
                        c.state = next_state(c.state, replied, d, flags);
                        prop_assert_eq!(t.get(id), &*c);
                    }
                }
                Op::Remove(p) => {
                    if let Some((id, i, _)) = check_lookup(&mut t, &mut m, p, now)? {
                        t.remove(id);
                        m.conns.remove(i);
                    }
                }
                Op::Advance(dt) => now += dt,
                Op::Expire(budget) => {
                    t.expire(now, budget);
                }
            }
            prop_assert!(t.len() <= m.conns.len());
            prop_assert!(t.len() >= m.live(now).len());
        }
        t.audit();
        prop_assert_eq!(t.stats().evicted, 0);
        t.expire(now, t.capacity());
        let mut listed: Vec<_> = t.iter().cloned().collect();
        listed.sort_by_key(|c| format!("{c:?}"));
        prop_assert_eq!(listed, m.live(now));
    }

    #[test]
    fn arbitrary_hashes_and_ids_never_break_the_table(
        ops in prop::collection::vec(
            (0..8u8, any::<u64>(), any::<u64>(), 0..40u32, 0..4u16, any::<u8>()),
            1..200,
        )
    ) {
        let mut t = FlowTable::new(16, TIMEOUTS);
        let mut now = 0;
        for (kind, h1, h2, id, port, flags) in ops {
            // Endpoint ids 0..8, some without a slot until a reserve.
            let c = conn(1, port, 10, flags % 8, FlowState::TcpSyn, now);
            let id = ConnId(id);
            match kind {
                0 => { t.insert(c, h1, h2, now); }
                1 => { t.lookup(&c.client, h1, now); }
                2 => t.observe(id, Direction::FromBackend, flags, now),
                3 => t.remove(id),
                4 => { t.expire(now, usize::from(flags)); }
                5 => { t.lookup(&c.reply_tuple(), h2, now); }
                6 => t.reserve_endpoints(usize::from(flags % 9)),
                _ => now += h2 % 50,
            }
            prop_assert!(t.len() <= t.capacity());
        }
        t.audit();
    }
}

/// The kernel fast path's view of the table, for the test below: two
/// ports' caches in heap memory, and a connection's entries computed from
/// the record as the worker does (`None` for a backend taken out).
mod with_fast_path {
    use super::*;
    use crate::fastpath::layout::STATE_LIVE;
    use crate::fastpath::{
        read_entry, CacheGeometry, Direction as FastDirection, DirectionRewrite, EntryMemory,
        FastPath, HeapEntries,
    };
    use std::collections::HashSet;
    use std::sync::Arc;

    pub(super) struct Caches {
        pub(super) heaps: Vec<Arc<HeapEntries>>,
        geometry: CacheGeometry,
    }

    /// A table of `capacity` records with a fast path over two ports.
    pub(super) fn table(capacity: usize) -> (FlowTable, Caches) {
        let geometry = CacheGeometry::new(1, 64);
        let heaps: Vec<Arc<HeapEntries>> = (0..2)
            .map(|_| Arc::new(HeapEntries::new(geometry.entries())))
            .collect();
        let caches = heaps
            .iter()
            .map(|h| Some(h.clone() as Arc<dyn EntryMemory>))
            .collect();
        let mut t = FlowTable::new(capacity, TIMEOUTS);
        t.reserve_endpoints(3);
        t.set_fast_path(FastPath::new(geometry, 0, caches, t.capacity(), 0));
        (t, Caches { heaps, geometry })
    }

    /// Connection `c`'s two entries: clients on port 0, backends on 1.
    pub(super) fn rewrites(c: &Connection) -> [DirectionRewrite; 2] {
        let d = |tuple, rewrite_dst, new_addr, new_port, ingress_port, egress_port| {
            DirectionRewrite::new(&FastDirection {
                tuple,
                ingress_port,
                rewrite_dst,
                new_addr,
                new_port,
                eth_dst: [2, 0, 0, 0, 0, 1],
                eth_src: [2, 0, 0, 0, 0, 2],
                egress_port,
                client_mac: c.client_mac,
            })
        };
        [
            d(c.client, true, c.backend_addr, c.backend_port, 0, 1),
            d(
                c.reply_tuple(),
                false,
                c.client.dst,
                c.client.dst_port,
                1,
                0,
            ),
        ]
    }

    impl Caches {
        /// The keys of every live entry, both ports.
        pub(super) fn live_keys(&self) -> Vec<[u8; 40]> {
            let mut keys = Vec::new();
            for heap in &self.heaps {
                for i in 0..self.geometry.entries() {
                    if let Some((STATE_LIVE, bytes)) = read_entry(heap.as_ref(), i) {
                        let mut key = [0u8; 40];
                        key.copy_from_slice(&bytes[..40]);
                        keys.push(key);
                    }
                }
            }
            keys
        }
    }

    /// The keys of `conns`' entries.
    pub(super) fn keys_of<'a>(conns: impl Iterator<Item = &'a Connection>) -> HashSet<[u8; 40]> {
        conns
            .flat_map(|c| rewrites(c).map(|r| r.key.to_bytes()))
            .collect()
    }
}

#[derive(Clone, Debug)]
enum FastOp {
    Table(Op),
    /// A poll's end: the worker syncs its cache.
    Sync,
    /// A new snapshot without backend 198.18.2.`n` (then a sync).
    RemoveBackend(u8),
}

fn fast_op() -> impl Strategy<Value = FastOp> {
    prop_oneof![
        8 => op().prop_map(FastOp::Table),
        3 => Just(FastOp::Sync),
        1 => (1..=2u8).prop_map(FastOp::RemoveBackend),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever happens to the table — closes, removals, expiry, eviction
    /// when it is full, replacements — the cache never holds an entry of a
    /// connection the table has forgotten, nor of one that is closing, and
    /// after a sync none whose backend was taken out; after a sync it holds
    /// every established TCP and UDP connection the table has, unless a
    /// removal took some out.
    #[test]
    fn the_fast_path_cache_never_holds_a_connection_the_table_forgot(
        ops in prop::collection::vec(fast_op(), 1..200)
    ) {
        use with_fast_path::{keys_of, rewrites, table};
        // Four records for up to 36 tuples: the table is often full.
        let (mut t, caches) = table(4);
        let mut now = 0u64;
        let mut generation = 1u64;
        let mut removed: Vec<[u8; 16]> = Vec::new();
        for op in ops {
            let mut synced = false;
            match op {
                FastOp::Table(Op::Insert(p, s)) => {
                    insert(&mut t, p.conn(s, now), now);
                }
                FastOp::Table(Op::Lookup(p)) => {
                    lookup(&mut t, &p.tuple(), now);
                }
                FastOp::Table(Op::Observe(p, flags)) => {
                    if let Some((id, d)) = lookup(&mut t, &p.tuple(), now) {
                        t.observe(id, d, flags, now);
                    }
                }
                FastOp::Table(Op::Remove(p)) => {
                    if let Some((id, _)) = lookup(&mut t, &p.tuple(), now) {
                        t.remove(id);
                    }
                }
                FastOp::Table(Op::Advance(dt)) => now += dt,
                FastOp::Table(Op::Expire(budget)) => {
                    t.expire(now, budget);
                }
                FastOp::Sync => synced = true,
                FastOp::RemoveBackend(n) => {
                    removed.push(v4_mapped([198, 18, 2, n]));
                    generation += 1;
                    synced = true;
                }
            }
            if synced {
                t.sync_fast_path(generation, |c| {
                    (!removed.contains(&c.backend_addr)).then(|| rewrites(c))
                });
            }
            let live = caches.live_keys();
            let allowed = keys_of(t.iter().filter(|c| {
                matches!(c.state, FlowState::TcpEstablished | FlowState::Udp)
                    && (!synced || !removed.contains(&c.backend_addr))
            }));
            for key in &live {
                prop_assert!(allowed.contains(key), "an entry the table does not back: {key:?}");
            }
            let unique: std::collections::HashSet<_> = live.iter().collect();
            prop_assert_eq!(unique.len(), live.len(), "an entry twice");
            if synced && removed.is_empty() {
                let want = keys_of(t.iter().filter(|c| {
                    matches!(c.state, FlowState::TcpEstablished | FlowState::Udp)
                }));
                prop_assert_eq!(unique.len(), want.len(), "after a sync: every connection");
            }
        }
        t.audit();
    }
}

#[test]
fn what_the_fast_path_forwards_counts_for_the_backend_and_the_worker() {
    use crate::fastpath::layout::{offset, ENTRY_WORDS, STATE_LIVE};
    use crate::fastpath::read_entry;
    use std::sync::atomic::Ordering;
    use with_fast_path::{rewrites, table};
    let (mut t, caches) = table(8);
    let c = conn(1, 40_000, 10, 2, FlowState::Udp, 10);
    let endpoint = c.endpoint;
    let id = insert(&mut t, c, 10);
    t.count_packet(endpoint, 100);
    t.sync_fast_path(1, |c| Some(rewrites(c)));
    assert_eq!(t.counters().fast_path().entries, 2);
    // The program forwards 3 packets one way and 2 the other.
    let program_counts = |heap: usize, packets: u64, bytes: u64| {
        let h = &caches.heaps[heap];
        let i = (0..64)
            .find(|&i| matches!(read_entry(h.as_ref(), i), Some((STATE_LIVE, _))))
            .unwrap();
        let words = crate::fastpath::EntryMemory::words(h.as_ref());
        words[i * ENTRY_WORDS + offset::PACKETS / 8].fetch_add(packets, Ordering::Relaxed);
        words[i * ENTRY_WORDS + offset::BYTES / 8].fetch_add(bytes, Ordering::Relaxed);
    };
    program_counts(0, 3, 300);
    program_counts(1, 2, 120);
    t.sync_fast_path(1, |c| Some(rewrites(c)));
    let v = t.counters().endpoint(endpoint);
    assert_eq!((v.packets, v.bytes), (1 + 5, 100 + 420));
    let fast = t.counters().fast_path();
    assert_eq!((fast.packets, fast.bytes), (5, 420));
    // Counted once, however often the worker syncs.
    t.sync_fast_path(1, |c| Some(rewrites(c)));
    assert_eq!(t.counters().endpoint(endpoint).packets, 6);
    // What the program forwarded just before the connection left counts.
    program_counts(0, 4, 400);
    t.remove(id);
    let v = t.counters().endpoint(endpoint);
    assert_eq!((v.packets, v.bytes), (10, 920));
    assert_eq!(t.counters().fast_path().packets, 9);
    t.sync_fast_path(1, |c| Some(rewrites(c)));
    assert_eq!(t.counters().fast_path().entries, 0);
    assert_eq!(t.counters().endpoint(endpoint).packets, 10);
}

#[test]
fn a_handed_over_table_finds_every_connection_with_its_idle_time() {
    let mut old = FlowTable::new(64, TIMEOUTS);
    let states = [
        FlowState::TcpEstablished,
        FlowState::Udp,
        FlowState::TcpClosing,
    ];
    for i in 0..30u8 {
        let state = states[usize::from(i) % states.len()];
        let id = insert(
            &mut old,
            conn(i, 40_000 + u16::from(i), 10, i % 4, state, 50),
            50,
        );
        if state == FlowState::Udp && i % 2 == 0 {
            // The backend answered: no longer embryonic.
            let reply = old.get(id).reply_tuple();
            let (id, direction) = lookup(&mut old, &reply, 60).unwrap();
            old.observe(id, direction, 0, 60);
        }
    }
    // The old worker's clock started at 1 000 (CLOCK_MONOTONIC), the new
    // one's at 1 040: everything keeps its CLOCK_MONOTONIC last-seen time.
    let mut handed = Vec::new();
    old.hand_over(1_000, &mut handed);
    assert_eq!(handed.len(), 30);
    let image = crate::flow::handover::encode(1_070, &handed);
    let state = crate::flow::handover::decode(&image).unwrap();
    let mut new = FlowTable::new(64, TIMEOUTS);
    for c in &state.connections {
        assert!(new.take_over(c, 1_040));
    }
    assert_eq!(new.len(), 30);
    for c in old.iter() {
        for (tuple, direction) in [
            (c.client, Direction::FromClient),
            (c.reply_tuple(), Direction::FromBackend),
        ] {
            let (id, found) = lookup(&mut new, &tuple, 25).unwrap();
            assert_eq!(found, direction);
            let got = new.get(id);
            assert_eq!(got.backend_addr, c.backend_addr);
            assert_eq!((got.state, got.endpoint), (c.state, c.endpoint));
            // Last seen at 1 000 + 60 (or 50): 20 (or 10) on the new clock.
            assert_eq!(got.last_seen_ns + 1_040, c.last_seen_ns + 1_000);
        }
    }
    // A UDP flow its backend never answered is still embryonic: it is the
    // one a full table gives up, not the answered one.
    let mut replied = 0;
    for c in &state.connections {
        replied += usize::from(c.backend_replied);
    }
    assert_eq!(replied, 5);
    new.audit();
}

#[test]
fn a_connection_seen_before_the_new_clock_starts_counts_as_seen_at_its_start() {
    let mut old = FlowTable::new(4, TIMEOUTS);
    insert(&mut old, conn(1, 1, 10, 1, FlowState::TcpEstablished, 5), 5);
    let mut handed = Vec::new();
    old.hand_over(100, &mut handed);
    let mut new = FlowTable::new(4, TIMEOUTS);
    assert!(new.take_over(&handed[0], 1_000));
    assert_eq!(new.iter().next().unwrap().last_seen_ns, 0);
}

#[test]
fn a_burst_of_offers_is_installed_a_bounded_number_per_sync_in_order() {
    use crate::fastpath::{CacheGeometry, EntryMemory, FastPath, HeapEntries};
    use std::sync::Arc;
    use with_fast_path::rewrites;
    // Room for every entry, so that only the budget limits a sync.
    let geometry = CacheGeometry::new(1, 4096);
    let caches = (0..2)
        .map(|_| Some(Arc::new(HeapEntries::new(geometry.entries())) as Arc<dyn EntryMemory>))
        .collect();
    let mut t = FlowTable::new(1024, TIMEOUTS);
    t.reserve_endpoints(3);
    t.set_fast_path(FastPath::new(geometry, 0, caches, t.capacity(), 0));
    // A burst, as a takeover's import offers: more than one sync installs.
    let burst = FAST_INSTALL_BUDGET * 2 + 44;
    for i in 0..burst {
        let c = conn(
            (i / 200) as u8 + 1,
            10_000 + i as u16,
            10,
            2,
            FlowState::Udp,
            10,
        );
        insert(&mut t, c, 10);
    }
    let entries = |t: &FlowTable| t.counters().fast_path().entries;
    t.sync_fast_path(1, |c| Some(rewrites(c)));
    assert_eq!(entries(&t), 2 * FAST_INSTALL_BUDGET as u64);
    // What a sync leaves stays offered, before what is offered since.
    let late = conn(9, 40_000, 10, 2, FlowState::Udp, 10);
    insert(&mut t, late, 10);
    t.sync_fast_path(1, |c| Some(rewrites(c)));
    assert_eq!(entries(&t), 4 * FAST_INSTALL_BUDGET as u64);
    t.sync_fast_path(1, |c| Some(rewrites(c)));
    assert_eq!(entries(&t), 2 * (burst as u64 + 1));
    t.audit();
}

#[test]
fn a_hand_over_after_records_were_freed_and_reused_finds_every_live_one() {
    let mut t = FlowTable::new(64, TIMEOUTS);
    t.reserve_endpoints(3);
    let ids: Vec<ConnId> = (0..20u16)
        .map(|i| insert(&mut t, conn(1, 20_000 + i, 10, 2, FlowState::Udp, 10), 10))
        .collect();
    for id in ids.iter().step_by(3) {
        t.remove(*id);
    }
    for i in 0..5u16 {
        insert(&mut t, conn(2, 30_000 + i, 10, 2, FlowState::Udp, 10), 10);
    }
    let mut handed = Vec::new();
    t.hand_over(0, &mut handed);
    let mut want: Vec<u16> = t.iter().map(|c| c.client.src_port).collect();
    let mut got: Vec<u16> = handed
        .iter()
        .map(|h| h.connection.client.src_port)
        .collect();
    want.sort_unstable();
    got.sort_unstable();
    assert_eq!(got, want);
    assert_eq!(got.len(), 20 - 7 + 5);
}

#[test]
fn the_changes_since_a_copy_carry_a_proxied_connection_once_its_backend_answered() {
    use crate::synproxy::ProxiedConnection;
    let mut t = FlowTable::new(16, TIMEOUTS);
    let plain = insert(&mut t, conn(1, 1, 10, 2, FlowState::TcpEstablished, 5), 5);
    let proxied = insert(&mut t, conn(1, 2, 10, 2, FlowState::TcpEstablished, 5), 5);
    t.reserve_syn_proxy();
    assert!(t.set_syn_proxy(proxied, ProxiedConnection::default()));
    let mut copy = Vec::with_capacity(16);
    let mut cursor = 0;
    assert!(t.hand_over_step(0, 0, &mut cursor, 16, &mut copy));
    // Unanswered: no offsets to hand over yet.
    assert_eq!(copy.len(), 1);
    assert_eq!(copy[0].origin.map(|o| o.record), Some(plain.0));
    let (mut changed, mut freed) = (Vec::new(), Vec::new());
    t.hand_over_changes(0, 0, &copy, &mut changed, &mut freed);
    assert!(
        changed.is_empty() && freed.is_empty(),
        "{changed:?} {freed:?}"
    );
    // The backend answers: the connection and its offsets cross.
    let p = t.syn_proxy_mut(proxied).unwrap();
    p.answered = true;
    p.offset.seq = 77;
    t.hand_over_changes(0, 0, &copy, &mut changed, &mut freed);
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].origin.map(|o| o.record), Some(proxied.0));
    assert_eq!(changed[0].syn_proxy.map(|o| o.seq_delta), Some(77));
    // Taken over into a table holding the copy, then refreshed in place:
    // the same offsets.
    let mut new = FlowTable::new(16, TIMEOUTS);
    let id = new.take_over_at(&copy[0], 0);
    assert!(
        !new.refresh_handed(id, &changed[0], 0),
        "another connection"
    );
    let id = new.take_over_at(&changed[0], 0);
    assert_eq!(new.syn_proxy(id).map(|p| p.offset.seq), Some(77));
    let mut again = changed[0].clone();
    again.syn_proxy = again.syn_proxy.map(|mut o| {
        o.seq_delta = 78;
        o
    });
    assert!(new.refresh_handed(id, &again, 0));
    assert_eq!(new.syn_proxy(id).map(|p| p.offset.seq), Some(78));
    new.audit();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A lookup handed the warm pass's key finds what a lookup that
    /// scans finds, however stale the hint (its key removed, moved to
    /// make room, evicted or replaced since) and whoever's it is: another
    /// key's, or any record in either direction, dead ones and degenerate
    /// connections (whose one key serves both tuples) among them; and
    /// the lane's lookup (`established`) takes a hint only for the key a
    /// scan finds.
    #[test]
    fn a_hinted_lookup_finds_what_a_scan_finds(
        ops in prop::collection::vec((0..5u8, 0..24u16, any::<bool>(), 0..3usize), 1..200)
    ) {
        let states = [FlowState::TcpSyn, FlowState::TcpEstablished, FlowState::TcpClosing];
        let mut t = FlowTable::new(32, TIMEOUTS).with_established_eviction(true);
        // Primaries crowd into 4 buckets (tags vary): buckets fill, keys
        // move to make room and records are evicted.
        let crowd = |h: u64| h & 0xffff_0000_0000_0003;
        // Keys 0..48: a connection's client or reply tuple; 48..72: a
        // degenerate connection's one tuple.
        let degenerate = |port: u16, state: usize, now: u64| {
            let mut c = conn(1, port, 10, 5, states[state], now);
            let me = [198, 18, 3, 1];
            c.client = FiveTuple::v4(me, me, port, port, ip_proto::TCP);
            c.backend_addr = v4_mapped(me);
            c.backend_port = port;
            c
        };
        let key = |i: usize| {
            let port = (i % 48 / 2) as u16;
            let tuple = if i >= 48 {
                degenerate(port, 0, 0).client
            } else {
                let c = conn(1, port, 10, 5, FlowState::TcpEstablished, 0);
                if i % 2 == 1 { c.reply_tuple() } else { c.client }
            };
            (tuple, crowd(table_hash(&tuple)))
        };
        let mut hints = [LookupHint::NONE; 72];
        let mut now = 0;
        for (step, (kind, port, reply, state)) in ops.into_iter().enumerate() {
            let i = usize::from(port) * 2 + usize::from(reply);
            match kind {
                0 | 4 => {
                    let c = if kind == 0 {
                        conn(1, port, 10, 5, states[state], now)
                    } else {
                        degenerate(port, state, now)
                    };
                    let (ch, rh) = (crowd(table_hash(&c.client)), crowd(table_hash(&c.reply_tuple())));
                    t.insert(c, ch, rh, now);
                }
                1 => {
                    let i = if state == 2 { 48 + usize::from(port) } else { i };
                    hints[i] = t.warm_record(key(i).1);
                }
                2 => {
                    let (tuple, hash) = key(if state == 2 { 48 + usize::from(port) } else { i });
                    if let Some((record, _)) = t.find(&tuple, hash) {
                        t.remove(ConnId(record));
                    }
                }
                _ => now += 7,
            }
            for (i, &hint) in hints.iter().enumerate() {
                let (tuple, hash) = key(i);
                let scanned = t.find(&tuple, hash);
                let other = hints[(i + 1) % hints.len()];
                let record = ((i + step) % 33) as u32;
                let forged = [
                    LookupHint::of(record, Direction::FromClient),
                    LookupHint::of(record, Direction::FromBackend),
                ];
                for hint in [hint, other].into_iter().chain(forged) {
                    prop_assert_eq!(t.find_hinted(&tuple, hash, hint), scanned);
                    // The common packet's lane takes only the key a scan finds.
                    for direction in [Direction::FromClient, Direction::FromBackend] {
                        if let Some((id, _)) = t.established(hint, direction, &tuple, now) {
                            prop_assert_eq!(scanned, Some((id.0, direction)));
                        }
                    }
                }
            }
        }
        t.audit();
    }
}
