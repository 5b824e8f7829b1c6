//! `flowgatectl capture`: frames the workers decide, with their verdict
//! and reason, at a cost to the workers that is bounded and, while no
//! capture runs, next to nothing.
//!
//! - [`filter`]: which frames a capture wants (drops only, a reason, a
//!   service's keys, one in N).
//! - [`ring`]: a worker's bounded ring of preallocated frame slots, handed
//!   between the worker and the control side through two lock-free queues.
//! - [`tap`]: the worker's end. It reads whether a capture is armed once
//!   per batch (one atomic load); only then does it look at each frame's
//!   verdict, and copy the frames that match (at most the snap length)
//!   into a free slot. No lock, no allocation, no system call; a ring with
//!   no free slot loses the frame, counted, and the worker goes on.
//! - [`hub`]: the control side's end: arms a capture (one at a time),
//!   drains every worker's ring, disarms when the capture ends.
//! - [`stream`]: the control socket's side of a capture: validates the
//!   request against the running rules, streams each frame to the client
//!   as a response line, and stops at the count, the duration, or when the
//!   client goes away.
//!
//! Frames the kernel fast path forwards (`fast_path = "xdp"`) never reach
//! a worker, so a capture does not see them (docs/operations.md).

pub mod filter;
pub mod hub;
pub mod ring;
pub mod stream;
pub mod tap;

pub use filter::{CaptureFilter, ServiceKey};
pub use hub::{CaptureBusy, CaptureHub, CaptureSession, Captured};
pub use ring::{Slot, SlotRing, RING_SLOTS, SNAP_MAX};
pub use tap::CaptureTap;
