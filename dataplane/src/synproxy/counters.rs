//! The SYN proxy's counters as the XDP programs keep them: plain data,
//! so that the metrics read them whatever the build's features.

/// What the SYN proxy's XDP half did, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SynProxyCounters {
    /// SYNs answered with a cookie SYN-ACK.
    pub cookies_sent: u64,
    /// ACKs whose cookie was valid: sent up to a worker, marked.
    pub cookies_valid: u64,
    /// ACKs (and other segments) with no valid cookie and no connection,
    /// to an `on` service: dropped.
    pub cookies_invalid: u64,
    /// SYNs refused: with FIN, RST or ACK, IPv4 options or IPv6
    /// extension headers, or headers the cookie could not be made from.
    pub syn_refused: u64,
    /// Frames that came in carrying the cookie-valid mark: dropped.
    pub mark_forged: u64,
    /// Segments with no valid cookie to an `auto` service: up to the
    /// worker unmarked (a connection made while the proxy was off).
    pub ack_unchecked: u64,
    /// Zero-window probes that stood for a lost handshake ACK (their
    /// cookie valid one sequence number back): sent up as that ACK, and
    /// counted in `cookies_valid` too.
    pub probes_valid: u64,
}

impl SynProxyCounters {
    /// The sum of two programs' counters.
    pub fn plus(self, o: SynProxyCounters) -> SynProxyCounters {
        SynProxyCounters {
            cookies_sent: self.cookies_sent + o.cookies_sent,
            cookies_valid: self.cookies_valid + o.cookies_valid,
            cookies_invalid: self.cookies_invalid + o.cookies_invalid,
            syn_refused: self.syn_refused + o.syn_refused,
            mark_forged: self.mark_forged + o.mark_forged,
            ack_unchecked: self.ack_unchecked + o.ack_unchecked,
            probes_valid: self.probes_valid + o.probes_valid,
        }
    }
}
