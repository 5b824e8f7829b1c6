//! The demo: the shipped capture is what its generator makes, and
//! replaying it through the demo rules does what the README promises.

#[path = "../dataplane/examples/demo_traffic.rs"]
mod demo_traffic;

use flowgate_dataplane::replay::{replay, ReplayOptions};
use flowgate_dataplane::rules;

const DEMO_RULES: &str = include_str!("../configs/demo.toml");
const DEMO_CAPTURE: &[u8] = include_bytes!("../configs/demo-traffic.pcap");

#[test]
fn the_shipped_capture_is_what_the_generator_makes() {
    assert!(
        demo_traffic::demo_capture(DEMO_RULES) == DEMO_CAPTURE,
        "configs/demo-traffic.pcap is stale: run \
         `cargo run -p flowgate-dataplane --features testkit --example demo_traffic -- configs/demo-traffic.pcap`"
    );
}

#[test]
fn replaying_the_demo_forwards_services_and_passes_the_rest() {
    let config = rules::load_str(DEMO_RULES, "configs/demo.toml").unwrap();
    let mut out = Vec::new();
    let r = replay(
        &config,
        DEMO_CAPTURE,
        &mut out,
        None,
        &ReplayOptions::default(),
    )
    .unwrap();
    let c = &r.counters;
    // 310 HTTP exchanges of 8 frames, 100 DNS exchanges of 2, and 6 others.
    assert_eq!(r.frames_in, 310 * 8 + 100 * 2 + 6);
    assert_eq!(
        c.tx_packets,
        310 * 8 + 100 * 2,
        "every service frame is forwarded"
    );
    assert_eq!(
        c.passed, 3,
        "arp, ping and ssh to the gateway reach the kernel"
    );
    assert_eq!(c.drops.get("ttl_expired"), Some(&1));
    assert_eq!(c.drops.get("fragment_to_vip"), Some(&1));
    assert_eq!(c.drops.get("truncated_ip"), Some(&1));
    assert_eq!(c.new_flows, 410);
    // Replies: 3 of every HTTP exchange's 8 frames, 1 of every DNS one's 2.
    assert_eq!(r.transmitted_to_clients, 310 * 3 + 100);
    // wrr 1:2:3 over 60 connections is exact: 10, 20, 30 connections of
    // 5 client frames each.
    let by = |k: &str| r.transmitted_by_backend.get(k).copied().unwrap_or(0);
    assert_eq!(by("web-wrr 198.18.1.11:8081"), 50);
    assert_eq!(by("web-wrr 198.18.1.12:8081"), 100);
    assert_eq!(by("web-wrr 198.18.1.13:8081"), 150);
    // maglev spreads web over all three backends and web6 over both.
    for b in [
        "web 198.18.1.11:8080",
        "web 198.18.1.12:8080",
        "web 198.18.1.13:8080",
    ] {
        assert!(by(b) > 0, "{b} got nothing");
    }
    assert!(by("web6 [2001:2:0:1::11]:8080") > 0 && by("web6 [2001:2:0:1::12]:8080") > 0);
}
