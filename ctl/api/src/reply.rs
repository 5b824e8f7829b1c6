//! What the daemon answers: a [`Response`] holding a [`Reply`] or an
//! [`ApiError`], and the views of the running services and backends.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::diff::ConfigDiff;
use crate::error::{ApiError, ErrorCode};
use crate::report::{FlowEntry, StatsReport, StatusReport};
use crate::tagged::{self, Body, Tagged};
use crate::API_VERSION;

/// A response as sent: exactly one of `ok` and `error` is present.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Response {
    /// The version the daemon speaks ([`API_VERSION`]).
    pub version: u32,
    /// The answer, on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<Reply>,
    /// Why the request failed (and nothing changed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiError>,
}

impl Response {
    /// A response carrying `result`.
    pub fn new(result: Result<Reply, ApiError>) -> Response {
        let (ok, error) = match result {
            Ok(reply) => (Some(reply), None),
            Err(error) => (None, Some(error)),
        };
        Response {
            version: API_VERSION,
            ok,
            error,
        }
    }

    /// The outcome; a response with neither or both parts is a protocol
    /// error.
    pub fn into_result(self) -> Result<Reply, ApiError> {
        match (self.ok, self.error) {
            (Some(reply), None) => Ok(reply),
            (None, Some(error)) => Err(error),
            _ => Err(ApiError::new(
                ErrorCode::Internal,
                "malformed response: it must hold exactly one of \"ok\" and \"error\"",
            )),
        }
    }
}

/// A successful answer.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reply {
    /// What a mutating request changed (or would change, for a dry run).
    Changed(ChangeReport),
    /// `status`.
    Status(StatusReply),
    /// `stats`.
    Stats(StatsReport),
    /// `flows`.
    Flows(FlowsReply),
    /// `service_list`.
    Services(ServicesReply),
    /// `backend_list`.
    Backends(BackendsReply),
    /// `backend_heartbeat`.
    Heartbeat(HeartbeatReply),
    /// `explain`.
    Explain(crate::ExplainReply),
    /// `path_list`.
    Paths(PathsReply),
    /// `capture`: one frame (one of several response lines).
    CaptureFrame(crate::CapturedFrame),
    /// `capture`: its last response line.
    CaptureEnd(crate::CaptureEnd),
    /// `class_list`.
    Classes(ClassesReply),
    /// `fleet_drain` and `fleet_undrain`.
    Drain(DrainReply),
}

/// `fleet_drain` and `fleet_undrain`: whether the gateway is drained now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrainReply {
    /// Drained now: it announces none of its VIPs.
    pub drained: bool,
    /// Whether the request changed it (false: it was so already).
    pub changed: bool,
}

/// `class_list`: the client classes, in the rules' order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassesReply {
    /// The classes.
    pub classes: Vec<ClassView>,
}

/// One client class, as listed and as a change reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassView {
    /// The clients, `ADDR/LEN`.
    pub prefix: String,
    /// Their SET (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<String>,
    /// Their zone (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
}

/// `path_list`: a service's distribution paths, in the rules' order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathsReply {
    /// The service.
    pub service: String,
    /// Its paths.
    pub paths: Vec<PathView>,
}

/// One distribution path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathView {
    /// The clients, `ADDR/LEN`.
    pub client: String,
    /// Its backends by name, in order.
    pub backends: Vec<String>,
}

