//! The pipeline target's input format: a script of frames, each with how
//! much time passed before it, the port it arrived on, and a few switches.
//!
//! ```text
//! input   := step*
//! step    := control:u8  length:u16 (big-endian)  frame:[u8; length]
//! control := bit 0     ingress port (0 or 1)
//!            bit 1     publish the next snapshot before this frame
//!            bit 2     repair the frame's checksums before processing
//!            bit 3     run the flow table's expiry sweep before this frame
//!            bits 4-7  time step before this frame, an index into TIME_STEPS_NS
//! ```
//!
//! Every byte string decodes: a step whose length runs past the end takes
//! what is left, and a trailing control byte without a length is a step
//! with an empty frame. At most [`MAX_STEPS`] steps are run. Consecutive
//! steps on one port with no time step and no switch form one receive
//! batch (see [`crate::batch`]).

/// The most steps one input runs, to bound the time an input takes.
pub const MAX_STEPS: usize = 256;

/// Time steps the control byte chooses from: from none, through the
/// fixture's flow timeouts (1, 2, 3 and 10 s), to a week.
pub const TIME_STEPS_NS: [u64; 16] = [
    0,
    1_000,
    1_000_000,
    10_000_000,
    100_000_000,
    500_000_000,
    999_999_999,
    1_000_000_000,
    2_000_000_000,
    3_000_000_001,
    5_000_000_000,
    10_000_000_000,
    60_000_000_000,
    900_000_000_000,
    3_600_000_000_000,
    604_800_000_000_000,
];

const INGRESS: u8 = 0x01;
const SWITCH_SNAPSHOT: u8 = 0x02;
const REPAIR_CHECKSUMS: u8 = 0x04;
const EXPIRE: u8 = 0x08;

/// One decoded step of a script.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step<'a> {
    /// The port the frame arrives on.
    pub ingress: u16,
    /// Publish the next snapshot before processing the frame.
    pub switch_snapshot: bool,
    /// Recompute the frame's checksums before processing it.
    pub repair_checksums: bool,
    /// Run the flow table's expiry sweep before processing the frame.
    pub expire: bool,
    /// Nanoseconds that pass before the frame arrives.
    pub advance_ns: u64,
    /// The frame's bytes.
    pub frame: &'a [u8],
}

impl Step<'_> {
    /// A step carrying `frame` with every switch off and no time passing.
    pub fn new(frame: &[u8]) -> Step<'_> {
        Step {
            ingress: 0,
            switch_snapshot: false,
            repair_checksums: false,
            expire: false,
            advance_ns: 0,
            frame,
        }
    }
}

/// The steps of `input`, in order; see the [module docs](self).
pub fn steps(input: &[u8]) -> Steps<'_> {
    Steps {
        rest: input,
        taken: 0,
    }
}

/// Iterator over a script's steps; see [`steps`].
#[derive(Debug)]
pub struct Steps<'a> {
    rest: &'a [u8],
    taken: usize,
}

impl<'a> Iterator for Steps<'a> {
    type Item = Step<'a>;

    fn next(&mut self) -> Option<Step<'a>> {
        if self.taken == MAX_STEPS {
            return None;
        }
        let (&control, rest) = self.rest.split_first()?;
        let (len, rest) = match rest {
            [hi, lo, rest @ ..] => (usize::from(u16::from_be_bytes([*hi, *lo])), rest),
            _ => (0, &[][..]),
        };
        let (frame, rest) = rest.split_at(len.min(rest.len()));
        self.rest = rest;
        self.taken += 1;
        let time_index = usize::from(control >> 4);
        Some(Step {
            ingress: u16::from(control & INGRESS),
            switch_snapshot: control & SWITCH_SNAPSHOT != 0,
            repair_checksums: control & REPAIR_CHECKSUMS != 0,
            expire: control & EXPIRE != 0,
            advance_ns: TIME_STEPS_NS.get(time_index).copied().unwrap_or(0),
            frame,
        })
    }
}

/// Encodes steps into a script (for seeds). `advance_ns` is rounded down
/// to the largest entry of [`TIME_STEPS_NS`] not above it.
///
/// # Panics
/// If a frame is longer than 65535 bytes.
pub fn encode(steps: &[Step<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for step in steps {
        let time_index = TIME_STEPS_NS
            .iter()
            .rposition(|&t| t <= step.advance_ns)
            .unwrap_or(0);
        let mut control = (time_index as u8) << 4;
        if step.ingress != 0 {
            control |= INGRESS;
        }
        if step.switch_snapshot {
            control |= SWITCH_SNAPSHOT;
        }
        if step.repair_checksums {
            control |= REPAIR_CHECKSUMS;
        }
        if step.expire {
            control |= EXPIRE;
        }
        let len = u16::try_from(step.frame.len()).expect("a script frame fits in 64 KiB");
        out.push(control);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(step.frame);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_steps_decode_to_themselves() {
        let a = [1u8, 2, 3];
        let b = [9u8; 300];
        let steps_in = [
            Step {
                ingress: 1,
                switch_snapshot: true,
                repair_checksums: false,
                expire: true,
                advance_ns: 3_000_000_001,
                frame: &a,
            },
            Step {
                repair_checksums: true,
                ..Step::new(&b)
            },
        ];
        let script = encode(&steps_in);
        assert_eq!(script.len(), 3 + 3 + 3 + 300);
        let decoded: Vec<Step<'_>> = steps(&script).collect();
        assert_eq!(decoded, steps_in);
    }

    #[test]
    fn time_is_rounded_down_to_a_step() {
        let script = encode(&[Step {
            advance_ns: 1_500_000_000,
            ..Step::new(&[])
        }]);
        assert_eq!(steps(&script).next().unwrap().advance_ns, 1_000_000_000);
    }

    #[test]
    fn short_and_truncated_inputs_still_decode() {
        assert_eq!(steps(&[]).count(), 0);
        let lone: Vec<Step<'_>> = steps(&[0x31]).collect();
        assert_eq!(lone.len(), 1);
        assert_eq!((lone[0].ingress, lone[0].frame.len()), (1, 0));
        assert_eq!(lone[0].advance_ns, TIME_STEPS_NS[3]);
        let cut: Vec<Step<'_>> = steps(&[0, 0xff, 0xff, 7, 8]).collect();
        assert_eq!(cut.len(), 1);
        assert_eq!(cut[0].frame, &[7, 8]);
    }

    #[test]
    fn long_inputs_stop_at_max_steps() {
        let input = vec![0u8; 3 * (MAX_STEPS + 10)];
        assert_eq!(steps(&input).count(), MAX_STEPS);
    }
}
