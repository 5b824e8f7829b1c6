//! The control API's messages: versioned serde types shared by the daemon
//! and `flowgatectl`.
//!
//! On the wire (docs/api.md) a request is one JSON object on one line,
//! `{"version":1,"request":{"op":"backend_add",...}}`, and so is its
//! response, `{"version":1,"ok":{"kind":"changed",...}}` or
//! `{"version":1,"error":{"code":"not_found","message":"..."}}`. Unknown
//! fields are errors, never ignored: a misspelt `"wieght"` is refused, not
//! silently dropped. A request of another version is refused before its
//! body is read, with a message naming both versions.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::diff::ConfigDiff;
use super::report::{FlowEntry, StatsReport, StatusReport};
use super::tagged::{self, Body, NoFields, Tagged};
use crate::rules::{Backend, Service};

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

/// A request as sent: the protocol version and the request itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestEnvelope {
    /// Must be [`API_VERSION`].
    pub version: u32,
    /// What is asked.
    pub request: Request,
}

impl RequestEnvelope {
    /// `request` at this build's version.
    pub fn new(request: Request) -> RequestEnvelope {
        RequestEnvelope {
            version: API_VERSION,
            request,
        }
    }
}

/// Everything a client can ask. Read requests change nothing; every other
/// request is validated in full and applied all or nothing.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Version, generation, uptime, workers, interfaces.
    Status {},
    /// Counters per service, backend and worker.
    Stats {},
    /// Live connections and their backends.
    Flows(FlowsQuery),
    /// Every service with its backends.
    ServiceList {},
    /// One service's backends.
    BackendList(ServiceName),
    /// Replace the running rules with a whole config (TOML text).
    Apply(ApplyConfig),
    /// Several edits applied together, as one change.
    Batch(Batch),
    /// Add a service.
    ServiceAdd(ServiceSpec),
    /// Change a service's scheduler or table size.
    ServiceEdit(ServiceEdit),
    /// Remove a service.
    ServiceDel(ServiceName),
    /// Add a backend to a service.
    BackendAdd(BackendAdd),
    /// Change a backend's weight or labels.
    BackendEdit(BackendEdit),
    /// Remove a backend.
    BackendDel(BackendKey),
    /// Set a backend's weight to 0: its flows finish, no new ones come.
    BackendDrain(BackendKey),
}

/// One change to the rules; a [`Batch`] holds several.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Edit {
    /// Add a service.
    ServiceAdd(ServiceSpec),
    /// Change a service's scheduler or table size.
    ServiceEdit(ServiceEdit),
    /// Remove a service.
    ServiceDel(ServiceName),
    /// Add a backend to a service.
    BackendAdd(BackendAdd),
    /// Change a backend's weight or labels.
    BackendEdit(BackendEdit),
    /// Remove a backend.
    BackendDel(BackendKey),
    /// Set a backend's weight to 0.
    BackendDrain(BackendKey),
}

impl Edit {
    /// The operation's name on the wire (`backend_add`, ...).
    pub fn op(&self) -> &'static str {
        match self {
            Edit::ServiceAdd(_) => "service_add",
            Edit::ServiceEdit(_) => "service_edit",
            Edit::ServiceDel(_) => "service_del",
            Edit::BackendAdd(_) => "backend_add",
            Edit::BackendEdit(_) => "backend_edit",
            Edit::BackendDel(_) => "backend_del",
            Edit::BackendDrain(_) => "backend_drain",
        }
    }
}

/// `flows`: which connections to list.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowsQuery {
    /// Only this service's connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// At most this many (default [`DEFAULT_FLOWS_LIMIT`], capped at
    /// [`MAX_FLOWS_LIMIT`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// A request about one service, by name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceName {
    /// The service's name.
    pub service: String,
}

/// `apply`: a whole config to run instead of the current rules.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyConfig {
    /// The config file's text (TOML, as docs/config.md describes).
    pub config: String,
    /// What to call it in problems (`FILE:LINE:COL: ...`), e.g. its path;
    /// default [`DEFAULT_ORIGIN`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// Validate and report the difference, change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// `batch`: edits applied in order to a copy of the rules, then validated
