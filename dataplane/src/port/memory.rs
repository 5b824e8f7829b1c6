//! The in-memory port: a port with AF_XDP's ring discipline and no kernel.
//!
//! Tests, benches and `flowgate replay` use it to run the production
//! pipeline and worker loop unchanged. The "wire" side is driven by the
//! caller: [`MemoryPort::inject`] puts bytes on the receive ring (into a
//! frame the port was given by `refill`, as a NIC would), and
//! [`MemoryPort::take_transmitted`] takes what was sent, completing those
//! frames so `reclaim` returns them to the pool.

use std::collections::VecDeque;

use super::{FrameDesc, FrameMemory, FramePool, Port};

/// Frame memory backed by one plain buffer, cut into equal frames.
#[derive(Debug)]
pub struct MemoryFrames {
    buf: Box<[u8]>,
    frame_size: u32,
}

impl MemoryFrames {
    /// `count` frames of `frame_size` bytes each, zeroed.
    pub fn new(count: u32, frame_size: u32) -> Self {
        MemoryFrames {
            buf: vec![0u8; count as usize * frame_size as usize].into_boxed_slice(),
            frame_size,
        }
    }

    /// Number of frames.
    pub fn count(&self) -> u32 {
        (self.buf.len() / self.frame_size.max(1) as usize) as u32
    }

    /// The byte range of a descriptor, if it lies inside one frame slot.
    #[inline]
    fn range(&self, desc: FrameDesc) -> Option<std::ops::Range<usize>> {
        let start = usize::try_from(desc.addr).ok()?;
        let end = start.checked_add(desc.len as usize)?;
        let slot_end = (start / self.frame_size as usize + 1) * self.frame_size as usize;
        (end <= slot_end && end <= self.buf.len()).then_some(start..end)
    }
}

impl FrameMemory for MemoryFrames {
    fn frame_size(&self) -> u32 {
        self.frame_size
    }

    #[inline]
    fn frame(&self, desc: FrameDesc) -> &[u8] {
        match self.range(desc) {
            Some(r) => &self.buf[r],
            None => &[],
        }
    }

    #[inline]
    fn frame_mut(&mut self, desc: FrameDesc) -> &mut [u8] {
        match self.range(desc) {
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
    fill: VecDeque<u64>,
    rx: VecDeque<FrameDesc>,
    tx: VecDeque<FrameDesc>,
    completed: VecDeque<u64>,
    rx_ring_full: u64,
}

impl MemoryPort {
    /// A port whose four rings each hold `ring_size` descriptors.
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
    pub fn inject(&mut self, memory: &mut MemoryFrames, bytes: &[u8]) -> bool {
        if self.rx.len() >= self.ring_size {
            self.rx_ring_full += 1;
            return false;
        }
        let Some(addr) = self.fill.pop_front() else {
            self.rx_ring_full += 1;
            return false;
        };
        let len = bytes.len().min(memory.frame_size() as usize);
        let desc = FrameDesc {
            addr,
            len: len as u32,
        };
        memory.frame_mut(desc).copy_from_slice(&bytes[..len]);
        self.rx.push_back(desc);
        true
    }

    /// Takes every transmitted frame off the wire, appending copies of
    /// their bytes to `out`; the frames complete and `reclaim` frees them.
    pub fn take_transmitted(&mut self, memory: &MemoryFrames, out: &mut Vec<Vec<u8>>) -> usize {
        let n = self.tx.len();
        while let Some(desc) = self.tx.pop_front() {
            out.push(memory.frame(desc).to_vec());
            self.completed.push_back(desc.addr);
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

    fn receive(&mut self, out: &mut Vec<FrameDesc>, max: usize) -> usize {
        let n = max.min(self.rx.len());
        out.extend(self.rx.drain(..n));
        n
    }

    fn transmit(&mut self, frames: &[FrameDesc]) -> usize {
        let room = self.ring_size.saturating_sub(self.tx.len());
        let n = room.min(frames.len());
        self.tx.extend(&frames[..n]);
        n
    }

    fn reclaim(&mut self, pool: &mut FramePool) -> usize {
        let mut n = 0;
        while let Some(addr) = self.completed.pop_front() {
            if !pool.put(addr) {
                // The pool is full: this frame was freed twice somewhere.
                // Keep it here rather than lose track of it.
                self.completed.push_front(addr);
                break;
            }
            n += 1;
        }
        n
    }

    fn refill(&mut self, pool: &mut FramePool) -> usize {
        let mut n = 0;
        while self.fill.len() < self.ring_size {
            let Some(addr) = pool.take() else { break };
            self.fill.push_back(addr);
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
        let mut pool = FramePool::full(8, 256);
        let mut port = MemoryPort::new("p0", 4);
        assert_eq!(port.refill(&mut pool), 4);
        assert!(port.inject(&mut mem, &[1, 2, 3]));
        let mut rx = Vec::new();
        assert_eq!(port.receive(&mut rx, 64), 1);
        assert_eq!(mem.frame(rx[0]), &[1, 2, 3]);
        assert_eq!(port.transmit(&rx), 1);
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
    fn transmit_accepts_only_what_fits_in_the_ring() {
        let mut port = MemoryPort::new("p0", 2);
        let frames = [FrameDesc { addr: 0, len: 1 }; 3];
        assert_eq!(port.transmit(&frames), 2);
        assert_eq!(port.tx_pending(), 2);
    }

    #[test]
    fn descriptors_outside_memory_yield_empty_frames() {
        let mut mem = MemoryFrames::new(2, 64);
        assert!(mem
            .frame(FrameDesc {
                addr: 1000,
                len: 10
            })
            .is_empty());
        assert!(mem.frame_mut(FrameDesc { addr: 60, len: 10 }).is_empty());
        assert!(mem
            .frame(FrameDesc {
                addr: u64::MAX,
                len: 10
            })
            .is_empty());
        assert_eq!(mem.frame(FrameDesc { addr: 64, len: 64 }).len(), 64);
    }
}
