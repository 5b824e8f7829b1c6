//! One AF_XDP socket on one interface queue, as a [`Port`].

use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::Arc;

use xsk_rs::config::{BindFlags, Interface, LibxdpFlags, QueueSize, SocketConfig};
use xsk_rs::{CompQueue, FillQueue, RxQueue, Socket, TxQueue};

use super::error::{classify, os_error_of, Target, XskError};
use super::queues;
use super::rings::BATCH;
use super::settings::{BindMode, XskSettings};
use super::stats::{
    socket_mode, socket_statistics, PortTallies, ReaderFd, XskMode, XskPortCounters, XskStats,
    XskStatsReader,
};
use super::umem::{Claim, Registry, SharedUmem, UmemCore};

/// An AF_XDP socket bound to one (interface, queue) on the shared UMEM.
///
/// It has its own receive and transmit rings and, as the kernel requires
/// of every (interface, queue) on a shared UMEM, its own fill and
/// completion rings. Rings are worked in batches; system calls are made
/// only when the kernel flags it needs a wakeup (or always, for transmit,
/// when wakeups are not in use).
///
/// Frame accounting: every frame of the UMEM is, at any moment, in some
/// worker's pool, held by some worker between receiving and sending it,
/// or held by a port ([`frames_outstanding`](Self::frames_outstanding)).
pub struct XskPort {
    pub(super) name: String,
    pub(super) ifname: String,
    pub(super) queue: u32,
    pub(super) mode: XskMode,
    pub(super) need_wakeup: bool,
    pub(super) core: Arc<UmemCore>,
    pub(super) rx: RxQueue,
    pub(super) tx: TxQueue,
    pub(super) fill: FillQueue,
    pub(super) comp: CompQueue,
    pub(super) tx_ring: usize,
    /// Frames the kernel sends per transmit wakeup in copy mode: the
    /// whole transmit ring where the kernel lets us say so
    /// (`XDP_MAX_TX_SKB_BUDGET`), else its default of 32.
    pub(super) tx_budget: usize,
    pub(super) fill_ring: usize,
    /// Descriptors for the ring operations.
    pub(super) scratch: Vec<xsk_rs::FrameDesc>,
    /// Frames on the fill ring or the receive ring.
    pub(super) in_fill: usize,
    /// Frames on the transmit ring or the completion ring.
    pub(super) in_tx: usize,
    /// Frames refused by `transmit`, back to the pool at `reclaim`.
    pub(super) rejected: Vec<crate::port::Frame>,
    /// Its own counters, which [`XskStatsReader`]s read from other threads.
    pub(super) counters: Arc<PortTallies>,
    /// The descriptors of its [`XskStatsReader`]s.
    readers: std::sync::Mutex<Vec<Arc<ReaderFd>>>,
    /// Last, so it drops after the rings (which delete the socket).
    _claim: Claim,
}

impl std::fmt::Debug for XskPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XskPort")
            .field("name", &self.name)
            .field("mode", &self.mode)
            .field("need_wakeup", &self.need_wakeup)
            .field("tx_budget", &self.tx_budget)
            .field("fd", &self.as_raw_fd())
            .field("outstanding", &self.frames_outstanding())
            .finish_non_exhaustive()
    }
}

