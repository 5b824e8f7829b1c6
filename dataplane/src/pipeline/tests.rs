//! Per-endpoint counting through the pipeline: what is counted where, and
//! that counts survive new snapshot generations.

use std::net::SocketAddr;

use super::*;
use crate::flow::{EndpointValues, FlowTimeouts};
use crate::rules;
use crate::table::EndpointId;
use crate::wire::builder::FrameBuilder;

const CLIENT_MAC: [u8; 6] = [0x02, 0x66, 0x67, 0, 0, 0x02];
const GW_MAC: [u8; 6] = [0x02, 0x66, 0x67, 0, 0, 0x01];

/// Rules with `extra` more one-backend services after `web` (tcp, two
/// backends) and `dns` (udp, one backend).
fn rules_text(extra: usize, web_backends: &[&str]) -> String {
    let mut s = String::from(
        "[[interfaces]]\nname = \"c\"\nmac = \"02:66:67:00:00:01\"\n\
         [[interfaces]]\nname = \"b\"\nmac = \"02:66:67:00:01:01\"\n",
    );
    for i in 0..=20 {
        s += &format!(
            "[[neighbours]]\naddress = \"198.18.1.{}\"\nmac = \"02:66:67:00:01:{:02x}\"\ninterface = \"b\"\n",
            10 + i,
            10 + i
        );
    }
    s += "[[services]]\nname = \"web\"\nprotocol = \"tcp\"\nvip = \"198.18.100.10\"\nport = 80\n";
    for b in web_backends {
        s += &format!("[[services.backends]]\naddress = \"{b}\"\nport = 8080\n");
    }
    s += "[[services]]\nname = \"dns\"\nprotocol = \"udp\"\nvip = \"198.18.100.10\"\nport = 53\n\
          [[services.backends]]\naddress = \"198.18.1.20\"\nport = 5353\n";
    for i in 0..extra {
        s += &format!(
            "[[services]]\nname = \"x{i}\"\nprotocol = \"tcp\"\nvip = \"198.18.101.{}\"\nport = 80\n\
             [[services.backends]]\naddress = \"198.18.1.{}\"\nport = 8080\n",
            i + 1,
            10 + i % 20
        );
    }
    s
}

