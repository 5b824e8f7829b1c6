//! The worker's half of a proxied connection: the handshake it opens with
//! the backend once the XDP program let a cookie-valid ACK through, and
//! the segments that handshake needs written.
//!
//! ```text
//! client ACK (marked) ─► worker: new flow as usual (limits, routing,
//!   scheduler), record in state TcpSyn, proxied; the ACK becomes
//!   the SYN to the backend: the client's ISN, MSS, window scale, SACK,
//!   timestamp (backend_syn_header)
//! backend SYN-ACK ─► worker: the offsets (SeqOffset) into the record;
//!   the SYN-ACK becomes the ACK that opens the client's window
//!   (client_window_header: the cookie SYN-ACK offered 0); established
//! client's next segment ─► translated, completes the backend's handshake
//! backend SYN-ACK again ─► the ACK to the backend (backend_ack_header)
//! every later segment ─► SeqOffset::to_backend / to_client
//! ```
//!
//! Client segments that arrive before the backend answered (a window
//! probe, data on the cookie ACK) are dropped (`synproxy_handshake`): the
//! worker keeps no buffer, so that memory cannot grow with what clients
//! send; the client retransmits them, and by then the connection is
//! open.
//!
//! Everything here is cold (once per proxied connection), allocates
//! nothing and never panics: a frame too short for what it must hold
//! gives `None`.

use super::handshake::{find_option, timestamps, CookieAck, HandshakeOptions, OFFERED_WSCALE};
use super::seq::SeqOffset;
use crate::wire::checksum::{internet_checksum, l4_checksum_v4, l4_checksum_v6};

/// The longest TCP header the worker writes: 20 bytes and 20 of options
/// (MSS, SACK permitted, timestamps, window scale).
pub const MAX_HEADER: usize = 40;

const OPT_NOP: u8 = 1;
const OPT_MSS: u8 = 2;
const OPT_WSCALE: u8 = 3;
const OPT_SACK_PERM: u8 = 4;
const OPT_TIMESTAMP: u8 = 8;

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

/// TTL / hop limit of the segments the worker originates (the ACK to the
/// backend); a SYN made from a client's ACK keeps the client's.
const OWN_TTL: u8 = 64;

/// What a worker keeps per proxied connection, beside its record
/// (`FlowTable::syn_proxy`): the client's handshake until the backend
/// answers, then the translation for the connection's life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxiedConnection {
    /// The client's initial sequence number.
    pub client_isn: u32,
    /// The gateway's initial sequence number toward the client.
    pub cookie: u32,
    /// What the client offered in its SYN.
    pub options: HandshakeOptions,
    /// The window field of the client's ACK (in its own scale).
    pub client_window: u16,
    /// Whether the backend answered: `offset` holds from then on.
    pub answered: bool,
    /// The translation, once answered.
    pub offset: SeqOffset,
}

impl ProxiedConnection {
    /// The connection a cookie-valid ACK (TCP header `tcp`) opens.
    pub fn from_ack(ack: &CookieAck, tcp: &[u8]) -> ProxiedConnection {
        let client_window = tcp
            .get(14..16)
            .map_or(0, |w| u16::from_be_bytes([w[0], w[1]]));
        ProxiedConnection {
            client_isn: ack.client_isn,
            cookie: ack.cookie,
            options: ack.options,
            client_window,
            answered: false,
            offset: SeqOffset::default(),
        }
    }

    /// The scale the client reads the gateway's windows with: the one
    /// the cookie SYN-ACK offered, if the client scales at all.
    pub fn client_wscale(&self) -> u8 {
        if self.options.wscale.is_some() {
            OFFERED_WSCALE
        } else {
            0
        }
    }

