//! What traffic the gateway owns, in the XDP program's terms.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;

use crate::rules::Config;
use crate::table::Snapshot;
use crate::wire::{addr_to_bytes, bytes_to_addr, ip_proto};

/// One (protocol, address, port) the XDP program matches: a service's VIP
/// and port (as destination) or a backend's address and port (as source).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrafficKey {
    /// IP protocol number (TCP or UDP).
    pub protocol: u8,
    /// Address, 16 bytes (IPv4-mapped for IPv4).
    pub address: [u8; 16],
    /// Port.
    pub port: u16,
}

impl fmt::Display for TrafficKey {
    /// `tcp 198.18.100.10:80`, `udp [2001:2::10]:53`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let protocol = match self.protocol {
            ip_proto::TCP => "tcp".to_string(),
            ip_proto::UDP => "udp".to_string(),
            other => format!("protocol {other}"),
        };
        let address = SocketAddr::new(bytes_to_addr(&self.address), self.port);
        write!(f, "{protocol} {address}")
    }
}

/// The services of `snapshot` whose SYNs the XDP program answers with
/// cookies (`syn_proxy` on or auto), by (protocol, VIP, port).
pub fn syn_proxies_of(
    snapshot: &Snapshot,
) -> std::collections::HashMap<TrafficKey, crate::synproxy::SynProxy> {
    snapshot
        .services()
        .filter(|(_, s)| s.syn_proxy().is_enabled())
        .map(|(_, s)| {
            let key = TrafficKey {
                protocol: s.protocol(),
                address: *s.vip(),
                port: s.port(),
            };
            (key, s.syn_proxy())
        })
        .collect()
}

/// The traffic the XDP program sends to the AF_XDP sockets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OwnedTraffic {
    /// Frames to these (protocol, VIP, port) are redirected.
    pub services: HashSet<TrafficKey>,
    /// Frames from these (protocol, backend address, backend port) are
    /// redirected: the replies of the gateway's connections.
    pub reply_sources: HashSet<TrafficKey>,
    /// VIP addresses (16 bytes, IPv4-mapped for IPv4) announced on the
    /// client-facing interface (`announce = "arp"`): the program there
    /// answers ARP requests and neighbour solicitations for them.
    pub announced: HashSet<[u8; 16]>,
}

impl OwnedTraffic {
    /// Every service of `snapshot` and every backend of each, drained ones
    /// included (their connections still get replies).
    pub fn from_snapshot(snapshot: &Snapshot) -> OwnedTraffic {
        let mut owned = OwnedTraffic::default();
        for (_, service) in snapshot.services() {
            owned.services.insert(TrafficKey {
                protocol: service.protocol(),
                address: *service.vip(),
                port: service.port(),
            });
            if service.announce().is_announced() {
                owned.announced.insert(*service.vip());
            }
            for &id in service.endpoints() {
                if let Some(endpoint) = snapshot.endpoint(id) {
                    owned.reply_sources.insert(TrafficKey {
                        protocol: service.protocol(),
                        address: endpoint.address,
                        port: endpoint.port,
                    });
                }
            }
        }
        owned
    }

    /// What `config`'s rules own, without compiling them: the same keys as
    /// [`Self::from_snapshot`] of a snapshot built from `config` (the
    /// capacity check counts with it before any snapshot is built).
    pub fn from_config(config: &Config) -> OwnedTraffic {
        let mut owned = OwnedTraffic::default();
        for service in &config.services {
            let protocol = service.protocol.number();
            owned.services.insert(TrafficKey {
                protocol,
                address: addr_to_bytes(service.vip),
                port: service.port,
            });
            if service.announce.is_announced() {
                owned.announced.insert(addr_to_bytes(service.vip));
            }
            for backend in &service.backends {
                owned.reply_sources.insert(TrafficKey {
                    protocol,
                    address: addr_to_bytes(backend.address),
                    port: backend.port,
                });
            }
        }
        owned
    }

