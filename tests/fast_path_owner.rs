//! The kernel fast path looks a connection up in the partition of the
//! worker that owns it, by the same owner hash as the workers', whose seed
//! each process draws at random (`fastpath::owner_seed`): every entry
//! installed by its owner is found. (A worker refuses to install a
//! connection it does not own; were the program's owner hash another, a
//! random half of the 64 connections would be looked for in the wrong
//! partition and missed.) Through BPF_PROG_TEST_RUN on the real program;
//! needs root.

mod common;

use std::os::fd::AsFd;
use std::sync::Arc;

use flowgate_dataplane::fastpath::{
    connection_rewrites, owner, CacheGeometry, EntryMemory, FastConfig, FastPath,
};
use flowgate_dataplane::flow::{Connection, FlowState};
use flowgate_dataplane::rules;
use flowgate_dataplane::table::Snapshot;
use flowgate_dataplane::wire::builder::FrameBuilder;
use flowgate_dataplane::wire::{tcp_flags, v4_mapped, FiveTuple};
use flowgate_dataplane::xdp::test_run::{action, test_run};
use flowgate_dataplane::xdp::{OwnedTraffic, XdpTester};

use common::{CLIENT_MAC, GOLDEN_RULES, GW_CLIENT_MAC};

const VIP: [u8; 4] = [198, 18, 100, 10];

const CLIENTS: usize = 64;
const PARTITIONS: u32 = 2;

fn client(i: usize) -> ([u8; 4], u16) {
    ([198, 18, 10, i as u8], 20_000 + i as u16)
}

/// Client `i`'s connection to `web` (the golden rules' TCP service on
/// 198.18.100.10:80), on its one backend, endpoint `endpoint`.
fn connection(i: usize, endpoint: u32) -> Connection {
    let (addr, port) = client(i);
    Connection {
        client: FiveTuple::v4(addr, VIP, port, 80, 6),
        backend_addr: v4_mapped([198, 18, 1, 11]),
        backend_port: 8080,
        endpoint,
        client_mac: CLIENT_MAC,
        client_ingress: 0,
        state: FlowState::TcpEstablished,
        last_seen_ns: 0,
    }
}

fn data_frame(i: usize) -> Vec<u8> {
    let (addr, port) = client(i);
    FrameBuilder::tcp(
        std::net::SocketAddr::from((addr, port)),
        std::net::SocketAddr::from((VIP, 80)),
        tcp_flags::ACK,
    )
    .macs(CLIENT_MAC, GW_CLIENT_MAC)
    .ttl(64)
    .payload(&[0x61; 18])
    .build()
}

/// The client side's and the backend side's program instances, with a
/// cache of two partitions each.
fn programs(snapshot: &Snapshot, geometry: CacheGeometry) -> [XdpTester; 2] {
    [0u32, 1].map(|port| {
        let mut x = XdpTester::load(geometry).expect("loading the XDP program (needs root)");
        x.own(&OwnedTraffic::from_snapshot(snapshot)).unwrap();
        x.set_ingress_mac(snapshot.interface_mac(port as u16).unwrap())
            .unwrap();
        x.set_tx_port(0, 1).unwrap();
        x.set_tx_port(1, 1).unwrap();
        x.set_fast_config(FastConfig {
            partitions: PARTITIONS,
            slot_mask: geometry.slots - 1,
            port_index: port,
            egress_ready: u64::MAX,
        })
        .unwrap();
        x
    })
}

/// Each partition's writer over both programs' caches.
fn writers(programs: &[XdpTester; 2], geometry: CacheGeometry) -> Vec<FastPath> {
    (0..PARTITIONS)
        .map(|me| {
            let caches = programs
                .iter()
                .map(|x| Some(x.cache() as Arc<dyn EntryMemory>))
                .collect();
            FastPath::new(geometry, me, caches, CLIENTS, 0)
        })
        .collect()
}

/// Whether the client side's program forwarded client `i`'s data
/// segment itself (redirected to the backend's port) rather than handing
/// it up (dropped for want of a socket in a test run).
fn forwarded(programs: &[XdpTester; 2], i: usize) -> bool {
    let fd = programs[0].program_fd().unwrap();
    let run = test_run(fd.as_fd(), &data_frame(i), 1).expect("BPF_PROG_TEST_RUN");
    match run.action {
        a if a == action::REDIRECT => true,
        a if a == action::DROP => false,
        other => panic!("client {i}: action {other}"),
    }
}

#[test]
fn the_program_finds_every_connection_in_the_partition_of_its_owner() {
    let config = rules::load_str(GOLDEN_RULES, "golden.toml").expect("rules");
    let snapshot = Snapshot::build(&config, None);
    let (_, web) = snapshot
        .lookup_service(6, &v4_mapped(VIP), 80)
        .expect("the web service");
    let endpoint = web.endpoints()[0];
    let geometry = CacheGeometry::new(PARTITIONS, 256);
    let owners: Vec<u32> = (0..CLIENTS)
        .map(|i| {
            let (addr, port) = client(i);
            owner(&v4_mapped(addr), port, PARTITIONS)
        })
        .collect();
    // Both partitions own some of the clients (all in one: 2^-63).
    assert!(owners.contains(&0) && owners.contains(&1), "{owners:?}");

    // Installed by the worker that owns it (only the owner may), and
    // found, every one.
    let programs_ = programs(&snapshot, geometry);
    let mut by_owner = writers(&programs_, geometry);
    for (i, &o) in owners.iter().enumerate() {
        let entries = connection_rewrites(&connection(i, endpoint), &snapshot).expect("rewrites");
        assert!(by_owner[o as usize].install(i as u32, &entries));
        assert!(!by_owner[1 - o as usize].install(i as u32, &entries));
    }
    for (i, o) in owners.iter().enumerate() {
        assert!(forwarded(&programs_, i), "client {i}, owner {o}");
    }
}
