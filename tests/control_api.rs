//! The control API over its socket: every command doing what it says, the
//! socket's mode and lifecycle, reload, and a change to one service
//! rebuilding only that service's tables.

mod control_support;

use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};

use control_support::*;
use flowgate_api::{
    ApplyConfig, BackendAdd, BackendEdit, BackendKey, BackendSpec, Batch, ChangeReport,
    ClientError, ControlClient, Edit, ErrorCode, FlowEntry, FlowsQuery, Reply, Request,
    ServiceEdit, ServiceName, ServiceSpec, ServiceStats, StatsReport, StatusReport,
};
use flowgate_dataplane::control::{
    self, ControlServer, ControlState, MemoryDataplane, ServerError,
};
use flowgate_dataplane::pipeline::PipelineCounters;

fn changed(reply: Reply) -> ChangeReport {
    match reply {
        Reply::Changed(c) => c,
        other => panic!("not a change: {other:?}"),
    }
}

fn key(service: &str, address: &str, port: u16) -> BackendKey {
    BackendKey {
        service: service.into(),
        address: address.into(),
        port,
    }
}

#[test]
// Every command in turn on one gateway, each seeing what the previous one
// changed: one scenario, read top to bottom.
#[allow(clippy::too_many_lines)]
fn every_command_does_what_it_says() {
    let gateway = Gateway::start(&base_rules());
    let mut client = gateway.client();

    // status
    let counters = Arc::new(PipelineCounters::default());
    counters.rx_packets.add(42);
    gateway.dataplane.add_worker(Some(1), counters);
    let Reply::Status(status) = client.call(Request::Status {}).unwrap() else {
        panic!()
    };
    assert_eq!(status.dataplane.generation, 1);
    assert_eq!(status.dataplane.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(status.dataplane.workers[0].core, Some(1));
    assert_eq!(status.dataplane.interfaces.len(), 2);
    assert_eq!((status.services, status.backends), (1, 3));
    assert_eq!(
        (status.origin.as_str(), status.edits_since_load),
        ("gw.toml", 0)
    );

    // service add, list
    let c = changed(
        client
            .call(Request::ServiceAdd(ServiceSpec {
                name: "dns".into(),
                protocol: "udp".into(),
                vip: "198.18.100.10".into(),
                port: 53,
                scheduler: Some("sh".into()),
                maglev_table_size: Some(257),
                backends: vec![
                    BackendSpec::new("198.18.1.11", 5353),
                    BackendSpec {
                        weight: Some(3),
                        zone: Some("a".into()),
                        ..BackendSpec::new("198.18.1.12", 5353)
                    },
                ],
            }))
            .unwrap(),
    );
    assert_eq!((c.generation, c.applied), (2, true));
    assert_eq!(c.diff.services_added[0].name, "dns");
    assert_eq!(c.diff.backends_added.len(), 2);
    let Reply::Services(list) = client.call(Request::ServiceList {}).unwrap() else {
        panic!()
    };
    let names: Vec<&str> = list.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["web", "dns"]);
    let dns = &list.services[1];
    assert_eq!(
        (dns.protocol.as_str(), dns.port, dns.scheduler.as_str()),
        ("udp", 53, "sh")
    );
    assert_eq!(dns.maglev_table_size, 257);
    assert_eq!(dns.backends[1].zone.as_deref(), Some("a"));

    // service edit
    let c = changed(
        client
            .call(Request::ServiceEdit(ServiceEdit {
                service: "dns".into(),
                scheduler: Some("wrr".into()),
                maglev_table_size: None,
            }))
            .unwrap(),
    );
    assert_eq!(c.diff.services_changed[0].field, "scheduler");
    assert_eq!(
        (
            c.diff.services_changed[0].from.as_str(),
            c.diff.services_changed[0].to.as_str()
        ),
        ("sh", "wrr")
    );

    // backend add, edit, drain, del, list
    let c = changed(
        client
            .call(Request::BackendAdd(BackendAdd {
                service: "web".into(),
                backend: BackendSpec {
                    weight: Some(5),
                    ..BackendSpec::new("198.18.1.14", 8080)
                },
            }))
            .unwrap(),
    );
    assert_eq!(c.diff.backends_added[0].weight, 5);
    let c = changed(
        client
            .call(Request::BackendEdit(BackendEdit {
                service: "web".into(),
                address: "198.18.1.14".into(),
                port: 8080,
                weight: Some(7),
                zone: Some("b".into()),
                set: None,
                group: None,
            }))
            .unwrap(),
    );
    assert_eq!(
        (
            c.diff.backends_reweighted[0].from,
            c.diff.backends_reweighted[0].to
        ),
        (5, 7)
    );
    assert_eq!(c.diff.backends_relabelled[0].to.as_deref(), Some("b"));
    let c = changed(
        client
            .call(Request::BackendDrain(key("web", "198.18.1.14", 8080)))
            .unwrap(),
    );
    assert_eq!(c.diff.backends_reweighted[0].to, 0);
    // Draining again changes nothing, and publishes nothing.
    let again = changed(
        client
            .call(Request::BackendDrain(key("web", "198.18.1.14", 8080)))
            .unwrap(),
    );
    assert!(!again.applied && again.diff.is_empty());
    assert_eq!(again.generation, c.generation);
    let c = changed(
        client
            .call(Request::BackendDel(key("web", "198.18.1.14", 8080)))
            .unwrap(),
    );
    assert_eq!(
        c.diff.backends_removed[0].address.to_string(),
        "198.18.1.14"
    );
    let Reply::Backends(b) = client
        .call(Request::BackendList(ServiceName {
            service: "web".into(),
        }))
        .unwrap()
    else {
        panic!()
    };
    let weights: Vec<u32> = b.backends.iter().map(|b| b.weight).collect();
    assert_eq!(weights, [1, 1, 2]);

    // service del
    let c = changed(
        client
            .call(Request::ServiceDel(ServiceName {
                service: "dns".into(),
            }))
            .unwrap(),
    );
    assert_eq!(c.diff.services_removed[0].name, "dns");
    assert_eq!(c.diff.backends_removed.len(), 2);

    // batch: one generation for several edits
    let before = gateway.generation();
    let c = changed(
        client
            .call(Request::Batch(Batch {
                edits: vec![
                    Edit::BackendDrain(key("web", "198.18.1.11", 8080)),
                    Edit::BackendAdd(BackendAdd {
                        service: "web".into(),
                        backend: BackendSpec::new("198.18.1.15", 8080),
                    }),
                ],
                dry_run: false,
            }))
            .unwrap(),
    );
    assert_eq!(c.generation, before + 1);
    assert_eq!(c.diff.change_count(), 2);

    // stats
    gateway.dataplane.set_service_stats(vec![ServiceStats {
        name: "web".into(),
        packets: 9,
        ..ServiceStats::default()
    }]);
    let Reply::Stats(stats) = client.call(Request::Stats {}).unwrap() else {
        panic!()
    };
    assert_eq!(stats.totals.rx_packets, 42);
    assert_eq!(stats.services[0].packets, 9);
    assert_eq!(stats.generation, gateway.generation());

    // flows: filtered by service, limited
    let flow = |service: &str, port: u16| FlowEntry {
        worker: 0,
        service: Some(service.into()),
        protocol: "tcp".into(),
        client: format!("198.18.0.2:{port}").parse().unwrap(),
        vip: "198.18.100.10:80".parse().unwrap(),
        backend: "198.18.1.11:8080".parse().unwrap(),
        state: "established".into(),
        idle_ms: 5,
    };
    gateway.dataplane.set_flows(vec![
        flow("web", 1),
        flow("other", 2),
        flow("web", 3),
        flow("web", 4),
    ]);
    let Reply::Flows(flows) = client
        .call(Request::Flows(FlowsQuery {
            service: Some("web".into()),
            limit: Some(2),
        }))
        .unwrap()
    else {
        panic!()
    };
    let ports: Vec<u16> = flows.flows.iter().map(|f| f.client.port()).collect();
    assert_eq!(ports, [1, 3]);

    // apply: dry run first, then for real
    let text = base_rules().replace("weight = 2", "weight = 4");
    let dry = changed(
        client
            .call(Request::Apply(ApplyConfig {
                config: text.clone(),
                origin: Some("gw-v2.toml".into()),
                dry_run: true,
            }))
            .unwrap(),
    );
    assert!(dry.dry_run && !dry.applied);
    assert_eq!(dry.generation, gateway.generation());
    // The file's rules replace the API edits made since.
    assert_eq!(dry.diff.backends_removed.len(), 1, "{:?}", dry.diff);
    assert_eq!(dry.diff.backends_reweighted.len(), 2, "{:?}", dry.diff);
    let generation = gateway.generation();
    let applied = changed(
        client
            .call(Request::Apply(ApplyConfig {
                config: text,
                origin: Some("gw-v2.toml".into()),
                dry_run: false,
            }))
            .unwrap(),
    );
    assert_eq!(applied.diff, dry.diff, "the dry run told the truth");
    assert_eq!(applied.generation, generation + 1);
    let Reply::Status(status) = client.call(Request::Status {}).unwrap() else {
        panic!()
    };
    assert_eq!(
        (status.origin.as_str(), status.edits_since_load),
        ("gw-v2.toml", 0)
    );
}

