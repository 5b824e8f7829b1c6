//! Admission control for new flows: a service's rate, a client's rate, a
//! backend's connection cap, and what a refused flow gets.
//!
//! These checks run once per *new* flow, after the connection table has
//! missed and the service is known; a packet of an established connection
//! never reaches them. Like the pipeline they are sans-IO (time is passed
//! in as `now_ns`), allocate nothing after construction, take no lock and
//! make no syscall.
//!
//! | limit | module | state | shared between workers by | cost per new flow |
//! |---|---|---|---|---|
//! | service new flows/s | [`service_rate`] | one GCRA word per service | drawing chunks of up to 64 tokens with one CAS | a decrement; one CAS per chunk; a relaxed load when refused |
//! | client new flows/s | [`client_rate`] | a fixed table of buckets per worker | not shared: each worker enforces rate / W | a hash and one set (one line) |
//! | backend connections | [`backend_cap`] | one line per backend: a lane per worker and a flag | single-writer lanes summed by relaxed loads | one line read, one lane store |
//!
//! Each module states its error bound and the tests that check it. A
//! refusal is counted per [`Refusal`] reason in per-worker
//! [`AdmissionCounters`]; a service's [`OverLimitAction`] says whether the
//! refused flow is dropped or (TCP) answered by the RST that
//! [`reset::write_reset`] builds. [`WorkerAdmission`] runs the checks in
//! order for one worker and gives back what earlier checks charged when a
//! later one refuses. Every limit is built by a validating constructor in
//! [`limits`], whose errors name the setting for the rules validator.

pub mod backend_cap;
pub mod client_rate;
pub mod counters;
pub mod limits;
pub mod reset;
pub mod service_counters;
pub mod service_rate;
#[cfg(test)]
mod sim;
pub mod worker;

pub use backend_cap::{BackendConnections, BackendLoad, WorkerConnections};
pub use client_rate::{ClientOutcome, ClientRateParams, ClientRateTable};
pub use counters::{AdmissionCounters, AdmissionValues, Refusal};
pub use limits::{
    ClientPrefix, ClientRateLimit, ConnectionCap, LimitError, NewFlowRate, OverLimitAction,
    ServiceRateLimit,
};
pub use reset::{write_reset, RefusedSegment, ResetError};
pub use service_counters::ServiceRefusals;
pub use service_rate::{LocalTokens, ServiceRateBudget};
pub use worker::{AdmittedFlow, ServiceLimits, WorkerAdmission};
