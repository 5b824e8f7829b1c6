//! The fixed rules the pipeline target runs under: two rule sets over the
//! demo topology, compiled once into a chain of snapshots so that a fuzz
//! input can change the rules under live connections.

use std::sync::OnceLock;

use flowgate_dataplane::flow::FlowTimeouts;
use flowgate_dataplane::rules;
use flowgate_dataplane::table::Snapshot;

/// Connection-table entries per run: small, so that a short input already
/// fills the table and makes it evict.
pub const FLOW_CAPACITY: usize = 64;

/// The gateway's client-facing interface (port 0).
pub const GW_CLIENT_MAC: [u8; 6] = [0x02, 0x66, 0x67, 0, 0, 0x01];
/// The client's (or its router's) MAC.
pub const CLIENT_MAC: [u8; 6] = [0x02, 0x66, 0x67, 0, 0, 0x02];
/// The gateway's backend-facing interface (port 1).
pub const GW_BACKEND_MAC: [u8; 6] = [0x02, 0x66, 0x67, 0, 0x01, 0x01];

/// The first rule set: every scheduler (maglev, wrr, sh) over TCP and UDP,
/// IPv4 and IPv6; a drained backend; a backend with no known neighbour.
/// Timeouts are seconds long so that inputs reach them.
pub const RULES_A: &str = r#"
[gateway]
maglev_table_size = 251

[flows]
capacity = 64
tcp_syn_timeout = 2
tcp_established_timeout = 10
tcp_closing_timeout = 1
udp_timeout = 3

[[interfaces]]
name = "fg-client"
mac = "02:66:67:00:00:01"

[[interfaces]]
name = "fg-backend"
mac = "02:66:67:00:01:01"

[[neighbours]]
address = "198.18.0.2"
mac = "02:66:67:00:00:02"
interface = "fg-client"

[[neighbours]]
address = "2001:2::2"
mac = "02:66:67:00:00:02"
interface = "fg-client"

[[neighbours]]
address = "198.18.1.11"
mac = "02:66:67:00:01:11"
interface = "fg-backend"

[[neighbours]]
address = "198.18.1.12"
mac = "02:66:67:00:01:12"
interface = "fg-backend"

[[neighbours]]
address = "2001:2:0:1::11"
mac = "02:66:67:00:01:11"
interface = "fg-backend"

[[neighbours]]
address = "2001:2:0:1::12"
mac = "02:66:67:00:01:12"
interface = "fg-backend"

# 198.18.1.13 has no neighbour entry: flows it is chosen for are dropped.
[[services]]
name = "web"
protocol = "tcp"
vip = "198.18.100.10"
port = 80
scheduler = "maglev"
[[services.backends]]
address = "198.18.1.11"
port = 8080
[[services.backends]]
address = "198.18.1.12"
port = 8080
[[services.backends]]
address = "198.18.1.13"
port = 8080
weight = 2

[[services]]
name = "dns"
protocol = "udp"
vip = "198.18.100.10"
port = 53
scheduler = "sh"
[[services.backends]]
address = "198.18.1.11"
port = 5353
[[services.backends]]
address = "198.18.1.12"
port = 5353

[[services]]
name = "web-wrr"
protocol = "tcp"
vip = "198.18.100.11"
port = 80
scheduler = "wrr"
[[services.backends]]
address = "198.18.1.11"
port = 8080
weight = 1
[[services.backends]]
address = "198.18.1.12"
port = 8080
weight = 2
[[services.backends]]
address = "198.18.1.13"
port = 8080
weight = 0

[[services]]
name = "web6"
protocol = "tcp"
vip = "2001:2:0:100::10"
port = 80
scheduler = "maglev"
[[services.backends]]
address = "2001:2:0:1::11"
port = 8080
[[services.backends]]
address = "2001:2:0:1::12"
port = 8080

[[services]]
name = "dns6"
protocol = "udp"
vip = "2001:2:0:100::10"
port = 53
scheduler = "wrr"
[[services.backends]]
address = "2001:2:0:1::11"
port = 5353
weight = 3
[[services.backends]]
address = "2001:2:0:1::12"
port = 5353
weight = 1

[[services]]
name = "ssh6"
protocol = "tcp"
vip = "2001:2:0:100::11"
port = 22
scheduler = "sh"
[[services.backends]]
address = "2001:2:0:1::11"
port = 22
[[services.backends]]
address = "2001:2:0:1::12"
port = 22
"#;

/// The second rule set, the first one changed the way an operator might:
/// a backend removed and another added, schedulers and weights changed, a
/// service gone and a new one.
pub const RULES_B: &str = r#"
[gateway]
maglev_table_size = 251

[flows]
capacity = 64
tcp_syn_timeout = 2
tcp_established_timeout = 10
tcp_closing_timeout = 1
udp_timeout = 3

[[interfaces]]
name = "fg-client"
mac = "02:66:67:00:00:01"

[[interfaces]]
name = "fg-backend"
mac = "02:66:67:00:01:01"

[[neighbours]]
address = "198.18.0.2"
mac = "02:66:67:00:00:02"
interface = "fg-client"

[[neighbours]]
address = "2001:2::2"
mac = "02:66:67:00:00:02"
interface = "fg-client"

[[neighbours]]
address = "198.18.1.11"
mac = "02:66:67:00:01:11"
interface = "fg-backend"

