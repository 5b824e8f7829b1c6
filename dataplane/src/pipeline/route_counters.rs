//! Per-worker counters of routing by client, per service: what decided
//! each new flow of a routed service, and what fell back or failed closed.
//!
//! Single-writer like [`super::PipelineCounters`]: the worker keeps one
//! [`ServiceRouteCounters`] per service id and adds to it with a plain load
//! and store; only new flows of routed services touch them. The slots are
//! sized for the snapshot's service ids when the worker adopts a new
//! generation (off the per-packet path): a larger array is filled with the
//! old values and published, the way the flow table grows its per-endpoint
//! counters, so a reader on another thread sees the old array or the new
//! one and never loses a count. Ids are reused after a service is removed;
//! [`crate::metrics`] tells one id's successive services apart.

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::Counter;
use crate::table::ServiceId;

/// One service's routing counters on one worker.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct ServiceRouteCounters {
    /// New flows sent by a distribution path.
    pub path_flows: Counter,
    /// New flows whose path's backends were all down, draining or gone:
    /// decided by the rest of the policies instead.
    pub path_fallbacks: Counter,
    /// New flows placed within their SET (own, area-wide, or no-SET
    /// backends for a client of a SET).
    pub set_flows: Counter,
    /// New flows of a SET client with no candidate alive: dropped rather
    /// than sent outside the SET.
    pub set_closed: Counter,
    /// New flows drawn for the canary (by share or client prefix).
    pub canary_flows: Counter,
    /// New flows placed in their first step (own zone, or no zone
    /// preference).
    pub first_choice: Counter,
    /// New flows placed by a later step: the next zone of the priority,
    /// no-zone or any backend, or the other canary side.
    pub fallbacks: Counter,
    /// New flows with nothing alive in any step and no SET to keep: left
    /// to the service's `when_all_down`.
    pub unplaced: Counter,
}

/// Counter values at one moment (summable across workers and services).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RouteCounterValues {
    /// See [`ServiceRouteCounters::path_flows`].
    pub path_flows: u64,
    /// See [`ServiceRouteCounters::path_fallbacks`].
    pub path_fallbacks: u64,
    /// See [`ServiceRouteCounters::set_flows`].
    pub set_flows: u64,
    /// See [`ServiceRouteCounters::set_closed`].
    pub set_closed: u64,
    /// See [`ServiceRouteCounters::canary_flows`].
    pub canary_flows: u64,
    /// See [`ServiceRouteCounters::first_choice`].
    pub first_choice: u64,
    /// See [`ServiceRouteCounters::fallbacks`].
    pub fallbacks: u64,
    /// See [`ServiceRouteCounters::unplaced`].
    pub unplaced: u64,
}

impl ServiceRouteCounters {
    /// A plain copy of the values.
    pub fn snapshot(&self) -> RouteCounterValues {
        RouteCounterValues {
            path_flows: self.path_flows.get(),
            path_fallbacks: self.path_fallbacks.get(),
            set_flows: self.set_flows.get(),
            set_closed: self.set_closed.get(),
            canary_flows: self.canary_flows.get(),
            first_choice: self.first_choice.get(),
            fallbacks: self.fallbacks.get(),
            unplaced: self.unplaced.get(),
        }
    }

    /// A slot holding `v` (when the array grows; written by its worker).
    fn with(v: RouteCounterValues) -> ServiceRouteCounters {
        let c = ServiceRouteCounters::default();
        c.path_flows.add(v.path_flows);
        c.path_fallbacks.add(v.path_fallbacks);
        c.set_flows.add(v.set_flows);
        c.set_closed.add(v.set_closed);
        c.canary_flows.add(v.canary_flows);
        c.first_choice.add(v.first_choice);
        c.fallbacks.add(v.fallbacks);
        c.unplaced.add(v.unplaced);
        c
    }
}

impl RouteCounterValues {
    /// Each value less `baseline`'s (counts since a moment).
    pub fn since(self, baseline: RouteCounterValues) -> RouteCounterValues {
        RouteCounterValues {
            path_flows: self.path_flows.wrapping_sub(baseline.path_flows),
            path_fallbacks: self.path_fallbacks.wrapping_sub(baseline.path_fallbacks),
            set_flows: self.set_flows.wrapping_sub(baseline.set_flows),
            set_closed: self.set_closed.wrapping_sub(baseline.set_closed),
            canary_flows: self.canary_flows.wrapping_sub(baseline.canary_flows),
            first_choice: self.first_choice.wrapping_sub(baseline.first_choice),
            fallbacks: self.fallbacks.wrapping_sub(baseline.fallbacks),
            unplaced: self.unplaced.wrapping_sub(baseline.unplaced),
        }
    }
}

