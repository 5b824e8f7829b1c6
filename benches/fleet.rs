//! Rules from etcd, timed against a real etcd on loopback (issue 15).
//!
//! - `load`: 10 000 services in etcd; a gateway starts: the source reads
//!   the prefix (in pages, at one revision), decodes and validates every
//!   key, and the control state compiles and publishes the first
//!   snapshot. Timed to the published snapshot.
//! - `put`: two gateways watch the same prefix (each its own source,
//!   control state and in-memory data plane that compiles and publishes
//!   real snapshots); 1 000 puts, one after another, each changing one
//!   service's backend weight. Timed from just before the put to when the
//!   later of the two gateways has published the snapshot of that
//!   revision. p50, p99, max.
//!
//! Run: `flock /tmp/flowgate-bench.lock cargo bench --bench fleet`
//! (etcd-server installed; about a minute). docs/benchmarks.md keeps the
//! results.

#[path = "../tests/fleet_support/mod.rs"]
mod fleet_support;

use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowgate_dataplane::control::{ControlState, Dataplane, MemoryDataplane, ServiceChanges};
use flowgate_dataplane::fleet::layout::KeyLayout;
use flowgate_dataplane::fleet::mirror::Rules;
use flowgate_dataplane::fleet::settings::EtcdSettings;
use flowgate_dataplane::fleet::source::{EtcdSource, RulesSink};
use flowgate_dataplane::fleet::store::{FleetStore, Write};
use flowgate_dataplane::fleet::value;
use flowgate_dataplane::liveness::Word;
use flowgate_dataplane::rules::{Backend, Config, Failover, Protocol, Scheduler, Service};
use flowgate_dataplane::table::{LivenessInput, Snapshot};

const PREFIX: &str = "/flowgate-bench";
const SERVICES: usize = 10_000;
const PUTS: usize = 1_000;
/// etcd's default limit of operations in one transaction is 128.
const TXN_OPS: usize = 100;

fn service(i: usize, weight: u32) -> Service {
    let mut backends: Vec<Backend> = (0..4)
        .map(|b| {
            Backend::new(
                format!("198.19.{}.{}", b, 1 + i % 250).parse().unwrap(),
                8080,
            )
        })
        .collect();
    backends[0].weight = weight;
    Service {
        limits: Default::default(),

        announce: Default::default(),
        routing: Default::default(),
        health: Default::default(),
        name: format!("svc-{i:05}"),
        protocol: Protocol::Tcp,
        vip: format!("198.18.{}.{}", i / 250, 1 + i % 250)
            .parse()
            .unwrap(),
        port: 80,
        scheduler: Scheduler::Maglev,
        maglev_table_size: 251,
        failover: Failover::default(),
        backends,
    }
}

fn put(layout: &KeyLayout, s: &Service) -> Write {
    Write {
        key: layout.service_key(&s.name),
        value: Some(value::service_value(s, true).into_bytes()),
    }
}

/// A gateway in memory: applies through its control state and reports
/// each revision it published, with the time.
struct Gateway {
    control: ControlState,
    /// Each revision published, with the times of its legs.
    published: mpsc::Sender<Published>,
    /// The last revision the watch delivered, and when.
    watched: (i64, Instant),
}

/// One revision published by one gateway.
struct Published {
    revision: i64,
    /// The watch reply with it arrived.
    watched: Instant,
    /// The mirror gave the rules (decoded, made, validated).
    given: Instant,
    /// The control state published the snapshot.
    at: Instant,
}

impl RulesSink for Gateway {
    fn watched(&mut self, revision: i64, at: Instant) {
        self.watched = (revision, at);
    }

    fn apply(&mut self, rules: &Rules) -> Result<u64, String> {
        let given = Instant::now();
        let report = self
            .control
            .apply_shared(
                Arc::clone(&rules.config),
                rules.change.since(),
                &format!("etcd revision {}", rules.revision),
            )
            .map_err(|e| e.to_string())?;
        let watched = match self.watched {
            (revision, at) if revision == rules.revision => at,
            _ => given,
        };
        let _ = self.published.send(Published {
            revision: rules.revision,
            watched,
            given,
            at: Instant::now(),
        });
        Ok(report.generation)
    }
}

