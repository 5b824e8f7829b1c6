//! A worker's capture ring: a fixed set of preallocated frame slots that
//! go round between the worker and the control side.
//!
//! Two bounded lock-free queues, each able to hold every slot: `free`
//! (control side → worker) and `filled` (worker → control side). The
//! worker pops a free slot, copies a frame into it and pushes it to
//! `filled`; the control side pops it, reads it and pushes it back to
//! `free`. Neither side allocates, locks or waits: a worker that finds no
//! free slot counts the frame as lost and goes on. The slots are boxed
//! once, when the ring is made, so moving one through a queue moves a
//! pointer, not 2 KiB.

use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam::queue::ArrayQueue;

use crate::pipeline::Verdict;

/// Slots in each worker's ring: at 2 KiB each, 256 KiB per worker.
pub const RING_SLOTS: usize = 128;

/// Most bytes kept of a frame (the API's `MAX_CAPTURE_SNAP`).
pub const SNAP_MAX: usize = flowgate_api::MAX_CAPTURE_SNAP as usize;

/// One captured frame, in a preallocated slot.
#[derive(Debug)]
pub struct Slot {
    /// The capture it was made for.
    pub session: u64,
    /// When the worker decided it (the daemon's clock, ns).
    pub time_ns: u64,
    /// The port it came in on.
    pub ingress: u16,
    /// What the worker decided.
    pub verdict: Verdict,
    /// Its whole length.
    pub length: u32,
    /// How many of `bytes` hold the frame (at most the snap length).
    pub captured: usize,
    /// Its first bytes.
    pub bytes: [u8; SNAP_MAX],
}

impl Slot {
    fn empty() -> Box<Slot> {
        Box::new(Slot {
            session: 0,
            time_ns: 0,
            ingress: 0,
            verdict: Verdict::Pass,
            length: 0,
            captured: 0,
            bytes: [0; SNAP_MAX],
        })
    }

    /// The frame's captured bytes.
    pub fn data(&self) -> &[u8] {
        self.bytes.get(..self.captured).unwrap_or(&self.bytes)
    }
}

/// One worker's ring.
#[derive(Debug)]
pub struct SlotRing {
    free: ArrayQueue<Box<Slot>>,
    filled: ArrayQueue<Box<Slot>>,
    /// Frames the worker could not record for want of a free slot. Single
    /// writer (the worker).
    lost: AtomicU64,
}

impl SlotRing {
    /// A ring of `slots` slots (at least 1), all free.
    pub fn new(slots: usize) -> SlotRing {
        let slots = slots.max(1);
        let free = ArrayQueue::new(slots);
        for _ in 0..slots {
            let _ = free.push(Slot::empty());
        }
        SlotRing {
            free,
            filled: ArrayQueue::new(slots),
            lost: AtomicU64::new(0),
        }
    }

    /// The worker's side: fills a free slot with `fill` and hands it to
    /// the control side; with none free, counts the frame lost. Returns
    /// whether it was recorded.
    #[inline]
    pub fn record(&self, fill: impl FnOnce(&mut Slot)) -> bool {
        let Some(mut slot) = self.free.pop() else {
            // Single writer: a plain load and store, no locked instruction.
            self.lost
                .store(self.lost.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
            return false;
        };
        fill(&mut slot);
        // Both queues hold every slot, so neither push can fail; were one
        // to, the slot goes back rather than be freed on this thread.
        if let Err(slot) = self.filled.push(slot) {
            let _ = self.free.push(slot);
            return false;
        }
        true
    }

    /// The control side's: the oldest filled slot, if any. Give it back
    /// with [`SlotRing::give_back`].
    pub fn take(&self) -> Option<Box<Slot>> {
        self.filled.pop()
    }

    /// The control side's: returns a slot [`SlotRing::take`] gave.
    pub fn give_back(&self, slot: Box<Slot>) {
        let _ = self.free.push(slot);
    }

    /// Frames lost so far for want of a free slot.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// Slots free now.
    pub fn free_slots(&self) -> usize {
        self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::DropReason;

    fn fill(n: u8) -> impl FnOnce(&mut Slot) {
        move |slot: &mut Slot| {
            slot.session = 7;
            slot.length = u32::from(n);
            slot.captured = usize::from(n);
            slot.bytes[..usize::from(n)].fill(n);
            slot.verdict = Verdict::Drop(DropReason::TtlExpired);
        }
    }

    #[test]
    fn a_full_ring_loses_frames_counted_and_never_blocks() {
        let ring = SlotRing::new(4);
        for n in 1..=4 {
            assert!(ring.record(fill(n)));
        }
        assert_eq!(ring.free_slots(), 0);
        for n in 5..=9 {
            assert!(!ring.record(fill(n)), "no free slot: lost, not waited for");
        }
        assert_eq!(ring.lost(), 5);
        // In order, with what was written.
        for n in 1..=2u8 {
            let slot = ring.take().unwrap();
            assert_eq!(slot.data(), vec![n; usize::from(n)].as_slice());
            assert_eq!(slot.verdict, Verdict::Drop(DropReason::TtlExpired));
            ring.give_back(slot);
        }
        // Slots given back are used again; nothing is allocated.
        assert!(ring.record(fill(10)));
        assert!(ring.record(fill(11)));
        assert!(!ring.record(fill(12)));
        let order: Vec<u32> = std::iter::from_fn(|| ring.take())
            .map(|s| {
                let length = s.length;
                ring.give_back(s);
                length
            })
            .collect();
        assert_eq!(order, vec![3, 4, 10, 11]);
        assert_eq!(ring.free_slots(), 4);
        assert_eq!(ring.lost(), 6);
    }

    #[test]
    fn a_worker_and_the_control_side_pass_slots_on_two_threads() {
        let ring = std::sync::Arc::new(SlotRing::new(8));
        let worker = {
            let ring = std::sync::Arc::clone(&ring);
            std::thread::spawn(move || {
                let mut recorded = 0u64;
                for i in 0..20_000u32 {
                    if ring.record(|s| {
                        s.length = i;
                        s.captured = 4;
                        s.bytes[..4].copy_from_slice(&i.to_be_bytes());
                    }) {
                        recorded += 1;
                    }
                }
                recorded
            })
        };
        let mut seen = Vec::new();
        while !worker.is_finished() || !ring.filled.is_empty() {
            while let Some(slot) = ring.take() {
                assert_eq!(slot.data(), slot.length.to_be_bytes());
                seen.push(slot.length);
                ring.give_back(slot);
            }
            std::thread::yield_now();
        }
        let recorded = worker.join().unwrap();
        assert_eq!(seen.len() as u64, recorded);
        assert_eq!(recorded + ring.lost(), 20_000);
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "in order");
        assert_eq!(ring.free_slots(), 8);
    }
}