fn snapshot(text: &str, previous: Option<&Snapshot>) -> Snapshot {
    let config = rules::load_str(text, "t.toml").unwrap();
    Snapshot::build(&config, previous)
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn client(port: u16, vip: &str, proto: u8, flags: u8) -> Vec<u8> {
    let src = sa(&format!("198.18.0.2:{port}"));
    let b = if proto == ip_proto::UDP {
        FrameBuilder::udp(src, sa(vip))
    } else {
        FrameBuilder::tcp(src, sa(vip), flags)
    };
    b.macs(CLIENT_MAC, GW_MAC).build()
}

/// The endpoint id of `service`'s backend at `addr`.
fn endpoint(s: &Snapshot, service: &str, addr: &str) -> EndpointId {
    let want = crate::wire::addr_to_bytes(addr.parse().unwrap());
    let (_, svc) = s.services().find(|(_, x)| x.name() == service).unwrap();
    *svc.endpoints()
        .iter()
        .find(|&&e| s.endpoint(e).unwrap().address == want)
        .unwrap()
}

struct Rig {
    pipeline: Pipeline,
    flows: FlowTable,
}

impl Rig {
    fn new() -> Rig {
        Rig {
            pipeline: Pipeline::new(),
            flows: FlowTable::new(1024, FlowTimeouts::from(&rules::FlowSettings::default())),
        }
    }

    fn run(&mut self, frame: &[u8], ingress: u16, s: &Snapshot) -> (Verdict, Vec<u8>) {
        let mut buf = frame.to_vec();
        let v = self
            .pipeline
            .process_frame(&mut buf, ingress, s, &mut self.flows, 1);
        (v, buf)
    }

    fn at(&self, id: EndpointId) -> EndpointValues {
        self.flows.counters().endpoint(id)
    }

    /// Sum over `ids`.
    fn sum(&self, ids: impl IntoIterator<Item = EndpointId>) -> EndpointValues {
        let mut total = EndpointValues::default();
        for id in ids {
            total += self.at(id);
        }
        total
    }
}

/// The reply a backend sends to a frame the pipeline forwarded to it.
fn reply_to(forwarded: &[u8]) -> Vec<u8> {
    let meta = wire::parse(forwarded).unwrap();
    let t = meta.tuple;
    let to_sock = |a: [u8; 16], p: u16| SocketAddr::new(crate::wire::bytes_to_addr(&a), p);
    let src = to_sock(t.dst, t.dst_port);
    let dst = to_sock(t.src, t.src_port);
    let b = if t.protocol == ip_proto::UDP {
        FrameBuilder::udp(src, dst)
    } else {
        FrameBuilder::tcp(src, dst, tcp_flags::SYN | tcp_flags::ACK)
    };
    b.macs([0x02, 0x66, 0x67, 0, 1, 0x11], [0x02, 0x66, 0x67, 0, 1, 1])
        .build()
}

#[test]
fn forwarded_frames_of_both_directions_count_against_their_endpoint() {
    let s = snapshot(&rules_text(0, &["198.18.1.11", "198.18.1.12"]), None);
    let web = [
        endpoint(&s, "web", "198.18.1.11"),
        endpoint(&s, "web", "198.18.1.12"),
    ];
    let dns = endpoint(&s, "dns", "198.18.1.20");
    let mut rig = Rig::new();
    let mut bytes = 0;
    for port in 1000..1040 {
        let syn = client(port, "198.18.100.10:80", ip_proto::TCP, tcp_flags::SYN);
        let (v, out) = rig.run(&syn, 0, &s);
        assert_eq!(v, Verdict::Transmit(1));
        let (v, _) = rig.run(&reply_to(&out), 1, &s);
        assert_eq!(v, Verdict::Transmit(0));
        bytes += 2 * syn.len() as u64;
    }
    let q = client(2000, "198.18.100.10:53", ip_proto::UDP, 0);
    assert_eq!(rig.run(&q, 0, &s).0, Verdict::Transmit(1));
    assert_eq!(rig.run(&q, 0, &s).0, Verdict::Transmit(1));
    // Not forwarded, not counted: TTL 1, and traffic to no service.
    let dying = FrameBuilder::udp(sa("198.18.0.2:2000"), sa("198.18.100.10:53"))
        .macs(CLIENT_MAC, GW_MAC)
        .ttl(1)
        .build();
    assert_eq!(
        rig.run(&dying, 0, &s).0,
        Verdict::Drop(DropReason::TtlExpired)
    );
    assert_eq!(
        rig.run(&client(3, "198.18.100.99:80", ip_proto::TCP, 0), 0, &s)
            .0,
        Verdict::Pass
    );

    let w = rig.sum(web);
    assert_eq!(w.packets, 80);
    assert_eq!(w.bytes, bytes);
    assert_eq!(w.new_flows, 40);
    assert_eq!(w.active_flows, 40);
    assert!(rig.at(web[0]).new_flows > 0 && rig.at(web[1]).new_flows > 0);
    let d = rig.at(dns);
    assert_eq!((d.packets, d.new_flows, d.active_flows), (2, 1, 1));
    let c = rig.pipeline.counters().snapshot();
    assert_eq!(w.packets + d.packets, c.forwarded);
    assert_eq!(w.new_flows + d.new_flows, c.new_flows);
}

#[test]
fn counts_survive_new_generations_that_add_endpoints() {
    let first = snapshot(&rules_text(0, &["198.18.1.11"]), None);
    let web = endpoint(&first, "web", "198.18.1.11");
    let mut rig = Rig::new();
    for port in 1000..1010 {
        rig.run(
            &client(port, "198.18.100.10:80", ip_proto::TCP, tcp_flags::SYN),
            0,
            &first,
        );
    }
    let slots = rig.flows.endpoint_slots();
    assert!(slots >= 2);
    let before = rig.at(web);
    assert_eq!((before.packets, before.new_flows), (10, 10));

    // Many more services: ids past the first array, a new one for x199.
    let second = snapshot(&rules_text(200, &["198.18.1.11"]), Some(&first));
    assert_eq!(
        endpoint(&second, "web", "198.18.1.11"),
        web,
        "ids are stable"
    );
    let far = endpoint(&second, "x199", "198.18.1.29");
    assert!(far as usize >= slots);
    for port in 1000..1010 {
        rig.run(
            &client(port, "198.18.100.10:80", ip_proto::TCP, tcp_flags::ACK),
            0,
            &second,
        );
    }
    assert_eq!(
        rig.run(
            &client(7, "198.18.101.200:80", ip_proto::TCP, tcp_flags::SYN),
            0,
            &second
        )
        .0,
        Verdict::Transmit(1)
    );
    assert!(rig.flows.endpoint_slots() > far as usize);
    let after = rig.at(web);
    assert_eq!(
        (after.packets, after.new_flows, after.active_flows),
        (20, 10, 10)
    );
    assert_eq!(rig.at(far).new_flows, 1);
    assert_eq!(rig.at(far).packets, 1);
}

#[test]
fn a_removed_backend_counts_its_ended_connections_out() {
    let first = snapshot(&rules_text(0, &["198.18.1.11", "198.18.1.12"]), None);
    let (a, b) = (
        endpoint(&first, "web", "198.18.1.11"),
        endpoint(&first, "web", "198.18.1.12"),
    );
    let mut rig = Rig::new();
    let syns: Vec<_> = (1000..1064)
        .map(|p| client(p, "198.18.100.10:80", ip_proto::TCP, tcp_flags::SYN))
        .collect();
    for f in &syns {
        rig.run(f, 0, &first);
    }
    let on_b = rig.at(b).active_flows;
    assert!(on_b > 0);
    // b leaves: its TCP connections end when their next packet arrives.
    let second = snapshot(&rules_text(0, &["198.18.1.11"]), Some(&first));
    let mut ended = 0;
    for f in &syns {
        if rig.run(f, 0, &second).0 == Verdict::Drop(DropReason::BackendRemoved) {
            ended += 1;
        }
    }
    assert_eq!(ended, on_b);
    assert_eq!(rig.at(b).active_flows, 0);
    assert_eq!(rig.at(a).active_flows, 64 - on_b);
    assert_eq!(rig.at(a).active_flows, rig.flows.len() as u64);
}

#[test]
fn a_table_swapped_under_the_pipeline_is_sized_too() {
    let s = snapshot(&rules_text(0, &["198.18.1.11"]), None);
    let mut rig = Rig::new();
    rig.run(
        &client(1, "198.18.100.10:80", ip_proto::TCP, tcp_flags::SYN),
        0,
        &s,
    );
    rig.flows = FlowTable::new(16, FlowTimeouts::from(&rules::FlowSettings::default()));
    rig.run(
        &client(2, "198.18.100.10:80", ip_proto::TCP, tcp_flags::SYN),
        0,
        &s,
    );
    assert_eq!(rig.at(endpoint(&s, "web", "198.18.1.11")).new_flows, 1);
}

/// A batch processed by `process_parsed` is decided by the parse it is
/// given where the parse kept its meta (as a frame handed over from
/// another worker carries it), not by parsing its frames again: frames
/// whose bytes would not parse are forwarded as the parse of a SYN says,
/// and rewritten at its offsets.
#[test]
fn pre_parsed_frames_are_decided_by_their_parse_not_parsed_again() {
    use crate::port::MemoryFrames;
    let s = snapshot(&rules_text(0, &["198.18.1.11"]), None);
    let mut rig = Rig::new();
    let syn = client(1000, "198.18.100.10:80", ip_proto::TCP, tcp_flags::SYN);
    let (meta, hash) = Parsed::of(&syn).flow(&syn).unwrap();
    assert_eq!(hash, table_hash(&meta.tuple));
    let parsed = Parsed::of_flow(meta, hash);

    let mut memory = MemoryFrames::new(2, 256);
    let mut pool = memory.pool();
    let mut frames: Vec<Frame> = (0..2).map(|_| pool.take().unwrap()).collect();
    // The same length as the SYN, but bytes that parse to nothing after
    // its destination MAC (which the ingress check reads from the frame).
    let mut junk = vec![0xffu8; syn.len()];
    junk[..6].copy_from_slice(&syn[..6]);
    assert!(wire::parse(&junk).is_err());
    for frame in &mut frames {
        assert!(memory.write(frame, &junk));
    }
    let mut verdicts = Vec::new();
    rig.pipeline.process_parsed(
        &mut memory,
        &mut frames,
        &[parsed, parsed],
        0,
        &s,
        &mut rig.flows,
        1,
        &mut verdicts,
    );
    assert_eq!(verdicts, [Verdict::Transmit(1), Verdict::Transmit(1)]);
    let c = rig.pipeline.counters().snapshot();
    assert_eq!(
        (c.new_flows, c.flow_hits),
        (1, 1),
        "one connection, then its hit"
    );
    // The rewrite wrote the backend at the parse's offsets.
    let l3 = usize::from(meta.l3_offset);
    let dst = &memory.frame(&frames[0])[l3 + 16..l3 + 20];
    assert_eq!(dst, &[198, 18, 1, 11]);

    // The same frames through `process_batch` are parsed: and rejected.
    let mut other = Rig::new();
    other.pipeline.process_batch(
        &mut memory,
        &mut frames,
        0,
        &s,
        &mut other.flows,
        1,
        &mut verdicts,
    );
    assert!(verdicts
        .iter()
        .all(|v| matches!(v, Verdict::Drop(_) | Verdict::Pass)));
    for frame in frames {
        pool.put(frame);
    }
}

/// A parse result fits one cache line of the batch's `Vec`.
#[test]
fn a_parse_result_fits_a_cache_line() {
    assert!(std::mem::size_of::<Parsed>() <= 64);
}
