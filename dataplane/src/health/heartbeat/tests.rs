//! The heartbeat listener over real UDP on 127.0.0.1.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel;

use super::*;
use crate::pipeline::Counter;

const TOKEN: &str = "web-token-0123456789";

struct Rig {
    listener: HeartbeatListener,
    heartbeats: channel::Receiver<Heartbeat>,
    agent: UdpSocket,
}

/// A listener for service `web` (backends 198.18.1.11:80 and :81) and
/// `dns` (no backend known to the sink), and an agent socket.
fn rig(rate: RateLimit) -> Rig {
    let tokens = Arc::new(HeartbeatTokens::new());
    tokens.replace([
        (Arc::from("web"), HeartbeatToken::new(TOKEN).unwrap()),
        (
            Arc::from("dns"),
            HeartbeatToken::new("dns-token-0123456789").unwrap(),
        ),
    ]);
    let known: [SocketAddr; 2] = [
        "198.18.1.11:80".parse().unwrap(),
        "198.18.1.11:81".parse().unwrap(),
    ];
    let (tx, heartbeats) = channel::unbounded();
    let sink: HeartbeatSink = Box::new(move |hb: &Heartbeat| {
        if &*hb.service == "web" && known.contains(&hb.backend) {
            let _ = tx.send(hb.clone());
            Ok(())
        } else {
            Err(UnknownBackend)
        }
    });
    let options = HeartbeatOptions {
        rate,
        ..HeartbeatOptions::new("127.0.0.1:0".parse().unwrap())
    };
    let listener = HeartbeatListener::start(options, tokens, sink).unwrap();
    let agent = UdpSocket::bind("127.0.0.1:0").unwrap();
    agent.connect(listener.local_addr()).unwrap();
    Rig {
        listener,
        heartbeats,
        agent,
    }
}

/// Waits (at most 3 s) until the listener has read `n` datagrams.
fn received(rig: &Rig, n: u64) {
    let end = Instant::now() + Duration::from_secs(3);
    while rig.listener.counters().received.get() < n {
        assert!(
            Instant::now() < end,
            "{} of {n} datagrams read",
            rig.listener.counters().received.get()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn counts(c: &HeartbeatCounters) -> [u64; 7] {
    let g = Counter::get;
    [
        g(&c.accepted),
        g(&c.rate_limited),
        g(&c.oversized),
        g(&c.malformed),
        g(&c.unknown_service),
        g(&c.bad_token),
        g(&c.unknown_backend),
    ]
}

#[test]
fn a_good_heartbeat_reaches_the_sink_and_bad_ones_are_counted_by_reason() {
    let rig = rig(RateLimit::default());
    let send = |text: &[u8]| rig.agent.send(text).unwrap();
    send(format!("flowgate-heartbeat/1 web 198.18.1.11:80 {TOKEN}\n").as_bytes());
    received(&rig, 1);
    let hb = rig.heartbeats.recv_timeout(Duration::from_secs(1)).unwrap();
    assert_eq!(&*hb.service, "web");
    assert_eq!(hb.backend, "198.18.1.11:80".parse().unwrap());
    assert_eq!(hb.source, rig.agent.local_addr().unwrap());
    assert_eq!(counts(rig.listener.counters()), [1, 0, 0, 0, 0, 0, 0]);

    // Wrong token (one character off, then another service's), unknown
    // service, unknown backend, malformed, oversized.
    send(b"flowgate-heartbeat/1 web 198.18.1.11:80 web-token-0123456788");
    send(b"flowgate-heartbeat/1 web 198.18.1.11:80 dns-token-0123456789");
    send(format!("flowgate-heartbeat/1 api 198.18.1.11:80 {TOKEN}").as_bytes());
    send(format!("flowgate-heartbeat/1 web 198.18.1.99:80 {TOKEN}").as_bytes());
    send(b"GET / HTTP/1.1\r\n\r\n");
    send(b"\xff\xfe\x00garbage");
    send(&[b'a'; 600]);
    // The largest datagram the listener reads whole is still refused as too long.
    send(&[b' '; 513]);
    received(&rig, 9);
    assert_eq!(counts(rig.listener.counters()), [1, 0, 2, 2, 1, 2, 1]);
    assert!(
        rig.heartbeats.try_recv().is_err(),
        "nothing else reached the sink"
    );

    // The listener is still serving.
    send(format!("flowgate-heartbeat/1 web 198.18.1.11:81 {TOKEN}").as_bytes());
    received(&rig, 10);
    let hb = rig.heartbeats.recv_timeout(Duration::from_secs(1)).unwrap();
    assert_eq!(hb.backend.port(), 81);
}

#[test]
fn one_source_is_held_to_its_rate_before_its_datagrams_are_parsed() {
    let rig = rig(RateLimit {
        per_second: 1,
        burst: 5,
    });
    let good = format!("flowgate-heartbeat/1 web 198.18.1.11:80 {TOKEN}");
    for _ in 0..20 {
        rig.agent.send(good.as_bytes()).unwrap();
    }
    // Garbage over the limit is not even parsed: it counts as rate-limited.
    for _ in 0..5 {
        rig.agent.send(b"garbage").unwrap();
    }
    received(&rig, 25);
    let c = rig.listener.counters();
    // 5 of burst, and at most one refilled while the datagrams arrived.
    let accepted = c.accepted.get();
    assert!((5..=6).contains(&accepted), "{accepted}");
    assert_eq!(c.rate_limited.get(), 25 - accepted);
    assert_eq!(c.malformed.get(), 0);
}

#[test]
fn dropping_the_listener_stops_it_promptly_and_frees_its_port() {
    let rig = rig(RateLimit::default());
    let address = rig.listener.local_addr();
    let started = Instant::now();
    drop(rig.listener);
    assert!(started.elapsed() < Duration::from_millis(500));
    UdpSocket::bind(address).expect("port free again");
}
