//! What a key's value holds, value formats 1 and 2, and how it becomes
//! the model.
//!
//! Every value is one JSON object with a `"format"` number, the version of
//! the value's format. A gateway refuses a value of a format it does not
//! know, as a bad key: so a fleet is upgraded before anyone writes a newer
//! format, and an old gateway never half-reads one.
//!
//! - `rules/gateway`: the `[gateway]` table of a config file
//!   (`maglev_table_size`).
//! - `rules/services/NAME`: one `[[services]]` table of a config file,
//!   backends inside, with the same keys and value types, written as JSON.
//!   `name` may be left out; if it is given it must be the key's. A
//!   service that sets no `maglev_table_size` takes the gateway's. Its
//!   distribution paths are never in it: they are keys of their own.
//! - `rules/classes/PREFIX`: `{"format": 1, "set": "orders.sh.a",
//!   "zone": "dc1"}`: a `[[routing.classes]]` entry, its prefix the key's.
//! - `rules/paths/SERVICE/PREFIX`: `{"format": 1, "backends": ["orders-7"]}`,
//!   1 to 16 backend names: a `[[services.paths]]` entry of the service.
//!
//! The formats:
//!
//! - **1**: a service carries its listener, scheduler, `maglev_table_size`,
//!   failover keys (`on_backend_down`, `panic_threshold`, `when_all_down`)
//!   and backends (`address`, `port`, `weight`, `zone`, `set`, `group`);
//!   a class at least one of `set` and `zone`.
//! - **2**, a superset: a service carries every key a `[[services]]` table
//!   of a config file has (`[services.health]`, `heartbeat_ttl`,
//!   `heartbeat_token`, `zone_priority`, `[services.canary]`,
//!   `[services.limits]`, `syn_proxy`, `announce`, `fanout_replies`, and
//!   each backend's `name`, `[services.backends.health]`, `heartbeat_ttl`
//!   and connection marks) except `paths`; a class may have neither `set`
//!   nor `zone` (its prefix then has no class, as in a file).
//!
//! Both are read by the config file's own reader: the value is turned
//! into the TOML a file would hold and read by [`rules::load_str`], so
//! that a value in etcd and the same table in a file are read by one
//! decoder and refused with the same words, and a key the file gains is a
//! key the value has. The writer ([`service_value`]) writes the lowest
//! format that carries the service, so that gateways that read only
//! format 1 keep reading what they can run.

use serde_json::{Map, Value};

use crate::route::{Prefix, MAX_PATH_BACKENDS};
use crate::rules::{self, GatewaySettings, Service, MAX_MAGLEV_TABLE_SIZE, MAX_NAME_LEN};

use super::layout::RuleKey;

/// The newest value format this gateway reads and writes.
pub const VALUE_FORMAT: i64 = 2;

/// The oldest value format this gateway reads (and writes, for a value
/// that needs nothing newer).
pub const OLDEST_VALUE_FORMAT: i64 = 1;

/// A service read from etcd.
#[derive(Clone, Debug, PartialEq)]
pub struct ServicePart {
    /// The service. Its `maglev_table_size`, when the value sets none, is
    /// a placeholder: the gateway's is put in when the rules are put
    /// together.
    pub service: Service,
    /// Whether the value sets `maglev_table_size` (otherwise the
    /// gateway's applies).
    pub sets_table_size: bool,
}

/// A client class: clients in `prefix` belong to a SET and a zone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassEntry {
    /// The clients.
    pub prefix: Prefix,
    /// Their SET (`name.area.group`), if any.
    pub set: Option<String>,
    /// Their zone, if any.
    pub zone: Option<String>,
}

/// A distribution path: clients in `prefix` of `service` go to one of
/// `backends` (by name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathEntry {
    /// The service's name.
    pub service: String,
    /// The clients.
    pub prefix: Prefix,
    /// The backends' names, 1 to [`MAX_PATH_BACKENDS`], in order.
    pub backends: Vec<String>,
}

/// What one key holds, read into the model's types.
#[derive(Clone, Debug, PartialEq)]
pub enum Part {
    /// `rules/gateway`.
    Gateway(GatewaySettings),
    /// `rules/services/NAME` (boxed: a service is much larger than the
    /// other parts).
    Service(Box<ServicePart>),
    /// `rules/classes/PREFIX`.
    Class(ClassEntry),
    /// `rules/paths/SERVICE/PREFIX`.
    Path(PathEntry),
}

/// Reads the value of the key `key` names. Every problem found, each one
/// line, as a config file's reader words it where the file has the same
/// part.
pub fn decode(key: &RuleKey, value: &[u8]) -> Result<Part, Vec<String>> {
    let (format, map) = envelope(value).map_err(|e| vec![e])?;
    match key {
        RuleKey::Gateway => gateway(map).map(Part::Gateway),
        RuleKey::Service(name) => service(name, map).map(|part| Part::Service(Box::new(part))),
        RuleKey::Class(prefix) => class(*prefix, format, map).map(Part::Class),
        RuleKey::Path { service, prefix } => path(service, *prefix, map).map(Part::Path),
    }
}