    /// Takes the backend's SYN-ACK (TCP header `tcp`): the offsets of the
    /// connection. A retransmitted SYN-ACK changes nothing.
    pub fn answer(&mut self, tcp: &[u8]) {
        if self.answered || tcp.len() < 20 {
            return;
        }
        let backend_isn = word(tcp, 4);
        let our_tsval = self.options.timestamps.map_or(0, |(_, echo)| echo);
        let backend_tsval = timestamps(tcp).map_or(0, |(val, _)| val);
        // A backend scales only if the client's SYN (ours, in its name)
        // offered scaling; its shift is in its SYN-ACK.
        let backend_wscale = find_option(tcp, OPT_WSCALE, 3)
            .and_then(|at| tcp.get(at + 2).copied())
            .unwrap_or(0);
        self.offset = SeqOffset::new(self.cookie, backend_isn, our_tsval, backend_tsval)
            .with_window_scales(backend_wscale, self.client_wscale());
        self.answered = true;
    }
}

/// The TCP header (no checksum yet) of the SYN to the backend, in the
/// client's name: its port to the service's port (the address rewrite
/// makes that the backend's), its ISN and the options it offered;
/// written to `out`, its length returned.
pub fn backend_syn_header(
    conn: &ProxiedConnection,
    ports: (u16, u16),
    out: &mut [u8; MAX_HEADER],
) -> usize {
    let o = &conn.options;
    let mut opts = [0u8; MAX_HEADER - 20];
    let mut n = 0;
    let mut put = |bytes: &[u8]| {
        if let Some(dst) = opts.get_mut(n..n + bytes.len()) {
            dst.copy_from_slice(bytes);
            n += bytes.len();
        }
    };
    let [m0, m1] = o.mss.to_be_bytes();
    put(&[OPT_MSS, 4, m0, m1]);
    match (o.sack, o.timestamps) {
        (sack, Some((tsval, _))) => {
            if sack {
                put(&[OPT_SACK_PERM, 2]);
            } else {
                put(&[OPT_NOP, OPT_NOP]);
            }
            put(&[OPT_TIMESTAMP, 10]);
            put(&tsval.to_be_bytes());
            put(&[0; 4]);
        }
        (true, None) => put(&[OPT_NOP, OPT_NOP, OPT_SACK_PERM, 2]),
        (false, None) => {}
    }
    if let Some(shift) = o.wscale {
        put(&[OPT_NOP, OPT_WSCALE, 3, shift]);
    }
    // A SYN's window is never scaled: the client's, in bytes, as far as
    // 16 bits say it.
    let shift = o.wscale.unwrap_or(0);
    let window = (u32::from(conn.client_window) << shift).min(u32::from(u16::MAX)) as u16;
    header(
        out,
        ports,
        (conn.client_isn, 0),
        SYN,
        window,
        opts.get(..n).unwrap_or(&[]),
    )
}

/// The TCP header (no checksum yet) of the ACK that completes the
/// backend's handshake, in the client's name, for the backend's SYN-ACK
/// `syn_ack` (TCP header): the client's port to the backend's, written to
/// `out`, its length returned.
pub fn backend_ack_header(
    conn: &ProxiedConnection,
    syn_ack: &[u8],
    out: &mut [u8; MAX_HEADER],
) -> usize {
    let (backend_port, client_port) = (u16_at(syn_ack, 0), u16_at(syn_ack, 2));
    let backend_isn = word(syn_ack, 4);
    let mut opts = [0u8; 12];
    let opts: &[u8] = match (conn.options.timestamps, timestamps(syn_ack)) {
        (Some((tsval, _)), Some((backend_tsval, _))) => {
            opts[0..4].copy_from_slice(&[OPT_NOP, OPT_NOP, OPT_TIMESTAMP, 10]);
            opts[4..8].copy_from_slice(&tsval.to_be_bytes());
            opts[8..12].copy_from_slice(&backend_tsval.to_be_bytes());
            &opts
        }
        _ => &[],
    };
    header(
        out,
        (client_port, backend_port),
        (conn.client_isn.wrapping_add(1), backend_isn.wrapping_add(1)),
        ACK,
        conn.client_window,
        opts,
    )
}

