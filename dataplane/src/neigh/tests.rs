//! Netlink against a real kernel, inside throwaway network namespaces.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::*;
use crate::testnet::{self, NetNs};

/// Polls `watcher` until `wanted` holds for an event or `limit` passes;
/// returns every event seen.
fn wait_for_event(
    watcher: &mut NeighbourWatcher,
    limit: Duration,
    wanted: impl Fn(&NeighbourEvent) -> bool,
) -> (bool, Vec<NeighbourEvent>) {
    let start = Instant::now();
    let mut events = Vec::new();
    while start.elapsed() < limit {
        let seen = events.len();
        watcher.poll_changes(&mut events).unwrap();
        if events[seen..].iter().any(&wanted) {
            return (true, events);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    (false, events)
}

#[test]
fn link_info_reports_the_veths_mac_mtu_and_queues() {
    if !crate::testnet::privileged() {
        return;
    }
    let a = NetNs::new("fgn").unwrap();
    let b = NetNs::new("fgn").unwrap();
    testnet::veth_pair(&a, "la0", &b, "lb0", 3).unwrap();
    a.ip(&[
        "link",
        "set",
        "la0",
        "address",
        "02:66:67:00:00:01",
        "mtu",
        "1400",
    ])
    .unwrap();
    let info = a.enter(|| link_info("la0")).unwrap().unwrap();
    assert_eq!(info.name, "la0");
    assert_eq!(info.mac, [0x02, 0x66, 0x67, 0, 0, 1]);
    assert_eq!(info.mtu, 1400);
    assert_eq!((info.rx_queues, info.tx_queues), (3, 3));
    assert!(info.up);
    assert!(info.xdp.is_empty());
    let index = a.exec("cat", &["/sys/class/net/la0/ifindex"]).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&index.stdout).trim(),
        info.ifindex.to_string()
    );

    a.ip(&["link", "set", "la0", "down"]).unwrap();
    assert!(!a.enter(|| link_info("la0")).unwrap().unwrap().up);
    let missing = a.enter(|| link_info("nonexistent0")).unwrap();
    assert!(
        matches!(missing, Err(NeighError::NoSuchInterface(ref n)) if n == "nonexistent0"),
        "{missing:?}"
    );
}

#[test]
fn added_and_removed_neighbours_show_in_dumps_and_as_events() {
    if !crate::testnet::privileged() {
        return;
    }
    let a = NetNs::new("fgn").unwrap();
    let b = NetNs::new("fgn").unwrap();
    testnet::veth_pair(&a, "na0", &b, "nb0", 1).unwrap();
    a.ip(&["addr", "add", "198.18.60.1/24", "dev", "na0"])
        .unwrap();
    let (mut watcher, ifindex) = a
        .enter(|| {
            (
                NeighbourWatcher::open().unwrap(),
                link_info("na0").unwrap().ifindex,
            )
        })
        .unwrap();
    let before = watcher.dump().unwrap();
    let address: IpAddr = "198.18.60.7".parse().unwrap();
    assert!(!before.iter().any(|n| n.address == address));

    a.ip(&[
        "neigh",
        "add",
        "198.18.60.7",
        "lladdr",
        "02:66:67:00:01:07",
        "dev",
        "na0",
        "nud",
        "permanent",
    ])
    .unwrap();
    let expected = KernelNeighbour {
        ifindex,
        address,
        mac: [0x02, 0x66, 0x67, 0, 1, 7],
        state: NeighbourState::Permanent,
    };
    let (found, events) = wait_for_event(&mut watcher, Duration::from_secs(5), |e| {
        e.neighbour == expected
    });
    assert!(found, "no event for {expected:?}: {events:?}");
    assert_eq!(events.last().unwrap().change, NeighbourChange::Added);
    assert!(expected.is_usable());
    assert!(watcher.dump().unwrap().contains(&expected));

    a.ip(&["neigh", "del", "198.18.60.7", "dev", "na0"])
        .unwrap();
    let (found, events) = wait_for_event(&mut watcher, Duration::from_secs(5), |e| {
        e.change == NeighbourChange::Removed && e.neighbour.address == address
    });
    assert!(found, "no removal event: {events:?}");
    assert!(!watcher.dump().unwrap().iter().any(|n| n.address == address));
}

