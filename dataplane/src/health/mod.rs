//! Backend health: active checks and heartbeat registration.
//!
//! This is the engine; the daemon wires it to the rules and the workers.
//!
//! - [`check`]: what a check is (`tcp`, `http`, `udp`, `none`; interval,
//!   timeout, rise, fall), validated once into values that cannot be
//!   invalid.
//! - [`Prober`]: a thread off the worker cores that probes many
//!   [`Target`]s through the kernel's sockets — non-blocking, one epoll
//!   set, at most `max_in_flight` probes at once, each with its own timeout
//!   — on a jittered schedule. It keeps each target's [`Health`] under
//!   rise and fall, sends each [`Transition`] to a bounded channel, and
//!   lets any thread read every target's status and counters without a
//!   lock.
//! - [`heartbeat`]: the UDP heartbeat endpoint for agents. The deadlines
//!   it moves, which the workers read to expire a backend whose heartbeats
//!   stop, are in the one liveness table, [`crate::liveness`].
//!
//! ```no_run
//! # use flowgate_dataplane::health::*;
//! # fn demo() -> Result<(), ProberError> {
//! let prober = Prober::start(ProberOptions::default())?;
//! let check = CheckSettings { kind: Some(CheckKindName::Tcp), ..Default::default() }
//!     .validate()
//!     .expect("valid");
//! prober.set_targets([Target::new("198.18.1.11:80".parse().unwrap(), check)])?;
//! for t in prober.transitions().iter() {
//!     println!("{} {} -> {} ({})", t.target, t.from, t.to, t.result);
//! }
//! # Ok(()) }
//! ```

pub mod check;
mod engine;
pub mod heartbeat;
mod probe;
mod prober;
pub mod schedule;
pub mod state;
pub mod stats;
mod target;
mod waker;

pub use check::{
    Check, CheckError, CheckErrors, CheckKind, CheckKindName, CheckSettings, HttpCheck,
    StatusRange, Timing, UdpCheck,
};
pub use engine::Transition;
pub use prober::{Prober, ProberError, ProberOptions, TargetStatus};
pub use state::{CheckResult, FailureReason, Health, InitialState};
pub use stats::{HistogramSample, ProberCounters, LATENCY_BUCKETS_SECONDS};
pub use target::Target;

#[cfg(test)]
mod tests;
