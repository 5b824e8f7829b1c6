//! Liveness from etcd (issue 15, point 6): two gateways reading the same
//! rules and the same health keys pick the same backend for every flow of
//! a maglev service, and a reporter whose lease ends takes its backend
//! down on both within a second, without a new generation.
//!
//! Against a real etcd (the distribution's, on loopback, temporary state,
//! removed when the test ends); the gateways run in-process with a real
//! control state over the in-memory data plane, as tests/fleet_ctl.rs
//! starts them. Every wait is bounded.

#[path = "fleet_support/mod.rs"]
mod fleet_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use fleet_support::{wait_until, Etcd, Proxy};
use flowgate_dataplane::control::{ControlState, Dataplane, MemoryDataplane};
use flowgate_dataplane::fleet::gateway::ControlSlot;
use flowgate_dataplane::fleet::layout::{KeyLayout, ReportedBackend};
use flowgate_dataplane::fleet::settings::EtcdSettings;
use flowgate_dataplane::fleet::source::{EtcdSource, Started};
use flowgate_dataplane::fleet::store::{FleetStore, Write};
use flowgate_dataplane::rules::Config;

const PREFIX: &str = "/fg-liveness";
const WAIT: Duration = Duration::from_secs(10);
const FLOWS: usize = 1_000;

/// `web`, maglev, its liveness from etcd, four backends.
const WEB: &str = r#"{"format":2,"protocol":"tcp","vip":"198.18.100.1","port":80,
    "scheduler":"maglev","maglev_table_size":251,"health":{"source":"etcd"},
    "backends":[{"address":"198.18.1.11","port":8080},{"address":"198.18.1.12","port":8080},
                {"address":"198.18.1.13","port":8080},{"address":"198.18.1.14","port":8080}]}"#;

const BACKENDS: [&str; 4] = [
    "198.18.1.11:8080",
    "198.18.1.12:8080",
    "198.18.1.13:8080",
    "198.18.1.14:8080",
];

fn layout() -> KeyLayout {
    KeyLayout::new(PREFIX).unwrap()
}

fn health_key(backend: &str) -> String {
    layout().health_key("web", &ReportedBackend::Address(backend.parse().unwrap()))
}

/// A gateway in memory taking its rules and liveness from etcd.
struct Gateway {
    _started: Started,
    control: ControlState,
    dataplane: Arc<MemoryDataplane>,
}

impl Gateway {
    fn start(etcd: &Etcd, id: &str) -> Gateway {
        Gateway::start_at(etcd.endpoint(), id)
    }

    fn start_at(endpoint: String, id: &str) -> Gateway {
        let slot = ControlSlot::default();
        let settings = EtcdSettings::new(vec![endpoint], PREFIX, id);
        let started = EtcdSource::start(settings, Config::default(), slot.sink()).unwrap();
        let config = Config::clone(&started.rules.config);
        let dataplane = Arc::new(MemoryDataplane::with_config(&config));
        let control = ControlState::new(config, "etcd", dataplane.clone());
        control.report_etcd(started.source.reporter());
        slot.fill(control.clone());
        Gateway {
            _started: started,
            control,
            dataplane,
        }
    }

    fn generation(&self) -> u64 {
        self.dataplane.generation()
    }

    /// The backend `explain` gives each of the test's flows.
    fn picks(&self) -> Vec<Option<String>> {
        (0..FLOWS)
            .map(|i| {
                let query = flowgate_api::ExplainQuery {
                    from: format!("198.18.{}.{}:{}", 10 + i / 250, 1 + i % 250, 20_000 + i),
                    to: "198.18.100.1:80".into(),
                    protocol: None,
                };
                match self
                    .control
                    .clone()
                    .handle(flowgate_api::Request::Explain(query))
                    .unwrap()
                {
                    flowgate_api::Reply::Explain(reply) => reply.backend,
                    other => panic!("{other:?}"),
                }
            })
            .collect()
    }
}

fn picked(picks: &[Option<String>], backend: &str) -> usize {
    picks
        .iter()
        .filter(|p| p.as_deref() == Some(backend))
        .count()
}

/// A lease of `ttl` seconds, by etcdctl: its id in hex.
fn grant(etcd: &Etcd, ttl: u32) -> String {
    let out = etcd.ctl(&["lease", "grant", &ttl.to_string()]);
    // "lease 694d8f5e3a1b2c0d granted with TTL(60s)"
    out.split_whitespace().nth(1).unwrap().to_owned()
}

