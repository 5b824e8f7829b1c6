//! What changes between two configs, as an operator reads it: services
//! added, removed or changed; backends added, removed, reweighted or
//! relabelled; other sections that differ.
//!
//! Services are matched by name and backends by (address, port) within
//! their service. The backends of an added (removed) service count as
//! added (removed). Entries come in config order: added and changed ones in
//! the new config's, removed ones in the old config's. Order alone is no
//! change: the compiled tables do not depend on it. The daemon computes
//! the difference (its `control::diff`); these are the types it travels in.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// The difference between a running config and the next one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigDiff {
    /// Services in the new config only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services_added: Vec<ServiceSummary>,
    /// Services in the old config only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services_removed: Vec<ServiceSummary>,
    /// Fields of services in both that differ (one entry per field).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services_changed: Vec<ServiceChange>,
    /// Backends in the new config only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends_added: Vec<BackendSummary>,
    /// Backends in the old config only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends_removed: Vec<BackendSummary>,
    /// Backends in both whose weight differs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends_reweighted: Vec<Reweight>,
    /// Backends in both whose zone, set or group label differs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends_relabelled: Vec<Relabel>,
    /// Backends in both whose health settings differ (`heartbeat_ttl`,
    /// `health.kind`, `health.port`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends_changed: Vec<BackendChange>,
    /// Client classes in the new config only, or changed there (a class
    /// whose SET or zone changed is removed and added again).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes_added: Vec<crate::ClassView>,
    /// Client classes in the old config only, or changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes_removed: Vec<crate::ClassView>,
    /// Other sections that differ: `gateway`, `daemon`, `flows`,
    /// `health`, `interfaces`, `neighbours`, `routing` (its zone priority
    /// or subset memory limit; classes are listed above).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub settings_changed: Vec<String>,
}

impl ConfigDiff {
    /// Whether nothing differs.
    pub fn is_empty(&self) -> bool {
        self.change_count() == 0
    }

    /// How many entries the diff has, over all its lists.
    pub fn change_count(&self) -> usize {
        self.services_added.len()
            + self.services_removed.len()
            + self.services_changed.len()
            + self.backends_added.len()
            + self.backends_removed.len()
            + self.backends_reweighted.len()
            + self.backends_relabelled.len()
            + self.backends_changed.len()
            + self.classes_added.len()
            + self.classes_removed.len()
            + self.settings_changed.len()
    }
}

/// A service added or removed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSummary {
    /// Its name.
    pub name: String,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// Its VIP.
    pub vip: IpAddr,
    /// Its port.
    pub port: u16,
    /// Its scheduler.
    pub scheduler: String,
    /// How many backends it has.
    pub backends: usize,
}

/// One field of a service that changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceChange {
    /// The service.
    pub service: String,
    /// `protocol`, `vip`, `port`, `scheduler`, `maglev_table_size`,
    /// `on_backend_down`, `panic_threshold`, `when_all_down`, `health`,
    /// `heartbeat_ttl` or `heartbeat_token` (whose value is never shown:
    /// `set` or `none`).
    pub field: String,
    /// The old value.
    pub from: String,
    /// The new value.
    pub to: String,
}

/// A backend added or removed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendSummary {
    /// Its service.
    pub service: String,
    /// Its address.
    pub address: IpAddr,
    /// Its port.
    pub port: u16,
    /// Its weight.
    pub weight: u32,
}

/// A backend whose weight changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reweight {
    /// Its service.
    pub service: String,
    /// Its address.
    pub address: IpAddr,
    /// Its port.
    pub port: u16,
    /// The old weight.
    pub from: u32,
    /// The new weight (0: drained).
    pub to: u32,
}

/// A backend label that changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Relabel {
    /// Its service.
    pub service: String,
    /// Its address.
    pub address: IpAddr,
    /// Its port.
    pub port: u16,
    /// `zone`, `set` or `group`.
    pub label: String,
    /// The old value (none, left out: unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The new value (none, left out: unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

/// A backend setting other than weight and labels that changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendChange {
    /// Its service.
    pub service: String,
    /// Its address.
    pub address: IpAddr,
    /// Its port.
    pub port: u16,
    /// `heartbeat_ttl`, `health.kind` or `health.port`.
    pub field: String,
    /// The old value (left out: unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The new value (left out: unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_only_what_changed_and_counts_every_entry() {
        let mut d = ConfigDiff::default();
        assert!(d.is_empty());
        assert_eq!(serde_json::to_string(&d).unwrap(), "{}");
        d.backends_reweighted.push(Reweight {
            service: "web".into(),
            address: "198.18.1.11".parse().unwrap(),
            port: 8080,
            from: 1,
            to: 4,
        });
        d.settings_changed.push("flows".into());
        assert_eq!(d.change_count(), 2);
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(
            json,
            r#"{"backends_reweighted":[{"service":"web","address":"198.18.1.11","port":8080,"from":1,"to":4}],"settings_changed":["flows"]}"#
        );
        assert_eq!(serde_json::from_str::<ConfigDiff>(&json).unwrap(), d);
    }
}
