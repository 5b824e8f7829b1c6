//! `flowgatectl -o json` is complete and consistent: every command — each
//! subcommand of the command line and each ipvsadm-style command — is run
//! with `-o json` against a real control server (over the in-memory data
//! plane), successes and failures, and each run must write exactly one
//! JSON document to stdout (nothing to stderr), exit with the status its
//! error code documents, and match its schema in docs/schemas/. A command
//! without a schema fails the test, and so does one the walk does not run.

mod ctl_support;
#[path = "fleet_support/mod.rs"]
mod fleet_support;
mod json_schema;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ctl_support::{flowgatectl, Daemon, Run, RULES};
use flowgate_api::{ErrorCode, FlowEntry};
use flowgate_dataplane::flow::{FlowTable, FlowTimeouts};
use flowgate_dataplane::pipeline::{DropReason, PipelineCounters};
use flowgate_dataplane::port::{MemoryFrames, MemoryPort};
use flowgate_dataplane::wire::builder::FrameBuilder;
use flowgate_dataplane::worker::{CountingKernelPath, Worker};
use json_schema::Schemas;
use serde_json::Value;

/// The schema of each command's output on success. A command that writes
/// no JSON (a shell script, man pages) refuses `-o json`: its output is an
/// error.
const SCHEMAS: [(&str, &str); 35] = [
    ("status", "status.json"),
    ("fleet", "fleet.json"),
    ("fleet drain", "drain.json"),
    ("fleet undrain", "drain.json"),
    ("service list", "services.json"),
    ("service add", "changed.json"),
    ("service edit", "changed.json"),
    ("service del", "changed.json"),
    ("backend list", "backends.json"),
    ("backend add", "changed.json"),
    ("backend edit", "changed.json"),
    ("backend drain", "changed.json"),
    ("backend del", "changed.json"),
    ("backend heartbeat", "heartbeat.json"),
    ("path list", "paths.json"),
    ("path add", "changed.json"),
    ("path del", "changed.json"),
    ("canary set", "changed.json"),
    ("class list", "classes.json"),
    ("class add", "changed.json"),
    ("class del", "changed.json"),
    ("apply", "changed.json"),
    ("stats", "stats.json"),
    ("flows", "flows.json"),
    ("explain", "explain.json"),
    ("capture", "capture.json"),
    ("completions", "error.json"),
    ("man", "error.json"),
    ("-A", "changed.json"),
    ("-E", "changed.json"),
    ("-D", "changed.json"),
    ("-a", "changed.json"),
    ("-e", "changed.json"),
    ("-d", "changed.json"),
    ("-L", "services.json"),
];

fn schemas() -> Schemas {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/schemas");
    Schemas::load(&dir).unwrap_or_else(|e| panic!("docs/schemas: {e}"))
}

/// Every command flowgatectl has: the leaves of its subcommand tree
/// (`service add`), hidden ones too, and the shorthand's commands (`-A`).
fn every_command() -> BTreeSet<String> {
    fn leaves(cmd: &clap::Command, prefix: &str, out: &mut BTreeSet<String>) {
        for sub in cmd.get_subcommands() {
            let path = format!("{prefix}{}", sub.get_name()).trim().to_owned();
            if sub.has_subcommands() {
                // A group that also runs alone (`fleet`) is a command too.
                if !sub.is_subcommand_required_set() {
                    out.insert(path.clone());
                }
                leaves(sub, &format!("{path} "), out);
            } else {
                out.insert(path);
            }
        }
    }
    let mut all = BTreeSet::new();
    leaves(&flowgatectl::command("test"), "", &mut all);
    let shorthand = flowgatectl::shorthand_command();
    let group = shorthand
        .get_groups()
        .find(|g| g.get_id() == "command")
        .expect("the shorthand's command group");
    for id in group.get_args() {
        let arg = shorthand
            .get_arguments()
            .find(|a| a.get_id() == id)
            .expect("an argument of the group");
        all.insert(format!("-{}", arg.get_short().expect("a short flag")));
    }
    all
}

