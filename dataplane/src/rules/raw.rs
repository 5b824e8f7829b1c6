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
    pub health: RawHealth,
    #[serde(default)]
    pub interfaces: Vec<RawInterface>,
    #[serde(default)]
    pub neighbours: Vec<RawNeighbour>,
    #[serde(default)]
    pub services: Vec<RawService>,
    #[serde(default)]
    pub routing: RawRouting,
    #[serde(default)]
    pub ingress: RawIngress,
    /// `[etcd]`: where a fleet's rules come from. Not rules: the fleet
    /// module reads it (`fleet::settings::from_config_text`); here it is
    /// only let through.
    #[serde(default, rename = "etcd")]
    pub _etcd: Option<toml::Table>,
}

/// `[ingress]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIngress {
    pub bogons: Option<Spanned<Vec<Spanned<String>>>>,
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
    pub heartbeat_address: Option<Spanned<String>>,
    pub heartbeat_rate: Option<Spanned<i64>>,
    pub heartbeat_burst: Option<Spanned<i64>>,
    pub health_max_in_flight: Option<Spanned<i64>>,
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
    pub vlans: Option<Spanned<Vec<Spanned<i64>>>>,
    pub untagged: Option<Spanned<bool>>,
    pub egress_vlan: Option<Spanned<i64>>,
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
    pub fanout_replies: Option<Spanned<String>>,
    pub maglev_table_size: Option<Spanned<i64>>,
    pub on_backend_down: Option<Spanned<String>>,
    pub panic_threshold: Option<Spanned<i64>>,
    pub when_all_down: Option<Spanned<String>>,
    pub announce: Option<Spanned<String>>,
    pub heartbeat_ttl: Option<Spanned<String>>,
    pub heartbeat_token: Option<Spanned<String>>,
    pub health: Option<RawServiceHealth>,
    #[serde(default)]
    pub backends: Vec<RawBackend>,
    pub zone_priority: Option<Spanned<Vec<Spanned<String>>>>,
    pub canary: Option<RawCanary>,
    #[serde(default)]
    pub paths: Vec<RawPath>,
    pub limits: Option<super::limits::RawLimits>,
    pub syn_proxy: Option<Spanned<String>>,
    pub syn_proxy_auto_syns_per_s: Option<Spanned<i64>>,
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
    pub heartbeat_ttl: Option<Spanned<String>>,
    pub health: Option<RawBackendHealth>,
    pub name: Option<Spanned<String>>,
    pub max_connections: Option<Spanned<i64>>,
    pub resume_connections: Option<Spanned<i64>>,
}

/// `[health]`: a check's keys and `initial`. In `[health]` and
/// `[services.health]`, durations and the status range are text (`"2s"`,
/// `"200-399"`) and payloads text or hex.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealth {
    pub kind: Option<Spanned<String>>,
    pub interval: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub rise: Option<Spanned<i64>>,
    pub fall: Option<Spanned<i64>>,
    pub path: Option<Spanned<String>>,
    pub host: Option<Spanned<String>>,
    pub status: Option<Spanned<String>>,
    pub payload: Option<Spanned<String>>,
    pub payload_hex: Option<Spanned<String>>,
    pub expect: Option<Spanned<String>>,
    pub expect_hex: Option<Spanned<String>>,
    pub initial: Option<Spanned<String>>,
}

/// `[services.health]`: a check's keys and `port`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServiceHealth {
    pub kind: Option<Spanned<String>>,
    pub interval: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub rise: Option<Spanned<i64>>,
    pub fall: Option<Spanned<i64>>,
    pub path: Option<Spanned<String>>,
    pub host: Option<Spanned<String>>,
    pub status: Option<Spanned<String>>,
    pub payload: Option<Spanned<String>>,
    pub payload_hex: Option<Spanned<String>>,
    pub expect: Option<Spanned<String>>,
    pub expect_hex: Option<Spanned<String>>,
    pub port: Option<Spanned<i64>>,
    pub source: Option<Spanned<String>>,
}

/// `[services.backends.health]`: only where and whether it is probed.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackendHealth {
    pub kind: Option<Spanned<String>>,
    pub port: Option<Spanned<i64>>,
}

impl RawHealth {
    /// Its check keys.
    pub fn check(&self) -> RawCheckRef<'_> {
        RawCheckRef {
            kind: self.kind.as_ref(),
            interval: self.interval.as_ref(),
            timeout: self.timeout.as_ref(),
            rise: self.rise.as_ref(),
            fall: self.fall.as_ref(),
            path: self.path.as_ref(),
            host: self.host.as_ref(),
            status: self.status.as_ref(),
            payload: self.payload.as_ref(),
            payload_hex: self.payload_hex.as_ref(),
            expect: self.expect.as_ref(),
            expect_hex: self.expect_hex.as_ref(),
        }
    }
}

impl RawServiceHealth {
    /// Its check keys.
    pub fn check(&self) -> RawCheckRef<'_> {
        RawCheckRef {
            kind: self.kind.as_ref(),
            interval: self.interval.as_ref(),
            timeout: self.timeout.as_ref(),
            rise: self.rise.as_ref(),
            fall: self.fall.as_ref(),
            path: self.path.as_ref(),
            host: self.host.as_ref(),
            status: self.status.as_ref(),
            payload: self.payload.as_ref(),
            payload_hex: self.payload_hex.as_ref(),
            expect: self.expect.as_ref(),
            expect_hex: self.expect_hex.as_ref(),
        }
    }
}

/// The check keys of `[health]` or `[services.health]`, borrowed.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct RawCheckRef<'a> {
    pub kind: Option<&'a Spanned<String>>,
    pub interval: Option<&'a Spanned<String>>,
    pub timeout: Option<&'a Spanned<String>>,
    pub rise: Option<&'a Spanned<i64>>,
    pub fall: Option<&'a Spanned<i64>>,
    pub path: Option<&'a Spanned<String>>,
    pub host: Option<&'a Spanned<String>>,
    pub status: Option<&'a Spanned<String>>,
    pub payload: Option<&'a Spanned<String>>,
    pub payload_hex: Option<&'a Spanned<String>>,
    pub expect: Option<&'a Spanned<String>>,
    pub expect_hex: Option<&'a Spanned<String>>,
}

impl RawCheckRef<'_> {
    /// Where the value of check key `key` starts, if it is set (`payload`
    /// and `expect` are found in either form).
    pub fn offset(&self, key: &str) -> Option<usize> {
        fn at<T>(v: Option<&Spanned<T>>) -> Option<usize> {
            v.map(|v| v.span().start)
        }
        match key {
            "kind" => at(self.kind),
            "interval" => at(self.interval),
            "timeout" => at(self.timeout),
            "rise" => at(self.rise),
            "fall" => at(self.fall),
            "path" => at(self.path),
            "host" => at(self.host),
            "status" => at(self.status),
            "payload" => at(self.payload).or(at(self.payload_hex)),
            "payload_hex" => at(self.payload_hex),
            "expect" => at(self.expect).or(at(self.expect_hex)),
            "expect_hex" => at(self.expect_hex),
            _ => None,
        }
    }
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
