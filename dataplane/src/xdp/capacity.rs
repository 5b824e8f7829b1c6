//! How many keys the XDP program's maps hold, and whether rules fit in
//! them: the check every change passes before anything is published or
//! programmed.
//!
//! The numbers are written once, in dataplane/bpf/flowgate_limits.h: the C
//! program sizes its maps with them, and build.rs turns the same
//! `#define`s into the constants of [`XdpCapacity::PROGRAM`]. Loading the
//! program reads every map's size back from the kernel and refuses a
//! program whose maps differ (`XdpFilter::attach`), so the limit checked
//! here is the limit the kernel enforces.

use std::fmt;

use super::OwnedTraffic;
use crate::rules::Config;

/// The limits of bpf/flowgate_limits.h, written by build.rs.
mod limits {
    include!(concat!(env!("OUT_DIR"), "/xdp_capacity.rs"));
}

/// How many keys each of the XDP program's hash maps holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct XdpCapacity {
    /// `services`: (protocol, VIP, port) keys.
    pub service_keys: usize,
    /// `reply_sources`: (protocol, backend address, backend port) keys.
    pub reply_sources: usize,
    /// `vip_addrs`: VIP addresses.
    pub vip_addresses: usize,
    /// `local_addrs`: the box's own addresses.
    pub local_addresses: usize,
    /// `announce_addrs`: VIP addresses announced on the client-facing
    /// interface.
    pub announced_addresses: usize,
}

impl XdpCapacity {
    /// The program's maps as flowgate builds them
    /// (bpf/flowgate_limits.h).
    pub const PROGRAM: XdpCapacity = XdpCapacity {
        service_keys: limits::SERVICE_KEYS as usize,
        reply_sources: limits::REPLY_SOURCES as usize,
        vip_addresses: limits::VIP_ADDRESSES as usize,
        local_addresses: limits::LOCAL_ADDRESSES as usize,
        announced_addresses: limits::ANNOUNCED_ADDRESSES as usize,
    };

    /// Whether the maps hold every key `config`'s rules need; otherwise
    /// each map that is too small, with the count needed and its limit.
    ///
    /// Costs O(services) and allocates nothing when the rules clearly fit
    /// (no more services than either service map holds, no more backends
    /// than the reply map holds); only rules near a limit are counted key
    /// by key, as the maps would hold them (a backend shared by two
    /// services of one protocol is one key).
    pub fn check(&self, config: &Config) -> Result<(), CapacityError> {
        if self.admits(&XdpDemand::at_most(config)) {
            return Ok(());
        }
        let needed = XdpDemand::of(config);
        let shortfalls: Vec<Shortfall> = [
            (XdpMap::Services, needed.service_keys, self.service_keys),
            (
                XdpMap::ReplySources,
                needed.reply_sources,
                self.reply_sources,
            ),
            (
                XdpMap::VipAddresses,
                needed.vip_addresses,
                self.vip_addresses,
            ),
            (
                XdpMap::AnnouncedAddresses,
                needed.announced_addresses,
                self.announced_addresses,
            ),
        ]
        .into_iter()
        .filter(|&(_, needed, capacity)| needed > capacity)
        .map(|(map, needed, capacity)| Shortfall {
            map,
            needed,
            capacity,
        })
        .collect();
        if shortfalls.is_empty() {
            Ok(())
        } else {
            Err(CapacityError { shortfalls })
        }
    }

    /// Whether `demand` fits every map.
    fn admits(&self, demand: &XdpDemand) -> bool {
        demand.service_keys <= self.service_keys
            && demand.reply_sources <= self.reply_sources
            && demand.vip_addresses <= self.vip_addresses
            && demand.announced_addresses <= self.announced_addresses
    }
}

/// How many keys rules need in each map the rules fill.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpDemand {
    /// Distinct (protocol, VIP, port).
    pub service_keys: usize,
    /// Distinct (protocol, backend address, backend port), drained
    /// backends included.
    pub reply_sources: usize,
    /// Distinct VIP addresses.
    pub vip_addresses: usize,
    /// Distinct VIP addresses announced (`announce = "arp"`).
    pub announced_addresses: usize,
}

impl XdpDemand {
    /// The exact counts: the sizes of [`OwnedTraffic::from_config`].
    pub fn of(config: &Config) -> XdpDemand {
        let owned = OwnedTraffic::from_config(config);
        XdpDemand {
            service_keys: owned.services.len(),
            reply_sources: owned.reply_sources.len(),
            vip_addresses: owned.vip_addresses().len(),
            announced_addresses: owned.announced.len(),
        }
    }