/// What a mutating request did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeReport {
    /// The snapshot generation now running: the new one if `applied`, else
    /// the one that was running already.
    pub generation: u64,
    /// Whether a new snapshot was published (false for a dry run, and when
    /// the change left the rules as they were).
    pub applied: bool,
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// What changed (or would change) between the old and new rules.
    pub diff: ConfigDiff,
    /// What did not go as it should although the change runs, one line
    /// each; absent normally. For example: keys of removed services or
    /// backends that an interface's XDP maps could not drop (traffic
    /// matching them reaches the workers, which forward none of it, until
    /// the next change drops them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// `status`: the data plane's report and a summary of the running rules.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusReply {
    /// What the data plane reports.
    pub dataplane: StatusReport,
    /// Services running.
    pub services: usize,
    /// Backends running, over all services.
    pub backends: usize,
    /// Where the running rules came from: the config file (or `apply`
    /// origin) last loaded.
    pub origin: String,
    /// API edits applied since that file was loaded.
    pub edits_since_load: u64,
    /// Backends by state, and those not up; absent from a data plane
    /// that does not report health.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthSummary>,
    /// Where the rules from etcd stand, on a gateway with `[etcd]`;
    /// absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd: Option<EtcdStatus>,
    /// Whether the operator drained this gateway from the fleet
    /// (`fleet_drain`): it announces none of its VIPs by BGP.
    #[serde(default)]
    pub drained: bool,
}

/// A gateway's rules from etcd: what runs, and what is held back.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdStatus {
    /// `ok`, `holding` (a key is held back) or `disconnected`.
    pub health: String,
    /// Whether it watches etcd now.
    pub connected: bool,
    /// The etcd revision the running rules came from.
    pub revision: i64,
    /// The last revision it saw (applied or refused).
    pub seen_revision: i64,
    /// The snapshot generation that runs them.
    pub generation: u64,
    /// Keys held back at their last good value, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<HeldKey>,
    /// The last problem reaching etcd, if it has one now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// An etcd key held back: its refused value does not run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeldKey {
    /// The key.
    pub key: String,
    /// The revision its refused value was written at (of a refused
    /// deletion, the deletion's).
    pub revision: i64,
    /// What is wrong, one line each.
    pub problems: Vec<String>,
}

/// How many backends are in each state, and which are not up.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSummary {
    /// Backends (over all services) up: passing checks, heartbeats on
    /// time, weight above 0.
    pub up: usize,
    /// Backends failing their checks.
    pub down: usize,
    /// Backends drained (weight 0).
    pub draining: usize,
    /// Backends whose heartbeat TTL ran out.
    pub expired: usize,
    /// Distinct targets the prober checks (a backend shared by services
    /// with the same check is one).
    pub checked: usize,
    /// The backends down or expired, at most [`MAX_NOT_UP`] of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_up: Vec<BackendState>,
}

/// The most backends a status lists as not up; the counts are complete.
pub const MAX_NOT_UP: usize = 100;

/// One backend of one service and its health.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendState {
    /// The service.
    pub service: String,
    /// The backend's address.
    pub address: IpAddr,
    /// The backend's port.
    pub port: u16,
    /// Its health.
    pub health: BackendHealth,
}

/// A backend's health as the data plane sees it now.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendHealth {
    /// `up`, `down` (failing its checks), `draining` (weight 0) or
    /// `expired` (its heartbeat TTL ran out), the most severe first.
    pub state: String,
    /// How long it has been in that state, in milliseconds, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<u64>,
    /// What checks it (`tcp 198.18.1.11:8080`); absent when not probed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<String>,
    /// Its last completed check, if one has run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check: Option<CheckReport>,
    /// For a backend with a heartbeat TTL: milliseconds until it expires
    /// (negative: since it expired).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_expires_in_ms: Option<i64>,
}

/// One completed health check.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckReport {
    /// Whether it passed.
    pub ok: bool,
    /// `ok`, or why it failed: `refused`, `timeout`, `reset`,
    /// `unreachable`, `bad status 503`, ...
    pub result: String,
    /// How long it took, in microseconds (a timeout counts its timeout).
    pub latency_us: u64,
    /// How long ago it started, in milliseconds.
    pub age_ms: u64,
}

/// `backend_heartbeat`: the backend's new deadline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatReply {
    /// The service.
    pub service: String,
    /// The backend's address.
    pub address: IpAddr,
    /// The backend's port.
    pub port: u16,
    /// Its heartbeat TTL, in milliseconds.
    pub ttl_ms: u64,
    /// Milliseconds until it expires unless another heartbeat comes.
    pub expires_in_ms: u64,
}

