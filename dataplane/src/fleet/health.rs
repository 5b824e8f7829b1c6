//! Liveness from etcd: the health keys a gateway reads beside its rules.
//!
//! A service whose `[services.health] source` is `etcd` is not checked by
//! the gateway: whoever reports health (a registry agent, a backend's
//! sidecar) puts `PREFIX/v1/rules/health/SERVICE/BACKEND` = `up`, normally
//! under a lease, so that the keys of a reporter that dies go with its
//! lease. A backend of such a service is alive while its key says `up`;
//! no key is down. Every gateway reading the same keys holds the same
//! liveness, and so picks the same backend for a flow.
//!
//! [`HealthReports`] is the gateway's view of those keys, sans-IO: the
//! source gives it what it read at a load and each revision's changes,
//! and hands [`HealthReports::reported`] to the gateway, which writes it
//! into the liveness words the workers read (no snapshot generation).
//! A bad key — a key that names nothing, a value other than `up` — is
//! held as a bad rules key is: it changes nothing (a backend reported
//! `up` before stays up) and is reported until it is fixed or deleted.

use std::collections::{BTreeMap, BTreeSet};

use super::layout::{HealthKey, KeyLayout, ReportedBackend};
use super::mirror::{Change, HeldKey};

/// The one value a health key holds.
pub const UP: &[u8] = b"up";

/// The backends reported alive: (service, backend as the key names it).
pub type Reported = BTreeSet<(String, ReportedBackend)>;

/// The health keys as the gateway last read them.
#[derive(Debug)]
pub struct HealthReports {
    layout: KeyLayout,
    /// Each good key, and what it names.
    up: BTreeMap<Vec<u8>, HealthKey>,
    /// Keys held back, and why.
    held: BTreeMap<Vec<u8>, HeldKey>,
}

impl HealthReports {
    /// No key read yet: every backend of an etcd-sourced service is down.
    pub fn new(layout: KeyLayout) -> HealthReports {
        HealthReports {
            layout,
            up: BTreeMap::new(),
            held: BTreeMap::new(),
        }
    }

    /// The keys as a load read them, all of them at one revision: what
    /// was read before and is not among them is gone (a key deleted, or
    /// whose lease ended, while the gateway was not watching).
    pub fn load(&mut self, entries: Vec<Change>) {
        self.up.clear();
        self.held.clear();
        self.apply(entries);
    }

    /// The changes of one revision (each value carries the revision it
    /// was written at).
    pub fn apply(&mut self, changes: Vec<Change>) {
        for change in changes {
            let shown = String::from_utf8_lossy(&change.key).into_owned();
            let parsed = self.layout.parse_health(&change.key);
            match (parsed, change.value) {
                // A deletion, of any key, leaves nothing to hold: the
                // backend it named is down, a bad key is gone.
                (_, None) => {
                    self.up.remove(&change.key);
                    self.held.remove(&change.key);
                }
                (Ok(key), Some(stored)) if stored.value == UP => {
                    self.held.remove(&change.key);
                    self.up.insert(change.key, key);
                }
                (Ok(_), Some(stored)) => {
                    let problem = format!(
                        "a health key's value is \"up\" (delete the key for down), not {:?}",
                        String::from_utf8_lossy(&stored.value)
                    );
                    self.hold(change.key, shown, stored.mod_revision, problem);
                }
                (Err(problem), Some(stored)) => {
                    self.hold(change.key, shown, stored.mod_revision, problem);
                }
            }
        }
    }

    fn hold(&mut self, key: Vec<u8>, shown: String, revision: i64, problem: String) {
        self.held.insert(
            key,
            HeldKey {
                key: shown,
                revision,
                problems: vec![problem],
            },
        );
    }

    /// The backends reported alive.
    pub fn reported(&self) -> Reported {
        self.up
            .values()
            .map(|k| (k.service.clone(), k.backend.clone()))
            .collect()
    }

    /// The keys held back, in key order.
    pub fn held(&self) -> Vec<HeldKey> {
        self.held.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::mirror::Stored;

    fn layout() -> KeyLayout {
        KeyLayout::new("/fg").unwrap()
    }

    fn put(key: &str, value: &str, revision: i64) -> Change {
        Change {
            key: key.as_bytes().to_vec(),
            value: Some(Stored {
                value: value.as_bytes().to_vec(),
                mod_revision: revision,
            }),
        }
    }

    fn delete(key: &str) -> Change {
        Change {
            key: key.as_bytes().to_vec(),
            value: None,
        }
    }

    fn addr(text: &str) -> (String, ReportedBackend) {
        (
            "web".into(),
            ReportedBackend::Address(text.parse().unwrap()),
        )
    }

    const A: &str = "/fg/v1/rules/health/web/198.18.1.11:8080";
    const B: &str = "/fg/v1/rules/health/web/198.18.1.12:8080";

    #[test]
    fn up_keys_are_alive_and_a_deletion_is_down() {
        let mut h = HealthReports::new(layout());
        assert!(h.reported().is_empty());
        h.apply(vec![put(A, "up", 5), put(B, "up", 5)]);
        assert_eq!(
            h.reported(),
            Reported::from([addr("198.18.1.11:8080"), addr("198.18.1.12:8080")])
        );
        h.apply(vec![delete(A)]);
        assert_eq!(h.reported(), Reported::from([addr("198.18.1.12:8080")]));
        assert!(h.held().is_empty());
    }

    #[test]
    fn a_bad_value_or_key_is_held_and_changes_nothing_until_fixed() {
        let mut h = HealthReports::new(layout());
        h.apply(vec![put(A, "up", 5)]);
        h.apply(vec![
            put(A, "down", 6),
            put("/fg/v1/rules/health/web", "up", 6),
        ]);
        // A stays up at its last good value; both keys are reported.
        assert_eq!(h.reported(), Reported::from([addr("198.18.1.11:8080")]));
        let held = h.held();
        assert_eq!(held.len(), 2);
        assert_eq!(held[1].key, A);
        assert_eq!(held[1].revision, 6);
        assert_eq!(
            held[1].problems,
            vec!["a health key's value is \"up\" (delete the key for down), not \"down\""]
        );
        assert!(held[0].problems[0].starts_with("a health key is /fg/v1/rules/health/"));
        h.apply(vec![delete(A), delete("/fg/v1/rules/health/web")]);
        assert!(h.reported().is_empty());
        assert!(h.held().is_empty());
    }

    #[test]
    fn a_load_replaces_what_was_read_so_a_key_gone_meanwhile_is_down() {
        let mut h = HealthReports::new(layout());
        h.apply(vec![put(A, "up", 5), put(B, "up", 5)]);
        h.load(vec![put(B, "up", 5)]);
        assert_eq!(h.reported(), Reported::from([addr("198.18.1.12:8080")]));
    }
}
