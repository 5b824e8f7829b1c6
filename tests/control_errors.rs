//! Bad input to the control socket: every command with bad arguments,
//! malformed and oversized requests, silent and slow clients, too many
//! clients, a full server. Each gets a clear error; nothing changes (same generation,
//! same rules); forwarding goes on; other clients are served.

mod control_support;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use control_support::*;
use flowgate_api::{
    ApiError, ApplyConfig, BackendAdd, BackendEdit, BackendKey, BackendSpec, Batch, ClientError,
    Edit, ErrorCode, FlowsQuery, Reply, Request, Response, ServiceEdit, ServiceName, ServiceSpec,
};
use flowgate_dataplane::control::ServerLimits;

fn key(service: &str, address: &str, port: u16) -> BackendKey {
    BackendKey {
        service: service.into(),
        address: address.into(),
        port,
    }
}

fn add(service: &str, address: &str, port: u16, weight: u32) -> BackendAdd {
    BackendAdd {
        service: service.into(),
        backend: BackendSpec {
            weight: Some(weight),
            ..BackendSpec::new(address, port)
        },
    }
}

fn edit(service: &str, address: &str, weight: u32) -> BackendEdit {
    BackendEdit {
        service: service.into(),
        address: address.into(),
        port: 8080,
        weight: Some(weight),
        zone: None,
        set: None,
        group: None,
        health: Default::default(),
        heartbeat_ttl: None,
    }
}

fn service(name: &str, vip: &str, backends: Vec<BackendSpec>) -> ServiceSpec {
    ServiceSpec {
        name: name.into(),
        protocol: "tcp".into(),
        vip: vip.into(),
        port: 80,
        scheduler: None,
        maglev_table_size: None,
        backends,
    }
}

fn named(name: &str) -> ServiceName {
    ServiceName {
        service: name.into(),
    }
}

