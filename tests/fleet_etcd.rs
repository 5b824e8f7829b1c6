//! Rules from a real etcd (issue 15): the load and the watch, one
//! generation per revision, bad keys held, etcd stopped, partitioned,
//! restarted and compacted, the saved state, the status lease, and the
//! operator's checked, compare-and-swap writes.
//!
//! Each test starts its own etcd (the distribution's, on loopback, with a
//! temporary data dir and free ports), and stops and removes it when the
//! test ends, however it ends. Every wait is bounded.

mod fleet_support;

use std::sync::mpsc;
use std::time::Duration;

use fleet_support::{wait_until, Etcd, Proxy};
use flowgate_dataplane::fleet::layout::KeyLayout;
use flowgate_dataplane::fleet::mirror::Rules;
use flowgate_dataplane::fleet::settings::EtcdSettings;
use flowgate_dataplane::fleet::source::{EtcdSource, RulesSink, SourceError, StartedFrom};
use flowgate_dataplane::fleet::status::Health;
use flowgate_dataplane::fleet::store::{FleetStore, StoreError, Write};
use flowgate_dataplane::fleet::value;
use flowgate_dataplane::rules::{Backend, Config, Failover, Protocol, Scheduler, Service};

const PREFIX: &str = "/flowgate-test";
const WAIT: Duration = Duration::from_secs(10);

/// What the gateway was given: one entry per generation.
#[derive(Clone, Debug, PartialEq)]
struct Given {
    revision: i64,
    services: Vec<String>,
    applied_keys: usize,
    held: usize,
}

/// A gateway that records what it is given.
struct Recorder {
    tx: mpsc::Sender<(Given, Config)>,
    generation: u64,
}

impl RulesSink for Recorder {
    fn apply(&mut self, rules: &Rules) -> Result<u64, String> {
        self.generation += 1;
        let given = Given {
            revision: rules.revision,
            services: rules
                .config
                .services
                .iter()
                .map(|s| s.name.clone())
                .collect(),
            applied_keys: rules.applied_keys,
            held: rules.held.len(),
        };
        let _ = self.tx.send((given, Config::clone(&rules.config)));
        Ok(self.generation)
    }

    fn generation(&self) -> Option<u64> {
        Some(self.generation)
    }
}

fn recorder() -> (Box<Recorder>, mpsc::Receiver<(Given, Config)>) {
    let (tx, rx) = mpsc::channel();
    (Box::new(Recorder { tx, generation: 1 }), rx)
}

fn next(rx: &mpsc::Receiver<(Given, Config)>) -> Given {
    rx.recv_timeout(WAIT).expect("no generation within 10 s").0
}

fn nothing_more(rx: &mpsc::Receiver<(Given, Config)>) {
    if let Ok((given, _)) = rx.recv_timeout(Duration::from_millis(400)) {
        panic!("an extra generation: {given:?}");
    }
}

fn layout() -> KeyLayout {
    KeyLayout::new(PREFIX).unwrap()
}

fn service(name: &str, octet: u8, port: u16) -> Service {
    Service {
        limits: Default::default(),

        announce: Default::default(),
        routing: Default::default(),
        health: Default::default(),
        name: name.into(),
        protocol: Protocol::Tcp,
        vip: format!("198.18.100.{octet}").parse().unwrap(),
        port,
        scheduler: Scheduler::Maglev,
        maglev_table_size: 251,
        failover: Failover::default(),
        backends: vec![Backend::new("198.18.1.11".parse().unwrap(), 8080)],
    }
}

fn put(s: &Service) -> Write {
    Write {
        key: layout().service_key(&s.name),
        value: Some(value::service_value(s, true).into_bytes()),
    }
}

fn put_raw(name: &str, value: &str) -> Write {
    Write {
        key: layout().service_key(name),
        value: Some(value.as_bytes().to_vec()),
    }
}

fn delete(name: &str) -> Write {
    Write {
        key: layout().service_key(name),
        value: None,
    }
}

