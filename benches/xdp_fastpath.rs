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
//! Katran's balancer is measured beside it in the same rounds, on the same
//! frames, when `KATRAN_OBJ` names its `balancer.bpf.o` (built outside
//! this repository by scripts/katran-build.sh): one TCP VIP (the same
//! address and port) with one real, its connection table holding the
//! established cases' flows; Katran encapsulates them (IPIP) and sends
//! them back out (XDP_TX). Its `new flow` is scheduled in the kernel: the
//! ring, the real, the connection remembered (forgotten again after each
//! round, so that every round's new flows are new). Without `KATRAN_OBJ`
//! the bench says Katran is skipped and measures flowgate alone.
//!
//! Other builds of flowgate's program can be measured in the same rounds:
//! `XDP_VARIANTS=NAME=OBJECT,...` names objects compiled from
//! bpf/flowgate_xdp.c (with the same maps, e.g. with a `-D` that leaves a
//! step out, as build.rs compiles it otherwise); each gets the first four
//! cases as rows of its own, `case [NAME]`. That is how a step's saving
//! is measured inside one run on a shared machine.
//!
//! Run: `flock /tmp/flowgate-bench.lock env KATRAN_OBJ=PATH cargo bench
//! --bench xdp_fastpath` (`-- ROUNDS` to change the 5 rounds; medians are
//! reported).

#[path = "xdp_fastpath/katran.rs"]
mod katran;

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

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

/// The bench's connections installed in the caches of a pair of programs
/// (client side, backend side); the connections installed.
fn install_plain(
    client_side: &XdpTester,
    backend_side: &XdpTester,
    snapshot: &Snapshot,
    geometry: CacheGeometry,
) -> Vec<usize> {
    let caches = vec![
        Some(client_side.cache() as Arc<dyn EntryMemory>),
        Some(backend_side.cache() as Arc<dyn EntryMemory>),
    ];
    let mut fast = FastPath::new(geometry, 0, caches, 2 * FLOWS, 0);
    let mut installed = Vec::with_capacity(FLOWS);
    for i in 0..FLOWS {
        let entries = connection_rewrites(&connection(i), snapshot).expect("rewrites");
        if fast.install(i as u32, &entries) {
            installed.push(i);
        }
    }
    installed
}

/// Another build of the program (`XDP_VARIANTS`), loaded and filled as
/// the embedded one.
struct Variant {
    name: String,
    client_side: XdpTester,
    _backend_side: XdpTester,
}

/// The builds `XDP_VARIANTS` names (`NAME=OBJECT,...`), each holding the
/// same connections as the embedded build (`installed`).
fn load_variants(
    snapshot: &Snapshot,
    geometry: CacheGeometry,
    installed: &[usize],
) -> Vec<Variant> {
    let Ok(list) = std::env::var("XDP_VARIANTS") else {
        return Vec::new();
    };
    list.split(',')
        .filter(|item| !item.is_empty())
        .map(|item| {
            let (name, path) = item
                .split_once('=')
                .expect("XDP_VARIANTS is NAME=OBJECT,...");
            let object = std::fs::read(path).expect("reading a variant's object");
            let client_side = load_flowgate(snapshot, geometry, 0, Some(&object));
            let backend_side = load_flowgate(snapshot, geometry, 1, Some(&object));
            let theirs = install_plain(&client_side, &backend_side, snapshot, geometry);
            assert_eq!(theirs, installed, "a variant holds other connections");
            Variant {
                name: name.to_string(),
                client_side,
                _backend_side: backend_side,
            }
        })
        .collect()
}