/// Every command, with bad input: (request, expected code, words the
/// message must contain).
// A table, one case per entry: it reads as a list, however long.
#[allow(clippy::too_many_lines)]
fn bad_requests() -> Vec<(Request, ErrorCode, &'static str)> {
    let one = || vec![BackendSpec::new("198.18.1.20", 8080)];
    vec![
        // service add
        (
            Request::ServiceAdd(service("web", "198.18.100.11", one())),
            ErrorCode::Exists,
            "service \"web\" already exists",
        ),
        (
            Request::ServiceAdd(service("web2", "198.18.100.10", one())),
            ErrorCode::Invalid,
            "tcp 198.18.100.10:80 of service \"web2\" is already used by service \"web\"",
        ),
        (
            Request::ServiceAdd(service("x", "198.18.100.300", one())),
            ErrorCode::Invalid,
            "VIP \"198.18.100.300\" of service \"x\" is not an IP address",
        ),
        (
            Request::ServiceAdd(service("x", "224.0.0.1", one())),
            ErrorCode::Invalid,
            "VIP 224.0.0.1 of service \"x\" is a multicast address",
        ),
        (
            Request::ServiceAdd(ServiceSpec {
                protocol: "sctp".into(),
                ..service("x", "198.18.100.11", one())
            }),
            ErrorCode::Invalid,
            "unknown protocol \"sctp\" in service \"x\"",
        ),
        (
            Request::ServiceAdd(service("x", "198.18.100.11", Vec::new())),
            ErrorCode::Invalid,
            "service \"x\" has no backends",
        ),
        (
            Request::ServiceAdd(service("w b", "198.18.100.11", one())),
            ErrorCode::Invalid,
            "service name \"w b\" is not valid",
        ),
        (
            Request::ServiceAdd(service(
                "x",
                "198.18.100.11",
                vec![BackendSpec {
                    weight: Some(10_001),
                    ..BackendSpec::new("198.18.1.20", 8080)
                }],
            )),
            ErrorCode::Invalid,
            "weight 10001 of backend 198.18.1.20:8080 in service \"x\" is out of range 0..=10000",
        ),
        (
            Request::ServiceAdd(service(
                "x",
                "198.18.100.11",
                vec![
                    BackendSpec::new("198.18.1.20", 8080),
                    BackendSpec::new("198.18.1.20", 8080),
                ],
            )),
            ErrorCode::Invalid,
            "backend 198.18.1.20:8080 is listed twice in service \"x\"",
        ),
        // service edit
        (
            Request::ServiceEdit(ServiceEdit {
                service: "nope".into(),
                scheduler: Some("wrr".into()),
                maglev_table_size: None,
            }),
            ErrorCode::NotFound,
            "unknown service \"nope\"",
        ),
        (
            Request::ServiceEdit(ServiceEdit {
                service: "web".into(),
                scheduler: Some("rr".into()),
                maglev_table_size: None,
            }),
            ErrorCode::Invalid,
            "unknown scheduler \"rr\" in service \"web\"",
        ),
        (
            Request::ServiceEdit(ServiceEdit {
                service: "web".into(),
                scheduler: None,
                maglev_table_size: Some(256),
            }),
            ErrorCode::Invalid,
            "maglev_table_size 256 of service \"web\" is not prime (nearest primes: 251, 257)",
        ),
        // service del
        (
            Request::ServiceDel(named("nope")),
            ErrorCode::NotFound,
            "unknown service \"nope\"",
        ),
        // backend list
        (
            Request::BackendList(named("nope")),
            ErrorCode::NotFound,
            "unknown service \"nope\"",
        ),
        // backend add
        (
            Request::BackendAdd(add("nope", "198.18.1.20", 8080, 1)),
            ErrorCode::NotFound,
            "unknown service \"nope\"",
        ),
        (
            Request::BackendAdd(add("web", "198.18.1.300", 8080, 1)),
            ErrorCode::Invalid,
            "backend \"198.18.1.300\" of service \"web\" is not an IP address",
        ),
        (
            Request::BackendAdd(add("web", "198.18.1.11", 8080, 1)),
            ErrorCode::Exists,
            "service \"web\" already has backend 198.18.1.11:8080",
        ),
        (
            Request::BackendAdd(add("web", "198.18.1.20", 8080, 10_001)),
            ErrorCode::Invalid,
            "weight 10001 of backend 198.18.1.20:8080 in service \"web\" is out of range 0..=10000",
        ),
        (
            Request::BackendAdd(add("web", "2001:2:0:1::20", 8080, 1)),
            ErrorCode::Invalid,
            "backend 2001:2:0:1::20 of service \"web\" is IPv6 but its VIP 198.18.100.10 is IPv4",
        ),
        (
            Request::BackendAdd(add("web", "127.0.0.1", 8080, 1)),
            ErrorCode::Invalid,
            "backend 127.0.0.1 of service \"web\" is a loopback address",
        ),
        (
            Request::BackendAdd(add("web", "198.18.1.20", 0, 1)),
            ErrorCode::Invalid,
            "port 0 of backend 198.18.1.20 in service \"web\" is out of range 1..=65535",
        ),
        // backend edit
        (
            Request::BackendEdit(edit("web", "198.18.1.99", 2)),
            ErrorCode::NotFound,
            "service \"web\" has no backend 198.18.1.99:8080",
        ),
        (
            Request::BackendEdit(edit("web", "198.18.1.11", 10_001)),
            ErrorCode::Invalid,
            "weight 10001 of backend 198.18.1.11:8080 in service \"web\" is out of range 0..=10000",
        ),
        (
            Request::BackendEdit(edit("web", "not-an-address", 2)),
            ErrorCode::Invalid,
            "backend \"not-an-address\" of service \"web\" is not an IP address",
        ),
        // backend del
        (
            Request::BackendDel(key("web", "198.18.1.99", 8080)),
            ErrorCode::NotFound,
            "service \"web\" has no backend 198.18.1.99:8080",
        ),
        (
            Request::BackendDel(key("nope", "198.18.1.11", 8080)),
            ErrorCode::NotFound,
            "unknown service \"nope\"",
        ),
        // backend drain
        (
            Request::BackendDrain(key("web", "198.18.1.11", 9999)),
            ErrorCode::NotFound,
            "service \"web\" has no backend 198.18.1.11:9999",
        ),
        (
            Request::Batch(Batch {
                edits: ["198.18.1.11", "198.18.1.12", "198.18.1.13"]
                    .iter()
                    .map(|a| Edit::BackendDrain(key("web", a, 8080)))
                    .collect(),
                dry_run: false,
            }),
            ErrorCode::Invalid,
            "service \"web\" has no backend with weight > 0 (all 3 are drained)",
        ),
        // A batch is all or nothing: good edits around a bad one do not apply.
        (
            Request::Batch(Batch {
                edits: vec![
                    Edit::BackendAdd(add("web", "198.18.1.20", 8080, 1)),
                    Edit::BackendDel(key("web", "198.18.1.99", 8080)),
                    Edit::BackendEdit(edit("web", "198.18.1.11", 7)),
                ],
                dry_run: false,
            }),
            ErrorCode::NotFound,
            "edit 2 (backend_del): service \"web\" has no backend 198.18.1.99:8080",
        ),
        // Deleting every backend.
        (
            Request::Batch(Batch {
                edits: ["198.18.1.11", "198.18.1.12", "198.18.1.13"]
                    .iter()
                    .map(|a| Edit::BackendDel(key("web", a, 8080)))
                    .collect(),
                dry_run: false,
            }),
            ErrorCode::Invalid,
            "service \"web\" has no backends",
        ),
        // flows
        (
            Request::Flows(FlowsQuery {
                service: Some("nope".into()),
                limit: Some(3),
            }),
            ErrorCode::NotFound,
            "unknown service \"nope\"",
        ),
        // apply
        (
            Request::Apply(ApplyConfig {
                config: base_rules().replace("weight = 2", "weight = 20000"),
                origin: Some("new.toml".into()),
                dry_run: false,
            }),
            ErrorCode::Invalid,
            "in service \"web\" is out of range 0..=10000",
        ),
        (
            Request::Apply(ApplyConfig {
                config: "[[services]\n".into(),
                origin: None,
                dry_run: true,
            }),
            ErrorCode::Invalid,
            "<api>:1:",
        ),
        (
            Request::Apply(ApplyConfig {
                config: format!("[daemon]\ncores = [1]\n{}", base_rules()),
                origin: None,
                dry_run: false,
            }),
            ErrorCode::RestartRequired,
            "[daemon] changed: read only when flowgate starts",
        ),
    ]
}

