//! A flood that fills the connection table breaks no idle established
//! connection, on every scheduler (issue 12 point 2), on the real gateway
//! with the project's generator. tests/flow_table_flood.rs shows the same
//! through the pipeline in memory; this is the daemon, its XDP program and
//! AF_XDP sockets, real TCP stacks and nginx.
//!
//! The gateway's table holds 65 536 connections. Idle connections are
//! opened first: 100 HTTP keep-alive connections through each of
//! `ft-maglev`, `ft-wrr` and `ft-sh` (one service per scheduler, over an
//! nginx on each backend), each answered once, and one UDP flow through
//! the demo's `dns`.
//! Then the generator floods, at its maximum rate from random sources
//! within 198.18.0.0/15, SYNs to each TCP service in turn and one-way UDP
//! to `ft-sink` (whose backends never answer), each for
//! `FLOOD_SECONDS`: several times the table in new flows. After that every
//! idle connection still works both ways (a second request on the same
//! connection is answered by the same backend; the UDP flow's socket is
//! answered by the same backend from the VIP), the table was full, and the
//! counters show it: new flows far beyond the table's capacity, all but
//! the table's worth of them evicted (embryonic: the established ones all
//! survived); `flow_table_full` would count new flows that found no
//! room, and stays 0 while embryonic entries can make room.
//! The second test shows the first can fail: with
//! `flows.evict_established = true` the same floods break idle `wrr`
//! connections.
//!
//! Each idle connection leaves from a source port of its own. Left to
//! the kernel, one client port can serve two connections to different
//! VIPs at once; when both services pick the same backend, the two are
//! one connection to that backend (same address and port at both ends):
//! its TCP stack resets one, and no gateway without source NAT can tell
//! their replies apart (`flowgate_connection_departures_total` counts the
//! second taking the reply tuple over as `reply_conflict`; the flood's
//! random sources make a few such pairs themselves). That is a property of
//! the client's port choice, not of a full table, so the test rules it out
//! for its idle connections.
//!
//! Run as root; FLOWGATE_SKIP_NETNS=1 skips elsewhere.

#[path = "netns/flood.rs"]
mod flood;
mod netns;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use flood::{rss_kib, with_metrics, FloodReport, Generator, Nginxes, Scrape};
use netns::{backend_v4, one_gateway_at_a_time, privileged, Topology, WEB_VIP};

const CAPACITY: u64 = 65_536;
const PORT: u16 = 8090;
/// Idle connections per scheduler: enough that, allowed to evict
/// established connections, the floods break some `wrr` ones (2 of 60
/// broke with 20 per scheduler).
const IDLE: usize = 100;
/// Each flood's length: at the generator's rate (over 2 M frames/s, or
/// about 0.8 M through its packet socket, of which the gateway takes about
/// 50 000 new flows/s on this machine) several times the table.
const FLOOD_SECONDS: u64 = 4;
const SCHEDULERS: [(&str, Ipv4Addr); 3] = [
    ("maglev", Ipv4Addr::new(198, 18, 100, 30)),
    ("wrr", Ipv4Addr::new(198, 18, 100, 31)),
    ("sh", Ipv4Addr::new(198, 18, 100, 32)),
];
const SINK_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 33);
/// Where `ft-sink` sends: nothing listens there.
const SINK_PORT: u16 = 9;
/// Most rounds of the four floods.
const FLOOD_ROUNDS: usize = 3;
/// New flows the floods must make, in tables' worth.
const ENOUGH_TABLES: f64 = 3.0;
/// The idle connections' source ports: `FIRST_CLIENT_PORT + n` for the
/// n-th, below the kernel's ephemeral range (32768 up), so that no other
/// socket of the client takes one.
const FIRST_CLIENT_PORT: u16 = 20_000;

