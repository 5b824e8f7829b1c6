//! What a cookie-valid ACK tells the worker: the XDP program's mark that
//! it checked the cookie, the client's initial sequence number and the
//! cookie (the gateway's), and the options the client offered in its SYN:
//! its MSS from the cookie's low bits, its window scale and SACK from the
//! SYN-ACK's timestamp, which the ACK's echo brings back
//! (bpf/flowgate_synproxy.h has the layout; keep both equal).

/// TCP header byte 12's bit the XDP program sets on a cookie-valid ACK
/// (`SYNPROXY_MARK`; one of the reserved bits, never sent by clients: the
/// program drops a frame to a proxied service that carries it).
pub const MARK: u8 = 0x04;

/// Offset of the marked byte in the TCP header.
const MARK_BYTE: usize = 12;

/// The window scale the SYN-ACK offers the client (`SYNPROXY_WSCALE`):
/// the client reads every window the gateway sends it with this shift.
pub const OFFERED_WSCALE: u8 = 7;

/// MSS the SYN-ACK offers the client (`SYNPROXY_MSS4`, `SYNPROXY_MSS6`).
pub const OFFERED_MSS_V4: u16 = 1460;
/// See [`OFFERED_MSS_V4`].
pub const OFFERED_MSS_V6: u16 = 1440;

/// The kernel's cookie MSS tables (net/ipv4/syncookies.c,
/// net/ipv6/syncookies.c); the cookie's two low bits are an index into
/// them.
pub const MSS_TABLE_V4: [u16; 4] = [536, 1300, 1440, 1460];
/// See [`MSS_TABLE_V4`].
pub const MSS_TABLE_V6: [u16; 4] = [1220, 1420, 1440, 8940];

const TS_WSCALE_MASK: u32 = 0x0f;
const TS_NO_WSCALE: u32 = 0x0f;
const TS_SACK: u32 = 0x10;

const OPT_EOL: u8 = 0;
const OPT_NOP: u8 = 1;
const OPT_TIMESTAMP: u8 = 8;
const OPTLEN_TIMESTAMP: usize = 10;

/// Whether the TCP header `tcp` carries the XDP program's cookie-valid mark.
pub fn is_marked(tcp: &[u8]) -> bool {
    tcp.get(MARK_BYTE).is_some_and(|b| b & MARK != 0)
}

/// Clears the mark from the TCP header `tcp`, its checksum patched.
pub fn clear_mark(tcp: &mut [u8]) {
    if tcp.len() < 20 || tcp[MARK_BYTE] & MARK == 0 {
        return;
    }
    let old = u16::from_be_bytes([tcp[MARK_BYTE], tcp[MARK_BYTE + 1]]);
    tcp[MARK_BYTE] &= !MARK;
    let new = u16::from_be_bytes([tcp[MARK_BYTE], tcp[MARK_BYTE + 1]]);
    let check =
        crate::wire::checksum::update_word(u16::from_be_bytes([tcp[16], tcp[17]]), old, new);
    tcp[16..18].copy_from_slice(&check.to_be_bytes());
}

/// The TCP timestamps option of the header `tcp` (with its options):
/// (TSval, TSecr).
pub fn timestamps(tcp: &[u8]) -> Option<(u32, u32)> {
    timestamp_offset(tcp).and_then(|at| {
        let v = tcp.get(at + 2..at + 10)?;
        Some((
            u32::from_be_bytes([v[0], v[1], v[2], v[3]]),
            u32::from_be_bytes([v[4], v[5], v[6], v[7]]),
        ))
    })
}

/// Where the timestamps option starts in the header `tcp`.
pub(crate) fn timestamp_offset(tcp: &[u8]) -> Option<usize> {
    find_option(tcp, OPT_TIMESTAMP, OPTLEN_TIMESTAMP)
}

/// Where the first option of `kind` (of exactly `len` bytes when `len` is
/// not 0) starts in the header `tcp`.
pub(crate) fn find_option(tcp: &[u8], kind: u8, len: usize) -> Option<usize> {
    let header_len = usize::from(tcp.get(12)? >> 4) * 4;
    let end = header_len.min(tcp.len());
    let mut at = 20;
    while at < end {
        match tcp.get(at).copied()? {
            OPT_EOL => return None,
            OPT_NOP => at += 1,
            k => {
                let size = usize::from(*tcp.get(at + 1)?);
                if size < 2 || at + size > end {
                    return None;
                }
                if k == kind && (len == 0 || size == len) {
                    return Some(at);
                }
                at += size;
            }
        }
    }
    None
}

/// The client's options from its SYN, as the proxy kept them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HandshakeOptions {
    /// Its MSS, rounded down to the kernel's cookie table.
    pub mss: u16,
    /// Its window scale, if it offered one (and timestamps).
    pub wscale: Option<u8>,
    /// Whether it permitted SACK (and offered timestamps).
    pub sack: bool,
    /// The timestamps of its ACK (TSval, TSecr), if it uses them.
    pub timestamps: Option<(u32, u32)>,
}

