//! Flow ownership between workers, and the lock-free hand-over of frames
//! that arrive on another worker's queue.
//!
//! Each connection lives in exactly one worker's connection table: the
//! worker that owns its client end (address and port). A client's packets
//! and its backend's replies both name that end — as source on the way in,
//! as destination on the way back — so both directions map to the same
//! owner, whichever queue the NIC (or veth) put them on. A frame that lands
//! on another worker's queue is handed to its owner through that owner's
//! inbox, a bounded lock-free queue; since every socket shares one UMEM,
//! only the frame's token moves, with the parse and flow hash its
//! receiver made, so that the owner does not parse or hash it again.
//!
//! Handed frames leave on the owner's transmit rings, so their frames come
//! back to the owner's pool. [`FrameExchange`] evens pools out again: a
//! worker holding more than its share parks the excess in a shared spare
//! queue, and a worker running short takes from it.

use std::sync::Arc;

use crossbeam::queue::ArrayQueue;

use crate::fastpath;
use crate::pipeline::Parsed;
use crate::port::{Frame, FramePool};
use crate::table::Snapshot;
use crate::wire::{ip_proto, quoted, PacketMeta};

/// A frame on its way to its owner: the frame, what its receiver's parse
/// found and its flow hash (so the owner neither parses nor hashes it
/// again), and the port it came in on. 80 bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct HandedFrame {
    /// The frame.
    pub frame: Frame,
    /// Its parse.
    pub meta: PacketMeta,
    /// Its flow hash.
    pub hash: u64,
    /// Index of the port it was received on.
    pub ingress: u16,
}

/// The worker that owns the connection a frame belongs to, out of
/// `workers`, by the frame's parse (`frame` is the bytes it was made
/// of). Frames that belong to no connection (not TCP/UDP, a fragment,
/// not parseable) stay with `here`: whoever holds them decides their
/// fate, which is the same on every worker.
#[inline]
pub fn owner_of(
    parsed: &Parsed,
    frame: &[u8],
    snapshot: &Snapshot,
    workers: usize,
    here: usize,
) -> usize {
    if workers <= 1 {
        return 0;
    }
    let Some(tuple) = parsed.tuple(frame) else {
        return here;
    };
    if tuple.protocol != ip_proto::TCP && tuple.protocol != ip_proto::UDP {
        return here;
    }
    // To a VIP: the client is the source. Anything else the gateway sees
    // is a reply from a backend: the client is the destination.
    let (client, port) = if snapshot.is_vip(&tuple.dst) {
        (tuple.src, tuple.src_port)
    } else {
        (tuple.dst, tuple.dst_port)
    };
    // The kernel fast path's owner hash: the program looks a connection up
    // in the partition of the worker that owns it, which writes it there.
    fastpath::owner(&client, port, u32::try_from(workers).unwrap_or(u32::MAX)) as usize
}

/// [`owner_of`], and for an ICMP error about a connection
/// ([`quoted::parse_quoted`]), the owner of the connection it quotes: the
/// quote's client end is its destination if it is a reply from a VIP, its
/// source if it went to a backend. `frame` is the bytes `parsed` was
/// made of. Other ICMP stays with `here`.
#[inline]
pub fn owner_of_frame(
    parsed: &Parsed,
    frame: &[u8],
    snapshot: &Snapshot,
    workers: usize,
    here: usize,
) -> usize {
    // ICMP is never the common frame: its parse is kept.
    match parsed.kept_meta() {
        Some(meta)
            if workers > 1
                && parsed.tuple(frame).is_some()
                && (meta.tuple.protocol == ip_proto::ICMP
                    || meta.tuple.protocol == ip_proto::ICMPV6) =>
        {
            icmp_error_owner(frame, meta, snapshot, workers).unwrap_or(here)
        }
        _ => owner_of(parsed, frame, snapshot, workers, here),
    }
}

