//! Ports: where frames come from and go to.
//!
//! The shapes here follow AF_XDP, the production port: every frame lives in
//! one shared frame memory (the UMEM) and is named by a [`FrameDesc`] — an
//! offset and a length. Ports move descriptors, never bytes: forwarding from
//! one interface to another hands a descriptor from one port's receive ring
//! to another's transmit ring. Free frames sit in a [`FramePool`] owned by
//! the worker; ports take frames from it to fill their receive rings and
//! give transmitted frames back to it.
//!
//! The pipeline never sees a port: it gets descriptors and the frame memory.
//! That is what lets the same pipeline run over AF_XDP, over the in-memory
//! port in tests and benches, and over pcap files in `flowgate replay`.

mod memory;
mod pool;
#[cfg(feature = "daemon")]
pub mod xsk;

pub use memory::{MemoryFrames, MemoryPort};
pub use pool::FramePool;
#[cfg(feature = "daemon")]
pub use xsk::{SharedUmem, UmemFrames, XskError, XskPort, XskSettings};

/// A frame in the shared frame memory: where it starts and how long it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FrameDesc {
    /// Byte offset of the frame's first byte in the frame memory.
    pub addr: u64,
    /// Length of the frame in bytes.
    pub len: u32,
}

/// The memory every frame lives in (an AF_XDP UMEM, or a plain buffer).
pub trait FrameMemory {
    /// Size of one frame slot in bytes (the largest frame it can hold).
    fn frame_size(&self) -> u32;

    /// The bytes of a frame. A descriptor outside the memory yields an
    /// empty slice, never a panic.
    fn frame(&self, desc: FrameDesc) -> &[u8];

    /// The bytes of a frame, writable in place.
    fn frame_mut(&mut self, desc: FrameDesc) -> &mut [u8];
}

/// One receive/transmit queue pair of an interface.
///
/// The calls map onto the four AF_XDP rings: `receive` reads the RX ring,
/// `transmit` writes the TX ring, `reclaim` drains the completion ring and
/// `refill` tops up the fill ring.
pub trait Port {
    /// A name for logs and metrics, e.g. `eth0/q0`.
    fn name(&self) -> &str;

    /// Appends up to `max` received frames to `out`; returns how many.
    fn receive(&mut self, out: &mut Vec<FrameDesc>, max: usize) -> usize;

    /// Queues frames for sending. Returns how many of `frames` (a prefix)
    /// the port accepted; the rest still belong to the caller.
    fn transmit(&mut self, frames: &[FrameDesc]) -> usize;

    /// Moves frames whose transmission completed into `pool`; returns how
    /// many.
    fn reclaim(&mut self, pool: &mut FramePool) -> usize;

    /// Hands free frames from `pool` to the receive side; returns how many.
    fn refill(&mut self, pool: &mut FramePool) -> usize;

    /// Makes queued transmissions go out (a wakeup where the kernel wants
    /// one). Called once per batch, not per frame.
    fn flush(&mut self) {}
}
