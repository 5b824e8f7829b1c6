//! The health part of the model: the `[health]` defaults, what a service
//! and a backend set of their own, heartbeat TTLs and tokens, and the one
//! function that says which check a backend gets.
//!
//! The check itself — its keys, its defaults, what makes a value invalid
//! and the words that say so — is [`crate::health::check`]'s. The model
//! keeps the settings as written at each level (every key optional), so
//! that a source can say where each came from; [`check_of`] overlays
//! them, and the validator runs [`CheckSettings::validate`] over each
//! overlay and locates its problems at the level that set the key.
//!
//! What each level may set, and why:
//!
//! - `[health]`: every key of a check, and `initial` (what a backend not
//!   checked yet counts as; one setting for the whole gateway, as the
//!   prober starts every new target the same way).
//! - `[services.health]`: every key of a check, and `port` (probe another
//!   port than the backends', e.g. a sidecar's). Timing is the service's
//!   failover policy and what a check asks (path, status, payload) is a
//!   property of the application it serves, so both are set here, the
//!   same for every backend.
//! - `[services.backends.health]`: `kind` and `port` only: where and
//!   whether an instance is probed can differ from its siblings (its own
//!   health port, a legacy instance without the HTTP endpoint, `none` for
//!   one kept alive by heartbeats alone), while what a healthy answer is
//!   and how fast the service reacts stay the service's.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use super::{Backend, Service};
use crate::health::{Check, CheckErrors, CheckKindName, CheckSettings, InitialState};

/// The shortest heartbeat TTL: below it a heartbeat could not travel and
/// be read in time.
pub const MIN_HEARTBEAT_TTL: Duration = Duration::from_millis(50);
/// The longest heartbeat TTL (a day): beyond it a backend that stopped
/// would stay in rotation for longer than anyone would wait.
pub const MAX_HEARTBEAT_TTL: Duration = Duration::from_secs(86_400);

/// `[health]`: the check every backend gets unless its service or itself
/// says otherwise. The default checks nothing (`kind = "none"`): a config
/// without health settings runs as it did before checks existed.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct HealthSettings {
    /// The default check, as written.
    pub check: CheckSettings,
    /// What a backend whose check has not run yet counts as (default up;
    /// see [`InitialState`] for why).
    pub initial: InitialState,
}

/// A service's own health settings.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ServiceHealth {
    /// `[services.health]`: its keys in place of `[health]`'s.
    pub check: CheckSettings,
    /// `[services.health] port`: probe this port instead of each
    /// backend's own.
    pub port: Option<u16>,
    /// `heartbeat_ttl`: the TTL of its backends that do not set their own.
    pub heartbeat_ttl: Option<Duration>,
    /// `heartbeat_token`: what an agent's heartbeat for one of its
    /// backends must carry to be taken from the network. Without one the
    /// service takes heartbeats through the control API only.
    pub heartbeat_token: Option<Secret>,
    /// `[services.health] source`: where its backends' liveness comes from.
    pub source: HealthSource,
}

/// Where a service's backends' liveness comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum HealthSource {
    /// The gateway's own checks and heartbeats (the default).
    #[default]
    Checks,
    /// Keys in etcd (`PREFIX/v1/rules/health/SERVICE/BACKEND`, value
    /// `up`), written by whoever reports health: a backend is alive while
    /// its key says `up`. Every gateway reading the same keys holds the
    /// same liveness, so they pick the same backend for a flow.
    Etcd,
}

impl HealthSource {
    /// Its name in a config.
    pub fn name(self) -> &'static str {
        match self {
            HealthSource::Checks => "checks",
            HealthSource::Etcd => "etcd",
        }
    }
}

/// A backend's own health settings.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct BackendHealth {
    /// `health.kind`: another kind of check than its service's (`none`:
    /// not probed).
    pub kind: Option<CheckKindName>,
    /// `health.port`: probe this port instead of its own.
    pub port: Option<u16>,
    /// `heartbeat_ttl`: it is alive only while heartbeats arrive, each
    /// keeping it alive this long (its service's when unset).
    pub heartbeat_ttl: Option<Duration>,
}

impl BackendHealth {
    /// Whether it sets anything of a check (kind or port).
    pub fn overrides_check(&self) -> bool {
        self.kind.is_some() || self.port.is_some()
    }
}

/// A text that must not be shown: its `Debug` form hides it, and no view
/// or difference of the rules prints it.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(pub String);

