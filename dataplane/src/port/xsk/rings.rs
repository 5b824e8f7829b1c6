//! The ring work of an [`XskPort`]: receive, transmit, reclaim, refill and
//! wake the kernel, in batches, as the [`Port`] trait asks.

use super::socket::XskPort;
use super::stats::XskMode;
use crate::port::{Frame, FramePool, Port};

/// Descriptors moved per ring operation (the scratch space for them).
pub(super) const BATCH: usize = 256;

/// The fill ring is topped up only once this many slots are free, so
/// that each top-up is one batch rather than a frame at a time.
const REFILL_BATCH: usize = 32;

/// Most transmit wakeups per flush. In copy mode each `sendto` sends at
/// most the socket's transmit budget (the whole ring where the kernel lets
/// us raise it, else 32 frames), so a burst needs one or a few.
const MAX_TX_KICKS: usize = 8;

impl XskPort {
    /// Frames on the transmit ring that the kernel has not taken yet.
    fn tx_pending(&mut self) -> usize {
        self.tx_ring
            .saturating_sub(self.tx.nb_free_exact() as usize)
    }

    /// Wakes the kernel to send what is on the transmit ring, as often as
    /// it takes (in copy mode each call sends at most `tx_budget` frames).
    fn kick_tx(&mut self) {
        if self.in_tx == 0 {
            return;
        }
        let pending = self.tx_pending();
        let kicks = pending
            .div_ceil(self.tx_budget.max(1))
            .clamp(1, MAX_TX_KICKS);
        for _ in 0..kicks {
            let pending = self.tx_pending();
            if pending == 0 || (self.need_wakeup && !self.tx.needs_wakeup()) {
                return;
            }
            self.counters.tx_wakeups.inc();
            if self.tx.wakeup().is_err() {
                self.counters.wakeup_errors.inc();
                return;
            }
            // Zero-copy sends asynchronously: one wakeup is all it takes.
            // Copy mode sends during the call: go on while that helps.
            if self.mode == XskMode::ZeroCopy || self.tx_pending() >= pending {
                return;
            }
        }
    }

    /// Sets aside a frame `transmit` took and cannot send, for `reclaim`
    /// to give back. A frame of another memory cannot go back into this
    /// UMEM's pools: it is counted and dropped (lost to its memory).
    fn reject(&mut self, frame: Frame) {
        self.counters.tx_rejected.inc();
        if frame.memory() == self.core.id() {
            self.rejected.push(frame);
        } else {
            self.counters.foreign_addrs.inc();
        }
    }
}

