//! What the data path does when backends go down, expire and come back,
//! over the in-memory port with injected time: new flows leave a dead
//! backend from the next poll, its connections get their service's policy,
//! the tables are rebuilt over the rest, and two gateways agree.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use flowgate_dataplane::flow::{FlowTable, FlowTimeouts};
use flowgate_dataplane::pipeline::{CounterValues, DropReason, Verdict};
use flowgate_dataplane::port::{MemoryFrames, MemoryPort};
use flowgate_dataplane::rules::Config;
use flowgate_dataplane::table::{EndpointId, Mode, Snapshot};
use flowgate_dataplane::wire::builder::FrameBuilder;
use flowgate_dataplane::wire::{self, tcp_flags, TcpSegment};
use flowgate_dataplane::worker::{CountingKernelPath, Worker};

const SEC: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;
const SYN: u8 = tcp_flags::SYN;
const ACK: u8 = tcp_flags::ACK;

/// One service `svc` at 198.18.100.10:80 over backends 198.18.1.x:8080
/// (weight 1 each), with `keys` added to its `[[services]]` table.
fn rules(scheduler: &str, proto: &str, backends: &[&str], keys: &str) -> String {
    let mut s = String::from(
        "[[interfaces]]\nname = \"fg-client\"\nmac = \"02:66:67:00:00:01\"\n\
         [[interfaces]]\nname = \"fg-backend\"\nmac = \"02:66:67:00:01:01\"\n",
    );
    for (i, addr) in backends.iter().enumerate() {
        s += &format!(
            "[[neighbours]]\naddress = \"{addr}\"\nmac = \"02:66:67:00:01:{:02x}\"\ninterface = \"fg-backend\"\n",
            0x11 + i
        );
    }
    s += &format!(
        "[[services]]\nname = \"svc\"\nprotocol = \"{proto}\"\nvip = \"198.18.100.10\"\nport = 80\n\
         scheduler = \"{scheduler}\"\nmaglev_table_size = 1009\n{keys}\n"
    );
    for addr in backends {
        s += &format!("[[services.backends]]\naddress = \"{addr}\"\nport = 8080\n");
    }
    s
}

const FOUR: [&str; 4] = ["198.18.1.11", "198.18.1.12", "198.18.1.13", "198.18.1.14"];

/// Client `i`'s TCP SYN from an address of its own (198.18.2.0 + i).
fn client_address(i: u32) -> Vec<u8> {
    let src = SocketAddr::new(IpAddr::from([198, 18, 2 + (i >> 8) as u8, i as u8]), 40000);
    from_client(FrameBuilder::tcp(src, sa("198.18.100.10:80"), SYN)).build()
}

/// Client `i`'s packet to the VIP (a distinct source address and port per
/// `i`).
fn client(i: u32, proto: &str, flags: u8) -> Vec<u8> {
    let src = SocketAddr::new(
        IpAddr::from([198, 18, 2 + (i >> 16) as u8, (i >> 8) as u8]),
        1024 + (i & 0xff) as u16 * 200,
    );
    let vip = sa("198.18.100.10:80");
    let b = match proto {
        "udp" => FrameBuilder::udp(src, vip),
        _ => FrameBuilder::tcp(src, vip, flags),
    };
    from_client(b).build()
}

