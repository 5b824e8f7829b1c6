//! What the data plane reports to the control API: status, counters and
//! live connections. The daemon fills these from its workers, on the
//! control side.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

/// `status`: what runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusReport {
    /// flowgate's version.
    pub version: String,
    /// The snapshot generation the workers are given.
    pub generation: u64,
    /// Seconds since the daemon started.
    pub uptime_s: u64,
    /// The worker threads.
    pub workers: Vec<WorkerInfo>,
    /// The interfaces, in port order.
    pub interfaces: Vec<InterfaceInfo>,
    /// The kernel fast path, when the daemon runs it (left out: off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fast_path: Option<FastPathSummary>,
    /// The SYN proxy, when the daemon runs its XDP programs (left out:
    /// it does not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syn_proxy: Option<SynProxySummary>,
}

/// `status`: the SYN proxy in a few figures.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SynProxySummary {
    /// The services it proxies, as `NAME (on)` or `NAME (auto)`.
    pub services: Vec<String>,
    /// SYNs answered with a cookie since start.
    pub cookies_sent: u64,
    /// Segments refused in XDP since start (invalid cookies, refused
    /// SYNs, forged marks).
    pub refused: u64,
    /// Proxied connections the workers opened since start.
    pub connections: u64,
}

/// `status`: the kernel fast path (`fast_path = "xdp"`) in a few figures.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FastPathSummary {
    /// The interfaces whose XDP program forwards from the cache now (an
    /// interface missing here: none of the ports it would send to can
    /// take XDP frames, and its packets go to the workers).
    pub forwarding_on: Vec<String>,
    /// Connection directions in the caches now (two per connection).
    pub entries: u64,
    /// Packets the XDP program forwarded itself since start.
    pub forwarded_packets: u64,
    /// Owned packets it handed up to the workers since start, all
    /// reasons.
    pub handed_up: u64,
}

/// One worker thread.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerInfo {
    /// Worker number, from 0.
    pub id: usize,
    /// The CPU core it is pinned to (none, left out: not pinned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub core: Option<usize>,
    /// The queues it serves, as `interface/queue`.
    pub queues: Vec<String>,
}

/// One interface and how the gateway got hold of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterfaceInfo {
    /// Its name.
    pub name: String,
    /// Its port index (position in the config).
    pub port: usize,
    /// The kernel's interface index, if known (left out if not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifindex: Option<u32>,
    /// Its MAC, `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// The XDP attach mode it got: `native`, `generic`, or `none`.
    pub xdp_mode: String,
    /// The AF_XDP bind mode its sockets got: `zero-copy`, `copy`, or
    /// `memory` (no socket: the in-memory port).
    pub af_xdp_mode: String,
    /// Queues the workers serve on it: one per worker (worker `w` serves
    /// queue `w`), whatever the interface has.
    pub queues: u32,
    /// Queues the interface has (the kernel's count of its receive and
    /// transmit queues, the lower), if known (left out if not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nic_queues: Option<u32>,
}

/// `stats`: counters since start. Rates are computed by the client between
/// two samples, using `uptime_ms`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsReport {
    /// The snapshot generation when sampled.
    pub generation: u64,
    /// When sampled: milliseconds since the daemon started.
    pub uptime_ms: u64,
    /// The sum over workers.
    pub totals: TrafficCounters,
    /// Per service, with its backends.
    pub services: Vec<ServiceStats>,
    /// Per worker.
    pub workers: Vec<WorkerStats>,
    /// The kernel fast path's counters, when the daemon runs it (left
    /// out: off). Its packets are also in each backend's and service's
    /// `packets` and `bytes`, which count the traffic of the connections,
    /// whoever forwarded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fast_path: Option<FastPathStats>,
    /// The SYN proxy's counters, when the daemon runs its XDP programs
    /// (left out: it does not, as in forward-only mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syn_proxy: Option<SynProxyStats>,
}