    /// The VIP addresses alone: fragments to them are redirected whatever
    /// their protocol and port.
    pub fn vip_addresses(&self) -> HashSet<[u8; 16]> {
        self.services.iter().map(|k| k.address).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{Backend, Config, Protocol, Scheduler, Service};
    use crate::wire::{addr_to_bytes, ip_proto};
    use std::net::IpAddr;

    fn service(
        name: &str,
        protocol: Protocol,
        vip: &str,
        port: u16,
        backends: &[(&str, u16, u32)],
    ) -> Service {
        Service {
            limits: Default::default(),

            announce: Default::default(),
            name: name.into(),
            protocol,
            vip: vip.parse().unwrap(),
            port,
            scheduler: Scheduler::Maglev,
            maglev_table_size: 251,
            failover: Default::default(),
            health: Default::default(),
            backends: backends
                .iter()
                .map(|&(address, port, weight)| Backend {
                    weight,
                    ..Backend::new(address.parse().unwrap(), port)
                })
                .collect(),
            routing: Default::default(),
        }
    }

    fn key(protocol: u8, address: &str, port: u16) -> TrafficKey {
        TrafficKey {
            protocol,
            address: addr_to_bytes(address.parse::<IpAddr>().unwrap()),
            port,
        }
    }

    #[test]
    fn services_and_every_backend_are_owned() {
        let config = Config {
            services: vec![
                service(
                    "web",
                    Protocol::Tcp,
                    "198.18.100.10",
                    80,
                    &[("198.18.1.11", 8080, 1), ("198.18.1.12", 8080, 0)],
                ),
                service(
                    "dns",
                    Protocol::Udp,
                    "198.18.100.10",
                    53,
                    &[("198.18.1.11", 5353, 1)],
                ),
                service(
                    "web6",
                    Protocol::Tcp,
                    "2001:2:0:100::10",
                    80,
                    &[("2001:2:0:1::11", 8080, 2)],
                ),
            ]
            .into(),
            ..Config::default()
        };
        let owned = OwnedTraffic::from_snapshot(&Snapshot::build(&config, None));
        assert_eq!(OwnedTraffic::from_config(&config), owned);
        let expected_services: HashSet<TrafficKey> = [
            key(ip_proto::TCP, "198.18.100.10", 80),
            key(ip_proto::UDP, "198.18.100.10", 53),
            key(ip_proto::TCP, "2001:2:0:100::10", 80),
        ]
        .into();
        let expected_replies: HashSet<TrafficKey> = [
            key(ip_proto::TCP, "198.18.1.11", 8080),
            // Drained, but its connections still have replies.
            key(ip_proto::TCP, "198.18.1.12", 8080),
            key(ip_proto::UDP, "198.18.1.11", 5353),
            key(ip_proto::TCP, "2001:2:0:1::11", 8080),
        ]
        .into();
        assert_eq!(owned.services, expected_services);
        assert_eq!(owned.reply_sources, expected_replies);
        let vips = owned.vip_addresses();
        assert_eq!(vips.len(), 2);
        assert!(vips.contains(&addr_to_bytes("198.18.100.10".parse().unwrap())));
        assert!(vips.contains(&addr_to_bytes("2001:2:0:100::10".parse().unwrap())));
    }

    #[test]
    fn announced_vips_are_those_of_services_that_announce() {
        let mut web = service(
            "web",
            Protocol::Tcp,
            "198.18.0.50",
            80,
            &[("198.18.1.11", 8080, 1)],
        );
        let mut dns = service(
            "dns",
            Protocol::Udp,
            "198.18.0.50",
            53,
            &[("198.18.1.11", 53, 1)],
        );
        let web6 = service(
            "web6",
            Protocol::Tcp,
            "2001:2::50",
            80,
            &[("2001:2:0:1::11", 80, 1)],
        );
        web.announce = crate::rules::Announce::Arp;
        dns.announce = crate::rules::Announce::Arp;
        let config = Config {
            services: vec![web, dns, web6].into(),
            ..Config::default()
        };
        let owned = OwnedTraffic::from_config(&config);
        assert_eq!(
            owned,
            OwnedTraffic::from_snapshot(&Snapshot::build(&config, None))
        );
        let expected: HashSet<[u8; 16]> = [addr_to_bytes("198.18.0.50".parse().unwrap())].into();
        assert_eq!(owned.announced, expected);
    }

    #[test]
    fn keys_show_as_protocol_and_socket_address() {
        assert_eq!(
            key(ip_proto::TCP, "198.18.100.10", 80).to_string(),
            "tcp 198.18.100.10:80"
        );
        assert_eq!(
            key(ip_proto::UDP, "2001:2::10", 53).to_string(),
            "udp [2001:2::10]:53"
        );
    }

    #[test]
    fn an_empty_snapshot_owns_nothing() {
        assert_eq!(
            OwnedTraffic::from_snapshot(&Snapshot::empty()),
            OwnedTraffic::default()
        );
        assert_eq!(
            OwnedTraffic::from_config(&Config::default()),
            OwnedTraffic::default()
        );
    }
}
