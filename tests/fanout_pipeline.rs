//! Fan-out over the in-memory port: every datagram to a fan-out VIP
//! reaches every alive weighted backend, replies come back from the VIP
//! (all of them, or the first after each datagram), copies stay within
//! their share of the frame pool, a backend added or removed through the
//! control API counts from the next datagram on, and fan-out flows never
//! enter the connection table (so never the kernel fast path).

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

use common::*;
use flowgate_api::{BackendAdd, BackendKey, BackendSpec, Edit};
use flowgate_dataplane::control::{ControlState, MemoryDataplane};
use flowgate_dataplane::flow::{FlowTable, FlowTimeouts};
use flowgate_dataplane::pipeline::DropReason;
use flowgate_dataplane::port::{MemoryFrames, MemoryPort};
use flowgate_dataplane::rules;
use flowgate_dataplane::table::Snapshot;
use flowgate_dataplane::wire::builder::FrameBuilder;
use flowgate_dataplane::wire::{self, frame_checksums_ok};
use flowgate_dataplane::worker::{CountingKernelPath, Worker};

const SEC: u64 = 1_000_000_000;
const VIP: &str = "198.18.100.20:9000";

/// A fan-out service over `backends` (address, weight) on port 7000, with
/// a static neighbour for each and for `spare` addresses (backends that
/// may be added later).
fn fanout_rules(replies: &str, backends: &[(&str, u32)], spare: &[&str]) -> String {
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
    let addresses = backends
        .iter()
        .map(|(a, _)| *a)
        .chain(spare.iter().copied());
    for (i, addr) in addresses.enumerate() {
        s += &format!(
            "[[neighbours]]\naddress = \"{addr}\"\nmac = \"02:66:67:00:01:{:02x}\"\ninterface = \"fg-backend\"\n",
            0x11 + i
        );
    }
    s += &format!(
        "[[services]]\nname = \"publish\"\nprotocol = \"udp\"\nvip = \"198.18.100.20\"\nport = 9000\nscheduler = \"fanout\"\nfanout_replies = \"{replies}\"\n"
    );
    for (addr, w) in backends {
        s += &format!("[[services.backends]]\naddress = \"{addr}\"\nport = 7000\nweight = {w}\n");
    }
    s
}

/// One worker over a client port (0) and a backend port (1).
struct Lab {
    worker: Worker,
    ports: Vec<MemoryPort>,
    memory: MemoryFrames,
    kernel: CountingKernelPath,
    frames: usize,
}

impl Lab {
    fn new(frames: u32, share: u32, ring: usize) -> Lab {
        let mut memory = MemoryFrames::new(frames, 2048);
        let pool = memory.pool();
        let worker = Worker::new(FlowTable::new(1024, FlowTimeouts::default()), pool, 2, 64)
            .with_fanout_share(share);
        let mut lab = Lab {
            worker,
            ports: vec![MemoryPort::new("c", ring), MemoryPort::new("b", ring)],
            memory,
            kernel: CountingKernelPath::default(),
            frames: frames as usize,
        };
        lab.poll(&Snapshot::empty(), 0);
        lab
    }

    fn poll(&mut self, snapshot: &Snapshot, now: u64) {
        self.worker.poll(
            &mut self.ports,
            &mut self.memory,
            snapshot,
            &mut self.kernel,
            now,
        );
    }

    /// Injects `frames` on `port`, polls, and returns what each port sent.
    fn run(
        &mut self,
        snapshot: &Snapshot,
        port: usize,
        frames: &[Vec<u8>],
        now: u64,
    ) -> [Vec<Vec<u8>>; 2] {
        for f in frames {
            assert!(self.ports[port].inject(&mut self.memory, f), "injected");
        }
        self.poll(snapshot, now);
        let mut out = [Vec::new(), Vec::new()];
        for (p, o) in out.iter_mut().enumerate() {
            self.ports[p].take_transmitted(&self.memory, o);
        }
        // Completed frames go back to the pool.
        self.poll(snapshot, now);
        out
    }