impl Secret {
    /// The text.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The settings of backend `backend` of `service`: `[health]`'s, then the
/// service's over them, then the backend's kind. Validated, they are the
/// backend's check (see [`check_of`]).
pub fn settings_of(
    defaults: &HealthSettings,
    service: &Service,
    backend: Option<&Backend>,
) -> CheckSettings {
    let settings = defaults.check.overlaid(&service.health.check);
    match backend.and_then(|b| b.health.kind) {
        Some(kind) => settings.overlaid(&CheckSettings {
            kind: Some(kind),
            ..CheckSettings::default()
        }),
        None => settings,
    }
}

/// The check backend `backend` of `service` gets, and the address it is
/// probed at; an error only for settings the validator refuses (never for
/// a validated config).
pub fn check_of(
    defaults: &HealthSettings,
    service: &Service,
    backend: &Backend,
) -> Result<(Check, SocketAddr), CheckErrors> {
    let check = settings_of(defaults, service, Some(backend)).validate()?;
    let port = backend
        .health
        .port
        .or(service.health.port)
        .unwrap_or(backend.port);
    Ok((check, SocketAddr::new(backend.address, port)))
}

/// The heartbeat TTL of backend `backend` of `service`: its own, else its
/// service's.
pub fn heartbeat_ttl_of(service: &Service, backend: &Backend) -> Option<Duration> {
    backend
        .health
        .heartbeat_ttl
        .or(service.health.heartbeat_ttl)
}

/// A check key of a service's or a backend's `health` table as its place
/// names it: `interval` → `health.interval`.
pub(super) fn nested_key(key: &str) -> &'static str {
    match key {
        "kind" => "health.kind",
        "interval" => "health.interval",
        "timeout" => "health.timeout",
        "rise" => "health.rise",
        "fall" => "health.fall",
        "path" => "health.path",
        "host" => "health.host",
        "status" => "health.status",
        "payload" => "health.payload",
        "expect" => "health.expect",
        "port" => "health.port",
        "source" => "health.source",
        _ => "health",
    }
}

/// What a health problem is about, at the head of its message:
/// `[health]`, `health of service "web"`, `health of backend
/// 198.18.1.11:8080 in service "web"`.
pub(super) fn owner_of_service(service: &str) -> String {
    format!("health of service {service:?}")
}

/// A duration as the config writes it: `500ms`, `2s`, `1m`, `1h`, or
/// fractional seconds such as `1.5s`. The shortest form that is exact.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !d.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}us", d.as_micros())
    } else if ms.is_multiple_of(3_600_000) && ms > 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::CheckKind;

    fn service() -> Service {
        crate::rules::load_str(
            "[[services]]\nname = \"web\"\nprotocol = \"tcp\"\nvip = \"198.18.100.10\"\n\
             port = 80\n[[services.backends]]\naddress = \"198.18.1.11\"\nport = 8080\n",
            "t.toml",
        )
        .unwrap()
        .services
        .remove(0)
    }

    #[test]
    fn a_backend_gets_the_defaults_then_its_service_then_its_own_kind_and_port() {
        let mut s = service();
        let defaults = HealthSettings {
            check: CheckSettings {
                kind: Some(CheckKindName::Http),
                path: Some("/healthz".into()),
                fall: Some(5),
                ..CheckSettings::default()
            },
            initial: InitialState::Up,
        };
        let (check, at) = check_of(&defaults, &s, &s.backends[0]).unwrap();
        assert!(matches!(check.kind(), CheckKind::Http(h) if h.path() == "/healthz"));
        assert_eq!(check.timing().fall(), 5);
        assert_eq!(at, "198.18.1.11:8080".parse().unwrap());

        s.health.check.rise = Some(4);
        s.health.port = Some(9000);
        let (check, at) = check_of(&defaults, &s, &s.backends[0]).unwrap();
        assert_eq!((check.timing().rise(), check.timing().fall()), (4, 5));
        assert_eq!(at.port(), 9000);

        // The backend's kind drops the service's http keys, keeps its timing.
        s.backends[0].health.kind = Some(CheckKindName::Tcp);
        s.backends[0].health.port = Some(9001);
        let (check, at) = check_of(&defaults, &s, &s.backends[0]).unwrap();
        assert_eq!(check.kind(), &CheckKind::Tcp);
        assert_eq!(check.timing().rise(), 4);
        assert_eq!(at.port(), 9001);
        s.backends[0].health.kind = Some(CheckKindName::None);
        assert!(!check_of(&defaults, &s, &s.backends[0])
            .unwrap()
            .0
            .is_active());
    }

    #[test]
    fn ttl_falls_back_to_the_service_and_secrets_do_not_print() {
        let mut s = service();
        assert_eq!(heartbeat_ttl_of(&s, &s.backends[0]), None);
        s.health.heartbeat_ttl = Some(Duration::from_secs(3));
        assert_eq!(
            heartbeat_ttl_of(&s, &s.backends[0]),
            Some(Duration::from_secs(3))
        );
        s.backends[0].health.heartbeat_ttl = Some(Duration::from_millis(500));
        assert_eq!(
            heartbeat_ttl_of(&s, &s.backends[0]),
            Some(Duration::from_millis(500))
        );
        s.health.heartbeat_token = Some(Secret("0123456789abcdef".into()));
        assert!(!format!("{s:?}").contains("0123456789abcdef"));
    }

    #[test]
    fn durations_format_as_written() {
        let cases = [
            (Duration::from_millis(500), "500ms"),
            (Duration::from_secs(2), "2s"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::from_secs(120), "2m"),
            (Duration::from_secs(7200), "2h"),
            (Duration::ZERO, "0s"),
            (Duration::from_micros(1500), "1500us"),
        ];
        for (d, text) in cases {
            assert_eq!(format_duration(d), text);
        }
    }
}
