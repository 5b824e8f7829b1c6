//! The health rules: each check a backend gets, its port, its heartbeat
//! TTL, its service's token, and the heartbeat endpoint's `[daemon]`
//! keys.
//!
//! What makes a check invalid is the health module's
//! ([`CheckSettings::validate`]): it is run over each level's overlay —
//! `[health]` alone, then `[health]` under each service's settings, then
//! under each backend's kind — and each problem is located at the most
//! specific level that set one of the keys it is about (a timeout set in
//! `[health]` that is too long for a service's interval is the service's
//! problem, at its `interval`). A problem whose keys all come from a less
//! specific level was reported there, once, not again for every service
//! that inherits it.

use std::time::Duration;

use super::Validator;
use crate::health::heartbeat::HeartbeatToken;
use crate::health::{CheckError, CheckSettings};
use crate::rules::health::{nested_key, owner_of_service};
use crate::rules::place::{Item, Place};
use crate::rules::validate::{
    address_problem, of_backend, of_service, shown, HEALTH_MAX_IN_FLIGHT, HEARTBEAT_BURST,
    HEARTBEAT_RATE, PORT,
};
use crate::rules::{
    format_duration, Backend, HealthSource, Service, MAX_HEARTBEAT_TTL, MIN_HEARTBEAT_TTL,
};

/// The keys of a check's settings, in the order the health module checks
/// them.
const CHECK_KEYS: [&str; 10] = [
    "kind", "interval", "timeout", "rise", "fall", "path", "host", "status", "payload", "expect",
];

/// A level of health settings.
#[derive(Clone, Copy)]
enum Level {
    /// `[health]`.
    Defaults,
    /// `[services.health]` of service `i`.
    Service(usize),
    /// `[services.backends.health]` of backend `j` of service `i`.
    Backend(usize, usize),
}

impl Level {
    fn place(self, key: &'static str) -> Place {
        match self {
            Level::Defaults => Place::field(Item::Health, key),
            Level::Service(i) => Place::service(i, nested_key(key)),
            Level::Backend(i, j) => Place::backend(i, j, nested_key(key)),
        }
    }
}

/// Whether `settings` set `key`.
fn is_set(settings: &CheckSettings, key: &str) -> bool {
    match key {
        "kind" => settings.kind.is_some(),
        "interval" => settings.interval.is_some(),
        "timeout" => settings.timeout.is_some(),
        "rise" => settings.rise.is_some(),
        "fall" => settings.fall.is_some(),
        "path" => settings.path.is_some(),
        "host" => settings.host.is_some(),
        "status" => settings.status.is_some(),
        "payload" => settings.payload.is_some(),
        "expect" => settings.expect.is_some(),
        _ => false,
    }
}

/// The keys a problem is about: its own first, then the one it is
/// judged against.
fn involved(error: &CheckError) -> [&'static str; 2] {
    match error {
        CheckError::TimeoutNotBelowInterval { .. } => ["timeout", "interval"],
        CheckError::UdpWithoutPayload => ["payload", "kind"],
        CheckError::NotForKind { key, .. } => [key, "kind"],
        other => [other.key(), other.key()],
    }
}

