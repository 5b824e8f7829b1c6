//! Backend health on the real daemon, in the demo's namespaces: while a
//! client makes requests in a loop, one backend's server starts refusing
//! (an nftables rule in its namespace answers every SYN to :8080 with a
//! RST, as a dead server's kernel does); within `fall × interval + 1 s`
//! the daemon's checks have it down and no new connection reaches it, no
//! request to a healthy backend fails, and only requests the gateway gave
//! the dead backend before its ejection fail. When it accepts again it is
//! readmitted within `rise × interval + 1 s`. A backend registered with a
//! heartbeat TTL through the control API expires within TTL + 100 ms of
//! its last heartbeat. Run as root; FLOWGATE_SKIP_NETNS=1 skips elsewhere.

mod health_support;
mod netns;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use flowgate_api::{BackendCheck, BackendEdit, BackendKey, ControlClient, Reply, Request};
use health_support::{state, within};
use netns::{backend_v4, http_get, one_gateway_at_a_time, privileged, Topology};

const INTERVAL_MS: u64 = 200;
const RISE: u64 = 2;
const FALL: u64 = 2;
const TTL_MS: u64 = 500;

/// The demo's rules, with checks that are timed for a test but check
/// nothing until a backend asks for a kind of its own.
fn config(topo: &Topology) -> String {
    format!(
        "{}\n[health]\nkind = \"none\"\ninterval = \"{INTERVAL_MS}ms\"\ntimeout = \"100ms\"\n\
         rise = {RISE}\nfall = {FALL}\n",
        topo.config(&[0])
    )
}

fn edit(b: u8) -> BackendEdit {
    BackendEdit {
        service: "web".into(),
        address: backend_v4(b).to_string(),
        port: 8080,
        weight: None,
        zone: None,
        set: None,
        group: None,
        heartbeat_ttl: None,
        health: None,
    }
}

/// One request's outcome: when it started, and the backend that answered.
type Outcome = (Instant, Result<String, String>);

#[test]
fn a_dead_backend_is_ejected_and_readmitted_in_time_and_a_silent_one_expires() {
    if !privileged() {
        return;
    }
    let _one = one_gateway_at_a_time();
    let topo = Topology::new(1);
    let mut gateway = topo.start_gateway(&config(&topo));
    let socket = topo.scratch.path("control.sock");
    let mut client = ControlClient::connect(&socket).unwrap();

    // web's three backends get a tcp check each.
    for b in 1..=3 {
        let request = BackendEdit {
            health: Some(BackendCheck {
                kind: Some("tcp".into()),
                port: None,
            }),
            ..edit(b)
        };
        client.call(Request::BackendEdit(request)).unwrap();
    }
    for b in 1..=3 {
        let checked = within(Duration::from_secs(5), || {
            state(&mut client, "web", b, 8080) == ("up".to_owned(), true)
        });
        assert!(
            checked.is_some(),
            "b{b} not checked up: {:?}",
            state(&mut client, "web", b, 8080)
        );
    }

    // A client requests in a loop, each request a new connection.
    let vip = SocketAddr::from(([198, 18, 100, 10], 80));
    let stop = AtomicBool::new(false);
    let outcomes: Mutex<Vec<Outcome>> = Mutex::new(Vec::new());
    let (killed, ejected, restored, readmitted) = std::thread::scope(|scope| {
        scope.spawn(|| {
            topo.client
                .enter(|| {
                    let end = Instant::now() + Duration::from_secs(30);
                    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                        let started = Instant::now();
                        let got = http_get(vip, Duration::from_millis(500)).map(|(b, _)| b);
                        outcomes.lock().unwrap().push((started, got));
                        std::thread::sleep(Duration::from_millis(5));
                    }
                })
                .unwrap();
        });
        std::thread::sleep(Duration::from_millis(500));
        // b2 dies: its kernel refuses every connection to :8080.
        let b2 = &topo.backends[1];
        b2.exec("nft", &["add", "table", "inet", "fgdead"]).unwrap();
        b2.exec(
            "nft",
            &[
                "add",
                "chain",
                "inet",
                "fgdead",
                "input",
                "{ type filter hook input priority 0 ; policy accept ; }",
            ],
        )
        .unwrap();
        let killed = Instant::now();
        b2.exec(
            "nft",
            &[
                "add", "rule", "inet", "fgdead", "input", "tcp", "dport", "8080", "reject", "with",
                "tcp", "reset",
            ],
        )
        .unwrap();
        let eject_limit = Duration::from_millis(FALL * INTERVAL_MS + 1000);
        let ejected = within(eject_limit, || {
            state(&mut client, "web", 2, 8080).0 == "down"
        });
        std::thread::sleep(Duration::from_millis(1000));
        let restored = Instant::now();
        b2.exec("nft", &["delete", "table", "inet", "fgdead"])
            .unwrap();
        let readmit_limit = Duration::from_millis(RISE * INTERVAL_MS + 1000);
        let readmitted = within(readmit_limit, || {
            state(&mut client, "web", 2, 8080).0 == "up"
        });
        std::thread::sleep(Duration::from_millis(1000));
        stop.store(true, Ordering::Relaxed);
        (killed, ejected, restored, readmitted)
    });
    gateway.assert_running();
    let ejected = ejected.expect("b2 not ejected within fall × interval + 1 s");
    let readmitted = readmitted.expect("b2 not readmitted within rise × interval + 1 s");
    println!(
        "ejected {:?} after the kill, readmitted {:?} after the restart",
        ejected - killed,
        readmitted - restored
    );

    check_outcomes(&outcomes.into_inner().unwrap(), killed, ejected, readmitted);
    expires_without_heartbeats(&mut client);
    gateway.assert_running();
    gateway.stop();
}

