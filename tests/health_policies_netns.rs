//! The three `on_backend_down` policies on the wire, on the real daemon in
//! the demo's namespaces. Services `keep`, `drop` and `reset` (VIPs
//! 198.18.100.13-15:80, wrr over b1 and b2 on :9001-9003, tcp checks every
//! 200 ms) each get an established connection to b1; then b1's listener
//! for that service closes while the accepted socket stays open, so its
//! check fails and it goes down. What the connection's next client segment
//! gets is each policy's: `keep` delivers it to b1, `drop` delivers nothing
//! and forgets the record (new connections go to b2), `reset` answers it
//! with a RST from the VIP (the client sees ECONNRESET). Run as root;
//! FLOWGATE_SKIP_NETNS=1 skips elsewhere.
//!
//! The topology's veth peers have GRO off, so by default the kernel fast
//! path is off and the worker forwards every packet;
//! FLOWGATE_NETNS_PEER_GRO=1 runs it with the fast path on (a watched
//! backend's connections are then still the worker's). The test prints
//! the daemon's word on which mode it ran in.

mod health_support;
mod netns;

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use flowgate_api::{ControlClient, Reply, Request};
use health_support::{print_fast_path_mode, state, within};
use netns::{backend_v4, one_gateway_at_a_time, privileged, Topology, CLIENT_V4};

const INTERVAL_MS: u64 = 200;
const FALL: u64 = 2;

/// The policies, each with its service's VIP and backend port.
const POLICIES: [(&str, Ipv4Addr, u16); 3] = [
    ("keep", Ipv4Addr::new(198, 18, 100, 13), 9001),
    ("drop", Ipv4Addr::new(198, 18, 100, 14), 9002),
    ("reset", Ipv4Addr::new(198, 18, 100, 15), 9003),
];

/// The demo's rules, checks off for them, and one service per policy.
fn config(topo: &Topology) -> String {
    let mut text = format!(
        "{}\n[health]\nkind = \"none\"\ninterval = \"{INTERVAL_MS}ms\"\ntimeout = \"100ms\"\n\
         rise = 2\nfall = {FALL}\n",
        topo.config(&[0])
    );
    for (policy, vip, port) in POLICIES {
        text.push_str(&format!(
            "\n[[services]]\nname = \"{policy}\"\nprotocol = \"tcp\"\nvip = \"{vip}\"\nport = 80\n\
             scheduler = \"wrr\"\non_backend_down = \"{policy}\"\n\n[services.health]\n\
             kind = \"tcp\"\n"
        ));
        for b in 1..=2 {
            text.push_str(&format!(
                "\n[[services.backends]]\naddress = \"{}\"\nport = {port}\n",
                backend_v4(b)
            ));
        }
    }
    text
}

/// Backend `b` of `service`'s health state and whether it has a result.
/// Frames dropped because their backend was down (`backend_down`), and
/// the connections of backend `b` of `service` tracked now.
fn counters(client: &mut ControlClient, service: &str, b: u8) -> (u64, u64) {
    let Reply::Stats(stats) = client.call(Request::Stats {}).unwrap() else {
        panic!("not stats");
    };
    let address = IpAddr::from(backend_v4(b));
    let active = stats
        .services
        .iter()
        .find(|s| s.name == service)
        .and_then(|s| s.backends.iter().find(|v| v.address == address))
        .map_or(0, |v| v.active_flows);
    let dropped = stats.totals.drops.get("backend_down").copied().unwrap_or(0);
    (dropped, active)
}

/// A listener on `port` in backend `b`'s namespace, non-blocking.
fn listen(topo: &Topology, b: u8, port: u16) -> TcpListener {
    let listener = topo.backends[usize::from(b - 1)]
        .enter(move || TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)))
        .unwrap()
        .unwrap();
    listener.set_nonblocking(true).unwrap();
    listener
}

