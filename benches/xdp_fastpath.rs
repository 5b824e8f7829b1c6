//! The XDP program's cost per packet, measured through BPF_PROG_TEST_RUN
//! the way Katran's tester does: `repeat = 1`, one call per frame, in a
//! loop over distinct frames, the kernel's own duration of each run summed;
//! the empty XDP program (`return XDP_PASS`) measured the same way in the
//! same run and subtracted. Needs root (loading BPF programs).
//!
//! Cases (docs/benchmarks.md):
//! - `established, one flow`: a client's data segment of an installed
//!   connection, rewritten and redirected by the fast path;
//! - `established, 100 000 flows`: the same, round robin over 100 000
//!   installed connections (one frame each);
//! - `new flow (miss, handed up)`: data segments of 100 000 connections the
//!   cache does not hold (the cache holding the 100 000 others): looked up,
//!   missed, redirected to the worker's socket (dropped for want of one in
//!   a test run: the same code up to the redirect);
//! - `no VIP`: TCP to an address that is no VIP, passed to the kernel;
//! - `proxied, 100 000 flows`: as `established, 100 000 flows`, for
//!   SYN-proxied connections (in caches of their own): the acknowledgement
//!   number translated too, without TCP options and with NOP NOP
//!   timestamps (TSecr translated as well).
//!
//! Run: `flock /tmp/flowgate-bench.lock cargo bench --bench xdp_fastpath`
//! (`-- ROUNDS` to change the 5 rounds; medians are reported).

use std::os::fd::AsFd;
use std::sync::Arc;

use flowgate_dataplane::fastpath::{
    connection_rewrites, synproxy_rewrites, CacheGeometry, EntryMemory, FastConfig, FastPath,
};
use flowgate_dataplane::flow::{Connection, FlowState};
use flowgate_dataplane::rules;
use flowgate_dataplane::synproxy::SeqOffset;
use flowgate_dataplane::table::Snapshot;
use flowgate_dataplane::wire::builder::FrameBuilder;
use flowgate_dataplane::wire::{tcp_flags, v4_mapped, FiveTuple};
use flowgate_dataplane::xdp::test_run::{action, load_empty_program, test_run};
use flowgate_dataplane::xdp::{OwnedTraffic, XdpTester};

const RULES: &str = r#"
[[interfaces]]
name = "fg-client"
mac = "02:66:67:00:00:01"

[[interfaces]]
name = "fg-backend"
mac = "02:66:67:00:01:01"

[[neighbours]]
address = "198.18.1.11"
mac = "02:66:67:00:01:11"
interface = "fg-backend"

[[services]]
name = "web"
protocol = "tcp"
vip = "198.18.100.10"
port = 80
[[services.backends]]
address = "198.18.1.11"
port = 8080
"#;

const FLOWS: usize = 100_000;
const CLIENT_MAC: [u8; 6] = [0x02, 0x66, 0x67, 0, 0, 0x02];
const GW_CLIENT_MAC: [u8; 6] = [0x02, 0x66, 0x67, 0, 0, 0x01];

/// Client `i`'s address and port: 198.18.(i / 250 / 256).(...)
fn client(i: usize) -> ([u8; 4], u16) {
    let host = i / 50_000;
    let port = 10_000 + (i % 50_000) as u16;
    ([198, 18, 10 + (host / 256) as u8, (host % 256) as u8], port)
}

fn data_frame(i: usize, dst: [u8; 4]) -> Vec<u8> {
    data_frame_with(i, dst, &[])
}

fn data_frame_with(i: usize, dst: [u8; 4], options: &[u8]) -> Vec<u8> {
    let (addr, port) = client(i);
    FrameBuilder::tcp(
        std::net::SocketAddr::from((addr, port)),
        std::net::SocketAddr::from((dst, 80)),
        tcp_flags::ACK,
    )
    .macs(CLIENT_MAC, GW_CLIENT_MAC)
    .ttl(64)
    .tcp_options(options)
    .payload(&[0x61; 18])
    .build()
}

/// NOP NOP TIMESTAMP, as Linux sends it on every segment.
const TIMESTAMPS: [u8; 12] = [1, 1, 8, 10, 0, 0, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc];

fn connection(i: usize) -> Connection {
    let (addr, port) = client(i);
    Connection {
        client: FiveTuple::v4(addr, [198, 18, 100, 10], port, 80, 6),
        backend_addr: v4_mapped([198, 18, 1, 11]),
        backend_port: 8080,
        endpoint: 0,
        client_mac: CLIENT_MAC,
        client_ingress: 0,
        state: FlowState::TcpEstablished,
        last_seen_ns: 0,
    }
}

