//! The health part of a difference: a service's check, port, heartbeat
//! TTL and token (whose value is never shown), and each kept backend's
//! own kind, probe port and TTL.

use hashbrown::HashMap;
use std::net::IpAddr;

use flowgate_api::{BackendChange, ConfigDiff, ServiceChange};

use crate::health::CheckSettings;
use crate::rules::{format_duration, Backend, Service};

/// The keys a check's settings set, as a config writes them:
/// `kind=http interval=2s path=/healthz` (`default` when none).
pub fn describe(settings: &CheckSettings, port: Option<u16>) -> String {
    let mut keys: Vec<String> = Vec::new();
    if let Some(kind) = settings.kind {
        keys.push(format!("kind={kind}"));
    }
    for (key, value) in [
        ("interval", settings.interval),
        ("timeout", settings.timeout),
    ] {
        if let Some(value) = value {
            keys.push(format!("{key}={}", format_duration(value)));
        }
    }
    for (key, value) in [("rise", settings.rise), ("fall", settings.fall)] {
        if let Some(value) = value {
            keys.push(format!("{key}={value}"));
        }
    }
    for (key, value) in [("path", &settings.path), ("host", &settings.host)] {
        if let Some(value) = value {
            keys.push(format!("{key}={value}"));
        }
    }
    if let Some((low, high)) = settings.status {
        keys.push(format!("status={low}-{high}"));
    }
    for (key, value) in [("payload", &settings.payload), ("expect", &settings.expect)] {
        if let Some(value) = value {
            keys.push(format!("{key}={} bytes", value.len()));
        }
    }
    if let Some(port) = port {
        keys.push(format!("port={port}"));
    }
    if keys.is_empty() {
        "default".to_owned()
    } else {
        keys.join(" ")
    }
}

fn ttl(value: Option<std::time::Duration>) -> String {
    value.map_or_else(|| "none".to_owned(), format_duration)
}

/// The health differences of a service in both configs, and of its
/// backends in both.
pub(super) fn service_health_changes(before: &Service, after: &Service, d: &mut ConfigDiff) {
    let name = &after.name;
    let (old, new) = (&before.health, &after.health);
    for (field, from, to) in [
        (
            "health",
            describe(&old.check, old.port),
            describe(&new.check, new.port),
        ),
        (
            "heartbeat_ttl",
            ttl(old.heartbeat_ttl),
            ttl(new.heartbeat_ttl),
        ),
        (
            "heartbeat_token",
            set_or_none(old.heartbeat_token.is_some()),
            set_or_none(new.heartbeat_token.is_some()),
        ),
    ] {
        if from != to {
            d.services_changed.push(ServiceChange {
                service: name.clone(),
                field: field.to_owned(),
                from,
                to,
            });
        }
    }
    if old.heartbeat_token.is_some()
        && new.heartbeat_token.is_some()
        && old.heartbeat_token != new.heartbeat_token
    {
        d.services_changed.push(ServiceChange {
            service: name.clone(),
            field: "heartbeat_token".to_owned(),
            from: "set".to_owned(),
            to: "set (another)".to_owned(),
        });
    }

    let old_backends: HashMap<(IpAddr, u16), &Backend> = before
        .backends
        .iter()
        .map(|b| ((b.address, b.port), b))
        .collect();
    for backend in &after.backends {
        let Some(old) = old_backends.get(&(backend.address, backend.port)) else {
            continue;
        };
        let (was, is) = (&old.health, &backend.health);
        for (field, from, to) in [
            (
                "heartbeat_ttl",
                was.heartbeat_ttl.map(format_duration),
                is.heartbeat_ttl.map(format_duration),
            ),
            (
                "health.kind",
                was.kind.map(|k| k.to_string()),
                is.kind.map(|k| k.to_string()),
            ),
            (
                "health.port",
                was.port.map(|p| p.to_string()),
                is.port.map(|p| p.to_string()),
            ),
        ] {
            if from != to {
                d.backends_changed.push(BackendChange {
                    service: name.clone(),
                    address: backend.address,
                    port: backend.port,
                    field: field.to_owned(),
                    from,
                    to,
                });
            }
        }
    }
}

fn set_or_none(set: bool) -> String {
    if set { "set" } else { "none" }.to_owned()
}

#[cfg(test)]
mod tests {
    use super::super::diff;
    use crate::rules::load_str;

    const RULES: &str = "[[services]]\nname = \"web\"\nprotocol = \"tcp\"\n\
        vip = \"198.18.100.10\"\nport = 80\n";
    const BACKEND: &str = "[[services.backends]]\naddress = \"198.18.1.11\"\nport = 8080\n";

    #[test]
    fn health_changes_are_reported_and_tokens_never_shown() {
        let old = load_str(&format!("{RULES}{BACKEND}"), "a.toml").unwrap();
        let new = load_str(
            &format!(
                "[health]\nkind = \"tcp\"\n{RULES}heartbeat_token = \"0123456789abcdef\"\n\
                 [services.health]\ninterval = \"1s\"\ntimeout = \"200ms\"\n{BACKEND}\
                 heartbeat_ttl = \"3s\"\n[services.backends.health]\nport = 9000\n"
            ),
            "b.toml",
        )
        .unwrap();
        let d = diff(&old, &new);
        assert_eq!(d.settings_changed, ["health"]);
        let fields: Vec<(&str, &str, &str)> = d
            .services_changed
            .iter()
            .map(|c| (c.field.as_str(), c.from.as_str(), c.to.as_str()))
            .collect();
        assert_eq!(
            fields,
            [
                ("health", "default", "interval=1s timeout=200ms"),
                ("heartbeat_token", "none", "set"),
            ]
        );
        let backends: Vec<(&str, Option<&str>)> = d
            .backends_changed
            .iter()
            .map(|c| (c.field.as_str(), c.to.as_deref()))
            .collect();
        assert_eq!(
            backends,
            [("heartbeat_ttl", Some("3s")), ("health.port", Some("9000"))]
        );
        assert!(!format!("{d:?}").contains("0123456789abcdef"));
    }
}