fn destination(frame: &[u8]) -> IpAddr {
    wire::parse(frame).unwrap().tuple.dst_ip()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The endpoint id of `svc`'s backend at `addr`.
fn endpoint(snapshot: &Snapshot, addr: &str) -> EndpointId {
    let want = wire::addr_to_bytes(ip(addr));
    let (_, svc) = snapshot.services().next().unwrap();
    *svc.endpoints()
        .iter()
        .find(|&&e| snapshot.endpoint(e).unwrap().address == want)
        .unwrap()
}

/// The same rules compiled again: what the control side does after a
/// transition.
fn rebuild(h: &mut Harness, text: &str) {
    h.snapshot = Snapshot::build(&config(text), Some(&h.snapshot));
}

/// Flows `0..n` opened by a SYN each; where each went.
fn open(h: &mut Harness, n: u32, proto: &str, now: u64) -> Vec<IpAddr> {
    (0..n)
        .map(|i| {
            let (v, out) = h.run(&client(i, proto, SYN), 0, now);
            assert_eq!(v, Verdict::Transmit(1), "flow {i}");
            destination(&out)
        })
        .collect()
}

fn counters(h: &Harness) -> CounterValues {
    h.pipeline.counters().snapshot()
}

/// A gateway: one worker over two in-memory ports, polled with injected
/// time.
struct Gateway {
    snapshot: Arc<Snapshot>,
    memory: MemoryFrames,
    ports: Vec<MemoryPort>,
    worker: Worker,
    kernel: CountingKernelPath,
}

impl Gateway {
    fn new(snapshot: Arc<Snapshot>, config: &Config) -> Gateway {
        let mut memory = MemoryFrames::new(1024, 2048);
        let pool = memory.pool();
        let mut g = Gateway {
            snapshot,
            memory,
            ports: vec![
                MemoryPort::new("fg-client", 256),
                MemoryPort::new("fg-backend", 256),
            ],
            worker: Worker::new(
                FlowTable::new(65_536, FlowTimeouts::from(&config.flows)),
                pool,
                2,
                64,
            ),
            kernel: CountingKernelPath::default(),
        };
        g.poll(&[], 0); // fills the receive rings
        g
    }

    /// Puts `frames` (at most 64) on the client port, polls once at
    /// `now`, and returns what left on the backend port.
    fn poll(&mut self, frames: &[Vec<u8>], now: u64) -> Vec<Vec<u8>> {
        for f in frames {
            assert!(self.ports[0].inject(&mut self.memory, f));
        }
        self.worker.poll(
            &mut self.ports,
            &mut self.memory,
            &self.snapshot,
            &mut self.kernel,
            now,
        );
        let mut out = Vec::new();
        self.ports[1].take_transmitted(&self.memory, &mut out);
        out
    }
}

#[test]
fn a_down_backend_gets_no_new_flow_from_the_next_poll_and_keeps_its_connections() {
    let text = rules("maglev", "tcp", &FOUR, "");
    let cfg = config(&text);
    let mut g = Gateway::new(Arc::new(Snapshot::build(&cfg, None)), &cfg);
    // 64 connections spread over the four backends.
    let syns: Vec<Vec<u8>> = (0..64).map(|i| client(i, "tcp", SYN)).collect();
    let first: Vec<IpAddr> = g.poll(&syns, SEC).iter().map(|f| destination(f)).collect();
    assert_eq!(first.len(), 64);
    let dead = ip("198.18.1.12");
    let on_dead: Vec<u32> = (0..64).filter(|&i| first[i as usize] == dead).collect();
    assert!(on_dead.len() > 5, "{on_dead:?}");

    // The control side marks .12 down and does nothing else (no rebuild).
    let id = endpoint(&g.snapshot, "198.18.1.12");
    g.snapshot.liveness().set_up(id, false).unwrap();

    // The next poll: no new flow reaches it...
    let fresh: Vec<Vec<u8>> = (1000..1064).map(|i| client(i, "tcp", SYN)).collect();
    let out = g.poll(&fresh, SEC + MS);
    assert_eq!(out.len(), 64, "every new flow placed");
    assert!(out.iter().all(|f| destination(f) != dead));
    let skipped = g.worker.pipeline().counters().snapshot().liveness_skips;
    assert!(
        skipped > 5,
        "the flows that would have gone to it: {skipped}"
    );
    // ...and its established connections continue (on_backend_down = keep).
    let acks: Vec<Vec<u8>> = on_dead.iter().map(|&i| client(i, "tcp", ACK)).collect();
    let out = g.poll(&acks, SEC + 2 * MS);
    assert_eq!(out.len(), on_dead.len());
    assert!(out.iter().all(|f| destination(f) == dead));

    // The rebuild takes it out of the table: new flows no longer need the
    // skip rule, and established ones still stay.
    g.snapshot = Arc::new(Snapshot::build(&cfg, Some(&g.snapshot)));
    let (_, svc) = g.snapshot.services().next().unwrap();
    assert!(svc.maglev_table().slots().iter().all(|&e| e != id));
    let fresh: Vec<Vec<u8>> = (2000..2064).map(|i| client(i, "tcp", SYN)).collect();
    let out = g.poll(&fresh, SEC + 3 * MS);
    assert!(out.iter().all(|f| destination(f) != dead));
    let c = g.worker.pipeline().counters().snapshot();
    assert_eq!(c.liveness_skips, skipped, "no more skips after the rebuild");
    let out = g.poll(&acks, SEC + 4 * MS);
    assert!(out.iter().all(|f| destination(f) == dead));
}

#[test]
fn readmission_brings_back_exactly_the_flows_maglev_gave_the_backend() {
    let text = rules("maglev", "tcp", &FOUR, "");
    let mut h = Harness::new(&text);
    let n = 2_000;
    let first = open(&mut h, n, "tcp", SEC);
    let id = endpoint(&h.snapshot, "198.18.1.13");
    h.snapshot.liveness().set_up(id, false).unwrap();
    rebuild(&mut h, &text);
    // New connections (fresh source ports) while it is down.
    let down: Vec<IpAddr> = (0..n)
        .map(|i| destination(&h.run(&client(i + n, "tcp", SYN), 0, 2 * SEC).1))
        .collect();
    assert!(!down.contains(&ip("198.18.1.13")));
    // Back up: readmitted from the next rebuild, with the table it had.
    h.snapshot.liveness().set_up(id, true).unwrap();
    rebuild(&mut h, &text);
    let mut h2 = Harness::new(&text);
    let again = open(&mut h2, n, "tcp", SEC);
    assert_eq!(again, first, "a fresh gateway agrees");
    for i in 0..n {
        let (_, out) = h.run(&client(i + 2 * n, "tcp", SYN), 0, 3 * SEC);
        let (_, same) = h2.run(&client(i + 2 * n, "tcp", SYN), 0, 3 * SEC);
        assert_eq!(destination(&out), destination(&same), "flow {i}");
    }
}

#[test]
fn drop_forgets_a_dead_backends_connections_from_the_rebuild_on() {
    let text = rules("maglev", "tcp", &FOUR, "on_backend_down = \"drop\"");
    let mut h = Harness::new(&text);
    let first = open(&mut h, 200, "tcp", SEC);
    let dead = ip("198.18.1.11");
    let i = first.iter().position(|&d| d == dead).unwrap() as u32;
    let id = endpoint(&h.snapshot, "198.18.1.11");
    h.snapshot.liveness().set_up(id, false).unwrap();
    // Until the rebuild that follows the transition, the connection goes on.
    let (v, out) = h.run(&client(i, "tcp", ACK), 0, 2 * SEC);
    assert_eq!((v, destination(&out)), (Verdict::Transmit(1), dead));
    rebuild(&mut h, &text);
    let (v, _) = h.run(&client(i, "tcp", ACK), 0, 3 * SEC);
    assert_eq!(v, Verdict::Drop(DropReason::BackendDown));
    assert_eq!(counters(&h).drops.get("backend_down"), Some(&1));
    // The record is gone: the client's next SYN is scheduled afresh.
    let (v, out) = h.run(&client(i, "tcp", SYN), 0, 4 * SEC);
    assert_eq!(v, Verdict::Transmit(1));
    assert_ne!(destination(&out), dead);
    // Connections of live backends are untouched.
    for (j, &d) in first.iter().enumerate().filter(|&(_, &d)| d != dead) {
        let (v, out) = h.run(&client(j as u32, "tcp", ACK), 0, 5 * SEC);
        assert_eq!((v, destination(&out)), (Verdict::Transmit(1), d));
    }
    // Back up before any rebuild: its flagged connections are forwarded.
    let k = first.iter().rposition(|&d| d == dead).unwrap() as u32;
    assert_ne!(k, i);
    h.snapshot.liveness().set_up(id, true).unwrap();
    let (v, out) = h.run(&client(k, "tcp", ACK), 0, 6 * SEC);
    assert_eq!((v, destination(&out)), (Verdict::Transmit(1), dead));
}

#[test]
fn reset_answers_the_clients_next_segment_with_a_rst_from_the_vip() {
    let text = rules("maglev", "tcp", &FOUR, "on_backend_down = \"reset\"");
    let mut h = Harness::new(&text);
    let first = open(&mut h, 200, "tcp", SEC);
    let dead = ip("198.18.1.14");
    let i = first.iter().position(|&d| d == dead).unwrap() as u32;
    let id = endpoint(&h.snapshot, "198.18.1.14");
    h.snapshot.liveness().set_up(id, false).unwrap();
    rebuild(&mut h, &text);

    let segment = from_client(FrameBuilder::tcp(
        SocketAddr::new(
            IpAddr::from([198, 18, 2, 0]),
            1024 + (i & 0xff) as u16 * 200,
        ),
        sa("198.18.100.10:80"),
        ACK | tcp_flags::PSH,
    ))
    .tcp_seq(1000)
    .payload(b"GET / HTTP/1.1\r\n\r\n")
    .build();
    let (v, rst) = h.run(&segment, 0, 2 * SEC);
    assert_eq!(v, Verdict::Transmit(0), "back out of the client's port");
    assert_eq!(rst.len(), 54);
    assert!(wire::frame_checksums_ok(&rst));
    let meta = wire::parse(&rst).unwrap();
    assert_eq!(meta.tuple.src_ip(), ip("198.18.100.10"));
    assert_eq!(meta.tuple.src_port, 80);
    assert_eq!(meta.tuple.dst_ip(), ip("198.18.2.0"));
    assert_eq!(
        (&rst[0..6], &rst[6..12]),
        (&CLIENT_MAC[..], &GW_CLIENT_MAC[..])
    );
    let tcp = TcpSegment::new_checked(&rst[usize::from(meta.l4_offset)..]).unwrap();
    // RFC 793 for a segment with ACK: <SEQ=SEG.ACK><CTL=RST> (the
    // builder's segments acknowledge 0).
    assert_eq!(tcp.flags(), tcp_flags::RST);
    assert_eq!((tcp.seq_number(), tcp.ack_number()), (0, 0));
    let c = counters(&h);
    assert_eq!((c.dead_backend_resets, c.forwarded), (1, 201));
    // The record is gone: the client's retransmission is a new flow,
    // picked up by an alive backend.
    let (v, out) = h.run(&segment, 0, 3 * SEC);
    assert_eq!(v, Verdict::Transmit(1));
    assert_ne!(destination(&out), dead);
    // A RST from the client is not answered: dropped, and forgotten.
    let j = first.iter().rposition(|&d| d == dead).unwrap() as u32;
    let (v, _) = h.run(&client(j, "tcp", tcp_flags::RST), 0, 4 * SEC);
    assert_eq!(v, Verdict::Drop(DropReason::BackendDown));
}

#[test]
fn a_dead_backends_udp_flows_are_rescheduled() {
    let text = rules("maglev", "udp", &FOUR, "");
    let mut h = Harness::new(&text);
    let first = open(&mut h, 400, "udp", SEC);
    let dead = ip("198.18.1.13");
    let on_dead: Vec<u32> = (0..400).filter(|&i| first[i as usize] == dead).collect();
    let id = endpoint(&h.snapshot, "198.18.1.13");
    h.snapshot.liveness().set_up(id, false).unwrap();
    rebuild(&mut h, &text);
    for (i, &d) in first.iter().enumerate() {
        let (v, out) = h.run(&client(i as u32, "udp", 0), 0, 2 * SEC);
        assert_eq!(v, Verdict::Transmit(1));
        if d == dead {
            assert_ne!(
                destination(&out),
                dead,
                "flow {i} still on the dead backend"
            );
        } else {
            assert_eq!(destination(&out), d, "flow {i} of a live backend moved");
        }
    }
    let c = counters(&h);
    assert_eq!(c.dead_backend_rescheduled, on_dead.len() as u64);
    // Rescheduled once: the flows' next datagrams stay where they went.
    let again: Vec<IpAddr> = on_dead
        .iter()
        .map(|&i| destination(&h.run(&client(i, "udp", 0), 0, 3 * SEC).1))
        .collect();
    assert_eq!(counters(&h).dead_backend_rescheduled, on_dead.len() as u64);
    assert!(again.iter().all(|&d| d != dead));
}

#[test]
fn a_backend_expires_at_its_deadline_with_no_control_action() {
    // TTL-registered .12: its deadline passes; nothing is rebuilt.
    for proto in ["tcp", "udp"] {
        let keys = if proto == "tcp" {
            "on_backend_down = \"drop\""
        } else {
            ""
        };
        let text = rules("maglev", proto, &FOUR, keys);
        let mut h = Harness::new(&text);
        let id = endpoint(&h.snapshot, "198.18.1.12");
        h.snapshot
            .liveness()
            .set_deadline(id, Some(10 * SEC))
            .unwrap();
        // Flagged by this build: it has a TTL.
        rebuild(&mut h, &text);
        let before = open(&mut h, 400, proto, 9 * SEC);
        let on_it: Vec<u32> = (0..400)
            .filter(|&i| before[i as usize] == ip("198.18.1.12"))
            .collect();
        assert!(on_it.len() > 50, "it takes new flows until its deadline");
        // At the deadline: new flows skip it...
        for i in 1000..1400 {
            let (_, out) = h.run(&client(i, proto, SYN), 0, 10 * SEC);
            assert_ne!(destination(&out), ip("198.18.1.12"), "{proto} flow {i}");
        }
        // ...and its flows get the policy: TCP dropped, UDP rescheduled.
        let (v, out) = h.run(&client(on_it[0], proto, ACK), 0, 10 * SEC);
        if proto == "tcp" {
            assert_eq!(v, Verdict::Drop(DropReason::BackendDown));
        } else {
            assert_eq!(v, Verdict::Transmit(1));
            assert_ne!(destination(&out), ip("198.18.1.12"));
        }
        // A heartbeat brings it back at once.
        h.snapshot.liveness().extend_deadline(id, 20 * SEC).unwrap();
        let (_, out) = h.run(&client(on_it[1], proto, SYN), 0, 11 * SEC);
        let flow = on_it[1];
        assert_eq!(destination(&out), ip("198.18.1.12"), "{proto} flow {flow}");
    }
}

#[test]
fn expiry_is_on_time_while_a_ten_million_slot_maglev_table_is_built() {
    // The control thread is busy building the next snapshot, whose
    // service now has a 10 000 019-slot Maglev table; the worker, on its
    // own clock, expires the TTL backend on time all the same.
    let text = rules("maglev", "tcp", &FOUR, "");
    let cfg = config(&text);
    let current = Arc::new(Snapshot::build(&cfg, None));
    let liveness = Arc::clone(current.liveness());
    let id = endpoint(&current, "198.18.1.12");
    let mut g = Gateway::new(Arc::clone(&current), &cfg);

    let mut big = cfg.clone();
    big.services[0].maglev_table_size = 10_000_019;
    let started = Instant::now();
    let control = std::thread::spawn(move || {
        let next = Snapshot::build(&big, Some(&current));
        let (_, svc) = next.services().next().unwrap();
        (svc.maglev_table().size(), started.elapsed())
    });

    liveness
        .arm(id, Instant::now(), Duration::from_millis(100))
        .unwrap();
    let deadline_ns = liveness.word(id).deadline_ns().unwrap();
    let (mut reached_before, mut i) = (0, 0u32);
    let limit = Instant::now() + Duration::from_secs(5);
    let (late, busy) = loop {
        assert!(
            Instant::now() < limit,
            "no poll after the deadline within 5 s"
        );
        let now = liveness.now_ns();
        let batch: Vec<Vec<u8>> = (i..i + 32).map(|k| client(k, "tcp", SYN)).collect();
        i += 32;
        let out = g.poll(&batch, now);
        assert_eq!(out.len(), 32);
        let to_it = out
            .iter()
            .filter(|f| destination(f) == ip("198.18.1.12"))
            .count();
        if now < deadline_ns {
            reached_before += to_it;
        } else {
            assert_eq!(to_it, 0, "new flows reached it after its deadline");
            break (now - deadline_ns, !control.is_finished());
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let (size, build_time) = control.join().unwrap();
    assert_eq!(size, 10_000_019);
    assert!(reached_before > 0, "it took new flows before its deadline");
    assert!(busy, "the build ({build_time:?}) ended before the deadline");
    // The first poll past the deadline excluded it: as late as a poll.
    assert!(late < 50 * MS, "first poll {late} ns after the deadline");
    assert!(g.worker.pipeline().counters().snapshot().liveness_skips > 0);
}

#[test]
fn two_gateways_skip_dead_backends_alike() {
    // Two independent pipelines, their backends listed in other orders
    // (so their endpoint ids differ), the same backends down.
    let order_a = [
        "198.18.1.11",
        "198.18.1.12",
        "198.18.1.13",
        "198.18.1.14",
        "198.18.1.15",
    ];
    let order_b = [
        "198.18.1.15",
        "198.18.1.13",
        "198.18.1.11",
        "198.18.1.14",
        "198.18.1.12",
    ];
    for scheduler in ["maglev", "sh"] {
        let mut a = Harness::new(&rules(scheduler, "tcp", &order_a, ""));
        let mut b = Harness::new(&rules(scheduler, "tcp", &order_b, ""));
        for dead in ["198.18.1.12", "198.18.1.14"] {
            for h in [&a, &b] {
                let id = endpoint(&h.snapshot, dead);
                h.snapshot.liveness().set_up(id, false).unwrap();
            }
        }
        let mut seen = HashMap::new();
        for i in 0..5_000 {
            let frame = client_address(i);
            let (_, oa) = a.run(&frame, 0, SEC);
            let (_, ob) = b.run(&frame, 0, SEC);
            let (da, db) = (destination(&oa), destination(&ob));
            assert_eq!(da, db, "{scheduler} flow {i}");
            assert!(da != ip("198.18.1.12") && da != ip("198.18.1.14"));
            *seen.entry(da).or_insert(0u32) += 1;
        }
        assert_eq!(seen.len(), 3, "{scheduler}: {seen:?}");
        let (ca, cb) = (counters(&a), counters(&b));
        assert_eq!(ca.liveness_skips, cb.liveness_skips);
        assert!(
            ca.liveness_skips > 1_000,
            "{scheduler}: {}",
            ca.liveness_skips
        );
    }
}

#[test]
fn a_dead_backends_share_of_new_flows_spreads_over_the_rest() {
    // Before the rebuild, the skip rule spreads a dead backend's new flows
    // over the others about evenly (equal weights); wrr skips too.
    for scheduler in ["maglev", "wrr"] {
        let text = rules(scheduler, "tcp", &FOUR, "");
        let mut h = Harness::new(&text);
        let id = endpoint(&h.snapshot, "198.18.1.11");
        h.snapshot.liveness().set_up(id, false).unwrap();
        let n = 12_000u32;
        let mut count: HashMap<IpAddr, u32> = HashMap::new();
        for dest in open(&mut h, n, "tcp", SEC) {
            *count.entry(dest).or_insert(0) += 1;
        }
        assert!(!count.contains_key(&ip("198.18.1.11")));
        for addr in &FOUR[1..] {
            let share = f64::from(count[&ip(addr)]) / f64::from(n);
            assert!(
                (share - 1.0 / 3.0).abs() < 0.03,
                "{scheduler} {addr}: {share}"
            );
        }
    }
}

#[test]
fn panic_mode_balances_over_every_backend_when_too_few_are_alive() {
    let text = rules(
        "maglev",
        "tcp",
        &FOUR,
        "panic_threshold = 50\non_backend_down = \"reset\"",
    );
    let mut h = Harness::new(&text);
    let established: Vec<IpAddr> = (5000..5100)
        .map(|i| destination(&h.run(&client(i, "tcp", SYN), 0, SEC / 2).1))
        .collect();
    for dead in &FOUR[..3] {
        let id = endpoint(&h.snapshot, dead);
        h.snapshot.liveness().set_up(id, false).unwrap();
    }
    // Before the rebuild, the healthy mode's skip rule sends all to .14.
    let before: HashSet<IpAddr> = open(&mut h, 200, "tcp", SEC).into_iter().collect();
    assert_eq!(before, HashSet::from([ip("198.18.1.14")]));
    // The rebuild finds 25 % alive, below 50 %: panic mode.
    rebuild(&mut h, &text);
    let (_, svc) = h.snapshot.services().next().unwrap();
    assert_eq!(svc.mode(), Mode::Panic);
    let after: HashSet<IpAddr> = (1000..1400)
        .map(|i| destination(&h.run(&client(i, "tcp", SYN), 0, 2 * SEC).1))
        .collect();
    assert_eq!(after.len(), 4, "every weighted backend: {after:?}");
    assert_eq!(counters(&h).panic_flows, 400);
    assert!(established.iter().any(|&d| d != ip("198.18.1.14")));
    // Health is ignored for connections too: the dead backends' are not
    // reset while the service panics.
    for (i, &d) in (5000..).zip(&established) {
        let (v, out) = h.run(&client(i, "tcp", ACK), 0, 3 * SEC);
        assert_eq!(
            (v, destination(&out)),
            (Verdict::Transmit(1), d),
            "flow {i}"
        );
    }
    assert_eq!(counters(&h).dead_backend_resets, 0);
}

#[test]
fn with_every_backend_down_a_service_fails_open_or_closed() {
    for (keys, open_) in [("", true), ("when_all_down = \"closed\"", false)] {
        let text = rules("maglev", "tcp", &FOUR, keys);
        let mut h = Harness::new(&text);
        for b in FOUR {
            let id = endpoint(&h.snapshot, b);
            h.snapshot.liveness().set_up(id, false).unwrap();
        }
        // Before the rebuild (the skip rule finds none alive) and after it
        // (the service's mode), alike.
        for (phase, first) in [("before", 0), ("after", 1000)] {
            if phase == "after" {
                rebuild(&mut h, &text);
            }
            let mut seen = HashSet::new();
            for i in first..first + 100 {
                let (v, out) = h.run(&client(i, "tcp", SYN), 0, SEC);
                if open_ {
                    assert_eq!(v, Verdict::Transmit(1), "{phase}");
                    seen.insert(destination(&out));
                } else {
                    assert_eq!(v, Verdict::Drop(DropReason::AllBackendsDown), "{phase}");
                }
            }
            if open_ {
                assert_eq!(seen.len(), 4, "{phase}: balanced over all");
            }
        }
        let c = counters(&h);
        if open_ {
            assert_eq!((c.failed_open_flows, c.new_flows), (200, 200));
        } else {
            assert_eq!(c.drops.get("all_backends_down"), Some(&200));
            assert_eq!(c.new_flows, 0);
        }
        // One comes back: from the rebuild that follows, it takes every
        // new flow.
        let id = endpoint(&h.snapshot, "198.18.1.13");
        h.snapshot.liveness().set_up(id, true).unwrap();
        rebuild(&mut h, &text);
        let (_, svc) = h.snapshot.services().next().unwrap();
        assert_eq!(svc.mode(), Mode::Healthy);
        for i in 2000..2050 {
            let (v, out) = h.run(&client(i, "tcp", SYN), 0, 2 * SEC);
            assert_eq!(v, Verdict::Transmit(1));
            assert_eq!(destination(&out), ip("198.18.1.13"), "{keys}");
        }
    }
}

#[test]
fn a_worker_sends_the_rst_out_of_the_clients_port_at_its_own_length() {
    // In one batch with ordinary frames: the answered frame leaves the
    // client's port as a 54-byte RST, the others are untouched.
    let text = rules("maglev", "tcp", &FOUR, "on_backend_down = \"reset\"");
    let cfg = config(&text);
    let mut g = Gateway::new(Arc::new(Snapshot::build(&cfg, None)), &cfg);
    let syns: Vec<Vec<u8>> = (0..64).map(|i| client(i, "tcp", SYN)).collect();
    let first: Vec<IpAddr> = g.poll(&syns, SEC).iter().map(|f| destination(f)).collect();
    let dead = ip("198.18.1.11");
    let id = endpoint(&g.snapshot, "198.18.1.11");
    g.snapshot.liveness().set_up(id, false).unwrap();
    g.snapshot = Arc::new(Snapshot::build(&cfg, Some(&g.snapshot)));

    let data: Vec<Vec<u8>> = (0..64)
        .map(|i| client(i, "tcp", ACK | tcp_flags::PSH))
        .collect();
    let on_dead = first.iter().filter(|&&d| d == dead).count();
    assert!(on_dead > 3);
    let to_backends = g.poll(&data, 2 * SEC);
    assert_eq!(to_backends.len(), 64 - on_dead);
    assert!(to_backends.iter().all(|f| destination(f) != dead));
    let mut resets = Vec::new();
    g.ports[0].take_transmitted(&g.memory, &mut resets);
    assert_eq!(resets.len(), on_dead);
    for rst in &resets {
        assert_eq!(rst.len(), 54);
        assert!(wire::frame_checksums_ok(rst));
        let meta = wire::parse(rst).unwrap();
        assert_eq!(meta.tuple.src_ip(), ip("198.18.100.10"));
        assert_eq!(meta.tcp_flags, tcp_flags::RST);
    }
    let c = g.worker.pipeline().counters().snapshot();
    assert_eq!(c.dead_backend_resets, on_dead as u64);
    assert_eq!(c.tx_packets, 64 + 64);
}