/// The value's format and the object inside it, once the format is known
/// to be one this gateway reads.
fn envelope(value: &[u8]) -> Result<(i64, Map<String, Value>), String> {
    let text = std::str::from_utf8(value).map_err(|_| "the value is not UTF-8".to_owned())?;
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("the value is not JSON: {e}"))?;
    let Value::Object(mut map) = value else {
        return Err("the value is not a JSON object".into());
    };
    let formats = format!("{OLDEST_VALUE_FORMAT} to {VALUE_FORMAT}");
    match map.remove("format") {
        None => Err(format!(
            "the value has no \"format\": every value carries its format version \
             (this gateway reads {formats})"
        )),
        Some(Value::Number(n))
            if n.as_i64()
                .is_some_and(|n| (OLDEST_VALUE_FORMAT..=VALUE_FORMAT).contains(&n)) =>
        {
            Ok((n.as_i64().unwrap_or(VALUE_FORMAT), map))
        }
        Some(Value::Number(n)) if n.as_i64().is_some_and(|n| n > VALUE_FORMAT) => Err(format!(
            "format {n} is newer than this gateway reads ({formats}): upgrade the \
             gateways before writing it"
        )),
        Some(other) => Err(format!(
            "\"format\" {other} is not a format this gateway reads ({formats})"
        )),
    }
}

/// `rules/gateway`: the `[gateway]` table, read as a file's.
fn gateway(map: Map<String, Value>) -> Result<GatewaySettings, Vec<String>> {
    let mut doc = toml::Table::new();
    doc.insert("gateway".into(), toml::Value::Table(table(map, "")?));
    read_as_file(doc).map(|config| config.gateway)
}

/// `rules/services/NAME`: a `[[services]]` entry, read as a file's.
fn service(name: &str, mut map: Map<String, Value>) -> Result<ServicePart, Vec<String>> {
    match map.remove("name") {
        None => {}
        Some(Value::String(given)) if given == name => {}
        Some(given) => {
            return Err(vec![format!(
                "the value's name {given} is not the key's {name:?}: the key names the service"
            )]);
        }
    }
    if map.contains_key("paths") {
        return Err(vec![format!(
            "a service's value holds no paths: each distribution path of {name:?} is a key \
             of its own, paths/{name}/PREFIX beside services/{name}"
        )]);
    }
    let sets_table_size = map.contains_key("maglev_table_size");
    let mut service = table(map, "")?;
    service.insert("name".into(), toml::Value::String(name.to_owned()));
    let mut doc = toml::Table::new();
    // A table size no service's backends can reach and that is valid: a
    // service that sets none is judged against the real gateway setting
    // when the rules are put together, not against this placeholder.
    let mut placeholder = toml::Table::new();
    placeholder.insert(
        "maglev_table_size".into(),
        toml::Value::Integer(i64::from(MAX_MAGLEV_TABLE_SIZE)),
    );
    doc.insert("gateway".into(), toml::Value::Table(placeholder));
    doc.insert(
        "services".into(),
        toml::Value::Array(vec![toml::Value::Table(service)]),
    );
    let mut config = read_as_file(doc)?;
    let service = config
        .services
        .pop()
        .ok_or_else(|| vec!["the value holds no service".to_owned()])?;
    Ok(ServicePart {
        service,
        sets_table_size,
    })
}

/// Reads `doc` with the config file's reader, keeping the problems'
/// messages (their positions are in text no one wrote).
fn read_as_file(doc: toml::Table) -> Result<rules::Config, Vec<String>> {
    let text = toml::to_string(&doc).map_err(|e| vec![format!("the value cannot be read: {e}")])?;
    rules::load_str(&text, "etcd").map_err(|error| {
        let problems = error.problems();
        if problems.is_empty() {
            vec![error.to_string()]
        } else {
            problems.iter().map(|p| p.message.clone()).collect()
        }
    })
}

/// A JSON object as a TOML table. `at` names where it is, for messages.
fn table(map: Map<String, Value>, at: &str) -> Result<toml::Table, Vec<String>> {
    let mut problems = Vec::new();
    let mut table = toml::Table::new();
    for (key, value) in map {
        let here = if at.is_empty() {
            key.clone()
        } else {
            format!("{at}.{key}")
        };
        match toml_value(value, &here) {
            Ok(v) => {
                table.insert(key, v);
            }
            Err(mut e) => problems.append(&mut e),
        }
    }
    if problems.is_empty() {
        Ok(table)
    } else {
        Err(problems)
    }
}