fn put_under(etcd: &Etcd, lease: &str, key: &str, value: &str) {
    etcd.ctl(&["put", &format!("--lease={lease}"), key, value]);
}

/// The `web` service's key and value.
fn web() -> Write {
    Write {
        key: layout().service_key("web"),
        value: Some(WEB.as_bytes().to_vec()),
    }
}

/// A writer to `etcd` that has written `web`.
fn store_with_web(etcd: &Etcd) -> FleetStore {
    let mut store = FleetStore::connect(&[etcd.endpoint()], layout()).unwrap();
    store.write_unchecked(&[web()]).unwrap();
    store
}

/// `backends` reported up, each by a reporter with a lease of its own;
/// the leases.
fn report_each(etcd: &Etcd, backends: &[&str]) -> Vec<String> {
    let leases: Vec<String> = backends.iter().map(|_| grant(etcd, 60)).collect();
    for (backend, lease) in backends.iter().zip(&leases) {
        put_under(etcd, lease, &health_key(backend), "up");
    }
    leases
}

#[test]
fn two_gateways_with_the_same_reports_pick_alike_and_follow_a_dead_reporter() {
    let etcd = Etcd::start();
    store_with_web(&etcd);
    // One reporter per backend, each under its own lease.
    let leases = report_each(&etcd, &BACKENDS);

    let one = Gateway::start(&etcd, "gw-1");
    let two = Gateway::start(&etcd, "gw-2");
    let all_up = |g: &Gateway| {
        let picks = g.picks();
        BACKENDS.iter().all(|b| picked(&picks, b) > 0)
    };
    assert!(wait_until(WAIT, || all_up(&one) && all_up(&two)));
    let picks = one.picks();
    assert_eq!(picks, two.picks(), "the gateways disagree with all up");
    assert!(picks.iter().all(Option::is_some));

    // The reporter of the fourth backend dies: its lease is revoked.
    let dead = BACKENDS[3];
    let generations = (one.generation(), two.generation());
    let moved = picked(&picks, dead);
    assert!(moved > 0);
    let revoked = Instant::now();
    etcd.ctl(&["lease", "revoke", &leases[3]]);
    assert!(
        wait_until(Duration::from_secs(1), || {
            picked(&one.picks(), dead) == 0 && picked(&two.picks(), dead) == 0
        }),
        "a backend whose lease ended is still picked after {:?}",
        revoked.elapsed()
    );
    let after = one.picks();
    assert_eq!(after, two.picks(), "the gateways disagree with one down");
    assert_eq!(picked(&after, dead), 0);
    assert!(after.iter().all(Option::is_some));
    // Only the dead backend's flows moved (maglev over the same table).
    let kept = picks
        .iter()
        .zip(&after)
        .filter(|(before, now)| before.as_deref() != Some(dead) && before == now)
        .count();
    assert_eq!(kept, FLOWS - moved);
    // Liveness alone: no new generation on either gateway.
    assert_eq!((one.generation(), two.generation()), generations);

    // Reported again: up on both, still the same generations.
    let lease = grant(&etcd, 60);
    put_under(&etcd, &lease, &health_key(dead), "up");
    assert!(wait_until(WAIT, || {
        picked(&one.picks(), dead) > 0 && picked(&two.picks(), dead) > 0
    }));
    let back = one.picks();
    assert_eq!(back, two.picks());
    assert_eq!(back, picks, "every flow is back where it was");
    assert_eq!((one.generation(), two.generation()), generations);
}

#[test]
fn a_gateway_starting_later_reads_the_keys_as_they_are_and_a_bad_value_is_held() {
    let etcd = Etcd::start();
    store_with_web(&etcd);
    let lease = grant(&etcd, 60);
    for backend in &BACKENDS[..2] {
        put_under(&etcd, &lease, &health_key(backend), "up");
    }
    let one = Gateway::start(&etcd, "gw-1");
    // Only the two reported backends take flows; no key is down.
    assert!(wait_until(WAIT, || {
        let p = one.picks();
        picked(&p, BACKENDS[0]) + picked(&p, BACKENDS[1]) == FLOWS
    }));
    // A gateway started later reads the keys as they are, and agrees.
    let two = Gateway::start(&etcd, "gw-2");
    assert!(wait_until(WAIT, || one.picks() == two.picks()));

    // A value other than "up" is held: the backend stays as it was, and
    // the key is reported with its problem.
    etcd.ctl(&["put", &health_key(BACKENDS[0]), "down"]);
    assert!(wait_until(WAIT, || one
        ._started
        .source
        .state()
        .held
        .iter()
        .any(
            |h| h.key == health_key(BACKENDS[0]) && h.problems[0].contains("not \"down\"")
        )));
    assert!(picked(&one.picks(), BACKENDS[0]) > 0);
    assert_eq!(one.picks(), two.picks());
    // Deleting the bad key takes the backend down on both.
    etcd.ctl(&["del", &health_key(BACKENDS[0])]);
    assert!(wait_until(WAIT, || {
        picked(&one.picks(), BACKENDS[0]) == 0 && picked(&two.picks(), BACKENDS[0]) == 0
    }));
    assert!(one._started.source.state().held.is_empty());
    assert_eq!(one.picks(), two.picks());
}

