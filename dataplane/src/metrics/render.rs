//! The Prometheus text exposition format, version 0.0.4.
//!
//! Every family gets a `# HELP` and a `# TYPE` line and then its series,
//! all together; counters end in `_total`; every name starts with
//! `flowgate_`; per-worker series carry a `worker` label. Label values are
//! escaped (`\` → `\\`, `"` → `\"`, newline → `\n`), so a service name can
//! hold anything the config allows.

use std::fmt::Write as _;

use super::changes::{ChangeSource, RefusalReason};
use super::sample::{LoopValues, MetricsSample, WorkerSample};
use crate::admission::Refusal;
use crate::flow::{Departure, EndpointValues};
use crate::health::LATENCY_BUCKETS_SECONDS;
use crate::liveness::Status;
use crate::pipeline::{CounterValues, DropReason, RouteCounterValues};
use crate::table::Snapshot;

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders `sample`, taken against `snapshot`, as a Prometheus text
/// exposition.
pub fn render(sample: &MetricsSample, snapshot: &Snapshot) -> String {
    let mut out = Exposition::default();
    gateway(&mut out, sample, snapshot);
    changes(&mut out, sample);
    etcd(&mut out, sample);
    syn_proxy(&mut out, sample);
    fleet(&mut out, sample);
    workers(&mut out, sample);
    fast_path(&mut out, sample);
    services(&mut out, sample);
    admission(&mut out, sample);

    routes(&mut out, sample);
    backends(&mut out, sample);
    health(&mut out, sample);
    rings(&mut out, sample);
    out.text
}

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// A text being written, one family at a time.
#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    /// Starts a family: its HELP and TYPE lines.
    fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let _ = write!(self.text, "# HELP {name} ");
        escape_help(&mut self.text, help);
        let _ = writeln!(self.text, "\n# TYPE {name} {kind}");
    }

    /// One series of the family just started.
    fn series(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (label, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                self.text.push_str(label);
                self.text.push_str("=\"");
                escape_label_value(&mut self.text, v);
                self.text.push('"');
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }

    /// One series with a value that is not a whole number.
    fn series_f64(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.series(name, labels, 0);
        // Replace the " 0\n" just written.
        self.text.truncate(self.text.len() - 3);
        let _ = writeln!(self.text, " {value}");
    }
}

/// Each backend's health: whether it is up, its state, its state changes
/// and its check's latency (a backend shared by services is one check,
/// shown under each).
fn health(out: &mut Exposition, sample: &MetricsSample) {
    let labels: Vec<(&str, String)> = sample
        .health
        .iter()
        .map(|h| (&*h.service, h.backend.to_string()))
        .collect();
    out.family(
        "flowgate_backend_up",
        Kind::Gauge,
        "Per backend: 1 while it takes new flows (checks pass, heartbeats on time, weight above 0), else 0.",
    );
    for (h, (service, backend)) in sample.health.iter().zip(&labels) {
        let up = u64::from(h.status == Status::Up);
        out.series(
            "flowgate_backend_up",
            &[("service", service), ("backend", backend)],
            up,
        );
    }
    out.family(
        "flowgate_backend_state",
        Kind::Gauge,
        "Per backend and state (up, down, draining, expired): 1 for the state it is in.",
    );
    for (h, (service, backend)) in sample.health.iter().zip(&labels) {
        for state in [Status::Up, Status::Down, Status::Draining, Status::Expired] {
            out.series(
                "flowgate_backend_state",
                &[
                    ("service", service),
                    ("backend", backend),
                    ("state", state.name()),
                ],
                u64::from(h.status == state),
            );
        }
    }
    out.family(
        "flowgate_backend_health_transitions_total",
        Kind::Counter,
        "Per backend: changes of its state (ejections, readmissions, expiries).",
    );
    for (h, (service, backend)) in sample.health.iter().zip(&labels) {
        out.series(
            "flowgate_backend_health_transitions_total",
            &[("service", service), ("backend", backend)],
            h.transitions,
        );
    }
    out.family(
        "flowgate_backend_check_latency_seconds",
        Kind::Histogram,
        "Per checked backend: how long its health checks took (a timeout counts its timeout).",
    );
    for (h, (service, backend)) in sample.health.iter().zip(&labels) {
        let Some(latency) = &h.latency else {
            continue;
        };
        let labels = [("service", *service), ("backend", backend.as_str())];
        for (i, count) in latency.cumulative.iter().enumerate() {
            let le = LATENCY_BUCKETS_SECONDS
                .get(i)
                .map_or_else(|| "+Inf".to_owned(), |b| b.to_string());
            out.series(
                "flowgate_backend_check_latency_seconds_bucket",
                &[labels[0], labels[1], ("le", &le)],
                *count,
            );
        }
        out.series_f64(
            "flowgate_backend_check_latency_seconds_sum",
            &labels,
            latency.sum_micros as f64 / 1e6,
        );
        out.series(
            "flowgate_backend_check_latency_seconds_count",
            &labels,
            latency.count(),
        );
    }
}

