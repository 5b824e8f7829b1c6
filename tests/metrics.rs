//! The Prometheus endpoint end to end: two workers forward traffic of two
//! services over in-memory ports, a `MetricsServer` serves their counters,
//! and a plain TCP client scrapes and parses the exposition and checks it
//! against what the test itself saw on the wire.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use flowgate_dataplane::flow::{FlowTable, FlowTimeouts};
use flowgate_dataplane::metrics::{
    MetricsCollector, MetricsError, MetricsServer, RingStats, SampleSource, ServerOptions,
    ServerStats, UnixListen, WorkerMetrics,
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
                    assert!(
                        ["counter", "gauge", "histogram"].contains(&kind),
                        "{}",
                        at()
                    );
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
        // A histogram's series are its name with _bucket, _sum, _count.
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| key.0.strip_suffix(suffix))
            .filter(|f| types.get(*f).is_some_and(|k| k == "histogram"))
            .unwrap_or(&key.0);
        let kind = types
            .get(family)
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

/// Reads one response from `s`: (status code, head, body). The body is
/// `Content-Length` bytes (none after a HEAD), so the server may keep the
/// connection open.
fn read_response(s: &mut impl Read, after_head_request: bool) -> (u16, String, String) {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = s.read(&mut buf).expect("a response");
        assert!(
            n > 0,
            "closed before a whole head: {:?}",
            String::from_utf8_lossy(&raw)
        );
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8(raw[..head_end].to_vec()).unwrap();
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
    let want = if after_head_request { 0 } else { length };
    let mut body = raw[head_end + 4..].to_vec();
    while body.len() < want {
        let n = s.read(&mut buf).expect("the body");
        assert!(n > 0, "closed after {} of {want} body bytes", body.len());
        body.extend_from_slice(&buf[..n]);
    }
    assert_eq!(body.len(), want, "body length");
    (status, head, String::from_utf8(body).unwrap())
}

/// Sends `request` on a new connection and returns (status code, head,
/// body).
fn http(addr: SocketAddr, request: &[u8]) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    read_response(&mut s, request.starts_with(b"HEAD "))
}

const SCRAPE: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: gw\r\n\r\n";

fn check_scrape((status, head, body): (u16, String, String)) -> HashMap<SeriesKey, f64> {
    assert_eq!(status, 200, "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    parse_exposition(&body)
}

fn scrape(addr: SocketAddr) -> HashMap<SeriesKey, f64> {
    check_scrape(http(addr, SCRAPE))
}

/// Whether the server has closed `s` (end of stream, or a reset when it
/// closed over unread bytes), without waiting.
fn is_closed(s: &TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    let closed = match (&*s).read(&mut buf) {
        Ok(0) => true,
        Ok(n) => panic!("an idle connection got {n} bytes"),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
        Err(_) => true,
    };
    s.set_nonblocking(false).unwrap();
    closed
}

/// Waits until `until` for the server to close `s`; true if it did.
fn closed_by(s: &TcpStream, until: Instant) -> bool {
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return is_closed(s);
        }
        s.set_read_timeout(Some(left)).unwrap();
        let mut buf = [0u8; 64];
        match (&*s).read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => panic!("an idle connection got {n} bytes"),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
}

/// Lifts this process's open-file limit to `want` (the idle-connection
/// tests hold both ends of a thousand connections and more).
fn raise_fd_limit(want: u64) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    assert!(
        hard >= want,
        "RLIMIT_NOFILE's hard limit {hard} is below {want}"
    );
    if soft < want {
        setrlimit(Resource::RLIMIT_NOFILE, want, hard).unwrap();
    }
}