    fn held(&self) -> usize {
        self.ports
            .iter()
            .map(MemoryPort::frames_held)
            .sum::<usize>()
            + self.worker.pool().len()
    }
}

fn client(port: u16) -> SocketAddr {
    SocketAddr::new("198.18.0.2".parse().unwrap(), port)
}

fn datagram(from: SocketAddr, payload: &[u8]) -> Vec<u8> {
    from_client(FrameBuilder::udp(from, sa(VIP)))
        .payload(payload)
        .ttl(64)
        .build()
}

fn reply(backend: &str, to: SocketAddr, payload: &[u8]) -> Vec<u8> {
    FrameBuilder::udp(sa(backend), to)
        .macs([2, 0x66, 0x67, 0, 1, 0x11], GW_BACKEND_MAC)
        .payload(payload)
        .ttl(64)
        .build()
}

/// The destinations of frames, after checking each is a whole, correct
/// UDP frame carrying `payload` from `from`.
fn receivers(frames: &[Vec<u8>], from: SocketAddr, payload: &[u8]) -> BTreeSet<SocketAddr> {
    frames
        .iter()
        .map(|f| {
            assert!(frame_checksums_ok(f), "checksums of\n{}", hex(f));
            let meta = wire::parse(f).unwrap();
            let t = meta.tuple;
            assert_eq!(SocketAddr::new(t.src_ip(), t.src_port), from);
            assert_eq!(&f[f.len() - payload.len()..], payload);
            assert_eq!(&f[6..12], &GW_BACKEND_MAC, "leaves from the backend side");
            SocketAddr::new(t.dst_ip(), t.dst_port)
        })
        .collect()
}

fn set(addrs: &[&str]) -> BTreeSet<SocketAddr> {
    addrs.iter().map(|a| sa(a)).collect()
}

#[test]
fn every_datagram_reaches_every_alive_weighted_backend_and_all_replies_return_from_the_vip() {
    let backends = [
        ("198.18.1.11", 1),
        ("198.18.1.12", 1),
        ("198.18.1.13", 0), // draining: takes no datagrams
        ("198.18.1.14", 5),
        ("198.18.1.15", 1), // down
    ];
    let snapshot = Snapshot::build(&config(&fanout_rules("all", &backends, &[])), None);
    let down = snapshot
        .services()
        .flat_map(|(_, s)| s.endpoints().iter().copied())
        .find(|&id| snapshot.endpoint(id).unwrap().address[15] == 15)
        .unwrap();
    snapshot.liveness().set_up(down, false).unwrap();
    let mut lab = Lab::new(256, 50, 64);
    let alive = set(&["198.18.1.11:7000", "198.18.1.12:7000", "198.18.1.14:7000"]);

    for (n, port) in [(1u64, 40_000u16), (2, 40_000), (3, 40_001)] {
        let c = client(port);
        let [to_client, to_backends] = lab.run(&snapshot, 0, &[datagram(c, b"config v7")], n * SEC);
        assert!(to_client.is_empty());
        assert_eq!(to_backends.len(), 3, "one frame per alive weighted backend");
        assert_eq!(receivers(&to_backends, c, b"config v7"), alive);
        for f in &to_backends {
            assert_eq!(f[22], 63, "TTL decremented once");
        }

        // Every backend's reply goes to the client, from the VIP.
        let replies: Vec<Vec<u8>> = alive
            .iter()
            .map(|b| reply(&b.to_string(), c, b"ack"))
            .collect();
        let [to_client, to_backends] = lab.run(&snapshot, 1, &replies, n * SEC + 1);
        assert!(to_backends.is_empty());
        assert_eq!(to_client.len(), 3);
        for f in &to_client {
            assert!(frame_checksums_ok(f));
            let t = wire::parse(f).unwrap().tuple;
            assert_eq!(SocketAddr::new(t.src_ip(), t.src_port), sa(VIP));
            assert_eq!(SocketAddr::new(t.dst_ip(), t.dst_port), c);
            assert_eq!(&f[0..6], &CLIENT_MAC);
            assert_eq!(&f[6..12], &GW_CLIENT_MAC);
        }
    }
    let c = lab.worker.pipeline().counters().snapshot();
    assert_eq!(c.fanout_datagrams, 3);
    assert_eq!(c.fanout_copies, 6);
    assert_eq!(c.new_flows, 2, "two client flows");
    assert_eq!(c.dropped(), 0);
    // Fan-out flows stay out of the connection table, so the kernel fast
    // path (which installs from it) never carries them.
    assert_eq!(lab.worker.flows().len(), 0);
    assert_eq!(lab.held(), lab.frames, "no frame lost");

    // A backend that comes back up receives from the next datagram on.
    snapshot.liveness().set_up(down, true).unwrap();
    let c1 = client(40_000);
    let [_, to_backends] = lab.run(&snapshot, 0, &[datagram(c1, b"v8")], 9 * SEC);
    let mut with_it = alive.clone();
    with_it.insert(sa("198.18.1.15:7000"));
    assert_eq!(receivers(&to_backends, c1, b"v8"), with_it);
}

