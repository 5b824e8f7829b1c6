//! The real gateway end to end: the `flowgate` binary on real AF_XDP
//! sockets between a client and three backend services, each in its own
//! network namespace (the demo's topology and rules, tests/netns/).
//!
//! The gateway's kernel has IP forwarding off, so every answer a client gets
//! from a VIP crossed the box through flowgate. Each test builds and removes
//! its own namespaces. Run as root; FLOWGATE_SKIP_NETNS=1 skips elsewhere.
//! Needs the binaries built first (scripts/test.sh does it).

mod netns;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::time::Duration;

use netns::*;

/// Time allowed for one batch of requests; far more than they need.
const BUDGET: Duration = Duration::from_secs(60);

fn web() -> SocketAddr {
    SocketAddr::new(WEB_VIP.into(), 80)
}
fn web_wrr() -> SocketAddr {
    SocketAddr::new(WRR_VIP.into(), 80)
}
fn web6() -> SocketAddr {
    SocketAddr::new(WEB6_VIP.into(), 80)
}
fn dns() -> SocketAddr {
    SocketAddr::new(WEB_VIP.into(), 53)
}

/// Asserts every request of `load` was answered, from `vip`.
fn assert_all_answered(what: &str, load: &Load, count: usize, vip: SocketAddr, log: &str) {
    assert!(
        load.answered() == count && load.failed == 0 && load.not_tried == 0,
        "{what}: {} of {count} answered, {} failed, {} not tried in {:?}; first failures: {:?}\n\
         flowgate's log:\n{log}",
        load.answered(),
        load.failed,
        load.not_tried,
        load.elapsed,
        load.failures
    );
    let sources: Vec<_> = load.sources.keys().copied().collect();
    assert_eq!(sources, vec![vip], "{what}: answers came from {sources:?}");
}

/// Which backend served how many, of one protocol and port, and the peers
/// the backends saw.
fn served_by(topo: &Topology, proto: Proto, port: u16) -> (BTreeMap<String, usize>, Vec<IpAddr>) {
    let mut by = BTreeMap::new();
    let mut peers = Vec::new();
    for s in topo
        .served()
        .into_iter()
        .filter(|s| s.proto == proto && s.port == port)
    {
        *by.entry(format!("b{}", s.backend)).or_default() += 1;
        if !peers.contains(&s.peer.ip()) {
            peers.push(s.peer.ip());
        }
    }
    (by, peers)
}

#[test]
fn http_over_ipv4_every_connection_answered_and_spread_by_the_weights() {
    if !privileged() {
        return;
    }
    let _one = one_gateway_at_a_time();
    let topo = Topology::new(1);
    let mut gw = topo.start_gateway(&topo.config(&[0]));

    // web: Maglev, weights 1:1:2.
    let load = http_load(&topo.client, web(), 1000, 4, BUDGET);
    assert_all_answered("web", &load, 1000, web(), &gw.log());
    assert_spread("web", &load.by_backend, &[("b1", 1), ("b2", 1), ("b3", 2)]);
    // The backends served exactly those connections, and saw the client's
    // own address: destination NAT, the source is left alone.
    let (served, peers) = served_by(&topo, Proto::Tcp, 8080);
    assert_eq!(served, load.by_backend, "backends' count vs the client's");
    assert_eq!(peers, vec![IpAddr::from(CLIENT_V4)]);

    // web-wrr: smooth weighted round-robin 1:2:3 on one worker cycles
    // through 6 picks, so 600 new connections split exactly 100:200:300.
    let load = http_load(&topo.client, web_wrr(), 600, 4, BUDGET);
    assert_all_answered("web-wrr", &load, 600, web_wrr(), &gw.log());
    let exact: BTreeMap<String, usize> = [
        ("b1".to_string(), 100),
        ("b2".into(), 200),
        ("b3".into(), 300),
    ]
    .into();
    assert_eq!(load.by_backend, exact, "web-wrr spread");

    gw.assert_running();
    gw.stop();
}

#[test]
fn ipv6_http_and_udp_services_answer_from_their_vips() {
    if !privileged() {
        return;
    }
    let _one = one_gateway_at_a_time();
    let topo = Topology::new(1);
    let mut gw = topo.start_gateway(&topo.config(&[0]));

    // web6: Maglev over two IPv6 backends, 1:1.
    let load = http_load(&topo.client, web6(), 200, 4, BUDGET);
    assert_all_answered("web6", &load, 200, web6(), &gw.log());
    assert_spread("web6", &load.by_backend, &[("b1", 1), ("b2", 1)]);
    let (_, peers) = served_by(&topo, Proto::Tcp, 8080);
    assert_eq!(peers, vec![IpAddr::from(CLIENT_V6)]);

    // dns: UDP, each query from a new port (a new flow). An unconnected
    // socket takes an answer from anyone, so the source it reports is the
    // one on the wire: the VIP and service port, never the backend.
    let load = udp_load(&topo.client, dns(), 200, BUDGET);
    assert_all_answered("dns", &load, 200, dns(), &gw.log());
    assert_spread("dns", &load.by_backend, &[("b1", 1), ("b2", 1)]);
    let (served, peers) = served_by(&topo, Proto::Udp, 5353);
    assert_eq!(served, load.by_backend, "backends' count vs the client's");
    assert_eq!(peers, vec![IpAddr::from(CLIENT_V4)]);

    gw.assert_running();
    gw.stop();
}

/// Serves one TCP exchange ("ping" → "pong:<port>") on `listener`.
fn answer_one_tcp(listener: &TcpListener) -> std::io::Result<()> {
    let (mut s, _) = listener.accept()?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf)?;
    s.write_all(format!("pong:{}", listener.local_addr()?.port()).as_bytes())
}