/// `stats`: what the SYN proxy did, its XDP half summed over the
/// interfaces and its workers' half over the workers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SynProxyStats {
    /// SYNs to a proxied service answered with a cookie SYN-ACK in XDP.
    pub cookies_sent: u64,
    /// ACKs whose cookie was valid: sent up to a worker.
    pub cookies_valid: u64,
    /// Segments to an `on` service with no valid cookie and no
    /// connection: dropped in XDP.
    pub cookies_invalid: u64,
    /// SYNs to a proxied service refused in XDP (other flags, IP options,
    /// headers no cookie fits).
    pub syns_refused: u64,
    /// Frames that arrived with the cookie-valid mark already set:
    /// dropped in XDP.
    pub marks_forged: u64,
    /// Segments with no valid cookie to an `auto` service: up unmarked.
    pub acks_unchecked: u64,
    /// Zero-window probes that stood for a lost handshake ACK (also in
    /// `cookies_valid`).
    pub probes_valid: u64,
    /// Proxied connections the workers opened: a SYN to a backend for a
    /// cookie-valid ACK.
    pub connections: u64,
    /// Proxied connections whose backend answered (their sequence offset
    /// recorded).
    pub established: u64,
}

impl SynProxyStats {
    /// Segments the XDP half refused: invalid cookies, refused SYNs and
    /// forged marks (the cookies sent are answered, not refused).
    pub fn refused(&self) -> u64 {
        self.cookies_invalid + self.syns_refused + self.marks_forged
    }
}

/// `stats`: what the kernel fast path did, all interfaces summed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FastPathStats {
    /// Packets the XDP program forwarded itself.
    pub forwarded_packets: u64,
    /// Bytes of those packets (whole frames).
    pub forwarded_bytes: u64,
    /// Owned packets handed up to the workers, by reason: `miss` (no
    /// entry, or one being written), `no_egress` (the egress port cannot
    /// take XDP frames now), `syn`, `fin_rst`, `ip_options` (IPv4 options
    /// or IPv6 extension headers), `ttl`, `length` (lengths the worker
    /// refuses), `client_mac` (another client MAC than the entry's),
    /// `fragment`, `icmp_error`, `syn_proxy` (a SYN-proxied segment the
    /// program does not translate). Every reason is present.
    pub handed_up: BTreeMap<String, u64>,
    /// Connection directions in the caches now (two per connection).
    pub entries: u64,
}

impl FastPathStats {
    /// Packets handed up, all reasons.
    pub fn handed_up_total(&self) -> u64 {
        self.handed_up.values().sum()
    }
}

/// One worker's share of the kernel fast path: what the XDP program
/// forwarded on the connections the worker owns, as the worker took it
/// from its cache entries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerFastPath {
    /// Packets forwarded.
    pub packets: u64,
    /// Bytes of those packets (whole frames).
    pub bytes: u64,
    /// The worker's entries in the caches now.
    pub entries: u64,
}

impl StatsReport {
    /// Sets `totals` to the sum of the workers' counters.
    pub fn sum_workers(&mut self) {
        let mut totals = TrafficCounters::default();
        for w in &self.workers {
            totals.add(&w.counters);
        }
        self.totals = totals;
    }
}

/// Counters of a worker, or of all of them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficCounters {
    /// Frames received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Frames sent.
    pub tx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Frames handed to the kernel.
    pub passed: u64,
    /// Connections tracked now.
    pub active_flows: u64,
    /// Connections created since start.
    pub new_flows: u64,
    /// Frames dropped, by reason (only reasons that occurred).
    pub drops: BTreeMap<String, u64>,
}

impl TrafficCounters {
    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &TrafficCounters) {
        self.rx_packets += other.rx_packets;
        self.rx_bytes += other.rx_bytes;
        self.tx_packets += other.tx_packets;
        self.tx_bytes += other.tx_bytes;
        self.passed += other.passed;
        self.active_flows += other.active_flows;
        self.new_flows += other.new_flows;
        for (reason, n) in &other.drops {
            *self.drops.entry(reason.clone()).or_default() += n;
        }
    }

    /// Frames dropped for any reason.
    pub fn dropped(&self) -> u64 {
        self.drops.values().sum()
    }
}

/// One worker's counters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerStats {
    /// Worker number.
    pub worker: usize,
    /// Its core (none, left out: not pinned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub core: Option<usize>,
    /// Its counters (of the frames it handled itself).
    pub counters: TrafficCounters,
    /// What the kernel fast path forwarded for its connections, when the
    /// daemon runs the fast path (left out: off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fast_path: Option<WorkerFastPath>,
}

