//! The in-memory port: a port with AF_XDP's ring discipline and no kernel.
//!
//! Tests, benches and `flowgate replay` use it to run the production
//! pipeline and worker loop unchanged. The "wire" side is driven by the
//! caller: [`MemoryPort::inject`] puts bytes on the receive ring (into a
//! frame the port was given by `refill`, as a NIC would), and
//! [`MemoryPort::take_transmitted`] takes what was sent, completing those
//! frames so `reclaim` returns them to the pool.

use std::collections::VecDeque;

use super::{Frame, FrameDesc, FrameMemory, FramePool, MemoryId, Port};

/// Frame memory backed by one plain buffer, cut into equal frames.
///
/// Its frames are handed out once, as tokens in pools
/// ([`split_pools`](Self::split_pools)). Access needs `&mut self` to
/// write, so even a frame of another memory could not alias a view; it
/// just yields that memory's bytes at the same place (or an empty slice
/// in debug builds, which check the memory).
///
/// A frame size that is a power of two (AF_XDP's 2048 and 4096, the
/// benches' and tests' sizes) finds a frame's place in its slot with a
/// mask; any other size divides, once per access.
#[derive(Debug)]
pub struct MemoryFrames {
    buf: Box<[u8]>,
    frame_size: u32,
    /// `frame_size - 1` when that is a power of two, else 0 (divide).
    slot_mask: usize,
    id: MemoryId,
    pools_given: bool,
}

impl MemoryFrames {
    /// `count` frames of `frame_size` bytes each, zeroed.
    ///
    /// # Panics
    /// If the process has made 2³² − 1 frame memories already.
    pub fn new(count: u32, frame_size: u32) -> Self {
        MemoryFrames {
            buf: vec![0u8; count as usize * frame_size as usize].into_boxed_slice(),
            frame_size,
            slot_mask: if frame_size.is_power_of_two() {
                frame_size as usize - 1
            } else {
                0
            },
            id: MemoryId::next().expect("fewer than 2^32 frame memories in one process"),
            pools_given: false,
        }
    }

    /// Number of frames.
    pub fn count(&self) -> u32 {
        (self.buf.len() / self.frame_size.max(1) as usize) as u32
    }

    /// Every frame, shared out among `pools` pools (at least one) in
    /// near-equal parts, lowest addresses first; each pool has room for
    /// every frame. Frames are handed out once: later calls return empty
    /// pools.
    pub fn split_pools(&mut self, pools: usize) -> Vec<FramePool> {
        let pools = pools.max(1);
        let total = self.count() as usize;
        let mut out: Vec<FramePool> = (0..pools)
            .map(|_| FramePool::with_capacity(total))
            .collect();
        if std::mem::replace(&mut self.pools_given, true) {
            return out;
        }
        let (share, extra) = (total / pools, total % pools);
        let mut next = 0usize;
        for (p, pool) in out.iter_mut().enumerate() {
            let take = share + usize::from(p < extra);
            // Highest first: `take` pops from the end.
            for index in (next..next + take).rev() {
                let desc = FrameDesc {
                    addr: index as u64 * u64::from(self.frame_size),
                    len: 0,
                    memory: self.id,
                };
                // SAFETY: `desc` is slot `index` of this memory, and this
                // is the one time its frames are handed out
                // (`pools_given`), so no other token for it exists.
                pool.put(unsafe { Frame::from_raw(desc) });
            }
            next += take;
        }
        out
    }

    /// Every frame, in one pool (see [`split_pools`](Self::split_pools)).
    pub fn pool(&mut self) -> FramePool {
        self.split_pools(1)
            .pop()
            .unwrap_or_else(|| FramePool::with_capacity(0))
    }

    /// The byte range of a frame, if it lies inside one frame slot.
    #[inline(always)]
    fn range(&self, frame: &Frame) -> Option<std::ops::Range<usize>> {
        if cfg!(debug_assertions) && frame.memory() != self.id {
            return None;
        }
        let start = usize::try_from(frame.addr()).ok()?;
        let len = frame.len() as usize;
        let size = self.frame_size as usize;
        // Where the frame starts in its slot: its bytes must end by the
        // slot's end (never a view of the neighbour).
        let in_slot = if self.slot_mask != 0 {
            start & self.slot_mask
        } else {
            start % size.max(1)
        };
        let end = start.checked_add(len)?;
        (len <= size - in_slot && end <= self.buf.len()).then_some(start..end)
    }
}

impl FrameMemory for MemoryFrames {
    fn frame_size(&self) -> u32 {
        self.frame_size
    }