/// Raw lines that are not valid requests: (line, code, words).
fn bad_lines() -> Vec<(&'static [u8], ErrorCode, &'static str)> {
    vec![
        (b"{not json\n", ErrorCode::BadRequest, "malformed request"),
        (b"\xff\xfe\n", ErrorCode::BadRequest, "malformed request"),
        (b"[\"status\"]\n", ErrorCode::BadRequest, "malformed request"),
        (b"{\"request\":{\"op\":\"status\"}}\n", ErrorCode::BadRequest, "no \"version\""),
        (
            b"{\"version\":2,\"request\":{\"op\":\"status\"}}\n",
            ErrorCode::UnsupportedVersion,
            "unsupported API version 2: this flowgate speaks version 1",
        ),
        (
            b"{\"version\":1,\"request\":{\"op\":\"reboot\"}}\n",
            ErrorCode::BadRequest,
            "unknown variant `reboot`",
        ),
        (
            b"{\"version\":1,\"request\":{\"op\":\"backend_drain\",\"service\":\"web\",\"address\":\"198.18.1.11\",\"port\":8080,\"force\":true}}\n",
            ErrorCode::BadRequest,
            "unknown field `force`",
        ),
        (
            b"{\"version\":1,\"request\":{\"op\":\"backend_drain\",\"service\":\"web\",\"address\":\"198.18.1.11\",\"port\":70000}}\n",
            ErrorCode::BadRequest,
            "70000",
        ),
        (
            b"{\"version\":1,\"request\":{\"op\":\"backend_drain\",\"service\":\"web\",\"address\":\"198.18.1.11\"}}\n",
            ErrorCode::BadRequest,
            "missing field `port`",
        ),
    ]
}

fn assert_error(error: &ApiError, code: ErrorCode, words: &str, what: &str) {
    assert_eq!(error.code, code, "{what}: {error:?}");
    let all = format!("{} | {}", error.message, error.problems.join(" | "));
    assert!(all.contains(words), "{what}: {all:?} lacks {words:?}");
    assert!(!error.message.contains('\n'), "{what}: message on one line");
}

#[test]
fn bad_input_to_every_command_is_refused_clearly_and_changes_nothing() {
    let gateway = Gateway::start(&base_rules());
    let traffic = Traffic::start(
        gateway.dataplane.reader(),
        &gateway.config(),
        TrafficPlan::default(),
    );
    let rules = gateway.config();
    let generation = gateway.generation();
    let polls = traffic.polls();

    let mut client = gateway.client();
    for (request, code, words) in bad_requests() {
        let what = format!("{request:?}");
        match client.call(request) {
            Err(ClientError::Rejected(error)) => assert_error(&error, code, words, &what),
            other => panic!("{what}: not rejected: {other:?}"),
        }
        assert_eq!(
            gateway.generation(),
            generation,
            "{what} published a snapshot"
        );
        assert_eq!(gateway.config(), rules, "{what} changed the rules");
    }
    for (line, code, words) in bad_lines() {
        let what = String::from_utf8_lossy(line).into_owned();
        let response = client.call_raw(line).unwrap();
        assert_error(&response.into_result().unwrap_err(), code, words, &what);
    }
    assert_eq!(gateway.generation(), generation);
    assert_eq!(gateway.config(), rules);
    assert_eq!(gateway.dataplane.applies(), 1);

    // The same connection still serves good requests.
    assert!(matches!(
        client.call(Request::Status {}).unwrap(),
        Reply::Status(_)
    ));
    traffic.wait_for(generation, 200);
    assert!(traffic.polls() > polls, "forwarding went on");
    traffic.finish().assert_clean();
}

