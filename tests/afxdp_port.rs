//! Real AF_XDP sockets on veth pairs in network namespaces.
//!
//! The forwarding test builds what the daemon runs, in miniature:
//!
//! ```text
//!  [gen ns]  gen0 ══ gwa  [gw ns: one shared UMEM]  gwb ══ sink0  [sink ns]
//!   XskPort ──────►  XskPort ──(descriptor)──► XskPort ────►  kernel counts
//! ```
//!
//! A generator sends UDP frames from its own AF_XDP socket; the gateway
//! receives them on `gwa`, rewrites the Ethernet header in place and sends
//! the same frame out of `gwb` (same UMEM: the frame's token moves, the
//! bytes do not); the sink's kernel counts what arrives. Every frame of the
//! gateway's UMEM is accounted for after every poll, and every frame it
//! received is either sent or counted as dropped.
//!
//! Needs root (namespaces, AF_XDP, XDP). Set FLOWGATE_SKIP_NETNS=1 to skip.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowgate_dataplane::port::xsk::{BindMode, XskError, XskMode};
use flowgate_dataplane::port::{
    Frame, FrameMemory, FramePool, Port, SharedUmem, UmemFrames, XskPort, XskSettings,
};
use flowgate_dataplane::testnet::{self, NetNs};
use flowgate_dataplane::wire::builder::FrameBuilder;

/// Frames the gateway must receive and forward.
const TARGET_PACKETS: u64 = 1_000_000;
/// Longest the forwarding phase may run.
const FORWARD_DEADLINE: Duration = Duration::from_secs(40);
/// Descriptors per receive/transmit call, as the daemon's worker uses.
const BATCH: usize = 64;

const GEN_MAC: [u8; 6] = [0x02, 0x66, 0x67, 0, 0, 0x02];
const GW_A_MAC: [u8; 6] = [0x02, 0x66, 0x67, 0, 0, 0x01];
const GW_B_MAC: [u8; 6] = [0x02, 0x66, 0x67, 0, 0x01, 0x01];
/// Not the sink's own MAC: its kernel counts the frame and drops it early.
const NEXT_HOP_MAC: [u8; 6] = [0x02, 0x66, 0x67, 0, 0x01, 0x11];

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

/// The veth statistics of `dev` as `/proc/net/dev` shows them inside `ns`:
/// (rx packets, rx dropped, tx packets, tx dropped).
fn link_counters(ns: &NetNs, dev: &str) -> (u64, u64, u64, u64) {
    let text = ns
        .enter(|| std::fs::read_to_string("/proc/thread-self/net/dev"))
        .unwrap()
        .unwrap();
    let line = text
        .lines()
        .find_map(|l| l.trim_start().strip_prefix(&format!("{dev}:")))
        .unwrap_or_else(|| panic!("{dev} not in {text}"));
    let f: Vec<u64> = line
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    (f[1], f[3], f[9], f[11])
}

fn settings(frame_count: u32, libxdp_default_program: bool) -> XskSettings {
    XskSettings {
        frame_count,
        rx_ring: 2048,
        tx_ring: 2048,
        fill_ring: 2048,
        completion_ring: 2048,
        huge_pages: false,
        libxdp_default_program,
        ..XskSettings::default()
    }
}

/// The frame the generator sends.
fn test_frame() -> Vec<u8> {
    FrameBuilder::udp(
        "198.18.0.2:40000".parse().unwrap(),
        "198.18.100.10:53".parse().unwrap(),
    )
    .macs(GEN_MAC, GW_A_MAC)
    .payload(&[0x5a; 22])
    .build()
}

/// Sends `frame` from every frame of its own UMEM, over and over, until
/// told to stop. Returns how many the kernel took.
fn generate(
    mut port: XskPort,
    umem: SharedUmem,
    frame: Vec<u8>,
    stop: Arc<AtomicBool>,
    deadline: Instant,
) -> u64 {
    let mut frames = umem.frames();
    let mut pool = umem.split_pools(1).pop().unwrap();
    let len = frame.len() as u32;
    let mut all: Vec<Frame> = std::iter::from_fn(|| pool.take()).collect();
    for f in &mut all {
        assert!(frames.write(f, &frame));
    }
    for f in all {
        pool.put(f);
    }
    let mut sent = 0u64;
    let mut batch = Vec::with_capacity(BATCH);
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        port.reclaim(&mut pool);
        // A frame back from the completion ring is empty; its bytes are
        // still the ones written above.
        batch.extend(std::iter::from_fn(|| pool.take()).take(BATCH).map(|mut f| {
            f.set_len(len);
            f
        }));
        let accepted = port.transmit(&mut batch);
        for f in batch.drain(..) {
            pool.put(f);
        }
        sent += accepted as u64;
        port.flush();
    }
    sent
}

