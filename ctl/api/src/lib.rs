//! flowgate's control API: the messages `flowgatectl` and the daemon
//! exchange over the control socket, how they are framed on it, and a
//! client.
//!
//! On the wire (docs/api.md) a request is one JSON object on one line,
//! `{"version":1,"request":{"op":"backend_add",...}}`, and so is its
//! response, `{"version":1,"ok":{"kind":"changed",...}}` or
//! `{"version":1,"error":{"code":"not_found","message":"..."}}`. Unknown
//! fields are errors, never ignored: a misspelt `"wieght"` is refused, not
//! silently dropped. A request of another version is refused before its
//! body is read, with a message naming both versions.
//!
//! - [`request`]: what a client asks ([`Request`], the [`Edit`]s of a
//!   batch, and their parts).
//! - [`reply`]: what the daemon answers ([`Response`], [`Reply`], the
//!   views of services and backends).
//! - [`error`]: why a request failed ([`ApiError`], [`ErrorCode`]).
//! - [`report`]: what the data plane reports — status, counters, live
//!   connections.
//! - [`diff`]: what a change changed, as an operator reads it.
//! - [`capture`]: frames with their verdict, streamed.
//! - [`explain`]: where a client's new flow to a service goes, and why.
//! - [`framing`]: one message per line — reading a request line within
//!   limits, refusing another version, writing a response.
//! - [`ControlClient`]: the client end of the socket.
//!
//! This crate knows nothing of the data path: it depends on serde,
//! serde_json and thiserror only, so `flowgatectl` builds without the
//! daemon's kernel-facing dependencies. The daemon turns its own types
//! (rules, connection records, counters) into these in its `control`
//! module.

pub mod capture;
mod client;
pub mod diff;
pub mod error;
pub mod explain;
pub mod framing;
pub mod reply;
pub mod report;
pub mod request;
mod tagged;

pub use capture::{
    CaptureEnd, CaptureQuery, CapturedFrame, MAX_CAPTURE_COUNT, MAX_CAPTURE_SAMPLE,
    MAX_CAPTURE_SNAP,
};
pub use client::{ClientError, ControlClient};
pub use diff::{
    BackendChange, BackendSummary, ConfigDiff, Relabel, Reweight, ServiceChange, ServiceSummary,
};
pub use error::{ApiError, ErrorCode};
pub use explain::{
    ExplainCanary, ExplainClass, ExplainPath, ExplainQuery, ExplainReply, ExplainStep,
};
pub use framing::parse_request;
pub use reply::{
    BackendHealth, BackendState, BackendView, BackendsReply, ChangeReport, CheckReport, ClassView,
    ClassesReply, DrainReply, EtcdStatus, FlowsReply, HealthSummary, HeartbeatReply, HeldKey,
    PathView, PathsReply, Reply, Response, ServiceView, ServicesReply, StatusReply, MAX_NOT_UP,
};
pub use report::{
    BackendStats, FastPathStats, FastPathSummary, FlowEntry, InterfaceInfo, Refusals, RouteStats,
    ServiceStats, StatsReport, StatusReport, SynProxyStats, SynProxySummary, TrafficCounters,
    WorkerFastPath, WorkerInfo, WorkerStats,
};
pub use request::{
    ApplyConfig, BackendAdd, BackendCheck, BackendEdit, BackendKey, BackendSpec, Batch,
    CanaryShare, ClassKey, ClassSpec, Edit, FlowsQuery, PathKey, PathSpec, Request,
    RequestEnvelope, ServiceEdit, ServiceName, ServiceSpec,
};

/// The version of the protocol this build speaks.
pub const API_VERSION: u32 = 1;

/// Largest request accepted, in bytes (the line without its newline):
/// room for some 150 000 backend changes in one batch.
pub const MAX_REQUEST_BYTES: usize = 16 << 20;

/// Most flows one `flows` request returns, whatever limit it asks for.
pub const MAX_FLOWS_LIMIT: usize = 100_000;

/// Flows returned when a `flows` request gives no limit.
pub const DEFAULT_FLOWS_LIMIT: usize = 100;

/// Origin of a config sent by `apply` without one.
pub const DEFAULT_ORIGIN: &str = "<api>";

/// Where the daemon listens, and `flowgatectl` connects, unless told
/// otherwise (the config's `[daemon] control_socket`; `--socket` or
/// `$FLOWGATE_SOCKET` for `flowgatectl`).
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/flowgate/control.sock";
