//! What an AF_XDP socket reports: its mode, the kernel's statistics, and
//! the port's own counters.

use std::fmt;
use std::io;
use std::os::fd::RawFd;

use nix::libc;
use xsk_rs::socket::XdpStatistics;

/// How the kernel moves a socket's packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XskMode {
    /// The driver receives into and sends from the UMEM directly.
    ZeroCopy,
    /// The kernel copies packets between its buffers and the UMEM.
    Copy,
}

impl fmt::Display for XskMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            XskMode::ZeroCopy => "zero-copy",
            XskMode::Copy => "copy",
        })
    }
}

/// The kernel's counters for one socket (`XDP_STATISTICS`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XskStats {
    /// Packets dropped for reasons other than the ones below (e.g. no
    /// free frame, or larger than a frame).
    pub rx_dropped: u64,
    /// Fill ring entries the kernel found invalid.
    pub rx_invalid_descs: u64,
    /// Transmit ring entries the kernel found invalid.
    pub tx_invalid_descs: u64,
    /// Packets dropped because the receive ring was full.
    pub rx_ring_full: u64,
    /// Times the kernel found the fill ring empty.
    pub fill_ring_empty: u64,
    /// Times the kernel found the transmit ring empty.
    pub tx_ring_empty: u64,
}

impl From<XdpStatistics> for XskStats {
    fn from(s: XdpStatistics) -> Self {
        XskStats {
            rx_dropped: s.rx_dropped(),
            rx_invalid_descs: s.rx_invalid_descs(),
            tx_invalid_descs: s.tx_invalid_descs(),
            rx_ring_full: s.rx_ring_full(),
            fill_ring_empty: s.rx_fill_ring_empty_descs(),
            tx_ring_empty: s.tx_ring_empty_descs(),
        }
    }
}

/// What the port itself counted (it is single-threaded: plain counters).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XskPortCounters {
    /// Frames handed to `transmit` that could not be sent: empty, in
    /// the headroom, straddling frames or outside the UMEM. Those inside
    /// the UMEM go back to the pool at the next `reclaim`.
    pub tx_rejected: u64,
    /// Addresses found in a pool or on a ring that are not frames of
    /// this UMEM (a bug elsewhere); they were dropped, not used.
    pub foreign_addrs: u64,
    /// Transmit wakeups made (`sendto`), each because the ring asked.
    pub tx_wakeups: u64,
    /// Receive wakeups made (`poll`), each because the fill ring asked.
    pub rx_wakeups: u64,
    /// Wakeups the kernel answered with an error.
    pub wakeup_errors: u64,
}

/// Asks the kernel which mode a bound socket runs in (`XDP_OPTIONS`).
pub(super) fn socket_mode(fd: RawFd) -> io::Result<XskMode> {
    let mut options = libc::xdp_options { flags: 0 };
    let mut len = std::mem::size_of::<libc::xdp_options>() as libc::socklen_t;
    // SAFETY: `fd` is a live AF_XDP socket the caller owns; the kernel
    // writes at most `len` bytes to `options`, which is that size, alive
    // and exclusively borrowed for the call, and updates `len`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_XDP,
            libc::XDP_OPTIONS,
            (&mut options as *mut libc::xdp_options).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(if options.flags & libc::XDP_OPTIONS_ZEROCOPY != 0 {
        XskMode::ZeroCopy
    } else {
        XskMode::Copy
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_read_as_operators_write_them() {
        assert_eq!(XskMode::ZeroCopy.to_string(), "zero-copy");
        assert_eq!(XskMode::Copy.to_string(), "copy");
    }

    #[test]
    fn mode_of_a_bad_descriptor_is_an_error() {
        // No descriptor at all: the kernel refuses, and the error comes
        // back instead of a guessed mode.
        let err = socket_mode(-1).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF));
    }
}