#[test]
fn an_oversized_request_is_refused_and_the_server_goes_on() {
    let limits = ServerLimits {
        max_request_bytes: 64 * 1024,
        ..ServerLimits::default()
    };
    let gateway = Gateway::start_with(&base_rules(), limits);
    let generation = gateway.generation();
    let mut client = gateway.client();
    // A valid request, but 1 MiB of it: refused before it is parsed.
    let edits: Vec<Edit> = (0..20_000u32)
        .map(|i| Edit::BackendDrain(key("web", "198.18.1.11", 1 + (i % 60_000) as u16)))
        .collect();
    let mut line = serde_json::to_vec(&flowgate_api::RequestEnvelope::new(Request::Batch(Batch {
        edits,
        dry_run: false,
    })))
    .unwrap();
    line.push(b'\n');
    assert!(line.len() > 1 << 20);
    let error = client.call_raw(&line).unwrap().into_result().unwrap_err();
    assert_error(
        &error,
        ErrorCode::TooLarge,
        "request larger than 65536 bytes",
        "oversized",
    );
    // Then the server hangs up on that client (its next call connects
    // again),
    assert!(client.read_response().is_err());
    assert!(client.call(Request::Status {}).is_ok());
    // and serves others as before.
    let mut other = gateway.client();
    assert!(matches!(
        other.call(Request::ServiceList {}).unwrap(),
        Reply::Services(_)
    ));
    assert_eq!(gateway.generation(), generation);

    // The default limit takes a 100 000-change batch (see the api tests)
    // and refuses 16 MiB of garbage with no newline.
    let gateway = Gateway::start(&base_rules());
    let mut client = gateway.client();
    let junk = vec![b'x'; (16 << 20) + 10];
    let error = client.call_raw(&junk).unwrap().into_result().unwrap_err();
    assert_eq!(error.code, ErrorCode::TooLarge);
    assert!(gateway.client().call(Request::Status {}).is_ok());
}

#[test]
fn a_silent_or_slow_client_times_out_and_holds_up_nobody() {
    let limits = ServerLimits {
        idle_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(2),
        ..ServerLimits::default()
    };
    let gateway = Gateway::start_with(&base_rules(), limits);
    let generation = gateway.generation();

    let mut silent = UnixStream::connect(&gateway.socket).unwrap();
    let mut slow = UnixStream::connect(&gateway.socket).unwrap();
    slow.write_all(b"{\"version\":1,\"request\":{\"op\":")
        .unwrap();
    // Others are served at once meanwhile.
    let started = Instant::now();
    let mut client = gateway.client();
    client.call(Request::Status {}).unwrap();
    client
        .call(Request::BackendDrain(key("web", "198.18.1.11", 8080)))
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "another client waited"
    );
    let generation = generation + 1;

    for (stream, words) in [
        (&mut silent, "no request within 2000 ms"),
        (&mut slow, "request not finished"),
    ] {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        let response: flowgate_api::Response = serde_json::from_str(answer.trim_end()).unwrap();
        let error = response.into_result().unwrap_err();
        assert_error(&error, ErrorCode::Timeout, words, words);
    }
    assert_eq!(gateway.generation(), generation);
}

