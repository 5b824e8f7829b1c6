//! The worker's free-frame list.

use super::Frame;

/// Free frames of a frame memory.
///
/// Pools are made by their memory ([`MemoryFrames::split_pools`],
/// [`SharedUmem::split_pools`]), which hands every frame out once and
/// gives each pool room for all of its frames, so that frames drifting
/// between workers never make a pool grow. Putting a frame back never
/// fails: a frame has one token, so a pool cannot be given one twice.
///
/// [`MemoryFrames::split_pools`]: super::MemoryFrames::split_pools
/// [`SharedUmem::split_pools`]: super::SharedUmem::split_pools
#[derive(Debug)]
pub struct FramePool {
    free: Vec<Frame>,
    capacity: usize,
}

impl FramePool {
    /// An empty pool with room for `capacity` frames.
    pub fn with_capacity(capacity: usize) -> Self {
        FramePool {
            free: Vec::with_capacity(capacity),
            capacity,
        }
    }

    /// Takes a free frame, if any.
    #[inline]
    pub fn take(&mut self) -> Option<Frame> {
        self.free.pop()
    }

    /// Returns a frame. Within the pool's capacity (always, for a pool
    /// sized for its memory) this does not allocate.
    #[inline]
    pub fn put(&mut self, frame: Frame) {
        self.free.push(frame);
    }

    /// Number of free frames.
    pub fn len(&self) -> usize {
        self.free.len()
    }

    /// Whether no frame is free.
    pub fn is_empty(&self) -> bool {
        self.free.is_empty()
    }

    /// Most frames the pool holds without allocating.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use crate::port::{FrameMemory, MemoryFrames};

    #[test]
    fn a_pool_hands_out_every_frame_of_its_memory_once() {
        let mut memory = MemoryFrames::new(4, 2048);
        let mut pool = memory.pool();
        assert_eq!(pool.capacity(), 4);
        let mut got: Vec<u64> = std::iter::from_fn(|| pool.take())
            .map(|f| f.addr())
            .collect();
        got.sort_unstable();
        assert_eq!(got, vec![0, 2048, 4096, 6144]);
        assert!(pool.is_empty());
        assert!(memory.pool().is_empty(), "a frame has one owner");
    }

    #[test]
    fn frames_come_back_as_they_went() {
        let mut memory = MemoryFrames::new(2, 64);
        let mut pool = memory.pool();
        let mut frame = pool.take().unwrap();
        assert!(memory.write(&mut frame, &[7; 10]));
        pool.put(frame);
        assert_eq!(pool.len(), 2);
        let frame = pool.take().unwrap();
        assert_eq!(memory.frame(&frame), &[7; 10]);
        pool.put(frame);
    }
}