/// The TCP header (no checksum yet) of the ACK that opens the client's
/// window, made from the backend's first SYN-ACK `syn_ack` (TCP header)
/// once `conn` has its offsets: from the service's port `vip_port` to the
/// client, the gateway's next sequence number, the backend's window in
/// the scale the client reads with, the backend's clock translated. The
/// cookie SYN-ACK offered a window of 0, so the client sends nothing but
/// window probes until this arrives.
pub fn client_window_header(
    conn: &ProxiedConnection,
    syn_ack: &[u8],
    vip_port: u16,
    out: &mut [u8; MAX_HEADER],
) -> usize {
    let client_port = u16_at(syn_ack, 2);
    // A SYN-ACK's window is never scaled: bytes.
    let bytes = u32::from(u16_at(syn_ack, 14));
    let window = (bytes >> conn.client_wscale()).clamp(1, u32::from(u16::MAX)) as u16;
    let mut opts = [0u8; 12];
    let opts: &[u8] = match (conn.options.timestamps, timestamps(syn_ack)) {
        (Some((client_tsval, _)), Some((backend_tsval, _))) => {
            opts[0..4].copy_from_slice(&[OPT_NOP, OPT_NOP, OPT_TIMESTAMP, 10]);
            let ours = backend_tsval.wrapping_add(conn.offset.ts);
            opts[4..8].copy_from_slice(&ours.to_be_bytes());
            opts[8..12].copy_from_slice(&client_tsval.to_be_bytes());
            &opts
        }
        _ => &[],
    };
    header(
        out,
        (vip_port, client_port),
        (conn.cookie.wrapping_add(1), conn.client_isn.wrapping_add(1)),
        ACK,
        window,
        opts,
    )
}

fn header(
    out: &mut [u8; MAX_HEADER],
    (src_port, dst_port): (u16, u16),
    (seq, ack): (u32, u32),
    flags: u8,
    window: u16,
    options: &[u8],
) -> usize {
    let len = (20 + options.len()).min(MAX_HEADER);
    out.fill(0);
    out[0..2].copy_from_slice(&src_port.to_be_bytes());
    out[2..4].copy_from_slice(&dst_port.to_be_bytes());
    out[4..8].copy_from_slice(&seq.to_be_bytes());
    out[8..12].copy_from_slice(&ack.to_be_bytes());
    out[12] = ((len / 4) as u8) << 4;
    out[13] = flags;
    out[14..16].copy_from_slice(&window.to_be_bytes());
    if let Some(dst) = out.get_mut(20..len) {
        dst.copy_from_slice(options.get(..len - 20).unwrap_or(&[]));
    }
    len
}

/// Where a frame's IP and TCP headers are.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    /// Offset of the IP header.
    pub l3: usize,
    /// Offset of the TCP header.
    pub l4: usize,
    /// IPv6 (else IPv4).
    pub v6: bool,
}

