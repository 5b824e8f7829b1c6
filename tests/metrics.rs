//! The Prometheus endpoint end to end: two workers forward traffic of two
//! services over in-memory ports, a `MetricsServer` serves their counters,
//! and a plain TCP client scrapes and parses the exposition and checks it
//! against what the test itself saw on the wire.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use flowgate_dataplane::flow::{FlowTable, FlowTimeouts};
use flowgate_dataplane::metrics::{
    MetricsCollector, MetricsError, MetricsServer, RingStats, SampleSource, ServerOptions,
    WorkerMetrics,
};
use flowgate_dataplane::port::{MemoryFrames, MemoryPort, Port};
use flowgate_dataplane::table::Snapshot;
use flowgate_dataplane::wire::builder::FrameBuilder;
use flowgate_dataplane::wire::{self, bytes_to_addr, ip_proto, tcp_flags};
use flowgate_dataplane::worker::{CountingKernelPath, Worker};

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
[[neighbours]]
address = "198.18.1.12"
mac = "02:66:67:00:01:12"
interface = "fg-backend"
[[neighbours]]
address = "198.18.1.13"
mac = "02:66:67:00:01:13"
interface = "fg-backend"

[[services]]
name = "web"
protocol = "tcp"
vip = "198.18.100.10"
port = 80
[[services.backends]]
address = "198.18.1.11"
port = 8080
[[services.backends]]
address = "198.18.1.12"
port = 8080
[[services.backends]]
address = "198.18.1.13"
port = 8080
weight = 2

[[services]]
name = "dns"
protocol = "udp"
vip = "198.18.100.10"
port = 53
[[services.backends]]
address = "198.18.1.11"
port = 5353
[[services.backends]]
address = "198.18.1.12"
port = 5353
"#;

const FRAMES: u32 = 4_096;

/// One worker over its own two in-memory ports.
struct Lane {
    worker: Worker,
    memory: MemoryFrames,
    ports: Vec<MemoryPort>,
    kernel: CountingKernelPath,
}

/// What the test saw leave the gateway, per (worker, service, backend).
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    packets: u64,
    bytes: u64,
    new_flows: u64,
}

