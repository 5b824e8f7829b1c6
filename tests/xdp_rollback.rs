//! A rule change the kernel refuses part-way is taken back whole: the
//! gateway (the daemon's control-side state) with real XDP filters on two
//! interfaces, one of whose maps is made smaller than the gateway checks
//! rules against, so that the kernel itself refuses the k-th key of a
//! change (k > 1), as it would a key it has no memory for.
//!
//! ```text
//!  [gateway ns] g0 ══ p0 [peer ns]
//!               g1 ══ p1
//! ```
//!
//! What the maps hold is read back from the kernel, not from the filters'
//! own mirror. Needs root (namespaces, XDP). Set FLOWGATE_SKIP_NETNS=1 to
//! skip.

use flowgate_dataplane::daemon::Gateway;
use flowgate_dataplane::rules::{self, Config};
use flowgate_dataplane::testnet::{self, NetNs};
use flowgate_dataplane::wire::{addr_to_bytes, ip_proto};
use flowgate_dataplane::xdp::{OwnedTraffic, XdpCapacity, XdpFilter, XdpMapKeys, XdpMode};

/// A gateway namespace with g0 and g1, each a veth to a peer namespace.
struct TwoInterfaces {
    gateway: NetNs,
    _peer: NetNs,
}

impl TwoInterfaces {
    fn new() -> TwoInterfaces {
        let gateway = NetNs::new("fgrw").unwrap();
        let peer = NetNs::new("fgrp").unwrap();
        testnet::veth_pair(&gateway, "g0", &peer, "p0", 1).unwrap();
        testnet::veth_pair(&gateway, "g1", &peer, "p1", 1).unwrap();
        TwoInterfaces {
            gateway,
            _peer: peer,
        }
    }

    fn attach(&self, interface: &'static str, capacity: XdpCapacity) -> XdpFilter {
        self.gateway
            .enter(move || {
                if capacity == XdpCapacity::PROGRAM {
                    XdpFilter::attach(interface, XdpMode::Generic)
                } else {
                    XdpFilter::attach_with_capacity(interface, XdpMode::Generic, capacity)
                }
            })
            .unwrap()
            .unwrap()
    }
}

/// A config on g0 and g1 with `services`, given as config text.
fn config(services: &str) -> Config {
    let text = format!(
        "[[interfaces]]\nname = \"g0\"\nmac = \"02:66:67:00:30:01\"\n\
         [[interfaces]]\nname = \"g1\"\nmac = \"02:66:67:00:31:01\"\n{services}"
    );
    rules::load_str(&text, "gw.toml").unwrap()
}

fn service(name: &str, protocol: &str, vip: &str, port: u16, backends: &[(&str, u16)]) -> String {
    let mut text = format!(
        "[[services]]\nname = \"{name}\"\nprotocol = \"{protocol}\"\nvip = \"{vip}\"\nport = {port}\n"
    );
    for (address, port) in backends {
        text.push_str(&format!(
            "[[services.backends]]\naddress = \"{address}\"\nport = {port}\n"
        ));
    }
    text
}

/// Running first: 2 service keys, 3 reply sources, 1 VIP address.
fn first() -> Config {
    config(
        &[
            service(
                "web",
                "tcp",
                "198.18.100.10",
                80,
                &[("198.18.1.11", 8080), ("198.18.1.12", 8080)],
            ),
            service("dns", "udp", "198.18.100.10", 53, &[("198.18.1.11", 5353)]),
        ]
        .concat(),
    )
}

/// The change the kernel refuses: `dns` goes; 3 service keys, 2 reply
/// sources and 2 VIP addresses come (4, 4 and 3 in all).
fn refused() -> Config {
    config(
        &[
            service(
                "web",
                "tcp",
                "198.18.100.10",
                80,
                &[("198.18.1.11", 8080), ("198.18.1.12", 8080)],
            ),
            service(
                "web2",
                "tcp",
                "198.18.100.11",
                80,
                &[("198.18.1.13", 8080), ("198.18.1.14", 8080)],
            ),
            service("web3", "tcp", "198.18.100.12", 80, &[("198.18.1.13", 8080)]),
            service("web4", "tcp", "198.18.100.10", 81, &[("198.18.1.11", 8080)]),
        ]
        .concat(),
    )
}

