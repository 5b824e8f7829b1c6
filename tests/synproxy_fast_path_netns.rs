//! A SYN-proxied download carried by the kernel fast path, end to end in
//! the demo's namespaces (tests/netns/): `syn_proxy = "on"` on a service,
//! the fast path on with both veths able to take XDP frames. The client's
//! SYN is answered with a cookie by the XDP program, its ACK opens the
//! backend's handshake in a worker, and once the backend has answered the
//! worker installs the connection's entries with its sequence and
//! timestamp offsets: from then on the program translates and forwards
//! the download's segments itself, both ways. The file must arrive byte
//! for byte, and the program's counters (and the gateway's
//! `flowgate_fast_path_*` metrics) must show the download's packets
//! forwarded by the fast path.
//!
//! Run as root; FLOWGATE_SKIP_NETNS=1 skips elsewhere. Needs the binaries
//! built first.

#[path = "netns/flood.rs"]
mod flood;
mod netns;

use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use flood::{big_byte, open_big, with_metrics, Nginxes, Scrape};
use flowgate_dataplane::xdp::read_attached_counters;
use netns::*;

/// The proxied service's VIP (the demo's rules do not use it).
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 20);
const PORT: u16 = 8090;
/// The file downloaded: 16 MiB, about 11 600 full segments.
const BIG: usize = 16 << 20;

fn config(topo: &Topology) -> String {
    format!(
        "{}\n[[services]]\nname = \"proxied\"\nprotocol = \"tcp\"\nvip = \"{VIP}\"\nport = 80\n\
         syn_proxy = \"on\"\n\n[[services.backends]]\naddress = \"{}\"\nport = {PORT}\n",
        with_metrics(&topo.config(&[0])).replacen(
            "[daemon]\n",
            "[daemon]\nfast_path = \"xdp\"\n",
            1
        ),
        backend_v4(1)
    )
}

/// What the download got: bytes of the file, bytes that differed.
#[derive(Debug, Default)]
struct Download {
    received: usize,
    differing: usize,
}

/// Downloads `/big` through the VIP at full speed (a read waits at most
/// 10 s; the whole at most 60 s).
fn download() -> Result<Download, String> {
    let mut stream = open_big(SocketAddr::from((VIP, 80)), "proxied", BIG)?;
    let mut d = Download::default();
    let mut buf = vec![0u8; 64 << 10];
    let deadline = Instant::now() + Duration::from_secs(60);
    while d.received < BIG {
        if Instant::now() > deadline {
            return Err(format!("not done in 60 s: {d:?}"));
        }
        let n = match stream.read(&mut buf) {
            Ok(0) => return Err(format!("closed early: {d:?}")),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("read: {e} ({d:?})")),
        };
        let at = d.received;
        d.differing += buf[..n]
            .iter()
            .enumerate()
            .filter(|(k, b)| **b != big_byte(at + k))
            .count();
        d.received += n;
    }
    let mut rest = [0u8; 16];
    if stream.read(&mut rest).map_err(|e| e.to_string())? != 0 {
        return Err("more bytes than the file".into());
    }
    Ok(d)
}

/// Frames the program sent itself (XDP_TX and redirects) and handed up
/// as `syn_proxy`, on the gateway's two interfaces.
fn program_counts(topo: &Topology) -> (u64, u64) {
    let mut sent = 0;
    let mut up = 0;
    for dev in ["fg-client", "fg-backend"] {
        let c = topo
            .gateway
            .enter(move || read_attached_counters(dev))
            .unwrap()
            .unwrap();
        sent += c.fast_tx + c.fast_redirect;
        up += c.fast_up.syn_proxy;
    }
    (sent, up)
}

#[test]
fn a_proxied_download_is_forwarded_by_the_fast_path_byte_identical() {
    if !privileged() {
        return;
    }
    let _one = one_gateway_at_a_time();
    let topo = Topology::new(1);
    let nginxes = Nginxes::start(&topo, PORT, BIG);
    // Both veths take XDP frames, so the fast path sends through both;
    // the cookie SYN-ACK leaves by XDP_TX, which the client's veth takes
    // only with an XDP program of its own (as tests/netns/syn_flood.rs
    // found; GRO alone is not enough for it).
    topo.set_peer_gro(true, true);
    wake_the_clients_veth(&topo);
    let mut gw = topo.start_gateway(&config(&topo));
    assert!(
        gw.log()
            .contains("kernel fast path sends through every interface"),
        "{}",
        gw.log()
    );
    let before = Scrape::take(&topo.gateway);
    let (sent_before, up_before) = program_counts(&topo);

    let got = topo.client.enter(download).unwrap();
    let (sent_after, up_after) = program_counts(&topo);
    let after = Scrape::take(&topo.gateway);
    let moved = after.moved(&before);
    let d = got.unwrap_or_else(|e| panic!("the download: {e}\n{moved:#?}\n{}", gw.log()));
    assert_eq!((d.received, d.differing), (BIG, 0), "byte-identical");

    // It was a proxied connection: a cookie from XDP, a backend handshake
    // from a worker.
    let delta = |name: &str| after.sum(name, &[]) - before.sum(name, &[]);
    assert!(
        delta("flowgate_syn_proxy_cookies_sent_total") >= 1.0,
        "{moved:#?}"
    );
    assert!(
        delta("flowgate_syn_proxy_established_total") >= 1.0,
        "{moved:#?}"
    );
    // Its packets went by the fast path: the file alone is about 11 600
    // full segments, and the client's ACKs come the other way.
    let sent = sent_after - sent_before;
    let forwarded = delta("flowgate_fast_path_forwarded_packets_total");
    let segments = (BIG / 1448) as u64;
    println!(
        "proxied download of {BIG} bytes: the program forwarded {sent} frames \
         ({forwarded} in the metrics), handed up {} as syn_proxy; {moved:#?}",
        up_after - up_before
    );
    assert!(
        sent >= segments / 2,
        "the program forwarded {sent} frames for about {segments} segments: {moved:#?}"
    );
    assert!(forwarded >= (segments / 2) as f64, "{moved:#?}");
    gw.assert_running();
    gw.stop();
    drop(nginxes);
}
