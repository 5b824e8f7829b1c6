//! The control plane: how operators change a running gateway's rules.
//!
//! - [`api`]: the versioned request and response types, shared with
//!   `flowgatectl`; the wire protocol is in docs/api.md.
//! - [`ControlState`]: the running config. Every change builds the whole
//!   next config, validates it in full (API edits and config text alike
//!   with the one validator, [`crate::rules::validate`]), has the
//!   [`Dataplane`] check that its kernel side can hold it
//!   ([`Dataplane::check`]: the XDP maps' sizes), and only then hands it
//!   to the [`Dataplane`], which compiles and publishes a new snapshot
//!   generation. All or nothing; the response says what changed ([`diff`])
//!   and what runs ([`Applied`], or [`ApplyError`] when the data plane
//!   had to take the change back).
//! - [`ControlServer`]: the Unix socket (mode 0600) the daemon's control
//!   thread serves, with limits on request size, slow and silent clients,
//!   and concurrent clients.
//! - [`ControlClient`]: the other end, for `flowgatectl` and tests.
//! - [`MemoryDataplane`]: a [`Dataplane`] in memory for tests and benches.
//!
//! Nothing here touches packets: workers see a change only as a new
//! snapshot, which they load at their next batch.

pub mod api;
mod client;
mod dataplane;
mod diff;
mod edit;
mod line;
mod memory;
mod report;
mod server;
mod state;
mod tagged;

pub use client::{ClientError, ControlClient};
pub use dataplane::{Applied, ApplyError, Dataplane};
pub use diff::{
    diff, BackendSummary, ConfigDiff, Relabel, Reweight, ServiceChange, ServiceSummary,
};
pub use memory::MemoryDataplane;
pub use report::{
    BackendStats, FlowEntry, InterfaceInfo, ServiceStats, StatsReport, StatusReport,
    TrafficCounters, WorkerInfo, WorkerStats,
};
pub use server::{ControlServer, ServerError, ServerLimits, StopHandle};
pub use state::{handle, reload, ControlState, RESTART_ONLY_SECTIONS};
