//! What a key's value holds, format version 1, and how it becomes the
//! model.
//!
//! Every value is one JSON object with a `"format"` number, the version of
//! the value's format (1). A gateway refuses a value of a format it does
//! not know, as a bad key: so a fleet is upgraded before anyone writes a
//! newer format, and an old gateway never half-reads one.
//!
//! - `rules/gateway`: the `[gateway]` table of a config file
//!   (`maglev_table_size`).
//! - `rules/services/NAME`: a `[[services]]` entry as a config file has
//!   it, backends inside, with the same keys and value types. `name` may
//!   be left out; if it is given it must be the key's. A service that sets
//!   no `maglev_table_size` takes the gateway's.
//! - `rules/classes/PREFIX`: `{"format": 1, "set": "orders.sh.a",
//!   "zone": "dc1"}`, at least one of the two.
//! - `rules/paths/SERVICE/PREFIX`: `{"format": 1, "backends": ["orders-7"]}`,
//!   1 to 16 backend names.
//!
//! A service or the gateway settings are read by the config file's own
//! reader: the value is turned into the TOML a file would hold and read by
//! [`rules::load_str`], so that a value in etcd
//! and the same table in a file are refused with the same words. (A
//! direct entry point into the reader, taking a value rather than text,
//! would save the round trip; it is cheap next to etcd's own costs.)

use serde_json::{Map, Value};

use crate::route::{Prefix, MAX_PATH_BACKENDS};
use crate::rules::{self, GatewaySettings, Service, MAX_MAGLEV_TABLE_SIZE, MAX_NAME_LEN};

use super::layout::RuleKey;

/// The value format this gateway reads and writes.
pub const VALUE_FORMAT: i64 = 1;

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
    let map = envelope(value).map_err(|e| vec![e])?;
    match key {
        RuleKey::Gateway => gateway(map).map(Part::Gateway),
        RuleKey::Service(name) => service(name, map).map(|part| Part::Service(Box::new(part))),
        RuleKey::Class(prefix) => class(*prefix, map).map(Part::Class),
        RuleKey::Path { service, prefix } => path(service, *prefix, map).map(Part::Path),
    }
}

/// The object inside a value, once its format is known to be ours.
fn envelope(value: &[u8]) -> Result<Map<String, Value>, String> {
    let text = std::str::from_utf8(value).map_err(|_| "the value is not UTF-8".to_owned())?;
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("the value is not JSON: {e}"))?;
    let Value::Object(mut map) = value else {
        return Err("the value is not a JSON object".into());
    };
    match map.remove("format") {
        None => Err(format!(
            "the value has no \"format\": every value carries its format version \
             (this gateway reads {VALUE_FORMAT})"
        )),
        Some(Value::Number(n)) if n.as_i64() == Some(VALUE_FORMAT) => Ok(map),
        Some(Value::Number(n)) if n.as_i64().is_some_and(|n| n > VALUE_FORMAT) => Err(format!(
            "format {n} is newer than this gateway reads ({VALUE_FORMAT}): upgrade the \
             gateways before writing it"
        )),
        Some(other) => Err(format!(
            "\"format\" {other} is not a format this gateway reads ({VALUE_FORMAT})"
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
fn class(prefix: Prefix, map: Map<String, Value>) -> Result<ClassEntry, Vec<String>> {
    let value: ClassValue = serde_json::from_value(Value::Object(map))
        .map_err(|e| vec![format!("client class {prefix}: {e}")])?;
    if value.set.is_none() && value.zone.is_none() {
        return Err(vec![format!(
            "client class {prefix} has neither a set nor a zone"
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
        "format": VALUE_FORMAT,
        "maglev_table_size": gateway.maglev_table_size,
    })
    .to_string()
}

/// The value of `rules/services/NAME` for `service`, with its
/// `maglev_table_size` written only if `sets_table_size` (otherwise the
/// gateway's applies). Settings at their default are left out, as a
/// config file would leave them out.
pub fn service_value(service: &Service, sets_table_size: bool) -> String {
    let mut map = Map::new();
    map.insert("format".into(), VALUE_FORMAT.into());
    map.insert("name".into(), service.name.clone().into());
    map.insert("protocol".into(), service.protocol.name().into());
    map.insert("vip".into(), service.vip.to_string().into());
    map.insert("port".into(), service.port.into());
    map.insert("scheduler".into(), service.scheduler.name().into());
    if sets_table_size {
        map.insert("maglev_table_size".into(), service.maglev_table_size.into());
    }
    let failover = &service.failover;
    if let Some(policy) = failover.on_backend_down {
        map.insert("on_backend_down".into(), policy.name().into());
    }
    if failover.panic_threshold != 0 {
        map.insert("panic_threshold".into(), failover.panic_threshold.into());
    }
    if failover.when_all_down != rules::WhenAllDown::default() {
        map.insert("when_all_down".into(), failover.when_all_down.name().into());
    }
    let backends: Vec<Value> = service
        .backends
        .iter()
        .map(|b| {
            let mut backend = Map::new();
            backend.insert("address".into(), b.address.to_string().into());
            backend.insert("port".into(), b.port.into());
            backend.insert("weight".into(), b.weight.into());
            for (key, label) in [("zone", &b.zone), ("set", &b.set), ("group", &b.group)] {
                if let Some(label) = label {
                    backend.insert(key.into(), label.clone().into());
                }
            }
            Value::Object(backend)
        })
        .collect();
    map.insert("backends".into(), Value::Array(backends));
    Value::Object(map).to_string()
}

/// The value of `rules/classes/PREFIX` for `class`.
pub fn class_value(class: &ClassEntry) -> String {
    let mut map = Map::new();
    map.insert("format".into(), VALUE_FORMAT.into());
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
    serde_json::json!({ "format": VALUE_FORMAT, "backends": path.backends }).to_string()
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
            ["the value has no \"format\": every value carries its format version (this gateway reads 1)"]
        );
        assert_eq!(
            problems(br#"{"format":2}"#),
            ["format 2 is newer than this gateway reads (1): upgrade the gateways before writing it"]
        );
        assert_eq!(
            problems(br#"{"format":"1"}"#),
            ["\"format\" \"1\" is not a format this gateway reads (1)"]
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
            ["client class 198.18.0.0/16 has neither a set nor a zone"]
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
}