/// Appends `v` escaped as a label value.
fn escape_label_value(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Appends `v` escaped as HELP text.
fn escape_help(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn gateway(out: &mut Exposition, sample: &MetricsSample, snapshot: &Snapshot) {
    out.family(
        "flowgate_snapshot_generation",
        Kind::Gauge,
        "Generation of the rules snapshot in force.",
    );
    out.series("flowgate_snapshot_generation", &[], sample.generation);
    out.family(
        "flowgate_services",
        Kind::Gauge,
        "Services in the rules in force.",
    );
    out.series("flowgate_services", &[], snapshot.service_count() as u64);
    out.family(
        "flowgate_backends",
        Kind::Gauge,
        "Backends in the rules in force, over all services.",
    );
    out.series("flowgate_backends", &[], snapshot.endpoint_count() as u64);
}

/// Refused rule changes, when the sample has them.
fn changes(out: &mut Exposition, sample: &MetricsSample) {
    let name = "flowgate_config_changes_refused_total";
    out.family(
        name,
        Kind::Counter,
        "Rule changes refused (the old rules kept running), by source (reload: SIGHUP; \
         apply: a whole config through the control API; edit: the control API's edits) and \
         reason (the API's error code). Dry runs are not counted.",
    );
    let Some(changes) = &sample.changes else {
        return;
    };
    for source in ChangeSource::ALL {
        for reason in RefusalReason::ALL {
            out.series(
                name,
                &[("source", source.name()), ("reason", reason.name())],
                changes.refused(source, reason),
            );
        }
    }
}

/// Whether the operator drained the gateway from the fleet (`flowgatectl
/// fleet drain`).
fn fleet(out: &mut Exposition, sample: &MetricsSample) {
    let Some(drained) = sample.drained else {
        return;
    };
    out.family(
        "flowgate_fleet_drained",
        Kind::Gauge,
        "1 while the operator has drained the gateway from the fleet (flowgatectl fleet drain): \
         it announces none of its VIPs by BGP, and forwards what still reaches it.",
    );
    out.series("flowgate_fleet_drained", &[], u64::from(drained));
}

/// The SYN proxy's XDP half, summed over the interfaces' programs, on a
/// gateway that runs them.
fn syn_proxy(out: &mut Exposition, sample: &MetricsSample) {
    let Some(c) = &sample.syn_proxy else {
        return;
    };
    let families: [(&str, &str, u64); 7] = [
        (
            "flowgate_syn_proxy_cookies_sent_total",
            "SYNs to a proxied service answered with a cookie SYN-ACK by the XDP program.",
            c.cookies_sent,
        ),
        (
            "flowgate_syn_proxy_cookies_valid_total",
            "ACKs whose cookie was valid: sent up to a worker, marked.",
            c.cookies_valid,
        ),
        (
            "flowgate_syn_proxy_cookies_invalid_total",
            "Segments to an \"on\" service with no valid cookie and no connection: dropped.",
            c.cookies_invalid,
        ),
        (
            "flowgate_syn_proxy_syns_refused_total",
            "SYNs to a proxied service refused (other flags, IP options, headers no cookie fits).",
            c.syn_refused,
        ),
        (
            "flowgate_syn_proxy_marks_forged_total",
            "Frames to a proxied service that arrived with the cookie-valid mark: dropped.",
            c.mark_forged,
        ),
        (
            "flowgate_syn_proxy_acks_unchecked_total",
            "Segments with no valid cookie to an \"auto\" service: up to the workers unmarked.",
            c.ack_unchecked,
        ),
        (
            "flowgate_syn_proxy_probes_valid_total",
            "Zero-window probes standing for a lost handshake ACK: up as that ACK (also in cookies_valid).",
            c.probes_valid,
        ),
    ];
    for (name, help, value) in families {
        out.family(name, Kind::Counter, help);
        out.series(name, &[], value);
    }
}

/// The rules from etcd, on a gateway with `[etcd]`: whether it watches,
/// the revisions, and each key held back with the revision of its
/// refused value and what is wrong with it.
fn etcd(out: &mut Exposition, sample: &MetricsSample) {
    let Some(etcd) = &sample.etcd else {
        return;
    };
    out.family(
        "flowgate_etcd_connected",
        Kind::Gauge,
        "1 while the gateway watches etcd for its rules, 0 while it cannot reach it (the last \
         good rules keep running).",
    );
    out.series("flowgate_etcd_connected", &[], u64::from(etcd.connected));
    out.family(
        "flowgate_etcd_revision",
        Kind::Gauge,
        "The etcd revision the running rules came from.",
    );
    out.series("flowgate_etcd_revision", &[], revision(etcd.revision));
    out.family(
        "flowgate_etcd_seen_revision",
        Kind::Gauge,
        "The last etcd revision the gateway saw, applied or refused.",
    );
    out.series(
        "flowgate_etcd_seen_revision",
        &[],
        revision(etcd.seen_revision),
    );
    out.family(
        "flowgate_etcd_held_keys",
        Kind::Gauge,
        "etcd keys held back at their last good value because their value was refused.",
    );
    out.series("flowgate_etcd_held_keys", &[], etcd.held.len() as u64);
    let name = "flowgate_etcd_held_key_info";
    out.family(
        name,
        Kind::Gauge,
        "One series (value 1) per held etcd key: the key, the revision its refused value was \
         written at, and what is wrong with it.",
    );
    for held in &etcd.held {
        let at = held.revision.to_string();
        let problem = held.problems.join("; ");
        out.series(
            name,
            &[("key", &held.key), ("revision", &at), ("problem", &problem)],
            1,
        );
    }
}

/// An etcd revision as a gauge's value (etcd's are never negative).
fn revision(revision: i64) -> u64 {
    u64::try_from(revision).unwrap_or(0)
}

/// A per-worker counter from the pipeline's values.
type WorkerField = fn(&CounterValues) -> u64;

const WORKER_COUNTERS: [(&str, &str, WorkerField); 14] = [
    ("flowgate_rx_packets_total", "Frames received.", |c| {
        c.rx_packets
    }),
    (
        "flowgate_rx_bytes_total",
        "Bytes of the frames received.",
        |c| c.rx_bytes,
    ),
    (
        "flowgate_tx_packets_total",
        "Frames a port accepted for sending.",
        |c| c.tx_packets,
    ),
    (
        "flowgate_tx_bytes_total",
        "Bytes of the frames a port accepted for sending.",
        |c| c.tx_bytes,
    ),
    (
        "flowgate_forwarded_packets_total",
        "Frames rewritten and given to a port to send.",
        |c| c.forwarded,
    ),
    (
        "flowgate_passed_packets_total",
        "Frames handed to the kernel (not the gateway's traffic).",
        |c| c.passed,
    ),
    (
        "flowgate_flow_hits_total",
        "Frames of established connections (connection-table hits).",
        |c| c.flow_hits,
    ),
    ("flowgate_new_flows_total", "Connections created.", |c| {
        c.new_flows
    }),
    (
        "flowgate_stateless_replies_total",
        "Backends' replies with no connection sent from their service's VIP by the rules alone.",
        |c| c.stateless_replies,
    ),
    (
        "flowgate_icmp_errors_translated_total",
        "ICMP errors about a connection translated through the NAT.",
        |c| c.icmp_errors_translated,
    ),
    (
        "flowgate_fanout_datagrams_total",
        "Client datagrams to fan-out services sent to their receivers.",
        |c| c.fanout_datagrams,
    ),
    (
        "flowgate_fanout_copies_total",
        "Copies of fan-out datagrams made for the second and later receivers.",
        |c| c.fanout_copies,
    ),
    (
        "flowgate_syn_proxy_connections_total",
        "Proxied connections opened: cookie-valid ACKs a worker made a SYN to a backend.",
        |c| c.synproxy_connections,
    ),
    (
        "flowgate_syn_proxy_established_total",
        "Proxied connections whose backend answered: their sequence offset recorded.",
        |c| c.synproxy_established,
    ),
];

fn workers(out: &mut Exposition, sample: &MetricsSample) {
    out.family(
        "flowgate_worker_info",
        Kind::Gauge,
        "Workers and the cores they are pinned to (core \"none\": not pinned).",
    );
    for w in &sample.workers {
        let core = w.core.map_or_else(|| "none".to_owned(), |c| c.to_string());
        out.series(
            "flowgate_worker_info",
            &[("worker", &w.worker.to_string()), ("core", &core)],
            1,
        );
    }
    for (name, help, field) in WORKER_COUNTERS {
        out.family(name, Kind::Counter, help);
        for w in &sample.workers {
            out.series(
                name,
                &[("worker", &w.worker.to_string())],
                field(&w.counters),
            );
        }
    }
    let name = "flowgate_dropped_packets_total";
    out.family(name, Kind::Counter, "Frames dropped, by reason.");
    for w in &sample.workers {
        let worker = w.worker.to_string();
        for reason in DropReason::all() {
            let n = w.counters.drops.get(reason.name()).copied().unwrap_or(0);
            out.series(name, &[("worker", &worker), ("reason", reason.name())], n);
        }
        if let Some(l) = &w.loop_values {
            // Dropped by the worker before the pipeline saw them.
            out.series(
                name,
                &[("worker", &worker), ("reason", "handoff_full")],
                l.handoff_full,
            );
        }
    }
    worker_loops(out, sample);
    type TableField = fn(&WorkerSample) -> u64;
    let table: [(&str, &str, TableField); 2] = [
        (
            "flowgate_connections",
            "Connections in the worker's connection table.",
            |w| w.connections,
        ),
        (
            "flowgate_connection_capacity",
            "Most connections the worker's connection table holds.",
            |w| w.connection_capacity,
        ),
    ];
    for (name, help, field) in table {
        out.family(name, Kind::Gauge, help);
        for w in &sample.workers {
            out.series(name, &[("worker", &w.worker.to_string())], field(w));
        }
    }
    let name = "flowgate_connection_departures_total";
    out.family(
        name,
        Kind::Counter,
        "Connections that left the worker's table, by why: removed (closed), expired, \
         evicted (table full), evicted_bucket_full, replaced (same client tuple), \
         reply_conflict (same reply tuple through another VIP), refused (no room).",
    );
    for w in &sample.workers {
        let worker = w.worker.to_string();
        for (why, n) in Departure::ALL.iter().zip(w.departures) {
            out.series(name, &[("worker", &worker), ("reason", why.label())], n);
        }
    }
}

/// The kernel fast path: per worker, what the XDP program forwarded on
/// its connections (as the worker took it from its cache entries, and
/// also in the backends' counters); per interface, the program's own
/// counts (read from its per-CPU counters at the scrape).
fn fast_path(out: &mut Exposition, sample: &MetricsSample) {
    type Field = fn(&WorkerSample) -> u64;
    let per_worker: [(&str, Kind, &str, Field); 3] = [
        (
            "flowgate_fast_path_packets_total",
            Kind::Counter,
            "Packets the kernel fast path (XDP) forwarded on the worker's connections \
             (also in flowgate_backend_packets_total).",
            |w| w.fast_path.packets,
        ),
        (
            "flowgate_fast_path_bytes_total",
            Kind::Counter,
            "Bytes of the packets the kernel fast path forwarded on the worker's connections.",
            |w| w.fast_path.bytes,
        ),
        (
            "flowgate_fast_path_entries",
            Kind::Gauge,
            "Connection directions the worker has in the fast path's caches.",
            |w| w.fast_path.entries,
        ),
    ];
    for (name, kind, help, field) in per_worker {
        out.family(name, kind, help);
        for w in &sample.workers {
            out.series(name, &[("worker", &w.worker.to_string())], field(w));
        }
    }
    let interfaces = sample.fast_path.as_deref().unwrap_or(&[]);
    let name = "flowgate_fast_path_on";
    out.family(
        name,
        Kind::Gauge,
        "1 while the interface's XDP program forwards from the fast path's cache, 0 while \
         it hands everything up (no egress port can take XDP frames).",
    );
    for i in interfaces {
        out.series(name, &[("interface", &i.interface)], u64::from(i.on));
    }
    type Program = fn(&crate::xdp::XdpCounters) -> u64;
    let program: [(&str, &str, Program); 2] = [
        (
            "flowgate_fast_path_forwarded_packets_total",
            "Packets the interface's XDP program forwarded itself (XDP_TX or redirect).",
            |c| c.fast_forwarded(),
        ),
        (
            "flowgate_fast_path_forwarded_bytes_total",
            "Bytes of the packets the interface's XDP program forwarded itself.",
            |c| c.fast_bytes,
        ),
    ];
    for (name, help, field) in program {
        out.family(name, Kind::Counter, help);
        for i in interfaces {
            out.series(name, &[("interface", &i.interface)], field(&i.counters));
        }
    }
    let name = "flowgate_fast_path_handed_up_total";
    out.family(
        name,
        Kind::Counter,
        "Owned packets the interface's XDP program handed up to the workers with the fast \
         path on, by reason.",
    );
    for i in interfaces {
        for (reason, n) in i.handed_up() {
            out.series(name, &[("interface", &i.interface), ("reason", reason)], n);
        }
    }
}

type LoopField = fn(&LoopValues) -> u64;

const LOOP_FAMILIES: [(&str, Kind, &str, LoopField); 5] = [
    (
        "flowgate_worker_snapshot_generation",
        Kind::Gauge,
        "Snapshot generation of the worker's latest batch (0 before any).",
        |l| l.generation,
    ),
    (
        "flowgate_handed_out_packets_total",
        Kind::Counter,
        "Frames handed to the worker that owns their connection.",
        |l| l.handed_out,
    ),
    (
        "flowgate_handed_in_packets_total",
        Kind::Counter,
        "Frames received from other workers.",
        |l| l.handed_in,
    ),
    (
        "flowgate_idle_polls_total",
        Kind::Counter,
        "Polls that found no frame.",
        |l| l.idle_polls,
    ),
    (
        "flowgate_polls_total",
        Kind::Counter,
        "Polls of the worker's rings, busy or idle (flat only when the worker is stuck).",
        |l| l.polls,
    ),
];

/// The families of the workers' loops, for the workers that share them.
fn worker_loops(out: &mut Exposition, sample: &MetricsSample) {
    for (name, kind, help, field) in LOOP_FAMILIES {
        out.family(name, kind, help);
        for w in &sample.workers {
            if let Some(l) = &w.loop_values {
                out.series(name, &[("worker", &w.worker.to_string())], field(l));
            }
        }
    }
}

/// A per-service or per-backend series from their values.
type ValueField = fn(&EndpointValues) -> u64;

/// (suffix, kind, what it counts) of the per-service and per-backend
/// families.
const VALUE_FAMILIES: [(&str, Kind, &str, ValueField); 4] = [
    (
        "packets_total",
        Kind::Counter,
        "Frames forwarded on its connections, both directions.",
        |v| v.packets,
    ),
    (
        "bytes_total",
        Kind::Counter,
        "Bytes of the frames forwarded on its connections, both directions.",
        |v| v.bytes,
    ),
    (
        "new_flows_total",
        Kind::Counter,
        "Connections opened.",
        |v| v.new_flows,
    ),
    (
        "active_flows",
        Kind::Gauge,
        "Connections in the connection table.",
        |v| v.active_flows,
    ),
];

fn services(out: &mut Exposition, sample: &MetricsSample) {
    for (suffix, kind, help, field) in VALUE_FAMILIES {
        let name = format!("flowgate_service_{suffix}");
        out.family(&name, kind, &format!("Per service: {help}"));
        for w in &sample.workers {
            let worker = w.worker.to_string();
            for (s, v) in sample.services.iter().zip(&w.services) {
                out.series(
                    &name,
                    &[("worker", &worker), ("service", &s.name)],
                    field(v),
                );
            }
        }
    }
}

/// New flows refused by the services' limits, by reason, the RSTs sent
/// for them, and the per-client tables' evictions.
fn admission(out: &mut Exposition, sample: &MetricsSample) {
    let name = "flowgate_service_new_flows_refused_total";
    out.family(
        name,
        Kind::Counter,
        "Per service: new flows its limits refused, by reason (service_rate, client_rate, \
         backend_cap).",
    );
    for w in &sample.workers {
        let worker = w.worker.to_string();
        for (s, v) in sample.services.iter().zip(&w.refusals) {
            for reason in Refusal::ALL {
                let labels = [
                    ("worker", worker.as_str()),
                    ("service", s.name.as_str()),
                    ("reason", reason.name()),
                ];
                out.series(name, &labels, v.refused_for(reason));
            }
        }
    }
    let name = "flowgate_service_over_limit_resets_total";
    out.family(
        name,
        Kind::Counter,
        "Per service: RSTs sent for refused TCP new flows (over_limit = \"reset\").",
    );
    for w in &sample.workers {
        let worker = w.worker.to_string();
        for (s, v) in sample.services.iter().zip(&w.refusals) {
            out.series(
                name,
                &[("worker", &worker), ("service", &s.name)],
                v.resets_sent,
            );
        }
    }
    let name = "flowgate_client_table_evictions_total";
    out.family(
        name,
        Kind::Counter,
        "Clients the per-client limit table forgot while they still owed, to make room: a \
         steady rise means more sources than it holds.",
    );
    for w in &sample.workers {
        let worker = w.worker.to_string();
        out.series(name, &[("worker", &worker)], w.admission.client_evictions);
    }
}

/// Routing by client, per service and worker: one family per counter.
type RouteFamily = (&'static str, &'static str, fn(&RouteCounterValues) -> u64);

const ROUTE_FAMILIES: [RouteFamily; 8] = [
    (
        "path_flows",
        "New flows sent by a distribution path.",
        |v| v.path_flows,
    ),
    (
        "path_fallbacks",
        "New flows whose distribution path had no backend taking new flows (down, draining, gone).",
        |v| v.path_fallbacks,
    ),
    (
        "set_flows",
        "New flows placed within their client's SET.",
        |v| v.set_flows,
    ),
    (
        "set_closed",
        "New flows of a SET's client dropped: nothing alive it may use (failing closed).",
        |v| v.set_closed,
    ),
    ("canary_flows", "New flows drawn for the canary.", |v| {
        v.canary_flows
    }),
    (
        "first_choice",
        "New flows placed by their first step (own zone, or no zone preference).",
        |v| v.first_choice,
    ),
    (
        "fallbacks",
        "New flows placed by a later step (next zone, no zone, any, or the other canary side).",
        |v| v.fallbacks,
    ),
    (
        "unplaced",
        "New flows with nothing alive in any step, left to when_all_down.",
        |v| v.unplaced,
    ),
];

/// The routing counters of the services that route by client, or that
/// some path steered: series for every worker once the service has any.
fn routes(out: &mut Exposition, sample: &MetricsSample) {
    let totals = sample.route_totals();
    let shown: Vec<bool> = sample
        .services
        .iter()
        .zip(&totals)
        .map(|(s, t)| s.routed || *t != RouteCounterValues::default())
        .collect();
    for (suffix, help, field) in ROUTE_FAMILIES {
        let name = format!("flowgate_service_route_{suffix}_total");
        out.family(&name, Kind::Counter, &format!("Per service: {help}"));
        for w in &sample.workers {
            let worker = w.worker.to_string();
            for ((s, v), shown) in sample.services.iter().zip(&w.routes).zip(&shown) {
                if *shown {
                    out.series(
                        &name,
                        &[("worker", &worker), ("service", &s.name)],
                        field(v),
                    );
                }
            }
        }
    }
}

fn backends(out: &mut Exposition, sample: &MetricsSample) {
    let labels: Vec<(&str, String)> = sample
        .backends
        .iter()
        .map(|b| {
            let service = sample.services.get(b.service).map_or("", |s| &s.name);
            (service, b.address.to_string())
        })
        .collect();
    out.family(
        "flowgate_backend_weight",
        Kind::Gauge,
        "Per backend: its weight in the rules in force (0: draining).",
    );
    for (b, (service, backend)) in sample.backends.iter().zip(&labels) {
        out.series(
            "flowgate_backend_weight",
            &[("service", service), ("backend", backend)],
            u64::from(b.weight),
        );
    }
    for (suffix, kind, help, field) in VALUE_FAMILIES {
        let name = format!("flowgate_backend_{suffix}");
        out.family(&name, kind, &format!("Per backend: {help}"));
        for w in &sample.workers {
            let worker = w.worker.to_string();
            for ((service, backend), v) in labels.iter().zip(&w.backends) {
                out.series(
                    &name,
                    &[
                        ("worker", &worker),
                        ("service", service),
                        ("backend", backend),
                    ],
                    field(v),
                );
            }
        }
    }
}

type RingField = fn(&super::RingStats) -> u64;

const RING_COUNTERS: [(&str, &str, RingField); 11] = [
    (
        "flowgate_xsk_rx_dropped_total",
        "AF_XDP: frames the kernel dropped for reasons other than invalid descriptors.",
        |r| r.rx_dropped,
    ),
    (
        "flowgate_xsk_rx_invalid_descs_total",
        "AF_XDP: invalid descriptors on the receive side.",
        |r| r.rx_invalid_descs,
    ),
    (
        "flowgate_xsk_tx_invalid_descs_total",
        "AF_XDP: invalid descriptors on the transmit side.",
        |r| r.tx_invalid_descs,
    ),
    (
        "flowgate_xsk_rx_ring_full_total",
        "AF_XDP: frames dropped because the receive ring was full.",
        |r| r.rx_ring_full,
    ),
    (
        "flowgate_xsk_fill_ring_empty_total",
        "AF_XDP: times the fill ring was empty.",
        |r| r.fill_ring_empty,
    ),
    (
        "flowgate_xsk_tx_ring_empty_total",
        "AF_XDP: times the transmit ring was empty.",
        |r| r.tx_ring_empty,
    ),
    (
        "flowgate_xsk_tx_rejected_total",
        "AF_XDP: frames the port refused for its transmit ring (not a sendable frame).",
        |r| r.tx_rejected,
    ),
    (
        "flowgate_xsk_foreign_addrs_total",
        "AF_XDP: addresses the port found that are not frames of the UMEM (dropped).",
        |r| r.foreign_addrs,
    ),
    (
        "flowgate_xsk_tx_wakeups_total",
        "AF_XDP: transmit wakeups (sendto) the port made.",
        |r| r.tx_wakeups,
    ),
    (
        "flowgate_xsk_rx_wakeups_total",
        "AF_XDP: receive wakeups (poll) the port made.",
        |r| r.rx_wakeups,
    ),
    (
        "flowgate_xsk_wakeup_errors_total",
        "AF_XDP: wakeups the kernel answered with an error.",
        |r| r.wakeup_errors,
    ),
];

fn rings(out: &mut Exposition, sample: &MetricsSample) {
    for (name, help, field) in RING_COUNTERS {
        out.family(name, Kind::Counter, help);
        for r in &sample.rings {
            out.series(
                name,
                &[
                    ("worker", &r.worker.to_string()),
                    ("interface", &r.interface),
                    ("queue", &r.queue.to_string()),
                ],
                field(r),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::AdmissionValues;
    use crate::control::health::BackendHealthSample;
    use crate::health::HistogramSample;
    use crate::liveness::Status;
    use crate::metrics::{BackendInfo, ChangeCounters, RingStats, ServiceInfo};
    use std::collections::{BTreeMap, HashMap, HashSet};

    /// One series line: name, labels, value.
    type Series = (String, BTreeMap<String, String>, u64);

    /// Parses `name{a="x",b="y"} value`, undoing label escapes.
    fn parse_series(line: &str) -> Series {
        let (name, rest) = match line.find('{') {
            Some(i) => (&line[..i], &line[i..]),
            None => line.split_at(line.find(' ').unwrap()),
        };
        let mut labels = BTreeMap::new();
        let mut chars = rest.chars().peekable();
        if chars.peek() == Some(&'{') {
            chars.next();
            loop {
                let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
                assert_eq!(chars.next(), Some('"'), "{line}");
                let mut value = String::new();
                loop {
                    match chars.next().unwrap() {
                        '\\' => value.push(match chars.next().unwrap() {
                            'n' => '\n',
                            c @ ('\\' | '"') => c,
                            c => panic!("bad escape \\{c} in {line}"),
                        }),
                        '"' => break,
                        '\n' => panic!("raw newline in {line}"),
                        c => value.push(c),
                    }
                }
                assert!(
                    labels.insert(key, value).is_none(),
                    "repeated label: {line}"
                );
                match chars.next() {
                    Some(',') => continue,
                    Some('}') => break,
                    c => panic!("unexpected {c:?} in {line}"),
                }
            }
        }
        let value: String = chars.collect();
        let value = value.strip_prefix(' ').unwrap();
        // A histogram's sum is in seconds: read whole.
        let value = value
            .parse()
            .unwrap_or_else(|_| value.parse::<f64>().unwrap() as u64);
        (name.to_owned(), labels, value)
    }

    /// Checks the exposition's structure; returns its series and each
    /// family's type.
    fn check(text: &str) -> (Vec<Series>, HashMap<String, String>) {
        let mut types = HashMap::new();
        let mut helps = HashSet::new();
        let mut current: Option<String> = None;
        let mut done = HashSet::new();
        let mut series = Vec::new();
        let mut seen = HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap().to_owned();
                assert!(helps.insert(name.clone()), "second HELP for {name}");
                if let Some(prev) = current.replace(name) {
                    done.insert(prev);
                }
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert_eq!(Some(name), current.as_deref(), "TYPE right after HELP");
                assert!(
                    kind == "counter" || kind == "gauge" || kind == "histogram",
                    "{line}"
                );
                assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
                assert!(types.insert(name.to_owned(), kind.to_owned()).is_none());
            } else {
                let s = parse_series(line);
                assert!(s.0.starts_with("flowgate_"), "{line}");
                let family = match types.get(current.as_deref().unwrap_or("")) {
                    Some(kind) if kind == "histogram" => ["_bucket", "_sum", "_count"]
                        .iter()
                        .find_map(|suffix| s.0.strip_suffix(suffix))
                        .unwrap_or(&s.0)
                        .to_owned(),
                    _ => s.0.clone(),
                };
                assert_eq!(
                    Some(&family),
                    current.as_ref(),
                    "series outside its family: {line}"
                );
                assert!(!done.contains(&s.0));
                assert!(seen.insert((s.0.clone(), s.1.clone())), "duplicate: {line}");
                series.push(s);
            }
        }
        assert!(!text.is_empty() && text.ends_with('\n'));
        (series, types)
    }

    /// A worker's routing counts of the one service.
    fn route_values(path_flows: u64) -> RouteCounterValues {
        RouteCounterValues {
            path_flows,
            set_closed: 1,
            ..RouteCounterValues::default()
        }
    }

    fn sample() -> MetricsSample {
        let odd = "we\"b\\x\ny".to_owned();
        let mut drops = BTreeMap::new();
        drops.insert("ttl_expired", 4);
        let worker = |w: usize, packets: u64| WorkerSample {
            worker: w,
            core: (w == 0).then_some(3),
            counters: CounterValues {
                rx_packets: 10 + packets,
                forwarded: packets,
                drops: drops.clone(),
                ..CounterValues::default()
            },
            connections: 2,
            connection_capacity: 1024,
            departures: [5, 4, 3, 0, 0, 1, 0],
            services: vec![EndpointValues {
                packets,
                bytes: 60 * packets,
                new_flows: 1,
                active_flows: 1,
            }],
            backends: vec![
                EndpointValues {
                    packets,
                    ..EndpointValues::default()
                },
                EndpointValues::default(),
            ],
            routes: vec![route_values(packets)],
            fast_path: crate::flow::FastPathValues {
                packets: 10 * packets,
                bytes: 1_000 * packets,
                entries: 2,
            },
            loop_values: (w == 1).then_some(LoopValues {
                generation: 9,
                handed_out: 3,
                handed_in: 2,
                handoff_full: 1,
                idle_polls: 40,
                polls: 52,
            }),
            ..WorkerSample::default()
        };
        MetricsSample {
            generation: 9,
            services: vec![ServiceInfo {
                id: 0,
                name: odd,
                protocol: "tcp",
                vip: "198.18.100.10:80".parse().unwrap(),
                routed: false,
            }],
            backends: vec![
                BackendInfo {
                    id: 0,
                    service: 0,
                    address: "198.18.1.11:8080".parse().unwrap(),
                    weight: 1,
                },
                BackendInfo {
                    id: 1,
                    service: 0,
                    address: "[2001:2:0:1::11]:8080".parse().unwrap(),
                    weight: 0,
                },
            ],
            workers: vec![worker(0, 5), worker(1, 7)],
            rings: vec![RingStats {
                worker: 1,
                interface: "fg-client".into(),
                queue: 2,
                fill_ring_empty: 11,
                tx_wakeups: 13,
                ..RingStats::default()
            }],
            changes: Some({
                let c = ChangeCounters::default();
                c.refused(ChangeSource::Reload, RefusalReason::Invalid);
                c.refused(ChangeSource::Apply, RefusalReason::ApplyFailed);
                c.refused(ChangeSource::Apply, RefusalReason::ApplyFailed);
                c.values()
            }),
            health: health_samples(),
            etcd: None,
            drained: None,
            fast_path: Some(vec![fast_path_interface()]),
            syn_proxy: None,
        }
    }

    /// The fast path's program on the client interface.
    fn fast_path_interface() -> crate::metrics::FastPathInterface {
        crate::metrics::FastPathInterface {
            interface: "fg-client".into(),
            on: true,
            counters: crate::xdp::XdpCounters {
                fast_tx: 4,
                fast_redirect: 6,
                fast_bytes: 1_000,
                fast_miss: 2,
                fast_up: crate::xdp::FastHandUps {
                    fin_rst: 3,
                    ..crate::xdp::FastHandUps::default()
                },
                ..crate::xdp::XdpCounters::default()
            },
        }
    }

    /// Two backends' health: one up with latencies, one whose heartbeat
    /// expired.
    fn health_samples() -> Vec<BackendHealthSample> {
        vec![
            BackendHealthSample {
                service: "web".into(),
                backend: "198.18.1.11:8080".parse().unwrap(),
                status: Status::Up,
                transitions: 2,
                latency: Some({
                    let mut h = HistogramSample {
                        sum_micros: 1_500,
                        ..HistogramSample::default()
                    };
                    h.cumulative[1..].fill(2);
                    h
                }),
            },
            BackendHealthSample {
                service: "web".into(),
                backend: "198.18.1.12:8080".parse().unwrap(),
                status: Status::Expired,
                transitions: 1,
                latency: None,
            },
        ]
    }

    #[test]
    fn backend_health_is_a_gauge_a_state_a_counter_and_a_histogram() {
        let (series, types) = check(&render(&sample(), &Snapshot::empty()));
        assert_eq!(types["flowgate_backend_check_latency_seconds"], "histogram");
        let one = [("service", "web"), ("backend", "198.18.1.11:8080")];
        let two = [("service", "web"), ("backend", "198.18.1.12:8080")];
        assert_eq!(find(&series, "flowgate_backend_up", &one)[0].2, 1);
        assert_eq!(find(&series, "flowgate_backend_up", &two)[0].2, 0);
        let expired = [
            ("service", "web"),
            ("backend", "198.18.1.12:8080"),
            ("state", "expired"),
        ];
        assert_eq!(find(&series, "flowgate_backend_state", &expired)[0].2, 1);
        assert_eq!(
            find(&series, "flowgate_backend_health_transitions_total", &one)[0].2,
            2
        );
        let le = [
            ("service", "web"),
            ("backend", "198.18.1.11:8080"),
            ("le", "0.001"),
        ];
        assert_eq!(
            find(
                &series,
                "flowgate_backend_check_latency_seconds_bucket",
                &le
            )[0]
            .2,
            2
        );
        assert_eq!(
            find(
                &series,
                "flowgate_backend_check_latency_seconds_count",
                &one
            )[0]
            .2,
            2
        );
        assert!(find(
            &series,
            "flowgate_backend_check_latency_seconds_count",
            &two
        )
        .is_empty());
    }

    fn find<'a>(series: &'a [Series], name: &str, labels: &[(&str, &str)]) -> Vec<&'a Series> {
        series
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .collect()
    }

    #[test]
    fn every_family_is_described_typed_and_grouped() {
        let text = render(&sample(), &Snapshot::empty());
        let (series, types) = check(&text);
        assert_eq!(types["flowgate_snapshot_generation"], "gauge");
        assert_eq!(types["flowgate_backend_active_flows"], "gauge");
        assert_eq!(types["flowgate_backend_packets_total"], "counter");
        assert_eq!(find(&series, "flowgate_snapshot_generation", &[])[0].2, 9);
        // Every per-worker family carries the worker label.
        for (name, labels, _) in &series {
            let global = [
                "flowgate_snapshot_generation",
                "flowgate_services",
                "flowgate_backends",
                "flowgate_backend_weight",
                "flowgate_config_changes_refused_total",
                "flowgate_backend_up",
                "flowgate_backend_state",
                "flowgate_backend_health_transitions_total",
                "flowgate_backend_check_latency_seconds_bucket",
                "flowgate_backend_check_latency_seconds_sum",
                "flowgate_backend_check_latency_seconds_count",
            ];
            if name.starts_with("flowgate_fast_path_") && labels.contains_key("interface") {
                continue; // per interface: the XDP program's own
            }
            assert_eq!(
                !global.contains(&name.as_str()),
                labels.contains_key("worker"),
                "{name}"
            );
        }
    }

    /// [`sample`] with refusals on each worker.
    fn with_refusals(mut sample: MetricsSample) -> MetricsSample {
        for (w, worker) in sample.workers.iter_mut().enumerate() {
            worker.admission.client_evictions = w as u64;
            worker.refusals = vec![AdmissionValues {
                service_rate: 5 + w as u64,
                backend_cap: 2,
                resets_sent: 1,
                ..AdmissionValues::default()
            }];
        }
        sample
    }

    #[test]
    fn connection_departures_are_counted_per_worker_and_reason() {
        let text = render(&sample(), &Snapshot::empty());
        let (series, types) = check(&text);
        let name = "flowgate_connection_departures_total";
        assert_eq!(types[name], "counter");
        let value = |reason: &str| {
            let found = find(&series, name, &[("worker", "1"), ("reason", reason)]);
            assert_eq!(found.len(), 1, "{reason}");
            found[0].2
        };
        assert_eq!(value("removed"), 5);
        assert_eq!(value("expired"), 4);
        assert_eq!(value("evicted"), 3);
        assert_eq!(value("reply_conflict"), 1);
        assert_eq!(value("refused"), 0);
        let reasons = find(&series, name, &[]).len();
        assert_eq!(reasons % Departure::ALL.len(), 0, "every reason per worker");
    }

    #[test]
    fn refusals_are_counted_per_worker_service_and_reason() {
        let text = render(&with_refusals(sample()), &Snapshot::empty());
        let (series, types) = check(&text);
        let name = "flowgate_service_new_flows_refused_total";
        assert_eq!(types[name], "counter");
        let value = |worker: &str, reason: &str| {
            let found = find(&series, name, &[("worker", worker), ("reason", reason)]);
            assert_eq!(found.len(), 1, "{worker} {reason}");
            found[0].2
        };
        assert_eq!(value("0", "service_rate"), 5);
        assert_eq!(value("1", "service_rate"), 6);
        assert_eq!(value("1", "backend_cap"), 2);
        assert_eq!(value("1", "client_rate"), 0);
        let resets = find(&series, "flowgate_service_over_limit_resets_total", &[]);
        assert_eq!(resets.iter().map(|s| s.2).sum::<u64>(), 2);
        let evictions = find(
            &series,
            "flowgate_client_table_evictions_total",
            &[("worker", "1")],
        );
        assert_eq!(evictions[0].2, 1);
    }

    #[test]
    fn routing_counters_are_per_service_and_worker_for_services_that_have_them() {
        let mut sample = sample();
        let text = render(&sample, &Snapshot::empty());
        let (series, types) = check(&text);
        for (suffix, _, _) in ROUTE_FAMILIES {
            let name = format!("flowgate_service_route_{suffix}_total");
            assert_eq!(types[&name], "counter");
            assert_eq!(find(&series, &name, &[]).len(), 2, "{name}: one per worker");
        }
        let paths = find(
            &series,
            "flowgate_service_route_path_flows_total",
            &[("worker", "1")],
        );
        assert_eq!(paths[0].2, sample.workers[1].routes[0].path_flows);
        let closed = find(&series, "flowgate_service_route_set_closed_total", &[]);
        assert!(closed.iter().all(|s| s.2 == 1));
        // A service that routes by nothing and has counted nothing has no
        // series; one that routes by client has them while zero.
        for w in &mut sample.workers {
            w.routes[0] = RouteCounterValues::default();
        }
        let (series, _) = check(&render(&sample, &Snapshot::empty()));
        assert!(find(&series, "flowgate_service_route_fallbacks_total", &[]).is_empty());
        sample.services[0].routed = true;
        let (series, _) = check(&render(&sample, &Snapshot::empty()));
        assert_eq!(
            find(&series, "flowgate_service_route_fallbacks_total", &[]).len(),
            2
        );
    }

    #[test]
    fn label_values_are_escaped_and_read_back() {
        let text = render(&sample(), &Snapshot::empty());
        assert!(text.contains(r#"service="we\"b\\x\ny""#), "{text}");
        let (series, _) = check(&text);
        let odd = "we\"b\\x\ny";
        let per_service = find(&series, "flowgate_service_bytes_total", &[("service", odd)]);
        assert_eq!(per_service.len(), 2);
        let w1 = find(&series, "flowgate_service_bytes_total", &[("worker", "1")]);
        assert_eq!(w1[0].2, 420);
    }

    #[test]
    fn series_have_the_expected_label_sets() {
        let (series, _) = check(&render(&sample(), &Snapshot::empty()));
        let labels_of = |name: &str| -> HashSet<Vec<String>> {
            find(&series, name, &[])
                .iter()
                .map(|(_, l, _)| l.keys().cloned().collect())
                .collect()
        };
        let one = |keys: &[&str]| -> HashSet<Vec<String>> {
            [keys.iter().map(|k| k.to_string()).collect()].into()
        };
        assert_eq!(labels_of("flowgate_rx_packets_total"), one(&["worker"]));
        assert_eq!(
            labels_of("flowgate_dropped_packets_total"),
            one(&["reason", "worker"])
        );
        assert_eq!(labels_of("flowgate_worker_info"), one(&["core", "worker"]));
        assert_eq!(
            labels_of("flowgate_service_active_flows"),
            one(&["service", "worker"])
        );
        assert_eq!(
            labels_of("flowgate_backend_new_flows_total"),
            one(&["backend", "service", "worker"])
        );
        assert_eq!(
            labels_of("flowgate_xsk_fill_ring_empty_total"),
            one(&["interface", "queue", "worker"])
        );
        // Every reason, zero or not, for each worker.
        let drops = find(
            &series,
            "flowgate_dropped_packets_total",
            &[("worker", "0")],
        );
        assert_eq!(drops.len(), DropReason::COUNT);
        let ttl = find(
            &series,
            "flowgate_dropped_packets_total",
            &[("worker", "0"), ("reason", "ttl_expired")],
        );
        assert_eq!(ttl[0].2, 4);
        let v6 = find(
            &series,
            "flowgate_backend_weight",
            &[("backend", "[2001:2:0:1::11]:8080")],
        );
        assert_eq!(v6[0].2, 0);
        let cores = find(&series, "flowgate_worker_info", &[("core", "none")]);
        assert_eq!(cores[0].1["worker"], "1");
        let ring = find(
            &series,
            "flowgate_xsk_fill_ring_empty_total",
            &[("queue", "2")],
        );
        assert_eq!(
            (ring[0].1["interface"].as_str(), ring[0].2),
            ("fg-client", 11)
        );
        let wakeups = find(&series, "flowgate_xsk_tx_wakeups_total", &[("queue", "2")]);
        assert_eq!(wakeups[0].2, 13, "the port's own counters too");
        assert_eq!(
            labels_of("flowgate_xsk_wakeup_errors_total"),
            one(&["interface", "queue", "worker"])
        );
    }

    #[test]
    fn worker_loops_are_reported_for_the_workers_that_share_them() {
        let (series, types) = check(&render(&sample(), &Snapshot::empty()));
        assert_eq!(types["flowgate_handed_out_packets_total"], "counter");
        assert_eq!(types["flowgate_worker_snapshot_generation"], "gauge");
        let handed = find(&series, "flowgate_handed_out_packets_total", &[]);
        assert_eq!(handed.len(), 1);
        assert_eq!((handed[0].1["worker"].as_str(), handed[0].2), ("1", 3));
        assert_eq!(types["flowgate_polls_total"], "counter");
        let polls = find(&series, "flowgate_polls_total", &[]);
        assert_eq!(polls.len(), 1);
        assert_eq!((polls[0].1["worker"].as_str(), polls[0].2), ("1", 52));
        let full = find(
            &series,
            "flowgate_dropped_packets_total",
            &[("reason", "handoff_full")],
        );
        assert_eq!((full.len(), full[0].2), (1, 1));
        let drops = find(
            &series,
            "flowgate_dropped_packets_total",
            &[("worker", "1")],
        );
        assert_eq!(drops.len(), DropReason::COUNT + 1);
    }

    #[test]
    fn refused_changes_are_reported_for_every_source_and_reason() {
        let (series, types) = check(&render(&sample(), &Snapshot::empty()));
        let name = "flowgate_config_changes_refused_total";
        assert_eq!(types[name], "counter");
        let all = find(&series, name, &[]);
        // Every pair from the start, so that a first refusal is a rise.
        assert_eq!(
            all.len(),
            ChangeSource::ALL.len() * RefusalReason::ALL.len()
        );
        for (_, labels, _) in &all {
            assert_eq!(labels.keys().collect::<Vec<_>>(), ["reason", "source"]);
        }
        let at = |source: &str, reason: &str| {
            find(&series, name, &[("source", source), ("reason", reason)])[0].2
        };
        assert_eq!(at("reload", "invalid"), 1);
        assert_eq!(at("apply", "apply_failed"), 2);
        assert_eq!(at("edit", "not_found"), 0);
        assert_eq!(all.iter().map(|s| s.2).sum::<u64>(), 3);
    }

    #[test]
    fn the_drain_is_a_gauge_when_the_control_state_reports_it() {
        let (_, types) = check(&render(&sample(), &Snapshot::empty()));
        assert!(!types.contains_key("flowgate_fleet_drained"));
        for drained in [false, true] {
            let reported = MetricsSample {
                drained: Some(drained),
                ..sample()
            };
            let (series, types) = check(&render(&reported, &Snapshot::empty()));
            assert_eq!(types["flowgate_fleet_drained"], "gauge");
            let value = find(&series, "flowgate_fleet_drained", &[])[0].2;
            assert_eq!(value, u64::from(drained));
        }
    }

    #[test]
    fn the_syn_proxy_counters_are_counters_when_the_xdp_program_runs() {
        let (_, types) = check(&render(&sample(), &Snapshot::empty()));
        assert!(!types.contains_key("flowgate_syn_proxy_cookies_sent_total"));
        assert_eq!(types["flowgate_syn_proxy_connections_total"], "counter");
        let with = MetricsSample {
            syn_proxy: Some(crate::synproxy::SynProxyCounters {
                cookies_sent: 7,
                cookies_valid: 3,
                cookies_invalid: 2,
                ..Default::default()
            }),
            ..sample()
        };
        let (series, types) = check(&render(&with, &Snapshot::empty()));
        for (name, value) in [
            ("flowgate_syn_proxy_cookies_sent_total", 7),
            ("flowgate_syn_proxy_cookies_valid_total", 3),
            ("flowgate_syn_proxy_cookies_invalid_total", 2),
            ("flowgate_syn_proxy_marks_forged_total", 0),
        ] {
            assert_eq!(types[name], "counter");
            assert_eq!(find(&series, name, &[])[0].2, value, "{name}");
        }
    }

    #[test]
    fn a_held_etcd_key_is_a_series_naming_it_and_what_is_wrong() {
        let holding = MetricsSample {
            etcd: Some(flowgate_api::EtcdStatus {
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
            }),
            ..sample()
        };
        let (series, types) = check(&render(&holding, &Snapshot::empty()));
        assert_eq!(types["flowgate_etcd_held_keys"], "gauge");
        assert_eq!(find(&series, "flowgate_etcd_held_keys", &[])[0].2, 1);
        assert_eq!(find(&series, "flowgate_etcd_revision", &[])[0].2, 41);
        assert_eq!(find(&series, "flowgate_etcd_seen_revision", &[])[0].2, 42);
        assert_eq!(find(&series, "flowgate_etcd_connected", &[])[0].2, 1);
        let held = find(
            &series,
            "flowgate_etcd_held_key_info",
            &[
                ("key", "/fg/v1/rules/services/web"),
                ("revision", "42"),
                (
                    "problem",
                    "port 0 of service \"web\" is out of range 1..=65535",
                ),
            ],
        );
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].2, 1);
        // A gateway without [etcd] has none of them.
        let (series, _) = check(&render(&sample(), &Snapshot::empty()));
        assert!(find(&series, "flowgate_etcd_held_keys", &[]).is_empty());
    }

    #[test]
    fn without_the_control_states_counts_refusals_have_no_series() {
        let sample = MetricsSample {
            changes: None,
            ..sample()
        };
        let (series, types) = check(&render(&sample, &Snapshot::empty()));
        assert_eq!(types["flowgate_config_changes_refused_total"], "counter");
        assert!(find(&series, "flowgate_config_changes_refused_total", &[]).is_empty());
    }

    #[test]
    fn the_fast_path_is_shown_per_worker_and_per_interface_by_reason() {
        let (series, types) = check(&render(&sample(), &Snapshot::empty()));
        assert_eq!(types["flowgate_fast_path_entries"], "gauge");
        let one = |name: &str, labels: &[(&str, &str)]| {
            let found = find(&series, name, labels);
            assert_eq!(found.len(), 1, "{name} {labels:?}");
            found[0].2
        };
        assert_eq!(
            one("flowgate_fast_path_packets_total", &[("worker", "1")]),
            70
        );
        assert_eq!(
            one("flowgate_fast_path_bytes_total", &[("worker", "0")]),
            5_000
        );
        let client = ("interface", "fg-client");
        assert_eq!(one("flowgate_fast_path_on", &[client]), 1);
        assert_eq!(
            one("flowgate_fast_path_forwarded_packets_total", &[client]),
            10
        );
        assert_eq!(
            one("flowgate_fast_path_forwarded_bytes_total", &[client]),
            1_000
        );
        let up = "flowgate_fast_path_handed_up_total";
        assert_eq!(one(up, &[client, ("reason", "miss")]), 2);
        assert_eq!(one(up, &[client, ("reason", "fin_rst")]), 3);
        assert_eq!(one(up, &[client, ("reason", "icmp_error")]), 0);
        assert_eq!(one(up, &[client, ("reason", "syn_proxy")]), 0);
        assert_eq!(find(&series, up, &[client]).len(), 11, "every reason");
    }

    #[test]
    fn help_text_is_escaped() {
        let mut out = Exposition::default();
        out.family("flowgate_x", Kind::Gauge, "a\\b\nc");
        assert_eq!(
            out.text,
            "# HELP flowgate_x a\\\\b\\nc\n# TYPE flowgate_x gauge\n"
        );
    }

    #[test]
    fn an_empty_sample_still_describes_every_family() {
        let (series, types) = check(&render(&MetricsSample::default(), &Snapshot::empty()));
        let (_, full) = check(&render(&sample(), &Snapshot::empty()));
        assert_eq!(types, full);
        assert_eq!(series.len(), 3, "only the gateway-wide gauges have series");
    }
}
