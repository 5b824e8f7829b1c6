//! Where the daemon's workers send frames the pipeline passes to the
//! kernel.
//!
//! Our XDP program passes everything the gateway does not own straight to
//! the kernel, so a frame reaches a worker only when it is addressed to a
//! VIP or comes from a backend. The pipeline still passes a few of those
//! (e.g. a backend's packet that belongs to no connection and is not
//! TCP/UDP-shaped for us): AF_XDP has no path back into the kernel's stack
//! for a received frame, so they are counted here and their frames freed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::worker::KernelPath;

/// Counts frames the pipeline passed but AF_XDP cannot hand back.
#[derive(Debug, Default, Clone)]
pub struct UnreachableKernelPath {
    frames: Arc<AtomicU64>,
}

impl UnreachableKernelPath {
    /// The shared count (for metrics and stats).
    pub fn counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.frames)
    }
}

impl KernelPath for UnreachableKernelPath {
    fn pass(&mut self, _ingress: u16, _frame: &[u8]) {
        // Single writer: a plain load and store.
        let n = self.frames.load(Ordering::Relaxed);
        self.frames.store(n.wrapping_add(1), Ordering::Relaxed);
    }
}