type SeenKey = (usize, &'static str, String);

impl Lane {
    fn new(flows: FlowTimeouts) -> Lane {
        let mut memory = MemoryFrames::new(FRAMES, 2_048);
        let pool = memory.pool();
        let mut lane = Lane {
            worker: Worker::new(FlowTable::new(4_096, flows), pool, 2, 64),
            memory,
            ports: vec![
                MemoryPort::new("fg-client", 256),
                MemoryPort::new("fg-backend", 256),
            ],
            kernel: CountingKernelPath::default(),
        };
        // The first poll fills the ports' fill rings.
        lane.worker.poll(
            &mut lane.ports,
            &mut lane.memory,
            &Snapshot::empty(),
            &mut lane.kernel,
            0,
        );
        lane
    }

    /// Receives `frame` on `port`, runs the worker, and returns what it
    /// sent on each port.
    fn exchange(&mut self, port: usize, frame: &[u8], snapshot: &Snapshot) -> [Vec<Vec<u8>>; 2] {
        assert!(self.ports[port].inject(&mut self.memory, frame));
        self.worker.poll(
            &mut self.ports,
            &mut self.memory,
            snapshot,
            &mut self.kernel,
            SEC,
        );
        let mut out = [Vec::new(), Vec::new()];
        for (p, o) in self.ports.iter_mut().zip(out.iter_mut()) {
            p.take_transmitted(&self.memory, o);
        }
        out
    }

    fn rings(&self, worker: usize) -> Vec<RingStats> {
        self.ports
            .iter()
            .map(|p| RingStats {
                worker,
                interface: p.name().to_owned(),
                queue: 0,
                rx_ring_full: p.rx_ring_full(),
                ..RingStats::default()
            })
            .collect()
    }
}

const SEC: u64 = 1_000_000_000;

/// (destination address, port) of a frame.
fn dst_of(frame: &[u8]) -> SocketAddr {
    let t = wire::parse(frame).unwrap().tuple;
    SocketAddr::new(bytes_to_addr(&t.dst), t.dst_port)
}

/// The backend's answer to a frame the gateway sent it.
fn answer(forwarded: &[u8]) -> Vec<u8> {
    let t = wire::parse(forwarded).unwrap().tuple;
    let backend = SocketAddr::new(bytes_to_addr(&t.dst), t.dst_port);
    let client = SocketAddr::new(bytes_to_addr(&t.src), t.src_port);
    let b = if t.protocol == ip_proto::UDP {
        FrameBuilder::udp(backend, client).payload(&[7; 40])
    } else {
        FrameBuilder::tcp(backend, client, tcp_flags::SYN | tcp_flags::ACK)
    };
    b.macs(forwarded[0..6].try_into().unwrap(), GW_BACKEND_MAC)
        .build()
}

/// Sends traffic through both workers and records what left the gateway.
fn drive(lanes: &mut [Lane], snapshot: &Snapshot, seen: &mut HashMap<SeenKey, Seen>) {
    for (w, lane) in lanes.iter_mut().enumerate() {
        for i in 0..60u16 {
            let client = sa(&format!("198.18.0.{}:{}", 2 + w, 10_000 + i));
            let (service, vip, frame) = if i % 3 == 0 {
                let q = FrameBuilder::udp(client, sa("198.18.100.10:53")).payload(&[1; 20]);
                ("dns", "198.18.100.10:53", from_client(q).build())
            } else {
                let syn = FrameBuilder::tcp(client, sa("198.18.100.10:80"), tcp_flags::SYN);
                ("web", "198.18.100.10:80", from_client(syn).build())
            };
            assert_eq!(dst_of(&frame), sa(vip));
            // Client → backend.
            let [_, to_backends] = lane.exchange(0, &frame, snapshot);
            assert_eq!(to_backends.len(), 1);
            let backend = dst_of(&to_backends[0]).ip().to_string();
            let entry = seen.entry((w, service, backend)).or_default();
            entry.new_flows += 1;
            entry.packets += 1;
            entry.bytes += to_backends[0].len() as u64;
            // Backend → client, 1 to 3 answers.
            for _ in 0..1 + i % 3 {
                let reply = answer(&to_backends[0]);
                let [to_clients, _] = lane.exchange(1, &reply, snapshot);
                assert_eq!(to_clients.len(), 1);
                entry.packets += 1;
                entry.bytes += to_clients[0].len() as u64;
            }
        }
        // Not the gateway's to forward: a dying packet, and one to no service.
        let dying = FrameBuilder::tcp(sa("198.18.0.9:1"), sa("198.18.100.10:80"), tcp_flags::SYN);
        lane.exchange(0, &from_client(dying).ttl(1).build(), snapshot);
        let ssh = FrameBuilder::tcp(sa("198.18.0.9:1"), sa("198.18.0.1:22"), tcp_flags::SYN);
        lane.exchange(0, &from_client(ssh).build(), snapshot);
    }
}

// ---- A small exposition parser ----------------------------------------

/// A series: metric name and labels.
type SeriesKey = (String, BTreeMap<String, String>);

/// Parses the text exposition strictly: every line is a `# HELP`, a
/// `# TYPE` or `name{labels} value`; every series' family has a TYPE
/// before it; no series appears twice.
fn parse_exposition(text: &str) -> HashMap<SeriesKey, f64> {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut series = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let at = || format!("line {}: {line:?}", n + 1);
        if let Some(rest) = line.strip_prefix("# ") {
            let mut words = rest.splitn(3, ' ');
            match (words.next(), words.next(), words.next()) {
                (Some("HELP"), Some(name), Some(_)) => assert!(valid_name(name), "{}", at()),
                (Some("TYPE"), Some(name), Some(kind)) => {
                    assert!(valid_name(name), "{}", at());
                    assert!(["counter", "gauge"].contains(&kind), "{}", at());
                    assert!(
                        types.insert(name.to_owned(), kind.to_owned()).is_none(),
                        "two TYPEs: {}",
                        at()
                    );
                }
                _ => panic!("unknown comment: {}", at()),
            }
            continue;
        }
        let (key, value) = parse_line(line).unwrap_or_else(|e| panic!("{e}: {}", at()));
        let kind = types
            .get(&key.0)
            .unwrap_or_else(|| panic!("no TYPE: {}", at()));
        assert_eq!(kind == "counter", key.0.ends_with("_total"), "{}", at());
        assert!(key.0.starts_with("flowgate_"), "{}", at());
        assert!(
            series.insert(key, value).is_none(),
            "duplicate series: {}",
            at()
        );
    }
    series
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_line(line: &str) -> Result<(SeriesKey, f64), String> {
    let name_end = line.find(['{', ' ']).ok_or_else(|| "no value".to_owned())?;
    let name = &line[..name_end];
    if !valid_name(name) {
        return Err(format!("bad name {name:?}"));
    }
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices();
        loop {
            let key: String = chars
                .by_ref()
                .map(|(_, c)| c)
                .take_while(|&c| c != '=')
                .collect();
            if !valid_name(&key) {
                return Err(format!("bad label name {key:?}"));
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err("label value not quoted".into());
            }
            let mut value = String::new();
            loop {
                match chars.next().map(|(_, c)| c) {
                    Some('\\') => match chars.next().map(|(_, c)| c) {
                        Some('n') => value.push('\n'),
                        Some(c @ ('\\' | '"')) => value.push(c),
                        other => return Err(format!("bad escape {other:?}")),
                    },
                    Some('"') => break,
                    Some(c) => value.push(c),
                    None => return Err("unterminated label value".into()),
                }
            }
            if labels.insert(key, value).is_some() {
                return Err("repeated label".into());
            }
            match chars.next() {
                Some((_, ',')) => continue,
                Some((i, '}')) => {
                    rest = &body[i + 1..];
                    break;
                }
                other => return Err(format!("unexpected {other:?} after a label")),
            }
        }
    }
    let value = rest
        .strip_prefix(' ')
        .ok_or_else(|| "no space before the value".to_owned())?;
    let value: f64 = value.parse().map_err(|_| format!("bad value {value:?}"))?;
    Ok(((name.to_owned(), labels), value))
}

