//! A socket's statistics are read beside the worker that runs it, never by
//! it: the kernel's `XDP_STATISTICS` through a duplicate of the socket's
//! descriptor, and the port's own counters through the atomics it writes.
//!
//! A "worker" thread owns two AF_XDP ports on a veth pair: it sends frames
//! from one, two of them descriptors the port must refuse, and never gives
//! the other one a frame to receive into, so the kernel drops (and counts)
//! what arrives there. This thread reads both sockets' statistics while
//! that runs, and again after the ports are closed.
//!
//! Needs root (namespaces, AF_XDP, XDP). Set FLOWGATE_SKIP_NETNS=1 to skip.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowgate_dataplane::port::xsk::{XskPortCounters, XskStats};
use flowgate_dataplane::port::{FrameMemory, Port, SharedUmem, XskPort, XskSettings};
use flowgate_dataplane::testnet::{self, NetNs};
use flowgate_dataplane::wire::builder::FrameBuilder;

/// Good frames the worker sends.
const SENT: usize = 100;

/// A namespace with IPv6 off, so its kernel sends nothing of its own.
fn quiet_ns(prefix: &str) -> NetNs {
    let ns = NetNs::new(prefix).unwrap();
    for key in [
        "net.ipv6.conf.all.disable_ipv6=1",
        "net.ipv6.conf.default.disable_ipv6=1",
    ] {
        ns.exec("sysctl", &["-qw", key]).unwrap();
    }
    ns
}

fn settings(libxdp_default_program: bool) -> XskSettings {
    XskSettings {
        frame_count: 256,
        rx_ring: 256,
        tx_ring: 256,
        fill_ring: 256,
        completion_ring: 256,
        huge_pages: false,
        libxdp_default_program,
        ..XskSettings::default()
    }
}

/// A frame memory of its own and a port on queue 0 of `ifname`, in `ns`.
fn open_port(ns: &NetNs, ifname: &str, libxdp_default_program: bool) -> (SharedUmem, XskPort) {
    ns.enter(|| {
        let s = settings(libxdp_default_program);
        let umem = SharedUmem::new(&s).unwrap();
        let port = XskPort::open(&umem, ifname, 0, &s).unwrap();
        (umem, port)
    })
    .unwrap()
}

/// What the worker thread read itself, at the end, from its own ports.
type OwnReadings = (XskStats, XskPortCounters, XskStats, XskPortCounters);

#[test]
fn statistics_are_read_beside_the_worker_through_a_descriptor_of_their_own() {
    if !testnet::privileged() {
        return;
    }
    let a_ns = quiet_ns("fgxs");
    let b_ns = quiet_ns("fgxs");
    testnet::veth_pair(&a_ns, "xst0", &b_ns, "xst1", 1).unwrap();
    let (a_umem, mut a) = open_port(&a_ns, "xst0", false);
    // libxdp's own program sends everything on queue 0 to this socket.
    let (b_umem, b) = open_port(&b_ns, "xst1", true);
    let a_stats = a.stats_reader().unwrap();
    let b_stats = b.stats_reader().unwrap();
    assert_eq!((a_stats.ifname(), a_stats.queue()), ("xst0", 0));
    assert_eq!(a_stats.kernel().unwrap(), XskStats::default());
    assert_eq!(b_stats.port(), XskPortCounters::default());

    let stop = Arc::new(AtomicBool::new(false));
    let worker = std::thread::spawn({
        let stop = Arc::clone(&stop);
        move || {
            let mut pool = a_umem.split_pools(1).pop().unwrap();
            let mut frames = a_umem.frames();
            let frame = FrameBuilder::udp(
                "198.18.0.2:40000".parse().unwrap(),
                "198.18.100.10:53".parse().unwrap(),
            )
            .build();
            let len = frame.len() as u32;
            let mut batch = Vec::new();
            for _ in 0..SENT {
                let mut f = pool.take().unwrap();
                f.set_len(len);
                frames.frame_mut(&mut f).copy_from_slice(&frame);
                batch.push(f);
            }
            // Two frames no port may send: empty ones.
            for _ in 0..2 {
                let mut f = pool.take().unwrap();
                f.set_len(0);
                batch.push(f);
            }
            let total = batch.len();
            let mut at = 0;
            let deadline = Instant::now() + Duration::from_secs(10);
            while !batch.is_empty() && Instant::now() < deadline {
                a.reclaim(&mut pool);
                at += a.transmit(&mut batch);
                a.flush();
            }
            assert_eq!(at, total, "all taken");
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                a.reclaim(&mut pool);
                std::thread::sleep(Duration::from_millis(1));
            }
            let own: OwnReadings = (
                a.statistics().unwrap(),
                a.counters(),
                b.statistics().unwrap(),
                b.counters(),
            );
            (a, b, a_umem, b_umem, own)
        }
    });

    // Read while the worker runs, until what it did shows.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = (XskStats::default(), XskPortCounters::default());
    while Instant::now() < deadline {
        seen = (b_stats.kernel().unwrap(), a_stats.port());
        let dropped = seen.0.rx_dropped + seen.0.fill_ring_empty;
        if dropped >= SENT as u64 && seen.1.tx_rejected == 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    eprintln!("read beside the worker: {seen:?}");
    assert!(
        seen.0.rx_dropped + seen.0.fill_ring_empty >= SENT as u64,
        "the receiving socket's drops: {:?}",
        seen.0
    );
    assert_eq!(seen.1.tx_rejected, 2, "the sending port's refusals");
    std::thread::sleep(Duration::from_millis(20));
    stop.store(true, Ordering::Relaxed);
    let (a, b, a_umem, b_umem, own) = worker.join().unwrap();

    // Both ways of reading agree once nothing moves.
    let (a_kernel, a_port, b_kernel, b_port) = own;
    assert_eq!(a_stats.kernel().unwrap(), a_kernel);
    assert_eq!(a_stats.port(), a_port);
    assert_eq!(b_stats.kernel().unwrap(), b_kernel);
    assert_eq!(b_stats.port(), b_port);

    // The readers outlive the ports: their descriptors are their own.
    drop((a, b));
    drop((a_umem, b_umem));
    assert_eq!(a_stats.kernel().unwrap(), a_kernel);
    assert_eq!(b_stats.kernel().unwrap(), b_kernel);
    assert_eq!(b_stats.port(), b_port);
}