fn config(topo: &Topology, evict_established: bool) -> String {
    let base = with_metrics(&topo.config(&[0]));
    assert!(base.contains("capacity = 1048576"), "the demo's [flows]");
    let flows = format!("capacity = {CAPACITY}\nevict_established = {evict_established}");
    let mut text = base.replacen("capacity = 1048576", &flows, 1);
    for (scheduler, vip) in SCHEDULERS {
        text.push_str(&format!(
            "\n[[services]]\nname = \"ft-{scheduler}\"\nprotocol = \"tcp\"\nvip = \"{vip}\"\n\
             port = 80\nscheduler = \"{scheduler}\"\n"
        ));
        for b in 1..=3 {
            text.push_str(&format!(
                "\n[[services.backends]]\naddress = \"{}\"\nport = {PORT}\nweight = {b}\n",
                backend_v4(b)
            ));
        }
    }
    text.push_str(&format!(
        "\n[[services]]\nname = \"ft-sink\"\nprotocol = \"udp\"\nvip = \"{SINK_VIP}\"\n\
         port = {SINK_PORT}\nscheduler = \"maglev\"\n"
    ));
    for b in 1..=3 {
        text.push_str(&format!(
            "\n[[services.backends]]\naddress = \"{}\"\nport = {SINK_PORT}\n",
            backend_v4(b)
        ));
    }
    text
}

/// One request on a keep-alive connection; the body (the backend's name).
fn request(stream: &mut TcpStream) -> Result<String, String> {
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: ft\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    response(stream)
}

/// The answer to a request on `stream`: its body.
fn response(stream: &mut TcpStream) -> Result<String, String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) if head.len() < 4096 => head.push(byte[0]),
            Ok(_) => return Err(format!("no head: {:?}", String::from_utf8_lossy(&head))),
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no length in {head:?}"))?;
    if !head.starts_with("HTTP/1.1 200") || length > 64 {
        return Err(format!("unexpected head {head:?}"));
    }
    let mut body = vec![0u8; length];
    stream
        .read_exact(&mut body)
        .map_err(|e| format!("body: {e}"))?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// An idle connection: which service, the stream, the backend that
/// answered its first request.
struct Idle {
    scheduler: &'static str,
    stream: TcpStream,
    backend: String,
}

/// A TCP connection from the client's source port `port` to `to`, its
/// handshake bounded by a 5 s send timeout.
fn connect_from(port: u16, to: SocketAddrV4) -> Result<TcpStream, String> {
    use nix::sys::socket::{
        bind, connect, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn,
    };
    use nix::sys::time::{TimeVal, TimeValLike};
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| format!("socket: {e}"))?;
    setsockopt(&fd, sockopt::SendTimeout, &TimeVal::seconds(5))
        .map_err(|e| format!("send timeout: {e}"))?;
    let from = SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port));
    bind(fd.as_raw_fd(), &from).map_err(|e| format!("bind to port {port}: {e}"))?;
    connect(fd.as_raw_fd(), &SockaddrIn::from(to)).map_err(|e| format!("connect: {e}"))?;
    Ok(TcpStream::from(fd))
}

fn open_idle(topo: &Topology) -> Vec<Idle> {
    let mut idle = Vec::new();
    let mut port = FIRST_CLIENT_PORT;
    for (scheduler, vip) in SCHEDULERS {
        for i in 0..IDLE {
            let to = SocketAddrV4::new(vip, 80);
            let mut stream = topo
                .client
                .enter(|| connect_from(port, to))
                .unwrap()
                .unwrap_or_else(|e| panic!("{scheduler} connection {i}: {e}"));
            port += 1;
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let backend = request(&mut stream)
                .unwrap_or_else(|e| panic!("{scheduler} connection {i}, first request: {e}"));
            idle.push(Idle {
                scheduler,
                stream,
                backend,
            });
        }
    }
    idle
}

/// A second request on every idle connection: the ones whose answer did
/// not come from the backend that answered the first, and why.
fn check_idle(idle: &mut [Idle]) -> Vec<(&'static str, String)> {
    // Every request is sent first, then every answer read, within 10 s
    // in all: TCP has time to retransmit what was lost, and a broken
    // connection costs no more than the rest.
    let mut broken = Vec::new();
    let written: Vec<_> = idle
        .iter_mut()
        .map(|c| c.stream.write_all(b"GET / HTTP/1.1\r\nHost: ft\r\n\r\n"))
        .collect();
    let answers_by = Instant::now() + Duration::from_secs(10);
    for (i, (c, written)) in idle.iter_mut().zip(written).enumerate() {
        if let Err(e) = written {
            broken.push((c.scheduler, format!("#{i} (was {}): write: {e}", c.backend)));
            continue;
        }
        let left = answers_by.saturating_duration_since(Instant::now());
        let _ = c
            .stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))));
        match response(&mut c.stream) {
            Ok(b) if b == c.backend => {}
            got => broken.push((c.scheduler, format!("#{i} (was {}): {got:?}", c.backend))),
        }
    }
    broken
}

