//! Pipeline behaviour over the in-memory port: how new flows spread, what
//! connections do when rules change, and that no frame is ever lost.

mod common;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use common::*;
use flowgate_dataplane::flow::{FlowTable, FlowTimeouts};
use flowgate_dataplane::pipeline::{DropReason, Verdict};
use flowgate_dataplane::port::{MemoryFrames, MemoryPort};
use flowgate_dataplane::table::Snapshot;
use flowgate_dataplane::wire::builder::FrameBuilder;
use flowgate_dataplane::wire::{self, tcp_flags};
use flowgate_dataplane::worker::{CountingKernelPath, Worker};

const SEC: u64 = 1_000_000_000;

fn rules(scheduler: &str, proto: &str, backends: &[(&str, u32)]) -> String {
    let mut s = String::from(
        r#"
[[interfaces]]
name = "fg-client"
mac = "02:66:67:00:00:01"
[[interfaces]]
name = "fg-backend"
mac = "02:66:67:00:01:01"
"#,
    );
    for (i, (addr, _)) in backends.iter().enumerate() {
        s += &format!(
            "[[neighbours]]\naddress = \"{addr}\"\nmac = \"02:66:67:00:01:{:02x}\"\ninterface = \"fg-backend\"\n",
            0x11 + i
        );
    }
    s += &format!(
        "[[services]]\nname = \"svc\"\nprotocol = \"{proto}\"\nvip = \"198.18.100.10\"\nport = 80\nscheduler = \"{scheduler}\"\n"
    );
    for (addr, w) in backends {
        s += &format!("[[services.backends]]\naddress = \"{addr}\"\nport = 8080\nweight = {w}\n");
    }
    s
}