/// The command a command line runs: the shorthand's flag, or the
/// subcommand's words.
fn command_of(args: &[&str]) -> String {
    if let Some(flag) = args
        .iter()
        .find(|a| a.len() == 2 && a.starts_with('-') && "AEDaedL".contains(&a[1..]))
    {
        return (*flag).to_owned();
    }
    let words: Vec<&str> = args
        .iter()
        .take_while(|a| !a.starts_with('-'))
        .copied()
        .collect();
    match words.as_slice() {
        [group @ ("service" | "backend" | "path" | "canary" | "class"), verb, ..] => {
            format!("{group} {verb}")
        }
        ["fleet", verb @ ("drain" | "undrain"), ..] => format!("fleet {verb}"),
        [one, ..] => (*one).to_owned(),
        [] => String::new(),
    }
}

/// The exit status documented for an error code.
fn exit_of(code: &str) -> i32 {
    flowgatectl::failure::CLIENT_CODES
        .iter()
        .find(|(c, _)| *c == code)
        .map_or(1, |(_, exit)| i32::from(*exit))
}

/// Runs and checks commands, and remembers which ran.
struct Walk {
    schemas: Schemas,
    by_command: BTreeMap<&'static str, &'static str>,
    ran: BTreeSet<String>,
    schemas_used: BTreeSet<&'static str>,
}

impl Walk {
    fn new() -> Walk {
        Walk {
            schemas: schemas(),
            by_command: SCHEMAS.into_iter().collect(),
            ran: BTreeSet::new(),
            schemas_used: BTreeSet::new(),
        }
    }

    /// Checks one run of `args` (with `-o json`) that should exit
    /// `expected_exit`; returns its documents (one, or one per line for
    /// `stats --watch`).
    fn check(&mut self, args: &[&str], run: Run, expected_exit: i32) -> Vec<Value> {
        let command = command_of(args);
        let context = format!("flowgatectl {}", args.join(" "));
        assert_eq!(
            run.code, expected_exit,
            "{context}: exit {}\nstdout: {}\nstderr: {}",
            run.code, run.stdout, run.stderr
        );
        assert_eq!(
            run.stderr, "",
            "{context}: -o json writes nothing to stderr"
        );
        assert!(run.stdout.ends_with('\n'), "{context}: {:?}", run.stdout);
        let streamed = args.contains(&"--watch");
        let documents: Vec<Value> = serde_json::Deserializer::from_str(&run.stdout)
            .into_iter::<Value>()
            .map(|d| d.unwrap_or_else(|e| panic!("{context}: not JSON: {e}: {}", run.stdout)))
            .collect();
        if streamed {
            assert_eq!(documents.len(), run.stdout.lines().count(), "{context}");
        } else {
            assert_eq!(documents.len(), 1, "{context}: {}", run.stdout);
            assert_eq!(run.stdout.lines().count(), 1, "{context}");
        }
        let schema = if expected_exit == 0 {
            *self
                .by_command
                .get(command.as_str())
                .unwrap_or_else(|| panic!("{context}: no schema for `{command}`"))
        } else {
            "error.json"
        };
        for document in &documents {
            let errors = self.schemas.validate(schema, document);
            assert!(
                errors.is_empty(),
                "{context}: does not match docs/schemas/{schema}:\n{}\n{document}",
                errors.join("\n")
            );
            if expected_exit != 0 {
                let code = document["error"]["code"].as_str().unwrap_or_default();
                assert_eq!(exit_of(code), expected_exit, "{context}: code {code}");
            }
        }
        self.ran.insert(command);
        self.schemas_used.insert(schema);
        documents
    }

    fn ok(&mut self, daemon: &Daemon, args: &[&str]) -> Value {
        self.run(daemon, args, 0).remove(0)
    }

    fn fails(&mut self, daemon: &Daemon, args: &[&str], exit: i32) -> Value {
        self.run(daemon, args, exit).remove(0)["error"].clone()
    }

    fn run(&mut self, daemon: &Daemon, args: &[&str], exit: i32) -> Vec<Value> {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let run = daemon.ctl(&all);
        self.check(args, run, exit)
    }
}