/// A change that fits every map afterwards: `dns` goes, `web4` comes.
fn fitting() -> Config {
    config(
        &[
            service(
                "web",
                "tcp",
                "198.18.100.10",
                80,
                &[("198.18.1.11", 8080), ("198.18.1.12", 8080)],
            ),
            service("web4", "tcp", "198.18.100.10", 81, &[("198.18.1.11", 8080)]),
        ]
        .concat(),
    )
}

/// What each filter's maps hold, read from the kernel.
fn in_kernel(gateway: &Gateway) -> Vec<XdpMapKeys> {
    gateway.with_filters(|filters| filters.iter().map(|f| f.read_maps().unwrap()).collect())
}

fn assert_maps_hold(gateway: &Gateway, config: &Config, what: &str) {
    let owned = OwnedTraffic::from_config(config);
    let maps = in_kernel(gateway);
    assert_eq!(maps.len(), 2);
    for (interface, keys) in ["g0", "g1"].iter().zip(maps) {
        assert!(
            keys.hold_exactly(&owned),
            "{what}: {interface}'s maps hold {keys:?}, not {owned:?}"
        );
    }
    gateway.with_filters(|filters| {
        for filter in filters {
            assert_eq!(filter.owned(), owned, "{what}: the mirror of {filter:?}");
        }
    });
}

#[test]
fn a_key_the_kernel_refuses_part_way_takes_the_whole_change_back() {
    if !testnet::privileged() {
        return;
    }
    let full = XdpCapacity::PROGRAM;
    // Which interface's which map is too small, and how many of the
    // change's keys that map took before refusing one.
    let cases = [
        (
            "g1's services: the last interface, after g0 took every key",
            full,
            XdpCapacity {
                service_keys: 4,
                ..full
            },
            "g1",
            "services",
        ),
        (
            "g0's reply sources: after g0's services, before g1",
            XdpCapacity {
                reply_sources: 4,
                ..full
            },
            full,
            "g0",
            "reply_sources",
        ),
        (
            "g1's VIP addresses: the last map of the last interface",
            full,
            XdpCapacity {
                vip_addresses: 2,
                ..full
            },
            "g1",
            "vip_addrs",
        ),
    ];
    for (what, g0, g1, refusing, map) in cases {
        let interfaces = TwoInterfaces::new();
        let filters = vec![interfaces.attach("g0", g0), interfaces.attach("g1", g1)];
        let gateway = Gateway::start(first(), Vec::new(), filters, vec![0, 0], Vec::new()).unwrap();
        assert_maps_hold(&gateway, &first(), what);
        let dns = |gateway: &Gateway| {
            gateway
                .snapshot()
                .lookup_service(
                    ip_proto::UDP,
                    &addr_to_bytes("198.18.100.10".parse().unwrap()),
                    53,
                )
                .is_some()
        };

        let e = gateway.apply(refused()).unwrap_err();
        assert_eq!(e.generation, 1, "{what}: {e}");
        assert!(
            e.reason.starts_with(&format!(
                "the XDP maps of {refusing} refused a key: adding "
            )) && e
                .reason
                .ends_with(&format!("to map {map}: the map is full (E2BIG)")),
            "{what}: {e}"
        );
        assert_eq!(
            e.kernel, "every interface's XDP maps hold exactly its keys",
            "{what}"
        );
        assert!(
            e.to_string().contains("; generation 1 keeps running; "),
            "{what}: {e}"
        );
        // The old rules run, and the maps hold exactly their keys.
        assert_eq!(gateway.snapshot().generation(), 1, "{what}");
        assert_eq!(gateway.config(), first(), "{what}");
        assert!(dns(&gateway), "{what}");
        assert_maps_hold(&gateway, &first(), what);

        // What fits goes through: new keys in, gone keys out.
        let applied = gateway.apply(fitting()).unwrap();
        assert_eq!(
            (applied.generation, applied.warnings.len()),
            (2, 0),
            "{what}"
        );
        assert!(!dns(&gateway), "{what}");
        assert_maps_hold(&gateway, &fitting(), what);
    }
}
