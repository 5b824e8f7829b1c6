//! Compiled, immutable lookup tables and their publication.
//!
//! The control thread compiles a validated [`crate::rules::Config`] into a
//! [`Snapshot`] (service index, endpoint table, per-service [`maglev`]
//! tables and [`wrr`] schedules, built over the endpoints alive in the
//! shared [`crate::liveness`] table, with each service's [`failover`] mode)
//! and publishes it with a [`SnapshotPublisher`]; workers read it through a
//! [`SnapshotReader`], loading it once per batch, and apply the [`skip`]
//! rule when a new flow's pick has died since. Nothing here knows about
//! packets or ports.

pub mod bogons;
mod decide;
pub mod failover;
pub mod fanout;
mod ids;
pub mod limits;
pub mod maglev;
mod paths;
mod publish;
pub mod reply_sources;
pub mod skip;
mod snapshot;
pub mod subset;
pub mod subset_slots;
mod tables;
mod vip_set;
pub mod vlans;
pub mod wrr;

pub use bogons::Bogons;
pub use decide::{RouteQuery, RouteTrace, Routed};
pub use failover::{AliveCount, IfDead, Mode};
pub use fanout::{FanoutIndex, FanoutTargets, NoReceiver};
pub use limits::CompiledLimits;
pub use maglev::{MaglevBackend, MaglevTable};
pub use paths::{PathRouting, PathUpdate, SharedNames};
pub use publish::{SnapshotGuard, SnapshotPublisher, SnapshotReader};
pub use reply_sources::{ReplySource, ReplySources};
pub use snapshot::{CompiledService, Endpoint, EndpointId, LivenessInput, ServiceId, Snapshot};
pub use subset::{ClientRouting, RoutePlan, RouteStep, ServiceRoutes, SubsetTable};
pub use vlans::{PortVlan, PortVlans};
pub use wrr::{build_schedule, MAX_SCHEDULE_LEN};