#[test]
fn every_command_writes_one_json_document_that_matches_its_schema() {
    let mut walk = Walk::new();
    let every = every_command();
    for command in &every {
        assert!(
            walk.by_command.contains_key(command.as_str()),
            "no schema for `flowgatectl {command}`: add one to docs/schemas/ and to SCHEMAS"
        );
    }

    let d = Daemon::start();
    let counters = Arc::new(PipelineCounters::default());
    counters.rx_packets.add(10);
    counters.drop_for(DropReason::NoNeighbour);
    counters.synproxy_connections.add(4);
    counters.synproxy_established.add(3);
    d.dataplane.add_worker(Some(3), counters);
    d.dataplane
        .set_syn_proxy(flowgate_dataplane::synproxy::SynProxyCounters {
            cookies_sent: 900,
            cookies_valid: 5,
            cookies_invalid: 7,
            probes_valid: 1,
            ..Default::default()
        });
    d.dataplane
        .set_service_stats(vec![flowgate_api::ServiceStats {
            name: "web".into(),
            routing: Some(flowgate_api::RouteStats {
                path_flows: 2,
                set_closed: 1,
                ..flowgate_api::RouteStats::default()
            }),
            ..flowgate_api::ServiceStats::default()
        }]);
    let flow = |service: Option<&str>, client: &str| FlowEntry {
        worker: 0,
        service: service.map(str::to_owned),
        protocol: "tcp".into(),
        client: client.parse().unwrap(),
        vip: "198.18.100.10:80".parse().unwrap(),
        backend: "198.18.1.12:8080".parse().unwrap(),
        state: "established".into(),
        idle_ms: 1500,
    };
    d.dataplane.set_flows(vec![
        flow(Some("web"), "198.18.0.2:40000"),
        flow(None, "198.18.0.3:40000"),
    ]);

    walk_reads(&mut walk, &d);
    walk_capture(&mut walk, &d);
    walk_changes(&mut walk, &d);
    let vip = "198.18.100.11:80";
    walk_shorthand(&mut walk, &d, vip);
    walk_failures(&mut walk, &d, vip);

    // Every command ran; every schema served.
    let missing: Vec<&String> = every.difference(&walk.ran).collect();
    assert!(missing.is_empty(), "not walked with -o json: {missing:?}");
    let unused: Vec<&str> = walk
        .schemas
        .names()
        .filter(|n| *n != "common.json" && !walk.schemas_used.contains(n))
        .collect();
    assert!(unused.is_empty(), "schemas no run matched: {unused:?}");
}

/// The read commands, over a data plane with a worker and two flows.
fn walk_reads(walk: &mut Walk, d: &Daemon) {
    // Reads.
    let status = walk.ok(d, &["status"]);
    assert_eq!(status["dataplane"]["workers"][0]["core"], 3);
    assert!(status.get("etcd").is_none(), "{status}");
    // A gateway with [etcd] and a held key (what its etcd source reports;
    // tests/fleet_ctl.rs runs the source against a real etcd).
    d.control.report_etcd(Arc::new(|| flowgate_api::EtcdStatus {
        health: "holding".into(),
        connected: true,
        revision: 41,
        seen_revision: 42,
        generation: 7,
        held: vec![flowgate_api::HeldKey {
            key: "/fg/v1/rules/services/web".into(),
            revision: 42,
            problems: vec!["port 0 of service \"web\" is out of range 1..=65535".into()],
        }],
        last_error: None,
    }));
    let status = walk.ok(d, &["status"]);
    assert_eq!(
        status["etcd"]["held"][0]["key"],
        "/fg/v1/rules/services/web"
    );
    assert_eq!(status["etcd"]["held"][0]["revision"], 42);
    walk_drain(walk, d);
    walk.ok(d, &["service", "list"]);
    walk.ok(d, &["backend", "list", "web"]);
    let stats = walk.ok(d, &["stats"]);
    assert_eq!(stats["totals"]["drops"]["no_neighbour"], 1);
    assert_eq!(stats["services"][0]["routing"]["set_closed"], 1);
    assert_eq!(stats["syn_proxy"]["cookies_sent"], 900);
    assert_eq!(status["dataplane"]["syn_proxy"]["cookies_sent"], 900);
    assert_eq!(status["dataplane"]["syn_proxy"]["refused"], 7);
    assert_eq!(stats["syn_proxy"]["probes_valid"], 1);
    assert_eq!(stats["syn_proxy"]["connections"], 4);
    let samples = walk.run(
        d,
        &["stats", "--watch", "--interval", "0.05", "--count", "2"],
        0,
    );
    assert_eq!(samples.len(), 3, "the first sample and two more");
    let explained = walk.ok(
        d,
        &[
            "explain",
            "--from",
            "198.18.0.2:40000",
            "--to",
            "198.18.100.10:80/tcp",
        ],
    );
    assert_eq!(explained["service"], "web");
    assert_eq!(explained["outcome"], "placed");
    let flows = walk.ok(d, &["flows"]);
    let flows = flows["flows"].as_array().unwrap();
    assert_eq!(flows[0]["service"], "web");
    assert!(
        flows[1].get("service").is_none(),
        "a flow of a removed service has no service: {}",
        flows[1]
    );
}