fn settings(endpoint: String, id: &str) -> EtcdSettings {
    let mut s = EtcdSettings::new(vec![endpoint], PREFIX, id);
    s.start_timeout = Duration::from_secs(3);
    s.backoff_min = Duration::from_millis(50);
    s.backoff_max = Duration::from_millis(400);
    s.status_interval = Duration::from_millis(300);
    s.request_timeout = Duration::from_secs(2);
    s
}

fn store(etcd: &Etcd) -> FleetStore {
    FleetStore::connect(&[etcd.endpoint()], layout()).unwrap()
}

#[test]
fn the_gateway_loads_the_prefix_then_runs_each_revision_as_one_generation() {
    let etcd = Etcd::start();
    let mut store = store(&etcd);
    let loaded = store
        .write_unchecked(&[put(&service("a", 1, 80)), put(&service("b", 2, 80))])
        .unwrap();
    let (sink, rx) = recorder();
    let started =
        EtcdSource::start(settings(etcd.endpoint(), "gw-1"), Config::default(), sink).unwrap();
    assert_eq!(started.from, StartedFrom::Etcd { revision: loaded });
    assert_eq!(started.rules.revision, loaded);
    assert_eq!(started.rules.config.services.len(), 2);

    // Ten services in one transaction: one generation, at its revision.
    let ten: Vec<Write> = (0..10)
        .map(|i| put(&service(&format!("s{i}"), 10 + i, 80)))
        .collect();
    let r2 = store.write_unchecked(&ten).unwrap();
    let given = next(&rx);
    assert_eq!(
        (given.revision, given.applied_keys, given.services.len()),
        (r2, 10, 12)
    );
    nothing_more(&rx);

    // A deletion and a put in one transaction.
    let r3 = store
        .write_unchecked(&[delete("a"), put(&service("c", 3, 80))])
        .unwrap();
    let given = next(&rx);
    assert_eq!(given.revision, r3);
    assert!(given.services.contains(&"c".to_owned()));
    assert!(!given.services.contains(&"a".to_owned()));
    nothing_more(&rx);
    let state = started.source.state();
    assert_eq!(
        (state.revision, state.seen_revision, state.generation),
        (r3, r3, 3)
    );
    assert_eq!(state.health(), Health::Ok);
}

#[test]
fn a_bad_key_is_refused_with_its_revision_held_at_its_last_good_value_and_reported_in_etcd() {
    let etcd = Etcd::start();
    let mut store = store(&etcd);
    store
        .write_unchecked(&[put(&service("web", 1, 80))])
        .unwrap();
    let (sink, rx) = recorder();
    let started =
        EtcdSource::start(settings(etcd.endpoint(), "gw-1"), Config::default(), sink).unwrap();

    let bad = r#"{"format":1,"protocol":"tcp","vip":"198.18.100.1","port":0,
        "backends":[{"address":"198.18.1.11","port":80}]}"#;
    let refused = store
        .write_unchecked(&[put(&service("api", 2, 80)), put_raw("web", bad)])
        .unwrap();
    assert!(wait_until(WAIT, || started
        .source
        .state()
        .refused_revisions
        == 1));
    nothing_more(&rx);
    let state = started.source.state();
    let refusal = state.last_refusal.clone().unwrap();
    assert_eq!(refusal.revision, refused);
    assert_eq!(refusal.problems.len(), 1);
    let held = &refusal.problems[0];
    assert_eq!(held.key, layout().service_key("web"));
    assert_eq!(held.revision, refused);
    assert_eq!(
        held.problems,
        ["port 0 of service \"web\" is out of range 1..=65535"]
    );
    assert_eq!(state.health(), Health::Holding);

    // The status key says which key, what and which revision.
    assert!(wait_until(WAIT, || {
        store.statuses().unwrap().iter().any(|s| {
            s.health == Health::Holding
                && s.held.len() == 1
                && s.held[0].key == layout().service_key("web")
                && s.held[0].revision == refused
                && s.held[0].problems[0].contains("port 0")
        })
    }));

    // A later revision runs, with the refused one's good change and web
    // at its last good value.
    let later = store
        .write_unchecked(&[put(&service("db", 3, 80))])
        .unwrap();
    let (given, config) = rx.recv_timeout(WAIT).unwrap();
    assert_eq!(given.revision, later);
    assert_eq!(given.services, ["api", "db", "web"]);
    assert_eq!(given.held, 1);
    assert_eq!(config.service("web").unwrap().port, 80);

    // Fixed: nothing held.
    let fixed = store
        .write_unchecked(&[put(&service("web", 1, 8080))])
        .unwrap();
    let (given, config) = rx.recv_timeout(WAIT).unwrap();
    assert_eq!((given.revision, given.held), (fixed, 0));
    assert_eq!(config.service("web").unwrap().port, 8080);
    assert!(wait_until(WAIT, || started.source.state().health() == Health::Ok));
}