/// The owner of the connection an ICMP error quotes, if it quotes one.
#[cold]
fn icmp_error_owner(
    frame: &[u8],
    meta: &PacketMeta,
    snapshot: &Snapshot,
    workers: usize,
) -> Option<usize> {
    let quote = quoted::parse_quoted(frame, meta)?.tuple;
    let (client, port) = if snapshot.is_vip(&quote.src) {
        (quote.dst, quote.dst_port)
    } else {
        (quote.src, quote.src_port)
    };
    let workers = u32::try_from(workers).unwrap_or(u32::MAX);
    Some(fastpath::owner(&client, port, workers) as usize)
}

/// One worker's end of the hand-over: its inbox, every other worker's
/// inbox, and the shared spare frames.
#[derive(Debug, Clone)]
pub struct Handoff {
    me: usize,
    inboxes: Arc<[ArrayQueue<HandedFrame>]>,
    exchange: FrameExchange,
}

impl Handoff {
    /// One [`Handoff`] per worker: inboxes of `inbox_capacity` frames, and
    /// a spare queue able to hold every one of `total_frames` frames; each
    /// worker aims to hold `total_frames / workers` free frames.
    pub fn set(workers: usize, inbox_capacity: usize, total_frames: usize) -> Vec<Handoff> {
        let workers = workers.max(1);
        let inboxes: Arc<[ArrayQueue<HandedFrame>]> = (0..workers)
            .map(|_| ArrayQueue::new(inbox_capacity.max(1)))
            .collect();
        let spare = Arc::new(ArrayQueue::new(total_frames.max(1)));
        let share = total_frames / workers;
        (0..workers)
            .map(|me| Handoff {
                me,
                inboxes: Arc::clone(&inboxes),
                exchange: FrameExchange {
                    spare: Arc::clone(&spare),
                    share,
                },
            })
            .collect()
    }

    /// This worker's index.
    pub fn me(&self) -> usize {
        self.me
    }

    /// Number of workers.
    pub fn workers(&self) -> usize {
        self.inboxes.len()
    }

    /// Queues `frame` for worker `owner`; gives it back if that inbox is
    /// full (or there is no such worker).
    #[inline]
    pub fn send(&self, owner: usize, frame: HandedFrame) -> Result<(), HandedFrame> {
        match self.inboxes.get(owner) {
            Some(inbox) => inbox.push(frame),
            None => Err(frame),
        }
    }

    /// Takes the oldest frame handed to this worker, if any.
    #[inline]
    pub fn receive(&self) -> Option<HandedFrame> {
        self.inboxes.get(self.me)?.pop()
    }

    /// Frames waiting in this worker's inbox.
    pub fn pending(&self) -> usize {
        self.inboxes.get(self.me).map_or(0, ArrayQueue::len)
    }

    /// Evens this worker's free frames out with the others'.
    pub fn balance(&self, pool: &mut FramePool) {
        self.exchange.balance(pool);
    }

    /// Frames parked in the shared spare queue.
    pub fn spare_frames(&self) -> usize {
        self.exchange.spare.len()
    }
}

/// The shared queue of spare free frames.
#[derive(Debug, Clone)]
struct FrameExchange {
    spare: Arc<ArrayQueue<Frame>>,
    /// Free frames each worker aims to hold.
    share: usize,
}

