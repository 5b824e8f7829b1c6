//! Where frames lie in the UMEM, as plain arithmetic (no kernel needed).
//!
//! Frame `i` occupies bytes `[i × frame_size, (i + 1) × frame_size)`. Its
//! first `headroom` bytes belong to the kernel's XDP headroom; the packet
//! starts at `i × frame_size + headroom`, its *packet address*, and may
//! run to the end of the frame (the frame's *room*). Every address this
//! module hands out is a packet address: the pools' free frames, what the
//! receive ring reports (the kernel puts packets there unless an XDP
//! program moves the start), and hence what is transmitted.

use crate::port::{FrameDesc, FramePool};

/// The geometry of a UMEM's frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct FrameLayout {
    /// Bytes per frame (a power of two).
    pub frame_size: u32,
    /// Frames in the UMEM.
    pub frame_count: u32,
    /// Bytes before the packet in each frame.
    pub headroom: u32,
}

impl FrameLayout {
    /// Bytes of packet a frame can hold.
    #[inline]
    pub fn room(&self) -> u32 {
        self.frame_size.saturating_sub(self.headroom)
    }

    /// The frame an address falls in, if it lies inside the UMEM.
    #[inline]
    pub fn index(&self, addr: u64) -> Option<usize> {
        let index = addr / u64::from(self.frame_size.max(1));
        if index < u64::from(self.frame_count) {
            usize::try_from(index).ok()
        } else {
            None
        }
    }

    /// Where frame `index`'s packet starts.
    #[inline]
    pub fn packet_addr(&self, index: usize) -> u64 {
        index as u64 * u64::from(self.frame_size) + u64::from(self.headroom)
    }

    /// The packet address of the frame `addr` falls in.
    #[inline]
    pub fn canonical(&self, addr: u64) -> Option<u64> {
        self.index(addr).map(|i| self.packet_addr(i))
    }

    /// The frame a descriptor names and where its bytes start in that
    /// frame's room: `None` unless the bytes lie wholly inside the room
    /// of one frame (not in the headroom, not past the frame's end).
    #[inline]
    pub fn locate(&self, desc: FrameDesc) -> Option<(usize, usize)> {
        let index = self.index(desc.addr)?;
        let offset = desc.addr.checked_sub(self.packet_addr(index))?;
        let end = offset.checked_add(u64::from(desc.len))?;
        if end > u64::from(self.room()) {
            return None;
        }
        Some((index, usize::try_from(offset).ok()?))
    }

    /// Every frame, split into `workers` pools of near-equal shares (the
    /// first `frame_count % workers` pools get one more). Each pool can
    /// hold every frame, since frames drift between workers as flows are
    /// handed to their owners.
    pub fn split(&self, workers: usize) -> Vec<FramePool> {
        let workers = workers.max(1);
        let total = self.frame_count as usize;
        let (share, extra) = (total / workers, total % workers);
        let mut next = 0usize;
        (0..workers)
            .map(|w| {
                let take = share + usize::from(w < extra);
                let mut pool = FramePool::with_capacity(total);
                // Highest address first: `take` pops from the end, so a
                // worker starts with its lowest frames.
                for index in (next..next + take).rev() {
                    pool.put(self.packet_addr(index));
                }
                next += take;
                pool
            })
            .collect()
    }

    /// Pools with room for every frame and no frames in them.
    pub fn empty_pools(&self, workers: usize) -> Vec<FramePool> {
        (0..workers.max(1))
            .map(|_| FramePool::with_capacity(self.frame_count as usize))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAYOUT: FrameLayout = FrameLayout {
        frame_size: 2048,
        frame_count: 10,
        headroom: 256,
    };

    fn drain(mut pool: FramePool) -> Vec<u64> {
        std::iter::from_fn(|| pool.take()).collect()
    }

    #[test]
    fn split_hands_out_every_frame_exactly_once() {
        for workers in 1..=12 {
            let pools = LAYOUT.split(workers);
            assert_eq!(pools.len(), workers);
            let mut all = Vec::new();
            for pool in pools {
                assert_eq!(pool.capacity(), 10, "a pool can hold every frame");
                all.extend(drain(pool));
            }
            all.sort_unstable();
            let expected: Vec<u64> = (0..10).map(|i| i * 2048 + 256).collect();
            assert_eq!(all, expected, "{workers} workers");
        }
    }

    #[test]
    fn split_shares_differ_by_at_most_one() {
        let pools = LAYOUT.split(4);
        let sizes: Vec<usize> = pools.iter().map(FramePool::len).collect();
        assert_eq!(sizes, vec![3, 3, 2, 2]);
        let pools = LAYOUT.split(0);
        assert_eq!(pools.len(), 1);
        assert_eq!(pools[0].len(), 10);
    }

    #[test]
    fn a_pool_takes_frames_from_another_worker() {
        let mut pools = LAYOUT.split(2);
        let moved: Vec<u64> = drain(std::mem::replace(
            &mut pools[1],
            FramePool::with_capacity(0),
        ));
        for addr in moved {
            assert!(pools[0].put(addr));
        }
        assert_eq!(pools[0].len(), 10);
        assert!(!pools[0].put(256), "an eleventh frame is a double free");
    }

    #[test]
    fn split_pools_hand_out_low_frames_first() {
        let mut pools = LAYOUT.split(2);
        assert_eq!(pools[0].take(), Some(256));
        assert_eq!(pools[1].take(), Some(5 * 2048 + 256));
    }

    #[test]
    fn locate_accepts_only_bytes_inside_one_frame_room() {
        let at = |addr, len| LAYOUT.locate(FrameDesc { addr, len });
        assert_eq!(at(256, 60), Some((0, 0)));
        assert_eq!(at(256, 1792), Some((0, 0)));
        assert_eq!(at(2048 + 300, 100), Some((1, 44)));
        assert_eq!(at(256, 1793), None, "past the frame's end");
        assert_eq!(at(0, 60), None, "in the headroom");
        assert_eq!(at(2048 + 255, 1), None, "in the headroom");
        assert_eq!(at(10 * 2048 + 256, 1), None, "past the UMEM");
        assert_eq!(at(u64::MAX, u32::MAX), None);
        assert_eq!(at(9 * 2048 + 256, 0), Some((9, 0)));
    }

    #[test]
    fn canonical_maps_any_address_to_its_packet_start() {
        assert_eq!(LAYOUT.canonical(0), Some(256));
        assert_eq!(LAYOUT.canonical(2048 + 1000), Some(2048 + 256));
        assert_eq!(LAYOUT.canonical(20480), None);
        assert_eq!(LAYOUT.room(), 1792);
    }
}