/// Waits (up to 10 s) until `server`'s stats pass `check`.
fn wait_stats(server: &MetricsServer, check: impl Fn(&ServerStats) -> bool) {
    let until = Instant::now() + Duration::from_secs(10);
    while !check(&server.stats()) {
        assert!(Instant::now() < until, "{:?}", server.stats());
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits (up to 10 s) until `server` has accepted `n` connections.
fn wait_accepted(server: &MetricsServer, n: u64) {
    wait_stats(server, |s| s.accepted >= n);
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

impl Gateway {
    fn addr(&self) -> SocketAddr {
        self.server.local_addr().expect("a TCP address")
    }
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
    let server = MetricsServer::start_with(sa("127.0.0.1:0"), source, options).unwrap();
    Gateway {
        lanes,
        snapshot,
        server,
    }
}

#[test]
// One drive and one scrape, then every series checked against what went
// through: one scenario, read top to bottom.
#[allow(clippy::too_many_lines)]
fn a_scrape_reports_what_went_through_per_worker_service_and_backend() {
    let gw = gateway(ServerOptions::default());
    let addr = gw.addr();
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
    // Neither service routes by client (no SET, zone, canary or path): no
    // routing series (tests/routing_counters.rs scrapes a service that
    // does).
    assert!(
        !m.keys()
            .any(|(n, _)| n.starts_with("flowgate_service_route_")),
        "routing series for services that route by nothing"
    );
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
    let addr = gw.addr();
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
    let addr = gw.addr();
    let (status, _, body) = http(addr, b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n");
    assert_eq!(status, 404);
    assert_eq!(body, "not found: try /metrics\n");
    let (status, head, _) = http(addr, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(status, 405);
    assert!(head.contains("Allow: GET, HEAD"), "{head}");
    let (status, _, _) = http(addr, b"nonsense\r\n\r\n");
    assert_eq!(status, 400);
    // HTTP/1.0 without keep-alive: the answer, then the end of the stream.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"HEAD /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    // hyper answers in the request's version.
    assert!(head.starts_with("HTTP/1.0 200 "), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert_eq!(body, "");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .unwrap()
        .parse()
        .unwrap();
    let (_, _, get) = http(addr, SCRAPE);
    assert_eq!(length, get.len(), "HEAD says how long the GET body is");
}

#[test]
fn an_oversized_request_is_refused() {
    let gw = gateway(ServerOptions::default());
    let mut big = b"GET /metrics HTTP/1.1\r\nX-Filler: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 64 * 1024));
    let mut s = TcpStream::connect(gw.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The server may stop reading (and close) before all of it is sent.
    let _ = s.write_all(&big);
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer:?}");
}

#[test]
fn a_scraper_keeps_its_connection_alive_until_the_keep_alive_timeout() {
    let keep_alive = Duration::from_secs(1);
    let gw = gateway(ServerOptions {
        keep_alive_timeout: keep_alive,
        header_read_timeout: Duration::from_secs(10),
        ..ServerOptions::default()
    });
    let mut s = TcpStream::connect(gw.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for _ in 0..3 {
        s.write_all(SCRAPE).unwrap();
        let m = check_scrape(read_response(&mut s, false));
        assert_eq!(value(&m, "flowgate_snapshot_generation", &[]), 1);
    }
    assert_eq!(gw.server.stats().accepted, 1, "one connection for all");
    let answered = Instant::now();
    assert!(closed_by(
        &s,
        answered + keep_alive + Duration::from_secs(2)
    ));
    let idle = answered.elapsed();
    assert!(idle >= keep_alive - Duration::from_millis(50), "{idle:?}");
    // The server counts it just after closing it.
    wait_stats(&gw.server, |s| s.timed_out == 1 && s.open == 0);
}

#[test]
fn a_silent_or_slow_client_is_closed_at_the_header_deadline() {
    let header = Duration::from_secs(1);
    let gw = gateway(ServerOptions {
        header_read_timeout: header,
        keep_alive_timeout: Duration::from_secs(10),
        ..ServerOptions::default()
    });
    let addr = gw.addr();
    let start = Instant::now();
    // One says nothing, one half a request line; one sends a byte every
    // 100 ms, which never finishes a head.
    let silent = TcpStream::connect(addr).unwrap();
    let mut half = TcpStream::connect(addr).unwrap();
    half.write_all(b"GET /metr").unwrap();
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nX-Slow: ")
        .unwrap();
    // Meanwhile a scraper is served at once.
    let scraped = Instant::now();
    let m = scrape(addr);
    assert!(
        scraped.elapsed() < Duration::from_secs(1),
        "{:?}",
        scraped.elapsed()
    );
    assert_eq!(value(&m, "flowgate_snapshot_generation", &[]), 1);
    let mut slow_closed = None;
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(100));
        if slow.write_all(b"a").is_err() || is_closed(&slow) {
            slow_closed = Some(start.elapsed());
            break;
        }
    }
    let slow_closed = slow_closed.expect("the dribbling client was never closed");
    assert!(
        slow_closed >= header - Duration::from_millis(50)
            && slow_closed < header + Duration::from_secs(2),
        "{slow_closed:?}"
    );
    for s in [&silent, &half] {
        assert!(closed_by(s, start + header + Duration::from_secs(2)));
    }
    assert!(start.elapsed() >= header);
    wait_stats(&gw.server, |s| s.timed_out == 3 && s.open == 0);
}

/// How long one scrape may take while a thousand idle connections are open
/// (they typically take a few milliseconds).
const SCRAPE_BOUND: Duration = Duration::from_secs(1);

/// Twenty scrapes, each on a new connection, each whole and in time; the
/// slowest one's time.
fn twenty_scrapes(addr: SocketAddr) -> Duration {
    let mut slowest = Duration::ZERO;
    for i in 0..20 {
        let start = Instant::now();
        let m = scrape(addr);
        let took = start.elapsed();
        assert!(took < SCRAPE_BOUND, "scrape {i} took {took:?}");
        assert_eq!(value(&m, "flowgate_snapshot_generation", &[]), 1);
        assert_eq!(value(&m, "flowgate_services", &[]), 2);
        slowest = slowest.max(took);
    }
    slowest
}

/// A thousand connections, every tenth with half a request head.
fn hold_idle(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|i| {
            let mut s = TcpStream::connect(addr).unwrap();
            if i % 10 == 0 {
                // It may already have been closed (evicted).
                let _ = s.write_all(b"GET /metr");
            }
            s
        })
        .collect()
}

#[test]
fn a_thousand_idle_connections_do_not_lock_a_scraper_out() {
    raise_fd_limit(8_192);
    // Long deadlines: here the cap (256 by default) and its eviction keep
    // the scraper in, not the timeouts.
    let gw = gateway(ServerOptions {
        header_read_timeout: Duration::from_secs(60),
        keep_alive_timeout: Duration::from_secs(60),
        ..ServerOptions::default()
    });
    let cap = ServerOptions::default().max_connections;
    let addr = gw.addr();
    let idle = hold_idle(addr, 1_000);
    wait_accepted(&gw.server, 1_000);
    let slowest = twenty_scrapes(addr);
    eprintln!("1 000 idle connections, cap {cap}: slowest of 20 scrapes {slowest:?}");
    let stats = gw.server.stats();
    assert!(stats.open <= cap, "{stats:?}");
    assert_eq!(stats.accepted, 1_020);
    assert!(
        (1_000 - cap as u64..=1_020 - cap as u64).contains(&stats.evicted),
        "{stats:?}"
    );
    assert_eq!(stats.timed_out, 0);
    // The ones idle longest went: the first 744 connections are closed,
    // the last 236 still open (the scrapes took up to 20 more).
    let (first, last) = (1_000 - cap, 1_000 - cap + 20);
    for (i, s) in idle.iter().enumerate() {
        if i < first {
            assert!(closed_by(s, Instant::now() + Duration::from_secs(5)), "{i}");
        } else if i >= last {
            assert!(!is_closed(s), "{i}");
        }
    }
}

#[test]
fn a_client_connecting_in_a_loop_does_not_lock_a_scraper_out() {
    raise_fd_limit(8_192);
    let gw = gateway(ServerOptions {
        header_read_timeout: Duration::from_secs(60),
        keep_alive_timeout: Duration::from_secs(60),
        ..ServerOptions::default()
    });
    let addr = gw.addr();
    // New connections as fast as one thread can open them, a thousand
    // held at a time (the oldest dropped), until the scrapes are done.
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = std::thread::spawn({
        let done = Arc::clone(&done);
        move || {
            let mut held = std::collections::VecDeque::new();
            let mut opened = 0u64;
            let until = Instant::now() + Duration::from_secs(60);
            while !done.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < until {
                if let Ok(s) = TcpStream::connect(addr) {
                    held.push_back(s);
                    opened += 1;
                }
                if held.len() > 1_000 {
                    held.pop_front();
                }
            }
            opened
        }
    });
    wait_accepted(&gw.server, 2_000);
    let slowest = twenty_scrapes(addr);
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let opened = flood.join().unwrap();
    eprintln!("{opened} connections opened in a loop: slowest of 20 scrapes {slowest:?}");
    assert!(gw.server.stats().evicted > 0, "{:?}", gw.server.stats());
}

#[test]
fn a_thousand_idle_connections_under_the_cap_are_held_until_their_deadline() {
    raise_fd_limit(8_192);
    let header = Duration::from_secs(3);
    let gw = gateway(ServerOptions {
        header_read_timeout: header,
        max_connections: 2_000,
        ..ServerOptions::default()
    });
    let addr = gw.addr();
    let start = Instant::now();
    let idle = hold_idle(addr, 1_000);
    wait_accepted(&gw.server, 1_000);
    let slowest = twenty_scrapes(addr);
    eprintln!("1 000 idle connections held: slowest of 20 scrapes {slowest:?}");
    let stats = gw.server.stats();
    assert_eq!(stats.evicted, 0, "{stats:?}");
    // All still open before the deadline: the checks below mean something
    // only if this part finished well inside it.
    let checked = Instant::now();
    let still_open = idle.iter().filter(|s| !is_closed(s)).count();
    if checked.duration_since(start) < header - Duration::from_millis(500) {
        assert_eq!(still_open, 1_000);
    }
    // Then each is closed at its deadline: all by 3 s after the last was
    // accepted, with two seconds to spare.
    let until = Instant::now() + header + Duration::from_secs(2);
    for (i, s) in idle.iter().enumerate() {
        assert!(closed_by(s, until), "connection {i} still open");
    }
    assert!(start.elapsed() >= header);
    wait_stats(&gw.server, |s| s.timed_out == 1_000 && s.open == 0);
}

#[test]
fn at_the_cap_the_connection_idle_longest_is_closed_for_a_new_one() {
    let gw = gateway(ServerOptions {
        max_connections: 2,
        header_read_timeout: Duration::from_secs(30),
        ..ServerOptions::default()
    });
    let addr = gw.addr();
    let older = TcpStream::connect(addr).unwrap();
    wait_accepted(&gw.server, 1);
    let newer = TcpStream::connect(addr).unwrap();
    wait_accepted(&gw.server, 2);
    let start = Instant::now();
    let m = scrape(addr);
    assert!(start.elapsed() < Duration::from_secs(1));
    assert_eq!(value(&m, "flowgate_snapshot_generation", &[]), 1);
    assert!(closed_by(&older, Instant::now() + Duration::from_secs(5)));
    assert!(!is_closed(&newer));
    assert_eq!(gw.server.stats().evicted, 1);
}

fn empty_source() -> SampleSource {
    Arc::new(|| (Default::default(), Arc::new(Snapshot::empty())))
}

#[test]
fn non_loopback_addresses_are_refused_unless_asked_for() {
    let source = empty_source();
    for addr in ["198.18.0.1:9464", "0.0.0.0:0", "[2001:2::1]:9464", "[::]:0"] {
        let addr: SocketAddr = addr.parse().unwrap();
        let err = MetricsServer::start(addr, Arc::clone(&source)).unwrap_err();
        assert!(matches!(err, MetricsError::NotLoopback(_)), "{addr}: {err}");
        assert!(err.to_string().contains("loopback"));
    }
    // Opted in: it is no longer refused for its address (0.0.0.0 binds).
    let opened = MetricsServer::start_with(
        sa("0.0.0.0:0"),
        source,
        ServerOptions {
            allow_non_loopback: true,
            ..ServerOptions::default()
        },
    )
    .unwrap();
    let port = opened.local_addr().unwrap().port();
    // Reach it over loopback only: no traffic leaves the box.
    let loopback = SocketAddr::new(IpAddr::from([127, 0, 0, 1]), port);
    let (status, _, body) = http(loopback, SCRAPE);
    assert_eq!(status, 200);
    assert!(parse_exposition(&body)
        .contains_key(&("flowgate_snapshot_generation".to_owned(), BTreeMap::new())));
    // A kept-alive connection does not hold up the stop.
    let mut kept = TcpStream::connect(loopback).unwrap();
    kept.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    kept.write_all(SCRAPE).unwrap();
    read_response(&mut kept, false);
    let stopping = Instant::now();
    opened.stop();
    assert!(
        stopping.elapsed() < Duration::from_secs(1),
        "{:?}",
        stopping.elapsed()
    );
    assert!(is_closed(&kept));
    // Stopped: the port no longer answers.
    let after = TcpStream::connect_timeout(&loopback, Duration::from_millis(500));
    assert!(after.is_err());
}

/// A fresh directory for a test's sockets, removed at the end.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("fgt-metrics-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn mode_of(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn metrics_on_a_unix_socket_have_its_mode_and_go_with_the_server() {
    let dir = TempDir::new("unix");
    let path = dir.0.join("metrics.sock");
    let server = MetricsServer::start(UnixListen::new(&path), empty_source()).unwrap();
    assert_eq!(server.local_addr(), None);
    assert_eq!(
        server.address().to_string(),
        format!("unix:{}", path.display())
    );
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(mode_of(&path), 0o600);
    // Scraped over the socket, twice on one connection.
    let mut s = UnixStream::connect(&path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for _ in 0..2 {
        s.write_all(SCRAPE).unwrap();
        let m = check_scrape(read_response(&mut s, false));
        assert_eq!(value(&m, "flowgate_snapshot_generation", &[]), 0);
    }
    // A second server on the same path is refused, and leaves it be.
    let err = MetricsServer::start(UnixListen::new(&path), empty_source()).unwrap_err();
    assert!(matches!(err, MetricsError::SocketInUse(_)), "{err}");
    assert!(err.to_string().contains("in use"), "{err}");
    assert!(UnixStream::connect(&path).is_ok());
    // Stopped: the file is gone, the kept-alive connection closed.
    server.stop();
    assert!(!path.exists());
    let mut buf = [0u8; 16];
    assert!(matches!(s.read(&mut buf), Ok(0) | Err(_)));

    // A configured mode and group.
    let gid = std::fs::metadata(&dir.0).unwrap().gid();
    let unix = UnixListen {
        mode: 0o660,
        group: Some(gid),
        ..UnixListen::new(&path)
    };
    let server = MetricsServer::start(unix, empty_source()).unwrap();
    assert_eq!(mode_of(&path), 0o660);
    assert_eq!(std::fs::metadata(&path).unwrap().gid(), gid);
    drop(server);
    assert!(!path.exists(), "removed on drop too");
}

#[test]
fn a_stale_unix_socket_is_replaced_and_anything_else_is_left_alone() {
    let dir = TempDir::new("stale");
    let path = dir.0.join("metrics.sock");
    // A socket file nobody listens on, as a crashed daemon leaves it.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let server = MetricsServer::start(UnixListen::new(&path), empty_source()).unwrap();
    let mut s = UnixStream::connect(&path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(SCRAPE).unwrap();
    check_scrape(read_response(&mut s, false));
    drop(server);

    // A regular file is not replaced.
    std::fs::write(&path, "precious").unwrap();
    let err = MetricsServer::start(UnixListen::new(&path), empty_source()).unwrap_err();
    assert!(matches!(err, MetricsError::NotASocket(_)), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
    // A missing directory is made (traversable, not listable by others).
    let deeper = dir.0.join("run").join("metrics.sock");
    let server = MetricsServer::start(UnixListen::new(&deeper), empty_source()).unwrap();
    assert_eq!(mode_of(deeper.parent().unwrap()), 0o711);
    assert_eq!(mode_of(&deeper), 0o600);
    drop(server);
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