impl FrameExchange {
    /// A worker holding more than its share parks the excess; below half
    /// its share it takes spares up to its share. Frames on a worker's
    /// rings come out of its share, so a worker that keeps what it is
    /// dealt never reaches the top of the band, and the shared queue stays
    /// out of the common case; a worker that gains frames (handed over to
    /// it, sent from its rings, back in its pool) gives them up as soon as
    /// it holds more than its share. (A higher mark would starve a worker
    /// whose queues get the traffic: with two workers, at twice the share
    /// the other's pool would have to hold every frame.)
    fn balance(&self, pool: &mut FramePool) {
        let len = pool.len();
        if self.share > 0 && len > self.share {
            for _ in self.share..len {
                let Some(frame) = pool.take() else { break };
                if let Err(frame) = self.spare.push(frame) {
                    // Cannot happen (the queue holds every frame); keep it.
                    pool.put(frame);
                    break;
                }
            }
        } else if len < self.share / 2 {
            for _ in len..self.share {
                let Some(frame) = self.spare.pop() else { break };
                pool.put(frame);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::{FrameMemory, MemoryFrames};
    use crate::rules;
    use crate::wire::builder::FrameBuilder;
    use std::net::SocketAddr;

    fn snapshot() -> Snapshot {
        let config = rules::load_file(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/demo.toml"),
        )
        .unwrap();
        Snapshot::build(&config, None)
    }

    fn owner(frame: &[u8], snap: &Snapshot, workers: usize, here: usize) -> usize {
        owner_of(&Parsed::of(frame), frame, snap, workers, here)
    }

    #[test]
    fn both_directions_of_a_connection_have_one_owner() {
        let snap = snapshot();
        let mut owners = [0usize; 4];
        for port in 10_000..10_400u16 {
            let client = SocketAddr::new("198.18.0.2".parse().unwrap(), port);
            let request =
                FrameBuilder::tcp(client, "198.18.100.10:80".parse().unwrap(), 0x02).build();
            let reply =
                FrameBuilder::tcp("198.18.1.13:8080".parse().unwrap(), client, 0x12).build();
            let a = owner(&request, &snap, 4, 0);
            let b = owner(&reply, &snap, 4, 3);
            assert_eq!(a, b, "port {port}");
            owners[a] += 1;
        }
        // 400 clients spread over 4 owners: each gets a fair part.
        assert!(owners.iter().all(|&n| n > 60), "{owners:?}");
    }

    #[test]
    fn an_icmp_error_goes_to_the_owner_of_the_connection_it_quotes() {
        let snap = snapshot();
        let error = |from: &str, to: &str, quoted: &[u8]| {
            FrameBuilder::icmp_error(from.parse().unwrap(), to.parse().unwrap(), 3, 4, 1280)
                .payload(&quoted[14..])
                .build()
        };
        let mut owners = [0usize; 4];
        for port in 10_000..10_200u16 {
            let client = SocketAddr::new("198.18.0.2".parse().unwrap(), port);
            let vip = "198.18.100.10:80".parse().unwrap();
            let backend = "198.18.1.13:8080".parse().unwrap();
            let request = FrameBuilder::tcp(client, vip, 0x02).build();
            let owner_here = owner(&request, &snap, 4, 0);
            // About the packet sent to the backend, and about a reply.
            let to_backend = FrameBuilder::tcp(client, backend, 0x02).build();
            let reply = FrameBuilder::tcp(vip, client, 0x12).build();
            for frame in [
                error("198.18.1.1", "198.18.0.2", &to_backend),
                error("198.18.0.2", "198.18.100.10", &reply),
            ] {
                let got = owner_of_frame(&Parsed::of(&frame), &frame, &snap, 4, 3);
                assert_eq!(got, owner_here, "port {port}");
            }
            owners[owner_here] += 1;
        }
        assert!(owners.iter().filter(|&&n| n > 0).count() > 1, "{owners:?}");
        // Other ICMP stays where it is.
        let ping = FrameBuilder::icmp_echo_request(
            "198.18.0.2".parse().unwrap(),
            "198.18.100.10".parse().unwrap(),
        )
        .build();
        assert_eq!(owner_of_frame(&Parsed::of(&ping), &ping, &snap, 4, 3), 3);
    }

    #[test]
    fn frames_of_no_connection_stay_where_they_are() {
        let snap = snapshot();
        let arp = FrameBuilder::arp_request(
            [2, 0x66, 0x67, 0, 0, 2],
            "198.18.0.2".parse().unwrap(),
            "198.18.0.1".parse().unwrap(),
        )
        .build();
        assert_eq!(owner(&arp, &snap, 4, 2), 2);
        assert_eq!(owner(&[0u8; 3], &snap, 4, 1), 1);
        assert_eq!(owner(&arp, &snap, 1, 0), 0);
        // A fragment has no connection key: it is decided where it is.
        let fragment = FrameBuilder::udp(
            "198.18.0.2:1000".parse().unwrap(),
            "198.18.100.10:53".parse().unwrap(),
        )
        .fragment(8, false)
        .build();
        for here in 0..4 {
            assert_eq!(owner(&fragment, &snap, 4, here), here);
        }
    }

    #[test]
    fn a_handed_frame_is_small() {
        assert!(
            std::mem::size_of::<HandedFrame>() <= 80,
            "{} bytes",
            std::mem::size_of::<HandedFrame>()
        );
    }

    #[test]
    fn inboxes_carry_frames_to_their_owner_and_give_them_back_when_full() {
        let mut memory = MemoryFrames::new(4, 128);
        let mut pool = memory.pool();
        let set = Handoff::set(2, 2, 8);
        let bytes = FrameBuilder::udp(
            "198.18.0.2:1000".parse().unwrap(),
            "198.18.100.10:53".parse().unwrap(),
        )
        .build();
        let mut handed = |pool: &mut FramePool| {
            let mut frame = pool.take().unwrap();
            assert!(memory.write(&mut frame, &bytes));
            let parsed = Parsed::of(memory.frame(&frame));
            let (meta, hash) = parsed.flow(memory.frame(&frame)).unwrap();
            HandedFrame {
                frame,
                meta,
                hash,
                ingress: 1,
            }
        };
        let (a, b) = (handed(&mut pool), handed(&mut pool));
        let (a_addr, b_addr) = (a.frame.addr(), b.frame.addr());
        assert!(set[0].send(1, a).is_ok());
        assert!(set[0].send(1, b).is_ok());
        let refused = set[0].send(1, handed(&mut pool)).unwrap_err();
        let nowhere = set[0].send(7, refused).unwrap_err();
        pool.put(nowhere.frame);
        assert_eq!(set[0].receive(), None);
        assert_eq!(set[1].pending(), 2);
        let first = set[1].receive().unwrap();
        let second = set[1].receive().unwrap();
        assert_eq!((first.frame.addr(), second.frame.addr()), (a_addr, b_addr));
        let carried = Parsed::of_flow(first.meta, first.hash);
        assert_eq!(carried.flow(&bytes), Parsed::of(&bytes).flow(&bytes));
        assert_eq!(set[1].receive(), None);
        pool.put(first.frame);
        pool.put(second.frame);
        assert_eq!(pool.len(), 4, "no frame lost");
    }

    #[test]
    fn pools_even_out_through_the_spare_queue() {
        let mut memory = MemoryFrames::new(16, 64);
        let set = Handoff::set(2, 4, 16);
        let mut rich = memory.pool();
        let mut poor = FramePool::with_capacity(16);
        set[0].balance(&mut rich);
        assert_eq!(rich.len(), 8);
        assert_eq!(set[0].spare_frames(), 8);
        set[1].balance(&mut poor);
        assert_eq!(poor.len(), 8);
        assert_eq!(set[1].spare_frames(), 0);
        // Within the band nothing moves.
        let mut fine = FramePool::with_capacity(16);
        for _ in 0..4 {
            fine.put(poor.take().unwrap());
        }
        set[1].balance(&mut fine);
        assert_eq!(fine.len(), 4, "half the share");
        for _ in 0..4 {
            fine.put(rich.take().unwrap());
        }
        set[1].balance(&mut fine);
        assert_eq!(fine.len(), 8, "the share");
        fine.put(rich.take().unwrap());
        set[1].balance(&mut fine);
        assert_eq!(fine.len(), 8, "one more is parked");
        assert_eq!(set[1].spare_frames(), 1);
    }

    #[test]
    fn with_two_workers_a_pool_that_gained_frames_parks_them() {
        let mut memory = MemoryFrames::new(16, 64);
        let set = Handoff::set(2, 4, 16);
        let mut gained = memory.pool();
        // The other worker's rings hold four frames: this one cannot hold
        // all sixteen, and still must give the excess back.
        let in_rings: Vec<Frame> = (0..4).map(|_| gained.take().unwrap()).collect();
        set[1].balance(&mut gained);
        assert_eq!(gained.len(), 8);
        assert_eq!(set[1].spare_frames(), 4);
        let mut starved = FramePool::with_capacity(16);
        set[0].balance(&mut starved);
        assert_eq!(starved.len(), 4);
        for frame in in_rings {
            starved.put(frame);
        }
    }
}
