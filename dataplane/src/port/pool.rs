//! The worker's free-frame list.

/// Free frames of the shared frame memory, by address.
///
/// Fixed capacity, allocated once: pushing past capacity is refused (which
/// would mean a frame was freed twice — a bug the caller counts).
#[derive(Debug)]
pub struct FramePool {
    free: Vec<u64>,
    capacity: usize,
}

impl FramePool {
    /// An empty pool that can hold `capacity` frames.
    pub fn with_capacity(capacity: usize) -> Self {
        FramePool {
            free: Vec::with_capacity(capacity),
            capacity,
        }
    }

    /// A pool holding every frame of a memory of `count` frames of
    /// `frame_size` bytes.
    pub fn full(count: u32, frame_size: u32) -> Self {
        let mut pool = FramePool::with_capacity(count as usize);
        for i in 0..u64::from(count) {
            pool.free.push(i * u64::from(frame_size));
        }
        pool
    }

    /// Takes a free frame, if any.
    #[inline]
    pub fn take(&mut self) -> Option<u64> {
        self.free.pop()
    }

    /// Returns a frame; false if the pool is already full (a double free).
    #[inline]
    pub fn put(&mut self, addr: u64) -> bool {
        if self.free.len() >= self.capacity {
            return false;
        }
        self.free.push(addr);
        true
    }

    /// Number of free frames.
    pub fn len(&self) -> usize {
        self.free.len()
    }

    /// Whether no frame is free.
    pub fn is_empty(&self) -> bool {
        self.free.is_empty()
    }

    /// Most frames the pool can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_pool_hands_out_every_frame_once() {
        let mut pool = FramePool::full(4, 2048);
        let mut got: Vec<u64> = std::iter::from_fn(|| pool.take()).collect();
        got.sort_unstable();
        assert_eq!(got, vec![0, 2048, 4096, 6144]);
        assert!(pool.is_empty());
    }

    #[test]
    fn put_past_capacity_is_refused() {
        let mut pool = FramePool::full(1, 2048);
        assert!(!pool.put(0));
        assert_eq!(pool.take(), Some(0));
        assert!(pool.put(0));
    }
}