/// No request to a healthy backend failed, no new connection reached b2
/// while it was down, only requests of the window between its death and
/// its ejection failed, and it serves again after its readmission.
fn check_outcomes(outcomes: &[Outcome], killed: Instant, ejected: Instant, readmitted: Instant) {
    // The state is read through the API after the words are written, so a
    // request started after `ejected` is scheduled without b2.
    let mut failed_before_ejection = 0;
    for (started, got) in outcomes {
        match got {
            Ok(b) if b == "b2" => assert!(
                *started < ejected || *started > readmitted,
                "a new connection reached b2 while it was down"
            ),
            Ok(_) => {}
            Err(e) => {
                // A request in flight to b2 when it died fails too.
                assert!(
                    *started + Duration::from_millis(100) >= killed && *started < ejected,
                    "a request failed outside the window of b2's death: {e}"
                );
                failed_before_ejection += 1;
            }
        }
    }
    let after: Vec<&Outcome> = outcomes.iter().filter(|(s, _)| *s > readmitted).collect();
    assert!(
        after.iter().any(|(_, got)| got.as_deref() == Ok("b2")),
        "b2 got no new connection after its readmission ({} requests)",
        after.len()
    );
    println!(
        "{} requests, {failed_before_ejection} failed between the kill and the ejection",
        outcomes.len()
    );
}

/// b3 registers with a TTL; heartbeats keep it; without them it expires
/// within TTL + 100 ms of the last, and the next brings it back.
fn expires_without_heartbeats(client: &mut ControlClient) {
    let ttl = Duration::from_millis(TTL_MS);
    let request = BackendEdit {
        heartbeat_ttl: Some(format!("{TTL_MS}ms")),
        health: Some(BackendCheck {
            kind: Some("none".into()),
            port: None,
        }),
        ..edit(3)
    };
    client.call(Request::BackendEdit(request)).unwrap();
    let key = BackendKey {
        service: "web".into(),
        address: backend_v4(3).to_string(),
        port: 8080,
    };
    let mut last = Instant::now();
    for _ in 0..6 {
        last = Instant::now();
        let reply = client.call(Request::BackendHeartbeat(key.clone())).unwrap();
        assert!(matches!(reply, Reply::Heartbeat(_)), "{reply:?}");
        std::thread::sleep(ttl / 3);
        assert_eq!(state(client, "web", 3, 8080).0, "up");
    }
    let expired = within(ttl + Duration::from_secs(1), || {
        state(client, "web", 3, 8080).0 == "expired"
    })
    .expect("b3 did not expire");
    let after_last = expired - last;
    println!("expired {after_last:?} after its last heartbeat (TTL {ttl:?})");
    assert!(after_last >= ttl, "expired early: {after_last:?}");
    assert!(
        after_last <= ttl + Duration::from_millis(100),
        "expired {after_last:?} after its last heartbeat, more than TTL + 100 ms"
    );
    client.call(Request::BackendHeartbeat(key)).unwrap();
    assert_eq!(state(client, "web", 3, 8080).0, "up");
}