#[test]
fn a_partition_and_a_restart_of_etcd_keep_the_rules_and_miss_no_revision() {
    let mut etcd = Etcd::start();
    let proxy = Proxy::start(etcd.address());
    let mut store = store(&etcd);
    store.write_unchecked(&[put(&service("a", 1, 80))]).unwrap();
    let (sink, rx) = recorder();
    let started =
        EtcdSource::start(settings(proxy.endpoint(), "gw-1"), Config::default(), sink).unwrap();
    assert!(wait_until(WAIT, || started.source.state().connected));

    // Partitioned: three revisions happen that the gateway cannot see.
    let before = started.source.state().revision;
    proxy.cut();
    assert!(wait_until(WAIT, || !started.source.state().connected));
    let mut revisions = Vec::new();
    for (i, name) in ["b", "c", "d"].iter().enumerate() {
        revisions.push(
            store
                .write_unchecked(&[put(&service(name, 2 + i as u8, 80))])
                .unwrap(),
        );
    }
    assert_eq!(started.source.state().revision, before);
    nothing_more(&rx);

    // Mended: each revision once, in order.
    proxy.mend();
    for &revision in &revisions {
        assert_eq!(next(&rx).revision, revision);
    }
    nothing_more(&rx);
    assert!(started.source.state().disconnects >= 1);

    // etcd killed and started again on its data: the watch resumes.
    etcd.restart();
    let after = store_after_restart(&etcd)
        .write_unchecked(&[delete("b")])
        .unwrap();
    let given = next(&rx);
    assert_eq!(given.revision, after);
    assert_eq!(given.services, ["a", "c", "d"]);
    nothing_more(&rx);
    drop(store);
}

/// A store connection made after etcd restarted.
fn store_after_restart(etcd: &Etcd) -> FleetStore {
    store(etcd)
}

#[test]
fn a_compacted_revision_reloads_the_prefix_and_applies_the_difference_once() {
    let etcd = Etcd::start();
    let proxy = Proxy::start(etcd.address());
    let mut store = store(&etcd);
    store
        .write_unchecked(&[put(&service("a", 1, 80)), put(&service("b", 2, 80))])
        .unwrap();
    let (sink, rx) = recorder();
    let started =
        EtcdSource::start(settings(proxy.endpoint(), "gw-1"), Config::default(), sink).unwrap();
    assert!(wait_until(WAIT, || started.source.state().connected));
    proxy.cut();
    assert!(wait_until(WAIT, || !started.source.state().connected));
    store.write_unchecked(&[delete("b")]).unwrap();
    store.write_unchecked(&[put(&service("c", 3, 80))]).unwrap();
    let last = store.write_unchecked(&[put(&service("d", 4, 80))]).unwrap();
    store.compact(last).unwrap();
    proxy.mend();

    // The load reads at etcd's revision then, which the gateway's own
    // status write may have moved past the last rules change.
    let given = next(&rx);
    assert!(given.revision >= last, "{given:?} before {last}");
    assert_eq!(given.services, ["a", "c", "d"]);
    assert_eq!(given.applied_keys, 3, "b deleted, c and d added");
    nothing_more(&rx);
    assert_eq!(started.source.state().loads, 2);
}