#[test]
fn a_change_to_one_service_rebuilds_only_its_tables() {
    let mut text = base_rules();
    for k in 1..=20 {
        text.push_str(&format!(
            "[[services]]\nname = \"s{k}\"\nprotocol = \"tcp\"\nvip = \"198.18.102.{k}\"\nport = 80\n\
             [[services.backends]]\naddress = \"198.18.1.20\"\nport = 8080\n\
             [[services.backends]]\naddress = \"198.18.1.21\"\nport = 8080\n"
        ));
    }
    let gateway = Gateway::start(&text);
    let mut client = gateway.client();
    let before = gateway.dataplane.current();
    changed(
        client
            .call(Request::BackendEdit(BackendEdit {
                service: "s7".into(),
                address: "198.18.1.21".into(),
                port: 8080,
                weight: Some(3),
                zone: None,
                set: None,
                group: None,
            }))
            .unwrap(),
    );
    let after = gateway.dataplane.current();
    assert_eq!(after.generation(), before.generation() + 1);
    let mut reused = 0;
    for (id, service) in after.services() {
        let old = before.service(id).unwrap();
        let shared = service.maglev_table().shares_slots_with(old.maglev_table());
        if service.name() == "s7" {
            assert!(!shared, "the changed service got a new table");
        } else {
            assert!(shared, "{} was rebuilt", service.name());
            reused += 1;
        }
    }
    assert_eq!(reused, 20, "web and s1..s20 but s7");
    // A label change compiles nothing new at all.
    changed(
        client
            .call(Request::BackendEdit(BackendEdit {
                service: "s7".into(),
                address: "198.18.1.21".into(),
                port: 8080,
                weight: None,
                zone: Some("z".into()),
                set: None,
                group: None,
            }))
            .unwrap(),
    );
    let last = gateway.dataplane.current();
    assert!(last.services().all(|(id, s)| s
        .maglev_table()
        .shares_slots_with(after.service(id).unwrap().maglev_table())));
}