impl std::ops::AddAssign for RouteCounterValues {
    fn add_assign(&mut self, o: RouteCounterValues) {
        self.path_flows = self.path_flows.wrapping_add(o.path_flows);
        self.path_fallbacks = self.path_fallbacks.wrapping_add(o.path_fallbacks);
        self.set_flows = self.set_flows.wrapping_add(o.set_flows);
        self.set_closed = self.set_closed.wrapping_add(o.set_closed);
        self.canary_flows = self.canary_flows.wrapping_add(o.canary_flows);
        self.first_choice = self.first_choice.wrapping_add(o.first_choice);
        self.fallbacks = self.fallbacks.wrapping_add(o.fallbacks);
        self.unplaced = self.unplaced.wrapping_add(o.unplaced);
    }
}

/// What a reader holds of one worker's routing counters: the current
/// per-service array, indexed by service id. Shared (`Arc`) with the
/// worker's pipeline, its only writer.
#[derive(Debug)]
pub struct RouteCounters {
    services: ArcSwap<Arc<[ServiceRouteCounters]>>,
}

impl Default for RouteCounters {
    fn default() -> Self {
        RouteCounters {
            services: ArcSwap::from_pointee(Arc::from(Vec::new())),
        }
    }
}

impl RouteCounters {
    /// The values of service id `id` (zero for an id with no slot yet).
    pub fn service(&self, id: ServiceId) -> RouteCounterValues {
        self.services
            .load()
            .get(id as usize)
            .map_or_else(RouteCounterValues::default, ServiceRouteCounters::snapshot)
    }

    /// The values of every service id, in id order.
    pub fn services(&self) -> Vec<RouteCounterValues> {
        let slots = self.services.load();
        slots.iter().map(ServiceRouteCounters::snapshot).collect()
    }

    /// The sum over every service id (the worker's whole count).
    pub fn snapshot(&self) -> RouteCounterValues {
        let mut sum = RouteCounterValues::default();
        for slot in self.services.load().iter() {
            sum += slot.snapshot();
        }
        sum
    }
}

/// The writer's side, owned by a pipeline: the current slots (no atomic
/// load to reach them) and the shared block.
#[derive(Debug)]
pub(super) struct RouteSlots {
    slots: Arc<[ServiceRouteCounters]>,
    shared: Arc<RouteCounters>,
}

impl Default for RouteSlots {
    fn default() -> Self {
        let shared = Arc::new(RouteCounters::default());
        RouteSlots {
            slots: Arc::clone(&shared.services.load()),
            shared,
        }
    }
}

impl RouteSlots {
    pub(super) fn shared(&self) -> &Arc<RouteCounters> {
        &self.shared
    }

    /// Service id `id`'s counters, if it has a slot (every id of an
    /// adopted snapshot has).
    #[inline(always)]
    pub(super) fn service(&self, id: ServiceId) -> Option<&ServiceRouteCounters> {
        self.slots.get(id as usize)
    }

    /// Makes room for ids below `limit`, keeping every value. Call off the
    /// per-packet path (it allocates).
    pub(super) fn reserve(&mut self, limit: usize) {
        let old = self.slots.len();
        if limit <= old {
            return;
        }
        let grown: Arc<[ServiceRouteCounters]> = (0..limit)
            .map(|i| {
                self.slots
                    .get(i)
                    .map_or_else(ServiceRouteCounters::default, |s| {
                        ServiceRouteCounters::with(s.snapshot())
                    })
            })
            .collect();
        // This thread is the only writer: nothing is counted between the
        // copy and the swap.
        self.shared.services.store(Arc::new(Arc::clone(&grown)));
        self.slots = grown;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growing_keeps_every_count_and_readers_see_each_service() {
        let mut slots = RouteSlots::default();
        let shared = Arc::clone(slots.shared());
        assert!(slots.service(0).is_none());
        slots.reserve(2);
        slots.service(1).unwrap().path_flows.add(3);
        slots.service(0).unwrap().set_closed.inc();
        slots.reserve(5);
        slots.service(4).unwrap().canary_flows.inc();
        assert_eq!(shared.service(1).path_flows, 3);
        assert_eq!(shared.service(0).set_closed, 1);
        assert_eq!(shared.service(4).canary_flows, 1);
        assert_eq!(shared.service(9), RouteCounterValues::default());
        assert_eq!(shared.services().len(), 5);
        let sum = shared.snapshot();
        assert_eq!(
            (sum.path_flows, sum.set_closed, sum.canary_flows),
            (3, 1, 1)
        );
        assert_eq!(sum.since(sum), RouteCounterValues::default());
    }
}
