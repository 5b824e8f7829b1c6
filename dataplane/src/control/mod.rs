//! The control plane: how operators change a running gateway's rules.
//!
//! The API's messages, their framing on the socket and the client are the
//! `flowgate-api` crate (ctl/api/), which `flowgatectl` shares; the wire
//! protocol is in docs/api.md. Here is the daemon's side:
//!
//! - [`ControlState`]: the running config. Every change builds the whole
//!   next config, validates it in full (API edits and config text alike
//!   with the one validator, [`crate::rules::validate`]), has the
//!   [`Dataplane`] check that its kernel side can hold it
//!   ([`Dataplane::check`]: the XDP maps' sizes), and only then hands it
//!   to the [`Dataplane`], which compiles and publishes a new snapshot
//!   generation. All or nothing; the response says what changed ([`diff`])
//!   and what runs ([`Applied`], or [`ApplyError`] when the data plane
//!   had to take the change back). Changes take turns; reads never wait
//!   for them.
//! - [`ControlServer`]: the Unix socket (mode 0600) the daemon's control
//!   thread serves, with limits on request size, slow and silent clients,
//!   and clients at once, and per connecting process (`peers`) on new
//!   connections a second and connections at once.
//! - [`views`]: the data plane's own types (rules, connection records,
//!   counters) as the API shows them.
//! - `MemoryDataplane` (feature `testkit`): a [`Dataplane`] in memory for
//!   tests and benches.
//!
//! Nothing here touches packets: workers see a change only as a new
//! snapshot, which they load at their next batch.

mod dataplane;
mod diff;
mod edit;
pub mod explain;
pub mod health;
#[cfg(any(test, feature = "testkit"))]
mod memory;
mod peers;
mod server;
mod state;
pub mod views;

pub use dataplane::{paths_in, Applied, ApplyError, Dataplane, ServiceChanges};
pub use diff::{diff, diff_services};
pub use edit::apply_edits;
#[cfg(any(test, feature = "testkit"))]
pub use memory::MemoryDataplane;
pub use server::{ControlServer, ServerError, ServerLimits, StopHandle};
pub use state::{handle, reload, ControlState, EtcdReport, RESTART_ONLY_SECTIONS};
pub use views::{
    flow_client, flow_entry, flow_vip, status_report, syn_proxy_stats, syn_proxy_summary,
    traffic_counters,
};
