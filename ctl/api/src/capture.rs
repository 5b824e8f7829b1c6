//! `capture`: frames the workers decided, with their verdict and reason,
//! streamed to the client while the capture runs.
//!
//! Unlike every other request, `capture` is answered by several response
//! lines: one [`CapturedFrame`] per frame (`"kind":"capture_frame"`), then
//! one [`CaptureEnd`] (`"kind":"capture_end"`) saying why it stopped. A
//! client that hangs up ends the capture too.

use serde::{Deserialize, Serialize};

/// Most frames one capture may ask for.
pub const MAX_CAPTURE_COUNT: u64 = 1_000_000;

/// Longest snap length: bytes kept of each frame (a whole Ethernet frame
/// of a 1500-byte MTU, with two VLAN tags, fits).
pub const MAX_CAPTURE_SNAP: u32 = 2048;

/// Most a capture's sampling may skip: 1 frame in this many.
pub const MAX_CAPTURE_SAMPLE: u32 = 1_000_000;

/// `capture`: which frames to record, and how many.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureQuery {
    /// Only dropped frames.
    #[serde(default)]
    pub drops: bool,
    /// Only frames of this service: to or from its VIP and port, or to or
    /// from one of its backends (as they were when the capture started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Only frames dropped for this reason (a name as `stats` shows it,
    /// e.g. `ttl_expired`); implies drops only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Stop after this many frames: 1 to [`MAX_CAPTURE_COUNT`].
    pub count: u64,
    /// Record one frame in this many of those that match, per worker
    /// (default 1: every one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample: Option<u32>,
    /// Bytes kept of each frame, 1 to [`MAX_CAPTURE_SNAP`] (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snap: Option<u32>,
    /// Stop after this many milliseconds even if fewer frames came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

/// One captured frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapturedFrame {
    /// When the worker decided it, in nanoseconds since the Unix epoch.
    pub time_ns: u64,
    /// The worker that decided it.
    pub worker: usize,
    /// The interface it came in on.
    pub interface: String,
    /// `transmit`, `pass` (to the kernel) or `drop`.
    pub verdict: String,
    /// Why it was dropped (a drop reason's name); only for `drop`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The interface it was sent out of; only for `transmit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<String>,
    /// Its length on the wire, in bytes.
    pub length: u32,
    /// Its first bytes (at most the snap length), as lower-case hex: the
    /// frame as the worker left it (rewritten if transmitted).
    pub data: String,
    /// One line about it: protocol, source and destination, or why it did
    /// not parse.
    pub summary: String,
}

/// The end of a capture.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureEnd {
    /// Frames sent.
    pub captured: u64,
    /// Frames that matched but were not recorded because a worker's
    /// capture ring was full (the worker never waits for the capture).
    pub lost: u64,
    /// Why it stopped: `count` or `duration`.
    pub stopped: String,
}

/// Frame bytes as lower-case hex.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// The bytes of [`to_hex`]'s text; `None` if it is not an even number of
/// hex digits.
pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    let digits = text.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |c: u8| {
        char::from(c)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    digits
        .chunks_exact(2)
        .map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_what_is_not_hex() {
        let bytes: Vec<u8> = (0..=255).collect();
        let text = to_hex(&bytes);
        assert_eq!(&text[..8], "00010203");
        assert_eq!(&text[text.len() - 4..], "feff");
        assert_eq!(from_hex(&text), Some(bytes));
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
        assert_eq!(from_hex(""), Some(Vec::new()));
    }

    #[test]
    fn a_query_with_an_unknown_field_is_refused() {
        let ok: CaptureQuery = serde_json::from_str(r#"{"count":1,"drops":true}"#).unwrap();
        assert!(ok.drops && ok.count == 1 && ok.service.is_none());
        assert!(serde_json::from_str::<CaptureQuery>(r#"{"count":1,"drop":true}"#).is_err());
    }
}