/// The gateway's side: one UMEM, two ports, one pool, and what happened.
struct Gateway {
    umem: SharedUmem,
    frames: UmemFrames,
    pool: FramePool,
    /// 0: `gwa` (from the generator), 1: `gwb` (to the sink).
    ports: Vec<XskPort>,
    expected: Vec<u8>,
    rx: Vec<Frame>,
    tx: Vec<Frame>,
    received: [u64; 2],
    forwarded: u64,
    refused_by_tx: u64,
    unexpected: u64,
}

impl Gateway {
    /// Ports on `gwa` and `gwb` in `ns` over one shared frame memory,
    /// expecting `expected` from the generator. libxdp's
    /// redirect-everything program stands in for the gateway's own one.
    fn open(ns: &NetNs, expected: Vec<u8>) -> Gateway {
        let settings = settings(8192, true);
        let (umem, ports) = ns
            .enter(|| -> Result<_, XskError> {
                let umem = SharedUmem::new(&settings)?;
                let a = XskPort::open(&umem, "gwa", 0, &settings)?;
                let b = XskPort::open(&umem, "gwb", 0, &settings)?;
                Ok((umem, vec![a, b]))
            })
            .unwrap()
            .unwrap();
        for port in &ports {
            eprintln!("{}: {} mode, fd {}", port.ifname(), port.mode(), {
                use std::os::fd::AsRawFd;
                port.as_raw_fd()
            });
            assert!(port.need_wakeup());
        }
        Gateway {
            frames: umem.frames(),
            pool: umem.split_pools(1).pop().unwrap(),
            umem,
            ports,
            expected,
            rx: Vec::with_capacity(BATCH),
            tx: Vec::with_capacity(BATCH),
            received: [0; 2],
            forwarded: 0,
            refused_by_tx: 0,
            unexpected: 0,
        }
    }

    /// One turn of the worker loop: recycle, top up, receive, rewrite,
    /// send. Frames from the sink side are not expected; they are dropped
    /// and counted.
    fn poll(&mut self) -> usize {
        for port in &mut self.ports {
            port.reclaim(&mut self.pool);
            port.refill(&mut self.pool);
        }
        let n = self.ports[0].receive(&mut self.rx, BATCH);
        self.received[0] += n as u64;
        for mut frame in self.rx.drain(..) {
            let bytes = self.frames.frame_mut(&mut frame);
            if bytes != self.expected.as_slice() {
                self.unexpected += 1;
                self.pool.put(frame);
                continue;
            }
            bytes[..6].copy_from_slice(&NEXT_HOP_MAC);
            bytes[6..12].copy_from_slice(&GW_B_MAC);
            self.tx.push(frame);
        }
        let accepted = self.ports[1].transmit(&mut self.tx);
        self.forwarded += accepted as u64;
        for frame in self.tx.drain(..) {
            self.refused_by_tx += 1;
            self.pool.put(frame);
        }
        self.ports[1].flush();

        let strays = self.ports[1].receive(&mut self.rx, BATCH);
        self.received[1] += strays as u64;
        self.unexpected += strays as u64;
        for frame in self.rx.drain(..) {
            self.pool.put(frame);
        }
        self.assert_no_frame_leaked();
        n + strays
    }

