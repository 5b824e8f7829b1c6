//! Which VIPs a gateway offers its router by BGP (`announce = "bgp"`).
//!
//! flowgate does not speak BGP itself: the distribution's daemon (BIRD 2,
//! FRR) does. The gateway puts one host route per offered VIP on a device
//! it owns ([`VipRoutes`](super::VipRoutes), a non-persistent TUN device
//! that dies with the process), the daemon learns those kernel routes and
//! announces them, and withdraws them when they go. So a VIP is withdrawn
//! when the gateway stops in any way (kill -9 included: the kernel removes
//! the device and its routes when the last descriptor closes), when none
//! of the VIP's `bgp` services has a backend that can take a new flow, and
//! while the gateway is drained (`flowgatectl fleet drain`, the control
//! request `fleet_drain`, until `fleet undrain`).

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::rules::Announce;
use crate::table::Snapshot;
use crate::wire::bytes_to_addr;

/// The VIPs to offer: those of `bgp` services with at least one backend of
/// weight > 0 that is alive at `now_ns`; none while `drained`.
pub fn offered_vips(snapshot: &Snapshot, now_ns: u64, drained: bool) -> BTreeSet<IpAddr> {
    if drained {
        return BTreeSet::new();
    }
    let liveness = snapshot.liveness();
    snapshot
        .services()
        .filter(|(_, service)| service.announce() == Announce::Bgp)
        .filter(|(_, service)| {
            service
                .weighted()
                .iter()
                .any(|&id| liveness.is_alive(id, now_ns))
        })
        .map(|(_, service)| bytes_to_addr(service.vip()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::load_str;

    const RULES: &str = r#"
[[interfaces]]
name = "fg-client"

[[services]]
name = "web"
protocol = "tcp"
vip = "198.18.100.10"
port = 80
announce = "bgp"
[[services.backends]]
address = "198.18.1.11"
port = 8080
[[services.backends]]
address = "198.18.1.12"
port = 8080

[[services]]
name = "dns"
protocol = "udp"
vip = "198.18.100.10"
port = 53
announce = "bgp"
[[services.backends]]
address = "198.18.1.13"
port = 53

[[services]]
name = "arp"
protocol = "tcp"
vip = "198.18.100.12"
port = 80
announce = "arp"
[[services.backends]]
address = "198.18.1.11"
port = 8082
"#;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_vip_is_offered_while_one_of_its_bgp_services_can_take_a_new_flow() {
        let snapshot = Snapshot::build(&load_str(RULES, "t.toml").unwrap(), None);
        let now = snapshot.liveness().now_ns();
        // Not the ARP one.
        assert_eq!(
            offered_vips(&snapshot, now, false),
            BTreeSet::from([ip("198.18.100.10")])
        );
        assert!(offered_vips(&snapshot, now, true).is_empty(), "drained");

        // web's backends go down: dns still holds the VIP; then it too.
        let web = snapshot
            .services()
            .find(|(_, s)| s.name() == "web")
            .unwrap()
            .1;
        for &id in web.weighted() {
            snapshot.liveness().set_up(id, false).unwrap();
        }
        assert_eq!(offered_vips(&snapshot, now, false).len(), 1);
        let dns = snapshot
            .services()
            .find(|(_, s)| s.name() == "dns")
            .unwrap()
            .1;
        snapshot
            .liveness()
            .set_up(dns.weighted()[0], false)
            .unwrap();
        assert!(offered_vips(&snapshot, now, false).is_empty());
        // One backend back: offered again.
        snapshot.liveness().set_up(web.weighted()[1], true).unwrap();
        assert_eq!(
            offered_vips(&snapshot, now, false),
            BTreeSet::from([ip("198.18.100.10")])
        );
    }
}