#[test]
fn first_forwards_one_reply_per_client_datagram_and_counts_the_rest() {
    let backends = [("198.18.1.11", 1), ("198.18.1.12", 1), ("198.18.1.13", 1)];
    let snapshot = Snapshot::build(&config(&fanout_rules("first", &backends, &[])), None);
    let mut lab = Lab::new(256, 50, 64);
    let c = client(41_000);
    let all = ["198.18.1.11:7000", "198.18.1.12:7000", "198.18.1.13:7000"];

    for round in 0..3u64 {
        let now = (round + 1) * SEC;
        let [_, to_backends] = lab.run(&snapshot, 0, &[datagram(c, b"q")], now);
        assert_eq!(receivers(&to_backends, c, b"q"), set(&all));
        // The replies arrive one by one: only the first goes through.
        let order: Vec<&str> = all
            .iter()
            .cycle()
            .skip(round as usize)
            .take(3)
            .copied()
            .collect();
        for (k, backend) in order.iter().enumerate() {
            let [to_client, _] =
                lab.run(&snapshot, 1, &[reply(backend, c, b"a")], now + 1 + k as u64);
            assert_eq!(
                to_client.len(),
                usize::from(k == 0),
                "reply {k} of round {round}"
            );
        }
    }
    // A reply with no datagram since: dropped too.
    let [to_client, _] = lab.run(&snapshot, 1, &[reply(all[0], c, b"late")], 5 * SEC);
    assert!(to_client.is_empty());
    let counters = lab.worker.pipeline().counters();
    assert_eq!(
        counters.drops_for(DropReason::FanoutReplyAfterFirst),
        3 * 2 + 1
    );

    // Another client's flow is its own: its first reply goes through.
    let other = client(41_001);
    lab.run(&snapshot, 0, &[datagram(other, b"q")], 6 * SEC);
    let [to_client, _] = lab.run(&snapshot, 1, &[reply(all[2], other, b"a")], 6 * SEC + 1);
    assert_eq!(to_client.len(), 1);
    // After the UDP timeout the flow is forgotten: a late reply is a
    // backend's reply with no connection, never passed to the kernel; this
    // client has no neighbour entry to send it to without state.
    let idle = FlowTimeouts::default().udp_ns;
    let passed = lab.kernel.frames;
    let no_neighbour = lab
        .worker
        .pipeline()
        .counters()
        .drops_for(DropReason::NoNeighbour);
    let [to_client, _] = lab.run(
        &snapshot,
        1,
        &[reply(all[1], other, b"a")],
        6 * SEC + idle + 2,
    );
    assert!(to_client.is_empty());
    assert_eq!(lab.kernel.frames, passed);
    assert_eq!(
        lab.worker
            .pipeline()
            .counters()
            .drops_for(DropReason::NoNeighbour),
        no_neighbour + 1
    );
    assert_eq!(lab.held(), lab.frames);
}