    /// Polls until nothing has arrived for a while, then lets the last
    /// completions come back.
    fn drain(&mut self) {
        let drain_deadline = Instant::now() + Duration::from_secs(5);
        let mut quiet_since = Instant::now();
        while Instant::now() < drain_deadline && quiet_since.elapsed() < Duration::from_millis(300)
        {
            if self.poll() > 0 {
                quiet_since = Instant::now();
            }
        }
        for _ in 0..100 {
            self.poll();
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn outstanding(&self) -> usize {
        self.ports.iter().map(XskPort::frames_outstanding).sum()
    }

    /// Between polls the loop holds no frame: pool + ports == all.
    fn assert_no_frame_leaked(&self) {
        assert_eq!(
            self.pool.len() + self.outstanding(),
            self.umem.frame_count() as usize,
            "pool {} + outstanding {} != frames",
            self.pool.len(),
            self.outstanding()
        );
    }
}

#[test]
fn a_million_frames_cross_a_shared_umem_and_none_leaks() {
    if !testnet::privileged() {
        return;
    }
    let gen_ns = quiet_ns("fgxg");
    let gw_ns = quiet_ns("fgxw");
    let sink_ns = quiet_ns("fgxs");
    testnet::veth_pair(&gen_ns, "gen0", &gw_ns, "gwa", 1).unwrap();
    testnet::veth_pair(&gw_ns, "gwb", &sink_ns, "sink0", 1).unwrap();

    let frame = test_frame();
    let mut gw = Gateway::open(&gw_ns, frame.clone());
    gw.assert_no_frame_leaked();

    // Sending only, so no XDP program on the generator's side.
    let gen_settings = settings(4096, false);
    let (gen_umem, gen_port) = gen_ns
        .enter(|| -> Result<_, XskError> {
            let umem = SharedUmem::new(&gen_settings)?;
            let port = XskPort::open(&umem, "gen0", 0, &gen_settings)?;
            Ok((umem, port))
        })
        .unwrap()
        .unwrap();

    let started = Instant::now();
    let deadline = started + FORWARD_DEADLINE;
    let stop = Arc::new(AtomicBool::new(false));
    let generator = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || generate(gen_port, gen_umem, frame, stop, deadline))
    };
    while gw.received[0] < TARGET_PACKETS && Instant::now() < deadline {
        gw.poll();
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let generated = generator.join().unwrap();

    gw.drain();

    // The veth ends are this test's own, so their counters start at zero.
    let sink0 = link_counters(&sink_ns, "sink0");
    let gwb = link_counters(&gw_ns, "gwb");
    let gwa = link_counters(&gw_ns, "gwa");
    let gen0 = link_counters(&gen_ns, "gen0");
    eprintln!("links: gen0 {gen0:?} gwa {gwa:?}");
    let stats: Vec<_> = gw.ports.iter().map(|p| p.statistics().unwrap()).collect();
    let counters: Vec<_> = gw.ports.iter().map(XskPort::counters).collect();
    let sink_rx = sink0.0;
    let pps = gw.received[0] as f64 / elapsed.as_secs_f64();
    eprintln!(
        "generated {generated}, gateway received {:?} in {elapsed:?} ({pps:.0} packets/s), \
         forwarded {}, refused {}, unexpected {}, sink received {sink_rx}, gwb {gwb:?}",
        gw.received, gw.forwarded, gw.refused_by_tx, gw.unexpected
    );
    eprintln!("kernel statistics {stats:?}");
    eprintln!("port counters {counters:?}");
    eprintln!(
        "pool {} outstanding {:?}",
        gw.pool.len(),
        gw.ports
            .iter()
            .map(XskPort::frames_outstanding)
            .collect::<Vec<_>>()
    );

    assert!(
        gw.received[0] >= TARGET_PACKETS,
        "only {} frames in {elapsed:?}",
        gw.received[0]
    );
    gw.assert_no_frame_leaked();
    assert_eq!(
        gw.received[0] + gw.received[1],
        gw.forwarded + gw.refused_by_tx + gw.unexpected,
        "every frame received is sent or counted as dropped"
    );
    assert_eq!(gw.unexpected, 0, "every frame arrived as it was sent");
    for s in &stats {
        assert_eq!((s.rx_invalid_descs, s.tx_invalid_descs), (0, 0), "{s:?}");
    }
    // Every frame that reached the gateway's queue was received, or
    // dropped by the kernel for want of a free frame or of room on the
    // receive ring (the generator outruns the gateway on purpose).
    let (gwa_rx, gwa_dropped) = (gwa.0, gwa.1);
    let xsk_drops = stats[0].rx_dropped + stats[0].rx_ring_full;
    assert_eq!(gwa_rx, gw.received[0] + xsk_drops);
    assert_eq!(gwa_dropped, xsk_drops);
    // Every frame forwarded left through gwb: the sink got it, or veth
    // counted it dropped.
    assert_eq!(sink_rx + gwb.3, gw.forwarded);
    // What went onto the generator's transmit ring is at least what left.
    assert!(generated >= gen0.2 + gen0.3, "{generated} < {gen0:?}");
    // Wakeups only when a ring asks. In copy mode the transmit ring always
    // asks (the kernel sends only during sendto, up to 32 frames a call),
    // so it is one per batch, never one per frame; the fill ring never
    // asks, so there is no receive wakeup at all.
    assert!(counters[1].tx_wakeups > 0);
    assert!(counters[1].tx_wakeups < gw.forwarded, "{counters:?}");
    if gw.ports[0].mode() == XskMode::Copy {
        assert_eq!(counters[0].rx_wakeups, 0, "{counters:?}");
    }
    assert_eq!(counters[1].wakeup_errors, 0);
}

#[test]
fn setup_errors_say_what_is_wrong() {
    if !testnet::privileged() {
        return;
    }
    let ns = quiet_ns("fgxe");
    let peer = quiet_ns("fgxe");
    testnet::veth_pair(&ns, "xe0", &peer, "xe1", 1).unwrap();
    ns.enter(|| {
        let s = settings(1024, false);
        let umem = SharedUmem::new(&s).unwrap();

        let err = XskPort::open(&umem, "fgx-missing0", 0, &s).unwrap_err();
        assert!(matches!(err, XskError::NoSuchInterface { .. }), "{err:?}");
        assert_eq!(err.to_string(), "fgx-missing0: no such interface");

        let err = XskPort::open(&umem, "xe0", 3, &s).unwrap_err();
        assert_eq!(
            err.to_string(),
            "xe0: no queue 3 (the interface has 1 queues)"
        );

        // veth has no zero-copy: forcing it fails, and says so; the UMEM
        // is still usable afterwards.
        let zc = XskSettings {
            bind_mode: BindMode::ZeroCopy,
            ..s.clone()
        };
        let err = XskPort::open(&umem, "xe0", 0, &zc).unwrap_err();
        assert!(
            matches!(err, XskError::ZeroCopyUnsupported { .. }),
            "{err:?}"
        );
        assert!(
            err.to_string().starts_with("xe0 queue 0: zero-copy"),
            "{err}"
        );

        let port = XskPort::open(&umem, "xe0", 0, &s).unwrap();
        assert_eq!(port.mode(), XskMode::Copy);
        assert_eq!(port.frames_outstanding(), 0);
        let err = XskPort::open(&umem, "xe0", 0, &s).unwrap_err();
        assert!(matches!(err, XskError::AlreadyOpen { .. }), "{err:?}");

        let bad = XskSettings {
            tx_ring: 100,
            ..s.clone()
        };
        let err = XskPort::open(&umem, "xe0", 0, &bad).unwrap_err();
        assert!(err.to_string().contains("tx_ring = 100"), "{err}");
    })
    .unwrap();
}

#[test]
fn frames_are_handed_out_once_and_read_back_as_written() {
    if !testnet::privileged() {
        return;
    }
    let s = settings(1000, false);
    let umem = SharedUmem::new(&s).unwrap();
    assert_eq!(umem.frame_count(), 1000);
    assert_eq!(umem.frame_size(), 2048);
    assert_eq!(umem.frame_room(), 2048 - 256);

    let mut pools = umem.split_pools(3);
    assert_eq!(
        pools.iter().map(FramePool::len).collect::<Vec<_>>(),
        vec![334, 333, 333]
    );
    assert!(pools.iter().all(|p| p.capacity() == 1000));
    let again = umem.split_pools(3);
    assert!(
        again.iter().all(FramePool::is_empty),
        "a frame has one owner"
    );

    // Two handles alias one memory: what one writes through a frame, the
    // other reads through it.
    let mut writer = umem.frames();
    let reader = umem.frames();
    assert_eq!(writer.frame_size(), umem.frame_room());
    let mut taken: Vec<Frame> = Vec::new();
    for pool in &mut pools {
        while let Some(frame) = pool.take() {
            assert_eq!(frame.memory(), umem.id());
            taken.push(frame);
        }
    }
    for (i, frame) in taken.iter_mut().enumerate() {
        assert!(writer.write(frame, &[i as u8; 64]));
    }
    for (i, frame) in taken.iter().enumerate() {
        assert_eq!(reader.frame(frame), &[i as u8; 64][..]);
    }
    let room = umem.frame_room();
    let first = &mut taken[0];
    first.set_len(room);
    assert_eq!(writer.frame_mut(first).len(), room as usize);
    first.set_len(room + 1);
    assert!(writer.frame_mut(first).is_empty(), "past the frame's room");
    first.set_len(1);
    // A frame of another memory is not one of this UMEM's, even at an
    // address inside it.
    let mut plain = flowgate_dataplane::port::MemoryFrames::new(1, 4096);
    let mut foreign = plain.pool().take().unwrap();
    assert!(plain.write(&mut foreign, &[1; 300]));
    assert!(reader.frame(&foreign).is_empty());
    assert!(writer.frame_mut(&mut foreign).is_empty());
    // A handle is for another thread, and so is a frame.
    let first = taken.swap_remove(0);
    let (bytes, first) = std::thread::spawn(move || (writer.frame(&first).to_vec(), first))
        .join()
        .unwrap();
    assert_eq!(bytes, [0]);
    taken.push(first);
    for frame in taken {
        pools[0].put(frame);
    }
}

#[test]
fn odd_descriptors_are_moved_or_refused_never_lost() {
    if !testnet::privileged() {
        return;
    }
    let a_ns = quiet_ns("fgxo");
    let b_ns = quiet_ns("fgxo");
    testnet::veth_pair(&a_ns, "odd0", &b_ns, "odd1", 1).unwrap();
    let s = settings(256, false);
    let (a_umem, mut a) = a_ns
        .enter(|| {
            let umem = SharedUmem::new(&s).unwrap();
            let port = XskPort::open(&umem, "odd0", 0, &s).unwrap();
            (umem, port)
        })
        .unwrap();
    let receiving = settings(256, true);
    let (b_umem, mut b) = b_ns
        .enter(|| {
            let umem = SharedUmem::new(&receiving).unwrap();
            let port = XskPort::open(&umem, "odd1", 0, &receiving).unwrap();
            (umem, port)
        })
        .unwrap();

    // The receiving side has frames on its fill ring before anything is
    // sent.
    let mut b_pool = b_umem.split_pools(1).pop().unwrap();
    let b_frames = b_umem.frames();
    assert_eq!(b.refill(&mut b_pool), 256);
    assert_eq!(b.frames_outstanding(), 256);

    let mut pool = a_umem.split_pools(1).pop().unwrap();
    let mut frames = a_umem.frames();
    let frame = test_frame();
    let len = frame.len() as u32;
    let (f1, f2, mut f3) = (
        pool.take().unwrap(),
        pool.take().unwrap(),
        pool.take().unwrap(),
    );
    // A frame whose packet starts 10 bytes in, as if an XDP program had
    // moved its start: its bytes are moved back to the packet address (the
    // only place xsk-rs can name) and sent whole.
    let mut raw = f1.into_raw();
    raw.addr += 10;
    // SAFETY: the same frame as `f1`, whose token was just given up: this
    // test holds it alone, and 10 bytes in is still inside it.
    let mut moved = unsafe { Frame::from_raw(raw) };
    assert!(frames.write(&mut moved, &frame));
    // A frame whose bytes start in its headroom.
    let mut raw = f2.into_raw();
    raw.addr -= 1;
    raw.len = len;
    // SAFETY: the same frame as `f2`, whose token was just given up; one
    // byte before its packet address is its own headroom.
    let in_headroom = unsafe { Frame::from_raw(raw) };
    // A frame of another memory.
    let mut plain = flowgate_dataplane::port::MemoryFrames::new(1, 2048);
    let mut foreign = plain.pool().take().unwrap();
    assert!(plain.write(&mut foreign, &frame));
    f3.set_len(0);
    let mut odd = vec![moved, in_headroom, foreign, f3];
    assert_eq!(a.transmit(&mut odd), 4, "all taken over");
    assert!(odd.is_empty());
    let c = a.counters();
    assert_eq!((c.tx_rejected, c.foreign_addrs), (3, 1), "{c:?}");
    // Sent (1) and refused in the UMEM (2) are the port's until reclaimed;
    // the other memory's frame cannot come back to this one.
    a.flush();

    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.is_empty() && Instant::now() < deadline {
        b.receive(&mut got, BATCH);
        a.reclaim(&mut pool);
    }
    assert_eq!(got.len(), 1, "the moved frame arrived");
    assert_eq!(b_frames.frame(&got[0]), frame.as_slice());
    for f in got {
        b_pool.put(f);
    }

    let deadline = Instant::now() + Duration::from_secs(5);
    while pool.len() < a_umem.frame_count() as usize && Instant::now() < deadline {
        a.reclaim(&mut pool);
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        pool.len(),
        a_umem.frame_count() as usize,
        "every frame back"
    );
    assert_eq!(a.frames_outstanding(), 0);
    let stats = a.statistics().unwrap();
    assert_eq!(stats.tx_invalid_descs, 0, "{stats:?}");
}