#[test]
fn resolve_makes_the_kernel_learn_a_live_peer() {
    if !crate::testnet::privileged() {
        return;
    }
    let a = NetNs::new("fgn").unwrap();
    let b = NetNs::new("fgn").unwrap();
    testnet::veth_pair(&a, "ra0", &b, "rb0", 1).unwrap();
    b.ip(&["link", "set", "rb0", "address", "02:66:67:00:01:11"])
        .unwrap();
    a.ip(&["addr", "add", "198.18.61.1/24", "dev", "ra0"])
        .unwrap();
    b.ip(&["addr", "add", "198.18.61.2/24", "dev", "rb0"])
        .unwrap();
    a.ip(&["addr", "add", "2001:2:0:61::1/64", "dev", "ra0", "nodad"])
        .unwrap();
    b.ip(&["addr", "add", "2001:2:0:61::2/64", "dev", "rb0", "nodad"])
        .unwrap();
    let (mut watcher, ifindex) = a
        .enter(|| {
            (
                NeighbourWatcher::open().unwrap(),
                link_info("ra0").unwrap().ifindex,
            )
        })
        .unwrap();

    for peer in ["198.18.61.2", "2001:2:0:61::2"] {
        let peer: IpAddr = peer.parse().unwrap();
        assert!(!watcher
            .dump()
            .unwrap()
            .iter()
            .any(|n| n.address == peer && n.is_usable()));
        watcher.resolve(ifindex, peer).unwrap();
        let (found, events) = wait_for_event(&mut watcher, Duration::from_secs(5), |e| {
            e.neighbour.address == peer && e.neighbour.is_usable()
        });
        assert!(found, "{peer} not resolved: {events:?}");
        let entry = watcher
            .dump()
            .unwrap()
            .into_iter()
            .find(|n| n.address == peer)
            .unwrap();
        assert_eq!(entry.ifindex, ifindex);
        assert_eq!(entry.mac, [0x02, 0x66, 0x67, 0, 1, 0x11]);
        assert!(entry.is_usable(), "{entry:?}");
    }
}

#[test]
fn resolving_on_a_missing_interface_is_a_kernel_error() {
    if !crate::testnet::privileged() {
        return;
    }
    let a = NetNs::new("fgn").unwrap();
    let mut watcher = a.enter(|| NeighbourWatcher::open().unwrap()).unwrap();
    let err = watcher
        .resolve(999_999, "198.18.62.2".parse().unwrap())
        .unwrap_err();
    assert!(matches!(err, NeighError::Kernel { .. }), "{err:?}");
}

#[test]
fn local_addresses_are_every_interfaces_own_addresses() {
    if !crate::testnet::privileged() {
        return;
    }
    let a = NetNs::new("fgn").unwrap();
    let b = NetNs::new("fgn").unwrap();
    testnet::veth_pair(&a, "aa0", &b, "ab0", 1).unwrap();
    for args in [
        &["addr", "add", "198.18.63.1/24", "dev", "aa0"][..],
        &["addr", "add", "198.18.64.1/24", "dev", "aa0"],
        &["addr", "add", "2001:2:0:63::1/64", "dev", "aa0", "nodad"],
        // Point to point: the peer's address is not the box's.
        &[
            "addr",
            "add",
            "198.18.65.1",
            "peer",
            "198.18.65.9/32",
            "dev",
            "aa0",
        ],
        &["addr", "add", "198.18.66.1/32", "dev", "lo"],
    ] {
        a.ip(args).unwrap();
    }
    let (addresses, aa0, lo) = a
        .enter(|| {
            (
                local_addresses().unwrap(),
                link_info("aa0").unwrap().ifindex,
                link_info("lo").unwrap().ifindex,
            )
        })
        .unwrap();
    let at = |ifindex: u32, address: &str| (ifindex, address.parse::<IpAddr>().unwrap());
    for expected in [
        at(aa0, "198.18.63.1"),
        at(aa0, "198.18.64.1"),
        at(aa0, "2001:2:0:63::1"),
        at(aa0, "198.18.65.1"),
        at(lo, "127.0.0.1"),
        at(lo, "::1"),
        at(lo, "198.18.66.1"),
    ] {
        assert!(
            addresses.contains(&expected),
            "{expected:?} not in {addresses:?}"
        );
    }
    // The link-local address the kernel gave the veth is the box's too.
    assert!(
        addresses
            .iter()
            .any(|&(i, a)| i == aa0 && matches!(a, IpAddr::V6(v6) if v6.segments()[0] == 0xfe80)),
        "{addresses:?}"
    );
    let peer: IpAddr = "198.18.65.9".parse().unwrap();
    assert!(!addresses.iter().any(|&(_, a)| a == peer), "{addresses:?}");
    let mut unique = addresses.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), addresses.len(), "{addresses:?}");
    // Nothing of the other namespace.
    let other = b.enter(|| local_addresses().unwrap()).unwrap();
    assert!(!other
        .iter()
        .any(|&(_, a)| a.to_string().starts_with("198.18.6")));

    a.ip(&["addr", "del", "198.18.63.1/24", "dev", "aa0"])
        .unwrap();
    let after = a.enter(|| local_addresses().unwrap()).unwrap();
    assert!(!after.contains(&at(aa0, "198.18.63.1")), "{after:?}");
    assert!(after.contains(&at(aa0, "198.18.64.1")), "{after:?}");
}
