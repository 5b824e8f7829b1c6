//! Ports: where frames come from and go to.
//!
//! The shapes here follow AF_XDP, the production port: every frame lives in
//! one shared frame memory (the UMEM). A frame is held as a [`Frame`], an
//! owned token naming an offset and a length, of which there is one per
//! frame (see [`Frame`] for the discipline). Ports move
//! tokens, never bytes: forwarding from one interface to another hands a
//! frame from one port's receive ring to another's transmit ring. Free
//! frames sit in a [`FramePool`] owned by the worker; ports take frames
//! from it to fill their receive rings and give transmitted frames back to
//! it.
//!
//! The pipeline never sees a port: it gets frames and the frame memory.
//! That is what lets the same pipeline run over AF_XDP, over the in-memory
//! port in tests and benches, and over pcap files in `flowgate replay`.

mod frame;
mod memory;
mod pool;
#[cfg(feature = "daemon")]
pub mod xsk;

pub use frame::{Frame, FrameDesc, MemoryId};
pub use memory::{MemoryFrames, MemoryPort};
pub use pool::FramePool;
#[cfg(feature = "daemon")]
pub use xsk::{SharedUmem, UmemFrames, XskError, XskPort, XskSettings};

/// The memory every frame lives in (an AF_XDP UMEM, or a plain buffer).
///
/// Bytes are reached through a [`Frame`], and a view borrows the frame:
/// whoever holds the token, and only while they hold it, touches the
/// bytes. Every access is checked: a frame of another memory, or one
/// whose length runs past its room, yields an empty slice, never a panic
/// and never another frame's bytes.
pub trait FrameMemory {
    /// Size of one frame slot in bytes (the largest frame it can hold).
    fn frame_size(&self) -> u32;

    /// The bytes of a frame.
    fn frame<'a>(&'a self, frame: &'a Frame) -> &'a [u8];

    /// Loads a byte at the frame's start (0 if there is none) to bring
    /// its first cache line in before a pass reads it: no view is made,
    /// so a memory may skip the checks a view needs.
    #[inline]
    fn warm(&self, frame: &Frame) -> u8 {
        self.frame(frame).first().copied().unwrap_or(0)
    }

    /// The bytes of a frame, writable in place.
    fn frame_mut<'a>(&'a mut self, frame: &'a mut Frame) -> &'a mut [u8];

    /// Makes `frame` hold `bytes` (its length and its contents). False,
    /// with the frame as it was, if they do not fit in its room.
    fn write(&mut self, frame: &mut Frame, bytes: &[u8]) -> bool {
        let Ok(len) = u32::try_from(bytes.len()) else {
            return false;
        };
        let old = frame.len();
        frame.set_len(len);
        let room = self.frame_mut(frame);
        let fits = room.len() == bytes.len();
        if fits {
            room.copy_from_slice(bytes);
        } else {
            frame.set_len(old);
        }
        fits
    }
}

/// One receive/transmit queue pair of an interface.
///
/// The calls map onto the four AF_XDP rings: `receive` reads the RX ring,
/// `transmit` writes the TX ring, `reclaim` drains the completion ring and
/// `refill` tops up the fill ring. Frames move as tokens both ways: what
/// a port takes is its (or the kernel's) until it gives it back.
pub trait Port {
    /// A name for logs and metrics, e.g. `eth0/q0`.
    fn name(&self) -> &str;

    /// Appends up to `max` received frames to `out`; returns how many.
    fn receive(&mut self, out: &mut Vec<Frame>, max: usize) -> usize;

    /// Queues frames for sending: takes the ones it accepts from the
    /// front of `frames`, in order, and returns how many. The rest (when
    /// the ring is full) stay in `frames`, still the caller's.
    fn transmit(&mut self, frames: &mut Vec<Frame>) -> usize;

    /// Moves frames whose transmission completed into `pool`; returns how
    /// many. They come back empty (length 0), their bytes as they were
    /// sent.
    fn reclaim(&mut self, pool: &mut FramePool) -> usize;

    /// Hands free frames from `pool` to the receive side; returns how many.
    fn refill(&mut self, pool: &mut FramePool) -> usize;

    /// Makes queued transmissions go out (a wakeup where the kernel wants
    /// one). Called once per batch, not per frame.
    fn flush(&mut self) {}
}

#[cfg(test)]
mod tests {
    //! The compiling twins of the `compile_fail` examples on [`Frame`]:
    //! each differs from its example only in the line marked ✗ there, so
    //! the examples fail for the reason they show and no other.

    use super::*;

    #[test]
    fn a_frame_moves_where_it_cannot_be_cloned() {
        let mut memory = MemoryFrames::new(2, 64);
        let frame = memory.pool().take().unwrap();
        let twin = frame;
        let _ = twin.into_raw();
    }

    #[test]
    fn a_frame_is_used_before_it_goes_back_to_the_pool() {
        let mut memory = MemoryFrames::new(2, 64);
        let mut pool = memory.pool();
        let frame = pool.take().unwrap();
        let _ = memory.frame(&frame);
        pool.put(frame);
    }

    #[test]
    fn a_frame_is_used_before_it_goes_to_the_port() {
        let mut memory = MemoryFrames::new(2, 64);
        let mut port = MemoryPort::new("p", 4);
        let frame = memory.pool().take().unwrap();
        let _ = memory.frame(&frame);
        let mut burst = vec![frame];
        assert_eq!(port.transmit(&mut burst), 1);
    }

    #[test]
    fn mutable_views_of_a_frame_come_one_after_the_other() {
        let mut memory = MemoryFrames::new(2, 64);
        let mut frame = memory.pool().take().unwrap();
        frame.set_len(1);
        let a = memory.frame_mut(&mut frame);
        a[0] = 7;
        let b = memory.frame_mut(&mut frame);
        assert_eq!(b[0], 7);
        let _ = frame.into_raw();
    }

    #[test]
    fn views_through_two_memories_come_one_after_the_other() {
        let mut one = MemoryFrames::new(2, 64);
        let mut other = MemoryFrames::new(2, 64);
        let mut frame = one.pool().take().unwrap();
        frame.set_len(1);
        let a = one.frame_mut(&mut frame);
        a[0] = 7;
        let b = other.frame_mut(&mut frame);
        // Release builds do not check which memory a frame is of.
        assert!(b.is_empty() || b[0] == 0);
        let _ = frame.into_raw();
    }

    #[test]
    fn a_view_ends_before_its_frame_is_passed_on() {
        let mut memory = MemoryFrames::new(2, 64);
        let mut pool = memory.pool();
        let frame = pool.take().unwrap();
        let view = memory.frame(&frame);
        assert_eq!(view.len(), 0);
        pool.put(frame);
    }
}
