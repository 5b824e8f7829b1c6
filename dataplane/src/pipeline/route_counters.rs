//! Per-worker counters of routing by client: what decided each new flow
//! of a routed service, and what fell back or failed closed. Single-writer
//! like [`super::PipelineCounters`]; only new flows of routed services
//! touch them.

use super::Counter;

/// One worker's routing counters.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct RouteCounters {
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

/// Counter values at one moment (summable across workers).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RouteCounterValues {
    /// See [`RouteCounters::path_flows`].
    pub path_flows: u64,
    /// See [`RouteCounters::path_fallbacks`].
    pub path_fallbacks: u64,
    /// See [`RouteCounters::set_flows`].
    pub set_flows: u64,
    /// See [`RouteCounters::set_closed`].
    pub set_closed: u64,
    /// See [`RouteCounters::canary_flows`].
    pub canary_flows: u64,
    /// See [`RouteCounters::first_choice`].
    pub first_choice: u64,
    /// See [`RouteCounters::fallbacks`].
    pub fallbacks: u64,
    /// See [`RouteCounters::unplaced`].
    pub unplaced: u64,
}

impl RouteCounters {
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
}

impl std::ops::AddAssign for RouteCounterValues {
    fn add_assign(&mut self, o: RouteCounterValues) {
        self.path_flows += o.path_flows;
        self.path_fallbacks += o.path_fallbacks;
        self.set_flows += o.set_flows;
        self.set_closed += o.set_closed;
        self.canary_flows += o.canary_flows;
        self.first_choice += o.first_choice;
        self.fallbacks += o.fallbacks;
        self.unplaced += o.unplaced;
    }
}
