//! What each gateway says about itself under `PREFIX/v1/status/ID`, and
//! what the fleet's statuses say together.
//!
//! A gateway writes its status under a lease it keeps alive, so the key of
//! a gateway that stops, however it stops, disappears when the lease runs
//! out. The value is JSON, format 1: its id, the revision and generation
//! it runs, the last revision it saw, its health, the keys it holds back
//! and why, and a summary of its counters.

use std::collections::BTreeMap;

use super::mirror::HeldKey;

/// The status value's format.
pub const STATUS_FORMAT: u32 = 1;

/// How a gateway is doing with the rules from etcd.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Every key runs at its latest value.
    Ok,
    /// Some keys are held back at their last good value.
    Holding,
    /// etcd cannot be reached: the gateway runs its last good rules.
    Disconnected,
}

impl Health {
    /// The word, as in the status value.
    pub fn name(self) -> &'static str {
        match self {
            Health::Ok => "ok",
            Health::Holding => "holding",
            Health::Disconnected => "disconnected",
        }
    }
}

/// One gateway's status, as written to etcd.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GatewayStatus {
    /// [`STATUS_FORMAT`].
    pub format: u32,
    /// The gateway's id (the last segment of its key).
    pub id: String,
    /// The etcd revision of the last change to the rules it runs: the
    /// revision it applied from its watch, or after a load the newest
    /// value's (so gateways running the same rules show the same).
    pub revision: i64,
    /// The last etcd revision it saw (applied or refused).
    pub seen_revision: i64,
    /// The snapshot generation that runs (edits through the gateway's
    /// control socket count too).
    pub generation: u64,
    /// How it is doing.
    pub health: Health,
    /// Keys held back at their last good value, and why.
    pub held: Vec<HeldKeyStatus>,
    /// Services that run.
    pub services: usize,
    /// A summary of its counters (name → value).
    pub counters: BTreeMap<String, u64>,
}

/// A held key, as a status lists it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HeldKeyStatus {
    /// The key.
    pub key: String,
    /// The revision its refused value was written at.
    pub revision: i64,
    /// What is wrong.
    pub problems: Vec<String>,
}

impl From<&HeldKey> for HeldKeyStatus {
    fn from(held: &HeldKey) -> Self {
        HeldKeyStatus {
            key: held.key.clone(),
            revision: held.revision,
            problems: held.problems.clone(),
        }
    }
}

/// One line of the fleet's listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetRow {
    /// The gateway's status.
    pub status: GatewayStatus,
    /// How many revisions that touched the rules it is behind, at most:
    /// `0` when it runs the rules' latest revision.
    pub lag: i64,
}

impl FleetRow {
    /// Whether the gateway does not run the latest rules.
    pub fn lags(&self) -> bool {
        self.lag > 0
    }
}

/// The fleet's gateways, by id, each with how far it lags behind
/// `rules_revision`, the revision of the last change to the rules (the
/// highest `mod_revision` under the rules prefix, or of a deletion there).
pub fn fleet_rows(statuses: Vec<GatewayStatus>, rules_revision: i64) -> Vec<FleetRow> {
    let mut rows: Vec<FleetRow> = statuses
        .into_iter()
        .map(|status| FleetRow {
            lag: (rules_revision - status.seen_revision).max(0),
            status,
        })
        .collect();
    rows.sort_by(|a, b| a.status.id.cmp(&b.status.id));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(id: &str, seen: i64) -> GatewayStatus {
        GatewayStatus {
            format: STATUS_FORMAT,
            id: id.into(),
            revision: seen,
            seen_revision: seen,
            generation: 3,
            health: Health::Ok,
            held: Vec::new(),
            services: 1,
            counters: BTreeMap::new(),
        }
    }

    #[test]
    fn a_gateway_behind_the_last_rules_change_lags() {
        let rows = fleet_rows(vec![status("gw-2", 7), status("gw-1", 9)], 9);
        assert_eq!(rows[0].status.id, "gw-1");
        assert!(!rows[0].lags());
        assert_eq!(rows[1].lag, 2);
        assert!(rows[1].lags());
        let text = serde_json::to_string(&rows[0].status).unwrap();
        assert!(text.contains(r#""health":"ok""#), "{text}");
        let back: GatewayStatus = serde_json::from_str(&text).unwrap();
        assert_eq!(back, rows[0].status);
    }
}