    #[inline]
    fn warm(&self, frame: &Frame) -> u8 {
        // Any byte of the buffer will do to bring the line in; the frame's
        // first is the one its parse reads first.
        usize::try_from(frame.addr())
            .ok()
            .and_then(|at| self.buf.get(at))
            .copied()
            .unwrap_or(0)
    }

    #[inline]
    fn frame<'a>(&'a self, frame: &'a Frame) -> &'a [u8] {
        match self.range(frame) {
            Some(r) => &self.buf[r],
            None => &[],
        }
    }

    #[inline]
    fn frame_mut<'a>(&'a mut self, frame: &'a mut Frame) -> &'a mut [u8] {
        match self.range(frame) {
            Some(r) => &mut self.buf[r],
            None => &mut [],
        }
    }
}

/// A port whose rings are queues in memory.
#[derive(Debug)]
pub struct MemoryPort {
    name: String,
    ring_size: usize,
    fill: VecDeque<Frame>,
    rx: VecDeque<Frame>,
    tx: VecDeque<Frame>,
    completed: VecDeque<Frame>,
    rx_ring_full: u64,
}

impl MemoryPort {
    /// A port whose four rings each hold `ring_size` frames.
    pub fn new(name: impl Into<String>, ring_size: usize) -> Self {
        MemoryPort {
            name: name.into(),
            ring_size,
            fill: VecDeque::with_capacity(ring_size),
            rx: VecDeque::with_capacity(ring_size),
            tx: VecDeque::with_capacity(ring_size),
            completed: VecDeque::with_capacity(ring_size),
            rx_ring_full: 0,
        }
    }

    /// Receives `bytes` from the wire, as a NIC would: into a frame from
    /// the fill ring, onto the receive ring. Returns false (and counts it)
    /// when no frame is free or the receive ring is full; a frame longer
    /// than a frame slot is cut to the slot size, as a NIC with that MTU
    /// would not deliver it whole either.
    pub fn inject<M: FrameMemory + ?Sized>(&mut self, memory: &mut M, bytes: &[u8]) -> bool {
        if self.rx.len() >= self.ring_size {
            self.rx_ring_full += 1;
            return false;
        }
        let Some(mut frame) = self.fill.pop_front() else {
            self.rx_ring_full += 1;
            return false;
        };
        let len = bytes.len().min(memory.frame_size() as usize);
        if !memory.write(&mut frame, &bytes[..len]) {
            // Only a frame of another memory does not fit its own room.
            self.fill.push_front(frame);
            self.rx_ring_full += 1;
            return false;
        }
        self.rx.push_back(frame);
        true
    }

    /// Takes every transmitted frame off the wire, appending copies of
    /// their bytes to `out`; the frames complete and `reclaim` frees them.
    pub fn take_transmitted<M: FrameMemory + ?Sized>(
        &mut self,
        memory: &M,
        out: &mut Vec<Vec<u8>>,
    ) -> usize {
        let n = self.tx.len();
        while let Some(frame) = self.tx.pop_front() {
            out.push(memory.frame(&frame).to_vec());
            self.completed.push_back(frame);
        }
        n
    }

    /// Frames waiting on the transmit ring.
    pub fn tx_pending(&self) -> usize {
        self.tx.len()
    }

    /// Frames waiting on the receive ring.
    pub fn rx_pending(&self) -> usize {
        self.rx.len()
    }

    /// Frames the port holds for receiving (the fill ring).
    pub fn fill_level(&self) -> usize {
        self.fill.len()
    }

    /// Frames that could not be received for want of a free frame or room
    /// on the receive ring.
    pub fn rx_ring_full(&self) -> u64 {
        self.rx_ring_full
    }

    /// Every frame the port holds, in any ring (for leak checks).
    pub fn frames_held(&self) -> usize {
        self.fill.len() + self.rx.len() + self.tx.len() + self.completed.len()
    }
}