/// `fleet drain` and `fleet undrain` through the control socket, seen in
/// `status`; with `--etcd` they are a usage error.
fn walk_drain(walk: &mut Walk, d: &Daemon) {
    assert_eq!(walk.ok(d, &["status"])["drained"], false);
    let drained = walk.ok(d, &["fleet", "drain"]);
    assert_eq!(
        (&drained["drained"], &drained["changed"]),
        (&true.into(), &true.into())
    );
    assert_eq!(walk.ok(d, &["status"])["drained"], true);
    let again = walk.ok(d, &["fleet", "drain"]);
    assert_eq!(again["changed"], false);
    let undrained = walk.ok(d, &["fleet", "undrain"]);
    assert_eq!(
        (&undrained["drained"], &undrained["changed"]),
        (&false.into(), &true.into())
    );
    assert_eq!(walk.ok(d, &["status"])["drained"], false);
    let usage = walk.fails(d, &["fleet", "drain", "--etcd", "http://127.0.0.1:1"], 2);
    assert_eq!(usage["code"], "usage");
    assert!(
        usage["message"]
            .as_str()
            .unwrap()
            .contains("control socket"),
        "{usage}"
    );
}

/// `capture`, with a real worker (over memory ports) deciding a frame
/// whose TTL has run out, again and again, until the walk is done.
fn walk_capture(walk: &mut Walk, d: &Daemon) {
    let names = vec!["fg-client".to_owned(), "fg-backend".to_owned()];
    let mut taps = d.dataplane.capture_taps(1, names, Instant::now());
    let snapshots = d.dataplane.reader();
    let done = Arc::new(AtomicBool::new(false));
    let worker = {
        let done = Arc::clone(&done);
        let tap = taps.remove(0);
        std::thread::spawn(move || {
            let mut memory = MemoryFrames::new(64, 2048);
            let pool = memory.pool();
            let flows = FlowTable::new(64, FlowTimeouts::default());
            let mut worker = Worker::new(flows, pool, 2, 16).with_capture(tap);
            let mut ports = vec![MemoryPort::new("c", 16), MemoryPort::new("b", 16)];
            let mut kernel = CountingKernelPath::default();
            let expired = FrameBuilder::tcp(
                "198.18.0.2:40000".parse().unwrap(),
                "198.18.100.10:80".parse().unwrap(),
                0x02,
            )
            .ttl(1)
            .build();
            let deadline = Instant::now() + Duration::from_secs(60);
            for now in 1.. {
                if done.load(Ordering::Relaxed) || Instant::now() > deadline {
                    break;
                }
                ports[0].inject(&mut memory, &expired);
                let snapshot = snapshots.load();
                worker.poll(&mut ports, &mut memory, &snapshot, &mut kernel, now);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let captured = walk.ok(d, &["capture", "--drops", "-c", "2"]);
    assert_eq!(captured["captured"], 2, "{captured}");
    let frame = &captured["frames"][0];
    assert_eq!(
        (&frame["verdict"], &frame["reason"], &frame["interface"]),
        (&"drop".into(), &"ttl_expired".into(), &"fg-client".into()),
        "{frame}"
    );
    assert_eq!(
        frame["summary"],
        "tcp 198.18.0.2:40000 > 198.18.100.10:80 ttl 1"
    );
    let file = d.dir.join("drops.pcap");
    let written = walk.ok(
        d,
        &[
            "capture",
            "--service",
            "web",
            "--reason",
            "ttl_expired",
            "-c",
            "1",
            "-w",
            file.to_str().unwrap(),
        ],
    );
    assert_eq!(written["file"], file.to_str().unwrap());
    assert!(std::fs::metadata(&file).unwrap().len() > 60);
    // Nothing matches: the duration ends it, with no frame.
    let none = walk.ok(
        d,
        &[
            "capture",
            "--reason",
            "no_neighbour",
            "-c",
            "1",
            "--duration",
            "0.2",
        ],
    );
    assert_eq!(
        (&none["captured"], &none["stopped"]),
        (&0.into(), &"duration".into())
    );
    for (args, code) in [
        (&["capture", "--reason", "nope", "-c", "1"][..], "invalid"),
        (&["capture", "--service", "nope", "-c", "1"], "not_found"),
    ] {
        let error = walk.fails(d, args, 1);
        assert_eq!(error["code"], code, "{args:?}");
        assert!(
            error["message"].as_str().unwrap().contains("nope"),
            "{error}"
        );
    }
    for usage in [
        &["capture", "--drops", "-c", "0"][..],
        &["capture", "-c", "1", "-w", "-"],
        &["capture", "-c", "1", "--duration", "0"],
    ] {
        let error = walk.fails(d, usage, 2);
        assert_eq!(error["code"], "usage", "{usage:?}");
    }
    done.store(true, Ordering::Relaxed);
    worker.join().unwrap();
}

/// Every change: each prints the daemon's reply whole.
fn walk_changes(walk: &mut Walk, d: &Daemon) {
    // Changes: each prints the daemon's reply whole, with its kind and
    // what changed.
    let added = walk.ok(
        d,
        &[
            "service",
            "add",
            "dns",
            "--udp",
            "198.18.100.10:53",
            "-b",
            "198.18.1.11:5353",
        ],
    );
    assert_eq!(added["kind"], "changed");
    assert_eq!(added["diff"]["services_added"][0]["name"], "dns");
    walk.ok(d, &["service", "edit", "dns", "-s", "wrr"]);
    walk.ok(d, &["backend", "add", "web", "198.18.1.13:8080"]);
    let edited = walk.ok(
        d,
        &[
            "backend",
            "edit",
            "web",
            "198.18.1.13:8080",
            "-w",
            "3",
            "--zone",
            "a",
        ],
    );
    assert_eq!(edited["kind"], "changed");
    assert_eq!(edited["applied"], true);
    let diff = &edited["diff"];
    assert_eq!(diff["backends_reweighted"][0]["from"], 1);
    assert_eq!(diff["backends_reweighted"][0]["to"], 3);
    assert_eq!(diff["backends_relabelled"][0]["to"], "a");
    assert!(
        diff["backends_relabelled"][0].get("from").is_none(),
        "an unset label is left out: {diff}"
    );
    // A backend registered by heartbeats: its TTL, a heartbeat, its
    // health in the list.
    let ttl = walk.ok(
        d,
        &[
            "backend",
            "edit",
            "web",
            "198.18.1.13:8080",
            "--heartbeat-ttl",
            "30s",
            "--check-port",
            "9000",
        ],
    );
    assert_eq!(ttl["diff"]["backends_changed"][0]["field"], "heartbeat_ttl");
    assert_eq!(ttl["diff"]["backends_changed"][0]["to"], "30s");
    let beat = walk.ok(d, &["backend", "heartbeat", "web", "198.18.1.13:8080"]);
    assert_eq!(beat["kind"], "heartbeat");
    assert_eq!(beat["ttl_ms"], 30_000);
    let list = walk.ok(d, &["backend", "list", "web"]);
    let registered = list["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["address"] == "198.18.1.13")
        .unwrap();
    assert_eq!(registered["heartbeat_ttl"], "30s");
    assert_eq!(registered["health"]["state"], "up");
    assert!(
        registered["health"]["heartbeat_expires_in_ms"]
            .as_i64()
            .unwrap()
            > 25_000
    );
    walk.ok(d, &["backend", "drain", "web", "198.18.1.13:8080"]);
    walk.ok(d, &["backend", "del", "web", "198.18.1.13:8080"]);
    walk.ok(d, &["service", "del", "dns"]);
    let file = d.dir.join("gw.toml");
    std::fs::write(&file, RULES.replace("weight = 2", "weight = 5")).unwrap();
    let path = file.to_str().unwrap();
    let dry = walk.ok(d, &["apply", "-f", path, "--dry-run"]);
    assert_eq!(
        (dry["dry_run"].clone(), dry["applied"].clone()),
        (true.into(), false.into())
    );
    walk.ok(d, &["apply", "-f", path]);

    walk_routing(walk, d, &file);
}

/// Paths and the canary share: a dry run reports, the change runs.
fn walk_routing(walk: &mut Walk, d: &Daemon, file: &Path) {
    let path = file.to_str().unwrap();
    let canary = RULES.replacen(
        "port = 80\n",
        "port = 80\n[services.canary]\ngroup = \"v2\"\n",
        1,
    ) + "group = \"v2\"\n";
    std::fs::write(file, canary).unwrap();
    walk.ok(d, &["apply", "-f", path]);
    let add = ["path", "add", "web", "198.18.0.2", "198.18.1.12:8080"];
    let dry = walk.ok(d, &[&add[..], &["--dry-run"]].concat());
    assert_eq!(dry["applied"], false);
    assert_eq!(dry["diff"]["services_changed"][0]["field"], "paths");
    let added = walk.ok(d, &add);
    assert_eq!(added["applied"], true);
    assert_eq!(
        added["diff"]["services_changed"][0]["to"],
        "1 paths (1 added, 0 removed, 0 changed)"
    );
    let listed = walk.ok(d, &["path", "list", "web"]);
    assert_eq!(listed["paths"][0]["client"], "198.18.0.2/32");
    assert_eq!(listed["paths"][0]["backends"][0], "198.18.1.12:8080");
    let share = walk.ok(d, &["canary", "set", "web", "5%"]);
    assert_eq!(share["diff"]["services_changed"][0]["field"], "canary");
    let removed = walk.ok(d, &["path", "del", "web", "198.18.0.2/32"]);
    assert_eq!(removed["applied"], true);
    let none = walk.fails(d, &["path", "del", "web", "198.18.0.2"], 1);
    assert_eq!(none["code"], "not_found");
    let empty = walk.ok(d, &["path", "list", "web"]);
    assert_eq!(empty["paths"], serde_json::json!([]));
    let unknown = walk.fails(d, &["path", "list", "nope"], 1);
    assert_eq!(unknown["code"], "not_found");
    walk_classes(walk, d);
}

/// Client classes: a dry run reports, the change runs, a bad one is
/// refused with its reason and changes nothing.
fn walk_classes(walk: &mut Walk, d: &Daemon) {
    let none = walk.ok(d, &["class", "list"]);
    assert_eq!(none["classes"], serde_json::json!([]));
    let add = ["class", "add", "198.18.10.0/24", "--set", "shop.sh.g1"];
    let dry = walk.ok(d, &[&add[..], &["--dry-run"]].concat());
    assert_eq!(dry["applied"], false);
    assert_eq!(
        dry["diff"]["classes_added"],
        serde_json::json!([{"prefix": "198.18.10.0/24", "set": "shop.sh.g1"}])
    );
    let listed = walk.ok(d, &["class", "list"]);
    assert_eq!(
        listed["classes"],
        serde_json::json!([]),
        "a dry run changes nothing"
    );
    let generation = dry["generation"].as_u64().unwrap();
    let added = walk.ok(d, &add);
    assert_eq!(added["applied"], true);
    assert_eq!(added["generation"].as_u64(), Some(generation + 1));
    let twice = walk.fails(d, &add, 1);
    assert_eq!(twice["code"], "exists");
    let replaced = walk.ok(
        d,
        &[
            "class",
            "add",
            "198.18.10.0/24",
            "--set",
            "shop.sh.*",
            "--replace",
        ],
    );
    assert_eq!(replaced["diff"]["classes_removed"][0]["set"], "shop.sh.g1");
    assert_eq!(replaced["diff"]["classes_added"][0]["set"], "shop.sh.*");
    let unknown = walk.fails(d, &["class", "add", "2001:2::/32", "--zone", "dc9"], 1);
    assert_eq!(unknown["code"], "invalid");
    assert!(
        unknown["message"]
            .as_str()
            .unwrap()
            .contains("zone \"dc9\""),
        "{unknown}"
    );
    let malformed = walk.fails(d, &["class", "add", "2001:2::/32", "--set", "a.b"], 1);
    assert_eq!(malformed["code"], "invalid");
    let listed = walk.ok(d, &["class", "list"]);
    assert_eq!(
        listed["classes"],
        serde_json::json!([{"prefix": "198.18.10.0/24", "set": "shop.sh.*"}])
    );
    let removed = walk.ok(d, &["class", "del", "198.18.10.0/24", "--dry-run"]);
    assert_eq!(
        removed["diff"]["classes_removed"][0]["prefix"],
        "198.18.10.0/24"
    );
    let removed = walk.ok(d, &["class", "del", "198.18.10.0/24"]);
    assert_eq!(removed["applied"], true);
    let gone = walk.fails(d, &["class", "del", "198.18.10.0/24"], 1);
    assert_eq!(gone["code"], "not_found");
}

/// The ipvsadm-style shorthand on `vip`.
fn walk_shorthand(walk: &mut Walk, d: &Daemon, vip: &str) {
    // The shorthand, the same way.
    walk.ok(
        d,
        &[
            "-A",
            "-t",
            vip,
            "-r",
            "198.18.1.21:8080",
            "-r",
            "198.18.1.22:8080",
        ],
    );
    walk.ok(d, &["-E", "-t", vip, "-s", "sh"]);
    walk.ok(d, &["-a", "-t", vip, "-r", "198.18.1.23:8080", "-w", "2"]);
    walk.ok(d, &["-e", "-t", vip, "-r", "198.18.1.21:8080", "-w", "0"]);
    walk.ok(d, &["-d", "-t", vip, "-r", "198.18.1.22:8080"]);
    let listed = walk.ok(d, &["-L", "-n"]);
    assert_eq!(listed["kind"], "services");
    assert_eq!(listed["services"].as_array().unwrap().len(), 2);
    let one = walk.ok(d, &["-L", "-n", "-t", vip]);
    assert_eq!(one["services"][0]["name"], "tcp-198.18.100.11-80");
}

/// Failures: one error document each, with its exit code.
fn walk_failures(walk: &mut Walk, d: &Daemon, vip: &str) {
    let file = d.dir.join("gw.toml");
    let path = file.to_str().unwrap();
    // Failures: one document each, with the code the exit status says.
    let last = walk.fails(d, &["-d", "-t", vip, "-r", "198.18.1.23:8080"], 1);
    assert_eq!(last["code"], "invalid");
    assert!(
        last["hint"]
            .as_str()
            .unwrap_or_default()
            .contains("-D -t 198.18.100.11:80"),
        "{last}"
    );
    walk.ok(d, &["-D", "-t", vip]);
    let gone = walk.fails(d, &["-L", "-n", "-t", vip], 1);
    assert_eq!(gone["code"], "not_found");
    let nowhere = walk.fails(
        d,
        &[
            "explain",
            "--from",
            "198.18.0.2",
            "--to",
            "198.18.100.99:80",
        ],
        1,
    );
    assert_eq!(nowhere["code"], "not_found");
    let nope = walk.fails(d, &["backend", "drain", "nope", "198.18.1.11:8080"], 1);
    assert_eq!(nope["code"], "not_found");
    let unknown = walk.fails(d, &["backend", "heartbeat", "web", "198.18.1.99:8080"], 1);
    assert_eq!(unknown["code"], "not_found");
    let no_ttl = walk.fails(d, &["backend", "heartbeat", "web", "198.18.1.11:8080"], 1);
    assert_eq!(no_ttl["code"], "invalid");
    std::fs::write(&file, RULES.replace("port = 8080", "port = 0")).unwrap();
    let invalid = walk.fails(d, &["apply", "-f", path], 1);
    assert_eq!(invalid["code"], "invalid");
    assert_eq!(invalid["problems"].as_array().map(Vec::len), Some(2));
    let unread = walk.fails(d, &["apply", "-f", "/nonexistent/gw.toml"], 1);
    assert_eq!(unread["code"], "io");
    for usage in [
        &["frobnicate"][..],
        &["backend", "add", "web", "198.18.1.11"],
        &["backend", "edit", "web", "198.18.1.11:8080"],
        &["canary", "set", "web", "101%"],
        &["path", "add", "web", "198.18.0.2"],
        &["class", "add"],
        &["class", "del", "198.18.10.0/24", "--zone", "dc1"],
        &["-A", "-t", vip, "-s", "rr", "-r", "198.18.1.21:8080"],
        &["completions", "bash"],
        &["man", d.dir.join("man").to_str().unwrap()],
    ] {
        let error = walk.fails(d, usage, 2);
        assert_eq!(error["code"], "usage", "{usage:?}");
    }
    let run = flowgatectl(
        &[
            "--socket",
            "/nonexistent/control.sock",
            "status",
            "-o",
            "json",
        ],
        None,
    );
    let unreachable = walk.check(&["status"], run, 3).remove(0);
    assert_eq!(unreachable["error"]["code"], "unreachable");
    walk_fleet(walk);
}

/// `fleet`: the gateways from a real etcd (none have a status key here;
/// tests/fleet_ctl.rs lists one), and the usage error without `--etcd`.
fn walk_fleet(walk: &mut Walk) {
    let etcd = fleet_support::Etcd::start();
    let endpoint = etcd.endpoint();
    let args = ["--etcd", endpoint.as_str(), "fleet", "-o", "json"];
    let fleet = walk
        .check(&["fleet"], flowgatectl(&args, None), 0)
        .remove(0);
    assert_eq!(fleet["gateways"], serde_json::json!([]));
    let run = flowgatectl(&["fleet", "-o", "json"], None);
    let usage = walk.check(&["fleet"], run, 2).remove(0);
    assert_eq!(usage["error"]["code"], "usage");
}

#[test]
fn the_schemas_name_every_error_code_and_drop_reason() {
    let schemas = schemas();
    let (_, codes) = schemas
        .resolve("error.json", "#/properties/error/properties/code/enum")
        .expect("error.json lists the codes");
    let codes: BTreeSet<&str> = codes
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let expected: BTreeSet<&str> = ErrorCode::ALL
        .iter()
        .map(|c| c.name())
        .chain(flowgatectl::failure::CLIENT_CODES.iter().map(|(c, _)| *c))
        .collect();
    assert_eq!(codes, expected);

    let (_, drops) = schemas
        .resolve("common.json", "#/$defs/drops/properties")
        .expect("common.json lists the drop reasons");
    let named: BTreeSet<&str> = drops
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let reasons: BTreeSet<&str> = DropReason::all().map(DropReason::name).collect();
    assert_eq!(
        named, reasons,
        "docs/schemas/common.json's drops are the pipeline's reasons"
    );
    let (_, captured) = schemas
        .resolve(
            "capture.json",
            "#/properties/frames/items/properties/reason/enum",
        )
        .expect("capture.json lists the drop reasons");
    let named: BTreeSet<&str> = captured
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(named, reasons, "docs/schemas/capture.json's reasons");
}
