//! Decoding the health settings: `[health]`, `[services.health]`,
//! `[services.backends.health]`, heartbeat TTLs and tokens, and the
//! `[daemon]` keys of the heartbeat endpoint and the prober.
//!
//! As everywhere in decoding, only what cannot be put in the model is
//! reported here (a duration or a kind that does not parse, a number the
//! model's type cannot hold); whether a value that parses is allowed is
//! the validator's, in the health module's words.

use std::net::SocketAddr;

use toml::Spanned;

use super::Decoder;
use crate::health::{CheckError, CheckSettings};
use crate::rules::health::{nested_key, owner_of_service};
use crate::rules::parse;
use crate::rules::place::{Item, Place};
use crate::rules::raw::{RawBackend, RawCheckRef, RawDaemon, RawHealth, RawService};
use crate::rules::validate::{
    of_service, Range, HEALTH_MAX_IN_FLIGHT, HEARTBEAT_BURST, HEARTBEAT_RATE, PORT,
};
use crate::rules::{BackendHealth, DaemonSettings, HealthSettings, Secret, ServiceHealth};

impl Decoder {
    /// `[health]`.
    pub(super) fn health(&mut self, raw: &RawHealth) -> HealthSettings {
        let place = |key: &'static str| Place::field(Item::Health, key);
        let check = self.check_settings(raw.check(), &place, "[health]");
        let initial = raw.initial.as_ref().and_then(|value| {
            self.read(place("initial"), value, |t| {
                parse::initial_state(t).map_err(|e| format!("[health]: {e}"))
            })
        });
        HealthSettings {
            check,
            initial: initial.unwrap_or_default(),
        }
    }

    /// Service `i`'s `[services.health]`, `heartbeat_ttl` and
    /// `heartbeat_token`.
    pub(super) fn service_health(&mut self, i: usize, raw: &RawService) -> ServiceHealth {
        let name = raw.name.get_ref();
        let owner = owner_of_service(name);
        let place = |key: &'static str| Place::service(i, nested_key(key));
        let (check, port, source) = match &raw.health {
            Some(health) => {
                let check = self.check_settings(health.check(), &place, &owner);
                let port = health.port.as_ref().and_then(|p| {
                    self.int(p, place("port"), PORT, "health.port", || of_service(name))
                });
                let source = health.source.as_ref().and_then(|s| {
                    self.read(place("source"), s, |t| {
                        parse::health_source(t).map_err(|e| format!("{owner}: {e}"))
                    })
                });
                (check, port, source.unwrap_or_default())
            }
            None => (CheckSettings::default(), None, Default::default()),
        };
        let heartbeat_ttl = raw.heartbeat_ttl.as_ref().and_then(|value| {
            self.read(Place::service(i, "heartbeat_ttl"), value, |t| {
                parse::duration(t, "heartbeat_ttl", &of_service(name))
            })
        });
        ServiceHealth {
            check,
            port,
            heartbeat_ttl,
            heartbeat_token: raw
                .heartbeat_token
                .as_ref()
                .map(|t| Secret(t.get_ref().clone())),
            source,
        }
    }

    /// Backend `j` of service `i`: its `health` table and
    /// `heartbeat_ttl`. `context` names it in messages (` of backend
    /// ADDRESS:PORT in service "NAME"`).
    pub(super) fn backend_health(
        &mut self,
        (i, j): (usize, usize),
        raw: &RawBackend,
        context: &str,
    ) -> BackendHealth {
        let place = |key: &'static str| Place::backend(i, j, nested_key(key));
        let owner = format!("health{context}");
        let (kind, port) = match &raw.health {
            Some(health) => {
                let kind = health.kind.as_ref().and_then(|k| {
                    self.read(place("kind"), k, |t| {
                        parse::check_kind(t).map_err(|e| format!("{owner}: {e}"))
                    })
                });
                let port = health.port.as_ref().and_then(|p| {
                    self.int(p, place("port"), PORT, "health.port", || context.to_owned())
                });
                (kind, port)
            }
            None => (None, None),
        };
        let heartbeat_ttl = raw.heartbeat_ttl.as_ref().and_then(|value| {
            self.read(Place::backend(i, j, "heartbeat_ttl"), value, |t| {
                parse::duration(t, "heartbeat_ttl", context)
            })
        });
        BackendHealth {
            kind,
            port,
            heartbeat_ttl,
        }
    }

