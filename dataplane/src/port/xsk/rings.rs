//! The ring work of an [`XskPort`]: receive, transmit, reclaim, refill and
//! wake the kernel, in batches, as the [`Port`] trait asks.

use super::socket::XskPort;
use super::stats::XskMode;
use crate::port::{FrameDesc, FramePool, Port};

/// Descriptors moved per ring operation (the scratch space for them).
pub(super) const BATCH: usize = 256;

/// The fill ring is topped up only once this many slots are free, so
/// that each top-up is one batch rather than a frame at a time.
const REFILL_BATCH: usize = 32;

/// Most transmit wakeups per flush. In copy mode each `sendto` sends at
/// most the kernel's transmit budget (32 frames), so a burst needs a few.
const MAX_TX_KICKS: usize = 8;

impl XskPort {
    /// Frames on the transmit ring that the kernel has not taken yet.
    fn tx_pending(&mut self) -> usize {
        self.tx_ring
            .saturating_sub(self.tx.nb_free_exact() as usize)
    }

    /// Wakes the kernel to send what is on the transmit ring, as often as
    /// it asks (a few times in copy mode, where each call sends a budget).
    fn kick_tx(&mut self) {
        if self.in_tx == 0 {
            return;
        }
        for _ in 0..MAX_TX_KICKS {
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

    /// Sets aside a frame `transmit` cannot send, for `reclaim`.
    fn reject(&mut self, desc: FrameDesc) {
        self.counters.tx_rejected.inc();
        match self.core.layout().canonical(desc.addr) {
            Some(addr) => self.rejected.push(addr),
            None => self.counters.foreign_addrs.inc(),
        }
    }
}

impl Port for XskPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn receive(&mut self, out: &mut Vec<FrameDesc>, max: usize) -> usize {
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
            out.extend(self.scratch.iter().take(got).map(|d| FrameDesc {
                addr: d.addr() as u64,
                len: d.lengths().data() as u32,
            }));
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

    fn transmit(&mut self, frames: &[FrameDesc]) -> usize {
        let mut accepted = 0;
        let mut kicked = false;
        while accepted < frames.len() {
            let free = self.tx.nb_free(BATCH as u32) as usize;
            if free == 0 && !kicked {
                // A full ring drains only when the kernel is woken (always
                // so in copy mode): ask once before refusing frames.
                kicked = true;
                self.kick_tx();
                continue;
            }
            let chunk = (frames.len() - accepted).min(free).min(self.scratch.len());
            let Some(batch) = frames.get(accepted..accepted + chunk) else {
                break;
            };
            if batch.is_empty() {
                break;
            }
            let mut ready = 0;
            for &desc in batch {
                match (self.core.tx_desc(desc), self.scratch.get_mut(ready)) {
                    (Some(tx), Some(slot)) => {
                        *slot = tx;
                        ready += 1;
                    }
                    _ => self.reject(desc),
                }
            }
            // SAFETY: each descriptor was made by `tx_desc` from this UMEM's
            // own, so it names a frame of the UMEM the ring belongs to. The
            // caller handed these frames over (descriptor ownership): nothing
            // touches them until the completion ring gives them back.
            let sent = unsafe { self.tx.produce(self.scratch.get(..ready).unwrap_or(&[])) };
            // The ring had room for all of them, so this sends all of them;
            // were it not so, the rest would be refused, not lost.
            for i in sent..ready {
                if let Some(unsent) = self.scratch.get(i).copied() {
                    self.reject(FrameDesc {
                        addr: unsent.addr() as u64,
                        len: 0,
                    });
                }
            }
            self.in_tx += sent;
            accepted += batch.len();
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
                match self.core.layout().canonical(d.addr() as u64) {
                    Some(addr) if pool.put(addr) => {}
                    // Cannot happen (room was checked); keep it counted.
                    Some(addr) => self.rejected.push(addr),
                    None => self.counters.foreign_addrs.inc(),
                }
            }
            self.in_tx = self.in_tx.saturating_sub(got);
            reclaimed += got;
            if got < want {
                break;
            }
        }
        while let Some(&addr) = self.rejected.last() {
            if !pool.put(addr) {
                break;
            }
            self.rejected.pop();
            reclaimed += 1;
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
                let Some(addr) = pool.take() else { break };
                match (self.core.fill_desc(addr), self.scratch.get_mut(ready)) {
                    (Some(desc), Some(slot)) => {
                        *slot = desc;
                        ready += 1;
                    }
                    _ => self.counters.foreign_addrs.inc(),
                }
            }
            let to_fill = self.scratch.get(..ready).unwrap_or(&[]);
            // SAFETY: each descriptor is this UMEM's own (from
            // `fill_desc`), for a frame just taken from the pool, which
            // means no one else holds it: the kernel may write it now.
            let put = unsafe { self.fill.produce(to_fill) };
            for d in to_fill.iter().skip(put) {
                // The ring had room, so this does not happen; if it did,
                // the frames go back where they came from.
                pool.put(d.addr() as u64);
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