    /// Upper bounds, counted without a set: every service a key and a VIP
    /// of its own, every backend a reply source of its own, every
    /// announcing service an announced address of its own.
    fn at_most(config: &Config) -> XdpDemand {
        let services = config.services.len();
        XdpDemand {
            service_keys: services,
            reply_sources: config.services.iter().map(|s| s.backends.len()).sum(),
            vip_addresses: services,
            announced_addresses: config
                .services
                .iter()
                .filter(|s| s.announce.is_announced())
                .count(),
        }
    }
}

/// One of the maps the rules fill.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum XdpMap {
    /// `services`.
    Services,
    /// `reply_sources`.
    ReplySources,
    /// `vip_addrs`.
    VipAddresses,
    /// `announce_addrs`.
    AnnouncedAddresses,
}

impl XdpMap {
    /// What its keys are, in the plural, for messages.
    pub fn keys(self) -> &'static str {
        match self {
            XdpMap::Services => "service keys (protocol, VIP, port)",
            XdpMap::ReplySources => "reply sources (protocol, backend address, backend port)",
            XdpMap::VipAddresses => "VIP addresses",
            XdpMap::AnnouncedAddresses => "announced VIP addresses (announce = \"arp\")",
        }
    }
}

/// A map too small for some rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shortfall {
    /// The map.
    pub map: XdpMap,
    /// The keys the rules need in it.
    pub needed: usize,
    /// The keys it holds at most.
    pub capacity: usize,
}

impl Shortfall {
    /// One line: `SUBJECT needs 131 073 service keys (protocol, VIP,
    /// port); the XDP program holds at most 131 072`.
    pub fn describe(&self, subject: &str) -> String {
        format!(
            "{subject} needs {} {}; the XDP program holds at most {}",
            grouped(self.needed),
            self.map.keys(),
            grouped(self.capacity)
        )
    }
}

/// Rules that need more keys than the XDP program's maps hold. Nothing
/// of them was applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.problems("the config").join("; "))]
pub struct CapacityError {
    /// Each map that is too small (at least one), in the order services,
    /// reply sources, VIP addresses, announced addresses.
    pub shortfalls: Vec<Shortfall>,
}

impl CapacityError {
    /// One line per map that is too small, each starting with `subject`
    /// ("the change", "the config").
    pub fn problems(&self, subject: &str) -> Vec<String> {
        self.shortfalls
            .iter()
            .map(|s| s.describe(subject))
            .collect()
    }
}

/// `n` with its digits in groups of three: `131 072`.
fn grouped(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(digit);
    }
    out
}