/// Makes the frame's TCP segment the header `tcp` alone (no payload; its
/// checksum computed here), with the IP length fields and the IPv4
/// header checksum to match. When `swap` is set the IP addresses are
/// exchanged first (an answer toward the sender) and the TTL is the
/// worker's own.
///
/// The frame's new length is returned; the part of the segment past the
/// end of `frame` (the frame's current length), `tcp[frame.len() - l4..]`,
/// is left for the caller to write there once it has made the frame
/// longer. `None` (nothing changed) if the headers are not all in the
/// frame.
pub fn replace_segment(frame: &mut [u8], at: Layout, tcp: &mut [u8], swap: bool) -> Option<usize> {
    let Layout { l3, l4, v6 } = at;
    if frame.len() < l4 || tcp.len() < 20 {
        return None;
    }
    let new_len = l4 + tcp.len();
    if v6 {
        let ip = frame.get_mut(l3..l3 + 40)?;
        if swap {
            let mut src = [0u8; 16];
            src.copy_from_slice(&ip[8..24]);
            ip.copy_within(24..40, 8);
            ip[24..40].copy_from_slice(&src);
            ip[7] = OWN_TTL;
        }
        let payload = u16::try_from(new_len - (l3 + 40)).ok()?;
        ip[4..6].copy_from_slice(&payload.to_be_bytes());
        let (mut src, mut dst) = ([0u8; 16], [0u8; 16]);
        src.copy_from_slice(&ip[8..24]);
        dst.copy_from_slice(&ip[24..40]);
        tcp[16..18].fill(0);
        let sum = l4_checksum_v6(&src, &dst, 6, tcp);
        tcp[16..18].copy_from_slice(&sum.to_be_bytes());
    } else {
        let ihl = usize::from(frame.get(l3)? & 0x0f) * 4;
        let ip = frame.get_mut(l3..l3 + ihl.max(20))?;
        if swap {
            let mut src = [0u8; 4];
            src.copy_from_slice(&ip[12..16]);
            ip.copy_within(16..20, 12);
            ip[16..20].copy_from_slice(&src);
            ip[8] = OWN_TTL;
        }
        let total = u16::try_from(new_len - l3).ok()?;
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip[10..12].fill(0);
        let check = internet_checksum(ip);
        ip[10..12].copy_from_slice(&check.to_be_bytes());
        let (mut src, mut dst) = ([0u8; 4], [0u8; 4]);
        src.copy_from_slice(&ip[12..16]);
        dst.copy_from_slice(&ip[16..20]);
        tcp[16..18].fill(0);
        let sum = l4_checksum_v4(&src, &dst, 6, tcp);
        tcp[16..18].copy_from_slice(&sum.to_be_bytes());
    }
    let fits = (frame.len() - l4).min(tcp.len());
    frame
        .get_mut(l4..l4 + fits)?
        .copy_from_slice(tcp.get(..fits)?);
    Some(new_len)
}

