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
//! only the descriptor moves.
//!
//! Handed frames leave on the owner's transmit rings, so their frames come
//! back to the owner's pool. [`FrameExchange`] evens pools out again: a
//! worker holding more than its share parks the excess in a shared spare
//! queue, and a worker running short takes from it.

use std::sync::Arc;

use crossbeam::queue::ArrayQueue;

use crate::hash::bytes_hash;
use crate::port::{FrameDesc, FramePool};
use crate::table::Snapshot;
use crate::wire;

/// Salt of the owner hash: unrelated to the flow hash, so that ownership
/// and Maglev choices do not correlate.
const OWNER_SALT: u64 = 0x6f77_6e65_7273_6869;

/// A frame on its way to its owner, with the port it came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandedFrame {
    /// The frame.
    pub desc: FrameDesc,
    /// Index of the port it was received on.
    pub ingress: u16,
}

/// The worker that owns the connection `frame` belongs to, out of
/// `workers`. Frames that belong to no connection (not TCP/UDP, not
/// parseable) stay with `here`: whoever holds them decides their fate.
pub fn owner_of(frame: &[u8], snapshot: &Snapshot, workers: usize, here: usize) -> usize {
    if workers <= 1 {
        return 0;
    }
    let Ok(meta) = wire::parse(frame) else {
        return here;
    };
    let tuple = meta.tuple;
    if tuple.protocol != 6 && tuple.protocol != 17 {
        return here;
    }
    // To a VIP: the client is the source. Anything else the gateway sees
    // is a reply from a backend: the client is the destination.
    let (client, port) = if snapshot.is_vip(&tuple.dst) {
        (tuple.src, tuple.src_port)
    } else {
        (tuple.dst, tuple.dst_port)
    };
    let mut key = [0u8; 18];
    key[..16].copy_from_slice(&client);
    key[16..].copy_from_slice(&port.to_be_bytes());
    (bytes_hash(&key, OWNER_SALT) % workers as u64) as usize
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

    /// Queues `frame` for worker `owner`; false if its inbox is full (the
    /// caller still holds the frame).
    #[inline]
    pub fn send(&self, owner: usize, frame: HandedFrame) -> bool {
        match self.inboxes.get(owner) {
            Some(inbox) => inbox.push(frame).is_ok(),
            None => false,
        }
    }

    /// Takes up to `max` frames handed to this worker, appending them to
    /// `out`; returns how many.
    pub fn receive(&self, out: &mut Vec<HandedFrame>, max: usize) -> usize {
        let Some(inbox) = self.inboxes.get(self.me) else {
            return 0;
        };
        let mut n = 0;
        while n < max {
            match inbox.pop() {
                Some(frame) => {
                    out.push(frame);
                    n += 1;
                }
                None => break,
            }
        }
        n
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
    spare: Arc<ArrayQueue<u64>>,
    /// Free frames each worker aims to hold.
    share: usize,
}

impl FrameExchange {
    /// At twice its share or more a worker parks the excess; below half its
    /// share it takes spares up to its share. The wide band keeps the
    /// shared queue out of the common case.
    fn balance(&self, pool: &mut FramePool) {
        let len = pool.len();
        if self.share > 0 && len >= self.share * 2 {
            for _ in self.share..len {
                let Some(addr) = pool.take() else { break };
                if let Err(addr) = self.spare.push(addr) {
                    // Cannot happen (the queue holds every frame); keep it.
                    let _ = pool.put(addr);
                    break;
                }
            }
        } else if len < self.share / 2 {
            for _ in len..self.share {
                let Some(addr) = self.spare.pop() else { break };
                if !pool.put(addr) {
                    let _ = self.spare.push(addr);
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
            let a = owner_of(&request, &snap, 4, 0);
            let b = owner_of(&reply, &snap, 4, 3);
            assert_eq!(a, b, "port {port}");
            owners[a] += 1;
        }
        // 400 clients spread over 4 owners: each gets a fair part.
        assert!(owners.iter().all(|&n| n > 60), "{owners:?}");
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
        assert_eq!(owner_of(&arp, &snap, 4, 2), 2);
        assert_eq!(owner_of(&[0u8; 3], &snap, 4, 1), 1);
        assert_eq!(owner_of(&arp, &snap, 1, 0), 0);
    }

    #[test]
    fn inboxes_carry_frames_to_their_owner_and_refuse_when_full() {
        let set = Handoff::set(2, 2, 8);
        let frame = |addr| HandedFrame {
            desc: FrameDesc { addr, len: 60 },
            ingress: 1,
        };
        assert!(set[0].send(1, frame(0)));
        assert!(set[0].send(1, frame(2048)));
        assert!(!set[0].send(1, frame(4096)));
        assert!(!set[0].send(7, frame(4096)));
        let mut got = Vec::new();
        assert_eq!(set[0].receive(&mut got, 8), 0);
        assert_eq!(set[1].receive(&mut got, 8), 2);
        assert_eq!(got, [frame(0), frame(2048)]);
    }

    #[test]
    fn pools_even_out_through_the_spare_queue() {
        let set = Handoff::set(2, 4, 16);
        let mut rich = FramePool::full(16, 2048);
        let mut poor = FramePool::with_capacity(16);
        set[0].balance(&mut rich);
        assert_eq!(rich.len(), 8);
        assert_eq!(set[0].spare_frames(), 8);
        set[1].balance(&mut poor);
        assert_eq!(poor.len(), 8);
        assert_eq!(set[1].spare_frames(), 0);
        // Within the band nothing moves.
        let mut fine = FramePool::with_capacity(16);
        for a in 0..6 {
            fine.put(a * 2048);
        }
        set[1].balance(&mut fine);
        assert_eq!(fine.len(), 6);
    }
}