impl Port for XskPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn receive(&mut self, out: &mut Vec<Frame>, max: usize) -> usize {
        let mut total = 0;
        while total < max {
            let want = (max - total).min(self.scratch.len());
            let Some(batch) = self.scratch.get_mut(..want) else {
                break;
            };
            // SAFETY: the receive ring only ever holds frames of this
            // port's UMEM (the fill ring is fed only from its descriptors);
            // `batch` is scratch space the call overwrites.
            let got = unsafe { self.rx.consume(batch) };
            for d in self.scratch.iter().take(got) {
                let (addr, len) = (d.addr() as u64, d.lengths().data() as u32);
                // SAFETY: the kernel is done with a frame on the receive
                // ring, and no token for it exists: it went to the fill
                // ring as a raw descriptor, its token given up.
                match unsafe { self.core.frame_from_ring(addr, len) } {
                    Some(frame) => out.push(frame),
                    None => self.counters.foreign_addrs.inc(),
                }
            }
            total += got;
            if got < want {
                break;
            }
        }
        self.in_fill = self.in_fill.saturating_sub(total);
        if total == 0 && self.fill.needs_wakeup() {
            // The driver sleeps until asked to look at the fill ring.
            self.counters.rx_wakeups.inc();
            if self.fill.wakeup(self.rx.fd_mut(), 0).is_err() {
                self.counters.wakeup_errors.inc();
            }
        }
        total
    }

    fn transmit(&mut self, frames: &mut Vec<Frame>) -> usize {
        let mut accepted = 0;
        let mut kicked = false;
        while !frames.is_empty() {
            let free = self.tx.nb_free(BATCH as u32) as usize;
            if free == 0 {
                if kicked {
                    break;
                }
                // A full ring drains only when the kernel is woken (always
                // so in copy mode): ask once before refusing frames.
                kicked = true;
                self.kick_tx();
                continue;
            }
            let chunk = frames.len().min(free).min(self.scratch.len());
            let mut ready = 0;
            for mut frame in frames.drain(..chunk) {
                match (self.core.tx_desc(&mut frame), self.scratch.get_mut(ready)) {
                    (Some(tx), Some(slot)) => {
                        *slot = tx;
                        ready += 1;
                        // The ring owns the frame now: the token ends here
                        // and the completion ring gives it back.
                        let _ = frame.into_raw();
                    }
                    _ => self.reject(frame),
                }
            }
            // SAFETY: each descriptor was made by `tx_desc` from this UMEM's
            // own, so it names a frame of the UMEM the ring belongs to, and
            // its token was given up above: nothing touches the frame until
            // the completion ring gives it back.
            let sent = unsafe { self.tx.produce(self.scratch.get(..ready).unwrap_or(&[])) };
            // The ring had room for all of them, so this sends all of them;
            // were it not so, the rest would be kept for `reclaim`, not lost.
            for i in sent..ready {
                let Some(unsent) = self.scratch.get(i).copied() else {
                    continue;
                };
                // SAFETY: the ring did not take this frame, whose token was
                // given up above: nobody else has it.
                if let Some(frame) = unsafe { self.core.frame_from_ring(unsent.addr() as u64, 0) } {
                    self.reject(frame);
                }
            }
            self.in_tx += sent;
            accepted += chunk;
        }
        accepted
    }

    fn reclaim(&mut self, pool: &mut FramePool) -> usize {
        let mut reclaimed = 0;
        loop {
            let room = pool.capacity().saturating_sub(pool.len());
            let want = room.min(self.scratch.len());
            let Some(batch) = self.scratch.get_mut(..want) else {
                break;
            };
            if batch.is_empty() {
                break;
            }
            // SAFETY: the completion ring only ever holds frames of this
            // port's UMEM (sent from its descriptors); `batch` is scratch
            // space the call overwrites.
            let got = unsafe { self.comp.consume(batch) };
            for d in self.scratch.iter().take(got) {
                let addr = self.core.layout().canonical(d.addr() as u64);
                // SAFETY: the kernel is done sending a frame on the
                // completion ring, and no token for it exists: it went to
                // the transmit ring as a raw descriptor, its token given up.
                match addr.and_then(|a| unsafe { self.core.frame_from_ring(a, 0) }) {
                    Some(frame) => pool.put(frame),
                    None => self.counters.foreign_addrs.inc(),
                }
            }
            self.in_tx = self.in_tx.saturating_sub(got);
            reclaimed += got;
            if got < want {
                break;
            }
        }
        reclaimed += self.rejected.len();
        for frame in self.rejected.drain(..) {
            pool.put(frame);
        }
        // Copy mode sends a budget per wakeup: see the rest of a burst
        // out even if nothing new is transmitted.
        self.kick_tx();
        reclaimed
    }

    fn refill(&mut self, pool: &mut FramePool) -> usize {
        let mut free = self.fill.nb_free(self.fill_ring as u32) as usize;
        if free < REFILL_BATCH.min(self.fill_ring) {
            return 0;
        }
        let mut filled = 0;
        while free > 0 {
            let want = free.min(self.scratch.len());
            let mut ready = 0;
            while ready < want {
                let Some(frame) = pool.take() else { break };
                match (self.core.fill_desc(&frame), self.scratch.get_mut(ready)) {
                    (Some(desc), Some(slot)) => {
                        *slot = desc;
                        ready += 1;
                        // The fill ring owns the frame now: the token ends
                        // here and the receive ring gives it back.
                        let _ = frame.into_raw();
                    }
                    (None, _) => self.counters.foreign_addrs.inc(),
                    (Some(_), None) => {
                        pool.put(frame);
                        break;
                    }
                }
            }
            let to_fill = self.scratch.get(..ready).unwrap_or(&[]);
            // SAFETY: each descriptor is this UMEM's own (from
            // `fill_desc`), for a frame just taken from the pool whose token
            // was given up: no one else holds it, so the kernel may write it.
            let put = unsafe { self.fill.produce(to_fill) };
            for d in to_fill.iter().skip(put) {
                // The ring had room, so this does not happen; if it did,
                // the frames go back where they came from.
                // SAFETY: the ring did not take this frame, whose token was
                // given up above: nobody else has it.
                if let Some(frame) = unsafe { self.core.frame_from_ring(d.addr() as u64, 0) } {
                    pool.put(frame);
                }
            }
            self.in_fill += put;
            filled += put;
            free = free.saturating_sub(put);
            if ready < want || put < ready {
                break;
            }
        }
        filled
    }

    fn flush(&mut self) {
        self.kick_tx();
    }
}
