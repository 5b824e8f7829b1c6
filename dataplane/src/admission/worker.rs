//! One worker's admission state, and the order of the checks for a new
//! flow.
//!
//! A new flow meets its checks in this order:
//!
//! 1. its client's rate (before anything shared, so one client's flood is
//!    refused without spending the service's budget);
//! 2. its service's rate;
//! 3. after the scheduler chose a backend, that backend's connection cap.
//!
//! A flow refused at a later step gets back what the earlier ones charged
//! (a client token, a service token), so a refusal costs no budget
//! anywhere. [`AdmittedFlow`] carries what must be given back; it is
//! `#[must_use]` and has to end in [`WorkerAdmission::admit_backend`] or
//! [`WorkerAdmission::cancel`].

use std::sync::Arc;

use super::backend_cap::WorkerConnections;
use super::client_rate::{ClientOutcome, ClientRateParams, ClientRateTable};
use super::counters::{AdmissionCounters, Refusal};
use super::limits::ConnectionCap;
use super::service_counters::{ServiceRefusalWriter, ServiceRefusals};
use super::service_rate::{LocalTokens, ServiceRateBudget};

/// The limits of one service, as the snapshot will hold them (built by the
/// control side).
#[derive(Clone, Copy, Debug, Default)]
pub struct ServiceLimits<'a> {
    /// The service's shared new-flow budget, if it has a rate limit.
    pub rate: Option<&'a ServiceRateBudget>,
    /// Its per-client limit, compiled for the number of workers.
    pub client: Option<&'a ClientRateParams>,
}

/// A new flow that passed its service's checks, with what they charged.
#[derive(Debug)]
#[must_use = "an admitted flow ends in admit_backend or cancel, which give back its charges if it does not go on"]
pub struct AdmittedFlow {
    service: u32,
    src: [u8; 16],
    rate_charged: bool,
    client_charged: bool,
}

/// One worker's admission state: its tokens of every service budget, its
/// per-client table, its lanes of the backend counts, and its counters.
/// Owned by the worker; nothing in it is locked.
#[derive(Debug)]
pub struct WorkerAdmission {
    tokens: Vec<LocalTokens>,
    clients: ClientRateTable,
    backends: WorkerConnections,
    counters: Arc<AdmissionCounters>,
    services: ServiceRefusalWriter,
}

impl WorkerAdmission {
    /// A worker's state over its client table and its backend lanes.
    pub fn new(clients: ClientRateTable, backends: WorkerConnections) -> WorkerAdmission {
        WorkerAdmission {
            tokens: Vec::new(),
            clients,
            backends,
            counters: Arc::new(AdmissionCounters::default()),
            services: ServiceRefusalWriter::default(),
        }
    }

    /// A single worker's state: its own backend lanes and a client table
    /// of `client_entries` entries (tests, tools, a one-worker gateway).
    pub fn single(client_entries: usize, seed: u64) -> WorkerAdmission {
        let (_, mut lanes) =
            super::BackendConnections::new(1, crate::liveness::MAX_ENDPOINTS as u32);
        let lanes = lanes.pop().unwrap_or_else(|| {
            // new() gives one handle per worker, and one worker was asked for.
            unreachable!("one worker, one handle")
        });
        WorkerAdmission::new(ClientRateTable::new(client_entries, seed), lanes)
    }

    /// How many workers share the backend lanes (and the service budgets):
    /// a client's limit is split over them.
    pub fn workers(&self) -> usize {
        self.backends.table().workers()
    }

    /// The per-service refusals, for the metrics.
    pub fn service_refusals(&self) -> &Arc<ServiceRefusals> {
        self.services.shared()
    }

    /// Gives service id `id` to the service with `serial` for the
    /// per-service counts (off the per-packet path, at a snapshot change;
    /// after [`reserve_services`](Self::reserve_services)).
    pub fn claim_service(&mut self, id: u32, serial: u64) {
        self.services.claim(id, serial);
    }

    /// Counts a RST sent for a refused new flow of `service`.
    #[inline]
    pub fn reset_sent(&self, service: u32) {
        self.counters.resets_sent.inc();
        self.services.reset_sent(service);
    }

