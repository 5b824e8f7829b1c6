//! Where frames lie in the UMEM, as plain arithmetic (no kernel needed).
//!
//! Frame `i` occupies bytes `[i × frame_size, (i + 1) × frame_size)`. Its
//! first `headroom` bytes belong to the kernel's XDP headroom; the packet
//! starts at `i × frame_size + headroom`, its *packet address*, and may
//! run to the end of the frame (the frame's *room*). Every address this
//! module hands out is a packet address: the pools' free frames, what the
//! receive ring reports (the kernel puts packets there unless an XDP
//! program moves the start), and hence what is transmitted.

use std::ops::Range;

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
        let size = u64::from(self.frame_size.max(1));
        // The settings allow 2048 and 4096: a shift, not a division, on
        // every frame access.
        let index = if size.is_power_of_two() {
            addr >> size.trailing_zeros()
        } else {
            addr / size
        };
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

    /// The frame `len` bytes at `addr` fall in and where they start in
    /// that frame's room: `None` unless they lie wholly inside the room
    /// of one frame (not in the headroom, not past the frame's end).
    #[inline]
    pub fn locate(&self, addr: u64, len: u32) -> Option<(usize, usize)> {
        let index = self.index(addr)?;
        let offset = addr.checked_sub(self.packet_addr(index))?;
        let end = offset.checked_add(u64::from(len))?;
        if end > u64::from(self.room()) {
            return None;
        }
        Some((index, usize::try_from(offset).ok()?))
    }

    /// Every frame, split into `workers` near-equal shares of frame
    /// indices (the first `frame_count % workers` get one more).
    pub fn shares(&self, workers: usize) -> Vec<Range<usize>> {
        let workers = workers.max(1);
        let total = self.frame_count as usize;
        let (share, extra) = (total / workers, total % workers);
        let mut next = 0usize;
        (0..workers)
            .map(|w| {
                let take = share + usize::from(w < extra);
                next += take;
                next - take..next
            })
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

    #[test]
    fn shares_cover_every_frame_exactly_once() {
        for workers in 1..=12 {
            let shares = LAYOUT.shares(workers);
            assert_eq!(shares.len(), workers);
            let all: Vec<usize> = shares.into_iter().flatten().collect();
            assert_eq!(all, (0..10).collect::<Vec<_>>(), "{workers} workers");
        }
    }

    #[test]
    fn shares_differ_by_at_most_one() {
        let sizes: Vec<usize> = LAYOUT.shares(4).iter().map(|r| r.len()).collect();
        assert_eq!(sizes, vec![3, 3, 2, 2]);
        assert_eq!(LAYOUT.shares(0), vec![0..10]);
    }

    #[test]
    fn locate_accepts_only_bytes_inside_one_frame_room() {
        let at = |addr, len| LAYOUT.locate(addr, len);
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
    fn index_shifts_for_a_power_of_two_and_divides_otherwise() {
        let odd = FrameLayout {
            frame_size: 3000,
            ..LAYOUT
        };
        for addr in [
            0u64, 1, 2047, 2048, 2999, 3000, 6001, 20479, 20480, 29999, 30000,
        ] {
            let by_division = |l: &FrameLayout| {
                let i = addr / u64::from(l.frame_size);
                (i < u64::from(l.frame_count)).then_some(i as usize)
            };
            assert_eq!(LAYOUT.index(addr), by_division(&LAYOUT), "{addr}");
            assert_eq!(odd.index(addr), by_division(&odd), "{addr}");
        }
    }

    #[test]
    fn canonical_maps_any_address_to_its_packet_start() {
        assert_eq!(LAYOUT.canonical(0), Some(256));
        assert_eq!(LAYOUT.canonical(2048 + 1000), Some(2048 + 256));
        assert_eq!(LAYOUT.canonical(20480), None);
        assert_eq!(LAYOUT.room(), 1792);
    }
}