[[neighbours]]
address = "198.18.1.13"
mac = "02:66:67:00:01:13"
interface = "fg-backend"

[[neighbours]]
address = "2001:2:0:1::11"
mac = "02:66:67:00:01:11"
interface = "fg-backend"

[[neighbours]]
address = "2001:2:0:1::12"
mac = "02:66:67:00:01:12"
interface = "fg-backend"

[[services]]
name = "web"
protocol = "tcp"
vip = "198.18.100.10"
port = 80
scheduler = "maglev"
[[services.backends]]
address = "198.18.1.11"
port = 8080
[[services.backends]]
address = "198.18.1.13"
port = 8080
[[services.backends]]
address = "198.18.1.14"
port = 8080

[[services]]
name = "dns"
protocol = "udp"
vip = "198.18.100.10"
port = 53
scheduler = "maglev"
[[services.backends]]
address = "198.18.1.11"
port = 5353
weight = 0
[[services.backends]]
address = "198.18.1.13"
port = 5353

[[services]]
name = "web-wrr"
protocol = "tcp"
vip = "198.18.100.11"
port = 80
scheduler = "wrr"
[[services.backends]]
address = "198.18.1.11"
port = 8080
weight = 5
[[services.backends]]
address = "198.18.1.13"
port = 8080
weight = 1

[[services]]
name = "web6"
protocol = "tcp"
vip = "2001:2:0:100::10"
port = 80
scheduler = "wrr"
[[services.backends]]
address = "2001:2:0:1::12"
port = 8080

[[services]]
name = "ntp"
protocol = "udp"
vip = "198.18.100.12"
port = 123
scheduler = "sh"
[[services.backends]]
address = "198.18.1.11"
port = 123
[[services.backends]]
address = "198.18.1.13"
port = 123

[[services]]
name = "ssh6"
protocol = "tcp"
vip = "2001:2:0:100::11"
port = 22
scheduler = "sh"
[[services.backends]]
address = "2001:2:0:1::12"
port = 22
weight = 4
[[services.backends]]
address = "2001:2:0:1::11"
port = 22
"#;

/// What every pipeline run shares: the snapshots and the flow timeouts.
#[derive(Debug)]
pub struct Fixture {
    /// Snapshots in publication order, alternating rule sets A and B, each
    /// built from the one before it as the control thread would. A run
    /// starts on the first and steps to the next on request, wrapping
    /// around.
    pub snapshots: Vec<Snapshot>,
    /// The flow timeouts of the rules (the same in both sets).
    pub timeouts: FlowTimeouts,
    /// A snapshot with no services (generation 0, before any rules): a
    /// pipeline that adopts it drops its per-service state.
    pub empty: Snapshot,
    /// One past the highest endpoint id of any snapshot in the chain: the
    /// backend connection counts a pipeline needs for them.
    pub endpoint_limit: u32,
    /// Whether a snapshot caps some backend's connections, so that the
    /// backend connection counts decide new flows (else only the
    /// connection table writes them, and nothing reads them).
    pub caps_connections: bool,
}

/// How many snapshots the chain holds: A, B, A, B.
pub const GENERATIONS: usize = 4;

impl Fixture {
    /// The process-wide fixture, built on first use.
    ///
    /// # Panics
    /// If the rule sets above are invalid (a bug in this file).
    pub fn get() -> &'static Fixture {
        static FIXTURE: OnceLock<Fixture> = OnceLock::new();
        FIXTURE.get_or_init(Fixture::build)
    }

    fn build() -> Fixture {
        let load = |text: &str, origin: &str| {
            rules::load_str(text, origin)
                .unwrap_or_else(|e| panic!("fuzz fixture rules are invalid:\n{e}"))
        };
        let configs = [load(RULES_A, "rules-a.toml"), load(RULES_B, "rules-b.toml")];
        let mut snapshots: Vec<Snapshot> = Vec::with_capacity(GENERATIONS);
        for generation in 0..GENERATIONS {
            let config = &configs[generation % configs.len()];
            let next = Snapshot::build(config, snapshots.last());
            snapshots.push(next);
        }
        let endpoint_limit = snapshots
            .iter()
            .map(Snapshot::endpoint_id_limit)
            .max()
            .unwrap_or(0);
        let caps_connections = snapshots.iter().any(|s| {
            (0..endpoint_limit)
                .any(|id| u32::try_from(id).is_ok_and(|id| s.endpoint_cap(id).is_some()))
        });
        Fixture {
            caps_connections,
            snapshots,
            timeouts: FlowTimeouts::from(&configs[0].flows),
            empty: Snapshot::empty(),
            endpoint_limit: u32::try_from(endpoint_limit)
                .unwrap_or_else(|_| panic!("{endpoint_limit} endpoints in the fuzz fixture")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_rule_sets_compile_into_distinct_snapshots() {
        let fixture = Fixture::get();
        assert_eq!(fixture.snapshots.len(), GENERATIONS);
        let a = &fixture.snapshots[0];
        let b = &fixture.snapshots[1];
        assert_eq!(a.service_count(), 6);
        assert_eq!(b.service_count(), 6);
        assert!(b.generation() > a.generation());
        assert_eq!(fixture.timeouts.udp_ns, 3_000_000_000);
        assert!(!fixture.caps_connections, "no rule caps a backend");
    }
}
