//! The config as written: the TOML shape, before any meaning is checked.
//!
//! Unknown keys are rejected here (`deny_unknown_fields`). Every value keeps
//! its position in the text (`Spanned`) so that validation can point at it.
//! Numbers are read as `i64` and addresses, MACs and enum names as strings,
//! so that an out-of-range or malformed value is a validation problem (all
//! of which are collected) rather than a deserialisation error (which stops
//! at the first).

use serde::Deserialize;
use toml::Spanned;

/// A whole config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub gateway: RawGateway,
    #[serde(default)]
    pub daemon: RawDaemon,
    #[serde(default)]
    pub flows: RawFlows,
    #[serde(default)]
    pub interfaces: Vec<RawInterface>,
    #[serde(default)]
    pub neighbours: Vec<RawNeighbour>,
    #[serde(default)]
    pub services: Vec<RawService>,
    #[serde(default)]
    pub routing: RawRouting,
    /// `[etcd]`: where a fleet's rules come from. Not rules: the fleet
    /// module reads it (`fleet::settings::from_config_text`); here it is
    /// only let through.
    #[serde(default, rename = "etcd")]
    pub _etcd: Option<toml::Table>,
}

/// `[gateway]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGateway {
    pub maglev_table_size: Option<Spanned<i64>>,
}

/// `[daemon]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDaemon {
    pub cores: Option<Spanned<Vec<Spanned<i64>>>>,
    pub batch: Option<Spanned<i64>>,
    pub idle: Option<Spanned<String>>,
    pub frame_size: Option<Spanned<i64>>,
    pub frame_count: Option<Spanned<i64>>,
    pub rx_ring_size: Option<Spanned<i64>>,
    pub tx_ring_size: Option<Spanned<i64>>,
    pub fill_ring_size: Option<Spanned<i64>>,
    pub completion_ring_size: Option<Spanned<i64>>,
    pub bind_mode: Option<Spanned<String>>,
    pub xdp_mode: Option<Spanned<String>>,
    pub fast_path: Option<Spanned<String>>,
    pub control_socket: Option<Spanned<String>>,
    pub control_idle_timeout: Option<Spanned<i64>>,
    pub metrics_address: Option<Spanned<String>>,
    pub metrics_socket_mode: Option<Spanned<i64>>,
    pub metrics_socket_group: Option<Spanned<String>>,
    pub log_format: Option<Spanned<String>>,
    pub log_level: Option<Spanned<String>>,
}

/// `[flows]`; timeouts in seconds.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFlows {
    pub capacity: Option<Spanned<i64>>,
    pub tcp_syn_timeout: Option<Spanned<i64>>,
    pub tcp_established_timeout: Option<Spanned<i64>>,
    pub tcp_closing_timeout: Option<Spanned<i64>>,
    pub udp_timeout: Option<Spanned<i64>>,
    pub evict_established: Option<Spanned<bool>>,
}

/// One `[[interfaces]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawInterface {
    pub name: Spanned<String>,
    pub mac: Option<Spanned<String>>,
}

/// One `[[neighbours]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNeighbour {
    pub address: Spanned<String>,
    pub mac: Spanned<String>,
    pub interface: Option<Spanned<String>>,
}

/// One `[[services]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawService {
    pub name: Spanned<String>,
    pub protocol: Spanned<String>,
    pub vip: Spanned<String>,
    pub port: Spanned<i64>,
    pub scheduler: Option<Spanned<String>>,
    pub maglev_table_size: Option<Spanned<i64>>,
    pub on_backend_down: Option<Spanned<String>>,
    pub panic_threshold: Option<Spanned<i64>>,
    pub when_all_down: Option<Spanned<String>>,
    #[serde(default)]
    pub backends: Vec<RawBackend>,
    pub zone_priority: Option<Spanned<Vec<Spanned<String>>>>,
    pub canary: Option<RawCanary>,
    #[serde(default)]
    pub paths: Vec<RawPath>,
}

/// One `[[services.backends]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackend {
    pub address: Spanned<String>,
    pub port: Spanned<i64>,
    pub weight: Option<Spanned<i64>>,
    pub zone: Option<Spanned<String>>,
    pub set: Option<Spanned<String>>,
    pub group: Option<Spanned<String>>,
    pub name: Option<Spanned<String>>,
}

/// `[routing]`: routing by client, gateway-wide.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRouting {
    #[serde(default)]
    pub classes: Vec<RawClientClass>,
    pub zone_priority: Option<Spanned<Vec<Spanned<String>>>>,
    pub subset_memory_limit: Option<Spanned<i64>>,
}

/// One `[[routing.classes]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClientClass {
    pub prefix: Spanned<String>,
    pub set: Option<Spanned<String>>,
    pub zone: Option<Spanned<String>>,
}

/// A `[services.canary]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCanary {
    pub group: Spanned<String>,
    pub share: Option<Spanned<i64>>,
    #[serde(default)]
    pub clients: Vec<Spanned<String>>,
}

/// One `[[services.paths]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPath {
    pub client: Spanned<String>,
    pub backends: Spanned<Vec<Spanned<String>>>,
}
