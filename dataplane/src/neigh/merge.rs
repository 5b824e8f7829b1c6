//! Static neighbours from the config joined with those the kernel learned.

use std::collections::HashSet;
use std::net::IpAddr;

use super::KernelNeighbour;
use crate::rules::{Config, Neighbour};

/// The neighbours a snapshot should be built with: the config's static
/// neighbours, then every usable learned one on one of the config's
/// interfaces.
///
/// `port_ifindex[i]` is the ifindex of `config.interfaces[i]`: a learned
/// entry's interface index is the position of its ifindex there (entries
/// past the config's interfaces are ignored). A static entry wins over a
/// learned one with the same address, and among learned entries for one
/// address the first usable one in `learned` wins. Order: static entries
/// in config order, then learned ones in `learned` order.
pub fn merge_neighbours(
    config: &Config,
    learned: &[KernelNeighbour],
    port_ifindex: &[u32],
) -> Vec<Neighbour> {
    let mut merged = config.neighbours.clone();
    let mut taken: HashSet<IpAddr> = merged.iter().map(|n| n.address).collect();
    for entry in learned {
        if !entry.is_usable() {
            continue;
        }
        let Some(interface) = port_ifindex.iter().position(|&i| i == entry.ifindex) else {
            continue;
        };
        if interface >= config.interfaces.len() || !taken.insert(entry.address) {
            continue;
        }
        merged.push(Neighbour {
            address: entry.address,
            mac: entry.mac,
            interface,
        });
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::neigh::NeighbourState;
    use crate::rules::Interface;

    const MAC_A: [u8; 6] = [0x02, 0x66, 0x67, 0, 1, 0x11];
    const MAC_B: [u8; 6] = [0x02, 0x66, 0x67, 0, 1, 0x12];
    const MAC_STATIC: [u8; 6] = [0x02, 0x66, 0x67, 0, 1, 0x99];

    fn config() -> Config {
        Config {
            interfaces: vec![
                Interface {
                    name: "fg-client".into(),
                    mac: Some([0x02, 0x66, 0x67, 0, 0, 1]),
                    vlan: Default::default(),
                },
                Interface {
                    name: "fg-backend".into(),
                    mac: Some([0x02, 0x66, 0x67, 0, 1, 1]),
                    vlan: Default::default(),
                },
            ],
            neighbours: vec![Neighbour {
                address: "198.18.1.11".parse().unwrap(),
                mac: MAC_STATIC,
                interface: 1,
            }],
            ..Config::default()
        }
    }

    fn learned(
        ifindex: u32,
        address: &str,
        mac: [u8; 6],
        state: NeighbourState,
    ) -> KernelNeighbour {
        KernelNeighbour {
            ifindex,
            address: address.parse().unwrap(),
            mac,
            state,
        }
    }

    #[test]
    fn static_entries_win_and_learned_ones_map_to_ports() {
        let kernel = [
            learned(7, "198.18.1.11", MAC_A, NeighbourState::Reachable),
            learned(7, "198.18.1.12", MAC_B, NeighbourState::Stale),
            learned(5, "2001:2::2", MAC_A, NeighbourState::Delay),
        ];
        let merged = merge_neighbours(&config(), &kernel, &[5, 7]);
        assert_eq!(
            merged,
            vec![
                Neighbour {
                    address: "198.18.1.11".parse().unwrap(),
                    mac: MAC_STATIC,
                    interface: 1
                },
                Neighbour {
                    address: "198.18.1.12".parse().unwrap(),
                    mac: MAC_B,
                    interface: 1
                },
                Neighbour {
                    address: "2001:2::2".parse().unwrap(),
                    mac: MAC_A,
                    interface: 0
                },
            ]
        );
    }

    #[test]
    fn unusable_and_foreign_entries_are_left_out() {
        let kernel = [
            learned(7, "198.18.1.20", [0; 6], NeighbourState::Incomplete),
            learned(7, "198.18.1.21", MAC_A, NeighbourState::Failed),
            learned(7, "198.18.1.22", [0; 6], NeighbourState::NoArp),
            learned(7, "198.18.1.23", MAC_A, NeighbourState::None),
            // On an interface the config does not have.
            learned(9, "198.18.1.24", MAC_A, NeighbourState::Reachable),
            // Usable: with a MAC.
            learned(7, "198.18.1.25", MAC_B, NeighbourState::NoArp),
            learned(7, "198.18.1.26", MAC_B, NeighbourState::Permanent),
            learned(7, "198.18.1.27", MAC_B, NeighbourState::Probe),
        ];
        let merged = merge_neighbours(&config(), &kernel, &[5, 7]);
        let learned: Vec<String> = merged[1..].iter().map(|n| n.address.to_string()).collect();
        assert_eq!(learned, ["198.18.1.25", "198.18.1.26", "198.18.1.27"]);
    }

    #[test]
    fn an_address_learned_twice_keeps_its_first_usable_entry() {
        let kernel = [
            learned(5, "198.18.0.2", MAC_A, NeighbourState::Failed),
            learned(7, "198.18.0.2", MAC_B, NeighbourState::Stale),
            learned(5, "198.18.0.2", MAC_A, NeighbourState::Reachable),
        ];
        let merged = merge_neighbours(&config(), &kernel, &[5, 7]);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[1].mac, MAC_B);
        assert_eq!(merged[1].interface, 1);
    }

    #[test]
    fn ifindexes_past_the_configs_interfaces_are_ignored() {
        let kernel = [learned(8, "198.18.0.3", MAC_A, NeighbourState::Reachable)];
        // A third ifindex with no third interface in the config.
        let merged = merge_neighbours(&config(), &kernel, &[5, 7, 8]);
        assert_eq!(merged, config().neighbours);
    }
}