/// A UDP query on `socket` (the same flow every time); the answer.
fn udp_ask(socket: &UdpSocket) -> Result<(String, SocketAddr), String> {
    let to = SocketAddr::from((WEB_VIP, 53));
    socket
        .send_to(b"who are you?", to)
        .map_err(|e| format!("send: {e}"))?;
    let mut buf = [0u8; 64];
    let (n, from) = socket
        .recv_from(&mut buf)
        .map_err(|e| format!("no answer: {e}"))?;
    Ok((String::from_utf8_lossy(&buf[..n]).into_owned(), from))
}

/// What a run found: the idle connections that broke, by scheduler.
struct Outcome {
    broken: Vec<(&'static str, String)>,
}

/// Floods each TCP service with SYNs and `ft-sink` with one-way UDP, for
/// FLOOD_SECONDS each, again up to FLOOD_ROUNDS in all until they have
/// made several tables' worth of new flows (a loaded machine takes fewer
/// per second); each flood's report and the table's size after it.
fn flood(
    topo: &Topology,
    generator: &Generator,
    before: &Scrape,
) -> Vec<(String, FloodReport, f64)> {
    let mut floods = Vec::new();
    let targets: Vec<_> = SCHEDULERS
        .iter()
        .map(|(s, vip)| (format!("SYN to ft-{s}"), SocketAddr::from((*vip, 80)), true))
        .chain([(
            "UDP to ft-sink".to_string(),
            SocketAddr::from((SINK_VIP, SINK_PORT)),
            false,
        )])
        .collect();
    for _ in 0..FLOOD_ROUNDS {
        for (what, to, syn) in &targets {
            let extra: &[&str] = if *syn { &["--syn"] } else { &[] };
            let report = generator
                .start(topo, *to, FLOOD_SECONDS, 1, extra)
                .wait(Duration::from_secs(FLOOD_SECONDS + 30));
            let now = Scrape::take(&topo.gateway);
            floods.push((what.clone(), report, now.sum("flowgate_connections", &[])));
        }
        let made = Scrape::take(&topo.gateway).sum("flowgate_new_flows_total", &[])
            - before.sum("flowgate_new_flows_total", &[]);
        if made >= ENOUGH_TABLES * CAPACITY as f64 {
            break;
        }
    }
    floods
}

/// Connections that left the table from `before` to `after`: all of
/// them bar reply conflicts (which the floods' random sources make too),
/// and the evicted ones.
fn departures(before: &Scrape, after: &Scrape) -> (f64, f64) {
    let departed = |reason: &str| {
        let label = format!("reason=\"{reason}\"");
        after.sum("flowgate_connection_departures_total", &[&label])
            - before.sum("flowgate_connection_departures_total", &[&label])
    };
    let reasons = [
        "removed",
        "expired",
        "evicted",
        "evicted_bucket_full",
        "replaced",
        "refused",
    ];
    let gone = reasons.iter().map(|r| departed(r)).sum();
    (gone, departed("evicted"))
}

/// Opens the idle connections, floods, and checks them again; asserts
/// what holds whatever `evict_established` says (the table filled, the
/// floods overflowed it, the gateway still runs and stops cleanly).
fn run(evict_established: bool) -> Outcome {
    let _one = one_gateway_at_a_time();
    let topo = Topology::new(1);
    let generator = Generator::build(&topo.scratch.path(""));
    let nginxes = Nginxes::start(&topo, PORT, 1024);
    let mut gateway = topo.start_gateway(&config(&topo, evict_established));
    let pid = gateway.pid().unwrap();

    let mut idle = open_idle(&topo);
    let udp = topo
        .client
        .enter(|| UdpSocket::bind("0.0.0.0:0"))
        .unwrap()
        .unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let (udp_backend, from) = udp_ask(&udp).expect("the UDP flow's first answer");
    assert_eq!(from, SocketAddr::from((WEB_VIP, 53)));

    let before = Scrape::take(&topo.gateway);
    let rss_before = rss_kib(pid);
    let floods = flood(&topo, &generator, &before);
    let after = Scrape::take(&topo.gateway);
    let rss_after = rss_kib(pid);

    // Every idle connection still works both ways, on the same backend.
    let broken = check_idle(&mut idle);
    let checked = Scrape::take(&topo.gateway);
    let udp_after = udp_ask(&udp);

    let delta = |name: &str, labels: &[&str]| after.sum(name, labels) - before.sum(name, labels);
    let new_flows = delta("flowgate_new_flows_total", &[]);
    let table_full = delta(
        "flowgate_dropped_packets_total",
        &["reason=\"flow_table_full\""],
    );
    let connections = after.sum("flowgate_connections", &[]);
    let capacity = after.sum("flowgate_connection_capacity", &[]);
    for (what, report, in_table) in &floods {
        println!(
            "{what}: {} frames in {:.1} s ({:.0}/s, {}); table then {in_table} of {capacity}",
            report.sent,
            report.seconds,
            report.pps,
            report.via()
        );
    }
    println!(
        "new flows {new_flows}, connections {connections} of {capacity}, so at least {} \
         evicted; flow_table_full {table_full}; RSS {rss_before} → {rss_after} KiB; \
         {} idle connections, {} broken; UDP flow {udp_after:?}",
        new_flows - connections,
        idle.len(),
        broken.len()
    );
    println!(
        "while the idle connections were checked: {:?}",
        checked
            .moved(&after)
            .into_iter()
            .filter(|(k, _)| k.contains("dropped_packets") || k.contains("new_flows_total{"))
            .collect::<Vec<_>>()
    );
    for (k, v) in checked.moved(&before) {
        if k.contains("dropped_packets") || k.contains("ring_full") || k.contains("departures") {
            println!("  {k} {v:+}");
        }
    }

    assert_eq!(capacity, CAPACITY as f64, "the table's capacity");
    // Every connection made and gone is counted under its reason.
    let (gone, evicted) = departures(&before, &checked);
    assert!(
        gone >= new_flows - connections && evicted > 0.0,
        "departures counted: {gone} (evicted {evicted}) for {new_flows} new flows"
    );
    if !evict_established {
        let (answer, from) = udp_after.expect("the UDP flow after the flood");
        assert_eq!(
            (answer, from),
            (udp_backend, SocketAddr::from((WEB_VIP, 53))),
            "the UDP flow's backend"
        );
    }
    // The table filled (how far each flood took it depends on how much
    // of the ring the worker drains: one took it to 95 % on a loaded
    // machine), and far more flows were made than it holds, so all but
    // its worth were evicted.
    let last = floods.last().map_or(0.0, |f| f.2);
    assert!(
        last >= 0.99 * capacity,
        "after the floods the table held {last} of {capacity}"
    );
    assert!(
        new_flows >= ENOUGH_TABLES * capacity,
        "{new_flows} new flows: the floods did not overflow the table"
    );
    gateway.assert_running();
    gateway.stop();
    drop(nginxes);
    Outcome { broken }
}

#[test]
fn a_flood_that_fills_the_table_breaks_no_idle_connection_on_any_scheduler() {
    if !privileged() {
        return;
    }
    let outcome = run(false);
    assert!(
        outcome.broken.is_empty(),
        "broken idle connections: {:#?}",
        outcome.broken
    );
}

/// The test above can fail: allowed to evict established connections
/// (`flows.evict_established = true`), the same floods break idle `wrr`
/// connections (their next segment meets no connection, and a segment
/// without SYN cannot be scheduled by `wrr`; `maglev` and `sh` pick the
/// same backend again from the addresses).
#[test]
fn allowed_to_evict_established_connections_the_same_floods_break_wrr_ones() {
    if !privileged() {
        return;
    }
    let outcome = run(true);
    println!("broken: {:#?}", outcome.broken);
    let wrr = outcome.broken.iter().filter(|(s, _)| *s == "wrr").count();
    assert!(
        wrr > 0,
        "no wrr connection broke; broken: {:#?}",
        outcome.broken
    );
}
