//! Grouping a script's steps into receive batches, and the frame memory a
//! batch lives in while `Pipeline::process_batch` works on it.

use std::ops::Range;

use flowgate_dataplane::port::{FrameDesc, FrameMemory};

use crate::script::Step;

/// The most frames in one batch (a worker's receive burst).
pub const MAX_BATCH: usize = 64;

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

/// The frames of one batch, each in a buffer of its own length; a
/// descriptor's `addr` is the frame's position in the batch.
#[derive(Debug, Default)]
pub struct BatchFrames {
    frames: Vec<Vec<u8>>,
}

impl BatchFrames {
    /// Empties the memory for the next batch.
    pub fn clear(&mut self) {
        self.frames.clear();
    }

    /// Stores `frame` and returns its descriptor.
    ///
    /// # Panics
    /// If the frame is 4 GiB or longer.
    pub fn push(&mut self, frame: Vec<u8>) -> FrameDesc {
        let desc = FrameDesc {
            addr: self.frames.len() as u64,
            len: u32::try_from(frame.len()).expect("a frame shorter than 4 GiB"),
        };
        self.frames.push(frame);
        desc
    }

    /// The frames, in the order they were pushed.
    pub fn frames(&self) -> &[Vec<u8>] {
        &self.frames
    }
}

impl FrameMemory for BatchFrames {
    fn frame_size(&self) -> u32 {
        u32::from(u16::MAX)
    }

    fn frame(&self, desc: FrameDesc) -> &[u8] {
        usize::try_from(desc.addr)
            .ok()
            .and_then(|i| self.frames.get(i))
            .map_or(&[], |f| &f[..])
    }

    fn frame_mut(&mut self, desc: FrameDesc) -> &mut [u8] {
        match usize::try_from(desc.addr)
            .ok()
            .and_then(|i| self.frames.get_mut(i))
        {
            Some(f) => &mut f[..],
            None => &mut [],
        }
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
    fn frames_are_found_by_position_and_unknown_ones_are_empty() {
        let mut memory = BatchFrames::default();
        let a = memory.push(vec![1, 2, 3]);
        let b = memory.push(vec![4]);
        assert_eq!(memory.frame(a), &[1, 2, 3]);
        memory.frame_mut(b)[0] = 9;
        assert_eq!(memory.frames(), &[vec![1, 2, 3], vec![9]]);
        let nowhere = FrameDesc { addr: 7, len: 1 };
        assert!(memory.frame(nowhere).is_empty());
        assert!(memory.frame_mut(nowhere).is_empty());
        memory.clear();
        assert!(memory.frame(a).is_empty());
    }
}