/// One service's traffic.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceStats {
    /// Its name.
    pub name: String,
    /// Frames forwarded to its backends.
    pub packets: u64,
    /// Bytes forwarded to its backends.
    pub bytes: u64,
    /// Connections tracked now.
    pub active_flows: u64,
    /// Connections created since start.
    pub new_flows: u64,
    /// New flows its limits refused, by reason (`[services.limits]`).
    #[serde(default)]
    pub refused: Refusals,
    /// Per backend.
    pub backends: Vec<BackendStats>,
    /// What routing by client decided for its new flows; absent for a
    /// service that routes by nothing (no SET, zone or canary) and that no
    /// distribution path has steered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<RouteStats>,
}

/// A service's routing counters, summed over the workers: how many new
/// flows each stage decided, and how many fell back or failed closed. One
/// flow can count in several (a SET's flow drawn for the canary and placed
/// in its own zone counts in `set_flows`, `canary_flows` and
/// `first_choice`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteStats {
    /// New flows sent by a distribution path.
    pub path_flows: u64,
    /// New flows of a client with a path whose backends were all down,
    /// draining or gone: decided by the other policies instead.
    pub path_fallbacks: u64,
    /// New flows placed within their client's SET (its own, its area's,
    /// or backends of no SET).
    pub set_flows: u64,
    /// New flows of a SET's client refused (dropped) because nothing it
    /// may use was alive: the SET failing closed.
    pub set_closed: u64,
    /// New flows drawn for the canary (by share or client prefix).
    pub canary_flows: u64,
    /// New flows placed by their first step: the client's own zone, or
    /// the whole subset when there is no zone preference.
    pub first_choice: u64,
    /// New flows placed by a later step: the next zone of the priority
    /// list, backends of no zone, any backend, or the other side of a
    /// canary split.
    pub fallbacks: u64,
    /// New flows that found nothing alive in any step (and had no SET to
    /// keep): left to the service's `when_all_down`.
    pub unplaced: u64,
}

/// New flows a service's limits refused, by reason, and the RSTs sent for
/// them (`over_limit = "reset"`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Refusals {
    /// Over the service's new-flow rate (`max_new_flows_per_s`).
    pub service_rate: u64,
    /// Over their client's new-flow rate (`client_max_new_flows_per_s`).
    pub client_rate: u64,
    /// Their backend over its connection cap (`max_connections`).
    pub backend_cap: u64,
    /// RSTs sent for refused TCP new flows.
    pub resets_sent: u64,
}

impl Refusals {
    /// New flows refused for any reason.
    pub fn total(&self) -> u64 {
        self.service_rate + self.client_rate + self.backend_cap
    }
}

/// One backend's traffic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendStats {
    /// Its address.
    pub address: IpAddr,
    /// Its port.
    pub port: u16,
    /// Frames forwarded to it.
    pub packets: u64,
    /// Bytes forwarded to it.
    pub bytes: u64,
    /// Connections to it tracked now.
    pub active_flows: u64,
    /// Connections to it created since start.
    pub new_flows: u64,
}

/// One live connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowEntry {
    /// The worker tracking it.
    pub worker: usize,
    /// The service it was sent to (none, left out: that service has been
    /// removed since).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// `tcp`, `udp`, or the protocol number.
    pub protocol: String,
    /// The client's address and port.
    pub client: SocketAddr,
    /// The VIP and port the client sent to.
    pub vip: SocketAddr,
    /// The backend it was given.
    pub backend: SocketAddr,
    /// `syn`, `established`, `closing`, `udp` or `other`.
    pub state: String,
    /// Milliseconds since its last packet.
    pub idle_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(rx_packets: u64, drops: &[(&str, u64)]) -> TrafficCounters {
        TrafficCounters {
            rx_packets,
            drops: drops.iter().map(|(r, n)| ((*r).to_owned(), *n)).collect(),
            ..TrafficCounters::default()
        }
    }

    #[test]
    fn totals_are_the_sum_of_the_workers() {
        let worker = |worker, counters| WorkerStats {
            worker,
            core: None,
            counters,
            fast_path: None,
        };
        let mut report = StatsReport {
            totals: counters(99, &[("stale", 99)]),
            workers: vec![
                worker(0, counters(10, &[("ttl_expired", 1)])),
                worker(1, counters(5, &[("ttl_expired", 1), ("no_egress_port", 1)])),
            ],
            ..StatsReport::default()
        };
        report.sum_workers();
        assert_eq!(report.totals.rx_packets, 15);
        assert_eq!(report.totals.drops.get("ttl_expired"), Some(&2));
        assert_eq!(report.totals.drops.get("stale"), None);
        assert_eq!(report.totals.dropped(), 3);
    }
}
