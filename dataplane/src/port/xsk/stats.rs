//! What an AF_XDP socket reports: its mode, the kernel's statistics, and
//! the port's own counters — and [`XskStatsReader`], which reads the last
//! two from another thread than the worker's.

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use nix::libc;

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

/// What the port itself counted, at one moment.
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

/// A counter with one writer (the port's worker) and any number of
/// readers: a plain load and store, no locked instruction.
#[derive(Debug, Default)]
pub(super) struct Tally(AtomicU64);

impl Tally {
    /// Adds 1. Only the port's own thread may call this.
    #[inline]
    pub(super) fn inc(&self) {
        self.0.store(self.0.load(Relaxed).wrapping_add(1), Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// The port's own counters as it writes them, shared with readers.
#[derive(Debug, Default)]
#[repr(align(64))]
pub(super) struct PortTallies {
    pub(super) tx_rejected: Tally,
    pub(super) foreign_addrs: Tally,
    pub(super) tx_wakeups: Tally,
    pub(super) rx_wakeups: Tally,
    pub(super) wakeup_errors: Tally,
}

impl PortTallies {
    /// Their values now.
    pub(super) fn values(&self) -> XskPortCounters {
        XskPortCounters {
            tx_rejected: self.tx_rejected.get(),
            foreign_addrs: self.foreign_addrs.get(),
            tx_wakeups: self.tx_wakeups.get(),
            rx_wakeups: self.rx_wakeups.get(),
            wakeup_errors: self.wakeup_errors.get(),
        }
    }
}

/// Reads a socket's statistics from any thread, so the worker that runs
/// the socket never stops to: the kernel's `XDP_STATISTICS` through a
/// descriptor of its own (a duplicate of the socket's), and the port's own
/// counters, which the port keeps as single-writer atomics.
///
/// The duplicate keeps the kernel's socket open until the reader is
/// dropped, even after the port is closed, unless the port's owner closes
/// its readers' descriptors first ([`super::XskPort::close_stats_readers`]:
/// the kernel frees the socket's queue only once every descriptor of the
/// socket is closed); it is never mistaken for another file, as a copy of
/// the descriptor's number could be.
#[derive(Debug)]
pub struct XskStatsReader {
    fd: Arc<ReaderFd>,
    tallies: Arc<PortTallies>,
    ifname: String,
    queue: u32,
}

/// The descriptor a port's statistics readers share, until the port's
/// owner closes it.
#[derive(Debug, Default)]
pub(super) struct ReaderFd(std::sync::RwLock<Option<OwnedFd>>);

impl ReaderFd {
    pub(super) fn new(fd: OwnedFd) -> ReaderFd {
        ReaderFd(std::sync::RwLock::new(Some(fd)))
    }

    /// Closes the descriptor: its readers read no more kernel statistics.
    pub(super) fn close(&self) {
        let fd = self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        drop(fd);
    }
}

impl XskStatsReader {
    pub(super) fn new(
        fd: Arc<ReaderFd>,
        tallies: Arc<PortTallies>,
        ifname: &str,
        queue: u32,
    ) -> XskStatsReader {
        XskStatsReader {
            fd,
            tallies,
            ifname: ifname.to_owned(),
            queue,
        }
    }

    /// The kernel's counters for the socket now (one `getsockopt`, made by
    /// the calling thread); an error once the readers' descriptor was
    /// closed.
    pub fn kernel(&self) -> io::Result<XskStats> {
        let fd = self
            .fd
            .0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match fd.as_ref() {
            Some(fd) => socket_statistics(fd.as_raw_fd()),
            None => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the socket's statistics readers were closed",
            )),
        }
    }

    /// The port's own counters now.
    pub fn port(&self) -> XskPortCounters {
        self.tallies.values()
    }

    /// The socket's interface.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The socket's queue.
    pub fn queue(&self) -> u32 {
        self.queue
    }
}

/// Asks the kernel for a socket's counters (`XDP_STATISTICS`). A kernel
/// older than 5.9 fills only the first three; the others read 0.
pub(super) fn socket_statistics(fd: RawFd) -> io::Result<XskStats> {
    // SAFETY: all-zero bytes are a valid `xdp_statistics` (plain integers).
    let mut s: libc::xdp_statistics = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::xdp_statistics>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes to `s`, which is that
    // size, alive and exclusively borrowed for the call, and updates `len`;
    // a descriptor that is not an AF_XDP socket is refused with an error.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_XDP,
            libc::XDP_STATISTICS,
            (&mut s as *mut libc::xdp_statistics).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(XskStats {
        rx_dropped: s.rx_dropped,
        rx_invalid_descs: s.rx_invalid_descs,
        tx_invalid_descs: s.tx_invalid_descs,
        rx_ring_full: s.rx_ring_full,
        fill_ring_empty: s.rx_fill_ring_empty_descs,
        tx_ring_empty: s.tx_ring_empty_descs,
    })
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
    fn statistics_of_a_descriptor_that_is_no_xdp_socket_are_an_error() {
        let err = socket_statistics(-1).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF));
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(socket_statistics(socket.as_raw_fd()).is_err());
    }

    #[test]
    fn tallies_count_and_read_back() {
        let t = PortTallies::default();
        t.tx_wakeups.inc();
        t.tx_wakeups.inc();
        t.foreign_addrs.inc();
        let v = t.values();
        assert_eq!((v.tx_wakeups, v.foreign_addrs, v.rx_wakeups), (2, 1, 0));
    }

    #[test]
    fn mode_of_a_bad_descriptor_is_an_error() {
        // No descriptor at all: the kernel refuses, and the error comes
        // back instead of a guessed mode.
        let err = socket_mode(-1).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF));
    }
}
