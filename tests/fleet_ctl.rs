//! The operator's side of a fleet, against a real etcd (Debian's
//! etcd-server on loopback, temporary state): a gateway's held key in
//! `flowgatectl status` and its metrics, and `flowgatectl --etcd` changing
//! the fleet's rules — refused as a gateway's socket refuses, a dry run's
//! diff, a write a gateway runs, a lost race named.

mod ctl_support;
#[path = "fleet_support/mod.rs"]
mod fleet_support;
// The schema checker; this test does not list the schemas.
#[allow(dead_code)]
mod json_schema;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ctl_support::{flowgatectl, Run};
use fleet_support::{wait_until, Etcd};
use flowgate_dataplane::control::{ControlServer, ControlState, MemoryDataplane, ServerLimits};
use flowgate_dataplane::fleet::gateway::ControlSlot;
use flowgate_dataplane::fleet::layout::KeyLayout;
use flowgate_dataplane::fleet::settings::EtcdSettings;
use flowgate_dataplane::fleet::source::{EtcdSource, Started};
use flowgate_dataplane::fleet::store::{FleetStore, Write};
use flowgate_dataplane::fleet::value;
use flowgate_dataplane::metrics::{render, MetricsSample};
use flowgate_dataplane::rules::Config;
use flowgate_dataplane::table::Snapshot;

const PREFIX: &str = "/fg-ctl";
const WAIT: Duration = Duration::from_secs(10);

/// `web` at 198.18.100.1:80 with one backend.
const WEB: &str = r#"{"format":1,"protocol":"tcp","vip":"198.18.100.1","port":80,
    "maglev_table_size":251,"backends":[{"address":"198.18.1.11","port":8080}]}"#;

fn layout() -> KeyLayout {
    KeyLayout::new(PREFIX).unwrap()
}

fn put_raw(name: &str, value: &str) -> Write {
    Write {
        key: layout().service_key(name),
        value: Some(value.as_bytes().to_vec()),
    }
}

fn store(etcd: &Etcd) -> FleetStore {
    FleetStore::connect(&[etcd.endpoint()], layout()).unwrap()
}

/// A gateway in memory that takes its rules from etcd, with its control
/// socket served (as the daemon wires them: the source reports to the
/// control state).
struct Gateway {
    started: Started,
    control: ControlState,
    dataplane: Arc<MemoryDataplane>,
    socket: PathBuf,
    dir: PathBuf,
    stop: flowgate_dataplane::control::StopHandle,
}

