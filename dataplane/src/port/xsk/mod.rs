//! The AF_XDP port: real sockets on real interfaces, on xsk-rs.
//!
//! The gateway has one [`SharedUmem`]; every [`XskPort`] (one per
//! interface queue a worker owns) binds to it, so a frame received on one
//! interface is sent out of another by moving its descriptor from one
//! port's receive ring to the other's transmit ring — no copy. Each
//! worker reads and rewrites frames through its own [`UmemFrames`] handle
//! and keeps free frames in its own [`FramePool`](crate::port::FramePool)
//! (from [`SharedUmem::split_pools`]).
//!
//! # Frame ownership
//!
//! The handles alias one memory, and the kernel writes it too. What keeps
//! that sound is one rule, which the types keep: a frame is touched only
//! by whoever holds its [`Frame`](crate::port::Frame) token, and there is
//! one token per frame. A frame in a pool or in a worker's hands between
//! `receive` and `transmit` is a token; handing it on (to a pool, another
//! worker's queue) moves the token. A frame on a ring belongs to the
//! kernel: it went there as a raw descriptor, its token given up
//! (`Frame::into_raw`), and comes back as a new token only when a ring
//! hands it back (`UmemCore::frame_from_ring`, `unsafe`). Every frame of
//! the UMEM gets its first token once, in
//! [`SharedUmem::split_pools`]. Every `unsafe` block in this module rests
//! on that rule and says so.
//!
//! # Addresses
//!
//! A frame's first 256 bytes are the kernel's XDP headroom. Descriptors
//! carry *packet addresses* (`frame index × frame_size + 256`), which is
//! where the kernel puts received packets and what the pools hold; a
//! frame holds [`SharedUmem::frame_room`] bytes of packet.

mod error;
mod layout;
mod queues;
mod rings;
mod settings;
mod socket;
mod stats;
mod umem;

pub use error::XskError;
pub use settings::{BindMode, XskSettings, FRAME_SIZES, MAX_FRAMES, MAX_RING, MIN_RING};
pub use socket::XskPort;
pub use stats::{XskMode, XskPortCounters, XskStats, XskStatsReader};
pub use umem::{SharedUmem, UmemFrames};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_and_ports_move_to_worker_threads() {
        fn send<T: Send>() {}
        send::<SharedUmem>();
        send::<UmemFrames>();
        send::<XskPort>();
        send::<XskStatsReader>();
        fn sync<T: Sync>() {}
        sync::<XskStatsReader>();
        send::<XskError>();
    }
}