#[test]
fn status_keys_list_the_fleet_flag_a_lagging_gateway_and_vanish_with_their_lease() {
    let etcd = Etcd::start();
    let proxy = Proxy::start(etcd.address());
    let mut store = store(&etcd);
    store.write_unchecked(&[put(&service("a", 1, 80))]).unwrap();
    let (sink1, rx1) = recorder();
    let (sink2, _rx2) = recorder();
    let mut s1 = settings(etcd.endpoint(), "gw-1");
    s1.status_ttl_s = 3;
    let mut s2 = settings(proxy.endpoint(), "gw-2");
    s2.status_ttl_s = 3;
    let gw1 = EtcdSource::start(s1, Config::default(), sink1).unwrap();
    let gw2 = EtcdSource::start(s2, Config::default(), sink2).unwrap();
    assert!(wait_until(WAIT, || store.statuses().unwrap().len() == 2));

    // gw-2 is cut off; its key lives on until its lease runs out, and
    // meanwhile it lags behind the new revision.
    proxy.cut();
    let change = store.write_unchecked(&[put(&service("b", 2, 80))]).unwrap();
    assert_eq!(next(&rx1).revision, change);
    assert!(wait_until(WAIT, || {
        let rows = store.fleet().unwrap();
        rows.len() == 2
            && rows[0].status.id == "gw-1"
            && rows[0].status.seen_revision == change
            && !rows[0].lags()
            && rows[1].status.id == "gw-2"
            && rows[1].lags()
    }));
    let rows = store.fleet().unwrap();
    assert!(rows[1].lag >= 1);
    assert_eq!(rows[0].status.services, 2);

    // Its lease runs out (3 s): its key goes.
    assert!(wait_until(Duration::from_secs(8), || {
        let statuses = store.statuses().unwrap();
        statuses.len() == 1 && statuses[0].id == "gw-1"
    }));
    // A gateway that stops revokes its lease: its key goes at once.
    drop(gw1);
    assert!(wait_until(Duration::from_secs(2), || store
        .statuses()
        .unwrap()
        .is_empty()));
    drop(gw2);
}

#[test]
fn gateways_running_the_same_rules_show_the_same_revision_and_their_generation() {
    let etcd = Etcd::start();
    let mut store = store(&etcd);
    let written = store.write_unchecked(&[put(&service("a", 1, 80))]).unwrap();
    let (sink1, _rx1) = recorder();
    let gw1 =
        EtcdSource::start(settings(etcd.endpoint(), "gw-1"), Config::default(), sink1).unwrap();
    // gw-1's status writes move the store's revision past the rules' before
    // gw-2 loads them.
    assert!(wait_until(WAIT, || store.statuses().unwrap().len() == 1));
    std::thread::sleep(Duration::from_millis(700));
    let (sink2, _rx2) = recorder();
    let gw2 =
        EtcdSource::start(settings(etcd.endpoint(), "gw-2"), Config::default(), sink2).unwrap();
    assert!(
        gw2.rules.revision > written,
        "the load's revision is the store's"
    );
    assert!(wait_until(WAIT, || {
        let rows = store.fleet().unwrap();
        rows.len() == 2
            && rows
                .iter()
                .all(|r| r.status.revision == written && r.status.generation == 1 && !r.lags())
    }));

    // A change watched by both: both show its revision and the next
    // generation.
    let change = store.write_unchecked(&[put(&service("b", 2, 80))]).unwrap();
    assert!(wait_until(WAIT, || {
        let rows = store.fleet().unwrap();
        rows.len() == 2
            && rows
                .iter()
                .all(|r| r.status.revision == change && r.status.generation == 2)
    }));
    drop((gw1, gw2));
}