/// A JSON value as a TOML value; `null`, which TOML lacks, is refused.
fn toml_value(value: Value, at: &str) -> Result<toml::Value, Vec<String>> {
    Ok(match value {
        Value::Null => return Err(vec![format!("{at} is null: leave it out instead")]),
        Value::Bool(b) => toml::Value::Boolean(b),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => toml::Value::Integer(i),
            // Larger than any integer setting: the reader refuses it by
            // its type, as it would a float.
            (None, Some(f)) => toml::Value::Float(f),
            (None, None) => return Err(vec![format!("{at} {n} is not a number")]),
        },
        Value::String(s) => toml::Value::String(s),
        Value::Array(items) => {
            let mut problems = Vec::new();
            let mut array = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                match toml_value(item, &format!("{at}[{i}]")) {
                    Ok(v) => array.push(v),
                    Err(mut e) => problems.append(&mut e),
                }
            }
            if !problems.is_empty() {
                return Err(problems);
            }
            toml::Value::Array(array)
        }
        Value::Object(map) => toml::Value::Table(table(map, at)?),
    })
}

/// The fields of a client class's value.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ClassValue {
    set: Option<String>,
    zone: Option<String>,
}

/// `rules/classes/PREFIX`.
fn class(prefix: Prefix, format: i64, map: Map<String, Value>) -> Result<ClassEntry, Vec<String>> {
    let value: ClassValue = serde_json::from_value(Value::Object(map))
        .map_err(|e| vec![format!("client class {prefix}: {e}")])?;
    // Format 2 reads a class as a file does: with neither, its prefix has
    // no class (a hole in a shorter prefix's).
    if format < 2 && value.set.is_none() && value.zone.is_none() {
        return Err(vec![format!(
            "client class {prefix} has neither a set nor a zone (format 2 reads that as \
             a prefix with no class)"
        )]);
    }
    let mut problems = Vec::new();
    for (field, label) in [("set", &value.set), ("zone", &value.zone)] {
        if let Some(label) = label {
            if let Some(why) = label_problem(label) {
                problems.push(format!("{field} {label:?} of client class {prefix} {why}"));
            }
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(ClassEntry {
        prefix,
        set: value.set,
        zone: value.zone,
    })
}

/// The fields of a distribution path's value.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PathValue {
    backends: Vec<String>,
}

/// `rules/paths/SERVICE/PREFIX`.
fn path(service: &str, prefix: Prefix, map: Map<String, Value>) -> Result<PathEntry, Vec<String>> {
    let what = || format!("path {prefix} of service {service:?}");
    let value: PathValue =
        serde_json::from_value(Value::Object(map)).map_err(|e| vec![format!("{}: {e}", what())])?;
    let count = value.backends.len();
    if !(1..=MAX_PATH_BACKENDS).contains(&count) {
        return Err(vec![format!(
            "{} names {count} backends: a path names 1 to {MAX_PATH_BACKENDS}",
            what()
        )]);
    }
    let mut problems = Vec::new();
    for (i, name) in value.backends.iter().enumerate() {
        if let Some(why) = label_problem(name) {
            problems.push(format!("backend name {name:?} of {} {why}", what()));
        } else if value.backends[..i].contains(name) {
            problems.push(format!("{} names backend {name:?} twice", what()));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(PathEntry {
        service: service.to_owned(),
        prefix,
        backends: value.backends,
    })
}

/// Why a name in a class or a path cannot be one, if it cannot. The
/// routing rules that give SETs and zones their meaning will judge them
/// further once classes and paths are part of the model; this only keeps
/// out what could never be a name.
fn label_problem(label: &str) -> Option<String> {
    if label.is_empty() {
        Some("is empty".into())
    } else if label.len() > MAX_NAME_LEN {
        Some(format!("is longer than {MAX_NAME_LEN} bytes"))
    } else if label.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("contains whitespace or control characters".into())
    } else {
        None
    }
}

/// The value of `rules/gateway` for these settings.
pub fn gateway_value(gateway: &GatewaySettings) -> String {
    serde_json::json!({
        "format": OLDEST_VALUE_FORMAT,
        "maglev_table_size": gateway.maglev_table_size,
    })
    .to_string()
}

/// The value of `rules/services/NAME` for `service`: every key a
/// `[[services]]` table of a config file would have for it but its
/// distribution paths (keys of their own), with its `maglev_table_size`
/// written only if `sets_table_size` (otherwise the gateway's applies).
/// Settings at their default are left out, as a config file would leave
/// them out. Format 1 if that is all the value needs, 2 otherwise.
///
/// Every field of the model is taken apart by name here, so that a field
/// the model gains does not build until it is written.
pub fn service_value(service: &Service, sets_table_size: bool) -> String {
    let Service {
        name,
        protocol,
        vip,
        port,
        scheduler,
        maglev_table_size,
        failover,
        health,
        backends,
        routing,
        limits,
        announce,
    } = service;
    let rules::ServiceRouting {
        zone_priority,
        canary,
        // Keys of their own: `rules/paths/NAME/PREFIX`.
        paths: _,
    } = routing;
    let rules::Failover {
        on_backend_down,
        panic_threshold,
        when_all_down,
    } = failover;
    let rules::FlowLimits {
        new_flows,
        client,
        max_connections,
        over_limit,
        syn_proxy,
    } = limits;

    // Format 1's keys.
    let mut map = Map::new();
    map.insert("name".into(), name.clone().into());
    map.insert("protocol".into(), protocol.name().into());
    map.insert("vip".into(), vip.to_string().into());
    map.insert("port".into(), (*port).into());
    map.insert("scheduler".into(), scheduler.name().into());
    if sets_table_size {
        map.insert("maglev_table_size".into(), (*maglev_table_size).into());
    }
    if let Some(policy) = on_backend_down {
        map.insert("on_backend_down".into(), policy.name().into());
    }
    if *panic_threshold != 0 {
        map.insert("panic_threshold".into(), (*panic_threshold).into());
    }
    if *when_all_down != rules::WhenAllDown::default() {
        map.insert("when_all_down".into(), when_all_down.name().into());
    }

    // Format 2's.
    let mut newer = Map::new();
    if let rules::Scheduler::Fanout(replies) = scheduler {
        if *replies != rules::FanoutReplies::default() {
            newer.insert("fanout_replies".into(), replies.name().into());
        }
    }
    if *announce != rules::Announce::default() {
        newer.insert("announce".into(), announce.name().into());
    }
    health_keys(health, &mut newer);
    routing_keys(zone_priority.as_ref(), canary.as_ref(), &mut newer);
    let limits_table = limits_table(new_flows, client, max_connections, over_limit);
    if !limits_table.is_empty() {
        newer.insert("limits".into(), Value::Object(limits_table));
    }
    syn_proxy_keys(*syn_proxy, &mut newer);

    let mut format = OLDEST_VALUE_FORMAT;
    let backends: Vec<Value> = backends
        .iter()
        .map(|b| {
            let (backend, needs_newer) = backend_value(b);
            if needs_newer {
                format = VALUE_FORMAT;
            }
            backend
        })
        .collect();
    if !newer.is_empty() {
        format = VALUE_FORMAT;
    }
    map.extend(newer);
    map.insert("backends".into(), Value::Array(backends));
    map.insert("format".into(), format.into());
    Value::Object(map).to_string()
}

/// A service's health keys (`[services.health]`, `heartbeat_ttl`,
/// `heartbeat_token`), into `map`.
fn health_keys(health: &rules::ServiceHealth, map: &mut Map<String, Value>) {
    let rules::ServiceHealth {
        check,
        port,
        heartbeat_ttl,
        heartbeat_token,
        source,
    } = health;
    if let Some(ttl) = heartbeat_ttl {
        map.insert("heartbeat_ttl".into(), rules::format_duration(*ttl).into());
    }
    if let Some(token) = heartbeat_token {
        map.insert("heartbeat_token".into(), token.expose().into());
    }
    let mut health_table = check_table(check);
    if let Some(p) = port {
        health_table.insert("port".into(), (*p).into());
    }
    if *source != rules::HealthSource::Checks {
        health_table.insert("source".into(), source.name().into());
    }
    if !health_table.is_empty() {
        map.insert("health".into(), Value::Object(health_table));
    }
}

/// A service's `syn_proxy` and its threshold, into `map`.
fn syn_proxy_keys(syn_proxy: crate::synproxy::SynProxy, map: &mut Map<String, Value>) {
    match syn_proxy {
        crate::synproxy::SynProxy::Off => {}
        crate::synproxy::SynProxy::On => {
            map.insert("syn_proxy".into(), "on".into());
        }
        crate::synproxy::SynProxy::Auto { syns_per_s } => {
            map.insert("syn_proxy".into(), "auto".into());
            map.insert("syn_proxy_auto_syns_per_s".into(), syns_per_s.into());
        }
    }
}

/// A service's `zone_priority` and `[services.canary]`, into `map`.
fn routing_keys(
    zone_priority: Option<&Vec<String>>,
    canary: Option<&rules::Canary>,
    map: &mut Map<String, Value>,
) {
    if let Some(zones) = zone_priority {
        map.insert("zone_priority".into(), zones.clone().into());
    }
    if let Some(rules::Canary {
        group,
        share_bp,
        clients,
    }) = canary
    {
        let clients: Vec<Value> = clients.iter().map(|c| c.to_string().into()).collect();
        map.insert(
            "canary".into(),
            serde_json::json!({ "group": group, "share": share_bp, "clients": clients }),
        );
    }
}

/// `[services.limits]` as a service's value writes it; the unset left
/// out.
fn limits_table(
    new_flows: &Option<crate::admission::ServiceRateLimit>,
    client: &Option<crate::admission::ClientRateLimit>,
    max_connections: &Option<crate::admission::ConnectionCap>,
    over_limit: &crate::admission::OverLimitAction,
) -> Map<String, Value> {
    let mut limits_table = Map::new();
    if let Some(limit) = new_flows {
        let rate = limit.rate();
        limits_table.insert("max_new_flows_per_s".into(), rate.per_s().into());
        limits_table.insert("new_flows_burst".into(), rate.burst().into());
    }
    if let Some(limit) = client {
        let (rate, prefix) = (limit.rate(), limit.prefix());
        limits_table.insert("client_max_new_flows_per_s".into(), rate.per_s().into());
        limits_table.insert("client_new_flows_burst".into(), rate.burst().into());
        limits_table.insert("client_prefix_v4".into(), prefix.v4().into());
        limits_table.insert("client_prefix_v6".into(), prefix.v6().into());
    }
    if let Some(cap) = max_connections {
        limits_table.insert("max_connections".into(), cap.upper().into());
        limits_table.insert("resume_connections".into(), cap.lower().into());
    }
    if *over_limit != Default::default() {
        limits_table.insert("over_limit".into(), over_limit.name().into());
    }
    limits_table
}

/// One backend of a service's value, and whether it needs format 2.
fn backend_value(backend: &rules::Backend) -> (Value, bool) {
    let rules::Backend {
        address,
        port,
        weight,
        zone,
        set,
        group,
        health,
        name,
        max_connections,
    } = backend;
    let rules::BackendHealth {
        kind,
        port: health_port,
        heartbeat_ttl,
    } = health;
    let mut map = Map::new();
    map.insert("address".into(), address.to_string().into());
    map.insert("port".into(), (*port).into());
    map.insert("weight".into(), (*weight).into());
    for (key, label) in [("zone", zone), ("set", set), ("group", group)] {
        if let Some(label) = label {
            map.insert(key.into(), label.clone().into());
        }
    }
    let mut newer = Map::new();
    if let Some(name) = name {
        newer.insert("name".into(), name.clone().into());
    }
    let mut health_table = Map::new();
    if let Some(kind) = kind {
        health_table.insert("kind".into(), kind.as_str().into());
    }
    if let Some(p) = health_port {
        health_table.insert("port".into(), (*p).into());
    }
    if !health_table.is_empty() {
        newer.insert("health".into(), Value::Object(health_table));
    }
    if let Some(ttl) = heartbeat_ttl {
        newer.insert("heartbeat_ttl".into(), rules::format_duration(*ttl).into());
    }
    if let Some(cap) = max_connections {
        newer.insert("max_connections".into(), cap.upper().into());
        newer.insert("resume_connections".into(), cap.lower().into());
    }
    let needs_newer = !newer.is_empty();
    map.extend(newer);
    (Value::Object(map), needs_newer)
}

/// A check's keys as `[services.health]` writes them; the unset left out.
fn check_table(check: &crate::health::CheckSettings) -> Map<String, Value> {
    let crate::health::CheckSettings {
        kind,
        interval,
        timeout,
        rise,
        fall,
        path,
        host,
        status,
        payload,
        expect,
    } = check;
    let mut map = Map::new();
    if let Some(kind) = kind {
        map.insert("kind".into(), kind.as_str().into());
    }
    for (key, duration) in [("interval", interval), ("timeout", timeout)] {
        if let Some(d) = duration {
            map.insert(key.into(), rules::format_duration(*d).into());
        }
    }
    for (key, count) in [("rise", rise), ("fall", fall)] {
        if let Some(n) = count {
            map.insert(key.into(), (*n).into());
        }
    }
    for (key, text) in [("path", path), ("host", host)] {
        if let Some(text) = text {
            map.insert(key.into(), text.clone().into());
        }
    }
    if let Some((low, high)) = status {
        map.insert("status".into(), format!("{low}-{high}").into());
    }
    for (key, bytes) in [("payload", payload), ("expect", expect)] {
        let Some(bytes) = bytes else { continue };
        // As text when it is text, else as hex.
        match std::str::from_utf8(bytes) {
            Ok(text) => map.insert(key.into(), text.into()),
            Err(_) => {
                let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                map.insert(format!("{key}_hex"), hex.into())
            }
        };
    }
    map
}

/// The value of `rules/classes/PREFIX` for `class` (format 2 only for a
/// class with neither a SET nor a zone).
pub fn class_value(class: &ClassEntry) -> String {
    let mut map = Map::new();
    let format = if class.set.is_none() && class.zone.is_none() {
        VALUE_FORMAT
    } else {
        OLDEST_VALUE_FORMAT
    };
    map.insert("format".into(), format.into());
    if let Some(set) = &class.set {
        map.insert("set".into(), set.clone().into());
    }
    if let Some(zone) = &class.zone {
        map.insert("zone".into(), zone.clone().into());
    }
    Value::Object(map).to_string()
}

/// The value of `rules/paths/SERVICE/PREFIX` for `path`.
pub fn path_value(path: &PathEntry) -> String {
    serde_json::json!({ "format": OLDEST_VALUE_FORMAT, "backends": path.backends }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{Backend, Failover, OnBackendDown, Protocol, Scheduler, WhenAllDown};

    fn web() -> Service {
        let mut b2 = Backend::new("198.18.1.12".parse().unwrap(), 8080);
        b2.weight = 3;
        b2.zone = Some("dc1".into());
        Service {
            limits: Default::default(),

            announce: Default::default(),
            routing: Default::default(),
            health: Default::default(),
            name: "web".into(),
            protocol: Protocol::Tcp,
            vip: "198.18.100.10".parse().unwrap(),
            port: 80,
            scheduler: Scheduler::Sh,
            maglev_table_size: 251,
            failover: Failover {
                on_backend_down: Some(OnBackendDown::Reset),
                panic_threshold: 20,
                when_all_down: WhenAllDown::Closed,
            },
            backends: vec![Backend::new("198.18.1.11".parse().unwrap(), 8080), b2],
        }
    }

    fn service_key() -> RuleKey {
        RuleKey::Service("web".into())
    }

    #[test]
    fn a_service_reads_back_as_written() {
        let value = service_value(&web(), true);
        let Part::Service(part) = decode(&service_key(), value.as_bytes()).unwrap() else {
            panic!("not a service");
        };
        assert_eq!(part.service, web());
        assert!(part.sets_table_size);
        // Without its own table size, it says so.
        let value = service_value(&web(), false);
        let Part::Service(part) = decode(&service_key(), value.as_bytes()).unwrap() else {
            panic!("not a service");
        };
        assert!(!part.sets_table_size);
        assert_eq!(part.service.backends, web().backends);
    }

    #[test]
    fn a_health_source_is_format_2_and_reads_back() {
        let mut service = web();
        service.health.source = rules::HealthSource::Etcd;
        service.failover.panic_threshold = 0;
        let value = service_value(&service, true);
        let json: Value = serde_json::from_str(&value).unwrap();
        assert_eq!(json["format"], 2);
        assert_eq!(json["health"]["source"], "etcd");
        let Part::Service(part) = decode(&service_key(), value.as_bytes()).unwrap() else {
            panic!("not a service");
        };
        assert_eq!(part.service, service);
        // Refused in etcd with the file's words.
        let bad = value.replace("\"etcd\"", "\"registry\"");
        let problems = decode(&service_key(), bad.as_bytes()).unwrap_err();
        assert!(
            problems[0]
                .contains("health source \"registry\" is unknown: use \"checks\" or \"etcd\""),
            "{problems:?}"
        );
    }

    #[test]
    fn a_minimal_service_takes_the_file_defaults() {
        let value = r#"{"format":1,"protocol":"udp","vip":"2001:db8::10","port":53,
            "backends":[{"address":"2001:db8::1","port":53}]}"#;
        let Part::Service(part) = decode(&service_key(), value.as_bytes()).unwrap() else {
            panic!("not a service");
        };
        assert_eq!(part.service.name, "web");
        assert_eq!(part.service.scheduler, Scheduler::Maglev);
        assert_eq!(part.service.backends[0].weight, 1);
        assert_eq!(part.service.failover, Failover::default());
    }

    #[test]
    fn a_bad_service_gets_the_file_readers_words() {
        let problems = |value: &str| decode(&service_key(), value.as_bytes()).unwrap_err();
        assert_eq!(
            problems(r#"{"format":1,"protocol":"tcp","vip":"198.18.100.10","port":70000}"#),
            [
                "service \"web\" has no backends",
                "port 70000 of service \"web\" is out of range 1..=65535"
            ]
        );
        assert_eq!(
            problems(
                r#"{"format":1,"protocol":"sctp","vip":"198.18.100.300","port":80,
                "backends":[{"address":"198.18.1.11","port":80,"weight":-1}]}"#
            ),
            [
                "unknown protocol \"sctp\" in service \"web\" (expected \"tcp\" or \"udp\")",
                "VIP \"198.18.100.300\" of service \"web\" is not an IP address",
                "weight -1 of backend 198.18.1.11:80 in service \"web\" is out of range 0..=10000",
            ]
        );
        // The validator's own rules, through the same reader.
        assert_eq!(
            problems(
                r#"{"format":1,"protocol":"tcp","vip":"198.18.100.10","port":80,
                "backends":[{"address":"198.18.1.11","port":80,"weight":0}]}"#
            ),
            ["service \"web\" has no backend with weight > 0 (all 1 are drained)"]
        );
        let unknown = problems(r#"{"format":1,"prot":"tcp"}"#);
        assert_eq!(unknown.len(), 1);
        assert!(
            unknown[0].starts_with("unknown field `prot`"),
            "{unknown:?}"
        );
        assert_eq!(
            problems(r#"{"format":1,"name":"api","protocol":"tcp"}"#),
            ["the value's name \"api\" is not the key's \"web\": the key names the service"]
        );
        assert_eq!(
            problems(r#"{"format":1,"protocol":null,"vip":null}"#),
            [
                "protocol is null: leave it out instead",
                "vip is null: leave it out instead"
            ]
        );
    }

    #[test]
    fn every_value_carries_a_format_this_gateway_reads() {
        let problems = |value: &[u8]| decode(&service_key(), value).unwrap_err();
        assert_eq!(
            problems(br#"{"protocol":"tcp"}"#),
            ["the value has no \"format\": every value carries its format version (this gateway reads 1 to 2)"]
        );
        assert_eq!(
            problems(br#"{"format":3}"#),
            ["format 3 is newer than this gateway reads (1 to 2): upgrade the gateways before writing it"]
        );
        assert_eq!(
            problems(br#"{"format":"1"}"#),
            ["\"format\" \"1\" is not a format this gateway reads (1 to 2)"]
        );
        assert_eq!(
            problems(br#"{"format":0}"#),
            ["\"format\" 0 is not a format this gateway reads (1 to 2)"]
        );
        assert_eq!(problems(b"[1]"), ["the value is not a JSON object"]);
        assert_eq!(problems(b"\xff"), ["the value is not UTF-8"]);
        assert!(problems(b"{format: 1}")[0].starts_with("the value is not JSON: "));
    }

    #[test]
    fn gateway_settings_classes_and_paths() {
        let settings = GatewaySettings {
            maglev_table_size: 251,
        };
        assert_eq!(
            decode(&RuleKey::Gateway, gateway_value(&settings).as_bytes()),
            Ok(Part::Gateway(settings))
        );
        assert_eq!(
            decode(
                &RuleKey::Gateway,
                br#"{"format":1,"maglev_table_size":100}"#
            )
            .unwrap_err(),
            ["gateway.maglev_table_size 100 is out of range 251..=16777259"]
        );

        let prefix: Prefix = "198.18.0.0/16".parse().unwrap();
        let class = ClassEntry {
            prefix,
            set: Some("orders.sh.a".into()),
            zone: None,
        };
        let key = RuleKey::Class(prefix);
        assert_eq!(
            decode(&key, class_value(&class).as_bytes()),
            Ok(Part::Class(class))
        );
        assert_eq!(
            decode(&key, br#"{"format":1}"#).unwrap_err(),
            ["client class 198.18.0.0/16 has neither a set nor a zone (format 2 reads that as a prefix with no class)"]
        );
        // Format 2 reads it as a file does: a prefix with no class.
        let hole = ClassEntry {
            prefix,
            set: None,
            zone: None,
        };
        assert_eq!(class_value(&hole), r#"{"format":2}"#);
        assert_eq!(
            decode(&key, class_value(&hole).as_bytes()),
            Ok(Part::Class(hole))
        );
        assert_eq!(
            decode(&key, br#"{"format":1,"zone":"dc 1"}"#).unwrap_err(),
            ["zone \"dc 1\" of client class 198.18.0.0/16 contains whitespace or control characters"]
        );
        assert!(decode(&key, br#"{"format":1,"sett":"a"}"#).unwrap_err()[0]
            .starts_with("client class 198.18.0.0/16: unknown field `sett`"));

        let host: Prefix = "2001:db8::7/128".parse().unwrap();
        let path = PathEntry {
            service: "web".into(),
            prefix: host,
            backends: vec!["orders-7".into(), "orders-8".into()],
        };
        let key = RuleKey::Path {
            service: "web".into(),
            prefix: host,
        };
        assert_eq!(
            decode(&key, path_value(&path).as_bytes()),
            Ok(Part::Path(path))
        );
        assert_eq!(
            decode(&key, br#"{"format":1,"backends":[]}"#).unwrap_err(),
            ["path 2001:db8::7/128 of service \"web\" names 0 backends: a path names 1 to 16"]
        );
        assert_eq!(
            decode(&key, br#"{"format":1,"backends":["a","a"]}"#).unwrap_err(),
            ["path 2001:db8::7/128 of service \"web\" names backend \"a\" twice"]
        );
    }

    /// A service from a config file's table with every key a service and
    /// its backends can have set away from its default.
    fn every_key() -> Vec<Service> {
        let text = r#"
[[services]]
name = "web"
protocol = "tcp"
vip = "198.18.100.10"
port = 443
scheduler = "sh"
maglev_table_size = 503
on_backend_down = "reset"
panic_threshold = 30
when_all_down = "closed"
announce = "bgp"
heartbeat_ttl = "1500ms"
heartbeat_token = "4f1c0d8e2a7b9c3d5e6f"
zone_priority = ["dc2", "dc1"]
syn_proxy = "auto"
syn_proxy_auto_syns_per_s = 2500
[services.health]
kind = "http"
interval = "2s"
timeout = "500ms"
rise = 3
fall = 4
path = "/healthz"
host = "web.example"
status = "200-299"
port = 8443
[services.canary]
group = "next"
share = 250
clients = ["198.18.7.0/24", "2001:db8::/48"]
[services.limits]
max_new_flows_per_s = 1000
new_flows_burst = 100
client_max_new_flows_per_s = 20
client_new_flows_burst = 4
client_prefix_v4 = 24
client_prefix_v6 = 64
max_connections = 5000
resume_connections = 4000
over_limit = "reset"
[[services.backends]]
address = "198.18.1.11"
port = 8080
weight = 3
zone = "dc1"
set = "orders.sh.a"
name = "w1"
heartbeat_ttl = "2s"
max_connections = 100
resume_connections = 80
[services.backends.health]
kind = "tcp"
port = 9000
[[services.backends]]
address = "198.18.1.12"
port = 8080
zone = "dc2"
group = "next"

[[services]]
name = "dns"
protocol = "udp"
vip = "198.18.100.53"
port = 53
scheduler = "fanout"
fanout_replies = "first"
announce = "arp"
[services.health]
kind = "udp"
payload_hex = "00ff10"
expect = "pong"
[[services.backends]]
address = "198.18.1.21"
port = 53
"#;
        rules::load_str(text, "every-key.toml")
            .unwrap()
            .services
            .to_vec()
    }

    #[test]
    fn every_key_of_a_service_round_trips_through_format_2() {
        for service in every_key() {
            let value = service_value(&service, true);
            let json: Value = serde_json::from_str(&value).unwrap();
            assert_eq!(json["format"], 2, "{value}");
            assert!(json.get("paths").is_none());
            let key = RuleKey::Service(service.name.clone());
            let Part::Service(part) = decode(&key, value.as_bytes()).unwrap() else {
                panic!("not a service");
            };
            assert_eq!(part.service, service, "{value}");
        }
        // The secret is written (gateways need it) but a service's Debug
        // form never shows it.
        let web = &every_key()[0];
        assert!(service_value(web, true).contains("4f1c0d8e2a7b9c3d5e6f"));
        assert!(!format!("{web:?}").contains("4f1c0d8e2a7b9c3d5e6f"));
    }

    #[test]
    fn a_service_format_1_carries_is_written_and_read_as_format_1() {
        let value = service_value(&web(), true);
        let json: Value = serde_json::from_str(&value).unwrap();
        assert_eq!(json["format"], 1, "{value}");
        // Any format-2 key makes it format 2, a backend's too.
        let mut named = web();
        named.backends[0].name = Some("w1".into());
        let json: Value = serde_json::from_str(&service_value(&named, true)).unwrap();
        assert_eq!(json["format"], 2);
        // A value written by hand in format 1 reads as it always did.
        let value = br#"{"format":1,"protocol":"tcp","vip":"198.18.100.10","port":80,
            "scheduler":"sh","maglev_table_size":251,"on_backend_down":"reset",
            "panic_threshold":20,"when_all_down":"closed",
            "backends":[{"address":"198.18.1.11","port":8080},
                        {"address":"198.18.1.12","port":8080,"weight":3,"zone":"dc1"}]}"#;
        let Part::Service(part) = decode(&service_key(), value).unwrap() else {
            panic!("not a service");
        };
        assert_eq!(part.service, web());
    }

    #[test]
    fn a_service_value_holds_no_paths_and_format_2_is_judged_by_the_files_reader() {
        let problems = |value: &str| decode(&service_key(), value.as_bytes()).unwrap_err();
        assert_eq!(
            problems(
                r#"{"format":2,"protocol":"tcp","vip":"198.18.100.10","port":80,
                "paths":[{"client":"198.18.0.0/16","backends":["w1"]}]}"#
            ),
            [
                "a service's value holds no paths: each distribution path of \"web\" is a key of \
              its own, paths/web/PREFIX beside services/web"
            ]
        );
        assert_eq!(
            problems(
                r#"{"format":2,"protocol":"tcp","vip":"198.18.100.10","port":80,
                "health":{"kind":"http","interval":"soon"},
                "backends":[{"address":"198.18.1.11","port":80}]}"#
            ),
            [
                "health of service \"web\": interval \"soon\" is not a duration: write a number \
              and a unit, such as \"500ms\", \"2s\" or \"1m\""
            ]
        );
    }
}
