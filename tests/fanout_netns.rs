//! Fan-out on the real daemon with real UDP servers: in the demo's
//! topology, each of the three backends runs tests/netns/udp-log-server.py
//! on port 7000, which logs every datagram it receives and answers it with
//! its name. Two fan-out services reach them: `publish_all`
//! (198.18.100.20:9000, `fanout_replies = "all"`) and `publish_first`
//! (198.18.100.21:9000, `"first"`). The client sends datagrams from one
//! socket to each; for every one, each backend logs it (with the client's
//! address: the gateway does not change the source), and the client hears
//! three answers from `publish_all`'s VIP, one from each backend, and
//! exactly one from `publish_first`'s. Run as root; FLOWGATE_SKIP_NETNS=1
//! skips elsewhere.

mod netns;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use flowgate_dataplane::testnet::ChildGuard;
use netns::{backend_v4, one_gateway_at_a_time, privileged, udp_query, Topology, CLIENT_V4};

const ALL_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 20);
const FIRST_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 21);
const VIP_PORT: u16 = 9000;
const PORT: u16 = 7000;
/// How long the client listens for answers after each datagram: the
/// answers of a veth topology come within milliseconds, so a late one
/// past this would be a fault of its own.
const LISTEN: Duration = Duration::from_millis(700);
const ROUNDS: usize = 5;

/// The demo's rules and the two fan-out services.
fn config(topo: &Topology) -> String {
    let mut text = topo.config(&[0]);
    for (name, vip, replies) in [
        ("publish_all", ALL_VIP, "all"),
        ("publish_first", FIRST_VIP, "first"),
    ] {
        text.push_str(&format!(
            "\n[[services]]\nname = \"{name}\"\nprotocol = \"udp\"\nvip = \"{vip}\"\n\
             port = {VIP_PORT}\nscheduler = \"fanout\"\nfanout_replies = \"{replies}\"\n"
        ));
        for b in 1..=3 {
            text.push_str(&format!(
                "\n[[services.backends]]\naddress = \"{}\"\nport = {PORT}\n",
                backend_v4(b)
            ));
        }
    }
    text
}

/// Backend `n`'s logging server; killed (and reaped) on drop, also when
/// the test fails.
struct LogServer {
    _process: ChildGuard,
    log: PathBuf,
}

impl LogServer {
    fn start(topo: &Topology, n: u8) -> LogServer {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/netns/udp-log-server.py");
        let python = if std::path::Path::new("/usr/bin/python3").exists() {
            "/usr/bin/python3"
        } else {
            "python3"
        };
        let log = topo.scratch.path(&format!("b{n}.log"));
        let ns = &topo.backends[usize::from(n - 1)];
        let process = ns
            .spawn(
                python,
                &[
                    script,
                    &format!("b{n}"),
                    &PORT.to_string(),
                    log.to_str().unwrap(),
                ],
            )
            .unwrap_or_else(|e| panic!("udp-log-server.py in {}: {e}", ns.name()));
        let local = SocketAddr::from(([127, 0, 0, 1], PORT));
        let deadline = Instant::now() + Duration::from_secs(5);
        while udp_query(ns, local, Duration::from_millis(100)).is_err() {
            assert!(
                Instant::now() < deadline,
                "udp-log-server.py in {} did not answer within 5 s",
                ns.name()
            );
        }
        LogServer {
            _process: process,
            log,
        }
    }

    /// The payloads it logged from `from`.
    fn logged_from(&self, from: SocketAddr) -> Vec<String> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let prefix = format!("{} {} ", from.ip(), from.port());
        text.lines()
            .filter_map(|line| line.strip_prefix(&prefix).map(str::to_owned))
            .collect()
    }
}

/// Every answer `socket` receives within `LISTEN`, with where it came from.
fn answers(socket: &UdpSocket) -> Vec<(String, SocketAddr)> {
    let mut got = Vec::new();
    let end = Instant::now() + LISTEN;
    let mut buf = [0u8; 512];
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        socket
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => got.push((String::from_utf8_lossy(&buf[..n]).into_owned(), from)),
            Err(_) => break,
        }
    }
    got
}

#[test]
fn three_udp_backends_each_log_every_datagram_and_the_client_hears_all_or_first() {
    if !privileged() {
        return;
    }
    let _one = one_gateway_at_a_time();
    let topo = Topology::new(1);
    let servers: Vec<LogServer> = (1..=3).map(|n| LogServer::start(&topo, n)).collect();
    let mut gateway = topo.start_gateway(&config(&topo));
    let socket = topo
        .client
        .enter(|| UdpSocket::bind("0.0.0.0:0"))
        .unwrap()
        .unwrap();
    let me = SocketAddr::new(CLIENT_V4.into(), socket.local_addr().unwrap().port());

    for (vip, want) in [(ALL_VIP, 3), (FIRST_VIP, 1)] {
        let to = SocketAddr::new(vip.into(), VIP_PORT);
        for round in 0..ROUNDS {
            let payload = format!("{vip} round {round}");
            socket.send_to(payload.as_bytes(), to).unwrap();
            let got = answers(&socket);
            assert_eq!(
                got.len(),
                want,
                "{payload}: answers {got:?}\n{}",
                gateway.log()
            );
            for (text, from) in &got {
                assert_eq!(*from, to, "{payload}: answered from the VIP");
                assert!(text.ends_with(&payload), "{payload}: answer {text:?}");
            }
            let names: BTreeSet<&str> = got
                .iter()
                .filter_map(|(text, _)| text.split(' ').next())
                .collect();
            assert_eq!(names.len(), want, "{payload}: distinct backends {names:?}");
            // Each backend received it, from the client itself.
            for (b, server) in servers.iter().enumerate() {
                let logged = server.logged_from(me);
                assert_eq!(
                    logged.iter().filter(|p| **p == payload).count(),
                    1,
                    "b{} logged {logged:?}",
                    b + 1
                );
            }
        }
    }
    gateway.assert_running();
    gateway.stop();
    drop(servers);
}
