//! Issue 11 point 8 with the defence on: the SYN flood run of
//! tests/netns/syn_flood.rs against a service with `syn_proxy = "on"`, so
//! the XDP program answers SYNs to its VIP with SYN cookies and only a
//! client's valid ACK reaches a worker and a backend.
//!
//! 20 s of SYNs from random sources and ports within 198.18.0.0/15 at the
//! generator's maximum rate to the VIP (the flood's SYN-ACKs dropped at
//! the generator's side), while a real client makes 1 000 HTTP requests
//! at 50 per second (curl, 5 s timeout each, no retries beyond TCP's own)
//! and a long download runs on a connection established before the
//! flood. The issue's bars, each asserted: at least 99 % of the requests
//! succeed; the download completes byte-identical; the gateway's resident
//! memory (its tables committed at start) stays within 5 % of its size
//! before the flood; and the counters show the flood refused:
//! `flowgatectl stats` has the SYN proxy answering it in XDP (cookies
//! sent, and together with what the veth dropped ahead of XDP, the flood
//! accounted for), no valid ACK and no connection beyond the client's,
//! and every request served on a proxied connection.
//!
//! Always the issue's 20 s, in CI too (the run without a defence,
//! tests/syn_flood_netns.rs, follows `FLOWGATE_FLOOD_SECONDS`).
//! docs/benchmarks.md "SYN flood with the proxy on" has the figures and
//! why a veth drops part of the flood (and of the client's frames) ahead
//! of XDP. Run as root; FLOWGATE_SKIP_NETNS=1 skips elsewhere.

#[path = "netns/flood.rs"]
mod flood;
mod netns;
#[path = "netns/syn_flood.rs"]
mod syn_flood;

use netns::privileged;

#[test]
fn with_the_syn_proxy_on_a_syn_flood_is_refused_in_xdp_and_99_percent_of_requests_succeed() {
    if !privileged() {
        return;
    }
    let f = syn_flood::run(true, syn_flood::ISSUE_SECONDS);
    f.print("SYN flood, SYN proxy on");

    let secs = syn_flood::ISSUE_SECONDS as f64;
    assert!(
        f.flood.seconds >= secs - 0.5,
        "the flood ran {:.1} s of {secs}",
        f.flood.seconds
    );
    assert_eq!(f.requests, 1000);
    assert!(
        f.success_percent() >= 99.0,
        "{} of {} requests succeeded ({:.1} %, the bar is 99 %); failures {:?}",
        f.succeeded,
        f.requests,
        f.success_percent(),
        f.failures
    );
    assert!(
        f.transfer.identical(),
        "the long download: {:?}",
        f.transfer
    );
    assert!(
        f.transfer.spanned_flood,
        "the download ended before the flood"
    );
    let limit = f.rss_before + f.rss_before / 20;
    assert!(
        f.rss_peak <= limit,
        "RSS {} KiB before, {} KiB peak: more than 5 % growth",
        f.rss_before,
        f.rss_peak
    );

    // Refused, in flowgatectl's counters: the XDP program answered the
    // flood with cookies (no state kept), and what it did not see the
    // veth dropped before it: between them, the flood.
    let p = f.syn_proxy();
    assert!(
        p.cookies_sent >= 1000,
        "the SYN proxy sent {} cookies for {} SYNs",
        p.cookies_sent,
        f.flood.sent
    );
    let accounted = p.cookies_sent + f.veth_dropped;
    assert!(
        accounted as f64 >= 0.95 * f.flood.sent as f64,
        "{} cookies sent and {} frames dropped by the veth of {} SYNs sent",
        p.cookies_sent,
        f.veth_dropped,
        f.flood.sent
    );
    // No valid ACK, no connection and no new flow beyond the client's
    // (the flood sends SYNs only; the download's connection is older).
    let requests = f.requests as u64;
    assert!(
        p.cookies_valid <= requests,
        "{} valid ACKs for {requests} requests",
        p.cookies_valid
    );
    assert!(
        p.connections <= requests,
        "{} proxied connections for {requests} requests",
        p.connections
    );
    let new_flows = f.delta("flowgate_new_flows_total", &[]);
    assert!(
        new_flows <= f.requests as f64,
        "{new_flows} new flows for {} requests: the flood made connections",
        f.requests
    );
    // Every request served was a proxied connection the backend answered.
    assert!(
        p.established >= f.succeeded as u64,
        "{} proxied connections established for {} requests served",
        p.established,
        f.succeeded
    );
    // The same figures in Prometheus.
    let cookies = f.delta("flowgate_syn_proxy_cookies_sent_total", &[]);
    assert!(cookies >= p.cookies_sent as f64, "{cookies} in /metrics");
    assert!(f.flood.returns_dropped > 0, "no SYN-ACK (cookie) came back");
}