// ---- HTTP --------------------------------------------------------------

/// Sends `request` and returns (status code, headers, body).
fn http(addr: SocketAddr, request: &[u8]) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a header block");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.parse().ok())
        .expect("a Content-Length");
    assert_eq!(length, body.len(), "body length");
    (status, head.to_owned(), body.to_owned())
}

fn scrape(addr: SocketAddr) -> HashMap<SeriesKey, f64> {
    let (status, head, body) = http(addr, b"GET /metrics HTTP/1.1\r\nHost: gw\r\n\r\n");
    assert_eq!(status, 200, "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    parse_exposition(&body)
}

/// The value of the one series `name` with (at least) `labels`; 0 if none.
fn value(m: &HashMap<SeriesKey, f64>, name: &str, labels: &[(&str, &str)]) -> u64 {
    let found: Vec<f64> = m
        .iter()
        .filter(|((n, l), _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, v)| *v)
        .collect();
    assert!(
        found.len() <= 1,
        "{name} {labels:?} matches {} series",
        found.len()
    );
    found.first().copied().unwrap_or(0.0) as u64
}

// ---- The tests -----------------------------------------------------------

struct Gateway {
    lanes: Arc<Mutex<Vec<Lane>>>,
    snapshot: Arc<Snapshot>,
    server: MetricsServer,
}

fn gateway(options: ServerOptions) -> Gateway {
    let cfg = config(RULES);
    let snapshot = Arc::new(Snapshot::build(&cfg, None));
    let timeouts = FlowTimeouts::from(&cfg.flows);
    let lanes = vec![Lane::new(timeouts), Lane::new(timeouts)];
    let workers = lanes
        .iter()
        .enumerate()
        .map(|(w, l)| WorkerMetrics::of_worker(w, Some(w), &l.worker))
        .collect();
    let lanes = Arc::new(Mutex::new(lanes));
    let collector = Mutex::new(MetricsCollector::new(workers));
    let source: SampleSource = Arc::new({
        let (lanes, snapshot) = (Arc::clone(&lanes), Arc::clone(&snapshot));
        move || {
            let rings = {
                let lanes = lanes.lock().unwrap();
                lanes
                    .iter()
                    .enumerate()
                    .flat_map(|(w, l)| l.rings(w))
                    .collect()
            };
            let sample = collector.lock().unwrap().collect(&snapshot, rings);
            (sample, Arc::clone(&snapshot))
        }
    });
    let server =
        MetricsServer::start_with("127.0.0.1:0".parse().unwrap(), source, options).unwrap();
    Gateway {
        lanes,
        snapshot,
        server,
    }
}

#[test]
fn a_scrape_reports_what_went_through_per_worker_service_and_backend() {
    let gw = gateway(ServerOptions::default());
    let addr = gw.server.local_addr();
    assert!(addr.ip().is_loopback() && addr.port() != 0);
    let mut seen = HashMap::new();
    {
        let mut lanes = gw.lanes.lock().unwrap();
        drive(&mut lanes, &gw.snapshot, &mut seen);
    }
    let m = scrape(addr);

    assert_eq!(value(&m, "flowgate_snapshot_generation", &[]), 1);
    assert_eq!(value(&m, "flowgate_services", &[]), 2);
    assert_eq!(value(&m, "flowgate_backends", &[]), 5);
    let lanes = gw.lanes.lock().unwrap();
    for (w, lane) in lanes.iter().enumerate() {
        let worker = w.to_string();
        let wl = [("worker", worker.as_str())];
        let c = lane.worker.pipeline().counters().snapshot();
        assert_eq!(value(&m, "flowgate_rx_packets_total", &wl), c.rx_packets);
        assert_eq!(value(&m, "flowgate_tx_packets_total", &wl), c.tx_packets);
        assert_eq!(
            value(&m, "flowgate_forwarded_packets_total", &wl),
            c.forwarded
        );
        assert_eq!(value(&m, "flowgate_passed_packets_total", &wl), 1);
        assert_eq!(value(&m, "flowgate_new_flows_total", &wl), 60);

        let ttl = [("worker", worker.as_str()), ("reason", "ttl_expired")];
        assert_eq!(value(&m, "flowgate_dropped_packets_total", &ttl), 1);
        assert_eq!(value(&m, "flowgate_connections", &wl), 60);
        assert_eq!(value(&m, "flowgate_connection_capacity", &wl), 4_096);
        let core = [("worker", worker.as_str()), ("core", worker.as_str())];
        assert_eq!(value(&m, "flowgate_worker_info", &core), 1);
        assert_eq!(value(&m, "flowgate_worker_snapshot_generation", &wl), 1);
        assert_eq!(value(&m, "flowgate_handed_out_packets_total", &wl), 0);
        let full = [("worker", worker.as_str()), ("reason", "handoff_full")];
        assert_eq!(value(&m, "flowgate_dropped_packets_total", &full), 0);
        assert!(m.contains_key(&(
            "flowgate_idle_polls_total".to_owned(),
            BTreeMap::from([("worker".to_owned(), worker.clone())])
        )));

        // Per backend: exactly what left the gateway for and from it.
        let mut forwarded = 0;
        let mut per_service: HashMap<&str, Seen> = HashMap::new();
        for ((sw, service, backend), s) in seen.iter().filter(|((sw, ..), _)| *sw == w) {
            let port = if *service == "web" { 8080 } else { 5353 };
            let label = format!("{backend}:{port}");
            let l = [
                ("worker", worker.as_str()),
                ("service", *service),
                ("backend", label.as_str()),
            ];
            assert_eq!(
                value(&m, "flowgate_backend_packets_total", &l),
                s.packets,
                "{sw} {label}"
            );
            assert_eq!(value(&m, "flowgate_backend_bytes_total", &l), s.bytes);
            assert_eq!(
                value(&m, "flowgate_backend_new_flows_total", &l),
                s.new_flows
            );
            assert_eq!(value(&m, "flowgate_backend_active_flows", &l), s.new_flows);
            forwarded += s.packets;
            let t = per_service.entry(service).or_default();
            t.packets += s.packets;
            t.bytes += s.bytes;
            t.new_flows += s.new_flows;
        }
        assert_eq!(
            forwarded, c.forwarded,
            "backends add up to what was forwarded"
        );
        // Every forwarded frame but a connection's first was a hit.
        assert_eq!(value(&m, "flowgate_flow_hits_total", &wl), forwarded - 60);
        let backend_sum: u64 = m
            .iter()
            .filter(|((n, l), _)| n == "flowgate_backend_packets_total" && l["worker"] == worker)
            .map(|(_, v)| *v as u64)
            .sum();
        assert_eq!(backend_sum, c.forwarded);
        for (service, t) in per_service {
            let l = [("worker", worker.as_str()), ("service", service)];
            assert_eq!(value(&m, "flowgate_service_packets_total", &l), t.packets);
            assert_eq!(value(&m, "flowgate_service_bytes_total", &l), t.bytes);
            assert_eq!(
                value(&m, "flowgate_service_new_flows_total", &l),
                t.new_flows
            );
            assert_eq!(value(&m, "flowgate_service_active_flows", &l), t.new_flows);
        }
        for port in ["fg-client", "fg-backend"] {
            let l = [
                ("worker", worker.as_str()),
                ("interface", port),
                ("queue", "0"),
            ];
            assert_eq!(value(&m, "flowgate_xsk_rx_ring_full_total", &l), 0);
            assert!(m.keys().any(|(n, l)| n == "flowgate_xsk_rx_ring_full_total"
                && l.get("interface").map(String::as_str) == Some(port)));
        }
    }
    // Both services spread over more than one backend, on each worker.
    for w in 0..2 {
        for service in ["web", "dns"] {
            let n = seen
                .keys()
                .filter(|(sw, s, _)| *sw == w && *s == service)
                .count();
            assert!(n >= 2, "worker {w} {service}: {n} backends");
        }
    }
    assert_eq!(
        value(
            &m,
            "flowgate_backend_weight",
            &[("service", "web"), ("backend", "198.18.1.13:8080")]
        ),
        2
    );
}

#[test]
fn scrapes_while_traffic_runs_only_ever_grow() {
    let gw = gateway(ServerOptions::default());
    let addr = gw.server.local_addr();
    let mut seen = HashMap::new();
    let mut last: Option<HashMap<SeriesKey, f64>> = None;
    for _ in 0..3 {
        {
            let mut lanes = gw.lanes.lock().unwrap();
            // The same clients each round: hits after the first.
            drive(&mut lanes, &gw.snapshot, &mut seen);
        }
        let m = scrape(addr);
        if let Some(prev) = &last {
            for ((name, labels), v) in prev {
                if name.ends_with("_total") {
                    let now = m
                        .get(&(name.clone(), labels.clone()))
                        .copied()
                        .unwrap_or(0.0);
                    assert!(now >= *v, "{name} {labels:?} went from {v} to {now}");
                }
            }
            let rx = |m: &HashMap<SeriesKey, f64>| {
                value(m, "flowgate_rx_packets_total", &[("worker", "0")])
            };
            assert!(rx(&m) > rx(prev));
        }
        last = Some(m);
    }
}

#[test]
fn other_paths_and_methods_are_refused() {
    let gw = gateway(ServerOptions::default());
    let addr = gw.server.local_addr();
    let (status, _, _) = http(addr, b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n");
    assert_eq!(status, 404);
    let (status, head, _) = http(addr, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(status, 405);
    assert!(head.contains("Allow: GET, HEAD"), "{head}");
    let (status, _, _) = http(addr, b"nonsense\r\n\r\n");
    assert_eq!(status, 400);
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"HEAD /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert_eq!(body, "");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(length > 1_000, "HEAD says how long the GET body is");
}

#[test]
fn an_oversized_request_is_refused() {
    let gw = gateway(ServerOptions::default());
    let mut big = b"GET /metrics HTTP/1.1\r\nX-Filler: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 64 * 1024));
    let mut s = TcpStream::connect(gw.server.local_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The server may stop reading (and close) before all of it is sent.
    let _ = s.write_all(&big);
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer:?}");
}

#[test]
fn a_silent_client_does_not_hold_up_others() {
    let gw = gateway(ServerOptions {
        request_timeout: Duration::from_secs(2),
        ..ServerOptions::default()
    });
    let addr = gw.server.local_addr();
    // Clients that connect and never write, or write half a request.
    let mut idle: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
    idle[0].write_all(b"GET /metr").unwrap();
    let start = Instant::now();
    let m = scrape(addr);
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(value(&m, "flowgate_snapshot_generation", &[]), 1);
    // The silent ones are answered 408 and closed after the deadline.
    let mut answer = String::new();
    idle[1]
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    idle[1].read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer:?}");
}

#[test]
fn too_many_clients_at_once_get_a_quick_503() {
    let gw = gateway(ServerOptions {
        max_connections: 2,
        request_timeout: Duration::from_secs(3),
        ..ServerOptions::default()
    });
    let addr = gw.server.local_addr();
    let held: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
    // Let the server take them into their slots.
    std::thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    let (status, _, _) = http(addr, b"GET /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(status, 503);
    assert!(start.elapsed() < Duration::from_secs(1));
    drop(held);
}

#[test]
fn non_loopback_addresses_are_refused_unless_asked_for() {
    let source: SampleSource = Arc::new(|| (Default::default(), Arc::new(Snapshot::empty())));
    for addr in ["198.18.0.1:9464", "0.0.0.0:0", "[2001:2::1]:9464", "[::]:0"] {
        let err = MetricsServer::start(addr.parse().unwrap(), Arc::clone(&source)).unwrap_err();
        assert!(matches!(err, MetricsError::NotLoopback(_)), "{addr}: {err}");
        assert!(err.to_string().contains("loopback"));
    }
    // Opted in: it is no longer refused for its address (0.0.0.0 binds).
    let opened = MetricsServer::start_with(
        "0.0.0.0:0".parse().unwrap(),
        source,
        ServerOptions {
            allow_non_loopback: true,
            ..ServerOptions::default()
        },
    )
    .unwrap();
    let port = opened.local_addr().port();
    // Reach it over loopback only: no traffic leaves the box.
    let (status, _, body) = http(
        SocketAddr::new(IpAddr::from([127, 0, 0, 1]), port),
        b"GET /metrics HTTP/1.1\r\n\r\n",
    );
    assert_eq!(status, 200);
    assert!(parse_exposition(&body)
        .contains_key(&("flowgate_snapshot_generation".to_owned(), BTreeMap::new())));
    opened.stop();
    // Stopped: the port no longer answers.
    let after = TcpStream::connect_timeout(
        &SocketAddr::new(IpAddr::from([127, 0, 0, 1]), port),
        Duration::from_millis(500),
    );
    assert!(after.is_err());
}

#[test]
fn the_parser_catches_what_it_must() {
    // The checks above mean something only if the parser refuses bad text.
    for bad in [
        "flowgate_x 1",                                        // no TYPE
        "# TYPE flowgate_x gauge\nflowgate_x{a=\"1} 2",        // unterminated
        "# TYPE flowgate_x gauge\nflowgate_x 1\nflowgate_x 2", // duplicate
        "# TYPE flowgate_x counter\nflowgate_x 1",             // counter without _total
        "# TYPE flowgate_x gauge\nflowgate_x{a=\"\\q\"} 1",    // bad escape
        "# TYPE flowgate_x gauge\nflowgate_x one",             // bad value
        "# NOTE something",
    ] {
        let caught = std::panic::catch_unwind(|| parse_exposition(bad));
        assert!(caught.is_err(), "accepted: {bad:?}");
    }
    let good = "# HELP flowgate_x_total a\n# TYPE flowgate_x_total counter\nflowgate_x_total{a=\"q\\\"\\n\\\\\",b=\"\"} 3\n";
    let m = parse_exposition(good);
    let labels: BTreeMap<String, String> = [
        ("a".to_owned(), "q\"\n\\".to_owned()),
        ("b".to_owned(), String::new()),
    ]
    .into();
    assert_eq!(m[&("flowgate_x_total".to_owned(), labels)], 3.0);
}