/// Sum of the kernel's durations of one run per frame, in ns per frame.
fn per_frame(program: std::os::fd::BorrowedFd<'_>, frames: &[Vec<u8>], expect: u32) -> f64 {
    let mut total = 0u64;
    for f in frames {
        let run = test_run(program, f, 1).expect("BPF_PROG_TEST_RUN");
        assert_eq!(run.action, expect, "unexpected action");
        total += u64::from(run.duration_ns);
    }
    total as f64 / frames.len() as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The bench's connections SYN-proxied (a sequence and timestamp offset),
/// installed in the caches of a pair of programs `load` makes (client
/// side, backend side); the connections installed.
fn install_proxied(
    load: &dyn Fn(u32) -> XdpTester,
    snapshot: &Snapshot,
    geometry: CacheGeometry,
) -> (XdpTester, XdpTester, Vec<usize>) {
    let client_side = load(0);
    let backend_side = load(1);
    let caches = vec![
        Some(client_side.cache() as Arc<dyn EntryMemory>),
        Some(backend_side.cache() as Arc<dyn EntryMemory>),
    ];
    let mut fast = FastPath::new(geometry, 0, caches, 2 * FLOWS, 0);
    let offset = SeqOffset::new(0x8000_0000, 0x1234_5678, 5_000, 9_000).with_window_scales(7, 7);
    let mut installed = Vec::with_capacity(FLOWS);
    for i in 0..FLOWS {
        let entries = connection_rewrites(&connection(i), snapshot).expect("rewrites");
        if fast.install(i as u32, &synproxy_rewrites(entries, &offset)) {
            installed.push(i);
        }
    }
    (client_side, backend_side, installed)
}

/// The table of medians (and each round) per case.
fn print_results(results: Vec<(String, Vec<f64>)>) {
    println!("{:<32} {:>10}", "case", "ns/packet");
    for (name, v) in results {
        println!(
            "{name:<32} {:>10.1}   (rounds: {})",
            median(v.clone()),
            v.iter()
                .map(|x| format!("{x:.0}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
}

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5);
    let config = rules::load_str(RULES, "bench.toml").expect("rules");
    let snapshot = Snapshot::build(&config, None);
    let geometry = CacheGeometry::new(1, 1 << 18);
    let load = |port: u32| {
        let mut x = XdpTester::load(geometry).expect("loading the XDP program (needs root)");
        x.own(&OwnedTraffic::from_snapshot(&snapshot)).unwrap();
        // The ingress checks compare with the interface's MAC, as the
        // daemon programs it.
        let mac = snapshot.interface_mac(port as u16).unwrap();
        x.set_ingress_mac(mac).unwrap();
        x.set_tx_port(0, 1).unwrap();
        x.set_tx_port(1, 1).unwrap();
        x.set_fast_config(FastConfig {
            partitions: 1,
            slot_mask: geometry.slots - 1,
            port_index: port,
            egress_ready: u64::MAX,
        })
        .unwrap();
        x
    };
    let client_side = load(0);
    let backend_side = load(1);
    let caches = vec![
        Some(client_side.cache() as Arc<dyn EntryMemory>),
        Some(backend_side.cache() as Arc<dyn EntryMemory>),
    ];
    let mut fast = FastPath::new(geometry, 0, caches, 2 * FLOWS, 0);
    let mut installed = Vec::with_capacity(FLOWS);
    for i in 0..FLOWS {
        let entries = connection_rewrites(&connection(i), &snapshot).expect("rewrites");
        if fast.install(i as u32, &entries) {
            installed.push(i);
        }
    }
    // The same connections SYN-proxied, in a pair of programs of their own.
    let (proxied_client, _proxied_backend, proxied) = install_proxied(&load, &snapshot, geometry);
    println!(
        "installed {} of {FLOWS} connections in {} slots per cache ({} refused: no free slot within 8 probes)",
        installed.len(),
        geometry.slots,
        FLOWS - installed.len()
    );
    let vip = [198, 18, 100, 10];
    let one: Vec<Vec<u8>> = (0..FLOWS).map(|_| data_frame(0, vip)).collect();
    let many: Vec<Vec<u8>> = installed.iter().map(|&i| data_frame(i, vip)).collect();
    let misses: Vec<Vec<u8>> = (FLOWS..2 * FLOWS).map(|i| data_frame(i, vip)).collect();
    let no_vip: Vec<Vec<u8>> = (0..FLOWS)
        .map(|i| data_frame(i, [198, 18, 200, 1]))
        .collect();

    let proxied_plain: Vec<Vec<u8>> = proxied.iter().map(|&i| data_frame(i, vip)).collect();
    let proxied_ts: Vec<Vec<u8>> = proxied
        .iter()
        .map(|&i| data_frame_with(i, vip, &TIMESTAMPS))
        .collect();

    let empty = load_empty_program().expect("loading the empty program");
    let program = client_side.program_fd().expect("the program's fd");
    let proxied_program = proxied_client.program_fd().expect("the program's fd");
    let (p, r, d) = (action::PASS, action::REDIRECT, action::DROP);
    let cases: [(&str, &[Vec<u8>], u32, bool); 6] = [
        ("established, one flow", &one, r, false),
        ("established, 100 000 flows", &many, r, false),
        ("new flow (miss, handed up)", &misses, d, false),
        ("no VIP", &no_vip, p, false),
        ("proxied, 100 000 flows", &proxied_plain, r, true),
        ("proxied, 100 000 flows, TS", &proxied_ts, r, true),
    ];
    let mut results: Vec<(String, Vec<f64>)> =
        cases.iter().map(|c| (c.0.to_string(), vec![])).collect();
    let mut baseline = Vec::new();
    for _ in 0..rounds {
        let base = per_frame(empty.as_fd(), &many, action::PASS);
        baseline.push(base);
        for (i, (_, frames, expect, is_proxied)) in cases.iter().enumerate() {
            let fd = if *is_proxied {
                proxied_program.as_fd()
            } else {
                program.as_fd()
            };
            let ns = per_frame(fd, frames, *expect);
            results[i].1.push(ns - base);
        }
    }
    let counters = client_side.counters();
    assert!(counters.fast_redirect as usize >= (FLOWS + many.len()) * rounds);
    // Every proxied frame was translated by the fast path, none handed up.
    let counters = proxied_client.counters();
    assert_eq!(
        counters.fast_redirect as usize,
        (proxied_plain.len() + proxied_ts.len()) * rounds
    );
    assert_eq!(counters.fast_up.syn_proxy, 0);
    println!("installed {} of {FLOWS} proxied connections", proxied.len());
    println!(
        "empty XDP program: {:.1} ns per run (median of {rounds}); subtracted below",
        median(baseline)
    );
    print_results(results);
}
