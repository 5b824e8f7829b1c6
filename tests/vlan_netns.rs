//! Clients on VLANs reach the backends through the VIP and back: the real
//! `flowgate` binary in the demo's namespaces (tests/netns/), its
//! client-facing interface accepting VLAN 100 and sending tagged 100.
//!
//! This kernel has no 802.1Q devices, so the tagged client is scapy on the
//! client's `eth0` (a packet socket sends the tagged frames and sees the
//! answers, tags and all). The backends have no VLAN device either: a
//! frame that reached them tagged would be dropped by their kernel, so
//! every answer shows the tag was taken off on the way in; scapy checks
//! that each answer came back from the VIP tagged 100 (or untagged, while
//! the interface has no `egress_vlan`), and that an id the interface does
//! not accept reaches no backend.
//!
//! Run as root; FLOWGATE_SKIP_NETNS=1 skips elsewhere. Needs the binaries
//! built first (scripts/test.sh does it).

mod netns;

use netns::*;

/// Sends `count` UDP queries to the VIP's DNS service from the client's
/// `eth0`, tagged `vlan`, each from its own port; prints one line per
/// answer: its tag (or "untagged"), source, and payload.
const TAGGED_QUERIES: &str = r#"
import select, sys, time
from scapy.all import Dot1Q, Ether, IP, UDP, conf
vlan, count = int(sys.argv[1]), int(sys.argv[2])
sock = conf.L2socket(iface="eth0")
for i in range(count):
    port = 42000 + i
    sock.send(Ether(src="02:66:67:00:00:02", dst="02:66:67:00:00:01")
              / Dot1Q(vlan=vlan)
              / IP(src="198.18.0.2", dst="198.18.100.10")
              / UDP(sport=port, dport=53) / b"who are you?")
    answer, deadline = None, time.time() + 2
    while answer is None and time.time() < deadline:
        if not select.select([sock], [], [], max(0, deadline - time.time()))[0]:
            break
        p = sock.recv()
        if p is not None and UDP in p and p[UDP].dport == port:
            answer = p
    if answer is None:
        print("none")
        continue
    tag = answer[Dot1Q].vlan if Dot1Q in answer else "untagged"
    print(tag, f"{answer[IP].src}:{answer[UDP].sport}",
          bytes(answer[UDP].payload).decode(errors="replace"))
"#;

/// The answers to `count` tagged queries, one line each.
fn tagged_queries(topo: &Topology, vlan: u16, count: usize) -> Vec<String> {
    let out = topo
        .client
        .exec(
            "/usr/bin/python3",
            &["-c", TAGGED_QUERIES, &vlan.to_string(), &count.to_string()],
        )
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// flowgate started in the gateway's namespace with `config`, killed
/// when dropped; its log in the scratch directory.
struct Flowgate {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl Flowgate {
    fn start(topo: &Topology, config: &str) -> Flowgate {
        let path = topo.scratch.path("flowgate-tagged.toml");
        std::fs::write(&path, config).unwrap();
        let log = topo.scratch.path("flowgate-tagged.log");
        let stderr = std::fs::File::create(&log).unwrap();
        let bin = flowgate_dataplane::testnet::workspace_binary("flowgate").unwrap();
        let child = topo
            .gateway
            .command(
                bin.to_str().unwrap(),
                &["run", "--config", path.to_str().unwrap()],
            )
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        Flowgate { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Flowgate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn tagged_clients_reach_real_backends_through_the_vip_and_get_tagged_answers() {
    if !privileged() {
        return;
    }
    let _one = one_gateway_at_a_time();
    let topo = Topology::new(1);
    // The tags stay in the frames, as the XDP program needs them.
    topo.gateway
        .exec("ethtool", &["-K", "fg-client", "rxvlan", "off"])
        .ok();
    // First VLAN 100 accepted, answers untagged (no egress_vlan):
    // start_gateway waits until an untagged query is answered through the
    // VIP, and a tagged one is answered untagged.
    let accepting = topo.config(&[0]).replacen(
        "mac = \"02:66:67:00:00:01\"\n",
        "mac = \"02:66:67:00:00:01\"\nvlans = [100]\n",
        1,
    );
    assert!(accepting.contains("vlans = [100]"), "{accepting}");
    let gw = topo.start_gateway(&accepting);
    let untagged = tagged_queries(&topo, 100, 1);
    assert!(
        matches!(&untagged[..], [a] if a.starts_with("untagged 198.18.100.10:53 b")),
        "{untagged:?}\n{}",
        gw.log()
    );
    gw.stop();

    // Restarted ([interfaces] are read at start) sending tagged 100: an
    // untagged client could not be answered now, so it is ready once a
    // tagged query is (bounded).
    let tagging = accepting.replacen("vlans = [100]\n", "vlans = [100]\negress_vlan = 100\n", 1);
    let mut gw = Flowgate::start(&topo, &tagging);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let first = tagged_queries(&topo, 100, 1);
        if first.first().is_some_and(|a| a != "none") {
            break;
        }
        if let Ok(Some(status)) = gw.child.try_wait() {
            panic!("flowgate exited ({status}):\n{}", gw.log());
        }
        assert!(
            std::time::Instant::now() < deadline,
            "flowgate did not answer within 30 s:\n{}",
            gw.log()
        );
    }
    topo.clear_served();

    let answers = tagged_queries(&topo, 100, 10);
    assert_eq!(answers.len(), 10, "{answers:?}\n{}", gw.log());
    for answer in &answers {
        let fields: Vec<&str> = answer.split(' ').collect();
        assert!(
            matches!(fields[..], ["100", "198.18.100.10:53", name] if name.starts_with('b')),
            "{answer}: not a backend's answer from the VIP tagged 100\n{answers:?}"
        );
    }
    // The backends saw the client's own address: DNAT only.
    let served = topo.served();
    assert_eq!(served.len(), 10, "{served:?}");
    assert!(
        served.iter().all(|s| s.peer.ip() == CLIENT_V4),
        "{served:?}"
    );

    // An id the interface does not accept reaches no backend.
    topo.clear_served();
    let refused = tagged_queries(&topo, 300, 2);
    assert_eq!(refused, ["none", "none"], "{}", gw.log());
    assert!(topo.served().is_empty());
    assert!(gw.child.try_wait().unwrap().is_none(), "{}", gw.log());
}
