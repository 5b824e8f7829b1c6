//! A VIP on the clients' own segment (`announce = "arp"`): the real
//! `flowgate` binary in the demo's namespaces (tests/netns/), with VIPs
//! 198.18.0.50 and 2001:2::50 inside the client's subnets and no route for
//! them on the client, which therefore asks for them by ARP and neighbour
//! solicitation.
//!
//! - the client's neighbour table learns the gateway's MAC for each VIP,
//!   from the XDP program's answers, and real UDP queries to both VIPs are
//!   answered through the gateway;
//! - a gratuitous ARP and an unsolicited neighbour advertisement for each
//!   VIP reach the client when the VIP appears: at start, and when a
//!   reload (`apply`) brings it back;
//! - once a reload removes the VIPs, their ARP requests and neighbour
//!   solicitations go unanswered.
//!
//! Run as root; FLOWGATE_SKIP_NETNS=1 skips elsewhere. Needs the binaries
//! built first (scripts/test.sh does it).

mod netns;

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use flowgate_api::{ApplyConfig, ControlClient, Reply, Request};
use flowgate_dataplane::replay::pcap::PcapReader;
use flowgate_dataplane::testnet::NetNs;
use flowgate_dataplane::xdp::{read_attached_counters, XdpCounters};
use netns::*;

const SEGMENT_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 50);
const SEGMENT_VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x50);
const GW_MAC: [u8; 6] = [0x02, 0x66, 0x67, 0, 0, 0x01];

/// The two services on the client's segment, announced.
fn segment_services() -> String {
    format!(
        r#"
[[services]]
name = "segment-dns"
protocol = "udp"
vip = "{SEGMENT_VIP}"
port = 53
announce = "arp"

[[services.backends]]
address = "198.18.1.11"
port = 5353

[[services]]
name = "segment-dns6"
protocol = "udp"
vip = "{SEGMENT_VIP6}"
port = 53
announce = "arp"

[[services.backends]]
address = "2001:2:0:1::11"
port = 5353
"#
    )
}

/// tcpdump on the client's eth0, writing ARP and ICMPv6 to a file; stopped
/// (and its file read) by [`Capture::frames`], killed on drop.
struct Capture {
    child: Option<Child>,
    file: PathBuf,
}