    /// The counters, for the metrics.
    pub fn counters(&self) -> &Arc<AdmissionCounters> {
        &self.counters
    }

    /// The backend lanes.
    pub fn backends(&self) -> &WorkerConnections {
        &self.backends
    }

    /// Makes room for the tokens of services with ids below `services`
    /// (off the per-packet path, when a snapshot is taken). A service
    /// without room draws single tokens from its budget instead: correct,
    /// with a CAS per admitted flow.
    pub fn reserve_services(&mut self, services: usize) {
        if self.tokens.len() < services {
            self.tokens.resize(services, LocalTokens::default());
        }
        self.services.reserve(services);
    }

    /// Checks a new flow of `service` from `src` against the client and
    /// service rates at `now_ns`.
    #[inline]
    pub fn admit_flow(
        &mut self,
        service: u32,
        src: &[u8; 16],
        limits: ServiceLimits<'_>,
        now_ns: u64,
    ) -> Result<AdmittedFlow, Refusal> {
        let mut flow = AdmittedFlow {
            service,
            src: *src,
            rate_charged: false,
            client_charged: false,
        };
        if let Some(params) = limits.client {
            match self.clients.admit(service, src, params, now_ns) {
                ClientOutcome::Admitted => {}
                ClientOutcome::AdmittedEvicting => self.counters.client_evictions.inc(),
                ClientOutcome::Refused => return Err(self.refuse(service, Refusal::ClientRate)),
            }
            flow.client_charged = true;
        }
        if let Some(budget) = limits.rate {
            let admitted = match self.tokens.get_mut(service as usize) {
                Some(local) => budget.admit(local, now_ns),
                None => budget.admit_one(now_ns),
            };
            if !admitted {
                self.give_back(&flow, limits);
                return Err(self.refuse(service, Refusal::ServiceRate));
            }
            flow.rate_charged = true;
        }
        Ok(flow)
    }

    /// Checks the backend the scheduler chose for `flow` against its cap
    /// (if any) and counts the connection to it; a refused flow gets its
    /// charges back.
    #[inline]
    pub fn admit_backend(
        &mut self,
        flow: AdmittedFlow,
        limits: ServiceLimits<'_>,
        backend: u32,
        cap: Option<&ConnectionCap>,
    ) -> Result<(), Refusal> {
        match cap {
            None => {
                self.backends.open(backend);
                Ok(())
            }
            Some(cap) if self.backends.try_open(backend, cap) => Ok(()),
            Some(_) => {
                self.give_back(&flow, limits);
                Err(self.refuse(flow.service, Refusal::BackendCap))
            }
        }
    }

    /// [`admit_backend`](Self::admit_backend) for a worker whose
    /// connection table counts its connections on the backend lanes
    /// (`FlowTable::set_connection_lanes`): decides against `cap` without
    /// counting the flow. A flow that then never becomes a connection
    /// goes to [`cancel`](Self::cancel).
    #[inline]
    pub fn check_backend(
        &mut self,
        flow: &AdmittedFlow,
        limits: ServiceLimits<'_>,
        backend: u32,
        cap: &ConnectionCap,
    ) -> Result<(), Refusal> {
        if self.backends.admits(backend, cap) {
            return Ok(());
        }
        self.give_back(flow, limits);
        Err(self.refuse(flow.service, Refusal::BackendCap))
    }

    /// Gives back an admitted flow's charges when it does not go on for a
    /// reason of its own (no backend, a full connection table).
    pub fn cancel(&mut self, flow: AdmittedFlow, limits: ServiceLimits<'_>) {
        self.give_back(&flow, limits);
    }

    /// Ends an admitted flow that became a connection: its charges stay
    /// spent.
    #[inline]
    pub fn done(&mut self, flow: AdmittedFlow) {
        let _ = flow;
    }

    /// Counts a connection to `backend` gone (closed, expired, evicted).
    #[inline]
    pub fn connection_closed(&self, backend: u32) {
        self.backends.close(backend);
    }

