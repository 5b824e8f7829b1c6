//! Flow control through the pipeline: each limit refuses new flows with
//! its own reason and the service's chosen answer, established flows are
//! never checked, connections that end give their backend's place back,
//! and a service's rate holds within 10 % with one worker and with two
//! sharing the budget evenly or 90/10 (simulated time).

use std::net::SocketAddr;

use super::*;
use crate::admission::{
    AdmissionValues, BackendConnections, ClientRateTable, Refusal, WorkerAdmission,
};
use crate::flow::FlowTimeouts;
use crate::rules;
use crate::wire::builder::FrameBuilder;

const CLIENT_MAC: [u8; 6] = [0x02, 0x66, 0x67, 0, 0, 0x02];
const GW_MAC: [u8; 6] = [0x02, 0x66, 0x67, 0, 0, 0x01];
const MS: u64 = 1_000_000;
const S: u64 = 1_000_000_000;

/// A gateway with a TCP service "web" at 198.18.100.10:80 (backends
/// 198.18.1.11 and .12 unless `backends` says) and a UDP one "dns" at
/// :53, with `limits` as web's `[services.limits]` and `dns_limits` as
/// dns's.
fn rules_text(limits: &str, backend_keys: &str, dns_limits: &str) -> String {
    let mut s = String::from(
        "[[interfaces]]\nname = \"c\"\nmac = \"02:66:67:00:00:01\"\n\
         [[interfaces]]\nname = \"b\"\nmac = \"02:66:67:00:01:01\"\n",
    );
    for i in [11, 12, 20] {
        s += &format!(
            "[[neighbours]]\naddress = \"198.18.1.{i}\"\nmac = \"02:66:67:00:01:{i:02x}\"\n\
             interface = \"b\"\n"
        );
    }
    s += "[[services]]\nname = \"web\"\nprotocol = \"tcp\"\nvip = \"198.18.100.10\"\nport = 80\n";
    if !limits.is_empty() {
        s += &format!("[services.limits]\n{limits}\n");
    }
    s +=
        &format!("[[services.backends]]\naddress = \"198.18.1.11\"\nport = 8080\n{backend_keys}\n");
    if backend_keys.is_empty() {
        s += "[[services.backends]]\naddress = \"198.18.1.12\"\nport = 8080\n";
    }
    s += "[[services]]\nname = \"dns\"\nprotocol = \"udp\"\nvip = \"198.18.100.10\"\nport = 53\n";
    if !dns_limits.is_empty() {
        s += &format!("[services.limits]\n{dns_limits}\n");
    }
    s += "[[services.backends]]\naddress = \"198.18.1.20\"\nport = 5353\n";
    s
}