impl Capture {
    /// Starts the capture and waits (at most 10 s) until tcpdump listens.
    fn start(ns: &NetNs, file: &Path) -> Capture {
        let mut child = ns
            .command(
                "tcpdump",
                // Immediate mode: a frame is written when it arrives, not
                // when the kernel's capture block times out.
                &[
                    "-i",
                    "eth0",
                    "--immediate-mode",
                    "-U",
                    "-n",
                    "-w",
                    file.to_str().unwrap(),
                    "arp or icmp6",
                ],
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tcpdump (Debian package tcpdump)");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("listening on") {
                    let _ = tx.send(());
                }
            }
        });
        let capture = Capture {
            child: Some(child),
            file: file.to_path_buf(),
        };
        rx.recv_timeout(Duration::from_secs(10))
            .expect("tcpdump did not start listening within 10 s");
        capture
    }

    /// Stops tcpdump and returns what it captured.
    fn frames(mut self) -> Vec<Vec<u8>> {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let file = std::fs::File::open(&self.file).unwrap();
        let mut reader = PcapReader::new(file).unwrap();
        let mut frames = Vec::new();
        while let Ok(Some(record)) = reader.next_record() {
            frames.push(record.data);
        }
        frames
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether `frames` hold a gratuitous ARP for `vip` from the gateway's MAC
/// (sender and target address both the VIP).
fn has_gratuitous_arp(frames: &[Vec<u8>], vip: Ipv4Addr) -> bool {
    frames.iter().any(|f| {
        f.len() >= 42
            && f[12..14] == [0x08, 0x06]
            && f[22..28] == GW_MAC
            && f[28..32] == vip.octets()
            && f[38..42] == vip.octets()
    })
}

/// Whether `frames` hold an unsolicited neighbour advertisement for `vip`
/// to all nodes (ff02::1), from the VIP, with the gateway's MAC.
fn has_unsolicited_advertisement(frames: &[Vec<u8>], vip: Ipv6Addr) -> bool {
    let all_nodes: Ipv6Addr = "ff02::1".parse().unwrap();
    frames.iter().any(|f| {
        f.len() >= 86
            && f[12..14] == [0x86, 0xdd]
            && f[20] == 58
            && f[22..38] == vip.octets()
            && f[38..54] == all_nodes.octets()
            && f[54] == 136
            && f[62..78] == vip.octets()
            && f[80..86] == GW_MAC
    })
}

/// The client's neighbour entry for `address`, as `ip neigh` prints it
/// (empty when there is none).
fn neighbour(topo: &Topology, address: IpAddr) -> String {
    let out = topo
        .client
        .ip(&["neigh", "show", &address.to_string(), "dev", "eth0"])
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Applies `config` through the control API, as `flowgatectl apply -f`
/// does; returns the warnings of the change.
fn apply(topo: &Topology, config: &str) -> Vec<String> {
    let mut client = ControlClient::connect(&topo.scratch.path("control.sock")).unwrap();
    match client
        .call(Request::Apply(ApplyConfig {
            config: config.to_string(),
            origin: Some("vip-announce.toml".into()),
            dry_run: false,
        }))
        .unwrap()
    {
        Reply::Changed(changed) => {
            assert!(changed.applied, "{changed:?}");
            changed.warnings
        }
        other => panic!("apply: {other:?}"),
    }
}

/// A UDP query to `vip`:53 from the client, retried for up to 10 s (the
/// first may wait for neighbour resolution); the answering backend.
fn query(topo: &Topology, vip: IpAddr) -> Result<String, String> {
    let to = SocketAddr::new(vip, 53);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match udp_query(&topo.client, to, Duration::from_millis(500)) {
            Ok((answer, from)) => {
                assert_eq!(from, to, "the answer comes from the VIP");
                return Ok(answer);
            }
            Err(e) if Instant::now() >= deadline => return Err(e.to_string()),
            Err(_) => {}
        }
    }
}

const VIPS: [IpAddr; 2] = [IpAddr::V4(SEGMENT_VIP), IpAddr::V6(SEGMENT_VIP6)];

/// The XDP counters of the gateway's client-facing interface.
fn counters(topo: &Topology) -> XdpCounters {
    topo.gateway
        .enter(|| read_attached_counters("fg-client"))
        .unwrap()
        .unwrap()
}

/// Both announcements are among `frames`.
fn assert_announced(frames: &[Vec<u8>], when: &str, gw: &Gateway) {
    assert!(
        has_gratuitous_arp(frames, SEGMENT_VIP),
        "{when}: no gratuitous ARP for {SEGMENT_VIP} in {} frames\n{}",
        frames.len(),
        gw.log()
    );
    assert!(
        has_unsolicited_advertisement(frames, SEGMENT_VIP6),
        "{when}: no unsolicited NA for {SEGMENT_VIP6} in {} frames\n{}",
        frames.len(),
        gw.log()
    );
}

/// With its neighbour entry flushed, the client resolves each VIP to the
/// gateway's MAC and a real query is answered by a backend through the
/// gateway.
fn assert_reached_on_the_segment(topo: &Topology, gw: &Gateway) {
    for vip in VIPS {
        topo.client
            .ip(&["neigh", "flush", "to", &vip.to_string(), "dev", "eth0"])
            .unwrap();
        let answer = query(topo, vip).unwrap_or_else(|e| {
            panic!(
                "{vip}: {e}; the client's entry: {:?}; XDP: {:?}\n{}",
                neighbour(topo, vip),
                counters(topo),
                gw.log()
            )
        });
        assert!(answer.starts_with('b'), "{vip} answered {answer:?}");
        let entry = neighbour(topo, vip);
        assert!(
            entry.contains("lladdr 02:66:67:00:00:01"),
            "{vip}: the client's entry is {entry:?}"
        );
    }
}

/// Nothing answers the client's ARP and neighbour solicitations for the
/// VIPs: its entries never get a MAC, and the program answers none.
fn assert_unanswered(topo: &Topology) {
    let before = counters(topo);
    for vip in VIPS {
        topo.client
            .ip(&["neigh", "flush", "to", &vip.to_string(), "dev", "eth0"])
            .unwrap();
        let to = SocketAddr::new(vip, 53);
        assert!(
            udp_query(&topo.client, to, Duration::from_secs(2)).is_err(),
            "{vip} still answers after its removal"
        );
        // The kernel gives up on the address after its probes (3 s at most
        // here): the entry is never given a MAC.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let entry = neighbour(topo, vip);
            assert!(!entry.contains("lladdr"), "{vip} was answered: {entry:?}");
            if entry.is_empty() || entry.contains("FAILED") || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let after = counters(topo);
    assert_eq!(
        (after.answered_arp, after.answered_ns),
        (before.answered_arp, before.answered_ns),
        "answered after removal"
    );
}

#[test]
fn a_vip_on_the_client_segment_is_answered_announced_and_withdrawn() {
    if !privileged() {
        return;
    }
    let _one = one_gateway_at_a_time();
    let topo = Topology::new(1);
    wake_the_clients_veth(&topo);
    for vip in VIPS {
        let route = topo.client.ip(&["route", "get", &vip.to_string()]).unwrap();
        let route = String::from_utf8_lossy(&route.stdout).to_string();
        assert!(!route.contains(" via "), "the client routes {vip}: {route}");
    }
    let base = topo.config(&[0]);
    let with_segment = format!("{base}{}", segment_services());

    // Start: the VIPs appear, and the segment hears of them (the gateway
    // announces before it forwards, which start_gateway waits for).
    let capture = Capture::start(&topo.client, &topo.scratch.path("start.pcap"));
    let mut gw = topo.start_gateway(&with_segment);
    assert_announced(&capture.frames(), "at start", &gw);
    assert_reached_on_the_segment(&topo, &gw);
    let answered = counters(&topo);
    assert!(answered.answered_arp >= 1, "{answered:?}");
    assert!(answered.answered_ns >= 1, "{answered:?}");

    // A reload without them: nothing answers for them any more.
    let warnings = apply(&topo, &base);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_unanswered(&topo);

    // A reload that brings them back announces them again, and a VIP on
    // the segment left unannounced is warned about.
    let capture = Capture::start(&topo.client, &topo.scratch.path("reload.pcap"));
    let unannounced = with_segment.replacen("announce = \"arp\"\n", "", 1);
    let warnings = apply(&topo, &unannounced);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let expected = format!("VIP {SEGMENT_VIP} (service \"segment-dns\") lies in 198.18.0.0/24");
    assert!(warnings[0].starts_with(&expected), "{warnings:?}");
    let warnings = apply(&topo, &with_segment);
    assert!(warnings.is_empty(), "{warnings:?}");
    std::thread::sleep(Duration::from_millis(500));
    assert_announced(&capture.frames(), "on reload", &gw);
    assert_reached_on_the_segment(&topo, &gw);

    gw.assert_running();
    gw.stop();
}

/// `n` UDP services, each on an IPv6 VIP of its own in 2001:2:0:200::/64,
/// announced, on one backend of the demo's, with the smallest Maglev table.
fn announced_services(n: usize) -> String {
    let mut text = String::with_capacity(n * 160);
    for i in 0..n {
        text.push_str(&format!(
            "[[services]]\nname = \"a{i}\"\nprotocol = \"udp\"\nvip = \"2001:2:0:200::{:x}:{:x}\"\n\
             port = 53\nmaglev_table_size = 251\nannounce = \"arp\"\n\
             [[services.backends]]\naddress = \"2001:2:0:1::11\"\nport = 5353\n",
            i >> 16,
            i & 0xffff
        ));
    }
    text
}

#[test]
fn a_change_one_announced_vip_over_the_map_is_refused_whole() {
    if !privileged() {
        return;
    }
    let _one = one_gateway_at_a_time();
    let topo = Topology::new(1);
    let base = topo.config(&[0]);
    let mut gw = topo.start_gateway(&base);
    let limit = flowgate_dataplane::xdp::XdpCapacity::PROGRAM.announced_addresses;
    let maps = |topo: &Topology| {
        topo.gateway
            .enter(|| flowgate_dataplane::xdp::read_attached_maps("fg-client"))
            .unwrap()
            .unwrap()
    };
    let before = maps(&topo);
    let mut client = ControlClient::connect(&topo.scratch.path("control.sock")).unwrap();
    let generation = |client: &mut ControlClient| match client.call(Request::Status {}).unwrap() {
        Reply::Status(status) => status.dataplane.generation,
        other => panic!("status: {other:?}"),
    };
    let running = generation(&mut client);

    let config = format!("{base}{}", announced_services(limit + 1));
    let refused = client.call(Request::Apply(ApplyConfig {
        config,
        origin: Some("too-many.toml".into()),
        dry_run: false,
    }));
    let Err(flowgate_api::ClientError::Rejected(e)) = refused else {
        panic!("not refused: {refused:?}");
    };
    assert!(
        e.message.contains(
            "needs 65 537 announced VIP addresses (announce = \"arp\"); \
             the XDP program holds at most 65 536"
        ),
        "{e:?}"
    );
    // Nothing of it ran: the same generation, the same keys in the maps.
    assert_eq!(generation(&mut client), running);
    let after = maps(&topo);
    assert_eq!(after, before);
    assert!(after.announced_addresses.is_empty());
    gw.assert_running();
    gw.stop();
}
