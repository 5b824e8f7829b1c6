//! Metrics: what the workers count, read and summed off their cores, and
//! served to Prometheus.
//!
//! Workers only ever increment their own single-writer counters (a plain
//! load and store, no locked instruction): the pipeline's
//! [`PipelineCounters`](crate::pipeline::PipelineCounters) and the
//! connection table's per-endpoint [`FlowCounters`](crate::flow::FlowCounters),
//! and the pipeline's per-service [`RouteCounters`](crate::pipeline::RouteCounters).
//! Everything else happens off the worker cores at scrape time:
//!
//! - [`MetricsCollector::collect`] reads every worker's counters through
//!   the `Arc`s in its [`WorkerMetrics`] and names them after the snapshot
//!   in force: a [`MetricsSample`] (per worker; per service sums over the
//!   service's backends), and the control state's [`ChangeCounters`]
//!   (refused rule changes) when it was given them;
//! - [`render`] writes a sample as Prometheus text (format 0.0.4);
//! - [`MetricsServer`] answers `GET /metrics` on a loopback address or a
//!   Unix socket, with every client bounded in time and in number (feature
//!   `daemon`).
//!
//! The daemon wires them together, roughly:
//!
//! ```no_run
//! # use std::sync::{Arc, Mutex};
//! # use flowgate_dataplane::metrics::*;
//! # use flowgate_dataplane::table::{Snapshot, SnapshotPublisher};
//! # fn wire(workers: Vec<WorkerMetrics>, rules: &SnapshotPublisher) -> Result<(), MetricsError> {
//! let collector = Mutex::new(MetricsCollector::new(workers));
//! let reader = rules.reader();
//! let source: SampleSource = Arc::new(move || {
//!     let snapshot: Arc<Snapshot> = Arc::clone(&reader.load());
//!     let rings = Vec::new(); // each socket's XDP_STATISTICS
//!     let sample = collector.lock().unwrap().collect(&snapshot, rings);
//!     (sample, snapshot)
//! });
//! let address: std::net::SocketAddr = "127.0.0.1:9464".parse().unwrap();
//! let server = MetricsServer::start(address, source)?;
//! # drop(server); Ok(()) }
//! ```

mod changes;
mod render;
mod sample;
#[cfg(feature = "daemon")]
mod server;

pub use changes::{ChangeCounters, ChangeSource, ChangeValues, RefusalReason};
pub use render::{render, CONTENT_TYPE};
pub use sample::{
    BackendInfo, FastPathInterface, LoopValues, MetricsCollector, MetricsSample, RingStats,
    ServiceInfo, WorkerMetrics, WorkerSample,
};

/// A service's routing counters as the API reports them: `None` for a
/// service that does not route by client (`routed` false) and whose counts
/// are all zero (no path has steered it).
pub fn route_stats(
    routed: bool,
    v: crate::pipeline::RouteCounterValues,
) -> Option<flowgate_api::RouteStats> {
    let stats = flowgate_api::RouteStats {
        path_flows: v.path_flows,
        path_fallbacks: v.path_fallbacks,
        set_flows: v.set_flows,
        set_closed: v.set_closed,
        canary_flows: v.canary_flows,
        first_choice: v.first_choice,
        fallbacks: v.fallbacks,
        unplaced: v.unplaced,
    };
    (routed || stats != flowgate_api::RouteStats::default()).then_some(stats)
}
#[cfg(feature = "daemon")]
pub use server::{
    ListenAddress, MetricsError, MetricsServer, SampleSource, ServerOptions, ServerStats,
    UnixListen,
};