#[test]
fn copies_beyond_their_share_of_the_pool_are_dropped_and_counted_and_other_traffic_flows() {
    let addrs: Vec<String> = (0..40).map(|i| format!("198.18.1.{}", 11 + i)).collect();
    let backends: Vec<(&str, u32)> = addrs.iter().map(|a| (a.as_str(), 1)).collect();
    let mut text = fanout_rules("all", &backends, &[]);
    text += "[[services]]\nname = \"dns\"\nprotocol = \"udp\"\nvip = \"198.18.100.10\"\nport = 53\n[[services.backends]]\naddress = \"198.18.1.11\"\nport = 5353\n";
    let snapshot = Snapshot::build(&config(&text), None);
    // 512 frames, 256 of them in the receive rings: copies may hold 25 %
    // of the other 256, 64 frames.
    let mut lab = Lab::new(512, 25, 128);
    assert_eq!(lab.worker.pool().len(), 256);
    let datagrams: Vec<Vec<u8>> = (0..4).map(|i| datagram(client(42_000 + i), b"x")).collect();
    let [_, to_backends] = lab.run(&snapshot, 0, &datagrams, SEC);
    let c = lab.worker.pipeline().counters().snapshot();
    let copies = c.fanout_copies as usize;
    let refused = c.drops.get("fanout_copy_no_frame").copied().unwrap_or(0) as usize;
    assert_eq!(copies + refused, 4 * 39, "every copy made or counted");
    assert!(copies <= 64 && copies > 56, "{copies} copies");
    assert_eq!(to_backends.len(), 4 + copies);
    assert_eq!(c.forwarded, 4, "the originals all went");

    // Ordinary traffic is untouched, and once the copies are sent their
    // frames come back for the next datagrams.
    let dns = from_client(FrameBuilder::udp(client(5000), sa("198.18.100.10:53"))).build();
    let [_, out] = lab.run(&snapshot, 0, &[dns], 2 * SEC);
    assert_eq!(out.len(), 1);
    let [_, to_backends] = lab.run(&snapshot, 0, &datagrams[..1], 3 * SEC);
    assert_eq!(to_backends.len(), 40);
    assert_eq!(lab.held(), lab.frames);
}

#[test]
fn a_backend_added_or_removed_through_the_control_api_counts_from_the_next_datagram() {
    let backends = [("198.18.1.11", 1), ("198.18.1.12", 1)];
    let text = fanout_rules("all", &backends, &["198.18.1.13"]);
    let config = rules::load_str(&text, "gw.toml").unwrap();
    let dataplane = Arc::new(MemoryDataplane::with_config(&config));
    let mut state = ControlState::new(config, "gw.toml", dataplane.clone());
    let mut lab = Lab::new(256, 50, 64);
    let c = client(43_000);

    let send = |lab: &mut Lab, now| {
        let snapshot = dataplane.current();
        let [_, to_backends] = lab.run(&snapshot, 0, &[datagram(c, b"p")], now);
        receivers(&to_backends, c, b"p")
    };
    assert_eq!(
        send(&mut lab, SEC),
        set(&["198.18.1.11:7000", "198.18.1.12:7000"])
    );

    let add = Edit::BackendAdd(BackendAdd {
        service: "publish".into(),
        backend: BackendSpec::new("198.18.1.13", 7000),
    });
    state.edit(&[add], false).unwrap();
    assert_eq!(
        send(&mut lab, 2 * SEC),
        set(&["198.18.1.11:7000", "198.18.1.12:7000", "198.18.1.13:7000"])
    );

    let del = Edit::BackendDel(BackendKey {
        service: "publish".into(),
        address: "198.18.1.11".into(),
        port: 7000,
    });
    state.edit(&[del], false).unwrap();
    assert_eq!(
        send(&mut lab, 3 * SEC),
        set(&["198.18.1.12:7000", "198.18.1.13:7000"])
    );
    // The removed backend's late reply is not the gateway's any more.
    let passed = lab.kernel.frames;
    let snapshot = dataplane.current();
    let [to_client, _] = lab.run(
        &snapshot,
        1,
        &[reply("198.18.1.11:7000", c, b"r")],
        3 * SEC + 1,
    );
    assert!(to_client.is_empty());
    assert_eq!(lab.kernel.frames, passed + 1);
    let [to_client, _] = lab.run(
        &snapshot,
        1,
        &[reply("198.18.1.13:7000", c, b"r")],
        3 * SEC + 2,
    );
    assert_eq!(to_client.len(), 1);
}

