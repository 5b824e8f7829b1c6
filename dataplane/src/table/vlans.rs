//! The interfaces' VLAN settings, compiled for the per-packet tests: see
//! [`PortVlans`].

use crate::rules::Interface;

/// Words of a bitmap of the 4096 VLAN ids.
pub const VLAN_ID_WORDS: usize = 4096 / 64;

/// One interface's VLAN setting: the ids it accepts as a bitmap, whether
/// it takes untagged frames, the tag it sends with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortVlan {
    accepted: [u64; VLAN_ID_WORDS],
    untagged: bool,
    egress: Option<u16>,
}

impl Default for PortVlan {
    /// Untagged only.
    fn default() -> Self {
        PortVlan {
            accepted: [0; VLAN_ID_WORDS],
            untagged: true,
            egress: None,
        }
    }
}

impl PortVlan {
    /// The accepted ids, bit `id % 64` of word `id / 64` (the layout the
    /// XDP program's `ingress_config` takes).
    pub fn accepted_bits(&self) -> &[u64; VLAN_ID_WORDS] {
        &self.accepted
    }

    /// Whether untagged frames are accepted.
    pub fn untagged(&self) -> bool {
        self.untagged
    }

    /// The id frames leaving the interface are tagged with, if any.
    pub fn egress(&self) -> Option<u16> {
        self.egress
    }

    /// Whether a frame tagged `id` is accepted.
    #[inline]
    pub fn accepts(&self, id: u16) -> bool {
        let id = usize::from(id & 0xfff);
        self.accepted
            .get(id / 64)
            .is_some_and(|word| word & (1 << (id % 64)) != 0)
    }
}

/// Every interface's VLAN setting, by port index. An interface past the
/// config's list (none configured) is untagged only.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortVlans {
    ports: Vec<PortVlan>,
    /// Whether any interface has a setting other than untagged only: if
    /// none has, frames pay nothing for VLANs.
    configured: bool,
}

impl PortVlans {
    /// Compiles the `interfaces`' settings, in port order.
    pub fn new(interfaces: &[Interface]) -> PortVlans {
        let ports: Vec<PortVlan> = interfaces
            .iter()
            .map(|interface| {
                let mut port = PortVlan {
                    untagged: interface.vlan.untagged,
                    egress: interface.vlan.egress,
                    ..PortVlan::default()
                };
                for &id in &interface.vlan.accepted {
                    let id = usize::from(id & 0xfff);
                    if let Some(word) = port.accepted.get_mut(id / 64) {
                        *word |= 1 << (id % 64);
                    }
                }
                port
            })
            .collect();
        let configured = interfaces.iter().any(|i| !i.vlan.is_untagged_only());
        PortVlans { ports, configured }
    }

    /// Whether any interface has a VLAN setting.
    #[inline]
    pub fn configured(&self) -> bool {
        self.configured
    }

    /// Port `port`'s setting (untagged only for a port not configured).
    #[inline]
    pub fn port(&self, port: u16) -> &PortVlan {
        static UNTAGGED: PortVlan = PortVlan {
            accepted: [0; VLAN_ID_WORDS],
            untagged: true,
            egress: None,
        };
        self.ports.get(usize::from(port)).unwrap_or(&UNTAGGED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::InterfaceVlans;

    fn interface(accepted: &[u16], untagged: bool, egress: Option<u16>) -> Interface {
        Interface {
            name: "eth0".into(),
            mac: None,
            vlan: InterfaceVlans {
                accepted: accepted.to_vec(),
                untagged,
                egress,
            },
        }
    }

    #[test]
    fn ports_accept_their_ids_and_nothing_else() {
        let vlans = PortVlans::new(&[
            interface(&[1, 63, 64, 100, 4094], false, Some(100)),
            interface(&[], true, None),
        ]);
        assert!(vlans.configured());
        let p = vlans.port(0);
        for id in [1, 63, 64, 100, 4094] {
            assert!(p.accepts(id), "{id}");
        }
        for id in [0, 2, 62, 65, 99, 101, 4093, 4095] {
            assert!(!p.accepts(id), "{id}");
        }
        // The priority bits of a TCI are not part of its id.
        assert!(p.accepts(0xe000 | 100));
        assert_eq!((p.untagged(), p.egress()), (false, Some(100)));
        for port in [1, 2, 9] {
            let p = vlans.port(port);
            assert!(!p.accepts(100) && p.untagged() && p.egress().is_none());
        }
        let none = PortVlans::new(&[interface(&[], true, None)]);
        assert!(!none.configured());
    }
}