impl XskPort {
    /// Opens an AF_XDP socket on `ifname`'s queue `queue`, bound to
    /// `umem`, from the calling thread's network namespace.
    ///
    /// libxdp's own XDP program is not attached unless
    /// `settings.libxdp_default_program` is set: the gateway attaches its
    /// program and puts [`as_raw_fd`](AsRawFd::as_raw_fd) into its XSKMAP.
    ///
    /// The UMEM's first socket fixes the mode (`settings.bind_mode`:
    /// `Auto` lets the kernel try zero-copy and fall back to copy) and
    /// whether wakeups are flagged (`settings.need_wakeup`); the kernel
    /// gives every later socket the same. Asking a later socket for a mode
    /// the UMEM does not run in is an error. A UMEM has one socket per
    /// (interface, queue), and once all its sockets are closed it takes
    /// no new ones.
    pub fn open(
        umem: &SharedUmem,
        ifname: &str,
        queue: u32,
        settings: &XskSettings,
    ) -> Result<XskPort, XskError> {
        settings.validate()?;
        let target = Target::Queue { ifname, queue };
        let (iface, queue_count) = interface_queue(ifname, queue)?;

        // Held across the bind: opens on one UMEM are serialised, so the
        // checks below still hold when libxdp runs.
        let mut registry = umem.lock_registry();
        check_free(&registry, ifname, queue)?;
        let first = registry.need_wakeup().is_none();
        let config = socket_config(settings, first)?;
        let zero_copy_forced = settings.bind_mode == BindMode::ZeroCopy;

        // SAFETY: xsk-rs requires the INHIBIT_PROG_LOAD flag only when
        // binding a UMEM to an (interface, queue) it is already bound to.
        // The registry, locked across this call, shows this UMEM has no
        // socket on the pair, so libxdp makes a new context for it with
        // fresh fill and completion rings.
        let created = unsafe { Socket::new(config, umem.core().umem(), &iface, queue) };
        let (tx, rx, rings) = created.map_err(|e| {
            classify(
                target,
                "creating the socket",
                os_error_of(&e),
                zero_copy_forced,
                queue_count,
            )
        })?;
        let need_wakeup = registry.need_wakeup().unwrap_or(settings.need_wakeup);
        registry.note_bound(need_wakeup);
        let Some((fill, comp)) = rings else {
            return Err(XskError::Os {
                target: format!("{ifname} queue {queue}"),
                doing: "creating the socket",
                source: std::io::Error::other("libxdp shared another socket's fill ring"),
            });
        };

        let mode = socket_mode(tx.fd().as_raw_fd())
            .map_err(|e| classify(target, "reading the socket's mode", e, false, None))?;
        check_mode(settings.bind_mode, mode, ifname, queue)?;
        let claim = registry.claim(ifname, queue, umem.registry());
        drop(registry);
        let tx_budget = match mode {
            XskMode::Copy => raise_tx_budget(tx.fd().as_raw_fd(), settings.tx_ring),
            XskMode::ZeroCopy => settings.tx_ring,
        };

        tracing::info!(
            interface = ifname,
            queue,
            mode = %mode,
            need_wakeup,
            tx_budget,
            libxdp_program = settings.libxdp_default_program,
            first_on_umem = first,
            "AF_XDP socket open"
        );
        Ok(XskPort {
            name: format!("{ifname}/q{queue}"),
            ifname: ifname.to_string(),
            queue,
            mode,
            need_wakeup,
            core: Arc::clone(umem.core()),
            rx,
            tx,
            fill,
            comp,
            tx_ring: settings.tx_ring as usize,
            tx_budget: tx_budget as usize,
            fill_ring: umem.core().fill_ring(),
            scratch: vec![xsk_rs::FrameDesc::default(); BATCH],
            in_fill: 0,
            in_tx: 0,
            rejected: Vec::with_capacity(BATCH),
            counters: Arc::default(),
            readers: std::sync::Mutex::default(),
            _claim: claim,
        })
    }

    /// Zero-copy or copy, as the kernel bound the socket.
    pub fn mode(&self) -> XskMode {
        self.mode
    }

    /// Whether the kernel flags when it needs a wakeup (else transmit
    /// always makes a system call).
    pub fn need_wakeup(&self) -> bool {
        self.need_wakeup
    }

    /// The interface.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The queue.
    pub fn queue(&self) -> u32 {
        self.queue
    }

    /// The kernel's counters for this socket.
    pub fn statistics(&self) -> Result<XskStats, XskError> {
        let target = Target::Queue {
            ifname: &self.ifname,
            queue: self.queue,
        };
        socket_statistics(self.as_raw_fd())
            .map_err(|e| classify(target, "reading XDP_STATISTICS", e, false, None))
    }

    /// What the port itself counted.
    pub fn counters(&self) -> XskPortCounters {
        self.counters.values()
    }

    /// A reader of this socket's statistics for another thread (the
    /// control side), so the worker running the port never reads them. It
    /// holds a duplicate of the socket's descriptor.
    pub fn stats_reader(&self) -> Result<XskStatsReader, XskError> {
        // SAFETY: the descriptor is the socket's, open while `self` lives,
        // which outlasts this borrow (it is only duplicated).
        let fd = unsafe { BorrowedFd::borrow_raw(self.as_raw_fd()) };
        let fd = fd.try_clone_to_owned().map_err(|e| {
            let target = Target::Queue {
                ifname: &self.ifname,
                queue: self.queue,
            };
            classify(
                target,
                "duplicating the socket's descriptor",
                e,
                false,
                None,
            )
        })?;
        let fd = Arc::new(ReaderFd::new(fd));
        self.readers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Arc::clone(&fd));
        Ok(XskStatsReader::new(
            fd,
            Arc::clone(&self.counters),
            &self.ifname,
            self.queue,
        ))
    }

    /// Closes the descriptors of this port's statistics readers (they read
    /// no kernel statistics from here on), so that closing the port closes
    /// the socket and frees its queue at once, for another process's socket
    /// (a takeover).
    pub fn close_stats_readers(&self) {
        let readers = std::mem::take(
            &mut *self
                .readers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for fd in readers {
            fd.close();
        }
    }

    /// Frames the port holds: given to the kernel (on the fill, receive,
    /// transmit or completion ring) or refused for sending and waiting
    /// for `reclaim`. With every pool and every frame a worker holds,
    /// this accounts for all of the UMEM's frames.
    pub fn frames_outstanding(&self) -> usize {
        self.in_fill + self.in_tx + self.rejected.len()
    }
}

/// The kernel's transmit budget per wakeup in copy mode when it is not
/// told otherwise.
const DEFAULT_TX_BUDGET: u32 = 32;

