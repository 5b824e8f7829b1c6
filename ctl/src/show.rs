//! Text output: aligned tables and one line per change.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use flowgate_api::{
    BackendHealth, BackendView, BackendsReply, ChangeReport, ConfigDiff, FlowsReply,
    HeartbeatReply, ServiceStats, ServiceView, ServicesReply, StatsReport, StatusReply,
    TrafficCounters,
};

/// Rows as columns aligned by the widest cell, two spaces apart.
pub fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(&widths) {
            let _ = write!(line, "{cell:<width$}  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn endpoint(address: IpAddr, port: u16) -> String {
    SocketAddr::new(address, port).to_string()
}

fn label(value: &Option<String>) -> String {
    value.clone().unwrap_or_else(|| "-".into())
}

fn weight(w: u32) -> String {
    if w == 0 {
        "0 (drained)".into()
    } else {
        w.to_string()
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// One line per difference.
pub fn diff_lines(d: &ConfigDiff) -> Vec<String> {
    let mut lines = Vec::with_capacity(d.change_count());
    for s in &d.services_added {
        lines.push(format!(
            "+ service {} ({} {}, {}, {})",
            s.name,
            s.protocol,
            endpoint(s.vip, s.port),
            s.scheduler,
            plural(s.backends, "backend", "backends")
        ));
    }
    for s in &d.services_removed {
        lines.push(format!(
            "- service {} ({} {}, {}, {})",
            s.name,
            s.protocol,
            endpoint(s.vip, s.port),
            s.scheduler,
            plural(s.backends, "backend", "backends")
        ));
    }
    for c in &d.services_changed {
        lines.push(format!(
            "~ service {}: {} {} -> {}",
            c.service, c.field, c.from, c.to
        ));
    }
    for b in &d.backends_added {
        lines.push(format!(
            "+ backend {} {} weight {}",
            b.service,
            endpoint(b.address, b.port),
            weight(b.weight)
        ));
    }
    for b in &d.backends_removed {
        lines.push(format!(
            "- backend {} {} weight {}",
            b.service,
            endpoint(b.address, b.port),
            weight(b.weight)
        ));
    }
    for r in &d.backends_reweighted {
        lines.push(format!(
            "~ backend {} {} weight {} -> {}",
            r.service,
            endpoint(r.address, r.port),
            r.from,
            weight(r.to)
        ));
    }
    for r in &d.backends_relabelled {
        lines.push(format!(
            "~ backend {} {} {} {} -> {}",
            r.service,
            endpoint(r.address, r.port),
            r.label,
            label(&r.from),
            label(&r.to)
        ));
    }
    for c in &d.backends_changed {
        lines.push(format!(
            "~ backend {} {} {} {} -> {}",
            c.service,
            endpoint(c.address, c.port),
            c.field,
            label(&c.from),
            label(&c.to)
        ));
    }
    for c in &d.classes_removed {
        lines.push(format!("- class {}", class_line(c)));
    }
    for c in &d.classes_added {
        lines.push(format!("+ class {}", class_line(c)));
    }
    for s in &d.settings_changed {
        lines.push(format!("~ [{s}] changed"));
    }
    lines
}

/// `PREFIX set S zone Z` (`-` for what the class has not).
fn class_line(c: &flowgate_api::ClassView) -> String {
    format!(
        "{} set {} zone {}",
        c.prefix,
        c.set.as_deref().unwrap_or("-"),
        c.zone.as_deref().unwrap_or("-")
    )
}

/// `class list`: one class a line.
pub fn classes(reply: &flowgate_api::ClassesReply) -> String {
    if reply.classes.is_empty() {
        return "no client classes\n".to_owned();
    }
    let width = |f: fn(&flowgate_api::ClassView) -> usize, title: &str| {
        reply
            .classes
            .iter()
            .map(f)
            .max()
            .unwrap_or(0)
            .max(title.len())
    };
    let prefix = width(|c| c.prefix.len(), "PREFIX");
    let set = width(|c| c.set.as_ref().map_or(1, String::len), "SET");
    let mut out = format!("{:prefix$}  {:set$}  ZONE\n", "PREFIX", "SET");
    for c in &reply.classes {
        out.push_str(&format!(
            "{:prefix$}  {:set$}  {}\n",
            c.prefix,
            c.set.as_deref().unwrap_or("-"),
            c.zone.as_deref().unwrap_or("-")
        ));
    }
    out
}

/// A change report: its differences, then what happened.
/// `path list`: one path a line.
pub fn paths(reply: &flowgate_api::PathsReply) -> String {
    if reply.paths.is_empty() {
        return format!("service {} has no paths\n", reply.service);
    }
    let width = reply
        .paths
        .iter()
        .map(|p| p.client.len())
        .max()
        .unwrap_or(0)
        .max("CLIENT".len());
    let mut out = format!("{:width$}  BACKENDS\n", "CLIENT");
    for path in &reply.paths {
        out.push_str(&format!(
            "{:width$}  {}\n",
            path.client,
            path.backends.join(" ")
        ));
    }
    out
}

pub fn change(report: &ChangeReport) -> String {
    let mut out = String::new();
    for line in diff_lines(&report.diff) {
        out.push_str(&line);
        out.push('\n');
    }
    let n = report.diff.change_count();
    let summary = if report.dry_run {
        format!(
            "dry run: {} would apply; nothing changed (generation {} runs)",
            plural(n, "change", "changes"),
            report.generation
        )
    } else if report.applied {
        format!(
            "applied {}: generation {}",
            plural(n, "change", "changes"),
            report.generation
        )
    } else {
        format!("no change (generation {} runs)", report.generation)
    };
    out.push_str(&summary);
    out.push('\n');
    for warning in &report.warnings {
        out.push_str("warning: ");
        out.push_str(warning);
        out.push('\n');
    }
    out
}

/// `status`.
pub fn status(s: &StatusReply) -> String {
    let d = &s.dataplane;
    let mut out = format!(
        "flowgate {}\ngeneration  {}\nuptime      {}\nrules       {}{}, {}, {}\n",
        d.version,
        d.generation,
        duration(d.uptime_s),
        s.origin,
        match s.edits_since_load {
            0 => String::new(),
            n => format!(" + {}", plural(n as usize, "API edit", "API edits")),
        },
        plural(s.services, "service", "services"),
        plural(s.backends, "backend", "backends"),
    );
    out.push_str(&match &d.fast_path {
        None => "fast path   off\n".to_owned(),
        Some(f) if f.forwarding_on.is_empty() => format!(
            "fast path   xdp, forwarding on no interface (none can take XDP frames): \
             {} entries, {} packets forwarded, {} handed up\n",
            f.entries, f.forwarded_packets, f.handed_up
        ),
        Some(f) => format!(
            "fast path   xdp on {}: {} entries, {} packets forwarded, {} handed up\n",
            f.forwarding_on.join(" "),
            f.entries,
            f.forwarded_packets,
            f.handed_up
        ),
    });
    out.push_str(&syn_proxy_status(d));
    out.push_str(if s.drained {
        "drained     yes: no VIP announced by BGP (flowgatectl fleet undrain announces them)\n"
    } else {
        "drained     no\n"
    });
    let mut rows = vec![vec!["WORKER".into(), "CORE".into(), "QUEUES".into()]];
    for w in &d.workers {
        rows.push(vec![
            w.id.to_string(),
            w.core.map_or("-".into(), |c| c.to_string()),
            w.queues.join(" "),
        ]);
    }
    out.push('\n');
    out.push_str(&table(&rows));
    let mut rows = vec![vec![
        "PORT".into(),
        "INTERFACE".into(),
        "IFINDEX".into(),
        "MAC".into(),
        "XDP".into(),
        "AF_XDP".into(),
        "QUEUES".into(),
        "NIC QUEUES".into(),
    ]];
    for i in &d.interfaces {
        rows.push(vec![
            i.port.to_string(),
            i.name.clone(),
            i.ifindex.map_or("-".into(), |x| x.to_string()),
            i.mac.clone(),
            i.xdp_mode.clone(),
            i.af_xdp_mode.clone(),
            i.queues.to_string(),
            i.nic_queues.map_or("-".into(), |n| n.to_string()),
        ]);
    }
    out.push('\n');
    out.push_str(&table(&rows));
    if let Some(h) = &s.health {
        out.push_str(&format!(
            "\nhealth      {} up, {} down, {} draining, {} expired ({} checked)\n",
            h.up, h.down, h.draining, h.expired, h.checked
        ));
        if !h.not_up.is_empty() {
            let mut rows = vec![[
                "SERVICE",
                "BACKEND",
                "STATE",
                "SINCE",
                "LAST CHECK",
                "LATENCY",
            ]
            .map(String::from)
            .to_vec()];
            for b in &h.not_up {
                let mut row = vec![b.service.clone(), endpoint(b.address, b.port)];
                row.extend(health_cells(Some(&b.health)));
                rows.push(row);
            }
            out.push_str(&table(&rows));
        }
    }
    if let Some(e) = &s.etcd {
        out.push_str(&etcd_status(e));
    }
    out
}

/// `status`'s lines about the rules from etcd: where they stand, and each
/// key held back — which key, what is wrong, at which revision.
fn etcd_status(e: &flowgate_api::EtcdStatus) -> String {
    let mut out = format!(
        "
etcd        {}, revision {} (seen {}), generation {}, {} held
",
        e.health,
        e.revision,
        e.seen_revision,
        e.generation,
        e.held.len()
    );
    if let Some(error) = &e.last_error {
        out.push_str(&format!(
            "etcd error  {error}
"
        ));
    }
    if !e.held.is_empty() {
        let mut rows = vec![["HELD KEY", "REVISION", "PROBLEM"]
            .map(String::from)
            .to_vec()];
        for held in &e.held {
            rows.push(vec![
                held.key.clone(),
                held.revision.to_string(),
                held.problems.join("; "),
            ]);
        }
        out.push_str(&table(&rows));
    }
    out
}

/// `1d 2h 3m 4s`, leaving out leading zero units.
pub fn duration(seconds: u64) -> String {
    let (d, h, m, s) = (
        seconds / 86_400,
        seconds / 3600 % 24,
        seconds / 60 % 60,
        seconds % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m {s}s"),
        _ => format!("{d}d {h}h {m}m {s}s"),
    }
}

/// `service list`.
pub fn services(reply: &ServicesReply) -> String {
    let mut rows = vec![vec![
        "NAME".into(),
        "PROTO".into(),
        "VIP:PORT".into(),
        "SCHEDULER".into(),
        "TABLE".into(),
        "BACKENDS".into(),
    ]];
    for s in &reply.services {
        let drained = s.backends.iter().filter(|b| b.weight == 0).count();
        rows.push(vec![
            s.name.clone(),
            s.protocol.clone(),
            endpoint(s.vip, s.port),
            s.scheduler.clone(),
            s.maglev_table_size.to_string(),
            match drained {
                0 => s.backends.len().to_string(),
                d => format!("{} ({d} drained)", s.backends.len()),
            },
        ]);
    }
    table(&rows)
}

/// `explain`: the decision, stage by stage (the reply's own text, which
/// `flowgate explain` prints too).
pub fn explain(e: &flowgate_api::ExplainReply) -> String {
    e.to_string()
}

/// `backend list`.
pub fn backends(reply: &BackendsReply) -> String {
    table(&backend_rows(&reply.backends))
}

fn backend_rows(backends: &[BackendView]) -> Vec<Vec<String>> {
    // Health columns when the data plane reports health.
    let health = backends.iter().any(|b| b.health.is_some());
    let mut head: Vec<String> = ["BACKEND", "WEIGHT", "ZONE", "SET", "GROUP"]
        .map(String::from)
        .to_vec();
    if health {
        head.extend(["STATE", "SINCE", "LAST CHECK", "LATENCY"].map(String::from));
    }
    let mut rows = vec![head];
    for b in backends {
        let mut row = vec![
            endpoint(b.address, b.port),
            weight(b.weight),
            label(&b.zone),
            label(&b.set),
            label(&b.group),
        ];
        if health {
            row.extend(health_cells(b.health.as_ref()));
        }
        rows.push(row);
    }
    rows
}

/// STATE, SINCE, LAST CHECK and LATENCY of a backend.
fn health_cells(health: Option<&BackendHealth>) -> [String; 4] {
    let Some(h) = health else {
        return ["-".into(), "-".into(), "-".into(), "-".into()];
    };
    let since = h
        .since_ms
        .map_or_else(|| "-".to_owned(), |ms| format!("{} ago", millis(ms)));
    let (last, latency) = match &h.last_check {
        Some(c) => (
            format!("{} ({} ago)", c.result, millis(c.age_ms)),
            micros(c.latency_us),
        ),
        None if h.check.is_none() => ("not checked".to_owned(), "-".to_owned()),
        None => ("pending".to_owned(), "-".to_owned()),
    };
    [h.state.clone(), since, last, latency]
}

/// Microseconds as `850us`, `1.2ms`, `2.0s`.
fn micros(us: u64) -> String {
    match us {
        0..=999 => format!("{us}us"),
        1000..=999_999 => format!("{:.1}ms", us as f64 / 1000.0),
        _ => format!("{:.1}s", us as f64 / 1_000_000.0),
    }
}

/// `backend heartbeat`: the backend's new deadline.
pub fn heartbeat(h: &HeartbeatReply) -> String {
    format!(
        "heartbeat: backend {} of service {} stays alive for {} (heartbeat_ttl {})\n",
        endpoint(h.address, h.port),
        h.service,
        millis(h.expires_in_ms),
        millis(h.ttl_ms)
    )
}

/// `fleet drain` and `fleet undrain`: where the gateway stands now.
pub fn drain(d: &flowgate_api::DrainReply) -> String {
    match (d.drained, d.changed) {
        (true, true) => "drained: every VIP's BGP announcement withdrawn; flows that still \
                         arrive are forwarded\n"
            .into(),
        (true, false) => "already drained: no VIP announced by BGP\n".into(),
        (false, true) => "undrained: the VIPs offered are announced by BGP again\n".into(),
        (false, false) => "not drained: nothing to undo\n".into(),
    }
}

/// Milliseconds as `850ms`, `2.5s`, `1m 30s`.
pub fn millis(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms}ms"),
        1000..=59_999 if ms.is_multiple_of(1000) => format!("{}s", ms / 1000),
        1000..=59_999 => format!("{:.1}s", ms as f64 / 1000.0),
        _ => duration(ms / 1000),
    }
}

/// ipvsadm-style `-L -n`.
pub fn ipvs_list(services: &[ServiceView]) -> String {
    let mut rows = vec![
        vec![
            "Prot LocalAddress:Port".into(),
            "Scheduler".into(),
            "Name".into(),
        ],
        vec!["  -> RemoteAddress:Port".into(), "Weight".into()],
    ];
    for s in services {
        rows.push(vec![
            format!(
                "{:<4} {}",
                s.protocol.to_uppercase(),
                endpoint(s.vip, s.port)
            ),
            s.scheduler.clone(),
            s.name.clone(),
        ]);
        for b in &s.backends {
            rows.push(vec![
                format!("  -> {}", endpoint(b.address, b.port)),
                b.weight.to_string(),
            ]);
        }
    }
    table(&rows)
}

/// `flows`.
pub fn flows(reply: &FlowsReply) -> String {
    let mut rows = vec![vec![
        "WORKER".into(),
        "SERVICE".into(),
        "PROTO".into(),
        "CLIENT".into(),
        "VIP".into(),
        "BACKEND".into(),
        "STATE".into(),
        "IDLE".into(),
    ]];
    for f in &reply.flows {
        rows.push(vec![
            f.worker.to_string(),
            label(&f.service),
            f.protocol.clone(),
            f.client.to_string(),
            f.vip.to_string(),
            f.backend.to_string(),
            f.state.clone(),
            format!("{:.1}s", f.idle_ms as f64 / 1000.0),
        ]);
    }
    let mut out = table(&rows);
    let _ = writeln!(out, "{}", plural(reply.flows.len(), "flow", "flows"));
    out
}

/// `stats`: counters since start.
pub fn stats(r: &StatsReport) -> String {
    let mut rows = vec![vec![
        "SERVICE / BACKEND".into(),
        "PACKETS".into(),
        "BYTES".into(),
        "ACTIVE".into(),
        "NEW FLOWS".into(),
    ]];
    for s in &r.services {
        rows.push(vec![
            s.name.clone(),
            s.packets.to_string(),
            s.bytes.to_string(),
            s.active_flows.to_string(),
            s.new_flows.to_string(),
        ]);
        for b in &s.backends {
            rows.push(vec![
                format!("  {}", endpoint(b.address, b.port)),
                b.packets.to_string(),
                b.bytes.to_string(),
                b.active_flows.to_string(),
                b.new_flows.to_string(),
            ]);
        }
    }
    let mut out = format!("generation {}\n\n", r.generation);
    out.push_str(&table(&rows));
    out.push_str(&refusals(r));

    out.push_str(&routing(r));
    let mut rows = vec![worker_header(
        "RX PKTS",
        "TX PKTS",
        "PASSED",
        "NEW FLOWS",
        "DROPPED",
    )];
    for w in &r.workers {
        rows.push(worker_row(
            &w.worker.to_string(),
            w.core,
            &w.counters,
            |v| v.to_string(),
        ));
    }
    rows.push(worker_row("all", None, &r.totals, |v| v.to_string()));
    out.push('\n');
    out.push_str(&table(&rows));
    out.push_str(&drops(
        &r.totals
            .drops
            .iter()
            .map(|(k, v)| (k.clone(), *v as f64))
            .collect::<Vec<_>>(),
        "",
    ));
    out.push_str(&fast_path(r));
    out.push_str(&syn_proxy(r));
    out
}

/// `status`' SYN proxy line (nothing when the daemon runs no XDP
/// program).
fn syn_proxy_status(d: &flowgate_api::StatusReport) -> String {
    let Some(p) = &d.syn_proxy else {
        return String::new();
    };
    let services = if p.services.is_empty() {
        "no service".to_owned()
    } else {
        p.services.join(", ")
    };
    format!(
        "syn proxy   {services}: {} cookies sent, {} refused, {} connections opened\n",
        p.cookies_sent, p.refused, p.connections
    )
}

/// `stats`' SYN proxy: what its XDP half answered, let up and refused,
/// and the connections the workers opened for it (nothing when the
/// daemon runs no XDP program).
fn syn_proxy(r: &StatsReport) -> String {
    let Some(p) = &r.syn_proxy else {
        return String::new();
    };
    format!(
        "
syn proxy: {} cookies sent; {} valid ACKs ({} from zero-window probes); \
         {} refused ({} invalid cookies, {} SYNs, {} forged marks); {} unchecked (auto)\n\
         syn proxy connections: {} opened, {} established\n",
        p.cookies_sent,
        p.cookies_valid,
        p.probes_valid,
        p.refused(),
        p.cookies_invalid,
        p.syns_refused,
        p.marks_forged,
        p.acks_unchecked,
        p.connections,
        p.established,
    )
}

/// `stats`' kernel fast path: what the XDP program forwarded itself, per
/// worker and in all, and what it handed up by reason (nothing when the
/// daemon runs without it).
fn fast_path(r: &StatsReport) -> String {
    let Some(f) = &r.fast_path else {
        return String::new();
    };
    let mut out = format!(
        "\nfast path: {} packets, {} bytes forwarded by XDP; {} entries; \
         {} handed up\n",
        f.forwarded_packets,
        f.forwarded_bytes,
        f.entries,
        f.handed_up_total()
    );
    let mut rows = vec![["WORKER", "FAST PKTS", "FAST BYTES", "ENTRIES"]
        .map(String::from)
        .to_vec()];
    for w in &r.workers {
        if let Some(fp) = &w.fast_path {
            rows.push(vec![
                w.worker.to_string(),
                fp.packets.to_string(),
                fp.bytes.to_string(),
                fp.entries.to_string(),
            ]);
        }
    }
    out.push_str(&table(&rows));
    let up: Vec<String> = f
        .handed_up
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(reason, n)| format!("{reason} {n}"))
        .collect();
    if !up.is_empty() {
        out.push_str(&format!("handed up: {}\n", up.join(", ")));
    }
    out
}