/// and applied as one change (one new generation), or not at all.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    /// The edits, in order.
    pub edits: Vec<Edit>,
    /// Validate and report the difference, change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// A new service, as in a config file's `[[services]]` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// Unique name: 1 to 64 of `A-Z a-z 0-9 _ . -`.
    pub name: String,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// The VIP.
    pub vip: String,
    /// The service port.
    pub port: u16,
    /// `maglev` (default), `wrr` or `sh`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<String>,
    /// Maglev table size (prime); default the gateway's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maglev_table_size: Option<u32>,
    /// Its backends: at least one with weight > 0.
    #[serde(default)]
    pub backends: Vec<BackendSpec>,
}

/// `service_edit`: what to change; absent fields stay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceEdit {
    /// The service's name.
    pub service: String,
    /// New scheduler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<String>,
    /// New Maglev table size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maglev_table_size: Option<u32>,
}

/// A new backend, as in a config file's `[[services.backends]]` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendSpec {
    /// Its address, of the VIP's family.
    pub address: String,
    /// Its port.
    pub port: u16,
    /// Weight 0..=10000, default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Zone label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// SET label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<String>,
    /// Group label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

impl BackendSpec {
    /// A backend at `address`:`port` with the default weight and no labels.
    pub fn new(address: impl Into<String>, port: u16) -> BackendSpec {
        BackendSpec {
            address: address.into(),
            port,
            weight: None,
            zone: None,
            set: None,
            group: None,
        }
    }
}

/// `backend_add`: a backend for an existing service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendAdd {
    /// The service's name.
    pub service: String,
    /// The backend.
    pub backend: BackendSpec,
}

/// A backend of a service, by address and port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendKey {
    /// The service's name.
    pub service: String,
    /// The backend's address.
    pub address: String,
    /// The backend's port.
    pub port: u16,
}

/// `backend_edit`: what to change; absent fields stay, an empty label
/// removes that label.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendEdit {
    /// The service's name.
    pub service: String,
    /// The backend's address.
    pub address: String,
    /// The backend's port.
    pub port: u16,
    /// New weight (0 drains).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// New zone label (`""`: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// New SET label (`""`: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<String>,
    /// New group label (`""`: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

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

impl From<&Service> for ServiceView {
    fn from(s: &Service) -> ServiceView {
        ServiceView {
            name: s.name.clone(),
            protocol: s.protocol.name().to_owned(),
            vip: s.vip,
            port: s.port,
            scheduler: s.scheduler.name().to_owned(),
            maglev_table_size: s.maglev_table_size,
            backends: s.backends.iter().map(BackendView::from).collect(),
        }
    }
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
}

impl From<&Backend> for BackendView {
    fn from(b: &Backend) -> BackendView {
        BackendView {
            address: b.address,
            port: b.port,
            weight: b.weight,
            zone: b.zone.clone(),
            set: b.set.clone(),
            group: b.group.clone(),
        }
    }
}

/// Why a request failed. Whatever the code, the rules that ran before
/// still run; for `apply_failed`, the message says which generation that
/// is and what the XDP maps hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(deny_unknown_fields)]
#[error("{message}")]
pub struct ApiError {
    /// What kind of failure.
    pub code: ErrorCode,
    /// One line saying what went wrong.
    pub message: String,
    /// Every problem, one line each, when validation failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// For `apply_failed`: the generation that runs, the one from before
    /// the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
}

impl ApiError {
    /// An error with no list of problems.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            problems: Vec::new(),
            generation: None,
        }
    }

    /// An error for a list of problems: the message is the problem when
    /// there is one, else how many there are and the first.
    pub fn with_problems(code: ErrorCode, problems: Vec<String>) -> ApiError {
        let message = match problems.as_slice() {
            [] => "rejected".to_owned(),
            [one] => one.clone(),
            [first, ..] => format!("{} problems; the first: {first}", problems.len()),
        };
        ApiError {
            code,
            message,
            problems,
            generation: None,
        }
    }
}

