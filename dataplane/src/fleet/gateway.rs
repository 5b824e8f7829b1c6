//! The etcd source wired to a running gateway: each good revision goes
//! through the control state, the one path every change takes (validated,
//! checked against the XDP maps, compiled and published as one generation),
//! as a file reload does.
//!
//! The source starts before the gateway (the gateway starts with its first
//! rules), so the sink waits for the control state to exist before it
//! applies a later revision; nothing is dropped meanwhile.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use super::mirror::Rules;
use super::source::RulesSink;
use crate::control::ControlState;

/// How long a revision waits for the gateway to finish starting.
const START_WAIT: Duration = Duration::from_secs(120);

/// Where the control state will be, once the gateway runs.
#[derive(Clone, Default)]
pub struct ControlSlot {
    slot: Arc<(Mutex<Option<ControlState>>, Condvar)>,
}

impl std::fmt::Debug for ControlSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlSlot").finish_non_exhaustive()
    }
}

impl ControlSlot {
    /// The gateway runs: revisions go to `control` from now on.
    pub fn fill(&self, control: ControlState) {
        let (slot, ready) = &*self.slot;
        *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(control);
        ready.notify_all();
    }

    /// The control state, once there, waiting at most `limit`.
    fn wait(&self, limit: Duration) -> Option<ControlState> {
        let (slot, ready) = &*self.slot;
        let guard = slot.lock().unwrap_or_else(PoisonError::into_inner);
        let (guard, _) = ready
            .wait_timeout_while(guard, limit, |c| c.is_none())
            .unwrap_or_else(PoisonError::into_inner);
        guard.clone()
    }

    /// The sink the source gives revisions to.
    pub fn sink(&self) -> Box<dyn RulesSink> {
        Box::new(ControlSink { slot: self.clone() })
    }
}

/// Applies each revision through the control state.
struct ControlSink {
    slot: ControlSlot,
}

impl RulesSink for ControlSink {
    fn apply(&mut self, rules: &Rules) -> Result<u64, String> {
        let control = self
            .slot
            .wait(START_WAIT)
            .ok_or_else(|| "the gateway did not finish starting".to_owned())?;
        let origin = format!("etcd revision {}", rules.revision);
        let config = Arc::clone(&rules.config);
        let applied = match rules.change.path_updates() {
            // Path keys alone: the path verbs' road, path by path.
            Some((since, updates)) => control.apply_path_updates(config, since, updates, &origin),
            None => control.apply_shared(config, rules.change.since(), &origin),
        };
        applied
            .map(|report| report.generation)
            .map_err(|e| e.to_string())
    }

    fn counters(&self) -> BTreeMap<String, u64> {
        let Some(control) = self.slot.wait(Duration::ZERO) else {
            return BTreeMap::new();
        };
        let stats = control.dataplane().stats();
        let t = &stats.totals;
        BTreeMap::from([
            ("rx_packets".to_owned(), t.rx_packets),
            ("tx_packets".to_owned(), t.tx_packets),
            ("active_flows".to_owned(), t.active_flows),
            ("new_flows".to_owned(), t.new_flows),
            ("dropped".to_owned(), t.drops.values().sum()),
        ])
    }

    fn generation(&self) -> Option<u64> {
        let control = self.slot.wait(Duration::ZERO)?;
        Some(control.dataplane().generation())
    }

    fn liveness(&mut self, reports: super::health::Reported) -> Result<usize, String> {
        let control = self
            .slot
            .wait(START_WAIT)
            .ok_or_else(|| "the gateway did not finish starting".to_owned())?;
        control.dataplane().set_reported_health(reports)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::MemoryDataplane;
    use crate::fleet::mirror::RulesChange;
    use crate::rules::{Backend, Config, Failover, Protocol, Scheduler, Service};

    #[test]
    fn revisions_wait_for_the_gateway_then_run_through_the_control_state() {
        let slot = ControlSlot::default();
        let mut sink = slot.sink();
        let mut config = Config::default();
        config.services.push(Service {
            limits: Default::default(),

            announce: Default::default(),
            routing: Default::default(),
            health: Default::default(),
            name: "web".into(),
            protocol: Protocol::Tcp,
            vip: "198.18.100.1".parse().unwrap(),
            port: 80,
            scheduler: Scheduler::Maglev,
            maglev_table_size: 251,
            failover: Failover::default(),
            backends: vec![Backend::new("198.18.1.1".parse().unwrap(), 80)],
        });
        // Before the gateway runs, its generation is not known.
        assert_eq!(sink.generation(), None);
        let rules = Rules {
            config: Arc::new(config.clone()),
            change: RulesChange::Whole,
            revision: 7,
            applied_keys: 1,
            held: Vec::new(),
        };
        let control = ControlState::new(
            Config::default(),
            "gw.toml",
            Arc::new(MemoryDataplane::new()),
        );
        let filler = {
            let (slot, control) = (slot.clone(), control.clone());
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                slot.fill(control);
            })
        };
        let generation = sink.apply(&rules).unwrap();
        filler.join().unwrap();
        assert_eq!(generation, control.dataplane().generation());
        assert_eq!(sink.generation(), Some(generation));
        assert_eq!(control.config().services, config.services);
        assert!(sink.counters().contains_key("active_flows"));
    }
}