/// `flows`: the connections found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowsReply {
    /// At most the limit asked for.
    pub flows: Vec<FlowEntry>,
}

/// `service_list`: every service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServicesReply {
    /// In config order.
    pub services: Vec<ServiceView>,
}

/// `backend_list`: one service's backends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendsReply {
    /// The service.
    pub service: String,
    /// In config order.
    pub backends: Vec<BackendView>,
}

/// A running service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceView {
    /// Its name.
    pub name: String,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// The VIP.
    pub vip: IpAddr,
    /// The service port.
    pub port: u16,
    /// `maglev`, `wrr` or `sh`.
    pub scheduler: String,
    /// Its Maglev table size.
    pub maglev_table_size: u32,
    /// Its backends, in config order.
    pub backends: Vec<BackendView>,
}

/// A running backend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendView {
    /// Its address.
    pub address: IpAddr,
    /// Its port.
    pub port: u16,
    /// Its weight (0: drained).
    pub weight: u32,
    /// Zone label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// SET label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<String>,
    /// Group label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Its heartbeat TTL (its own or its service's), as a config writes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_ttl: Option<String>,
    /// Its own check kind and probe port, when it sets them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<crate::request::BackendCheck>,
    /// Its health now; absent from a data plane that does not report it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<BackendHealth>,
}

impl Tagged for Reply {
    const TAG: &'static str = "kind";
    const VARIANTS: &'static [&'static str] = &[
        "changed",
        "status",
        "stats",
        "flows",
        "services",
        "backends",
        "heartbeat",
        "explain",
        "paths",
        "capture_frame",
        "capture_end",
        "classes",
        "drain",
    ];
    const EXPECTING: &'static str = "a reply";

    fn read<'de, B: Body<'de>>(kind: &str, body: B) -> Result<Self, B::Error> {
        Ok(match kind {
            "changed" => Reply::Changed(body.value()?),
            "status" => Reply::Status(body.value()?),
            "stats" => Reply::Stats(body.value()?),
            "flows" => Reply::Flows(body.value()?),
            "services" => Reply::Services(body.value()?),
            "backends" => Reply::Backends(body.value()?),
            "heartbeat" => Reply::Heartbeat(body.value()?),
            "explain" => Reply::Explain(body.value()?),
            "paths" => Reply::Paths(body.value()?),
            "capture_frame" => Reply::CaptureFrame(body.value()?),
            "capture_end" => Reply::CaptureEnd(body.value()?),
            "classes" => Reply::Classes(body.value()?),
            "drain" => Reply::Drain(body.value()?),
            other => return Err(serde::de::Error::unknown_variant(other, Self::VARIANTS)),
        })
    }
}

impl<'de> Deserialize<'de> for Reply {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        tagged::deserialize(deserializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_hold_exactly_one_outcome() {
        let ok = Response::new(Ok(Reply::Flows(FlowsReply { flows: Vec::new() })));
        let text = serde_json::to_string(&ok).unwrap();
        assert_eq!(text, r#"{"version":1,"ok":{"kind":"flows","flows":[]}}"#);
        let back: Response = serde_json::from_str(&text).unwrap();
        assert!(back.into_result().is_ok());

        let error = ApiError::with_problems(ErrorCode::Invalid, vec!["a".into(), "b".into()]);
        assert_eq!(error.message, "2 problems; the first: a");
        let text = serde_json::to_string(&Response::new(Err(error.clone()))).unwrap();
        assert_eq!(
            text,
            r#"{"version":1,"error":{"code":"invalid","message":"2 problems; the first: a","problems":["a","b"]}}"#
        );
        let back: Response = serde_json::from_str(&text).unwrap();
        assert_eq!(back.into_result(), Err(error));

        let neither: Response = serde_json::from_str(r#"{"version":1}"#).unwrap();
        assert_eq!(neither.into_result().unwrap_err().code, ErrorCode::Internal);
    }
}