fn settings(endpoint: &str, id: &str) -> EtcdSettings {
    let mut s = EtcdSettings::new(vec![endpoint.to_owned()], PREFIX, id);
    s.start_timeout = Duration::from_secs(60);
    s
}

/// Starts a gateway; returns its source, its control state, the time the
/// first snapshot took (read, check, compile, publish) and its channel.
fn start_gateway(
    endpoint: &str,
    id: &str,
) -> (
    EtcdSource,
    ControlState,
    Duration,
    mpsc::Receiver<Published>,
) {
    let control = ControlState::new(Config::default(), "bench", Arc::new(MemoryDataplane::new()));
    let (tx, rx) = mpsc::channel();
    let sink = Box::new(Gateway {
        control: control.clone(),
        published: tx,
        watched: (0, Instant::now()),
    });
    let start = Instant::now();
    let started = EtcdSource::start(settings(endpoint, id), Config::default(), sink).unwrap();
    let loaded = start.elapsed();
    control
        .apply_shared(Arc::clone(&started.rules.config), None, "etcd")
        .unwrap();
    let live = start.elapsed();
    println!(
        "load {id}: {} services, read and checked in {:.2} s, live (compiled, published) in {:.2} s",
        started.rules.config.services.len(),
        loaded.as_secs_f64(),
        live.as_secs_f64()
    );
    (started.source, control, live, rx)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Times each step one revision of one changed service costs at
/// [`SERVICES`] services, without etcd: what the put-to-live latency is
/// made of (`cargo bench --bench fleet -- parts`).
fn parts() {
    let config = Config {
        services: (0..SERVICES).map(|i| service(i, 1)).collect(),
        ..Config::default()
    };
    let time = |what: &str, f: &mut dyn FnMut()| {
        let rounds = 20;
        let start = Instant::now();
        for _ in 0..rounds {
            f();
        }
        println!(
            "  {what}: {:.2} ms",
            start.elapsed().as_secs_f64() * 1e3 / f64::from(rounds)
        );
    };
    println!("one changed service of {SERVICES}:");
    time("clone the config", &mut || drop(config.clone()));
    time("validate the config", &mut || {
        flowgate_dataplane::rules::validate(&config, &flowgate_dataplane::rules::Unrecorded)
            .unwrap()
    });
    let mut next = config.clone();
    next.services[17].backends[0].weight = 9;
    time(
        "copy the config and change one service (shared services)",
        &mut || {
            let mut copy = config.clone();
            copy.services[17].backends[0].weight = 9;
            drop(copy)
        },
    );
    let index = flowgate_dataplane::rules::ServiceIndex::of(&config);
    let edits = [flowgate_dataplane::rules::ServiceEdit {
        before: Some(&config.services[17]),
        after: Some((17, &next.services[17])),
    }];
    time(
        "validate the change (the changed service, the counts)",
        &mut || {
            index
                .validate_change(
                    &config,
                    &next,
                    &edits,
                    &flowgate_dataplane::rules::Unrecorded,
                )
                .unwrap()
        },
    );
    time("diff", &mut || {
        drop(flowgate_dataplane::control::diff(&config, &next))
    });
    let dataplane = MemoryDataplane::new();
    dataplane.apply(&config).unwrap();
    let mut flip = false;
    time("capacity check", &mut || dataplane.check(&next).unwrap());
    time("compile and publish, in full", &mut || {
        flip = !flip;
        dataplane.apply(if flip { &next } else { &config }).unwrap();
    });

    // The same revision as the daemon's control state passes it on: the
    // configs shared, the changed service named.
    let shared = [Arc::new(config.clone()), Arc::new(next.clone())];
    let names = vec![next.services[17].name.clone()];
    dataplane.apply_shared(&shared[0], None).unwrap();
    let previous = dataplane.current();
    time("build the snapshot, the changed service only", &mut || {
        drop(Snapshot::build_changed(
            &shared[1],
            &previous,
            LivenessInput {
                table: previous.liveness(),
                now_ns: previous.liveness().now_ns(),
                initial: &|_, _| Word::UP,
            },
            &names,
        ))
    });
    let mut at = 0;
    time(
        "compile and publish, the changed service only (snapshot, health plan, paths)",
        &mut || {
            let changes = ServiceChanges {
                since: &shared[at],
                services: &names,
            };
            at = 1 - at;
            dataplane.apply_shared(&shared[at], Some(changes)).unwrap();
        },
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if std::env::args().any(|a| a == "parts") {
        parts();
        return;
    }
    let etcd = fleet_support::Etcd::start();
    let layout = KeyLayout::new(PREFIX).unwrap();
    let mut store = FleetStore::connect(&[etcd.endpoint()], layout.clone()).unwrap();
    let all: Vec<Write> = (0..SERVICES)
        .map(|i| put(&layout, &service(i, 1)))
        .collect();
    for chunk in all.chunks(TXN_OPS) {
        store.write_unchecked(chunk).unwrap();
    }

    let (gw1, _c1, live1, rx1) = start_gateway(&etcd.endpoint(), "gw-1");
    let (gw2, _c2, live2, rx2) = start_gateway(&etcd.endpoint(), "gw-2");
    println!(
        "load: {SERVICES} services live in {:.2} s and {:.2} s (issue: <= 5 s)",
        live1.as_secs_f64(),
        live2.as_secs_f64()
    );

    let mut latencies = Vec::with_capacity(PUTS);
    // Each put's legs: etcd's answer to the writer; per gateway, the
    // watch reply's arrival, the mirror (decode, make, validate), the
    // gateway's apply (diff, check, compile, publish).
    let mut committed = Vec::with_capacity(PUTS);
    let mut to_watch = Vec::with_capacity(2 * PUTS);
    let mut mirroring = Vec::with_capacity(2 * PUTS);
    let mut to_gateway = Vec::with_capacity(2 * PUTS);
    let mut applying = Vec::with_capacity(2 * PUTS);
    for n in 0..PUTS {
        let i = (n * 7919) % SERVICES;
        let before = Instant::now();
        let revision = store
            .write_unchecked(&[put(&layout, &service(i, 2 + (n % 50) as u32))])
            .unwrap();
        committed.push(before.elapsed());
        let mut last = before;
        for rx in [&rx1, &rx2] {
            loop {
                let p = rx
                    .recv_timeout(Duration::from_secs(10))
                    .expect("a gateway did not publish within 10 s");
                if p.revision == revision {
                    last = last.max(p.at);
                    to_watch.push(p.watched.saturating_duration_since(before));
                    mirroring.push(p.given.saturating_duration_since(p.watched));
                    to_gateway.push(p.given - before);
                    applying.push(p.at - p.given);
                    break;
                }
            }
        }
        latencies.push(last - before);
    }
    latencies.sort();
    println!(
        "put to live on both gateways, {PUTS} puts over {SERVICES} services: \
         p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (issue: p99 <= 100 ms)",
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3,
    );
    for (what, mut times) in [
        ("put to etcd's answer (commit)", committed),
        (
            "put to the watch reply at a gateway (etcd, watch)",
            to_watch,
        ),
        (
            "watch reply to rules (mirror: decode, make, validate)",
            mirroring,
        ),
        ("put to gateway (etcd, watch, mirror)", to_gateway),
        ("gateway apply (diff, check, compile, publish)", applying),
    ] {
        times.sort();
        println!(
            "  {what}: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            percentile(&times, 0.50).as_secs_f64() * 1e3,
            percentile(&times, 0.99).as_secs_f64() * 1e3,
            times.last().unwrap().as_secs_f64() * 1e3,
        );
    }
    drop(gw1);
    drop(gw2);
}