/// The kinds of failure, as `snake_case` names on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, not an object of the documented shape, an unknown `op` or
    /// field, or a value of the wrong type.
    BadRequest,
    /// A `version` this daemon does not speak.
    UnsupportedVersion,
    /// The request line is longer than [`MAX_REQUEST_BYTES`].
    TooLarge,
    /// The client sent nothing, or not a whole line, in time.
    Timeout,
    /// Too many clients are connected; try again.
    Busy,
    /// No such service or backend.
    NotFound,
    /// The service or backend to add is there already.
    Exists,
    /// The change would make the rules invalid, or need more than the
    /// kernel side holds (the XDP maps' sizes); `problems` lists why.
    Invalid,
    /// The change touches settings that take effect only at start.
    RestartRequired,
    /// The data plane could not apply the change: it keeps the old rules
    /// (`generation` says which), and the message says what the XDP maps
    /// hold.
    ApplyFailed,
    /// A config file could not be read.
    Io,
    /// A bug: the daemon failed in a way it should not.
    Internal,
}

impl ErrorCode {
    /// The name used on the wire.
    pub const fn name(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Busy => "busy",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Exists => "exists",
            ErrorCode::Invalid => "invalid",
            ErrorCode::RestartRequired => "restart_required",
            ErrorCode::ApplyFailed => "apply_failed",
            ErrorCode::Io => "io",
            ErrorCode::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

// Tagged enums are read by `tagged`: straight into the variant when the
// tag comes first, as serialised here.

impl Tagged for Request {
    const TAG: &'static str = "op";
    const VARIANTS: &'static [&'static str] = &[
        "status",
        "stats",
        "flows",
        "service_list",
        "backend_list",
        "apply",
        "batch",
        "service_add",
        "service_edit",
        "service_del",
        "backend_add",
        "backend_edit",
        "backend_del",
        "backend_drain",
    ];
    const EXPECTING: &'static str = "a request";

    fn read<'de, B: Body<'de>>(op: &str, body: B) -> Result<Self, B::Error> {
        Ok(match op {
            "status" => body.value::<NoFields>().map(|_| Request::Status {})?,
            "stats" => body.value::<NoFields>().map(|_| Request::Stats {})?,
            "service_list" => body.value::<NoFields>().map(|_| Request::ServiceList {})?,
            "flows" => Request::Flows(body.value()?),
            "backend_list" => Request::BackendList(body.value()?),
            "apply" => Request::Apply(body.value()?),
            "batch" => Request::Batch(body.value()?),
            "service_add" => Request::ServiceAdd(body.value()?),
            "service_edit" => Request::ServiceEdit(body.value()?),
            "service_del" => Request::ServiceDel(body.value()?),
            "backend_add" => Request::BackendAdd(body.value()?),
            "backend_edit" => Request::BackendEdit(body.value()?),
            "backend_del" => Request::BackendDel(body.value()?),
            "backend_drain" => Request::BackendDrain(body.value()?),
            other => return Err(serde::de::Error::unknown_variant(other, Self::VARIANTS)),
        })
    }
}

impl<'de> Deserialize<'de> for Request {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        tagged::deserialize(deserializer)
    }
}

impl Tagged for Edit {
    const TAG: &'static str = "op";
    const VARIANTS: &'static [&'static str] = &[
        "service_add",
        "service_edit",
        "service_del",
        "backend_add",
        "backend_edit",
        "backend_del",
        "backend_drain",
    ];
    const EXPECTING: &'static str = "an edit";

    fn read<'de, B: Body<'de>>(op: &str, body: B) -> Result<Self, B::Error> {
        Ok(match op {
            "service_add" => Edit::ServiceAdd(body.value()?),
            "service_edit" => Edit::ServiceEdit(body.value()?),
            "service_del" => Edit::ServiceDel(body.value()?),
            "backend_add" => Edit::BackendAdd(body.value()?),
            "backend_edit" => Edit::BackendEdit(body.value()?),
            "backend_del" => Edit::BackendDel(body.value()?),
            "backend_drain" => Edit::BackendDrain(body.value()?),
            other => return Err(serde::de::Error::unknown_variant(other, Self::VARIANTS)),
        })
    }
}

impl<'de> Deserialize<'de> for Edit {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        tagged::deserialize(deserializer)
    }
}

