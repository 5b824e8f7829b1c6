//! A service's flow control, compiled into the snapshot: its limits, its
//! shared new-flow budget, and whether any of its backends is capped.
//!
//! The budget is state (the theoretical arrival time of its next chunk),
//! so a rebuild that leaves a service's limits as they were shares the
//! previous generation's [`CompiledLimits`], and with it the budget: a
//! rule change elsewhere, or a health transition, does not refill a
//! service's pool. Changed limits start a full budget.

use std::sync::Arc;

use crate::admission::{ClientRateLimit, OverLimitAction, ServiceLimits, ServiceRateBudget};
use crate::rules::FlowLimits;

/// One service's compiled flow control.
#[derive(Debug)]
pub struct CompiledLimits {
    limits: FlowLimits,
    /// Some backend has a connection cap (its own or the service's).
    capped: bool,
    rate: Option<ServiceRateBudget>,
}

impl CompiledLimits {
    /// The compiled form of `limits` with `capped`, sharing `previous` when
    /// it is the same.
    pub(super) fn compile(
        limits: &FlowLimits,
        capped: bool,
        previous: Option<&Arc<CompiledLimits>>,
    ) -> Option<Arc<CompiledLimits>> {
        if !limits.is_limited() && !capped {
            return None;
        }
        if let Some(p) = previous.filter(|p| p.limits == *limits && p.capped == capped) {
            return Some(Arc::clone(p));
        }
        Some(Arc::new(CompiledLimits {
            limits: *limits,
            capped,
            rate: limits.new_flows.map(ServiceRateBudget::new),
        }))
    }

    /// The limits as the rules give them.
    pub fn limits(&self) -> &FlowLimits {
        &self.limits
    }

    /// The service's shared new-flow budget, if it has a rate limit.
    #[inline]
    pub fn rate(&self) -> Option<&ServiceRateBudget> {
        self.rate.as_ref()
    }

    /// Its per-client limit, if any.
    #[inline]
    pub fn client(&self) -> Option<&ClientRateLimit> {
        self.limits.client.as_ref()
    }

    /// Whether any of its backends has a connection cap.
    #[inline]
    pub fn capped(&self) -> bool {
        self.capped
    }

    /// What an over-limit new flow gets.
    #[inline]
    pub fn over_limit(&self) -> OverLimitAction {
        self.limits.over_limit
    }

    /// The rate part of the worker's view, with `client` compiled for its
    /// number of workers.
    #[inline]
    pub fn worker_view<'a>(
        &'a self,
        client: Option<&'a crate::admission::ClientRateParams>,
    ) -> ServiceLimits<'a> {
        ServiceLimits {
            rate: self.rate.as_ref(),
            client,
        }
    }
}