#[test]
fn ipv6_fans_out_and_replies_return_from_the_vip() {
    let text = r#"
[[interfaces]]
name = "fg-client"
mac = "02:66:67:00:00:01"
[[interfaces]]
name = "fg-backend"
mac = "02:66:67:00:01:01"
[[neighbours]]
address = "2001:2:0:1::11"
mac = "02:66:67:00:01:11"
interface = "fg-backend"
[[neighbours]]
address = "2001:2:0:1::12"
mac = "02:66:67:00:01:12"
interface = "fg-backend"
[[services]]
name = "publish6"
protocol = "udp"
vip = "2001:2:0:100::20"
port = 9000
scheduler = "fanout"
[[services.backends]]
address = "2001:2:0:1::11"
port = 7000
[[services.backends]]
address = "2001:2:0:1::12"
port = 7000
"#;
    let snapshot = Snapshot::build(&config(text), None);
    let mut lab = Lab::new(256, 50, 64);
    let c = sa("[2001:2::2]:40000");
    let vip = sa("[2001:2:0:100::20]:9000");
    let frame = from_client(FrameBuilder::udp(c, vip))
        .payload(b"six")
        .build();
    let [_, to_backends] = lab.run(&snapshot, 0, &[frame], SEC);
    assert_eq!(
        receivers(&to_backends, c, b"six"),
        set(&["[2001:2:0:1::11]:7000", "[2001:2:0:1::12]:7000"])
    );
    let replies = vec![
        reply("[2001:2:0:1::11]:7000", c, b"r"),
        reply("[2001:2:0:1::12]:7000", c, b"r"),
    ];
    let [to_client, _] = lab.run(&snapshot, 1, &replies, SEC + 1);
    assert_eq!(to_client.len(), 2);
    for f in &to_client {
        assert!(frame_checksums_ok(f));
        let t = wire::parse(f).unwrap().tuple;
        assert_eq!(SocketAddr::new(t.src_ip(), t.src_port), vip);
    }
}