#[test]
fn traffic_for_the_box_itself_still_reaches_its_kernel() {
    if !privileged() {
        return;
    }
    let _one = one_gateway_at_a_time();
    let topo = Topology::new(1);
    let mut gw = topo.start_gateway(&topo.config(&[0]));

    // ICMP echo (and the ARP / neighbour discovery in front of it, after
    // the neighbour entries are flushed) to the gateway's own addresses.
    topo.client.ip(&["neigh", "flush", "dev", "eth0"]).unwrap();
    for addr in ["198.18.0.1", "2001:2::1"] {
        assert!(
            ping(&topo.client, addr) || ping(&topo.client, addr),
            "ping {addr} (the gateway's own address) got no answer:\n{}",
            gw.log()
        );
    }

    // TCP and UDP to the gateway's own addresses, on the very ports the
    // services use on the VIPs: not a service (wrong address), so the
    // kernel's sockets get them.
    for own in ["198.18.0.1", "2001:2::1"] {
        let own: IpAddr = own.parse().unwrap();
        let (listener, udp) = topo
            .gateway
            .enter(move || {
                (
                    TcpListener::bind((own, 80)).unwrap(),
                    UdpSocket::bind((own, 53)).unwrap(),
                )
            })
            .unwrap();
        let server = std::thread::spawn(move || answer_one_tcp(&listener));
        let answer = topo
            .client
            .enter(move || -> std::io::Result<String> {
                let mut s = std::net::TcpStream::connect_timeout(
                    &SocketAddr::new(own, 80),
                    Duration::from_secs(3),
                )?;
                s.set_read_timeout(Some(Duration::from_secs(3)))?;
                s.write_all(b"ping")?;
                let mut reply = String::new();
                s.read_to_string(&mut reply)?;
                Ok(reply)
            })
            .unwrap();
        let served = server.join().unwrap();
        assert_eq!(
            answer.as_deref().ok(),
            Some("pong:80"),
            "TCP to {own}:80 (the box's own address): client {answer:?}, server {served:?}\n{}",
            gw.log()
        );

        udp.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let echo = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            let (n, from) = udp.recv_from(&mut buf)?;
            udp.send_to(&buf[..n], from)
        });
        let got = udp_query(
            &topo.client,
            SocketAddr::new(own, 53),
            Duration::from_secs(3),
        );
        let _ = echo.join();
        match got {
            Ok((text, from)) => {
                assert_eq!(text, "who are you?");
                assert_eq!(from, SocketAddr::new(own, 53));
            }
            Err(e) => panic!("UDP to {own}:53 (the box's own address): {e}\n{}", gw.log()),
        }
    }

    gw.assert_running();
    gw.stop();
}

#[test]
fn the_box_itself_can_still_reach_a_backends_service_port() {
    // The gateway box talking to a backend's service port (an operator's
    // curl, a health check): the backend's answers come from a
    // (protocol, backend address, backend port) the gateway owns replies
    // of, but they belong to no flow of the gateway's and are addressed to
    // the box itself; they must reach its kernel, not vanish.
    if !privileged() {
        return;
    }
    let _one = one_gateway_at_a_time();
    let topo = Topology::new(1);
    let mut gw = topo.start_gateway(&topo.config(&[0]));

    let backend = SocketAddr::new(backend_v4(1).into(), 8080);
    let answer = topo
        .gateway
        .enter(move || http_get(backend, Duration::from_secs(3)))
        .unwrap();
    assert_eq!(
        answer.as_ref().map(|(body, _)| body.as_str()),
        Ok("b1"),
        "HTTP from the gateway box to {backend}:\n{}",
        gw.log()
    );
    let got = udp_query(
        &topo.gateway,
        SocketAddr::new(backend_v4(2).into(), 5353),
        Duration::from_secs(3),
    );
    assert_eq!(
        got.as_ref().map(|(text, _)| text.as_str()).ok(),
        Some("b2"),
        "UDP from the gateway box to 198.18.1.12:5353: {got:?}\n{}",
        gw.log()
    );

    gw.assert_running();
    gw.stop();
}

#[test]
fn two_workers_on_two_queues_forward_every_connection() {
    // Two queues on each gateway link: the veth peers pick a queue by flow
    // hash, so a connection's requests and its replies land on either
    // queue independently, and half of the replies arrive at the worker
    // that does not own the connection, which must hand them over.
    if !privileged() {
        return;
    }
    let _one = one_gateway_at_a_time();
    let topo = Topology::new(2);
    let before_client = topo.gateway_queue_frames("fg-client");
    let before_backend = topo.gateway_queue_frames("fg-backend");
    let mut gw = topo.start_gateway(&topo.config(&[0, 1]));

    let load = http_load(&topo.client, web(), 1000, 4, BUDGET);
    assert_all_answered("web, 2 workers", &load, 1000, web(), &gw.log());
    assert_spread(
        "web, 2 workers",
        &load.by_backend,
        &[("b1", 1), ("b2", 1), ("b3", 2)],
    );
    let load = udp_load(&topo.client, dns(), 200, BUDGET);
    assert_all_answered("dns, 2 workers", &load, 200, dns(), &gw.log());

    // Both queues of both links carried traffic, so both workers and the
    // hand-over between them were exercised.
    for (dev, before) in [("fg-client", before_client), ("fg-backend", before_backend)] {
        let after = topo.gateway_queue_frames(dev);
        assert_eq!(after.len(), 2, "{dev}: queue counters {after:?}");
        for (queue, frames) in &after {
            let grew = frames - before.get(queue).copied().unwrap_or(0);
            assert!(grew >= 100, "{dev} {queue}: only {grew} frames: {after:?}");
        }
    }

    gw.assert_running();
    gw.stop();
}