#[test]
fn the_socket_is_private_and_owned_by_one_daemon() {
    let gateway = Gateway::start(&base_rules());
    let mode = std::fs::metadata(&gateway.socket)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // A second daemon on the same path is refused; the first goes on.
    let config = gateway.config();
    let state = Arc::new(Mutex::new(ControlState::new(
        config.clone(),
        "gw.toml",
        Arc::new(MemoryDataplane::with_config(&config)),
    )));
    match ControlServer::bind(&gateway.socket, Arc::clone(&state)) {
        Err(ServerError::InUse { path }) => assert_eq!(path, gateway.socket),
        other => panic!("second daemon allowed: {other:?}"),
    }
    assert!(gateway.client().call(Request::Status {}).is_ok());

    // A directory made for the socket is private; a stopped server
    // removes its socket; a stale one (nobody listening: the daemon died)
    // is replaced; a plain file is not.
    let dir = TempDir::new("stale");
    let stale = dir.path().join("run").join("control.sock");
    let server = ControlServer::bind(&stale, Arc::clone(&state)).unwrap();
    let dir_mode = std::fs::metadata(stale.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o777, 0o700);
    drop(server);
    assert!(!stale.exists(), "a stopped server removes its socket");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(stale.exists(), "a stale socket file");
    let server = ControlServer::bind(&stale, Arc::clone(&state)).unwrap();
    assert!(ControlClient::connect(&stale).is_ok());
    drop(server);
    std::fs::write(&stale, "not a socket").unwrap();
    match ControlServer::bind(&stale, state) {
        Err(ServerError::NotASocket { .. }) => {}
        other => panic!("replaced a plain file: {other:?}"),
    }
    assert_eq!(std::fs::read_to_string(&stale).unwrap(), "not a socket");

    // A client of a path nobody serves is told so.
    match ControlClient::connect(&dir.path().join("nothing.sock")) {
        Err(e @ ClientError::Connect { .. }) => {
            assert!(e.to_string().ends_with("is flowgate running?"), "{e}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn reload_applies_the_file_or_keeps_the_old_rules() {
    let gateway = Gateway::start(&base_rules());
    let traffic = Traffic::start(
        gateway.dataplane.reader(),
        &gateway.config(),
        TrafficPlan::default(),
    );
    let path = gateway.dir.path().join("gw.toml");

    std::fs::write(&path, base_rules().replace("weight = 2", "weight = 5")).unwrap();
    let c = control::reload(&gateway.state, &path).unwrap();
    assert_eq!((c.generation, c.diff.backends_reweighted.len()), (2, 1));

    for bad in [
        base_rules().replace("weight = 2", "weight = -1"),
        "[[services]]\nname = \"x\"\n".to_owned(),
        format!("[daemon]\ncores = [1]\n{}", base_rules()),
    ] {
        std::fs::write(&path, &bad).unwrap();
        let e = control::reload(&gateway.state, &path).unwrap_err();
        assert!(
            matches!(e.code, ErrorCode::Invalid | ErrorCode::RestartRequired),
            "{e:?}"
        );
        assert!(!e.message.contains('\n'));
        assert_eq!(gateway.generation(), 2, "a bad file changed the rules");
    }
    std::fs::remove_file(&path).unwrap();
    let e = control::reload(&gateway.state, &path).unwrap_err();
    assert_eq!(e.code, ErrorCode::Io);
    assert_eq!(
        gateway.config().service("web").unwrap().backends[2].weight,
        5,
        "the last good rules run"
    );
    traffic.wait_for(2, 100);
    traffic.finish().assert_clean();
}

/// A data plane whose workers are slow to answer `flows`.
struct SlowFlows(MemoryDataplane);

impl control::Dataplane for SlowFlows {
    fn apply(
        &self,
        config: &flowgate_dataplane::rules::Config,
    ) -> Result<control::Applied, control::ApplyError> {
        self.0.apply(config)
    }
    fn status(&self) -> StatusReport {
        self.0.status()
    }
    fn stats(&self) -> StatsReport {
        self.0.stats()
    }
    fn flows(&self, service: Option<&str>, limit: usize) -> Vec<FlowEntry> {
        std::thread::sleep(std::time::Duration::from_secs(2));
        self.0.flows(service, limit)
    }
}

#[test]
fn a_slow_flows_query_holds_up_no_change() {
    let config = flowgate_dataplane::rules::load_str(&base_rules(), "gw.toml").unwrap();
    let dataplane = Arc::new(SlowFlows(MemoryDataplane::with_config(&config)));
    let state = Arc::new(Mutex::new(ControlState::new(
        config,
        "gw.toml",
        dataplane.clone(),
    )));
    let dir = TempDir::new("slow");
    let socket = dir.path().join("control.sock");
    let server = ControlServer::bind(&socket, state).unwrap();
    let stop = server.stop_handle();
    let serving = std::thread::spawn(move || server.serve());

    let slow = {
        let socket = socket.clone();
        std::thread::spawn(move || {
            let mut client = ControlClient::connect(&socket).unwrap();
            client.call(Request::Flows(FlowsQuery::default())).unwrap()
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(200));
    let started = std::time::Instant::now();
    let mut client = ControlClient::connect(&socket).unwrap();
    let c = changed(
        client
            .call(Request::BackendDrain(key("web", "198.18.1.11", 8080)))
            .unwrap(),
    );
    assert!(c.applied);
    assert!(
        started.elapsed() < std::time::Duration::from_millis(1500),
        "the change waited for the flows query: {:?}",
        started.elapsed()
    );
    assert!(matches!(slow.join().unwrap(), Reply::Flows(_)));
    assert_eq!(dataplane.0.current().generation(), 2);
    stop.stop();
    serving.join().unwrap();
}