impl Tagged for Reply {
    const TAG: &'static str = "kind";
    const VARIANTS: &'static [&'static str] = &[
        "changed", "status", "stats", "flows", "services", "backends",
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
            other => return Err(serde::de::Error::unknown_variant(other, Self::VARIANTS)),
        })
    }
}

impl<'de> Deserialize<'de> for Reply {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        tagged::deserialize(deserializer)
    }
}

/// Reads one request line (without its newline). A line that is not a
/// valid request is looked at again for its version, so that a request of
/// another version is refused as such rather than as a shape this version
/// does not know.
pub fn parse_request(line: &[u8]) -> Result<Request, ApiError> {
    let error = match serde_json::from_slice::<RequestEnvelope>(line) {
        Ok(envelope) if envelope.version == API_VERSION => return Ok(envelope.request),
        Ok(envelope) => return Err(unsupported_version(&envelope.version.to_string())),
        Err(error) => error,
    };
    let probe: VersionProbe = serde_json::from_slice(line).map_err(|e| {
        ApiError::new(
            ErrorCode::BadRequest,
            format!("malformed request: {e} (expected one JSON object per line)"),
        )
    })?;
    match probe.version {
        None => Err(ApiError::new(
            ErrorCode::BadRequest,
            format!(
                "malformed request: no \"version\" (send {{\"version\":{API_VERSION},\"request\":{{...}}}})"
            ),
        )),
        Some(v) if v.as_u64() == Some(u64::from(API_VERSION)) => Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("malformed request: {error}"),
        )),
        Some(v) => Err(unsupported_version(&v.to_string())),
    }
}

fn unsupported_version(version: &str) -> ApiError {
    ApiError::new(
        ErrorCode::UnsupportedVersion,
        format!("unsupported API version {version}: this flowgate speaks version {API_VERSION}"),
    )
}

/// The `version` of a request object; every other field is skipped
/// unread. Anything but an object is refused (a derived struct would also
/// take an array, reading its first element as the version).
struct VersionProbe {
    version: Option<serde_json::Value>,
}

impl<'de> Deserialize<'de> for VersionProbe {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectOnly;
        impl<'de> serde::de::Visitor<'de> for ObjectOnly {
            type Value = VersionProbe;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<VersionProbe, A::Error> {
                let mut version = None;
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    if key == "version" {
                        version = map.next_value::<Option<serde_json::Value>>()?;
                    } else {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
                Ok(VersionProbe { version })
            }
        }
        deserializer.deserialize_map(ObjectOnly)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Request, ApiError> {
        parse_request(text.as_bytes())
    }

    #[test]
    fn requests_round_trip_through_json() {
        let requests = vec![
            Request::Status {},
            Request::Stats {},
            Request::ServiceList {},
            Request::Flows(FlowsQuery {
                service: Some("web".into()),
                limit: Some(5),
            }),
            Request::BackendList(ServiceName {
                service: "web".into(),
            }),
            Request::Apply(ApplyConfig {
                config: "[gateway]\n".into(),
                origin: Some("gw.toml".into()),
                dry_run: true,
            }),
            Request::ServiceAdd(ServiceSpec {
                name: "web".into(),
                protocol: "tcp".into(),
                vip: "198.18.100.10".into(),
                port: 80,
                scheduler: Some("wrr".into()),
                maglev_table_size: None,
                backends: vec![BackendSpec::new("198.18.1.11", 8080)],
            }),
            Request::BackendEdit(BackendEdit {
                service: "web".into(),
                address: "198.18.1.11".into(),
                port: 8080,
                weight: Some(3),
                zone: Some(String::new()),
                set: None,
                group: None,
            }),
            Request::Batch(Batch {
                edits: vec![
                    Edit::BackendDrain(BackendKey {
                        service: "web".into(),
                        address: "198.18.1.11".into(),
                        port: 8080,
                    }),
                    Edit::ServiceDel(ServiceName {
                        service: "old".into(),
                    }),
                ],
                dry_run: false,
            }),
        ];
        for request in requests {
            let line = serde_json::to_string(&RequestEnvelope::new(request.clone())).unwrap();
            assert!(!line.contains('\n'));
            assert_eq!(parse(&line).unwrap(), request, "{line}");
        }
    }