#[test]
fn a_gateway_restarts_from_its_saved_state_while_etcd_is_down_or_refuses_to_by_configuration() {
    let mut etcd = Etcd::start();
    let state_file = std::env::temp_dir().join(format!(
        "flowgate-etcd-state-{}-{}.json",
        std::process::id(),
        fleet_support::free_port()
    ));
    let mut store = store(&etcd);
    let revision = store
        .write_unchecked(&[put(&service("a", 1, 80)), put(&service("b", 2, 80))])
        .unwrap();
    let mut s = settings(etcd.endpoint(), "gw-1");
    s.state_file = Some(state_file.clone());
    let (sink, _rx) = recorder();
    drop(EtcdSource::start(s.clone(), Config::default(), sink).unwrap());
    assert!(state_file.exists());

    etcd.stop();
    s.start_timeout = Duration::from_secs(1);
    let (sink, rx) = recorder();
    let started = EtcdSource::start(s.clone(), Config::default(), sink).unwrap();
    let StartedFrom::Saved {
        revision: saved,
        why,
    } = &started.from
    else {
        panic!("started from {:?}", started.from);
    };
    assert_eq!(*saved, revision);
    assert!(why.contains("cannot be reached"), "{why}");
    assert_eq!(started.rules.config.services.len(), 2);
    assert_eq!(started.source.state().health(), Health::Disconnected);

    let mut strict = s.clone();
    strict.start_without_etcd = false;
    let (sink, _) = recorder();
    let refused = EtcdSource::start(strict, Config::default(), sink).unwrap_err();
    assert!(matches!(refused, SourceError::Unreachable(_)));
    assert!(
        refused
            .to_string()
            .ends_with("not starting without it (start_without_etcd = false)"),
        "{refused}"
    );

    // etcd back: the gateway that started from disk loads and catches up.
    etcd.restart();
    let later = store_after_restart(&etcd)
        .write_unchecked(&[delete("a")])
        .unwrap();
    assert!(wait_until(WAIT, || started.source.state().revision == later));
    let mut seen = Vec::new();
    while let Ok((given, _)) = rx.recv_timeout(Duration::from_millis(300)) {
        seen.push(given);
    }
    assert_eq!(seen.last().unwrap().services, ["b"]);
    drop(started);
    drop(store);
    let _ = std::fs::remove_file(&state_file);
}

#[test]
fn a_service_both_in_the_file_and_in_etcd_stops_the_start_by_name() {
    let etcd = Etcd::start();
    store(&etcd)
        .write_unchecked(&[put(&service("web", 1, 80))])
        .unwrap();
    let mut base = Config::default();
    base.services.push(service("web", 9, 80));
    let (sink, _) = recorder();
    let error = EtcdSource::start(settings(etcd.endpoint(), "gw-1"), base, sink).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "service \"web\" is defined both in the config file and in etcd (key {}): \
             define each service in one place",
            layout().service_key("web")
        )
    );
}

#[test]
fn writes_are_checked_as_a_gateway_checks_them_and_a_lost_race_is_named() {
    let etcd = Etcd::start();
    let mut store = store(&etcd);
    let first = store.change(&[put(&service("web", 1, 80))], false).unwrap();

    // Invalid: nothing written, in the gateways' words.
    let clash = store
        .change(&[put(&service("api", 1, 80))], false)
        .unwrap_err();
    let StoreError::Invalid(problems) = &clash else {
        panic!("{clash}");
    };
    assert_eq!(problems.len(), 1);
    assert!(
        problems[0].starts_with(&format!("etcd key {}: ", layout().service_key("api"))),
        "{clash}"
    );
    assert!(problems[0].contains("198.18.100.1"), "{clash}");

    // A dry run writes nothing.
    let dry = store.change(&[put(&service("api", 2, 80))], true).unwrap();
    assert_eq!(dry, first);
    assert_eq!(store.read().unwrap().entries.len(), 1);

    // Another writer gets in between the read and the write.
    let read = store.read().unwrap();
    let mut other = FleetStore::connect(&[etcd.endpoint()], layout()).unwrap();
    let theirs = other.change(&[put(&service("db", 3, 80))], false).unwrap();
    let lost = store
        .commit(&read, &[put(&service("api", 2, 80))])
        .unwrap_err();
    let StoreError::Lost { read: at, now } = lost else {
        panic!("{lost}");
    };
    assert_eq!((at, now), (first, theirs));
    assert_eq!(
        lost.to_string(),
        format!(
            "another writer changed the rules after revision {first} (now at {theirs}): \
             nothing was written; read them again and retry"
        )
    );
    assert!(store.read().unwrap().entries.len() == 2);
}