fn snapshot(text: &str) -> Snapshot {
    Snapshot::build(&rules::load_str(text, "t.toml").unwrap(), None)
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A frame from `src` to `vip`: TCP with `flags`, or UDP.
fn frame(src: &str, vip: &str, flags: Option<u8>) -> Vec<u8> {
    match flags {
        Some(flags) => FrameBuilder::tcp(sa(src), sa(vip), flags),
        None => FrameBuilder::udp(sa(src), sa(vip)),
    }
    .macs(CLIENT_MAC, GW_MAC)
    .build()
}

fn syn(src: &str) -> Vec<u8> {
    frame(src, "198.18.100.10:80", Some(tcp_flags::SYN))
}

struct Rig {
    pipeline: Pipeline,
    flows: FlowTable,
}

impl Rig {
    fn new() -> Rig {
        Rig {
            pipeline: Pipeline::new(),
            flows: FlowTable::new(4096, FlowTimeouts::default()),
        }
    }

    /// Worker `w` of those sharing `lanes`.
    fn worker(lanes: crate::admission::WorkerConnections, seed: u64) -> Rig {
        let mut rig = Rig::new();
        rig.pipeline.set_admission(WorkerAdmission::new(
            ClientRateTable::new(1024, seed),
            lanes,
        ));
        rig
    }

    fn run(&mut self, frame: &[u8], s: &Snapshot, now_ns: u64) -> (Verdict, Vec<u8>) {
        let mut buf = frame.to_vec();
        let (v, len) = self
            .pipeline
            .process_frame_len(&mut buf, 0, s, &mut self.flows, now_ns);
        buf.truncate(len);
        (v, buf)
    }

    fn refusals(&self) -> AdmissionValues {
        self.pipeline.admission().counters().snapshot()
    }

    fn service_refusals(&self, s: &Snapshot, name: &str) -> AdmissionValues {
        let (id, svc) = s.services().find(|(_, x)| x.name() == name).unwrap();
        self.pipeline
            .admission()
            .service_refusals()
            .values(id, svc.serial())
    }
}

#[test]
fn a_service_over_its_rate_drops_new_flows_and_keeps_established_ones() {
    let s = snapshot(&rules_text(
        "max_new_flows_per_s = 100\nnew_flows_burst = 10",
        "",
        "",
    ));
    let mut rig = Rig::new();
    let mut forwarded = 0;
    for port in 1000..1050 {
        match rig.run(&syn(&format!("198.18.0.2:{port}")), &s, S).0 {
            Verdict::Transmit(1) => forwarded += 1,
            Verdict::Drop(DropReason::OverLimit) => {}
            v => panic!("{v:?}"),
        }
    }
    // The burst, and nothing more at one instant.
    assert_eq!(forwarded, 10);
    assert_eq!(rig.refusals().service_rate, 40);
    assert_eq!(rig.service_refusals(&s, "web").service_rate, 40);
    assert_eq!(rig.service_refusals(&s, "dns"), AdmissionValues::default());
    assert_eq!(rig.pipeline.counters().drops_for(DropReason::OverLimit), 40);
    // An admitted connection's packets are never checked: its ACKs go
    // through while new flows are still refused.
    for _ in 0..20 {
        let ack = frame("198.18.0.2:1000", "198.18.100.10:80", Some(tcp_flags::ACK));
        assert_eq!(rig.run(&ack, &s, S).0, Verdict::Transmit(1));
    }
    assert_eq!(
        rig.run(&syn("198.18.0.2:2000"), &s, S).0,
        Verdict::Drop(DropReason::OverLimit)
    );
    // A tenth of a second later, 10 more.
    let admitted = (3000..3050)
        .filter(|p| {
            let f = syn(&format!("198.18.0.2:{p}"));
            rig.run(&f, &s, S + 100 * MS).0 == Verdict::Transmit(1)
        })
        .count();
    assert_eq!(admitted, 10);
}

#[test]
fn over_limit_reset_answers_a_refused_syn_with_a_rst_from_the_vip() {
    let s = snapshot(&rules_text(
        "max_new_flows_per_s = 1\nover_limit = \"reset\"",
        "",
        "",
    ));
    let mut rig = Rig::new();
    assert_eq!(
        rig.run(&syn("198.18.0.2:1000"), &s, S).0,
        Verdict::Transmit(1)
    );
    let refused = FrameBuilder::tcp(
        sa("198.18.0.2:1001"),
        sa("198.18.100.10:80"),
        tcp_flags::SYN,
    )
    .macs(CLIENT_MAC, GW_MAC)
    .tcp_seq(7000)
    .build();
    let (v, out) = rig.run(&refused, &s, S);
    // Back out of the port it came in on, as the RST RFC 793 gives.
    assert_eq!(v, Verdict::Transmit(0));
    let expected = FrameBuilder::tcp(
        sa("198.18.100.10:80"),
        sa("198.18.0.2:1001"),
        tcp_flags::RST | tcp_flags::ACK,
    )
    .macs(GW_MAC, CLIENT_MAC)
    .build();
    let meta = wire::parse(&out).unwrap();
    assert_eq!(meta.tcp_flags, tcp_flags::RST | tcp_flags::ACK);
    assert_eq!(out.len(), expected.len());
    assert_eq!(&out[..12], &expected[..12], "MACs swapped");
    let v = rig.refusals();
    assert_eq!((v.service_rate, v.resets_sent), (1, 1));
    assert_eq!(rig.service_refusals(&s, "web").resets_sent, 1);
    // A RST from the client is not answered: dropped.
    let rst = frame("198.18.0.2:1002", "198.18.100.10:80", Some(tcp_flags::RST));
    assert_eq!(rig.run(&rst, &s, S).0, Verdict::Drop(DropReason::OverLimit));
}

#[test]
fn a_client_prefix_is_limited_apart_from_other_clients() {
    let s = snapshot(&rules_text(
        "client_max_new_flows_per_s = 10\nclient_new_flows_burst = 2\nclient_prefix_v4 = 24",
        "",
        "",
    ));
    let mut rig = Rig::new();
    let admitted = |rig: &mut Rig, src: &str| rig.run(&syn(src), &s, S).0 == Verdict::Transmit(1);
    // Two hosts of one /24 share a client's burst of 2.
    assert!(admitted(&mut rig, "198.18.0.2:1000"));
    assert!(admitted(&mut rig, "198.18.0.3:1000"));
    assert!(!admitted(&mut rig, "198.18.0.4:1000"));
    // Another /24 is another client.
    assert!(admitted(&mut rig, "198.18.7.2:1000"));
    let v = rig.refusals();
    assert_eq!((v.client_rate, v.service_rate), (1, 0));
    assert_eq!(rig.service_refusals(&s, "web").client_rate, 1);
}

#[test]
fn a_capped_backend_takes_new_flows_again_only_under_its_lower_mark() {
    // One backend, capped at 3 connections, resuming below 2.
    let s = snapshot(&rules_text(
        "",
        "max_connections = 3\nresume_connections = 2",
        "",
    ));
    let ep = {
        let (_, svc) = s.services().find(|(_, x)| x.name() == "web").unwrap();
        svc.endpoints()[0]
    };
    let mut rig = Rig::new();
    let timeouts = FlowTimeouts {
        tcp_syn_ns: 30 * S,
        tcp_closing_ns: 5 * S,
        ..FlowTimeouts::default()
    };
    rig.flows = FlowTable::new(4096, timeouts);
    let opened = |rig: &mut Rig, port: u16, now: u64| {
        rig.run(&syn(&format!("198.18.0.2:{port}")), &s, now).0 == Verdict::Transmit(1)
    };
    // Three connections at t=1 s, a fourth refused.
    for port in 1000..1003 {
        assert!(opened(&mut rig, port, S));
    }
    assert!(!opened(&mut rig, 1003, S));
    assert_eq!(rig.refusals().backend_cap, 1);
    let lanes = std::sync::Arc::clone(rig.pipeline.admission().backends().table());
    assert_eq!(lanes.connections(ep), 3);
    // One connection ends by RST, and a FIN'd one expires: the lanes
    // follow the connection table.
    let rst = frame("198.18.0.2:1000", "198.18.100.10:80", Some(tcp_flags::RST));
    assert_eq!(rig.run(&rst, &s, S + MS).0, Verdict::Transmit(1));
    let later = S + MS + timeouts.tcp_closing_ns + 1;
    rig.flows.expire(later, 4096);
    assert_eq!(lanes.connections(ep), 2);
    // 2 is not below the lower mark: still refused.
    assert!(!opened(&mut rig, 1004, later));
    // The two left reach their SYN timeout: below 2 now.
    let much_later = S + timeouts.tcp_syn_ns + S;
    rig.flows.expire(much_later, 4096);
    assert_eq!(lanes.connections(ep), 0);
    assert!(opened(&mut rig, 1005, much_later));
    assert_eq!(rig.refusals().backend_cap, 2);
    assert_eq!(rig.service_refusals(&s, "web").backend_cap, 2);
}

#[test]
fn a_cap_refusal_is_not_a_rate_refusal_and_a_udp_service_drops() {
    // The cap refuses after the rate admitted: counted as the cap's.
    let s = snapshot(&rules_text(
        "max_new_flows_per_s = 1\nnew_flows_burst = 2",
        "max_connections = 1",
        "max_new_flows_per_s = 1\nnew_flows_burst = 1",
    ));
    let mut rig = Rig::new();
    assert_eq!(
        rig.run(&syn("198.18.0.2:1000"), &s, S).0,
        Verdict::Transmit(1)
    );
    // Capped: refused by the backend, not by the rate.
    assert_eq!(
        rig.run(&syn("198.18.0.2:1001"), &s, S).0,
        Verdict::Drop(DropReason::OverLimit)
    );
    let rst = frame("198.18.0.2:1000", "198.18.100.10:80", Some(tcp_flags::RST));
    rig.run(&rst, &s, S);
    rig.flows.expire(S + 100 * S, 4096);
    // The connection gone, the backend takes new flows again.
    assert_eq!(
        rig.run(&syn("198.18.0.2:1002"), &s, S + 100 * S).0,
        Verdict::Transmit(1)
    );
    let v = rig.refusals();
    assert_eq!((v.backend_cap, v.service_rate), (1, 0));
    // UDP: a datagram over the rate is dropped.
    let dns = |port: u16| frame(&format!("198.18.0.2:{port}"), "198.18.100.10:53", None);
    assert_eq!(rig.run(&dns(5000), &s, S).0, Verdict::Transmit(1));
    assert_eq!(
        rig.run(&dns(5001), &s, S).0,
        Verdict::Drop(DropReason::OverLimit)
    );
    assert_eq!(rig.service_refusals(&s, "dns").service_rate, 1);
}

/// Offers `offered` new flows per second for `secs` seconds, one every
/// `1/offered` s, worker `shares[i]` tenths of them on worker `i`, to a
/// service limited to `rate`/s; the flows admitted in all.
fn admitted_over(rate: u64, offered: u64, secs: u64, shares: &[u64]) -> u64 {
    let s = snapshot(&rules_text(
        &format!("max_new_flows_per_s = {rate}"),
        "",
        "",
    ));
    let (_, lanes) = BackendConnections::new(shares.len(), 1 << 16);
    let mut rigs: Vec<Rig> = lanes
        .into_iter()
        .enumerate()
        .map(|(w, l)| Rig::worker(l, w as u64))
        .collect();
    let gap = S / offered;
    let mut admitted = 0;
    for i in 0..offered * secs {
        // Worker i's turn by its share of each ten flows.
        let slot = i % 10;
        let mut w = 0;
        let mut acc = 0;
        for (k, share) in shares.iter().enumerate() {
            acc += share;
            if slot < acc {
                w = k;
                break;
            }
        }
        let src = format!(
            "198.18.{}.{}:{}",
            (i >> 16) & 0xff,
            (i >> 8) & 0xff,
            1024 + (i & 0xff)
        );
        if rigs[w].run(&syn(&src), &s, S + i * gap).0 == Verdict::Transmit(1) {
            admitted += 1;
        }
    }
    let refused: u64 = rigs.iter().map(|r| r.refusals().service_rate).sum();
    assert_eq!(admitted + refused, offered * secs);
    admitted
}

#[test]
fn the_service_rate_holds_within_ten_percent_with_one_or_two_workers() {
    for (rate, offered) in [(1_000, 5_000), (20_000, 60_000)] {
        let secs = 3;
        // What the limit allows: the rate over the time, plus the burst.
        let allowed = rate * secs + rate / 10;
        for shares in [&[10][..], &[5, 5], &[9, 1]] {
            let admitted = admitted_over(rate, offered, secs, shares);
            let error = (admitted as f64 - allowed as f64).abs() / allowed as f64;
            eprintln!(
                "{rate}/s offered {offered}/s over {shares:?}: {admitted} admitted of {allowed} \
                 allowed ({:+.2} %)",
                100.0 * (admitted as f64 - allowed as f64) / allowed as f64
            );
            assert!(
                error <= 0.10,
                "{rate}/s offered {offered}/s over {shares:?}: {admitted} admitted, {allowed} allowed"
            );
        }
    }
}

#[test]
fn refusal_reasons_are_the_engines() {
    assert_eq!(
        Refusal::ALL.map(Refusal::name),
        ["service_rate", "client_rate", "backend_cap"]
    );
}