impl Port for MemoryPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn receive(&mut self, out: &mut Vec<Frame>, max: usize) -> usize {
        let n = max.min(self.rx.len());
        out.extend(self.rx.drain(..n));
        n
    }

    fn transmit(&mut self, frames: &mut Vec<Frame>) -> usize {
        let room = self.ring_size.saturating_sub(self.tx.len());
        let n = room.min(frames.len());
        self.tx.extend(frames.drain(..n));
        n
    }

    fn reclaim(&mut self, pool: &mut FramePool) -> usize {
        let n = self.completed.len();
        while let Some(mut frame) = self.completed.pop_front() {
            // As from a completion ring: empty, the bytes left as sent.
            frame.set_len(0);
            pool.put(frame);
        }
        n
    }

    fn refill(&mut self, pool: &mut FramePool) -> usize {
        let mut n = 0;
        while self.fill.len() < self.ring_size {
            let Some(frame) = pool.take() else { break };
            self.fill.push_back(frame);
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_cycle_through_the_rings_without_loss() {
        let mut mem = MemoryFrames::new(8, 256);
        let mut pool = mem.pool();
        let mut port = MemoryPort::new("p0", 4);
        assert_eq!(port.refill(&mut pool), 4);
        assert!(port.inject(&mut mem, &[1, 2, 3]));
        let mut rx = Vec::new();
        assert_eq!(port.receive(&mut rx, 64), 1);
        assert_eq!(mem.frame(&rx[0]), &[1, 2, 3]);
        assert_eq!(port.transmit(&mut rx), 1);
        assert!(rx.is_empty(), "the port took the frame");
        let mut wire = Vec::new();
        port.take_transmitted(&mem, &mut wire);
        assert_eq!(wire, vec![vec![1, 2, 3]]);
        assert_eq!(port.reclaim(&mut pool), 1);
        assert_eq!(pool.len() + port.frames_held(), 8);
    }

    #[test]
    fn inject_without_free_frames_is_refused_and_counted() {
        let mut mem = MemoryFrames::new(1, 64);
        let mut port = MemoryPort::new("p0", 4);
        assert!(!port.inject(&mut mem, &[0; 10]));
        assert_eq!(port.rx_ring_full(), 1);
    }

    #[test]
    fn transmit_takes_what_fits_and_gives_the_rest_back_in_order() {
        let mut mem = MemoryFrames::new(3, 64);
        let mut pool = mem.pool();
        let mut port = MemoryPort::new("p0", 2);
        let mut frames: Vec<Frame> = std::iter::from_fn(|| pool.take()).collect();
        let last = frames[2].addr();
        assert_eq!(port.transmit(&mut frames), 2);
        assert_eq!(port.tx_pending(), 2);
        assert_eq!(frames.len(), 1, "the refused frame is still the caller's");
        assert_eq!(frames[0].addr(), last);
        pool.put(frames.pop().unwrap());
        let mut wire = Vec::new();
        port.take_transmitted(&mem, &mut wire);
        port.reclaim(&mut pool);
        assert_eq!(pool.len(), 3);
    }

    #[test]
    fn views_past_a_frame_slot_are_empty() {
        let mut mem = MemoryFrames::new(2, 64);
        let mut pool = mem.pool();
        let mut frame = pool.take().unwrap();
        assert_eq!(frame.addr(), 0);
        frame.set_len(64);
        assert_eq!(mem.frame(&frame).len(), 64);
        frame.set_len(65);
        assert!(mem.frame(&frame).is_empty(), "into the next slot");
        assert!(mem.frame_mut(&mut frame).is_empty());
        assert!(!mem.write(&mut frame, &[1; 65]));
        assert_eq!(frame.len(), 65, "a refused write changes nothing");
        assert!(mem.write(&mut frame, &[1; 64]));
        pool.put(frame);
    }

    #[test]
    fn views_stay_in_their_slot_whatever_the_frame_size() {
        // A power of two finds the slot by a mask, any other size by a
        // division: both refuse a view into the next slot, from any
        // start within a slot.
        for size in [64u32, 96] {
            let mut mem = MemoryFrames::new(3, size);
            let mut pool = mem.pool();
            let frame = pool.take().unwrap();
            let slot = frame.addr();
            for offset in [0u32, 1, size / 2, size - 1] {
                let desc = FrameDesc {
                    addr: slot + u64::from(offset),
                    len: size - offset,
                    memory: frame.memory(),
                };
                // SAFETY: inside the slot of `frame`, whose token is given
                // up below before this one is.
                let mut inner = unsafe { Frame::from_raw(desc) };
                assert_eq!(mem.frame(&inner).len(), (size - offset) as usize);
                inner.set_len(size - offset + 1);
                assert!(mem.frame(&inner).is_empty(), "size {size}, offset {offset}");
                let _ = inner.into_raw();
            }
            pool.put(frame);
        }
    }

    #[test]
    fn a_frame_of_another_memory_is_not_this_ones_in_debug_builds() {
        let mut one = MemoryFrames::new(2, 64);
        let mut other = MemoryFrames::new(2, 64);
        let mut frame = one.pool().take().unwrap();
        assert!(one.write(&mut frame, &[9; 8]));
        if cfg!(debug_assertions) {
            assert!(other.frame(&frame).is_empty());
            assert!(other.frame_mut(&mut frame).is_empty());
        }
        assert_eq!(one.frame(&frame), &[9; 8]);
        one.pool().put(frame);
    }
}