    fn give_back(&mut self, flow: &AdmittedFlow, limits: ServiceLimits<'_>) {
        if flow.client_charged {
            if let Some(params) = limits.client {
                self.clients.refund(flow.service, &flow.src, params);
            }
        }
        if flow.rate_charged {
            if let (Some(budget), Some(local)) =
                (limits.rate, self.tokens.get_mut(flow.service as usize))
            {
                budget.refund(local);
            }
        }
    }

    #[inline(always)]
    fn refuse(&self, service: u32, reason: Refusal) -> Refusal {
        self.counters.refuse(reason);
        self.services.refuse(service, reason);
        reason
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::backend_cap::BackendConnections;
    use crate::admission::limits::{ClientRateLimit, ServiceRateLimit};

    fn worker() -> (WorkerAdmission, Arc<BackendConnections>) {
        let (table, mut handles) = BackendConnections::new(1, 16);
        table.reserve(16);
        let w = WorkerAdmission::new(ClientRateTable::new(64, 1), handles.remove(0));
        (w, table)
    }

    const CLIENT: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 18, 0, 2];
    const OTHER: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 18, 0, 3];

    #[test]
    fn each_check_refuses_with_its_own_reason() {
        let (mut w, table) = worker();
        w.reserve_services(4);
        let budget = ServiceRateBudget::new(ServiceRateLimit::new(2, Some(2)).unwrap());
        let client =
            ClientRateParams::new(ClientRateLimit::new(1, Some(1), None, None).unwrap(), 1);
        let cap = ConnectionCap::new(1, None).unwrap();
        let limits = ServiceLimits {
            rate: Some(&budget),
            client: Some(&client),
        };
        let flow = w.admit_flow(1, &CLIENT, limits, 0).unwrap();
        w.admit_backend(flow, limits, 7, Some(&cap)).unwrap();
        // The same client again: its own limit.
        assert_eq!(
            w.admit_flow(1, &CLIENT, limits, 0).unwrap_err(),
            Refusal::ClientRate
        );
        // Another client, same backend: the cap.
        let flow = w.admit_flow(1, &OTHER, limits, 0).unwrap();
        assert_eq!(
            w.admit_backend(flow, limits, 7, Some(&cap)),
            Err(Refusal::BackendCap)
        );
        assert_eq!(table.connections(7), 1);
        // That refusal cost nothing: OTHER goes to another backend now,
        // with its client token and the service's second token.
        let flow = w.admit_flow(1, &OTHER, limits, 0).unwrap();
        w.admit_backend(flow, limits, 8, Some(&cap)).unwrap();
        // The service's burst of 2 is spent.
        let third = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 18, 0, 4];
        assert_eq!(
            w.admit_flow(1, &third, limits, 0).unwrap_err(),
            Refusal::ServiceRate
        );
        // ... and that refusal gave the third client its token back.
        let no_rate = ServiceLimits {
            rate: None,
            client: Some(&client),
        };
        let flow = w.admit_flow(1, &third, no_rate, 0).unwrap();
        w.cancel(flow, no_rate);
        let v = w.counters().snapshot();
        assert_eq!((v.client_rate, v.backend_cap, v.service_rate), (1, 1, 1));
        w.connection_closed(7);
        assert_eq!(table.connections(7), 0);
    }

    #[test]
    fn a_service_without_local_room_draws_single_tokens() {
        let (mut w, _) = worker();
        let budget = ServiceRateBudget::new(ServiceRateLimit::new(1_000, Some(3)).unwrap());
        let limits = ServiceLimits {
            rate: Some(&budget),
            client: None,
        };
        let mut admitted = 0;
        for _ in 0..10 {
            if let Ok(flow) = w.admit_flow(40, &CLIENT, limits, 0) {
                admitted += 1;
                w.admit_backend(flow, limits, 1, None).unwrap();
            }
        }
        assert_eq!(admitted, 3);
    }

    #[test]
    fn a_flow_with_no_limits_is_admitted_and_counted_on_its_backend() {
        let (mut w, table) = worker();
        let flow = w
            .admit_flow(0, &CLIENT, ServiceLimits::default(), 0)
            .unwrap();
        w.admit_backend(flow, ServiceLimits::default(), 3, None)
            .unwrap();
        assert_eq!(table.connections(3), 1);
        assert_eq!(w.counters().snapshot().refused(), 0);
    }
}