impl Gateway {
    fn start(etcd: &Etcd, id: &str) -> Gateway {
        let slot = ControlSlot::default();
        let settings = EtcdSettings::new(vec![etcd.endpoint()], PREFIX, id);
        let started = EtcdSource::start(settings, Config::default(), slot.sink()).unwrap();
        // The gateway starts running its first rules, as the daemon does.
        let config = Config::clone(&started.rules.config);
        let dataplane = Arc::new(MemoryDataplane::with_config(&config));
        let control = ControlState::new(config, "etcd", dataplane.clone());
        control.report_etcd(started.source.reporter());
        slot.fill(control.clone());
        let dir = std::env::temp_dir().join(format!(
            "fg-fleet-ctl-{}-{}",
            std::process::id(),
            fleet_support::free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("control.sock");
        let server = ControlServer::bind_with(
            &socket,
            Arc::new(Mutex::new(control.clone())),
            ServerLimits::default(),
        )
        .unwrap();
        let stop = server.stop_handle();
        std::thread::spawn(move || server.serve());
        Gateway {
            started,
            control,
            dataplane,
            socket,
            dir,
            stop,
        }
    }

    fn ctl(&self, args: &[&str]) -> Run {
        flowgatectl(args, Some(&self.socket))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `flowgatectl --etcd ENDPOINT --etcd-prefix PREFIX ARGS`.
fn fleet_ctl(etcd: &Etcd, args: &[&str]) -> Run {
    let endpoint = etcd.endpoint();
    let mut all = vec!["--etcd", endpoint.as_str(), "--etcd-prefix", PREFIX];
    all.extend_from_slice(args);
    flowgatectl(&all, None)
}

fn schemas() -> json_schema::Schemas {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/schemas");
    json_schema::Schemas::load(&dir).unwrap()
}

#[test]
fn a_held_key_is_named_with_its_problem_and_revision_in_status_and_the_metrics() {
    let etcd = Etcd::start();
    let mut store = store(&etcd);
    store.write_unchecked(&[put_raw("web", WEB)]).unwrap();
    let gateway = Gateway::start(&etcd, "gw-1");

    let bad = WEB.replacen("\"port\":80,", "\"port\":0,", 1);
    let refused = store.write_unchecked(&[put_raw("web", &bad)]).unwrap();
    assert!(wait_until(WAIT, || gateway
        .started
        .source
        .state()
        .refused_revisions
        == 1));
    let key = layout().service_key("web");
    let problem = "port 0 of service \"web\" is out of range 1..=65535";

    let text = gateway.ctl(&["status"]).ok();
    assert!(text.contains("\netcd        holding, revision "), "{text}");
    let row = text
        .lines()
        .find(|l| l.starts_with(&key))
        .unwrap_or_else(|| panic!("no held key row: {text}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[1], refused.to_string(), "{row}");
    assert!(row.ends_with(problem), "{row}");

    let json: serde_json::Value =
        serde_json::from_str(&gateway.ctl(&["status", "-o", "json"]).ok()).unwrap();
    let etcd_status = &json["etcd"];
    assert_eq!(etcd_status["health"], "holding");
    assert_eq!(etcd_status["connected"], true);
    assert_eq!(etcd_status["seen_revision"], refused);
    assert_eq!(etcd_status["held"][0]["key"], key.as_str());
    assert_eq!(etcd_status["held"][0]["revision"], refused);
    assert_eq!(etcd_status["held"][0]["problems"][0], problem);
    assert_eq!(schemas().validate("status.json", &json), [] as [String; 0]);

    // The metrics, as the daemon's scrape takes them.
    let sample = MetricsSample {
        etcd: gateway.control.etcd_status(),
        ..MetricsSample::default()
    };
    let metrics = render(&sample, &Snapshot::empty());
    assert!(
        metrics.contains("\nflowgate_etcd_held_keys 1\n"),
        "{metrics}"
    );
    let info = format!(
        "\nflowgate_etcd_held_key_info{{key=\"{key}\",revision=\"{refused}\",\
         problem=\"port 0 of service \\\"web\\\" is out of range 1..=65535\"}} 1\n"
    );
    assert!(metrics.contains(&info), "{metrics}");

    // Fixed: nothing held, in either.
    store.write_unchecked(&[put_raw("web", WEB)]).unwrap();
    assert!(wait_until(WAIT, || gateway
        .control
        .etcd_status()
        .is_some_and(|s| s.held.is_empty())));
    let text = gateway.ctl(&["status"]).ok();
    assert!(text.contains("\netcd        ok, "), "{text}");
    let sample = MetricsSample {
        etcd: gateway.control.etcd_status(),
        ..MetricsSample::default()
    };
    assert!(render(&sample, &Snapshot::empty()).contains("\nflowgate_etcd_held_keys 0\n"));
}

#[test]
fn flowgatectl_etcd_checks_as_a_gateway_does_shows_a_dry_run_and_writes_what_gateways_run() {
    let etcd = Etcd::start();
    let mut store = store(&etcd);
    store.write_unchecked(&[put_raw("web", WEB)]).unwrap();
    let gateway = Gateway::start(&etcd, "gw-1");
    // The gateways' status keys move etcd's revision; the rules are what
    // must not change.
    let before = store.read().unwrap().entries;

    // Refused in a gateway's socket's very words; nothing written.
    let args = ["backend", "add", "web", "198.18.1.11:8080"];
    let from_etcd = fleet_ctl(&etcd, &args).failed(1);
    let from_socket = gateway.ctl(&args).failed(1);
    assert_eq!(from_etcd, from_socket);
    assert_eq!(
        from_etcd,
        "flowgatectl: rejected: service \"web\" already has backend 198.18.1.11:8080\n"
    );
    let json: serde_json::Value =
        serde_json::from_str(&fleet_ctl(&etcd, &[&args[..], &["-o", "json"]].concat()).stdout)
            .unwrap();
    assert_eq!(json["error"]["code"], "exists");
    assert_eq!(store.read().unwrap().entries, before);

    // A file: the dry run lists what would change and writes nothing.
    let file = gateway.dir.join("fleet.toml");
    std::fs::write(
        &file,
        "[gateway]\nmaglev_table_size = 251\n\n\
         [[services]]\nname = \"web\"\nprotocol = \"tcp\"\nvip = \"198.18.100.1\"\nport = 80\n\
         [[services.backends]]\naddress = \"198.18.1.11\"\nport = 8080\nweight = 3\n\n\
         [[services]]\nname = \"api\"\nprotocol = \"tcp\"\nvip = \"198.18.100.2\"\nport = 80\n\
         [[services.backends]]\naddress = \"198.18.1.21\"\nport = 8080\n",
    )
    .unwrap();
    let file_arg = file.to_str().unwrap();
    let dry = fleet_ctl(&etcd, &["apply", "-f", file_arg, "--dry-run"]).ok();
    assert!(dry.contains("api"), "{dry}");
    assert!(dry.contains("weight"), "{dry}");
    assert!(
        dry.contains("\ndry run: 4 changes would be written; nothing changed (etcd revision "),
        "{dry}"
    );
    assert_eq!(store.read().unwrap().entries, before);
    let json: serde_json::Value = serde_json::from_str(
        &fleet_ctl(&etcd, &["apply", "-f", file_arg, "--dry-run", "-o", "json"]).ok(),
    )
    .unwrap();
    assert_eq!(json["dry_run"], true);
    assert!(json["revision"].as_i64().unwrap() > 0, "{json}");
    assert_eq!(json["diff"]["services_added"][0]["name"], "api");
    assert_eq!(schemas().validate("changed.json", &json), [] as [String; 0]);

    // Written in one transaction; the gateway runs it.
    let written = fleet_ctl(&etcd, &["apply", "-f", file_arg]).ok();
    assert!(
        written.contains("written 4 changes: etcd revision "),
        "{written}"
    );
    assert!(wait_until(WAIT, || {
        let config = gateway.control.config();
        config.service("api").is_some() && config.service("web").unwrap().backends[0].weight == 3
    }));
    fleet_ctl(&etcd, &["backend", "drain", "api", "198.18.1.21:8080"]).failed(1);
    fleet_ctl(&etcd, &["backend", "add", "api", "198.18.1.22:8080"]).ok();
    assert!(wait_until(WAIT, || gateway
        .control
        .config()
        .service("api")
        .is_some_and(|s| s.backends.len() == 2)));
    // What etcd holds reads back as the gateways' own format.
    let read = store.read().unwrap();
    let api = &read.entries[layout().service_key("api").as_bytes()];
    let value: serde_json::Value = serde_json::from_slice(&api.value).unwrap();
    // In the lowest format that carries it, which every gateway reads.
    assert_eq!(value["format"], value::OLDEST_VALUE_FORMAT, "{value}");
    assert_eq!(value["backends"][1]["address"], "198.18.1.22", "{value}");

    // fleet: the gateway, from its status key.
    let fleet = fleet_ctl(&etcd, &["fleet"]).ok();
    assert!(fleet.lines().any(|l| l.starts_with("gw-1 ")), "{fleet}");
    let json: serde_json::Value =
        serde_json::from_str(&fleet_ctl(&etcd, &["fleet", "-o", "json"]).ok()).unwrap();
    assert_eq!(json["gateways"][0]["status"]["id"], "gw-1");
    assert_eq!(schemas().validate("fleet.json", &json), [] as [String; 0]);
    flowgatectl(&["fleet"], None).failed(2);
}

#[test]
fn flowgatectl_etcd_rewrites_every_key_of_a_service_and_writes_paths_as_keys_of_their_own() {
    let etcd = Etcd::start();
    let mut store = store(&etcd);
    store.write_unchecked(&[put_raw("web", WEB)]).unwrap();
    let gateway = Gateway::start(&etcd, "gw-1");

    // A service with settings only value format 2 carries (health, set
    // with etcdctl): rewritten with them, in format 2.
    let checked = WEB.replacen(
        "\"backends\"",
        "\"health\":{\"kind\":\"tcp\",\"interval\":\"1s\"},\"backends\"",
        1,
    );
    store.write_unchecked(&[put_raw("web", &checked)]).unwrap();
    assert!(wait_until(WAIT, || gateway
        .control
        .config()
        .service("web")
        .is_some_and(|s| s.health != Default::default())));
    let health = gateway
        .control
        .config()
        .service("web")
        .unwrap()
        .health
        .clone();
    fleet_ctl(&etcd, &["backend", "add", "web", "198.18.1.13:8080"]).ok();
    assert!(wait_until(WAIT, || gateway
        .control
        .config()
        .service("web")
        .is_some_and(|s| s.backends.len() == 2)));
    assert_eq!(
        gateway.control.config().service("web").unwrap().health,
        health
    );
    let read = store.read().unwrap();
    let web: serde_json::Value =
        serde_json::from_slice(&read.entries[layout().service_key("web").as_bytes()].value)
            .unwrap();
    assert_eq!(web["format"], 2, "{web}");
    assert_eq!(web["health"]["interval"], "1s", "{web}");

    // A file's paths: each a key of its own; a service deleted with them.
    let file = gateway.dir.join("paths.toml");
    std::fs::write(
        &file,
        "[[services]]\nname = \"web\"\nprotocol = \"tcp\"\nvip = \"198.18.100.1\"\n\
         port = 80\nscheduler = \"sh\"\n\
         [[services.backends]]\naddress = \"198.18.1.11\"\nport = 8080\nname = \"w1\"\n\
         [[services.paths]]\nclient = \"198.18.0.7\"\nbackends = [\"w1\"]\n\
         [[services.paths]]\nclient = \"198.18.5.0/24\"\nbackends = [\"w1\"]\n",
    )
    .unwrap();
    fleet_ctl(&etcd, &["apply", "-f", file.to_str().unwrap()]).ok();
    let read = store.read().unwrap();
    let path = &read.entries[path_key("web", "198.18.5.0/24").as_bytes()];
    assert_eq!(path.value, br#"{"backends":["w1"],"format":1}"#);
    assert!(read
        .entries
        .contains_key(path_key("web", "198.18.0.7/32").as_bytes()));
    let web: serde_json::Value =
        serde_json::from_slice(&read.entries[layout().service_key("web").as_bytes()].value)
            .unwrap();
    assert!(web.get("paths").is_none(), "{web}");
    assert!(wait_until(WAIT, || gateway
        .control
        .config()
        .service("web")
        .is_some_and(|s| s.routing.paths.len() == 2)));
    fleet_ctl(&etcd, &["service", "del", "web"]).ok();
    let left: Vec<String> = store
        .read()
        .unwrap()
        .entries
        .keys()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert!(wait_until(WAIT, || gateway
        .control
        .config()
        .services
        .is_empty()));
}

#[test]
fn flowgatectl_etcd_writers_that_race_are_told_they_lost_and_write_nothing() {
    let etcd = Etcd::start();
    let mut store = store(&etcd);
    store.write_unchecked(&[put_raw("web", WEB)]).unwrap();
    let endpoint = etcd.endpoint();
    // Writers started together read the same revision; etcd takes the
    // first transaction and refuses the others'. Rounds until one loses
    // (each round a handful of processes; bounded).
    let mut lost = None;
    let mut added = Vec::new();
    for round in 0..10u8 {
        let children: Vec<(String, std::process::Child)> = (0..6u8)
            .map(|i| {
                let backend = format!("198.18.2.{}:8080", round * 10 + i + 1);
                let child = std::process::Command::new(env!("CARGO_BIN_EXE_flowgatectl"))
                    .args(["--etcd", &endpoint, "--etcd-prefix", PREFIX])
                    .args(["backend", "add", "web", &backend])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap();
                (backend, child)
            })
            .collect();
        for (backend, child) in children {
            let out = child.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            match out.status.code() {
                Some(0) => added.push(backend),
                Some(1) if stderr.contains("another writer changed the rules") => {
                    lost = Some(stderr)
                }
                code => panic!("{code:?}: {stderr}"),
            }
        }
        if lost.is_some() {
            break;
        }
    }
    let lost = lost.expect("no writer lost a race in 10 rounds of 6");
    assert!(
        lost.starts_with("flowgatectl: another writer changed the rules after revision "),
        "{lost}"
    );
    assert!(lost.contains("nothing was written"), "{lost}");
    // Every winner's backend is there, and no loser's.
    let read = store.read().unwrap();
    let web = String::from_utf8(
        read.entries[layout().service_key("web").as_bytes()]
            .value
            .clone(),
    )
    .unwrap();
    let backends = web.matches("\"address\"").count();
    assert_eq!(backends, 1 + added.len(), "{web}");
    for backend in &added {
        let address = backend.split(':').next().unwrap();
        assert!(web.contains(&format!("\"{address}\"")), "{web}");
    }
}

/// `web` at 198.18.100.1:80 on sh, backends w1 (zone dc1) and w2 (zone
/// dc2), in value format 2 (backend names).
const NAMED_WEB: &str = r#"{"format":2,"protocol":"tcp","vip":"198.18.100.1","port":80,
    "scheduler":"sh","maglev_table_size":251,"backends":[
    {"address":"198.18.1.11","port":8080,"name":"w1","zone":"dc1"},
    {"address":"198.18.1.12","port":8080,"name":"w2","zone":"dc2"}]}"#;

fn put_key(key: String, value: &str) -> Write {
    Write {
        key,
        value: Some(value.as_bytes().to_vec()),
    }
}

fn path_key(service: &str, prefix: &str) -> String {
    layout().path_key(service, &prefix.parse().unwrap())
}

/// What the gateway's `explain` says of a new TCP flow from `client`
/// to web.
fn explain(gateway: &Gateway, client: &str) -> flowgate_api::ExplainReply {
    let query = flowgate_api::ExplainQuery {
        from: format!("{client}:40000"),
        to: "198.18.100.1:80".into(),
        protocol: None,
    };
    match gateway
        .control
        .clone()
        .handle(flowgate_api::Request::Explain(query))
        .unwrap()
    {
        flowgate_api::Reply::Explain(reply) => reply,
        other => panic!("{other:?}"),
    }
}

/// A client whose new flows to web sh sends to `backend`.
fn client_sent_to(gateway: &Gateway, backend: &str) -> String {
    (10..250)
        .map(|i| format!("198.18.0.{i}"))
        .find(|c| explain(gateway, c).backend.as_deref() == Some(backend))
        .unwrap()
}

#[test]
fn a_path_put_in_etcd_steers_new_flows_and_a_bad_one_is_held_by_its_key() {
    let etcd = Etcd::start();
    let mut store = store(&etcd);
    store.write_unchecked(&[put_raw("web", NAMED_WEB)]).unwrap();
    let gateway = Gateway::start(&etcd, "gw-1");
    let w1 = "198.18.1.11:8080";
    let w2 = "198.18.1.12:8080";

    let to_w1 = client_sent_to(&gateway, w1);
    let before = explain(&gateway, &to_w1);
    assert!(
        before.path.is_none() && before.class.is_none(),
        "{before:?}"
    );

    // A path: the client's next new flow goes where it says, through the
    // path table alone (no snapshot built).
    let applies = gateway.dataplane.applies();
    let host = format!("{to_w1}/32");
    let revision = store
        .write_unchecked(&[put_key(
            path_key("web", &host),
            r#"{"format":1,"backends":["w2"]}"#,
        )])
        .unwrap();
    assert!(wait_until(WAIT, || explain(&gateway, &to_w1)
        .path
        .is_some()));
    let steered = explain(&gateway, &to_w1);
    assert_eq!(steered.path.as_ref().unwrap().backends, ["w2"]);
    assert_eq!(steered.backend.as_deref(), Some(w2), "{steered:?}");
    assert_eq!(gateway.dataplane.applies(), applies, "a snapshot was built");
    let status = gateway.control.etcd_status().unwrap();
    assert_eq!(status.revision, revision);
    assert_eq!(
        gateway
            .control
            .config()
            .service("web")
            .unwrap()
            .routing
            .paths
            .len(),
        1
    );

    // A bad path (a backend web does not have) in the same transaction
    // as a good one: refused whole, held with its key and revision.
    let bad_key = path_key("web", "198.18.9.0/24");
    let refused = store
        .write_unchecked(&[
            put_key(bad_key.clone(), r#"{"format":1,"backends":["w9"]}"#),
            put_key(
                path_key("web", "198.18.8.0/24"),
                r#"{"format":1,"backends":["w1"]}"#,
            ),
        ])
        .unwrap();
    assert!(wait_until(WAIT, || gateway
        .control
        .etcd_status()
        .is_some_and(|s| !s.held.is_empty())));
    let held = gateway.control.etcd_status().unwrap().held;
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0].key, bad_key);
    assert_eq!(held[0].revision, refused);
    assert_eq!(
        held[0].problems,
        [
            "path of client 198.18.9.0/24 names unknown backend \"w9\" of service \"web\" \
          (a backend's name, or ADDR:PORT for one without)"
        ]
    );
    assert!(explain(&gateway, "198.18.8.1").path.is_none());
    // The rest applies with the next revision; the bad key stays held.
    store
        .write_unchecked(&[put_key(
            path_key("web", "198.18.7.0/24"),
            r#"{"format":1,"backends":["w1"]}"#,
        )])
        .unwrap();
    assert!(wait_until(WAIT, || explain(&gateway, "198.18.7.1")
        .path
        .is_some()));
    assert!(explain(&gateway, "198.18.8.1").path.is_some());
    assert!(explain(&gateway, "198.18.9.1").path.is_none());
    assert_eq!(gateway.control.etcd_status().unwrap().held.len(), 1);

    // Deleted: the path is gone, and so is its effect.
    store
        .write_unchecked(&[
            Write {
                key: path_key("web", &host),
                value: None,
            },
            Write {
                key: bad_key,
                value: None,
            },
        ])
        .unwrap();
    assert!(wait_until(WAIT, || explain(&gateway, &to_w1)
        .path
        .is_none()));
    assert_eq!(explain(&gateway, &to_w1).backend.as_deref(), Some(w1));
    assert!(gateway.control.etcd_status().unwrap().held.is_empty());
}

#[test]
fn a_client_class_put_in_etcd_changes_the_zone_decision_until_deleted() {
    let etcd = Etcd::start();
    let mut store = store(&etcd);
    store.write_unchecked(&[put_raw("web", NAMED_WEB)]).unwrap();
    let gateway = Gateway::start(&etcd, "gw-1");
    let (w1, w2) = ("198.18.1.11:8080", "198.18.1.12:8080");
    let to_w2 = client_sent_to(&gateway, w2);
    let other = explain(&gateway, &to_w2);
    assert!(other.class.is_none());
    let class_key = layout().class_key(&format!("{to_w2}/32").parse().unwrap());
    store
        .write_unchecked(&[put_key(class_key.clone(), r#"{"format":1,"zone":"dc1"}"#)])
        .unwrap();
    assert!(wait_until(WAIT, || explain(&gateway, &to_w2)
        .class
        .is_some()));
    let classed = explain(&gateway, &to_w2);
    assert_eq!(classed.class.as_ref().unwrap().zone.as_deref(), Some("dc1"));
    assert_eq!(classed.backend.as_deref(), Some(w1), "{classed:?}");
    // The running config follows explain's view a moment later.
    assert!(wait_until(WAIT, || gateway
        .control
        .config()
        .routing
        .classes
        .len()
        == 1));

    // A bad class: held by its key, in the validator's words.
    let bad_key = layout().class_key(&"198.18.0.0/16".parse().unwrap());
    let refused = store
        .write_unchecked(&[put_key(bad_key.clone(), r#"{"format":1,"set":"orders"}"#)])
        .unwrap();
    assert!(wait_until(WAIT, || gateway
        .control
        .etcd_status()
        .is_some_and(|s| !s.held.is_empty())));
    let held = gateway.control.etcd_status().unwrap().held;
    assert_eq!(
        (held[0].key.as_str(), held[0].revision),
        (bad_key.as_str(), refused)
    );
    assert!(
        held[0].problems[0].starts_with("set \"orders\" of client class 198.18.0.0/16"),
        "{held:?}"
    );

    // Deleted: the class is gone, and so is its effect.
    store
        .write_unchecked(&[
            Write {
                key: class_key,
                value: None,
            },
            Write {
                key: bad_key,
                value: None,
            },
        ])
        .unwrap();
    assert!(wait_until(WAIT, || explain(&gateway, &to_w2)
        .class
        .is_none()));
    assert_eq!(explain(&gateway, &to_w2).backend.as_deref(), Some(w2));
    // The rules are installed just after the snapshot is published.
    assert!(wait_until(WAIT, || gateway
        .control
        .config()
        .routing
        .classes
        .is_empty()));
    assert!(wait_until(WAIT, || gateway
        .control
        .etcd_status()
        .unwrap()
        .held
        .is_empty()));
}

#[test]
fn a_service_with_health_limits_and_announce_from_etcd_runs_them() {
    let etcd = Etcd::start();
    let mut store = store(&etcd);
    let value = r#"{"format":2,"protocol":"tcp","vip":"198.18.100.1","port":80,
        "maglev_table_size":251,"announce":"arp","syn_proxy":"on",
        "health":{"kind":"tcp","interval":"1s","rise":2,"fall":3},
        "limits":{"max_new_flows_per_s":1000,"new_flows_burst":100,"over_limit":"reset"},
        "backends":[{"address":"198.18.1.11","port":8080},
                    {"address":"198.18.1.12","port":8080,"health":{"kind":"none"}}]}"#;
    store.write_unchecked(&[put_raw("web", value)]).unwrap();
    let gateway = Gateway::start(&etcd, "gw-1");
    let snapshot = gateway.dataplane.current();
    let (_, web) = snapshot
        .services()
        .find(|(_, s)| s.name() == "web")
        .expect("web compiled");
    assert_eq!(web.announce(), flowgate_dataplane::rules::Announce::Arp);
    assert_eq!(web.syn_proxy(), flowgate_dataplane::synproxy::SynProxy::On);
    assert!(web.limits().is_some(), "no compiled limits");
    let config = gateway.control.config();
    let limits = config.service("web").unwrap().limits;
    assert_eq!(limits.new_flows.unwrap().rate().per_s(), 1000);
    // The health plan: one backend checked, one not probed.
    let json: serde_json::Value =
        serde_json::from_str(&gateway.ctl(&["status", "-o", "json"]).ok()).unwrap();
    assert_eq!(json["health"]["checked"], 1, "{json}");

    // A bad value: refused with its key named, the running service kept.
    let bad = value.replacen("\"interval\":\"1s\"", "\"interval\":\"soon\"", 1);
    let refused = store.write_unchecked(&[put_raw("web", &bad)]).unwrap();
    assert!(wait_until(WAIT, || gateway
        .control
        .etcd_status()
        .is_some_and(|s| !s.held.is_empty())));
    let held = gateway.control.etcd_status().unwrap().held;
    assert_eq!(held[0].key, layout().service_key("web"));
    assert_eq!(held[0].revision, refused);
    assert_eq!(
        held[0].problems,
        [
            "health of service \"web\": interval \"soon\" is not a duration: write a number \
          and a unit, such as \"500ms\", \"2s\" or \"1m\""
        ]
    );
    assert_eq!(
        gateway.control.config().service("web").unwrap().limits,
        limits
    );
    // A newer format than the gateways read: refused the same way.
    let newer = value.replacen("\"format\":2", "\"format\":3", 1);
    store.write_unchecked(&[put_raw("web", &newer)]).unwrap();
    assert!(wait_until(WAIT, || gateway
        .control
        .etcd_status()
        .is_some_and(
            |s| s.held[0].problems[0].starts_with("format 3 is newer")
        )));
}

/// The keys under `classes/` and their values, as text.
fn class_keys(store: &mut FleetStore) -> Vec<(String, String, i64)> {
    let classes = layout().classes();
    store
        .read()
        .unwrap()
        .entries
        .iter()
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(k).into_owned(),
                String::from_utf8_lossy(&v.value).into_owned(),
                v.mod_revision,
            )
        })
        .filter(|(k, _, _)| k.starts_with(&classes))
        .map(|(k, v, r)| (k[classes.len()..].to_owned(), v, r))
        .collect()
}

/// `web` as a file's table (NAMED_WEB), with `classes` after it.
fn file_with_classes(classes: &str) -> String {
    format!(
        "[[services]]\nname = \"web\"\nprotocol = \"tcp\"\nvip = \"198.18.100.1\"\nport = 80\n\
         scheduler = \"sh\"\nmaglev_table_size = 251\n\
         [[services.backends]]\naddress = \"198.18.1.11\"\nport = 8080\nname = \"w1\"\nzone = \"dc1\"\n\
         [[services.backends]]\naddress = \"198.18.1.12\"\nport = 8080\nname = \"w2\"\nzone = \"dc2\"\n\
         {classes}"
    )
}

#[test]
// One scenario, read top to bottom: each apply starts from what the one
// before wrote.
#[allow(clippy::too_many_lines)]
fn flowgatectl_etcd_apply_writes_the_files_client_classes_as_class_keys() {
    let etcd = Etcd::start();
    let mut store = store(&etcd);
    store.write_unchecked(&[put_raw("web", NAMED_WEB)]).unwrap();
    let gateway = Gateway::start(&etcd, "gw-1");
    let file = gateway.dir.join("classes.toml");
    let file_arg = file.to_str().unwrap();
    let apply = |classes: &str, extra: &[&str]| {
        std::fs::write(&file, file_with_classes(classes)).unwrap();
        fleet_ctl(&etcd, &[&["apply", "-f", file_arg], extra].concat())
    };
    let (w1, w2) = ("198.18.1.11:8080", "198.18.1.12:8080");
    let to_w2 = client_sent_to(&gateway, w2);

    // Two classes added: the dry run lists them and writes nothing.
    let two = format!(
        "[[routing.classes]]\nprefix = \"{to_w2}/32\"\nzone = \"dc1\"\n\
         [[routing.classes]]\nprefix = \"198.19.0.0/16\"\nset = \"shop.sh.a\"\n"
    );
    let dry = apply(&two, &["--dry-run"]).ok();
    // (The gateway's status key moves etcd's revision: not asserted.)
    assert!(
        dry.starts_with(&format!(
            "+ class {to_w2}/32 set - zone dc1\n+ class 198.19.0.0/16 set shop.sh.a zone -\n\
             dry run: 2 changes would be written; nothing changed (etcd revision "
        )),
        "{dry}"
    );
    assert!(class_keys(&mut store).is_empty());

    // Written in one transaction, in the class format; the gateway runs
    // them: the client now gets its class's zone's backend.
    let written = apply(&two, &[]).ok();
    let keys = class_keys(&mut store);
    let host = format!("{to_w2}/32");
    let got: Vec<(&str, &str)> = keys
        .iter()
        .map(|(k, v, _)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (host.as_str(), r#"{"format":1,"zone":"dc1"}"#),
            ("198.19.0.0/16", r#"{"format":1,"set":"shop.sh.a"}"#),
        ]
    );
    assert_eq!(
        written,
        format!(
            "+ class {host} set - zone dc1\n+ class 198.19.0.0/16 set shop.sh.a zone -\n\
             written 2 changes: etcd revision {}\n",
            keys[0].2
        )
    );
    assert_eq!(keys[0].2, keys[1].2, "one transaction: {keys:?}");
    // (The running config and explain's view are waited for together:
    // the control state takes one a moment after the other.)
    let classes = || -> Vec<String> {
        let config = gateway.control.config();
        config
            .routing
            .classes
            .iter()
            .map(|c| c.prefix.to_string())
            .collect()
    };
    assert!(wait_until(WAIT, || classes()
        == [host.as_str(), "198.19.0.0/16"]
        && explain(&gateway, &to_w2).class.is_some()));
    assert_eq!(explain(&gateway, &to_w2).backend.as_deref(), Some(w1));

    // The same file again: nothing to write.
    let again = apply(&two, &[]).ok();
    assert!(again.starts_with("no change (etcd revision "), "{again}");

    // One changed, one removed, one added: three keys in one transaction.
    let next = format!(
        "[[routing.classes]]\nprefix = \"{to_w2}/32\"\nzone = \"dc2\"\n\
         [[routing.classes]]\nprefix = \"198.18.0.0/15\"\nzone = \"dc1\"\n"
    );
    let dry = apply(&next, &["--dry-run", "-o", "json"]).ok();
    let json: serde_json::Value = serde_json::from_str(&dry).unwrap();
    assert_eq!(
        json["diff"]["classes_added"].as_array().unwrap().len(),
        2,
        "{json}"
    );
    assert_eq!(
        json["diff"]["classes_removed"].as_array().unwrap().len(),
        2,
        "{json}"
    );
    assert_eq!(schemas().validate("changed.json", &json), [] as [String; 0]);
    let before = store.read().unwrap().revision;
    apply(&next, &[]).ok();
    let keys = class_keys(&mut store);
    let got: Vec<(&str, &str)> = keys
        .iter()
        .map(|(k, v, _)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("198.18.0.0/15", r#"{"format":1,"zone":"dc1"}"#),
            (host.as_str(), r#"{"format":1,"zone":"dc2"}"#),
        ]
    );
    assert!(
        keys.iter().all(|(_, _, r)| *r == keys[0].2 && *r > before),
        "{keys:?}"
    );
    assert!(wait_until(WAIT, || classes()
        == ["198.18.0.0/15", host.as_str()]
        && explain(&gateway, &to_w2).backend.as_deref() == Some(w2)));

    // A bad class is refused in the validator's words, nothing written.
    let refused = apply(
        "[[routing.classes]]\nprefix = \"198.18.0.0/15\"\nset = \"orders\"\n",
        &[],
    )
    .failed(1);
    assert!(refused.contains("set \"orders\""), "{refused}");
    assert_eq!(class_keys(&mut store), keys);

    // No classes in the file: every class key deleted.
    apply("", &[]).ok();
    assert!(class_keys(&mut store).is_empty());
    assert!(wait_until(WAIT, || classes().is_empty()
        && explain(&gateway, &to_w2).class.is_none()));
}