/// A client's first packet of flow `i` (distinct source address and port).
fn new_flow(i: u32, proto: &str, flags: u8) -> Vec<u8> {
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

/// Where a transmitted frame is going (destination address).
fn destination(frame: &[u8]) -> IpAddr {
    wire::parse(frame).unwrap().tuple.dst_ip()
}

/// Sends the first packet of flows `first..first + flows`; counts where
/// they went.
fn spread(h: &mut Harness, first: u32, flows: u32, proto: &str) -> HashMap<IpAddr, u32> {
    let mut count = HashMap::new();
    for i in first..first + flows {
        let (v, out) = h.run(&new_flow(i, proto, tcp_flags::SYN), 0, SEC);
        assert_eq!(v, Verdict::Transmit(1));
        *count.entry(destination(&out)).or_insert(0) += 1;
    }
    count
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn maglev_spreads_new_flows_by_weight() {
    let mut h = Harness::new(&rules(
        "maglev",
        "tcp",
        &[("198.18.1.11", 1), ("198.18.1.12", 1), ("198.18.1.13", 2)],
    ));
    let n = 20_000;
    let count = spread(&mut h, 0, n, "tcp");
    for (addr, share) in [
        ("198.18.1.11", 0.25),
        ("198.18.1.12", 0.25),
        ("198.18.1.13", 0.5),
    ] {
        let got = f64::from(count[&ip(addr)]) / f64::from(n);
        // 20 000 samples: one standard deviation is about 0.3 %.
        assert!(
            (got - share).abs() < 0.02,
            "{addr}: share {got}, want {share}"
        );
    }
}

#[test]
fn wrr_follows_weights_exactly_over_a_cycle() {
    let mut h = Harness::new(&rules(
        "wrr",
        "tcp",
        &[("198.18.1.11", 1), ("198.18.1.12", 2), ("198.18.1.13", 3)],
    ));
    let count = spread(&mut h, 0, 600, "tcp");
    assert_eq!(count[&ip("198.18.1.11")], 100);
    assert_eq!(count[&ip("198.18.1.12")], 200);
    assert_eq!(count[&ip("198.18.1.13")], 300);
}

#[test]
fn wrr_drops_mid_stream_segments_it_cannot_place() {
    let mut h = Harness::new(&rules(
        "wrr",
        "tcp",
        &[("198.18.1.11", 1), ("198.18.1.12", 1)],
    ));
    let (v, _) = h.run(&new_flow(1, "tcp", tcp_flags::ACK), 0, SEC);
    assert_eq!(v, Verdict::Drop(DropReason::NoConnection));
}

#[test]
fn maglev_picks_up_mid_stream_connections() {
    // After a restart (empty connection table), an established connection's
    // next segment goes to the backend the flow hash picks, and stays there.
    let mut h = Harness::new(&rules(
        "maglev",
        "tcp",
        &[("198.18.1.11", 1), ("198.18.1.12", 1)],
    ));
    let (v, first) = h.run(&new_flow(7, "tcp", tcp_flags::ACK), 0, SEC);
    assert_eq!(v, Verdict::Transmit(1));
    let (_, again) = h.run(
        &new_flow(7, "tcp", tcp_flags::ACK | tcp_flags::PSH),
        0,
        2 * SEC,
    );
    assert_eq!(destination(&first), destination(&again));
    assert_eq!(h.pipeline.counters().new_flows.get(), 1);
}

#[test]
fn sh_pins_each_client_address_to_one_backend() {
    let mut h = Harness::new(&rules(
        "sh",
        "tcp",
        &[("198.18.1.11", 1), ("198.18.1.12", 1), ("198.18.1.13", 1)],
    ));
    let mut backends_seen = std::collections::HashSet::new();
    for client in 0..50u8 {
        let mut dst = None;
        for port in 0..20u16 {
            let src = SocketAddr::new(IpAddr::from([198, 18, 3, client]), 2000 + port);
            let frame = from_client(FrameBuilder::tcp(
                src,
                sa("198.18.100.10:80"),
                tcp_flags::SYN,
            ))
            .build();
            let (_, out) = h.run(&frame, 0, SEC);
            let d = destination(&out);
            assert_eq!(*dst.get_or_insert(d), d, "client {client} moved backend");
        }
        backends_seen.insert(dst.unwrap());
    }
    assert_eq!(
        backends_seen.len(),
        3,
        "50 clients should reach all 3 backends"
    );
}

#[test]
fn connections_keep_their_backend_while_rules_change() {
    let before = rules("maglev", "tcp", &[("198.18.1.11", 1), ("198.18.1.12", 1)]);
    let after = rules(
        "maglev",
        "tcp",
        &[
            ("198.18.1.11", 3),
            ("198.18.1.12", 1),
            ("198.18.1.13", 5),
            ("198.18.1.14", 5),
        ],
    );
    let mut h = Harness::new(&before);
    let flows = 2_000;
    let mut first = Vec::new();
    for i in 0..flows {
        let (_, out) = h.run(&new_flow(i, "tcp", tcp_flags::SYN), 0, SEC);
        first.push(destination(&out));
    }
    h.snapshot = Snapshot::build(&config(&after), Some(&h.snapshot));
    for i in 0..flows {
        let (v, out) = h.run(&new_flow(i, "tcp", tcp_flags::ACK), 0, 2 * SEC);
        assert_eq!(v, Verdict::Transmit(1));
        assert_eq!(destination(&out), first[i as usize], "flow {i} moved");
    }
    // New flows follow the new rules: the new backends get traffic.
    let count = spread(&mut h, flows, 2_000, "tcp");
    assert!(count.get(&ip("198.18.1.13")).copied().unwrap_or(0) > 500);
    assert!(count.get(&ip("198.18.1.14")).copied().unwrap_or(0) > 500);
}

#[test]
fn a_removed_backend_ends_tcp_connections_and_reschedules_udp_flows() {
    for proto in ["tcp", "udp"] {
        let both = rules("maglev", proto, &[("198.18.1.11", 1), ("198.18.1.12", 1)]);
        let one = rules("maglev", proto, &[("198.18.1.11", 1)]);
        let mut h = Harness::new(&both);
        // Find a flow on the backend that will be removed.
        let i = (0..1000)
            .find(|&i| {
                let (_, out) = h.run(&new_flow(i, proto, tcp_flags::SYN), 0, SEC);
                destination(&out) == ip("198.18.1.12")
            })
            .unwrap();
        h.snapshot = Snapshot::build(&config(&one), Some(&h.snapshot));
        let (v, out) = h.run(&new_flow(i, proto, tcp_flags::ACK), 0, 2 * SEC);
        if proto == "tcp" {
            assert_eq!(v, Verdict::Drop(DropReason::BackendRemoved));
            // The connection is gone: a new SYN is scheduled afresh.
            let (v, out) = h.run(&new_flow(i, proto, tcp_flags::SYN), 0, 3 * SEC);
            assert_eq!(v, Verdict::Transmit(1));
            assert_eq!(destination(&out), ip("198.18.1.11"));
        } else {
            assert_eq!(v, Verdict::Transmit(1));
            assert_eq!(destination(&out), ip("198.18.1.11"));
        }
    }
}

#[test]
fn a_drained_backend_keeps_its_connections_but_gets_no_new_ones() {
    let both = rules("maglev", "tcp", &[("198.18.1.11", 1), ("198.18.1.12", 1)]);
    let drained = rules("maglev", "tcp", &[("198.18.1.11", 1), ("198.18.1.12", 0)]);
    let mut h = Harness::new(&both);
    let on_12: Vec<u32> = (0..400)
        .filter(|&i| {
            let (_, out) = h.run(&new_flow(i, "tcp", tcp_flags::SYN), 0, SEC);
            destination(&out) == ip("198.18.1.12")
        })
        .collect();
    assert!(!on_12.is_empty());
    h.snapshot = Snapshot::build(&config(&drained), Some(&h.snapshot));
    for &i in &on_12 {
        let (_, out) = h.run(&new_flow(i, "tcp", tcp_flags::ACK), 0, 2 * SEC);
        assert_eq!(
            destination(&out),
            ip("198.18.1.12"),
            "flow {i} left a drained backend"
        );
    }
    let count = spread(&mut h, 400, 1_000, "tcp");
    assert!(!count.contains_key(&ip("198.18.1.12")));
}

#[test]
fn two_gateways_with_the_same_rules_pick_the_same_backends() {
    let a = rules(
        "maglev",
        "tcp",
        &[("198.18.1.11", 1), ("198.18.1.12", 2), ("198.18.1.13", 1)],
    );
    // Same rules, backends listed in another order.
    let b = rules(
        "maglev",
        "tcp",
        &[("198.18.1.13", 1), ("198.18.1.11", 1), ("198.18.1.12", 2)],
    );
    let mut ga = Harness::new(&a);
    let mut gb = Harness::new(&b);
    for i in 0..5_000 {
        let frame = new_flow(i, "tcp", tcp_flags::SYN);
        let (_, oa) = ga.run(&frame, 0, SEC);
        let (_, ob) = gb.run(&frame, 0, SEC);
        assert_eq!(destination(&oa), destination(&ob), "flow {i}");
    }
}

#[test]
fn an_idle_flow_expires_and_its_replies_are_no_longer_rewritten() {
    let mut h = Harness::new(&rules("maglev", "udp", &[("198.18.1.11", 1)]));
    let (_, out) = h.run(&new_flow(1, "udp", 0), 0, SEC);
    let fwd = wire::parse(&out).unwrap().tuple;
    let reply = FrameBuilder::udp(
        SocketAddr::new(fwd.dst_ip(), fwd.dst_port),
        SocketAddr::new(fwd.src_ip(), fwd.src_port),
    )
    .macs(BACKEND1_MAC, GW_BACKEND_MAC)
    .build();
    let (v, _) = h.run(&reply, 1, 2 * SEC);
    assert_eq!(v, Verdict::Transmit(0), "a live flow's reply is rewritten");
    // Default UDP timeout is 60 s of idleness.
    let (v, _) = h.run(&reply, 1, 2 * SEC + 61 * SEC);
    // No connection now, and the rules know no way to this client (no
    // neighbour entry) for a translation without state: dropped, never
    // passed on untranslated (tests/unknown_replies.rs has the rest).
    assert_eq!(
        v,
        Verdict::Drop(DropReason::NoNeighbour),
        "an expired flow's reply is no longer rewritten by its connection"
    );
    assert!(h.flows.is_empty());
}

#[test]
fn a_full_connection_table_evicts_and_counts_instead_of_growing() {
    let mut h = Harness::new(&rules("maglev", "tcp", &[("198.18.1.11", 1)]));
    h.flows = FlowTable::new(1_000, FlowTimeouts::default());
    for i in 0..5_000 {
        let (v, _) = h.run(&new_flow(i, "tcp", tcp_flags::SYN), 0, SEC);
        assert_eq!(
            v,
            Verdict::Transmit(1),
            "a full table never refuses a new flow"
        );
    }
    assert!(h.flows.len() <= 1_000);
    assert!(h.flows.stats().evicted >= 4_000);
}

#[test]
fn the_worker_loses_no_frame() {
    // 200 000 frames through a worker over in-memory ports: every frame is,
    // at the end, either free in the pool or held by a port ring.
    let cfg = config(GOLDEN_RULES);
    let snapshot = Snapshot::build(&cfg, None);
    let frames = 1_024;
    let mut memory = MemoryFrames::new(frames, 2_048);
    let mut ports = vec![
        MemoryPort::new("fg-client", 128),
        MemoryPort::new("fg-backend", 128),
    ];
    let mut worker = Worker::new(
        FlowTable::new(65_536, FlowTimeouts::from(&cfg.flows)),
        memory.pool(),
        2,
        64,
    );
    let mut kernel = CountingKernelPath::default();
    let mix = [
        new_flow(1, "tcp", tcp_flags::SYN), // forwarded
        from_client(FrameBuilder::tcp(
            sa("198.18.0.2:1"),
            sa("198.18.0.1:22"),
            2,
        ))
        .build(), // passed
        from_client(FrameBuilder::tcp(
            sa("198.18.0.2:1"),
            sa("198.18.100.10:80"),
            2,
        ))
        .ttl(1)
        .build(), // dropped
        vec![0u8; 5],                       // malformed
    ];
    let mut wire_out = Vec::new();
    let total = 200_000u64;
    let mut injected = 0u64;
    let mut refused = 0u64;
    let mut now = SEC;
    while injected + refused < total {
        for _ in 0..100 {
            if ports[0].inject(&mut memory, &mix[(injected + refused) as usize % mix.len()]) {
                injected += 1;
            } else {
                refused += 1;
            }
        }
        worker.poll(&mut ports, &mut memory, &snapshot, &mut kernel, now);
        wire_out.clear();
        ports[1].take_transmitted(&memory, &mut wire_out);
        now += 1_000;
    }
    // Drain: let the worker recycle what is still in flight.
    for _ in 0..4 {
        worker.poll(&mut ports, &mut memory, &snapshot, &mut kernel, now);
        ports[1].take_transmitted(&memory, &mut wire_out);
    }
    let held: usize = ports.iter().map(MemoryPort::frames_held).sum();
    assert_eq!(worker.pool().len() + held, frames as usize, "frames leaked");
    let c = worker.pipeline().counters().snapshot();
    assert_eq!(c.rx_packets, injected);
    assert_eq!(c.tx_packets + c.passed + c.dropped(), injected);
    assert_eq!(kernel.frames, c.passed);
    assert!(c.tx_packets > 0 && c.passed > 0 && c.dropped() > 0);
}

#[test]
fn a_batch_decides_exactly_as_frame_by_frame() {
    use flowgate_dataplane::port::{Frame, FrameMemory};
    let text = rules("maglev", "tcp", &[("198.18.1.11", 1), ("198.18.1.12", 2)]);
    // A mix where later frames depend on earlier ones in the same batch:
    // a SYN then data of the same flow, repeats, noise and garbage.
    let mut frames = Vec::new();
    for i in 0..20 {
        frames.push(new_flow(i, "tcp", tcp_flags::SYN));
        frames.push(new_flow(i, "tcp", tcp_flags::ACK));
        frames.push(new_flow(i / 2, "tcp", tcp_flags::ACK | tcp_flags::FIN));
    }
    frames.push(vec![0xff; 9]);
    frames.push(
        from_client(FrameBuilder::tcp(
            sa("198.18.0.2:1"),
            sa("198.18.0.1:22"),
            2,
        ))
        .build(),
    );
    frames.push(
        from_client(FrameBuilder::udp(
            sa("198.18.0.2:1"),
            sa("198.18.100.10:80"),
        ))
        .fragment(8, false)
        .build(),
    );

    let mut one = Harness::new(&text);
    let singles: Vec<_> = frames.iter().map(|f| one.run(f, 0, SEC)).collect();

    let mut batch = Harness::new(&text);
    let mut memory = MemoryFrames::new(frames.len() as u32, 2_048);
    let mut pool = memory.pool();
    let mut tokens: Vec<Frame> = frames
        .iter()
        .map(|f| {
            let mut frame = pool.take().unwrap();
            assert!(memory.write(&mut frame, f));
            frame
        })
        .collect();
    let mut verdicts = Vec::new();
    batch.pipeline.process_batch(
        &mut memory,
        &mut tokens,
        0,
        &batch.snapshot,
        &mut batch.flows,
        SEC,
        &mut verdicts,
    );
    for (i, ((v, out), frame)) in singles.iter().zip(&tokens).enumerate() {
        assert_eq!(verdicts[i], *v, "frame {i}: verdict");
        assert_eq!(memory.frame(frame), &out[..], "frame {i}: bytes");
    }
}
