//! Grouping a script's steps into receive batches, and the frame memory a
//! batch lives in while `Pipeline::process_batch` works on it.

use std::ops::Range;

use flowgate_dataplane::port::{Frame, FrameMemory, FramePool, MemoryFrames};

use crate::script::Step;

/// The most frames in one batch (a worker's receive burst).
pub const MAX_BATCH: usize = 64;

/// A frame slot that holds any frame a script can carry (its length is a
/// 16-bit field), so that one [`BatchFrames`] serves every script.
pub const FRAME_SLOT: u32 = 1 << 16;

/// Splits `steps` into batches, as ranges of indices. A step starts a new
/// batch when it publishes a snapshot, runs expiry, lets time pass, arrives
/// on another port than the batch so far, or the batch is full: within a
/// batch, snapshot, clock and port are one, as they are for a worker.
pub fn batch_ranges(steps: &[Step<'_>]) -> Vec<Range<usize>> {
    let mut ranges: Vec<Range<usize>> = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let joins = match ranges.last() {
            Some(current) => {
                !step.switch_snapshot
                    && !step.expire
                    && step.advance_ns == 0
                    && steps.get(current.start).map(|s| s.ingress) == Some(step.ingress)
                    && current.len() < MAX_BATCH
            }
            None => false,
        };
        match ranges.last_mut() {
            Some(current) if joins => current.end = i + 1,
            _ => ranges.push(i..i + 1),
        }
    }
    ranges
}

/// The frames of one batch, held as a worker holds them: tokens of a
/// frame memory (the in-memory port's), taken from its pool and given
/// back by [`clear`](Self::clear).
#[derive(Debug)]
pub struct BatchFrames {
    memory: MemoryFrames,
    pool: FramePool,
    frames: Vec<Frame>,
}

impl BatchFrames {
    /// Room for [`MAX_BATCH`] frames of up to `frame_size` bytes.
    pub fn new(frame_size: u32) -> BatchFrames {
        let mut memory = MemoryFrames::new(MAX_BATCH as u32, frame_size.max(1));
        let pool = memory.pool();
        BatchFrames {
            memory,
            pool,
            frames: Vec::with_capacity(MAX_BATCH),
        }
    }

    /// Gives every frame back for the next batch, last taken first, so
    /// that the pool is as it was before the batch: every batch gets the
    /// same frames in the same order, whatever batches came before.
    pub fn clear(&mut self) {
        for frame in self.frames.drain(..).rev() {
            self.pool.put(frame);
        }
    }

    /// Appends a frame holding `bytes`; false if the batch is full or they
    /// are longer than a frame.
    pub fn push(&mut self, bytes: &[u8]) -> bool {
        let Some(mut frame) = self.pool.take() else {
            return false;
        };
        if !self.memory.write(&mut frame, bytes) {
            self.pool.put(frame);
            return false;
        }
        self.frames.push(frame);
        true
    }

    /// Frames in the batch.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// The bytes of the `i`-th frame pushed (empty past the last).
    pub fn frame(&self, i: usize) -> &[u8] {
        self.frames.get(i).map_or(&[], |f| self.memory.frame(f))
    }

    /// The memory and the frames, for `Pipeline::process_batch`.
    pub fn parts(&mut self) -> (&mut MemoryFrames, &mut [Frame]) {
        (&mut self.memory, &mut self.frames)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_break_at_switches_time_and_port() {
        let f = [0u8; 1];
        let plain = Step::new(&f);
        let steps = [
            plain,
            plain,
            Step {
                ingress: 1,
                ..plain
            },
            Step {
                ingress: 1,
                ..plain
            },
            Step {
                ingress: 1,
                advance_ns: 1,
                ..plain
            },
            Step {
                ingress: 1,
                switch_snapshot: true,
                ..plain
            },
            Step {
                ingress: 1,
                expire: true,
                ..plain
            },
            Step {
                ingress: 1,
                repair_checksums: true,
                ..plain
            },
        ];
        assert_eq!(batch_ranges(&steps), vec![0..2, 2..4, 4..5, 5..6, 6..8]);
        assert!(batch_ranges(&[]).is_empty());
    }

    #[test]
    fn a_batch_holds_at_most_max_batch_frames() {
        let f = [0u8; 1];
        let steps = vec![Step::new(&f); MAX_BATCH * 2 + 1];
        let ranges = batch_ranges(&steps);
        assert_eq!(
            ranges,
            vec![
                0..MAX_BATCH,
                MAX_BATCH..2 * MAX_BATCH,
                2 * MAX_BATCH..2 * MAX_BATCH + 1
            ]
        );
    }

    #[test]
    fn every_batch_takes_the_same_frames_in_the_same_order() {
        let addrs = |batch: &mut BatchFrames| -> Vec<u64> {
            batch.parts().1.iter().map(Frame::addr).collect()
        };
        let mut batch = BatchFrames::new(4);
        for byte in 0..3 {
            assert!(batch.push(&[byte]));
        }
        let first = addrs(&mut batch);
        batch.clear();
        assert!(batch.push(&[7]));
        assert!(batch.push(&[8]));
        assert_eq!(addrs(&mut batch), first[..2]);
        batch.clear();
        for byte in 0..MAX_BATCH as u8 {
            assert!(batch.push(&[byte]));
        }
        assert_eq!(addrs(&mut batch)[..3], first);
    }

    #[test]
    fn frames_are_found_by_position_and_go_back_on_clear() {
        let mut batch = BatchFrames::new(4);
        assert!(batch.push(&[1, 2, 3]));
        assert!(batch.push(&[4]));
        assert!(!batch.push(&[0; 5]), "longer than a frame");
        assert_eq!(batch.frame(0), &[1, 2, 3]);
        let (memory, frames) = batch.parts();
        memory.frame_mut(&mut frames[1])[0] = 9;
        assert_eq!(batch.frame(1), &[9]);
        assert!(batch.frame(2).is_empty());
        assert_eq!(batch.len(), 2);
        batch.clear();
        assert!(batch.is_empty());
        for _ in 0..MAX_BATCH {
            assert!(batch.push(&[]));
        }
        assert!(!batch.push(&[]), "every frame is in the batch");
    }
}