impl fmt::Display for XdpCapacity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} service keys, {} reply sources, {} VIP addresses, {} local addresses, \
             {} announced addresses",
            grouped(self.service_keys),
            grouped(self.reply_sources),
            grouped(self.vip_addresses),
            grouped(self.local_addresses),
            grouped(self.announced_addresses)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{Backend, Protocol, Scheduler, Service};
    use crate::table::Snapshot;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    fn service(name: String, protocol: Protocol, vip: IpAddr, port: u16) -> Service {
        Service {
            limits: Default::default(),

            announce: Default::default(),
            name,
            protocol,
            vip,
            port,
            scheduler: Scheduler::Wrr,
            maglev_table_size: 251,
            failover: Default::default(),
            health: Default::default(),
            backends: Vec::new(),
            routing: Default::default(),
        }
    }

    fn v4(i: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + i))
    }

    /// `n` services on one VIP, alternating TCP and UDP over ports 1..,
    /// all with the one backend 198.19.0.1:80.
    fn services_on_one_vip(n: usize) -> Config {
        let backend = Backend::new("198.19.0.1".parse().unwrap(), 80);
        let services = (0..n)
            .map(|i| {
                let protocol = if i % 2 == 0 {
                    Protocol::Tcp
                } else {
                    Protocol::Udp
                };
                let port = u16::try_from(i / 2 % 65_535 + 1).unwrap();
                let vip = v4(u32::try_from(i / 131_070).unwrap());
                let mut s = service(format!("s{i}"), protocol, vip, port);
                s.backends.push(backend.clone());
                s
            })
            .collect();
        Config {
            services,
            ..Config::default()
        }
    }

    /// One TCP service with `n` backends, all distinct.
    fn backends(n: usize) -> Config {
        let mut s = service("big".into(), Protocol::Tcp, v4(0), 80);
        s.backends = (0..n)
            .map(|i| {
                let host = u32::try_from(i / 65_535).unwrap();
                let port = u16::try_from(i % 65_535 + 1).unwrap();
                Backend::new(v4(1 + host), port)
            })
            .collect();
        Config {
            services: vec![s].into(),
            ..Config::default()
        }
    }

    /// `n` services, each on a VIP of its own (IPv6, as 198.18.0.0/15
    /// holds only 131 072 addresses).
    fn vips(n: usize) -> Config {
        let backend = Backend::new("2001:2:0:1::11".parse().unwrap(), 80);
        let services = (0..n)
            .map(|i| {
                let vip = Ipv6Addr::new(
                    0x2001,
                    2,
                    0,
                    0x200,
                    0,
                    0,
                    u16::try_from(i >> 16).unwrap(),
                    u16::try_from(i & 0xffff).unwrap(),
                );
                let mut s = service(format!("v{i}"), Protocol::Udp, vip.into(), 53);
                s.backends.push(backend.clone());
                s
            })
            .collect();
        Config {
            services,
            ..Config::default()
        }
    }

    #[test]
    fn the_limits_are_those_of_the_header() {
        let header = include_str!("../../bpf/flowgate_limits.h");
        let value = |name: &str| -> usize {
            header
                .lines()
                .find_map(|l| l.strip_prefix(&format!("#define {name} ")))
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        };
        assert_eq!(
            XdpCapacity::PROGRAM,
            XdpCapacity {
                service_keys: value("FLOWGATE_MAX_SERVICE_KEYS"),
                reply_sources: value("FLOWGATE_MAX_REPLY_SOURCES"),
                vip_addresses: value("FLOWGATE_MAX_VIP_ADDRESSES"),
                local_addresses: value("FLOWGATE_MAX_LOCAL_ADDRESSES"),
                announced_addresses: value("FLOWGATE_MAX_ANNOUNCED_ADDRESSES"),
            }
        );
        // The C source sizes the maps with the header, not with numbers.
        let source = [
            include_str!("../../bpf/flowgate_xdp.c"),
            include_str!("../../bpf/flowgate_announce.h"),
        ]
        .concat();
        assert!(source.contains("#include \"flowgate_limits.h\""));
        for define in [
            "FLOWGATE_MAX_SERVICE_KEYS",
            "FLOWGATE_MAX_REPLY_SOURCES",
            "FLOWGATE_MAX_VIP_ADDRESSES",
            "FLOWGATE_MAX_LOCAL_ADDRESSES",
            "FLOWGATE_MAX_ANNOUNCED_ADDRESSES",
        ] {
            assert!(
                source.contains(&format!("__uint(max_entries, {define});")),
                "{define}"
            );
        }
    }

    #[test]
    fn numbers_are_grouped_by_thousands() {
        for (n, text) in [
            (0, "0"),
            (7, "7"),
            (999, "999"),
            (1_000, "1 000"),
            (65_536, "65 536"),
            (131_073, "131 073"),
            (1_262_144, "1 262 144"),
        ] {
            assert_eq!(grouped(n), text);
        }
    }

    #[test]
    fn the_count_is_what_the_snapshot_makes_the_maps_hold() {
        // Shared backends, drained ones, a VIP with several ports, both
        // families, duplicate backends within a service.
        let text = r#"
[[services]]
name = "web"
protocol = "tcp"
vip = "198.18.100.10"
port = 80
[[services.backends]]
address = "198.18.1.11"
port = 8080
[[services.backends]]
address = "198.18.1.12"
port = 8080
weight = 0
[[services]]
name = "web-alt"
protocol = "tcp"
vip = "198.18.100.10"
port = 81
[[services.backends]]
address = "198.18.1.11"
port = 8080
[[services]]
name = "dns"
protocol = "udp"
vip = "198.18.100.11"
port = 53
[[services.backends]]
address = "198.18.1.11"
port = 8080
[[services]]
name = "web6"
protocol = "tcp"
vip = "2001:2:0:100::10"
port = 80
[[services.backends]]
address = "2001:2:0:1::11"
port = 8080
"#;
        let config = crate::rules::load_str(text, "t.toml").unwrap();
        let from_snapshot = OwnedTraffic::from_snapshot(&Snapshot::build(&config, None));
        assert_eq!(OwnedTraffic::from_config(&config), from_snapshot);
        assert_eq!(
            XdpDemand::of(&config),
            XdpDemand {
                service_keys: 4,
                // .11:8080 once for TCP, once for UDP; .12 drained.
                reply_sources: 4,
                vip_addresses: 3,
                announced_addresses: 0,
            }
        );
        assert_eq!(
            XdpDemand::at_most(&config),
            XdpDemand {
                service_keys: 4,
                reply_sources: 5,
                vip_addresses: 4,
                announced_addresses: 0,
            }
        );
    }

    #[test]
    fn at_each_limit_rules_fit_and_one_more_key_is_refused_with_both_numbers() {
        let small = XdpCapacity {
            service_keys: 4,
            reply_sources: 6,
            vip_addresses: 3,
            local_addresses: 1,
            announced_addresses: 2,
        };
        let at = |s, r, v| XdpDemand {
            service_keys: s,
            reply_sources: r,
            vip_addresses: v,
            announced_addresses: 0,
        };
        assert!(small.admits(&at(4, 6, 3)));
        for over in [at(5, 6, 3), at(4, 7, 3), at(4, 6, 4)] {
            assert!(!small.admits(&over), "{over:?}");
        }

        // Services: 4 fit, 5 do not (one VIP, so VIPs are no problem).
        assert_eq!(small.check(&services_on_one_vip(4)), Ok(()));
        let e = small.check(&services_on_one_vip(5)).unwrap_err();
        assert_eq!(
            e.problems("the change"),
            ["the change needs 5 service keys (protocol, VIP, port); the XDP program holds at most 4"]
        );
        // Reply sources: 6 fit, 7 do not.
        assert_eq!(small.check(&backends(6)), Ok(()));
        let e = small.check(&backends(7)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the config needs 7 reply sources (protocol, backend address, backend port); \
             the XDP program holds at most 6"
        );
        // VIP addresses: 3 fit, 4 do not (4 services fit).
        assert_eq!(small.check(&vips(3)), Ok(()));
        let e = small.check(&vips(4)).unwrap_err();
        assert_eq!(
            e.shortfalls,
            [Shortfall {
                map: XdpMap::VipAddresses,
                needed: 4,
                capacity: 3
            }]
        );
        // Many backends of one address and port count once.
        let mut shared = backends(1);
        let one = shared.services[0].backends[0].clone();
        shared.services[0].backends = vec![one; 50];
        assert_eq!(small.check(&shared), Ok(()));
    }

    /// `n` services on VIPs of their own, the first `announced` of them
    /// announced.
    fn announced(n: usize, announced: usize) -> Config {
        let mut config = vips(n);
        for s in config.services.iter_mut().take(announced) {
            s.announce = crate::rules::Announce::Arp;
        }
        config
    }

    #[test]
    fn announced_addresses_have_a_map_of_their_own() {
        let small = XdpCapacity {
            service_keys: 8,
            reply_sources: 8,
            vip_addresses: 8,
            local_addresses: 1,
            announced_addresses: 2,
        };
        assert_eq!(small.check(&announced(8, 2)), Ok(()));
        let e = small.check(&announced(8, 3)).unwrap_err();
        assert_eq!(
            e.problems("the change"),
            [
                "the change needs 3 announced VIP addresses (announce = \"arp\"); \
              the XDP program holds at most 2"
            ]
        );
        // Several services of one announced VIP are one address.
        let mut shared = services_on_one_vip(6);
        for s in shared.services.iter_mut() {
            s.announce = crate::rules::Announce::Arp;
        }
        assert_eq!(small.check(&shared), Ok(()));

        // The program's own size, exactly.
        let program = XdpCapacity::PROGRAM;
        let n = program.announced_addresses;
        assert_eq!(program.check(&announced(n + 1, n)), Ok(()));
        let e = program.check(&announced(n + 1, n + 1)).unwrap_err();
        assert_eq!(
            e.shortfalls,
            [Shortfall {
                map: XdpMap::AnnouncedAddresses,
                needed: n + 1,
                capacity: n
            }]
        );
    }

    #[test]
    fn the_programs_own_limits_hold_at_full_size() {
        let program = XdpCapacity::PROGRAM;
        assert_eq!(
            program.check(&services_on_one_vip(program.service_keys)),
            Ok(())
        );
        let e = program
            .check(&services_on_one_vip(program.service_keys + 1))
            .unwrap_err();
        assert_eq!(
            e.problems("the change"),
            [
                "the change needs 131 073 service keys (protocol, VIP, port); \
              the XDP program holds at most 131 072"
            ]
        );

        assert_eq!(program.check(&backends(program.reply_sources)), Ok(()));
        let e = program
            .check(&backends(program.reply_sources + 1))
            .unwrap_err();
        assert_eq!(
            e.problems("the config"),
            ["the config needs 262 145 reply sources (protocol, backend address, backend port); \
              the XDP program holds at most 262 144"]
        );

        // A VIP address per service: its map is as large as the services
        // map, so both are too small together.
        assert_eq!(program.check(&vips(program.vip_addresses)), Ok(()));
        let e = program.check(&vips(program.vip_addresses + 1)).unwrap_err();
        assert_eq!(
            e.shortfalls,
            [
                Shortfall {
                    map: XdpMap::Services,
                    needed: 131_073,
                    capacity: 131_072
                },
                Shortfall {
                    map: XdpMap::VipAddresses,
                    needed: 131_073,
                    capacity: 131_072
                },
            ]
        );
    }
}