    /// The keys of one check table, each at `place(key)`; `owner` heads
    /// the messages. A value that cannot be read is left unset and stands
    /// in at its place, so the validator judges nothing of this level.
    fn check_settings(
        &mut self,
        raw: RawCheckRef<'_>,
        place: &dyn Fn(&'static str) -> Place,
        owner: &str,
    ) -> CheckSettings {
        let prefixed = |e: String| format!("{owner}: {e}");
        let kind = raw
            .kind
            .and_then(|v| self.read(place("kind"), v, |t| parse::check_kind(t).map_err(prefixed)));
        let mut duration = |value: Option<&Spanned<String>>, key: &'static str| {
            value.and_then(|v| {
                self.read(place(key), v, |t| {
                    parse::duration(t, key, "").map_err(|e| format!("{owner}: {e}"))
                })
            })
        };
        let interval = duration(raw.interval, "interval");
        let timeout = duration(raw.timeout, "timeout");
        let rise = raw
            .rise
            .and_then(|v| self.streak(v, place("rise"), owner, CheckError::RiseOutOfRange));
        let fall = raw
            .fall
            .and_then(|v| self.streak(v, place("fall"), owner, CheckError::FallOutOfRange));
        let status = raw.status.and_then(|v| {
            self.read(place("status"), v, |t| {
                parse::status_range(t).map_err(|e| format!("{owner}: {e}"))
            })
        });
        let payload = self.bytes(raw.payload, raw.payload_hex, place("payload"), owner);
        let expect = self.bytes(raw.expect, raw.expect_hex, place("expect"), owner);
        CheckSettings {
            kind,
            interval,
            timeout,
            rise,
            fall,
            path: raw.path.map(|v| v.get_ref().clone()),
            host: raw.host.map(|v| v.get_ref().clone()),
            status,
            payload,
            expect,
        }
    }

    /// `rise` or `fall`: a count the model holds as `u32`; one it cannot
    /// hold is out of range in the health module's words.
    fn streak(
        &mut self,
        value: &Spanned<i64>,
        place: Place,
        owner: &str,
        error: fn(u32) -> CheckError,
    ) -> Option<u32> {
        let v = *value.get_ref();
        match u32::try_from(v) {
            Ok(n) => Some(n),
            Err(_) => {
                // The health module's message, with the value as written.
                let message =
                    error(u32::MAX)
                        .to_string()
                        .replacen(&u32::MAX.to_string(), &v.to_string(), 1);
                self.fail(place, format!("{owner}: {message}"), v.to_string());
                None
            }
        }
    }

    /// `payload` or `expect`: the text's bytes, or the hex form's; not
    /// both.
    fn bytes(
        &mut self,
        text: Option<&Spanned<String>>,
        hex: Option<&Spanned<String>>,
        place: Place,
        owner: &str,
    ) -> Option<Vec<u8>> {
        let key = place.key.unwrap_or("payload");
        let key = key.strip_prefix("health.").unwrap_or(key);
        match (text, hex) {
            (Some(_), Some(hex)) => {
                let message = format!("{owner}: set {key} or {key}_hex, not both");
                self.fail(place, message, hex.get_ref().clone());
                None
            }
            (Some(text), None) => Some(text.get_ref().as_bytes().to_vec()),
            (None, Some(hex)) => {
                let hex_key = format!("{key}_hex");
                self.read(place, hex, |t| {
                    parse::hex(t, &hex_key).map_err(|e| format!("{owner}: {e}"))
                })
            }
            (None, None) => None,
        }
    }

    /// The `[daemon]` keys of the heartbeat endpoint and the prober.
    pub(super) fn daemon_health(&mut self, raw: &RawDaemon, d: &mut DaemonSettings) {
        let at = |key| Place::field(Item::Daemon, key);
        d.heartbeat_address = raw.heartbeat_address.as_ref().and_then(|value| {
            self.read(at("heartbeat_address"), value, |text| {
                text.parse::<SocketAddr>().map_err(|_| {
                    format!(
                        "daemon.heartbeat_address {text:?} is not an address and port such as \
                         \"198.18.1.1:7946\""
                    )
                })
            })
        });
        let fields: [(_, &str, Range, &mut u32); 3] = [
            (
                &raw.heartbeat_rate,
                "heartbeat_rate",
                HEARTBEAT_RATE,
                &mut d.heartbeat_rate,
            ),
            (
                &raw.heartbeat_burst,
                "heartbeat_burst",
                HEARTBEAT_BURST,
                &mut d.heartbeat_burst,
            ),
            (
                &raw.health_max_in_flight,
                "health_max_in_flight",
                HEALTH_MAX_IN_FLIGHT,
                &mut d.health_max_in_flight,
            ),
        ];
        for (value, field, range, slot) in fields {
            let key = format!("daemon.{field}");
            if let Some(n) = value
                .as_ref()
                .and_then(|v| self.int(v, at(field), range, &key, String::new))
            {
                *slot = n;
            }
        }
    }
}