#[test]
fn cut_off_a_gateway_keeps_the_last_liveness_and_a_reload_reads_the_keys_as_they_are() {
    let etcd = Etcd::start();
    let proxy = Proxy::start(etcd.address());
    let mut store = store_with_web(&etcd);
    let web = web();
    let leases = report_each(&etcd, &BACKENDS);
    let gateway = Gateway::start_at(proxy.endpoint(), "gw-1");
    let dead = BACKENDS[2];
    assert!(wait_until(WAIT, || picked(&gateway.picks(), dead) > 0));
    assert!(wait_until(WAIT, || gateway
        ._started
        .source
        .state()
        .connected));

    proxy.cut();
    assert!(wait_until(WAIT, || !gateway
        ._started
        .source
        .state()
        .connected));
    etcd.ctl(&["lease", "revoke", &leases[2]]);
    // The revision the gateway would resume from is compacted away.
    let last = store.write_unchecked(std::slice::from_ref(&web)).unwrap();
    store.compact(last).unwrap();
    // Unreachable, the gateway keeps the liveness it last knew.
    std::thread::sleep(Duration::from_millis(300));
    assert!(picked(&gateway.picks(), dead) > 0);

    proxy.mend();
    // The reload reads the keys as they are: the one that went is down.
    assert!(wait_until(WAIT, || picked(&gateway.picks(), dead) == 0));
    assert!(gateway._started.source.state().loads >= 2);
    let picks = gateway.picks();
    for backend in BACKENDS.iter().filter(|b| **b != dead) {
        assert!(picked(&picks, backend) > 0, "{backend} is down");
    }
}

#[test]
fn health_keys_written_meanwhile_do_not_make_an_operators_write_lose_its_race() {
    let etcd = Etcd::start();
    let mut store = store_with_web(&etcd);
    let web = web();
    let read = store.read().unwrap();
    // A reporter writes while the operator's change is being checked.
    let lease = grant(&etcd, 60);
    put_under(&etcd, &lease, &health_key(BACKENDS[0]), "up");
    assert!(read.entries.keys().all(|k| !layout().is_health(k)));
    let changed = WEB.replace("\"maglev_table_size\":251", "\"maglev_table_size\":509");
    let write = Write {
        key: layout().service_key("web"),
        value: Some(changed.into_bytes()),
    };
    store.commit(&read, std::slice::from_ref(&write)).unwrap();
    // A rules write meanwhile still loses it.
    let read = store.read().unwrap();
    store.write_unchecked(std::slice::from_ref(&web)).unwrap();
    assert!(store.commit(&read, &[write]).is_err());
}

#[test]
fn a_revision_of_rules_and_health_keys_runs_the_rules_as_one_generation_then_the_liveness() {
    let etcd = Etcd::start();
    let mut store = store_with_web(&etcd);
    let lease = grant(&etcd, 60);
    for backend in &BACKENDS[..3] {
        put_under(&etcd, &lease, &health_key(backend), "up");
    }
    let gateway = Gateway::start(&etcd, "gw-1");
    assert!(wait_until(WAIT, || picked(&gateway.picks(), BACKENDS[0]) > 0));
    let before = gateway.generation();
    // One transaction: web's table size changes and the fourth backend is
    // reported up.
    let changed = WEB.replace("\"maglev_table_size\":251", "\"maglev_table_size\":509");
    store
        .write_unchecked(&[
            Write {
                key: layout().service_key("web"),
                value: Some(changed.into_bytes()),
            },
            Write {
                key: health_key(BACKENDS[3]),
                value: Some(b"up".to_vec()),
            },
        ])
        .unwrap();
    assert!(wait_until(WAIT, || picked(&gateway.picks(), BACKENDS[3]) > 0));
    assert_eq!(
        gateway.generation(),
        before + 1,
        "one generation for the rules"
    );
    let picks = gateway.picks();
    assert!(BACKENDS.iter().all(|b| picked(&picks, b) > 0));
}
