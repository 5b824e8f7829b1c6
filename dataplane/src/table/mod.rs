//! Compiled, immutable lookup tables and their publication.
//!
//! The control thread compiles a validated [`crate::rules::Config`] into a
//! [`Snapshot`] (service index, endpoint table, per-service [`maglev`]
//! tables and [`wrr`] schedules) and publishes it with a
//! [`SnapshotPublisher`]; workers read it through a [`SnapshotReader`],
//! loading it once per batch. Nothing here knows about packets or ports.

mod ids;
pub mod maglev;
mod publish;
mod snapshot;
pub mod wrr;

pub use maglev::{MaglevBackend, MaglevTable};
pub use publish::{SnapshotGuard, SnapshotPublisher, SnapshotReader};
pub use snapshot::{CompiledService, Endpoint, EndpointId, ServiceId, Snapshot};
pub use wrr::{build_schedule, MAX_SCHEDULE_LEN};