#[test]
fn at_the_cap_the_client_idle_longest_makes_room_and_busy_clients_are_never_closed() {
    let limits = ServerLimits {
        max_clients: 4,
        idle_timeout: Duration::from_secs(30),
        ..ServerLimits::default()
    };
    let gateway = Gateway::start_with(&base_rules(), limits);
    let generation = gateway.generation();
    // Four clients take every place, then wait (idle), the first longest.
    let mut held: Vec<_> = (0..4)
        .map(|_| {
            let mut c = gateway.client();
            c.call(Request::Status {}).unwrap();
            std::thread::sleep(Duration::from_millis(20));
            c
        })
        .collect();
    // A newcomer is served at once,
    let started = Instant::now();
    let mut extra = gateway.client();
    let c = match extra.call(Request::BackendDrain(key("web", "198.18.1.11", 8080))) {
        Ok(Reply::Changed(c)) => c,
        other => panic!("the newcomer was not served: {other:?}"),
    };
    assert!(c.applied && started.elapsed() < Duration::from_secs(2));
    // and the client idle longest was closed for it, and told so (the
    // notice waits in its connection; a call would connect again).
    match held[0].read_response().map(Response::into_result) {
        Ok(Err(e)) => assert_error(
            &e,
            ErrorCode::Timeout,
            "without a request: the server serves at most 4 clients at once and another one \
             needed the place; connect again to send a request",
            "closed for a newcomer",
        ),
        other => panic!("the idlest client was not closed: {other:?}"),
    }
    for c in &mut held[1..] {
        c.call(Request::Stats {}).unwrap();
    }
    // Its next call goes on a new connection.
    held[0].call(Request::Status {}).unwrap();
    drop(held);
    drop(extra);

    // Clients in the middle of a request are never closed: with four of
    // them, a newcomer is told the server is busy, and nothing changes.
    let deadline = Instant::now() + Duration::from_secs(10);
    while gateway.active_clients() > 0 {
        assert!(Instant::now() < deadline, "clients never left");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Each connects and waits to be waiting, then starts a request and
    // leaves it unfinished; they count as on a request once none waits.
    let mut slow: Vec<_> = (0..4)
        .map(|_| UnixStream::connect(&gateway.socket).unwrap())
        .collect();
    while gateway.active_clients() < 4 || gateway.waiting_clients() < 4 {
        assert!(
            Instant::now() < deadline,
            "the slow clients were not served"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    for s in &mut slow {
        s.write_all(b"{\"version\":1,\"request\":{\"op\":").unwrap();
    }
    while gateway.waiting_clients() > 0 {
        assert!(
            Instant::now() < deadline,
            "the slow clients' requests were not read"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut extra = gateway.client();
    match extra.call(Request::BackendDrain(key("web", "198.18.1.12", 8080))) {
        Err(ClientError::Rejected(e)) => assert_error(
            &e,
            ErrorCode::Busy,
            "server busy: 4 clients are connected already (the most it serves at once), each \
             in the middle of a request; try again",
            "busy",
        ),
        other => panic!("not refused as busy: {other:?}"),
    }
    assert_eq!(
        gateway.generation(),
        generation + 1,
        "the refused change did not apply"
    );
    // Once one of them finishes its request, a newcomer is served.
    slow[0].write_all(b"\"status\"}}\n").unwrap();
    drop(slow.remove(0));
    loop {
        match gateway.client().call(Request::ServiceList {}) {
            Ok(_) => break,
            Err(ClientError::Rejected(e)) if e.code == ErrorCode::Busy => {
                assert!(Instant::now() < deadline, "the place was never freed");
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn concurrent_clients_change_the_rules_one_at_a_time() {
    // The twelve clients are threads of this one process: let it open as
    // many connections as they need (tests/control_fairness.rs tests the
    // limits per process).
    let limits = ServerLimits {
        max_clients_per_process: 32,
        connects_per_process_per_second: 100_000,
        ..ServerLimits::default()
    };
    let gateway = Gateway::start_with(&base_rules(), limits);
    let generation = gateway.generation();
    let socket = gateway.socket.clone();
    let threads: Vec<_> = (0..12u8)
        .map(|t| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let mut applied = 0;
                for i in 0..10u8 {
                    let mut client = match flowgate_api::ControlClient::connect(&socket) {
                        Ok(c) => c,
                        Err(e) => panic!("{e}"),
                    };
                    // Each thread adds its own backends: all must land.
                    let host = 20 + t * 10 + i;
                    let request =
                        Request::BackendAdd(add("web", &format!("198.18.1.{host}"), 8080, 1));
                    loop {
                        match client.call(request.clone()) {
                            Ok(Reply::Changed(c)) => {
                                assert!(c.applied);
                                applied += 1;
                                break;
                            }
                            Err(ClientError::Rejected(e)) if e.code == ErrorCode::Busy => {
                                std::thread::sleep(Duration::from_millis(5));
                                client = flowgate_api::ControlClient::connect(&socket).unwrap();
                            }
                            other => panic!("{other:?}"),
                        }
                    }
                    let _ = client.call(Request::Stats {});
                }
                applied
            })
        })
        .collect();
    let applied: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(applied, 120);
    assert_eq!(
        gateway.generation(),
        generation + 120,
        "one generation per change"
    );
    assert_eq!(
        gateway.config().service("web").unwrap().backends.len(),
        3 + 120
    );
}