/// The client's connection accepted by one of `listeners` within 2 s
/// (the health checks' connections, from the gateway's address, are
/// skipped): its index and the server's end.
fn accept_client(listeners: &[&TcpListener]) -> Option<(usize, TcpStream)> {
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        for (i, listener) in listeners.iter().enumerate() {
            if let Ok((stream, peer)) = listener.accept() {
                if peer.ip() == IpAddr::from(CLIENT_V4) {
                    stream.set_nonblocking(false).unwrap();
                    return Some((i, stream));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

/// Reads what is there within `wait`: the bytes, or the error (a timeout
/// is `WouldBlock` or `TimedOut`).
fn read_within(stream: &mut TcpStream, wait: Duration) -> io::Result<Vec<u8>> {
    stream.set_read_timeout(Some(wait))?;
    let mut buf = [0u8; 64];
    let n = stream.read(&mut buf)?;
    Ok(buf[..n].to_vec())
}

fn timed_out(result: &io::Result<Vec<u8>>) -> bool {
    matches!(result, Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut))
}

/// One round trip client → server → client on an established pair.
fn round_trip(client: &mut TcpStream, server: &mut TcpStream, what: &str) {
    client.write_all(b"ping").unwrap();
    let got = read_within(server, Duration::from_secs(2));
    assert_eq!(
        got.as_deref().ok(),
        Some(&b"ping"[..]),
        "{what}: to b1: {got:?}"
    );
    server.write_all(b"pong").unwrap();
    let got = read_within(client, Duration::from_secs(2));
    assert_eq!(
        got.as_deref().ok(),
        Some(&b"pong"[..]),
        "{what}: from b1: {got:?}"
    );
}

#[test]
fn each_on_backend_down_policy_is_seen_on_the_wire() {
    if !privileged() {
        return;
    }
    let _one = one_gateway_at_a_time();
    let topo = Topology::new(1);
    // b1's and b2's listeners of each service, before the checks start.
    let mut listeners: Vec<(Option<TcpListener>, TcpListener)> = POLICIES
        .iter()
        .map(|&(_, _, port)| (Some(listen(&topo, 1, port)), listen(&topo, 2, port)))
        .collect();
    let mut gateway = topo.start_gateway(&config(&topo));
    let socket = topo.scratch.path("control.sock");
    let mut control = ControlClient::connect(&socket).unwrap();
    print_fast_path_mode(&gateway);

    for (i, &(policy, vip, port)) in POLICIES.iter().enumerate() {
        for b in 1..=2 {
            let checked = within(Duration::from_secs(5), || {
                state(&mut control, policy, b, port) == ("up".to_owned(), true)
            });
            assert!(checked.is_some(), "{policy}: b{b} not checked up");
        }
        let (b1, b2) = &mut listeners[i];
        let vip = SocketAddr::from((vip, 80));
        // wrr alternates: within a few connections one lands on b1.
        let mut pair = None;
        for _ in 0..10 {
            let client = topo
                .client
                .enter(|| TcpStream::connect_timeout(&vip, Duration::from_secs(2)))
                .unwrap()
                .unwrap_or_else(|e| panic!("{policy}: connect: {e}"));
            let (on, server) = accept_client(&[b1.as_ref().unwrap(), &*b2])
                .unwrap_or_else(|| panic!("{policy}: no backend accepted the connection"));
            if on == 0 {
                pair = Some((client, server));
                break;
            }
        }
        let (mut client, mut server) =
            pair.unwrap_or_else(|| panic!("{policy}: no connection landed on b1 in 10"));
        round_trip(&mut client, &mut server, policy);

        // b1's listener closes: its check is refused, the accepted socket
        // stays open.
        let closed = Instant::now();
        drop(b1.take());
        let limit = Duration::from_millis(FALL * INTERVAL_MS + 1000);
        let down = within(limit, || state(&mut control, policy, 1, port).0 == "down")
            .unwrap_or_else(|| panic!("{policy}: b1 not down within fall × interval + 1 s"));
        // The workers act from the snapshot rebuilt after the ejection.
        std::thread::sleep(Duration::from_millis(300));
        let (dropped_before, active_before) = counters(&mut control, policy, 1);
        println!(
            "{policy}: b1 down {:?} after its listener closed; its connection tracked: {active_before}",
            down - closed
        );
        match policy {
            "keep" => keeps(&mut client, &mut server),
            "drop" => drops(&topo, &mut client, &mut server, b2, vip),
            _ => resets(&mut client, &mut server),
        }
        let (dropped, active) = counters(&mut control, policy, 1);
        println!(
            "{policy}: backend_down drops {dropped_before} → {dropped}; b1's tracked connections \
             {active_before} → {active}"
        );
        match policy {
            "keep" => assert_eq!(active, 1, "keep: b1's connection is no longer tracked"),
            "drop" => assert!(
                dropped > dropped_before,
                "drop: no backend_down drop counted"
            ),
            _ => {}
        }
        if policy != "keep" {
            assert_eq!(active, 0, "{policy}: b1's connection is still tracked");
        }
    }
    gateway.assert_running();
    gateway.stop();
}

/// keep: the client's next segment reaches b1, and b1's answer the client.
fn keeps(client: &mut TcpStream, server: &mut TcpStream) {
    round_trip(client, server, "keep (b1 down)");
    println!("keep: the established connection still reaches b1 both ways");
}

/// drop: the next segment gets nothing back and never reaches b1; the
/// client's next connections are scheduled afresh, to b2.
fn drops(
    topo: &Topology,
    client: &mut TcpStream,
    server: &mut TcpStream,
    b2: &TcpListener,
    vip: SocketAddr,
) {
    client.write_all(b"ping").unwrap();
    let back = read_within(client, Duration::from_secs(1));
    assert!(
        timed_out(&back),
        "drop: the client got {back:?}, not silence"
    );
    let at_b1 = read_within(server, Duration::from_millis(200));
    assert!(timed_out(&at_b1), "drop: b1 got {at_b1:?}");
    for k in 0..3 {
        let fresh = topo
            .client
            .enter(|| TcpStream::connect_timeout(&vip, Duration::from_secs(2)))
            .unwrap()
            .unwrap_or_else(|e| panic!("drop: new connection {k}: {e}"));
        let accepted = accept_client(&[b2]);
        assert!(
            accepted.is_some(),
            "drop: new connection {k} not accepted by b2"
        );
        drop(fresh);
    }
    println!("drop: the next segment got nothing back (1 s), b1 got nothing; 3 new connections went to b2");
}

/// reset: the next segment is answered with a RST; b1 gets nothing.
fn resets(client: &mut TcpStream, server: &mut TcpStream) {
    let sent = Instant::now();
    client.write_all(b"ping").unwrap();
    let back = read_within(client, Duration::from_secs(2));
    let took = sent.elapsed();
    assert!(
        matches!(&back, Err(e) if e.kind() == io::ErrorKind::ConnectionReset),
        "reset: the client got {back:?}, not ECONNRESET"
    );
    let at_b1 = read_within(server, Duration::from_millis(200));
    assert!(timed_out(&at_b1), "reset: b1 got {at_b1:?}");
    println!("reset: the client's next segment was answered with a RST ({took:?}): ECONNRESET");
}
