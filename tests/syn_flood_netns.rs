//! A SYN flood at the generator's maximum rate against a service with no
//! defence (issue 11 point 8, the contrast run): SYNs from random sources
//! and ports within 198.18.0.0/15 to the VIP of `flood` for
//! `FLOWGATE_FLOOD_SECONDS` (default 20 s) while a real client makes 50
//! curl requests per second to the same VIP and a long download runs on a
//! connection established before the flood (tests/netns/syn_flood.rs).
//!
//! Without a defence the flood reaches the gateway's receive ring and its
//! connection table, and the client's requests compete with it; what
//! holds all the same, and is asserted: the flood was seen and counted,
//! the gateway did not exit, what the established download received is
//! the file's bytes, and the gateway's resident memory stayed bounded.
//! The share of the client's requests that succeeded and whether the
//! download completed are printed, not asserted: they are the figures the
//! defence has to raise (tests/syn_flood_proxy_netns.rs, the same run with
//! the SYN proxy on, asserts ≥ 99 % and the whole download).
//!
//! Run as root; FLOWGATE_SKIP_NETNS=1 skips elsewhere.

#[path = "netns/flood.rs"]
mod flood;
mod netns;
#[path = "netns/syn_flood.rs"]
mod syn_flood;

use netns::privileged;

#[test]
fn a_syn_flood_without_a_defence_is_counted_and_leaves_the_gateway_running_in_bounded_memory() {
    if !privileged() {
        return;
    }
    let f = syn_flood::run(false, syn_flood::seconds());
    f.print("SYN flood, no defence");

    // The generator ran the whole time at a rate that fills the ring.
    let secs = syn_flood::seconds() as f64;
    assert!(
        f.flood.seconds >= secs - 0.5,
        "the flood ran {:.1} s of {secs}",
        f.flood.seconds
    );
    // The flood was seen and counted: the gateway received or counted
    // (a full receive ring) at least a tenth of the SYNs sent, and made
    // connections for them far beyond the client's requests.
    let received = f.delta("flowgate_rx_packets_total", &[]);
    let ring_full = f.delta("flowgate_xsk_rx_ring_full_total", &[])
        + f.delta("flowgate_xsk_rx_dropped_total", &[]);
    assert!(
        received + ring_full >= f.flood.sent as f64 / 10.0,
        "the gateway saw {received} frames and counted {ring_full} ring-full drops of {} sent",
        f.flood.sent
    );
    let new_flows = f.delta("flowgate_new_flows_total", &[]);
    assert!(
        new_flows >= 10.0 * f.requests as f64,
        "{new_flows} new flows for {} requests and the flood",
        f.requests
    );
    // The flood's returns came back and were dropped at the generator.
    assert!(f.flood.returns_dropped > 0, "no SYN-ACK came back");
    // The established download's packets compete with the flood for the
    // same receive ring, and over 20 s it may stall (printed); what it
    // did receive is the file's bytes.
    assert!(f.transfer.received > 0, "{:?}", f.transfer);
    assert_eq!(f.transfer.differing, 0, "{:?}", f.transfer);
    // Memory bounded: the connection table is committed at start, so a
    // flood that fills it adds nothing (measured: +0.2 %).
    assert!(
        f.rss_peak <= f.rss_before + f.rss_before / 20,
        "RSS {} KiB before, {} KiB peak",
        f.rss_before,
        f.rss_peak
    );
}