    #[test]
    fn the_documented_shape_parses() {
        let r = parse(
            r#"{"version":1,"request":{"op":"backend_add","service":"web","backend":{"address":"198.18.1.14","port":8080,"weight":2}}}"#,
        )
        .unwrap();
        let Request::BackendAdd(add) = r else {
            panic!("{r:?}")
        };
        assert_eq!(add.service, "web");
        assert_eq!(add.backend.weight, Some(2));
        assert_eq!(
            parse(r#"{"version":1,"request":{"op":"status"}}"#).unwrap(),
            Request::Status {}
        );
    }

    #[test]
    fn malformed_requests_are_bad_requests_with_a_reason() {
        for (text, needle) in [
            ("{not json", "malformed request"),
            ("[1,2]", "malformed request"),
            (r#"["status"]"#, "expected a JSON object"),
            ("42", "expected a JSON object"),
            ("", "malformed request"),
            (r#"{"request":{"op":"status"}}"#, "no \"version\""),
            (
                r#"{"version":null,"request":{"op":"status"}}"#,
                "no \"version\"",
            ),
            (
                r#"{"version":1,"request":{"op":"stauts"}}"#,
                "unknown variant `stauts`",
            ),
            (
                r#"{"version":1,"request":{"op":"status","x":1}}"#,
                "unknown field",
            ),
            (
                r#"{"version":1,"request":{"op":"backend_add","service":"web","backend":{"address":"198.18.1.1","port":80,"wieght":2}}}"#,
                "unknown field `wieght`",
            ),
            (
                r#"{"version":1,"request":{"op":"backend_add","service":"web","backend":{"address":"198.18.1.1","port":70000}}}"#,
                "70000",
            ),
            (
                r#"{"version":1,"request":{"op":"status"},"extra":true}"#,
                "unknown field `extra`",
            ),
            (r#"{"version":1}"#, "missing field `request`"),
        ] {
            let e = parse(text).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadRequest, "{text}: {e}");
            assert!(e.message.contains(needle), "{text}: {}", e.message);
            assert!(!e.message.contains('\n'));
        }
    }

    #[test]
    fn another_version_is_refused_as_such() {
        for version in ["2", "0", "\"1\"", "1.5", "[1]"] {
            let text = format!(r#"{{"version":{version},"request":{{"op":"whatever","new":[]}}}}"#);
            let e = parse(&text).unwrap_err();
            assert_eq!(e.code, ErrorCode::UnsupportedVersion, "{text}");
            assert!(
                e.message.contains("this flowgate speaks version 1"),
                "{}",
                e.message
            );
        }
    }

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

    #[test]
    fn error_codes_are_named_as_serialised() {
        for code in [
            ErrorCode::BadRequest,
            ErrorCode::UnsupportedVersion,
            ErrorCode::TooLarge,
            ErrorCode::Timeout,
            ErrorCode::Busy,
            ErrorCode::NotFound,
            ErrorCode::Exists,
            ErrorCode::Invalid,
            ErrorCode::RestartRequired,
            ErrorCode::ApplyFailed,
            ErrorCode::Io,
            ErrorCode::Internal,
        ] {
            assert_eq!(
                serde_json::to_string(&code).unwrap(),
                format!("\"{}\"", code.name())
            );
        }
    }

    #[test]
    fn a_batch_of_100_000_backend_changes_fits_the_limit() {
        let edits: Vec<Edit> = (0..100_000u32)
            .map(|i| {
                Edit::BackendAdd(BackendAdd {
                    service: format!("svc-{:04}", i % 1000),
                    backend: BackendSpec {
                        weight: Some(10_000),
                        ..BackendSpec::new(
                            format!("2001:2:0:{:x}::{:x}", i >> 16, i & 0xffff),
                            65_535,
                        )
                    },
                })
            })
            .collect();
        let line = serde_json::to_vec(&RequestEnvelope::new(Request::Batch(Batch {
            edits,
            dry_run: false,
        })))
        .unwrap();
        assert!(line.len() < MAX_REQUEST_BYTES, "{} bytes", line.len());
    }
}