/// The services whose limits refused new flows, by reason (nothing when
/// none did).
fn refusals(r: &StatsReport) -> String {
    let refused: Vec<_> = r
        .services
        .iter()
        .filter(|s| s.refused.total() > 0 || s.refused.resets_sent > 0)
        .collect();
    if refused.is_empty() {
        return String::new();
    }
    let mut rows = vec![[
        "REFUSED NEW FLOWS",
        "SERVICE RATE",
        "CLIENT RATE",
        "BACKEND CAP",
        "RESETS",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect::<Vec<_>>()];
    for s in refused {
        let v = &s.refused;
        rows.push(vec![
            s.name.clone(),
            v.service_rate.to_string(),
            v.client_rate.to_string(),
            v.backend_cap.to_string(),
            v.resets_sent.to_string(),
        ]);
    }
    format!("\n{}", table(&rows))
}

/// The routing counters of the services that have them, a table; empty
/// when none has.
fn routing(r: &StatsReport) -> String {
    let routed: Vec<_> = r
        .services
        .iter()
        .filter_map(|s| s.routing.map(|v| (s, v)))
        .collect();
    if routed.is_empty() {
        return String::new();
    }
    let mut rows = vec![[
        "ROUTING",
        "PATH",
        "PATH FALLBACK",
        "SET",
        "SET CLOSED",
        "CANARY",
        "FIRST CHOICE",
        "FALLBACK",
        "UNPLACED",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect::<Vec<_>>()];
    for (s, v) in routed {
        let mut row = vec![s.name.clone()];
        row.extend(
            [
                v.path_flows,
                v.path_fallbacks,
                v.set_flows,
                v.set_closed,
                v.canary_flows,
                v.first_choice,
                v.fallbacks,
                v.unplaced,
            ]
            .iter()
            .map(u64::to_string),
        );
        rows.push(row);
    }
    format!("\n{}", table(&rows))
}

fn worker_header(rx: &str, tx: &str, passed: &str, new: &str, dropped: &str) -> Vec<String> {
    ["WORKER", "CORE", rx, tx, passed, "ACTIVE", new, dropped]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn worker_row(
    name: &str,
    core: Option<usize>,
    c: &TrafficCounters,
    value: impl Fn(u64) -> String,
) -> Vec<String> {
    vec![
        name.into(),
        core.map_or("-".into(), |c| c.to_string()),
        value(c.rx_packets),
        value(c.tx_packets),
        value(c.passed),
        c.active_flows.to_string(),
        value(c.new_flows),
        value(c.dropped()),
    ]
}

fn drops(by_reason: &[(String, f64)], unit: &str) -> String {
    if by_reason.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = by_reason
        .iter()
        .map(|(reason, n)| format!("{reason} {}{unit}", number(*n)))
        .collect();
    format!("drops: {}\n", parts.join(", "))
}

/// A rate with one decimal below 100, whole above.
fn number(x: f64) -> String {
    if x < 100.0 && x.fract() != 0.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.0}")
    }
}

/// `stats --watch`: rates between two samples of the same daemon.
pub fn rates(before: &StatsReport, after: &StatsReport, fallback_seconds: f64) -> String {
    let ms = after.uptime_ms.saturating_sub(before.uptime_ms);
    let seconds = if ms > 0 {
        ms as f64 / 1000.0
    } else {
        fallback_seconds.max(1e-3)
    };
    let per = PerSecond(seconds);
    let mut out = format!(
        "generation {}, rates over {seconds:.1}s\n\n",
        after.generation
    );
    out.push_str(&table(&service_rate_rows(before, after, per)));
    out.push_str(&refusal_rates(before, after, per));
    out.push('\n');
    out.push_str(&table(&worker_rate_rows(before, after, per)));
    out.push_str(&drops(&drop_rates(before, after, per), "/s"));
    out.push_str(&syn_proxy_rates(before, after, per));
    out
}

/// `syn proxy: N cookies/s, N valid/s, N refused/s, N opened/s` when the
/// SYN proxy runs in both samples and answered or refused anything
/// between them (a flood shows here).
fn syn_proxy_rates(before: &StatsReport, after: &StatsReport, per: PerSecond) -> String {
    let (Some(a), Some(b)) = (&before.syn_proxy, &after.syn_proxy) else {
        return String::new();
    };
    if b.cookies_sent == a.cookies_sent && b.refused() == a.refused() {
        return String::new();
    }
    format!(
        "syn proxy: {} cookies/s, {} valid/s, {} refused/s, {} opened/s\n",
        per.text(a.cookies_sent, b.cookies_sent),
        per.text(a.cookies_valid, b.cookies_valid),
        per.text(a.refused(), b.refused()),
        per.text(a.connections, b.connections),
    )
}

/// `refused: SERVICE REASON N/s, ...` for the refusals that rose.
fn refusal_rates(before: &StatsReport, after: &StatsReport, per: PerSecond) -> String {
    let old: HashMap<&str, _> = before
        .services
        .iter()
        .map(|s| (s.name.as_str(), s.refused))
        .collect();
    let mut parts = Vec::new();
    for s in &after.services {
        let prev = old.get(s.name.as_str()).copied().unwrap_or_default();
        for (reason, a, b) in [
            ("service_rate", prev.service_rate, s.refused.service_rate),
            ("client_rate", prev.client_rate, s.refused.client_rate),
            ("backend_cap", prev.backend_cap, s.refused.backend_cap),
        ] {
            if b > a {
                parts.push(format!("{} {reason} {}/s", s.name, per.text(a, b)));
            }
        }
    }
    if parts.is_empty() {
        return String::new();
    }
    format!("refused: {}\n", parts.join(", "))
}

/// Rates over an interval of this many seconds.
#[derive(Clone, Copy)]
struct PerSecond(f64);

impl PerSecond {
    /// The rate of a counter that went from `a` to `b`.
    fn of(self, a: u64, b: u64) -> f64 {
        b.saturating_sub(a) as f64 / self.0
    }

    /// [`PerSecond::of`] as shown.
    fn text(self, a: u64, b: u64) -> String {
        number(self.of(a, b))
    }
}

/// Services and their backends: rates, and the active flows now. One that
/// was not in the first sample has no rates.
fn service_rate_rows(
    before: &StatsReport,
    after: &StatsReport,
    per: PerSecond,
) -> Vec<Vec<String>> {
    let old: HashMap<&str, _> = before
        .services
        .iter()
        .map(|s| (s.name.as_str(), s))
        .collect();
    let mut rows = vec![vec![
        "SERVICE / BACKEND".into(),
        "PKTS/S".into(),
        "BYTES/S".into(),
        "ACTIVE".into(),
        "NEW/S".into(),
    ]];
    for s in &after.services {
        let Some(prev) = old.get(s.name.as_str()) else {
            rows.push(without_rates(s.name.clone(), s.active_flows));
            continue;
        };
        rows.push(vec![
            s.name.clone(),
            per.text(prev.packets, s.packets),
            per.text(prev.bytes, s.bytes),
            s.active_flows.to_string(),
            per.text(prev.new_flows, s.new_flows),
        ]);
        backend_rate_rows(prev, s, per, &mut rows);
    }
    rows
}

/// The backends of a service in both samples, below it.
fn backend_rate_rows(
    before: &ServiceStats,
    after: &ServiceStats,
    per: PerSecond,
    rows: &mut Vec<Vec<String>>,
) {
    let old: HashMap<(IpAddr, u16), _> = before
        .backends
        .iter()
        .map(|b| ((b.address, b.port), b))
        .collect();
    for b in &after.backends {
        let name = format!("  {}", endpoint(b.address, b.port));
        match old.get(&(b.address, b.port)) {
            Some(p) => rows.push(vec![
                name,
                per.text(p.packets, b.packets),
                per.text(p.bytes, b.bytes),
                b.active_flows.to_string(),
                per.text(p.new_flows, b.new_flows),
            ]),
            None => rows.push(without_rates(name, b.active_flows)),
        }
    }
}

/// A service or backend row with no rates: it was not in the first sample.
fn without_rates(name: String, active_flows: u64) -> Vec<String> {
    vec![
        name,
        "-".into(),
        "-".into(),
        active_flows.to_string(),
        "-".into(),
    ]
}

/// Workers in both samples, and all of them.
fn worker_rate_rows(before: &StatsReport, after: &StatsReport, per: PerSecond) -> Vec<Vec<String>> {
    let old: HashMap<usize, _> = before.workers.iter().map(|w| (w.worker, w)).collect();
    let mut rows = vec![worker_header(
        "RX PKTS/S",
        "TX PKTS/S",
        "PASSED/S",
        "NEW/S",
        "DROPS/S",
    )];
    let rate_row = |name: &str, core, a: &TrafficCounters, b: &TrafficCounters| {
        vec![
            name.to_owned(),
            core_text(core),
            per.text(a.rx_packets, b.rx_packets),
            per.text(a.tx_packets, b.tx_packets),
            per.text(a.passed, b.passed),
            b.active_flows.to_string(),
            per.text(a.new_flows, b.new_flows),
            per.text(a.dropped(), b.dropped()),
        ]
    };
    for w in &after.workers {
        if let Some(p) = old.get(&w.worker) {
            rows.push(rate_row(
                &w.worker.to_string(),
                w.core,
                &p.counters,
                &w.counters,
            ));
        }
    }
    rows.push(rate_row("all", None, &before.totals, &after.totals));
    rows
}

/// Drops per second by reason, the reasons that occurred in between.
fn drop_rates(before: &StatsReport, after: &StatsReport, per: PerSecond) -> Vec<(String, f64)> {
    after
        .totals
        .drops
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                per.of(before.totals.drops.get(k).copied().unwrap_or(0), *v),
            )
        })
        .filter(|(_, r)| *r > 0.0)
        .collect()
}