#[test]
fn a_tcp_fanout_service_and_misplaced_reply_modes_are_refused_with_their_line() {
    let tcp = fanout_rules("all", &[("198.18.1.11", 1)], &[]).replace("\"udp\"", "\"tcp\"");
    let err = rules::load_str(&tcp, "gw.toml").unwrap_err().to_string();
    assert!(
        err.contains(
            "gw.toml:17:13: scheduler \"fanout\" of service \"publish\" needs protocol \"udp\""
        ),
        "{err}"
    );
    let bad = fanout_rules("some", &[("198.18.1.11", 1)], &[]);
    let err = rules::load_str(&bad, "gw.toml").unwrap_err().to_string();
    assert!(
        err.contains("gw.toml:18:18: unknown fanout_replies \"some\" in service \"publish\" (expected \"all\" or \"first\")"),
        "{err}"
    );
    let maglev =
        fanout_rules("first", &[("198.18.1.11", 1)], &[]).replace("\"fanout\"", "\"maglev\"");
    let err = rules::load_str(&maglev, "gw.toml").unwrap_err().to_string();
    assert!(
        err.contains("gw.toml:18:18: fanout_replies of service \"publish\" needs scheduler \"fanout\" (it has \"maglev\")"),
        "{err}"
    );
    // A path or a canary chooses one backend: not on a fan-out service.
    let path = fanout_rules("all", &[("198.18.1.11", 1)], &[])
        + "[[services.paths]]\nclient = \"198.18.5.5/32\"\nbackends = [\"198.18.1.11:7000\"]\n";
    let err = rules::load_str(&path, "gw.toml").unwrap_err().to_string();
    assert!(
        err.contains("service \"publish\" has distribution paths, but its scheduler fanout sends each flow to every backend"),
        "{err}"
    );
    // Limits count new connections, which fan-out does not make.
    let limited = fanout_rules("all", &[("198.18.1.11", 1)], &[])
        + "[services.limits]\nmax_new_flows_per_s = 100\n";
    let err = rules::load_str(&limited, "gw.toml")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("gw.toml:17:13: service \"publish\" fans out: flow limits and connection caps apply to new connections"),
        "{err}"
    );
}

#[test]
fn sets_and_zones_narrow_who_receives_and_a_set_client_fails_closed() {
    let backends = [
        ("198.18.1.11", 1),
        ("198.18.1.12", 1),
        ("198.18.1.13", 1),
        ("198.18.1.14", 1),
    ];
    let mut text = fanout_rules("all", &backends, &[]);
    // b1, b2 in SET shop.sh.g1; b3 in zone dc-b; b4 unlabelled.
    let labels = [
        "set = \"shop.sh.g1\"\n",
        "set = \"shop.sh.g1\"\n",
        "zone = \"dc-b\"\n",
        "",
    ];
    for (i, label) in labels.iter().enumerate() {
        let at = format!(
            "address = \"198.18.1.{}\"\nport = 7000\nweight = 1\n",
            11 + i
        );
        text = text.replace(&at, &format!("{at}{label}"));
    }
    text += r#"
[routing]
zone_priority = ["dc-b"]
[[routing.classes]]
prefix = "198.18.50.0/24"
set = "shop.sh.g1"
[[routing.classes]]
prefix = "198.18.60.0/24"
zone = "dc-b"
"#;
    let snapshot = Snapshot::build(&config(&text), None);
    let mut lab = Lab::new(256, 50, 64);
    let send = |lab: &mut Lab, from: &str, now| {
        let c = sa(from);
        let [_, to_backends] = lab.run(&snapshot, 0, &[datagram(c, b"s")], now);
        receivers(&to_backends, c, b"s")
    };
    // A SET client: its SET's backends only.
    let set_client = "198.18.50.7:4000";
    assert_eq!(
        send(&mut lab, set_client, SEC),
        set(&["198.18.1.11:7000", "198.18.1.12:7000"])
    );
    // A zone client: its zone's backends.
    assert_eq!(
        send(&mut lab, "198.18.60.7:4000", SEC),
        set(&["198.18.1.13:7000"])
    );
    // A client with no class: every backend.
    assert_eq!(send(&mut lab, "198.18.0.9:4000", SEC).len(), 4);

    // The SET's backends die: the SET client fails closed, never another SET's.
    for id in snapshot
        .services()
        .flat_map(|(_, s)| s.endpoints().to_vec())
    {
        if matches!(snapshot.endpoint(id).unwrap().address[15], 11 | 12) {
            snapshot.liveness().set_up(id, false).unwrap();
        }
    }
    assert!(send(&mut lab, set_client, 2 * SEC).is_empty());
    let counters = lab.worker.pipeline().counters();
    assert_eq!(counters.drops_for(DropReason::AllBackendsDown), 1);
}
