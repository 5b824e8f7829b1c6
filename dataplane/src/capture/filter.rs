//! Which frames a capture wants.

use crate::pipeline::{DropReason, Verdict};
use crate::wire::FiveTuple;

/// One end a service's frames have: its VIP and port, or one of its
/// backends, with the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceKey {
    /// IP protocol number.
    pub protocol: u8,
    /// Address (IPv4-mapped for IPv4, as the parser gives it).
    pub address: [u8; 16],
    /// Port.
    pub port: u16,
}

/// What a capture records. Built by the control side, read by the workers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureFilter {
    /// Only dropped frames.
    pub drops_only: bool,
    /// Only frames dropped for this reason.
    pub reason: Option<DropReason>,
    /// Only frames with one of these as source or destination (empty: any
    /// frame). A service's VIP key and its backends'.
    pub keys: Vec<ServiceKey>,
    /// One matching frame in this many is recorded, per worker (1: all).
    pub sample_every: u32,
    /// Bytes kept of each frame, at most [`super::SNAP_MAX`].
    pub snap: usize,
}

impl CaptureFilter {
    /// Whether a frame with this verdict can match, before its bytes are
    /// looked at.
    #[inline]
    pub fn wants_verdict(&self, verdict: Verdict) -> bool {
        match verdict {
            Verdict::Drop(reason) => self.reason.is_none_or(|r| r == reason),
            _ => !self.drops_only && self.reason.is_none(),
        }
    }

    /// Whether the frame's bytes match the service keys (parsed only when
    /// there are keys).
    #[inline]
    pub fn wants_frame(&self, frame: &[u8]) -> bool {
        if self.keys.is_empty() {
            return true;
        }
        match crate::wire::parse(frame) {
            Ok(meta) => self.wants_tuple(&meta.tuple),
            Err(_) => false,
        }
    }

    fn wants_tuple(&self, tuple: &FiveTuple) -> bool {
        self.keys.iter().any(|k| {
            k.protocol == tuple.protocol
                && ((k.address == tuple.dst && k.port == tuple.dst_port)
                    || (k.address == tuple.src && k.port == tuple.src_port))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::builder::FrameBuilder;
    use crate::wire::{v4_mapped, ParseError};

    fn filter() -> CaptureFilter {
        CaptureFilter {
            drops_only: false,
            reason: None,
            keys: Vec::new(),
            sample_every: 1,
            snap: 64,
        }
    }

    #[test]
    fn verdicts_are_kept_as_the_filter_says() {
        let ttl = Verdict::Drop(DropReason::TtlExpired);
        let malformed = Verdict::Drop(DropReason::Malformed(ParseError::ALL[0]));
        let all = filter();
        assert!(all.wants_verdict(Verdict::Pass) && all.wants_verdict(Verdict::Transmit(1)));
        assert!(all.wants_verdict(ttl));
        let drops = CaptureFilter {
            drops_only: true,
            ..filter()
        };
        assert!(!drops.wants_verdict(Verdict::Pass) && !drops.wants_verdict(Verdict::Transmit(0)));
        assert!(drops.wants_verdict(ttl) && drops.wants_verdict(malformed));
        let reason = CaptureFilter {
            reason: Some(DropReason::TtlExpired),
            ..filter()
        };
        assert!(reason.wants_verdict(ttl));
        assert!(!reason.wants_verdict(malformed) && !reason.wants_verdict(Verdict::Pass));
    }

    #[test]
    fn service_keys_match_either_end_of_a_frame() {
        let web = CaptureFilter {
            keys: vec![
                ServiceKey {
                    protocol: 17,
                    address: v4_mapped([198, 18, 100, 10]),
                    port: 53,
                },
                ServiceKey {
                    protocol: 17,
                    address: v4_mapped([198, 18, 1, 11]),
                    port: 5353,
                },
            ],
            ..filter()
        };
        let udp = |from: &str, to: &str| {
            FrameBuilder::udp(from.parse().unwrap(), to.parse().unwrap()).build()
        };
        assert!(web.wants_frame(&udp("198.18.0.2:4000", "198.18.100.10:53")));
        assert!(web.wants_frame(&udp("198.18.100.10:53", "198.18.0.2:4000")));
        assert!(web.wants_frame(&udp("198.18.0.1:4000", "198.18.1.11:5353")));
        assert!(!web.wants_frame(&udp("198.18.0.2:4000", "198.18.100.10:54")));
        assert!(!web.wants_frame(&udp("198.18.0.2:4000", "198.18.100.11:53")));
        let tcp = FrameBuilder::tcp(
            "198.18.0.2:4000".parse().unwrap(),
            "198.18.100.10:53".parse().unwrap(),
            0x02,
        )
        .build();
        assert!(!web.wants_frame(&tcp), "another protocol");
        assert!(!web.wants_frame(&[0u8; 10]), "not parsed: no service's");
        assert!(filter().wants_frame(&[0u8; 10]), "no keys: any frame");
    }
}