fn core_text(core: Option<usize>) -> String {
    core.map_or("-".into(), |c| c.to_string())
}

/// `fleet` (with `--etcd`): one line per gateway, its held keys under it.
pub fn fleet(rows: &[flowgate_dataplane::fleet::status::FleetRow]) -> String {
    let mut out = format!(
        "{:<20} {:>10} {:>10} {:>10} {:<12} {:>5} {:>8}  LAG\n",
        "GATEWAY", "REVISION", "SEEN", "GENERATION", "HEALTH", "HELD", "SERVICES"
    );
    for row in rows {
        let s = &row.status;
        let lag = if row.lags() {
            format!("lags ({} behind)", row.lag)
        } else {
            "-".to_owned()
        };
        out.push_str(&format!(
            "{:<20} {:>10} {:>10} {:>10} {:<12} {:>5} {:>8}  {lag}\n",
            s.id,
            s.revision,
            s.seen_revision,
            s.generation,
            s.health.name(),
            s.held.len(),
            s.services
        ));
        for held in &s.held {
            out.push_str(&format!(
                "  held {} (revision {}): {}\n",
                held.key,
                held.revision,
                held.problems.join("; ")
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowgate_api::{BackendStats, BackendSummary, Reweight, ServiceSummary, WorkerStats};

    #[test]
    fn tables_align_columns() {
        let t = table(&[
            vec!["A".into(), "BB".into(), "C".into()],
            vec!["long cell".into(), "x".into(), "".into()],
        ]);
        assert_eq!(t, "A          BB  C\nlong cell  x\n");
    }

    #[test]
    fn a_diff_reads_one_line_per_change() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let d = ConfigDiff {
            services_added: vec![ServiceSummary {
                name: "dns".into(),
                protocol: "udp".into(),
                vip: ip("2001:2::53"),
                port: 53,
                scheduler: "sh".into(),
                backends: 1,
            }],
            backends_added: vec![BackendSummary {
                service: "dns".into(),
                address: ip("2001:2::11"),
                port: 5353,
                weight: 1,
            }],
            backends_reweighted: vec![Reweight {
                service: "web".into(),
                address: ip("198.18.1.11"),
                port: 8080,
                from: 1,
                to: 0,
            }],
            settings_changed: vec!["neighbours".into()],
            ..ConfigDiff::default()
        };
        assert_eq!(
            diff_lines(&d),
            [
                "+ service dns (udp [2001:2::53]:53, sh, 1 backend)",
                "+ backend dns [2001:2::11]:5353 weight 1",
                "~ backend web 198.18.1.11:8080 weight 1 -> 0 (drained)",
                "~ [neighbours] changed",
            ]
        );
        let mut report = ChangeReport {
            generation: 4,
            applied: true,
            dry_run: false,
            diff: d,
            warnings: Vec::new(),
        };
        assert!(change(&report).ends_with("applied 4 changes: generation 4\n"));
        report.warnings = vec!["the XDP maps of eth1 still hold 1 key".into()];
        assert!(change(&report).ends_with(
            "applied 4 changes: generation 4\nwarning: the XDP maps of eth1 still hold 1 key\n"
        ));
    }

    fn words(line: &str) -> Vec<&str> {
        line.split_whitespace().collect()
    }

    #[test]
    fn stats_show_routing_counters_only_for_services_that_have_them() {
        let mut report = StatsReport {
            services: vec![
                ServiceStats {
                    name: "web".into(),
                    ..ServiceStats::default()
                },
                ServiceStats {
                    name: "orders".into(),
                    routing: Some(flowgate_api::RouteStats {
                        path_flows: 12,
                        set_closed: 3,
                        fallbacks: 4,
                        ..flowgate_api::RouteStats::default()
                    }),
                    ..ServiceStats::default()
                },
            ],
            ..StatsReport::default()
        };
        let text = stats(&report);
        let header = text.lines().find(|l| l.starts_with("ROUTING")).unwrap();
        assert_eq!(
            words(header),
            [
                "ROUTING", "PATH", "PATH", "FALLBACK", "SET", "SET", "CLOSED", "CANARY", "FIRST",
                "CHOICE", "FALLBACK", "UNPLACED"
            ]
        );
        // Its row in the routing table, after its traffic row.
        let row = text
            .lines()
            .filter(|l| l.starts_with("orders"))
            .nth(1)
            .unwrap();
        assert_eq!(
            words(row),
            ["orders", "12", "0", "0", "3", "0", "0", "4", "0"]
        );
        assert!(!text
            .lines()
            .any(|l| l.starts_with("web ") && l.contains("12")));
        report.services.truncate(1);
        assert!(!stats(&report).contains("ROUTING"));
    }

    #[test]
    fn stats_show_the_fast_path_per_worker_and_its_hand_ups_by_reason() {
        let mut report = StatsReport {
            workers: vec![WorkerStats {
                worker: 0,
                core: Some(1),
                counters: TrafficCounters::default(),
                fast_path: Some(flowgate_api::WorkerFastPath {
                    packets: 70,
                    bytes: 7_000,
                    entries: 4,
                }),
            }],
            ..StatsReport::default()
        };
        assert!(!stats(&report).contains("fast path"));
        report.fast_path = Some(flowgate_api::FastPathStats {
            forwarded_packets: 70,
            forwarded_bytes: 7_000,
            handed_up: [
                ("miss".to_owned(), 5),
                ("fin_rst".to_owned(), 2),
                ("ttl".to_owned(), 0),
            ]
            .into(),
            entries: 4,
        });
        let text = stats(&report);
        assert!(
            text.contains(
                "fast path: 70 packets, 7000 bytes forwarded by XDP; 4 entries; 7 handed up"
            ),
            "{text}"
        );
        let row = text
            .lines()
            .skip_while(|l| !l.contains("FAST PKTS"))
            .nth(1)
            .unwrap();
        assert_eq!(
            row.split_whitespace().collect::<Vec<_>>(),
            ["0", "70", "7000", "4"]
        );
        assert!(text.contains("handed up: fin_rst 2, miss 5\n"), "{text}");
    }

    #[test]
    fn status_shows_the_syn_proxy_and_the_services_it_proxies() {
        let mut reply = flowgate_api::StatusReply {
            dataplane: flowgate_api::StatusReport::default(),
            services: 2,
            backends: 3,
            origin: "gw.toml".into(),
            edits_since_load: 0,
            health: None,
            etcd: None,
            drained: false,
        };
        assert!(!status(&reply).contains("syn proxy"));
        reply.dataplane.syn_proxy = Some(flowgate_api::SynProxySummary {
            services: vec!["flood (on)".into(), "api (auto)".into()],
            cookies_sent: 21_590_397,
            refused: 4,
            connections: 1000,
        });
        assert!(
            status(&reply).contains(
                "syn proxy   flood (on), api (auto): 21590397 cookies sent, 4 refused, \
                 1000 connections opened\n"
            ),
            "{}",
            status(&reply)
        );
        reply.dataplane.syn_proxy.as_mut().unwrap().services.clear();
        assert!(status(&reply).contains("syn proxy   no service: "));
    }

    #[test]
    fn stats_show_the_syn_proxy_when_the_xdp_program_runs() {
        let mut report = StatsReport::default();
        assert!(!stats(&report).contains("syn proxy"));
        report.syn_proxy = Some(flowgate_api::SynProxyStats {
            cookies_sent: 7_385_602,
            cookies_valid: 999,
            cookies_invalid: 5,
            syns_refused: 2,
            marks_forged: 1,
            acks_unchecked: 0,
            probes_valid: 16,
            connections: 999,
            established: 998,
        });
        let before = StatsReport {
            uptime_ms: 1_000,
            syn_proxy: Some(flowgate_api::SynProxyStats::default()),
            ..StatsReport::default()
        };
        let after = StatsReport {
            uptime_ms: 3_000,
            ..report.clone()
        };
        assert!(
            rates(&before, &after, 1.0)
                .contains("syn proxy: 3692801 cookies/s, 500 valid/s, 4 refused/s, 500 opened/s\n"),
            "{}",
            rates(&before, &after, 1.0)
        );
        assert!(!rates(&after, &after, 1.0).contains("syn proxy"));
        let text = stats(&report);
        assert!(
            text.contains(
                "syn proxy: 7385602 cookies sent; 999 valid ACKs (16 from zero-window probes); \
                 8 refused (5 invalid cookies, 2 SYNs, 1 forged marks); 0 unchecked (auto)\n\
                 syn proxy connections: 999 opened, 998 established\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn rates_are_deltas_over_the_daemons_clock() {
        let sample = |ms: u64, packets: u64, drops: u64| StatsReport {
            generation: 3,
            uptime_ms: ms,
            totals: TrafficCounters {
                rx_packets: packets,
                drops: [("no_neighbour".to_owned(), drops)].into(),
                ..TrafficCounters::default()
            },
            services: vec![ServiceStats {
                name: "web".into(),
                packets,
                new_flows: packets / 10,
                backends: vec![BackendStats {
                    address: "198.18.1.11".parse().unwrap(),
                    port: 8080,
                    packets,
                    bytes: packets * 100,
                    active_flows: 7,
                    new_flows: 0,
                }],
                ..ServiceStats::default()
            }],
            workers: vec![WorkerStats {
                worker: 0,
                core: Some(1),
                counters: TrafficCounters {
                    rx_packets: packets,
                    ..TrafficCounters::default()
                },
                fast_path: None,
            }],
            fast_path: None,
            syn_proxy: None,
        };
        let text = rates(&sample(1_000, 100, 1), &sample(3_000, 900, 5), 1.0);
        assert!(text.starts_with("generation 3, rates over 2.0s"), "{text}");
        // 800 packets in 2 s; 80 new flows in 2 s; 80 000 bytes in 2 s.
        let web = text.lines().find(|l| l.starts_with("web")).unwrap();
        assert_eq!(
            web.split_whitespace().collect::<Vec<_>>(),
            ["web", "400", "0", "0", "40"]
        );
        let backend = text.lines().find(|l| l.contains("198.18.1.11")).unwrap();
        assert_eq!(
            backend.split_whitespace().collect::<Vec<_>>(),
            ["198.18.1.11:8080", "400", "40000", "7", "0"]
        );
        assert!(text.contains("drops: no_neighbour 2/s"), "{text}");
    }

    #[test]
    fn refused_new_flows_are_shown_per_service_and_reason() {
        let report = |refused: u64| StatsReport {
            uptime_ms: 1_000 + refused * 10,
            services: vec![
                ServiceStats {
                    name: "web".into(),
                    refused: flowgate_api::Refusals {
                        service_rate: refused,
                        client_rate: 3,
                        backend_cap: 2,
                        resets_sent: 4,
                    },
                    ..ServiceStats::default()
                },
                ServiceStats {
                    name: "dns".into(),
                    ..ServiceStats::default()
                },
            ],
            ..StatsReport::default()
        };
        let text = stats(&report(40));
        let header = text
            .lines()
            .position(|l| l.starts_with("REFUSED NEW FLOWS"))
            .unwrap();
        let web: Vec<_> = text
            .lines()
            .nth(header + 1)
            .unwrap()
            .split_whitespace()
            .collect();
        assert_eq!(web, ["web", "40", "3", "2", "4"]);
        // A service nothing was refused to is not listed.
        assert!(
            !text.lines().skip(header).any(|l| l.starts_with("dns")),
            "{text}"
        );
        assert!(!stats(&StatsReport::default()).contains("REFUSED"));
        // Watching: 100 more in 1 s.
        let text = rates(&report(0), &report(100), 1.0);
        assert!(text.contains("refused: web service_rate 100/s\n"), "{text}");
    }

    #[test]
    fn what_is_new_since_the_first_sample_has_no_rates() {
        let backend = |address: &str, packets| BackendStats {
            address: address.parse().unwrap(),
            port: 8080,
            packets,
            bytes: 0,
            active_flows: 1,
            new_flows: 0,
        };
        let service = |name: &str, backends| ServiceStats {
            name: name.into(),
            active_flows: 2,
            backends,
            ..ServiceStats::default()
        };
        let before = StatsReport {
            uptime_ms: 1_000,
            services: vec![service("web", vec![backend("198.18.1.11", 10)])],
            ..StatsReport::default()
        };
        let after = StatsReport {
            uptime_ms: 2_000,
            services: vec![
                service(
                    "web",
                    vec![backend("198.18.1.11", 30), backend("198.18.1.12", 5)],
                ),
                service("dns", Vec::new()),
            ],
            ..StatsReport::default()
        };
        let text = rates(&before, &after, 1.0);
        let row = |start: &str| -> Vec<&str> {
            let line = text.lines().find(|l| l.trim_start().starts_with(start));
            line.unwrap_or_else(|| panic!("no {start} in {text}"))
                .split_whitespace()
                .collect()
        };
        assert_eq!(row("web"), ["web", "0", "0", "2", "0"]);
        assert_eq!(
            row("198.18.1.11"),
            ["198.18.1.11:8080", "20", "0", "1", "0"]
        );
        assert_eq!(row("198.18.1.12"), ["198.18.1.12:8080", "-", "-", "1", "-"]);
        assert_eq!(row("dns"), ["dns", "-", "-", "2", "-"]);
        assert_eq!(row("all"), ["all", "-", "0", "0", "0", "0", "0", "0"]);
        assert!(!text.contains("drops:"), "{text}");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(5), "5s");
        assert_eq!(duration(65), "1m 5s");
        assert_eq!(duration(3_600 * 26 + 61), "1d 2h 1m 1s");
    }
}