fn rounds_text(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{x:.0}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The table of medians (and each round) per case: flowgate's, and
/// Katran's where it was measured, with Katran's time over flowgate's.
fn print_results(results: Vec<(String, Vec<f64>, Option<Vec<f64>>)>) {
    println!(
        "{:<32} {:>10} {:>10} {:>8}",
        "case", "flowgate", "Katran", "K / f"
    );
    for (name, ours, theirs) in &results {
        let m = median(ours.clone());
        match theirs {
            Some(k) => {
                let km = median(k.clone());
                println!("{name:<32} {m:>10.1} {km:>10.1} {:>8.2}", km / m);
            }
            None => println!("{name:<32} {m:>10.1} {:>10} {:>8}", "-", "-"),
        }
    }
    println!("rounds (ns per packet, the empty program's subtracted):");
    for (name, ours, theirs) in &results {
        println!("  {name}: flowgate {}", rounds_text(ours));
        if let Some(k) = theirs {
            println!("  {name}: Katran   {}", rounds_text(k));
        }
    }
}

/// Katran's balancer from `KATRAN_OBJ`, configured with the bench's VIP,
/// or why it is skipped.
fn load_katran() -> Result<katran::Katran, String> {
    let object = std::env::var_os("KATRAN_OBJ").map(PathBuf::from).ok_or(
        "KATRAN_OBJ is not set (a balancer.bpf.o built by scripts/katran-build.sh)".to_string(),
    )?;
    if !object.is_file() {
        return Err(format!("KATRAN_OBJ={} is no file", object.display()));
    }
    katran::Katran::load(
        &object,
        &katran::KatranSetup {
            vip: [198, 18, 100, 10],
            port: 80,
            real: [198, 18, 1, 11],
            router_mac: [0x02, 0x66, 0x67, 0, 0x01, 0x11],
            // As the fast path's cache: room for the 100 000 established
            // flows and a round's 100 000 new ones.
            lru_entries: 1 << 18,
        },
    )
}

/// Katran's action per case of `main` (the proxied cases are flowgate's
/// alone): the established and new flows encapsulated and sent back out.
const KATRAN_ACTIONS: [Option<u32>; 6] = [
    Some(action::TX),
    Some(action::TX),
    Some(action::TX),
    Some(action::PASS),
    None,
    None,
];

/// Katran counts new connections per CPU and second and stops remembering
/// them past 125 000 in a second (`is_under_flood`): a round's 100 000 new
/// flows start a second after the last ones.
const KATRAN_RATE_QUANTUM: Duration = Duration::from_millis(1_100);

/// flowgate's program (the embedded build, or `object`) for port `port`,
/// its maps filled as the daemon fills them, the fast path on.
fn load_flowgate(
    snapshot: &Snapshot,
    geometry: CacheGeometry,
    port: u32,
    object: Option<&[u8]>,
) -> XdpTester {
    let mut x = match object {
        None => XdpTester::load(geometry),
        Some(object) => XdpTester::load_object(object, geometry),
    }
    .expect("loading the XDP program (needs root)");
    x.own(&OwnedTraffic::from_snapshot(snapshot)).unwrap();
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
}

/// Each case's rounds, flowgate's and (where measured) Katran's, none yet.
fn empty_results<'a>(
    names: impl Iterator<Item = &'a str>,
    with_katran: bool,
) -> Vec<(String, Vec<f64>, Option<Vec<f64>>)> {
    names
        .zip(KATRAN_ACTIONS)
        .map(|(name, k)| {
            let katran = k.filter(|_| with_katran).map(|_| vec![]);
            (name.to_string(), vec![], katran)
        })
        .collect()
}

/// Katran (when `KATRAN_OBJ` is set), its connection table holding the
/// flows of `one` and `many`, or `None` with the reason said.
fn katran_with_flows(one: &[u8], many: &[Vec<u8>]) -> Option<katran::Katran> {
    let k = match load_katran() {
        Ok(k) => k,
        Err(why) => {
            println!("Katran: skipped: {why}");
            return None;
        }
    };
    for f in std::iter::once(one).chain(many.iter().map(Vec::as_slice)) {
        let run = test_run(k.program(), f, 1).expect("BPF_PROG_TEST_RUN");
        assert_eq!(run.action, action::TX, "Katran did not forward");
    }
    assert_eq!(k.remembered(many), many.len());
    std::thread::sleep(KATRAN_RATE_QUANTUM);
    Some(k)
}

/// Katran's ns per frame over `frames`; `new_flows`: they are new
/// connections, started a rate quantum after the last ones, each checked
/// remembered (none skipped as a flood) and forgotten again afterwards.
fn katran_per_frame(k: &katran::Katran, frames: &[Vec<u8>], expect: u32, new_flows: bool) -> f64 {
    if new_flows {
        std::thread::sleep(KATRAN_RATE_QUANTUM);
    }
    let ns = per_frame(k.program(), frames, expect);
    if new_flows {
        assert_eq!(k.forget(frames), frames.len(), "Katran forgot new flows");
    }
    ns
}

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5);
    let config = rules::load_str(RULES, "bench.toml").expect("rules");
    let snapshot = Snapshot::build(&config, None);
    let geometry = CacheGeometry::new(1, 1 << 18);
    let load = |port: u32| load_flowgate(&snapshot, geometry, port, None);
    let client_side = load(0);
    let backend_side = load(1);
    let installed = install_plain(&client_side, &backend_side, &snapshot, geometry);
    let variants = load_variants(&snapshot, geometry, &installed);
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

    let katran = katran_with_flows(&one[0], &many);

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
    let mut results = empty_results(cases.iter().map(|c| c.0), katran.is_some());
    let variant_fds: Vec<_> = variants
        .iter()
        .map(|v| v.client_side.program_fd().expect("the program's fd"))
        .collect();
    for v in &variants {
        for (name, ..) in &cases[..4] {
            results.push((format!("{name} [{}]", v.name), vec![], None));
        }
    }
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
            if let (Some(k), Some(expect), Some(v)) =
                (&katran, KATRAN_ACTIONS[i], results[i].2.as_mut())
            {
                let new_flows = frames.as_ptr() == misses.as_ptr();
                v.push(katran_per_frame(k, frames, expect, new_flows) - base);
            }
            if i < 4 {
                for (j, fd) in variant_fds.iter().enumerate() {
                    let ns = per_frame(fd.as_fd(), frames, *expect);
                    results[cases.len() + 4 * j + i].1.push(ns - base);
                }
            }
        }
    }
    let lost = katran
        .as_ref()
        .map_or(0, |k| many.len() - k.remembered(&many));
    assert_eq!(lost, 0, "Katran lost flows");
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