/// `SOL_XDP` option (Linux 6.17) setting how many frames one wakeup sends
/// in copy mode, from 32 up to the transmit ring's size.
const XDP_MAX_TX_SKB_BUDGET: nix::libc::c_int = 9;

/// Lets one transmit wakeup of the copy-mode socket `fd` send up to its
/// whole transmit ring (`tx_ring` frames) instead of 32: a burst then
/// goes out in one `sendto`, not one per 32 frames. Returns the budget in
/// force: `tx_ring`, or 32 on a kernel without the option.
fn raise_tx_budget(fd: RawFd, tx_ring: u32) -> u32 {
    let budget: u32 = tx_ring.max(DEFAULT_TX_BUDGET);
    // SAFETY: `fd` is the socket's open descriptor; the option value is a
    // u32 on the stack, its size passed alongside; the kernel only reads it.
    let done = unsafe {
        nix::libc::setsockopt(
            fd,
            nix::libc::SOL_XDP,
            XDP_MAX_TX_SKB_BUDGET,
            std::ptr::from_ref(&budget).cast(),
            std::mem::size_of::<u32>() as nix::libc::socklen_t,
        )
    };
    if done == 0 {
        budget
    } else {
        tracing::debug!(
            error = %std::io::Error::last_os_error(),
            "the kernel keeps its transmit budget of 32 frames per wakeup"
        );
        DEFAULT_TX_BUDGET
    }
}

/// The xsk-rs socket configuration for `settings`. Bind flags matter only
/// for the UMEM's first socket: libxdp binds later ones as shared, and
/// the kernel gives them the first one's mode and wakeup setting.
fn socket_config(settings: &XskSettings, first: bool) -> Result<SocketConfig, XskError> {
    let ring = |size: u32| {
        QueueSize::new(size).map_err(|e| XskError::BadSettings {
            reason: e.to_string(),
        })
    };
    let mut bind = BindFlags::empty();
    if first {
        match settings.bind_mode {
            BindMode::Auto => {}
            BindMode::ZeroCopy => bind |= BindFlags::XDP_ZEROCOPY,
            BindMode::Copy => bind |= BindFlags::XDP_COPY,
        }
        if settings.need_wakeup {
            bind |= BindFlags::XDP_USE_NEED_WAKEUP;
        }
    }
    let libxdp = if settings.libxdp_default_program {
        LibxdpFlags::empty()
    } else {
        LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD
    };
    Ok(SocketConfig::builder()
        .rx_queue_size(ring(settings.rx_ring)?)
        .tx_queue_size(ring(settings.tx_ring)?)
        .libxdp_flags(libxdp)
        .bind_flags(bind)
        .build())
}

impl AsRawFd for XskPort {
    /// The socket's descriptor, for the gateway's XSKMAP.
    fn as_raw_fd(&self) -> RawFd {
        self.tx.fd().as_raw_fd()
    }
}

/// The interface `ifname`, and how many queues it has if the kernel says:
/// an error if it does not exist or has no queue `queue`.
fn interface_queue(ifname: &str, queue: u32) -> Result<(Interface, Option<u32>), XskError> {
    let no_such_interface = || XskError::NoSuchInterface {
        ifname: ifname.to_string(),
    };
    if !queues::plausible_name(ifname) {
        return Err(no_such_interface());
    }
    let iface: Interface = ifname.parse().map_err(|_| no_such_interface())?;
    let queue_count = match queues::queue_count(ifname) {
        Ok(count) => count,
        Err(e) if e.raw_os_error() == Some(nix::libc::ENODEV) => return Err(no_such_interface()),
        // Not knowing is fine: the bind decides.
        Err(_) => None,
    };
    if let Some(available) = queue_count.filter(|&n| queue >= n) {
        return Err(XskError::NoSuchQueue {
            ifname: ifname.to_string(),
            queue,
            available,
        });
    }
    Ok((iface, queue_count))
}

/// The UMEM can take a socket on (`ifname`, `queue`): it has none there
/// and has not been retired.
fn check_free(registry: &Registry, ifname: &str, queue: u32) -> Result<(), XskError> {
    if registry.is_bound(ifname, queue) {
        return Err(XskError::AlreadyOpen {
            ifname: ifname.to_string(),
            queue,
        });
    }
    if registry.is_retired() {
        return Err(XskError::UmemRetired {
            ifname: ifname.to_string(),
            queue,
        });
    }
    Ok(())
}

/// The mode the kernel bound the socket in is one the settings allow.
fn check_mode(asked: BindMode, got: XskMode, ifname: &str, queue: u32) -> Result<(), XskError> {
    match (asked, got) {
        (BindMode::ZeroCopy, XskMode::Copy) => Err(XskError::ZeroCopyUnsupported {
            ifname: ifname.to_string(),
            queue,
            reason: "the shared UMEM runs in copy mode (its first socket chose)".into(),
        }),
        (BindMode::Copy, XskMode::ZeroCopy) => Err(XskError::ModeConflict {
            ifname: ifname.to_string(),
            queue,
        }),
        _ => Ok(()),
    }
}
