//! One worker's refusals per service: by reason, and the RSTs sent.
//!
//! The slots are indexed by service id, each tagged with the serial of the
//! service that owns it ([`crate::table::CompiledService::serial`]): a
//! service id freed by a rule change and given to another service starts
//! from zero, while a service that stays (its limits changed or not) keeps
//! counting. The worker is the only writer (plain load and store, as every
//! pipeline counter); [`ServiceRefusals`] is what a scraper holds. Slots
//! grow off the per-packet path, when a worker adopts a snapshot with
//! higher service ids, by copying into a larger array and publishing it,
//! as the flow table's per-endpoint counters do.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::counters::{AdmissionValues, Refusal};
use crate::pipeline::Counter;

/// One service's counters on one worker.
#[derive(Debug, Default)]
pub struct ServiceRefusalSlot {
    /// The serial of the service counted here (0: none yet).
    serial: AtomicU64,
    /// New flows refused, by [`Refusal::index`].
    refused: [Counter; Refusal::COUNT],
    /// RSTs sent for its refused TCP new flows.
    resets: Counter,
}

impl ServiceRefusalSlot {
    fn values(&self) -> AdmissionValues {
        let get = |r: Refusal| self.refused.get(r.index()).map_or(0, Counter::get);
        AdmissionValues {
            service_rate: get(Refusal::ServiceRate),
            client_rate: get(Refusal::ClientRate),
            backend_cap: get(Refusal::BackendCap),
            resets_sent: self.resets.get(),
            client_evictions: 0,
        }
    }

    fn copy(&self) -> ServiceRefusalSlot {
        let slot = ServiceRefusalSlot::default();
        slot.serial.store(self.serial.load(Relaxed), Relaxed);
        for (to, from) in slot.refused.iter().zip(&self.refused) {
            to.add(from.get());
        }
        slot.resets.add(self.resets.get());
        slot
    }
}

/// What a scraper holds of one worker's per-service refusals.
#[derive(Debug, Default)]
pub struct ServiceRefusals {
    slots: ArcSwap<Arc<[ServiceRefusalSlot]>>,
}

impl ServiceRefusals {
    /// The refusals this worker counted for service `id` while it was the
    /// service with `serial`; zero for another service or none.
    pub fn values(&self, id: u32, serial: u64) -> AdmissionValues {
        let slots = self.slots.load();
        match slots.get(id as usize) {
            Some(slot) if slot.serial.load(Relaxed) == serial => slot.values(),
            _ => AdmissionValues::default(),
        }
    }
}

/// The worker's side: its current slots (no atomic load to reach them)
/// and the block it shares.
#[derive(Debug)]
pub(super) struct ServiceRefusalWriter {
    slots: Arc<[ServiceRefusalSlot]>,
    shared: Arc<ServiceRefusals>,
}

impl Default for ServiceRefusalWriter {
    fn default() -> Self {
        let shared = Arc::new(ServiceRefusals::default());
        ServiceRefusalWriter {
            slots: Arc::clone(&shared.slots.load()),
            shared,
        }
    }
}

impl ServiceRefusalWriter {
    pub(super) fn shared(&self) -> &Arc<ServiceRefusals> {
        &self.shared
    }

    /// Makes room for ids below `limit` (off the per-packet path).
    pub(super) fn reserve(&mut self, limit: usize) {
        let old = self.slots.len();
        if limit <= old {
            return;
        }
        let len = limit.max(old.saturating_mul(2));
        let grown: Arc<[ServiceRefusalSlot]> = (0..len)
            .map(|i| {
                self.slots
                    .get(i)
                    .map_or_else(ServiceRefusalSlot::default, ServiceRefusalSlot::copy)
            })
            .collect();
        self.shared.slots.store(Arc::new(Arc::clone(&grown)));
        self.slots = grown;
    }

    /// Gives slot `id` to the service with `serial`, from zero if it held
    /// another's counts (off the per-packet path, at a snapshot change).
    pub(super) fn claim(&self, id: u32, serial: u64) {
        if let Some(slot) = self.slots.get(id as usize) {
            if slot.serial.load(Relaxed) != serial {
                for c in &slot.refused {
                    c.add(c.get().wrapping_neg());
                }
                slot.resets.add(slot.resets.get().wrapping_neg());
                slot.serial.store(serial, Relaxed);
            }
        }
    }

    /// Counts a refusal of a new flow of service `id`.
    #[inline]
    pub(super) fn refuse(&self, id: u32, reason: Refusal) {
        if let Some(c) = self
            .slots
            .get(id as usize)
            .and_then(|s| s.refused.get(reason.index()))
        {
            c.inc();
        }
    }

    /// Counts a RST sent for a refused new flow of service `id`.
    #[inline]
    pub(super) fn reset_sent(&self, id: u32) {
        if let Some(slot) = self.slots.get(id as usize) {
            slot.resets.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_follow_the_service_not_the_id_and_survive_growth() {
        let mut w = ServiceRefusalWriter::default();
        let scraper = Arc::clone(w.shared());
        w.reserve(2);
        w.claim(1, 7);
        w.refuse(1, Refusal::ServiceRate);
        w.refuse(1, Refusal::BackendCap);
        w.reset_sent(1);
        // Growing keeps every count.
        w.reserve(40);
        w.refuse(1, Refusal::ServiceRate);
        let v = scraper.values(1, 7);
        assert_eq!((v.service_rate, v.backend_cap, v.resets_sent), (2, 1, 1));
        assert_eq!(v.refused(), 3);
        // Another service's serial sees nothing of them.
        assert_eq!(scraper.values(1, 8), AdmissionValues::default());
        // The same service claiming again keeps its counts; another one
        // given the id starts from zero.
        w.claim(1, 7);
        assert_eq!(scraper.values(1, 7).service_rate, 2);
        w.claim(1, 9);
        w.refuse(1, Refusal::ClientRate);
        assert_eq!(
            scraper.values(1, 9),
            AdmissionValues {
                client_rate: 1,
                ..AdmissionValues::default()
            }
        );
        // Ids beyond the slots count nothing and do not panic.
        w.refuse(1000, Refusal::ClientRate);
        assert_eq!(scraper.values(1000, 0), AdmissionValues::default());
    }
}
