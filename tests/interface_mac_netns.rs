//! An interface whose `mac` the config leaves out sends from the MAC the
//! kernel gives it, read at start and followed while flowgate runs: the
//! real `flowgate` binary in the demo's namespaces (tests/netns/).
//!
//! Run as root; FLOWGATE_SKIP_NETNS=1 skips elsewhere. Needs the binaries
//! built first (scripts/test.sh does it).

mod netns;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use flowgate_api::{ControlClient, Reply, Request};
use netns::*;

/// The MACs `status` reports for the gateway's two interfaces.
fn status_macs(topo: &Topology) -> Vec<String> {
    let mut client = ControlClient::connect(&topo.scratch.path("control.sock")).unwrap();
    let Reply::Status(status) = client.call(Request::Status {}).unwrap() else {
        panic!("status");
    };
    status
        .dataplane
        .interfaces
        .iter()
        .map(|i| i.mac.clone())
        .collect()
}

#[test]
fn an_interface_without_a_configured_mac_uses_and_follows_the_kernels() {
    if !privileged() {
        return;
    }
    let _one = one_gateway_at_a_time();
    let topo = Topology::new(1);
    // The demo's config without its interfaces' `mac` lines.
    let config: String = topo
        .config(&[0])
        .lines()
        .filter(|l| {
            !l.starts_with("mac = \"02:66:67:00:00:01\"")
                && !l.starts_with("mac = \"02:66:67:00:01:01\"")
        })
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(!config.contains("02:66:67:00:00:01\"\n\n[[interfaces]]"));
    let mut gw = topo.start_gateway(&config);
    assert_eq!(
        status_macs(&topo),
        ["02:66:67:00:00:01", "02:66:67:00:01:01"]
    );

    // The client-side interface gets a new MAC: within two ticks of the
    // daemon's once-a-second look, frames leave from it.
    topo.gateway
        .exec(
            "ip",
            &[
                "link",
                "set",
                "dev",
                "fg-client",
                "address",
                "02:66:67:00:00:77",
            ],
        )
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while status_macs(&topo)[0] != "02:66:67:00:00:77" {
        assert!(
            Instant::now() < deadline,
            "status still says {:?}\n{}",
            status_macs(&topo),
            gw.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(status_macs(&topo)[1], "02:66:67:00:01:01");
    // And it still forwards, the client having learned the new MAC.
    topo.client
        .exec("ip", &["neigh", "flush", "dev", "eth0"])
        .unwrap();
    let dns = SocketAddr::new(WEB_VIP.into(), 53);
    let load = udp_load(&topo.client, dns, 20, Duration::from_secs(30));
    assert_eq!(load.answered(), 20, "{:?}\n{}", load.failures, gw.log());
    assert!(
        gw.log().contains("an interface's MAC changed"),
        "{}",
        gw.log()
    );
    gw.assert_running();
    gw.stop();
}