impl HandshakeOptions {
    /// The options a cookie and an ACK's timestamps give back
    /// (`timestamps` `None`: the client sent none), for an IPv6
    /// connection if `v6`.
    pub fn read(cookie: u32, timestamps: Option<(u32, u32)>, v6: bool) -> HandshakeOptions {
        let table = if v6 { MSS_TABLE_V6 } else { MSS_TABLE_V4 };
        let mss = table[(cookie & 3) as usize];
        let Some((_, echo)) = timestamps else {
            return HandshakeOptions {
                mss,
                wscale: None,
                sack: false,
                timestamps: None,
            };
        };
        let wscale = echo & TS_WSCALE_MASK;
        HandshakeOptions {
            mss,
            wscale: (wscale != TS_NO_WSCALE).then_some(wscale.min(14) as u8),
            sack: echo & TS_SACK != 0,
            timestamps,
        }
    }
}

/// A cookie-valid ACK: the handshake the XDP program completed with the
/// client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CookieAck {
    /// The client's initial sequence number (the ACK's sequence − 1).
    pub client_isn: u32,
    /// The gateway's initial sequence number toward the client, the
    /// cookie (the ACK's acknowledgement − 1).
    pub cookie: u32,
    /// What the client offered.
    pub options: HandshakeOptions,
}

impl CookieAck {
    /// The handshake of the marked ACK whose TCP header (with options) is
    /// `tcp`; `None` if it is not marked or too short.
    pub fn read(tcp: &[u8], v6: bool) -> Option<CookieAck> {
        if !is_marked(tcp) {
            return None;
        }
        let word = |at: usize| -> Option<u32> {
            let b = tcp.get(at..at + 4)?;
            Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        };
        let cookie = word(8)?.wrapping_sub(1);
        Some(CookieAck {
            client_isn: word(4)?.wrapping_sub(1),
            cookie,
            options: HandshakeOptions::read(cookie, timestamps(tcp), v6),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TCP header with `options`, flags ACK, marked if `marked`.
    fn header(seq: u32, ack: u32, options: &[u8], marked: bool) -> Vec<u8> {
        let mut h = vec![0u8; 20];
        h[0..2].copy_from_slice(&40000u16.to_be_bytes());
        h[2..4].copy_from_slice(&80u16.to_be_bytes());
        h[4..8].copy_from_slice(&seq.to_be_bytes());
        h[8..12].copy_from_slice(&ack.to_be_bytes());
        h.extend_from_slice(options);
        h[12] = (((h.len() / 4) as u8) << 4) | if marked { MARK } else { 0 };
        h[13] = 0x10;
        h
    }

    #[test]
    fn the_echoed_timestamp_gives_back_mss_wscale_and_sack() {
        // TSecr low bits: SACK, wscale 9; the cookie's: MSS index 2 (1440).
        let echo: u32 = 0x1234_5600 | 0x10 | 9;
        let mut opts = vec![1, 1, 8, 10];
        opts.extend_from_slice(&77u32.to_be_bytes());
        opts.extend_from_slice(&echo.to_be_bytes());
        let h = header(1001, 0x5002 + 1, &opts, true);
        let ack = CookieAck::read(&h, false).unwrap();
        assert_eq!((ack.client_isn, ack.cookie), (1000, 0x5002));
        assert_eq!(
            ack.options,
            HandshakeOptions {
                mss: 1440,
                wscale: Some(9),
                sack: true,
                timestamps: Some((77, echo)),
            }
        );
        // IPv6's table; wscale 15 means none.
        let o = HandshakeOptions::read(0xffff_ffff, Some((1, 0x3f << 2 | 0x0f)), true);
        assert_eq!((o.mss, o.wscale, o.sack), (8940, None, true));
    }

    #[test]
    fn without_timestamps_the_mss_and_no_scaling_or_sack() {
        let h = header(0, 0, &[], true);
        let ack = CookieAck::read(&h, true).unwrap();
        assert_eq!((ack.client_isn, ack.cookie), (u32::MAX, u32::MAX));
        assert_eq!(
            ack.options,
            HandshakeOptions {
                mss: 8940,
                wscale: None,
                sack: false,
                timestamps: None
            }
        );
    }

    #[test]
    fn only_a_marked_ack_is_read_and_the_mark_clears_with_its_checksum() {
        let mut h = header(5, 6, &[], true);
        h[16..18].copy_from_slice(&0x1234u16.to_be_bytes());
        assert!(CookieAck::read(&header(5, 6, &[], false), false).is_none());
        let before = crate::wire::checksum::internet_checksum(&h);
        clear_mark(&mut h);
        assert!(!is_marked(&h));
        // The header's own sum is unchanged by a correct patch.
        assert_eq!(crate::wire::checksum::internet_checksum(&h), before);
    }

    #[test]
    fn options_are_walked_and_bad_lengths_stop_the_walk() {
        let mut opts = vec![2, 4, 5, 0xb4, 4, 2, 8, 10];
        opts.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2]);
        opts.extend_from_slice(&[1, 1]);
        let h = header(0, 0, &opts, false);
        assert_eq!(timestamps(&h), Some((1, 2)));
        let h = header(0, 0, &[2, 1, 0, 0], false);
        assert_eq!(timestamps(&h), None);
        assert_eq!(timestamps(&[0u8; 10]), None);
    }
}