#[test]
fn flowgate_fleet_lists_the_gateways_from_etcd_with_held_keys_and_lag() {
    let etcd = Etcd::start();
    let mut store = store(&etcd);
    store
        .write_unchecked(&[put(&service("web", 1, 80))])
        .unwrap();
    let (sink, _rx) = recorder();
    let started =
        EtcdSource::start(settings(etcd.endpoint(), "gw-1"), Config::default(), sink).unwrap();
    let refused = store.write_unchecked(&[put_raw("api", "{}")]).unwrap();
    assert!(wait_until(WAIT, || store
        .statuses()
        .unwrap()
        .iter()
        .any(|s| s.seen_revision == refused)));

    let config = std::env::temp_dir().join(format!(
        "flowgate-fleet-{}-{}.toml",
        std::process::id(),
        fleet_support::free_port()
    ));
    std::fs::write(
        &config,
        format!(
            "[etcd]\nendpoints = [\"{}\"]\nprefix = \"{PREFIX}\"\ngateway_id = \"ops\"\n",
            etcd.endpoint()
        ),
    )
    .unwrap();
    let bin = flowgate_dataplane::testnet::workspace_binary("flowgate").unwrap();
    let out = std::process::Command::new(&bin)
        .args(["fleet", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text
        .lines()
        .find(|l| l.starts_with("gw-1"))
        .expect("no gw-1 line");
    assert!(line.contains("holding") && line.ends_with(" -"), "{text}");
    assert!(
        text.contains(&format!(
            "held {} (revision {refused}): the value has no \"format\"",
            layout().service_key("api")
        )),
        "{text}"
    );

    let json = std::process::Command::new(&bin)
        .args(["fleet", "--config", config.to_str().unwrap(), "-o", "json"])
        .output()
        .unwrap();
    let rows: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(rows[0]["status"]["id"], "gw-1");
    assert_eq!(rows[0]["lags"], false);

    drop(started);
    let _ = std::fs::remove_file(&config);
}

#[test]
fn flowgate_check_refuses_a_bad_etcd_section_line_by_line() {
    let config = std::env::temp_dir().join(format!(
        "flowgate-fleet-check-{}-{}.toml",
        std::process::id(),
        fleet_support::free_port()
    ));
    std::fs::write(
        &config,
        "[[interfaces]]\nname = \"eth0\"\nmac = \"02:00:00:00:00:01\"\n\n\
         [etcd]\nendpoints = [\"127.0.0.1:2379\"]\nprefix = \"/fg\"\ngateway_id = \"gw 1\"\n",
    )
    .unwrap();
    let bin = flowgate_dataplane::testnet::workspace_binary("flowgate").unwrap();
    let out = std::process::Command::new(&bin)
        .args(["check", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&config);
    assert_eq!(out.status.code(), Some(2));
    let path = config.display();
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "flowgate: {path}: etcd: endpoint \"127.0.0.1:2379\" is not an http:// or https:// URL\n\
             {path}: etcd: gateway id \"gw 1\" is not valid: use 1 to 64 of A-Z a-z 0-9 _ . -\n"
        )
    );
}
