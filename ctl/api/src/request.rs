//! What a client asks: a [`Request`] in its [`RequestEnvelope`], and the
//! [`Edit`]s a batch holds.

use serde::{Deserialize, Serialize};

use crate::tagged::{self, Body, NoFields, Tagged};
use crate::API_VERSION;

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
    /// A heartbeat of a backend registered with a `heartbeat_ttl`: it
    /// stays alive for one more TTL. Changes no rule.
    BackendHeartbeat(BackendKey),
    /// Where a client's new flow to a service goes, and why.
    Explain(crate::ExplainQuery),
    /// One service's distribution paths, from the running rules.
    PathList(ServiceName),
    /// Frames the workers decide, with verdict and reason, streamed until
    /// the count (docs/api.md): several response lines.
    Capture(crate::CaptureQuery),
    /// The client classes, from the running rules.
    ClassList {},
    /// Drain this gateway from the fleet: withdraw the BGP announcement
    /// of every VIP it offers (it keeps forwarding what reaches it).
    /// Changes no rule; lasts until `fleet_undrain` or a restart.
    FleetDrain {},
    /// Undo `fleet_drain`: announce the VIPs it offers again.
    FleetUndrain {},
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
    /// Add a distribution path, or replace the one at its prefix.
    PathAdd(PathSpec),
    /// Remove a distribution path.
    PathDel(PathKey),
    /// Set the share of a service's canary.
    CanarySet(CanaryShare),
    /// Add a client class (or replace the one at its prefix, if asked).
    ClassAdd(ClassSpec),
    /// Remove a client class.
    ClassDel(ClassKey),
}

/// `path_add`: a service's clients under `client` go straight to one of
/// `backends`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathSpec {
    /// The service's name.
    pub service: String,
    /// The clients: `ADDR` or `ADDR/LEN`.
    pub client: String,
    /// Backends of the service by name (a backend's `name`, or
    /// `ADDRESS:PORT`): 1 to 16, one chosen per flow by its hash.
    pub backends: Vec<String>,
}

/// `path_del`: a service's path, by its client prefix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathKey {
    /// The service's name.
    pub service: String,
    /// The clients: `ADDR` or `ADDR/LEN`, as the path has them.
    pub client: String,
}

/// `canary_set`: the share of new flows a service's canary takes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryShare {
    /// The service's name; it has a canary.
    pub service: String,
    /// Basis points, 0 to 10 000.
    pub share: u32,
}

/// `class_add`: the clients of `prefix` get a SET and a zone (both
/// absent: the prefix has no class, inside a shorter one that has).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassSpec {
    /// The clients: `ADDR` or `ADDR/LEN`, IPv4 or IPv6.
    pub prefix: String,
    /// Their SET, `name.area.group` (group may be `*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<String>,
    /// Their zone: one some backend, client class or zone priority list
    /// already has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Replace the class at `prefix` if there is one (otherwise a class
    /// already there is refused).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replace: bool,
}

/// `class_del`: a client class, by its prefix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassKey {
    /// The clients: `ADDR` or `ADDR/LEN`, as the class has them.
    pub prefix: String,
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
            Edit::PathAdd(_) => "path_add",
            Edit::PathDel(_) => "path_del",
            Edit::CanarySet(_) => "canary_set",
            Edit::ClassAdd(_) => "class_add",
            Edit::ClassDel(_) => "class_del",
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
    /// At most this many (default [`DEFAULT_FLOWS_LIMIT`](crate::DEFAULT_FLOWS_LIMIT),
    /// capped at [`MAX_FLOWS_LIMIT`](crate::MAX_FLOWS_LIMIT)).
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
    /// default [`DEFAULT_ORIGIN`](crate::DEFAULT_ORIGIN).
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
    /// Heartbeat TTL, as a config writes it (`"5s"`): the backend is alive
    /// only while heartbeats arrive; it has one TTL for its first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_ttl: Option<String>,
    /// Its own check kind and probe port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<BackendCheck>,
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
            heartbeat_ttl: None,
            health: None,
        }
    }
}

/// A backend's own check settings, as `[services.backends.health]` has
/// them: where and whether it is probed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendCheck {
    /// `tcp`, `http`, `udp` or `none` instead of its service's kind (in
    /// `backend_edit`, `""`: its service's again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The port probed instead of its own (in `backend_edit`, 0: its own
    /// again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
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
    /// New heartbeat TTL (`"5s"`; `""`: none, its service's if it has one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_ttl: Option<String>,
    /// New check kind or probe port (see [`BackendCheck`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<BackendCheck>,
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
        "backend_heartbeat",
        "explain",
        "path_list",
        "capture",
        "class_list",
        "fleet_drain",
        "fleet_undrain",
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
            "backend_heartbeat" => Request::BackendHeartbeat(body.value()?),
            "explain" => Request::Explain(body.value()?),
            "path_list" => Request::PathList(body.value()?),
            "capture" => Request::Capture(body.value()?),
            "class_list" => body.value::<NoFields>().map(|_| Request::ClassList {})?,
            "fleet_drain" => body.value::<NoFields>().map(|_| Request::FleetDrain {})?,
            "fleet_undrain" => body.value::<NoFields>().map(|_| Request::FleetUndrain {})?,
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
        "path_add",
        "path_del",
        "canary_set",
        "class_add",
        "class_del",
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
            "path_add" => Edit::PathAdd(body.value()?),
            "path_del" => Edit::PathDel(body.value()?),
            "canary_set" => Edit::CanarySet(body.value()?),
            "class_add" => Edit::ClassAdd(body.value()?),
            "class_del" => Edit::ClassDel(body.value()?),
            other => return Err(serde::de::Error::unknown_variant(other, Self::VARIANTS)),
        })
    }
}

impl<'de> Deserialize<'de> for Edit {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        tagged::deserialize(deserializer)
    }
}