fn word(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .map_or(0, |w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    b.get(at..at + 2)
        .map_or(0, |w| u16::from_be_bytes([w[0], w[1]]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synproxy::handshake::MARK;

    fn conn(options: HandshakeOptions) -> ProxiedConnection {
        ProxiedConnection {
            client_isn: 1000,
            cookie: 0x5000_0003,
            options,
            client_window: 502,
            answered: false,
            offset: SeqOffset::default(),
        }
    }

    fn full() -> HandshakeOptions {
        HandshakeOptions {
            mss: 1460,
            wscale: Some(9),
            sack: true,
            timestamps: Some((777, 0x1234_5610 | 9)),
        }
    }

    #[test]
    fn what_a_proxied_connection_keeps_is_44_bytes() {
        // docs/operations.md states the side array's cost per record.
        assert_eq!(std::mem::size_of::<ProxiedConnection>(), 44);
    }

    #[test]
    fn the_backend_syn_carries_every_option_the_client_offered() {
        let mut out = [0u8; MAX_HEADER];
        let n = backend_syn_header(&conn(full()), (40000, 80), &mut out);
        assert_eq!(n, 40);
        let h = &out[..n];
        assert_eq!(u16_at(h, 0), 40000);
        assert_eq!(u16_at(h, 2), 80);
        assert_eq!((word(h, 4), word(h, 8), h[13]), (1000, 0, SYN));
        assert_eq!(h[12] & MARK, 0, "never marked");
        assert_eq!(u16_at(h, 14), u16::MAX, "502 << 9 does not fit 16 bits");
        assert_eq!(
            find_option(h, OPT_MSS, 4).map(|at| u16_at(h, at + 2)),
            Some(1460)
        );
        assert!(find_option(h, OPT_SACK_PERM, 2).is_some());
        assert_eq!(timestamps(h), Some((777, 0)));
        assert_eq!(find_option(h, OPT_WSCALE, 3).map(|at| h[at + 2]), Some(9));
    }

    #[test]
    fn without_timestamps_the_syn_has_the_mss_alone() {
        let o = HandshakeOptions {
            mss: 536,
            wscale: None,
            sack: false,
            timestamps: None,
        };
        let mut out = [0u8; MAX_HEADER];
        let n = backend_syn_header(&conn(o), (1, 2), &mut out);
        assert_eq!(n, 24);
        assert_eq!(u16_at(&out, 14), 502);
        assert_eq!(&out[20..24], &[OPT_MSS, 4, 2, 24]);
    }

    #[test]
    fn the_backends_answer_gives_the_offsets_and_the_ack_completes_it() {
        let mut c = conn(full());
        // The backend's SYN-ACK: ISN 77, TSval 5, window scale 7.
        let mut syn_ack = [0u8; 40];
        header(
            &mut syn_ack,
            (8080, 40000),
            (77, 1001),
            SYN | ACK,
            65535,
            &[
                OPT_MSS,
                4,
                5,
                180,
                OPT_NOP,
                OPT_NOP,
                OPT_TIMESTAMP,
                10,
                0,
                0,
                0,
                5,
                0,
                0,
                3,
                9,
                OPT_NOP,
                OPT_WSCALE,
                3,
                7,
            ],
        );
        c.answer(&syn_ack);
        assert!(c.answered);
        assert_eq!(c.offset.seq, 0x5000_0003u32.wrapping_sub(77));
        assert_eq!(c.offset.ts, (0x1234_5610u32 | 9).wrapping_sub(5));
        assert_eq!((c.offset.backend_wscale, c.offset.client_wscale), (7, 7));
        // A second SYN-ACK changes nothing.
        let before = c;
        syn_ack[7] = 99;
        c.answer(&syn_ack);
        assert_eq!(c, before);

        let mut out = [0u8; MAX_HEADER];
        syn_ack[7] = 77;
        let n = backend_ack_header(&c, &syn_ack, &mut out);
        let h = &out[..n];
        assert_eq!((u16_at(h, 0), u16_at(h, 2)), (40000, 8080));
        assert_eq!((word(h, 4), word(h, 8), h[13]), (1001, 78, ACK));
        assert_eq!(u16_at(h, 14), 502);
        assert_eq!(timestamps(h), Some((777, 5)));
    }

    #[test]
    fn a_segment_is_replaced_with_lengths_and_checksums_that_hold() {
        use crate::wire::builder::FrameBuilder;
        let f = FrameBuilder::tcp(
            "198.18.0.2:40000".parse().unwrap(),
            "198.18.100.10:80".parse().unwrap(),
            ACK,
        )
        .payload(b"0123456789abcdef0123")
        .build();
        let mut frame = f.clone();
        let mut tcp = [0u8; MAX_HEADER];
        let n = backend_syn_header(&conn(full()), (40000, 80), &mut tcp);
        let at = Layout {
            l3: 14,
            l4: 34,
            v6: false,
        };
        let len = replace_segment(&mut frame, at, &mut tcp[..n], false).unwrap();
        assert_eq!(len, 34 + 40);
        frame.truncate(len);
        assert!(crate::wire::frame_checksums_ok(&frame));
        let meta = crate::wire::parse(&frame).unwrap();
        assert_eq!(meta.tcp_flags, SYN);

        // Too short for the whole header: what fits is written, the rest
        // is the caller's.
        let short = FrameBuilder::tcp(
            "198.18.0.2:40000".parse().unwrap(),
            "198.18.100.10:80".parse().unwrap(),
            ACK,
        )
        .build();
        let mut frame = short.clone();
        let len = replace_segment(&mut frame, at, &mut tcp[..n], true).unwrap();
        assert_eq!((frame.len(), len), (54, 74));
        frame.extend_from_slice(&tcp[20..n]);
        assert!(crate::wire::frame_checksums_ok(&frame));
        assert_eq!(&frame[26..30], &[198, 18, 100, 10], "swapped");
    }
}