impl Validator<'_> {
    /// The settings a level sets itself.
    fn level_settings(&self, level: Level) -> Option<CheckSettings> {
        let config = self.config;
        match level {
            Level::Defaults => Some(config.health.check.clone()),
            Level::Service(i) => Some(config.services.get(i)?.health.check.clone()),
            Level::Backend(i, j) => Some(CheckSettings {
                kind: config.services.get(i)?.backends.get(j)?.health.kind,
                ..CheckSettings::default()
            }),
        }
    }

    /// Whether every key a level sets was read (none is a stand-in).
    fn level_known(&self, level: Level) -> bool {
        CHECK_KEYS.iter().all(|&key| self.known(level.place(key)))
    }

    /// `[health]`: its check on its own. Whether it could be judged (no
    /// value of it is a stand-in): its services' overlays depend on it.
    pub(super) fn health_defaults(&mut self) -> bool {
        if !self.level_known(Level::Defaults) {
            return false;
        }
        let errors = match self.config.health.check.validate() {
            Ok(_) => return true,
            Err(errors) => errors.0,
        };
        for error in errors {
            let key = involved(&error)
                .into_iter()
                .find(|k| is_set(&self.config.health.check, k))
                .unwrap_or(error.key());
            self.report(Level::Defaults.place(key), format!("[health]: {error}"));
        }
        true
    }

    /// The overlay of `levels` (least specific first), reported at the
    /// last level when that sets one of a problem's keys.
    fn overlay(&mut self, levels: &[Level], owner: &dyn Fn() -> String) {
        let Some((&last, _)) = levels.split_last() else {
            return;
        };
        let mut settings = CheckSettings::default();
        let mut own = Vec::with_capacity(levels.len());
        for &level in levels {
            let Some(s) = self.level_settings(level) else {
                return;
            };
            settings = settings.overlaid(&s);
            own.push(s);
        }
        let Some(last_own) = own.last() else {
            return;
        };
        let Err(errors) = settings.validate() else {
            return;
        };
        for error in errors.0 {
            let key = involved(&error).into_iter().find(|k| is_set(last_own, k));
            if let Some(key) = key {
                self.report(last.place(key), format!("{}: {error}", owner()));
            }
        }
    }

    /// Service `i`'s health: its check under `[health]`, each backend's
    /// under it, ports, heartbeat TTLs and its token. `defaults_known`:
    /// `[health]` could be judged.
    pub(super) fn service_health(&mut self, i: usize, service: &Service, defaults_known: bool) {
        let name = service.name.as_str();
        if service.health.source == HealthSource::Etcd {
            self.etcd_source(i, service);
        }
        let service_known = defaults_known && self.level_known(Level::Service(i));
        if service_known && service.health.check != CheckSettings::default() {
            self.overlay(&[Level::Defaults, Level::Service(i)], &|| {
                owner_of_service(name)
            });
        }
        if let Some(port) = service.health.port {
            let place = Level::Service(i).place("port");
            self.in_range(place, port.into(), PORT, "health.port", || of_service(name));
        }
        if let Some(ttl) = service.health.heartbeat_ttl {
            self.ttl(Place::service(i, "heartbeat_ttl"), ttl, &of_service(name));
        }
        if let Some(token) = &service.health.heartbeat_token {
            if let Err(e) = HeartbeatToken::new(token.expose()) {
                let message = format!("heartbeat_token of service {name:?}: {e}");
                self.report(Place::service(i, "heartbeat_token"), message);
            }
        }
        for (j, backend) in service.backends.iter().enumerate() {
            let health = &backend.health;
            if health.kind.is_none() && health.port.is_none() && health.heartbeat_ttl.is_none() {
                continue;
            }
            let provenance = self.provenance;
            let context = of_backend(
                &shown(
                    provenance,
                    Place::backend(i, j, "address"),
                    &backend.address,
                ),
                &shown(provenance, Place::backend(i, j, "port"), &backend.port),
                name,
            );
            self.backend_health(i, j, backend, service_known, &context);
        }
    }

    /// Service `i` takes its liveness from etcd: every setting that makes
    /// the gateway judge health itself would be ignored, so each is
    /// refused where it is written.
    fn etcd_source(&mut self, i: usize, service: &Service) {
        let name = service.name.as_str();
        let ignored = |what: &str| {
            format!(
                "health of service {name:?}: {what} would be ignored: with source = \"etcd\" \
                 its backends' liveness is the health keys in etcd; remove it"
            )
        };
        let c = &service.health.check;
        let check_keys = [
            ("kind", c.kind.is_some()),
            ("interval", c.interval.is_some()),
            ("timeout", c.timeout.is_some()),
            ("rise", c.rise.is_some()),
            ("fall", c.fall.is_some()),
            ("path", c.path.is_some()),
            ("host", c.host.is_some()),
            ("status", c.status.is_some()),
            ("payload", c.payload.is_some()),
            ("expect", c.expect.is_some()),
            ("port", service.health.port.is_some()),
        ];
        for (key, set) in check_keys {
            if set {
                let message = ignored(&format!("probe setting health.{key}"));
                self.report(Place::service(i, nested_key(key)), message);
            }
        }
        if service.health.heartbeat_ttl.is_some() {
            self.report(Place::service(i, "heartbeat_ttl"), ignored("heartbeat_ttl"));
        }
        if service.health.heartbeat_token.is_some() {
            self.report(
                Place::service(i, "heartbeat_token"),
                ignored("heartbeat_token"),
            );
        }
        if service.failover.panic_threshold > 0 {
            // The tables of such a service are built over every weighted
            // backend, whatever its liveness, so that two gateways build
            // the same ones; panic mode would make them depend on when.
            self.report(
                Place::service(i, "panic_threshold"),
                ignored("panic_threshold"),
            );
        }
        for (j, backend) in service.backends.iter().enumerate() {
            let h = &backend.health;
            for (key, set) in [
                ("health.kind", h.kind.is_some()),
                ("health.port", h.port.is_some()),
                ("heartbeat_ttl", h.heartbeat_ttl.is_some()),
            ] {
                if set {
                    self.report(
                        Place::backend(i, j, key),
                        ignored(&format!(
                            "backend {}:{}'s {key}",
                            backend.address, backend.port
                        )),
                    );
                }
            }
        }
    }

    /// Backend `j` of service `i`: its kind under its service's check,
    /// its probe port and its TTL. `context` names it.
    fn backend_health(
        &mut self,
        i: usize,
        j: usize,
        backend: &Backend,
        service_known: bool,
        context: &str,
    ) {
        let level = Level::Backend(i, j);
        if service_known && backend.health.kind.is_some() && self.known(level.place("kind")) {
            let owner = format!("health{context}");
            self.overlay(&[Level::Defaults, Level::Service(i), level], &|| {
                owner.clone()
            });
        }
        if let Some(port) = backend.health.port {
            self.in_range(
                level.place("port"),
                port.into(),
                PORT,
                "health.port",
                || context.to_owned(),
            );
        }
        if let Some(ttl) = backend.health.heartbeat_ttl {
            self.ttl(Place::backend(i, j, "heartbeat_ttl"), ttl, context);
        }
    }

    /// A heartbeat TTL: more than 0, within its bounds.
    fn ttl(&mut self, place: Place, ttl: Duration, context: &str) {
        if !self.known(place) {
            return;
        }
        let message = if ttl.is_zero() {
            format!("heartbeat_ttl{context} must be more than 0")
        } else if !(MIN_HEARTBEAT_TTL..=MAX_HEARTBEAT_TTL).contains(&ttl) {
            format!(
                "heartbeat_ttl {}{context} is out of range {}..={}",
                format_duration(ttl),
                format_duration(MIN_HEARTBEAT_TTL),
                format_duration(MAX_HEARTBEAT_TTL)
            )
        } else {
            return;
        };
        self.report(place, message);
    }

    /// The `[daemon]` keys of the heartbeat endpoint and the prober. The
    /// endpoint takes heartbeats on the management address: never a VIP,
    /// where it would sit on the data path, nor every address at once.
    pub(super) fn daemon_health(&mut self) {
        let daemon = &self.config.daemon;
        let at = |key| Place::field(Item::Daemon, key);
        for (value, field, range) in [
            (daemon.heartbeat_rate, "heartbeat_rate", HEARTBEAT_RATE),
            (daemon.heartbeat_burst, "heartbeat_burst", HEARTBEAT_BURST),
            (
                daemon.health_max_in_flight,
                "health_max_in_flight",
                HEALTH_MAX_IN_FLIGHT,
            ),
        ] {
            let key = format!("daemon.{field}");
            self.in_range(at(field), value.into(), range, &key, String::new);
        }
        let Some(address) = daemon.heartbeat_address else {
            return;
        };
        let place = at("heartbeat_address");
        if !self.known(place) {
            return;
        }
        let key = "daemon.heartbeat_address";
        let ip = address.ip();
        let problem = if ip.is_unspecified() {
            Some(format!(
                "{key} {address} is the unspecified address: give the management address to \
                 take heartbeats on (never a VIP)"
            ))
        } else if let Some(problem) = address_problem(ip).filter(|_| !ip.is_loopback()) {
            Some(format!("{key} {address} {problem}"))
        } else if address.port() == 0 {
            Some(format!(
                "{key} {address} has port 0: give the UDP port agents send heartbeats to"
            ))
        } else {
            self.config.services.iter().find(|s| s.vip == ip).map(|s| {
                format!(
                    "{key} {address} is the VIP of service {:?}: heartbeats are taken on \
                         the management address, never on a VIP",
                    s.name
                )
            })
        };
        if let Some(message) = problem {
            self.report(place, message);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::rules::load_str;

    const SERVICE: &str = "[[services]]\nname = \"web\"\nprotocol = \"tcp\"\n\
        vip = \"198.18.100.10\"\nport = 80\n";
    const BACKEND: &str = "[[services.backends]]\naddress = \"198.18.1.11\"\nport = 8080\n";

    /// The one problem of `text`, as `file:line:column: reason`.
    fn problem(text: &str) -> String {
        let error = load_str(text, "t.toml").expect_err("config was accepted");
        let problems: Vec<String> = error.problems().iter().map(|p| p.to_string()).collect();
        assert_eq!(problems.len(), 1, "{problems:#?}");
        problems[0].clone()
    }

    #[test]
    fn a_health_source_from_etcd_refuses_what_it_would_ignore_at_its_line() {
        let ok = load_str(
            &format!("{SERVICE}[services.health]\nsource = \"etcd\"\n{BACKEND}"),
            "t.toml",
        )
        .unwrap();
        assert_eq!(
            ok.services[0].health.source,
            crate::rules::HealthSource::Etcd
        );
        let cases = [
            (
                format!("{SERVICE}[services.health]\nsource = \"etcd\"\ninterval = \"1s\"\n{BACKEND}"),
                "t.toml:8:12: health of service \"web\": probe setting health.interval would be ignored",
            ),
            (
                format!("{SERVICE}heartbeat_ttl = \"2s\"\n[services.health]\nsource = \"etcd\"\n{BACKEND}"),
                "t.toml:6:17: health of service \"web\": heartbeat_ttl would be ignored",
            ),
            (
                format!("{SERVICE}panic_threshold = 30\n[services.health]\nsource = \"etcd\"\n{BACKEND}"),
                "t.toml:6:19: health of service \"web\": panic_threshold would be ignored",
            ),
            (
                format!("{SERVICE}[services.health]\nsource = \"etcd\"\n{BACKEND}health.kind = \"tcp\"\n"),
                "t.toml:11:15: health of service \"web\": backend 198.18.1.11:8080's health.kind would be ignored",
            ),
            (
                format!("{SERVICE}[services.health]\nsource = \"consul\"\n{BACKEND}"),
                "t.toml:7:10: health of service \"web\": health source \"consul\" is unknown: use \"checks\" or \"etcd\"",
            ),
        ];
        for (text, want) in cases {
            let got = problem(&text);
            assert!(got.starts_with(want), "{got}\nwant {want}");
        }
    }

    #[test]
    fn a_bad_default_check_is_refused_at_its_line() {
        let cases = [
            (
                "interval = \"0s\"",
                "t.toml:2:12: [health]: interval must be more than 0",
            ),
            (
                "kind = \"http\"\npath = \"healthz\"",
                "t.toml:3:8: [health]: http path \"healthz\" must start with '/'",
            ),
            (
                "kind = \"udp\"",
                "t.toml:2:8: [health]: a udp check needs a payload to send",
            ),
            (
                "kind = \"ping\"",
                "t.toml:2:8: [health]: check kind \"ping\" is unknown: use tcp, http, udp or none",
            ),
            (
                "interval = \"2\"",
                "t.toml:2:12: [health]: interval \"2\" is not a duration",
            ),
        ];
        for (keys, want) in cases {
            let got = problem(&format!("[health]\n{keys}\n{SERVICE}{BACKEND}"));
            assert!(got.starts_with(want), "{keys}: {got}");
        }
    }

    #[test]
    fn a_timeout_not_below_the_interval_is_refused_where_it_is_set() {
        let got = problem(&format!(
            "[health]\nkind = \"tcp\"\ninterval = \"1s\"\ntimeout = \"1s\"\n{SERVICE}{BACKEND}"
        ));
        assert!(got.starts_with("t.toml:4:11: [health]: timeout"), "{got}");
        assert!(got.contains("interval"), "{got}");
        // The service shortens the interval under [health]'s timeout: the
        // service's interval is the problem, on its line.
        let got = problem(&format!(
            "[health]\nkind = \"tcp\"\ntimeout = \"1500ms\"\n{SERVICE}\
             [services.health]\ninterval = \"1s\"\n{BACKEND}"
        ));
        assert!(
            got.starts_with("t.toml:10:12: health of service \"web\": timeout"),
            "{got}"
        );
    }

    #[test]
    fn a_bad_service_or_backend_setting_is_refused_at_its_line() {
        let got = problem(&format!(
            "{SERVICE}[services.health]\nkind = \"udp\"\n{BACKEND}"
        ));
        assert_eq!(
            got,
            "t.toml:7:8: health of service \"web\": a udp check needs a payload to send"
        );
        let got = problem(&format!("{SERVICE}heartbeat_ttl = \"0s\"\n{BACKEND}"));
        assert_eq!(
            got,
            "t.toml:6:17: heartbeat_ttl of service \"web\" must be more than 0"
        );
        let got = problem(&format!("{SERVICE}{BACKEND}heartbeat_ttl = \"0ms\"\n"));
        assert!(got.starts_with("t.toml:9:17: heartbeat_ttl"), "{got}");
        assert!(got.ends_with("must be more than 0"), "{got}");
        let got = problem(&format!(
            "{SERVICE}[services.health]\nkind = \"http\"\npath = \"/h\"\n{BACKEND}\
             [services.backends.health]\nkind = \"udp\"\n"
        ));
        assert!(got.starts_with("t.toml:13:8: health"), "{got}");
        assert!(got.contains("a udp check needs a payload to send"), "{got}");
        let got = problem(&format!("{SERVICE}heartbeat_token = \"short\"\n{BACKEND}"));
        assert!(
            got.starts_with("t.toml:6:19: heartbeat_token of service \"web\""),
            "{got}"
        );
    }

    #[test]
    fn the_heartbeat_endpoint_is_never_on_a_vip() {
        let got = problem(&format!(
            "[daemon]\nheartbeat_address = \"198.18.100.10:7946\"\n{SERVICE}{BACKEND}"
        ));
        assert!(
            got.starts_with("t.toml:2:21: daemon.heartbeat_address"),
            "{got}"
        );
        assert!(got.contains("VIP of service \"web\""), "{got}");
        let got = problem(&format!(
            "[daemon]\nheartbeat_address = \"0.0.0.0:7946\"\n{SERVICE}{BACKEND}"
        ));
        assert!(got.contains("unspecified"), "{got}");
        load_str(
            &format!("[daemon]\nheartbeat_address = \"127.0.0.1:7946\"\n{SERVICE}{BACKEND}"),
            "t.toml",
        )
        .expect("a loopback heartbeat address is fine");
    }

    #[test]
    fn good_health_settings_load() {
        let config = load_str(
            &format!(
                "[health]\nkind = \"tcp\"\ninterval = \"2s\"\ntimeout = \"500ms\"\nrise = 2\n\
                 fall = 3\n{SERVICE}heartbeat_ttl = \"5s\"\n[services.health]\nkind = \"http\"\n\
                 path = \"/healthz\"\nstatus = \"200-299\"\nport = 9000\n{BACKEND}\
                 [services.backends.health]\nkind = \"none\"\n"
            ),
            "t.toml",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let s = &config.services[0];
        assert_eq!(s.health.port, Some(9000));
        assert_eq!(
            s.health.heartbeat_ttl,
            Some(std::time::Duration::from_secs(5))
        );
        assert_eq!(
            s.backends[0].health.kind,
            Some(crate::health::CheckKindName::None)
        );
    }
}
