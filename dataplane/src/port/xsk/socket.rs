//! One AF_XDP socket on one interface queue, as a [`Port`].

use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use xsk_rs::config::{BindFlags, Interface, LibxdpFlags, QueueSize, SocketConfig};
use xsk_rs::{CompQueue, FillQueue, RxQueue, Socket, TxQueue};

use super::error::{classify, os_error_of, Target, XskError};
use super::queues;
use super::settings::{BindMode, XskSettings};
use super::stats::{socket_mode, XskMode, XskPortCounters, XskStats};
use super::umem::{Claim, SharedUmem, UmemCore};
use crate::port::{FrameDesc, FramePool, Port};

/// Descriptors moved per ring operation (the scratch space for them).
const BATCH: usize = 256;

/// The fill ring is topped up only once this many slots are free, so
/// that each top-up is one batch rather than a frame at a time.
const REFILL_BATCH: usize = 32;

/// Most transmit wakeups per flush. In copy mode each `sendto` sends at
/// most the kernel's transmit budget (32 frames), so a burst needs a few.
const MAX_TX_KICKS: usize = 8;

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
    name: String,
    ifname: String,
    queue: u32,
    mode: XskMode,
    need_wakeup: bool,
    core: Arc<UmemCore>,
    rx: RxQueue,
    tx: TxQueue,
    fill: FillQueue,
    comp: CompQueue,
    tx_ring: usize,
    fill_ring: usize,
    /// Descriptors for the ring operations.
    scratch: Vec<xsk_rs::FrameDesc>,
    /// Frames on the fill ring or the receive ring.
    in_fill: usize,
    /// Frames on the transmit ring or the completion ring.
    in_tx: usize,
    /// Frames refused by `transmit`, back to the pool at `reclaim`.
    rejected: Vec<u64>,
    counters: XskPortCounters,
    /// Last, so it drops after the rings (which delete the socket).
    _claim: Claim,
}

impl std::fmt::Debug for XskPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XskPort")
            .field("name", &self.name)
            .field("mode", &self.mode)
            .field("need_wakeup", &self.need_wakeup)
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
        let no_such_interface = || XskError::NoSuchInterface {
            ifname: ifname.to_string(),
        };
        if !queues::plausible_name(ifname) {
            return Err(no_such_interface());
        }
        let iface: Interface = ifname.parse().map_err(|_| no_such_interface())?;
        let queue_count = match queues::queue_count(ifname) {
            Ok(count) => count,
            Err(e) if e.raw_os_error() == Some(nix::libc::ENODEV) => {
                return Err(no_such_interface())
            }
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

        // Held across the bind: opens on one UMEM are serialised, so the
        // checks below still hold when libxdp runs.
        let mut registry = umem.lock_registry();
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
        match (settings.bind_mode, mode) {
            (BindMode::ZeroCopy, XskMode::Copy) => {
                return Err(XskError::ZeroCopyUnsupported {
                    ifname: ifname.to_string(),
                    queue,
                    reason: "the shared UMEM runs in copy mode (its first socket chose)".into(),
                })
            }
            (BindMode::Copy, XskMode::ZeroCopy) => {
                return Err(XskError::ModeConflict {
                    ifname: ifname.to_string(),
                    queue,
                })
            }
            _ => {}
        }
        let claim = registry.claim(ifname, queue, umem.registry());
        drop(registry);

        tracing::info!(
            interface = ifname,
            queue,
            mode = %mode,
            need_wakeup,
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
            fill_ring: umem.core().fill_ring(),
            scratch: vec![xsk_rs::FrameDesc::default(); BATCH],
            in_fill: 0,
            in_tx: 0,
            rejected: Vec::with_capacity(BATCH),
            counters: XskPortCounters::default(),
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
        self.tx
            .fd()
            .xdp_statistics()
            .map(XskStats::from)
            .map_err(|e| classify(target, "reading XDP_STATISTICS", e, false, None))
    }

    /// What the port itself counted.
    pub fn counters(&self) -> XskPortCounters {
        self.counters
    }

    /// Frames the port holds: given to the kernel (on the fill, receive,
    /// transmit or completion ring) or refused for sending and waiting
    /// for `reclaim`. With every pool and every frame a worker holds,
    /// this accounts for all of the UMEM's frames.
    pub fn frames_outstanding(&self) -> usize {
        self.in_fill + self.in_tx + self.rejected.len()
    }

    /// Frames on the transmit ring that the kernel has not taken yet.
    fn tx_pending(&mut self) -> usize {
        self.tx_ring
            .saturating_sub(self.tx.nb_free_exact() as usize)
    }

    /// Wakes the kernel to send what is on the transmit ring, as often as
    /// it asks (a few times in copy mode, where each call sends a budget).
    fn kick_tx(&mut self) {
        if self.in_tx == 0 {
            return;
        }
        for _ in 0..MAX_TX_KICKS {
            let pending = self.tx_pending();
            if pending == 0 || (self.need_wakeup && !self.tx.needs_wakeup()) {
                return;
            }
            self.counters.tx_wakeups += 1;
            if self.tx.wakeup().is_err() {
                self.counters.wakeup_errors += 1;
                return;
            }
            // Zero-copy sends asynchronously: one wakeup is all it takes.
            // Copy mode sends during the call: go on while that helps.
            if self.mode == XskMode::ZeroCopy || self.tx_pending() >= pending {
                return;
            }
        }
    }

    /// Sets aside a frame `transmit` cannot send, for `reclaim`.
    fn reject(&mut self, desc: FrameDesc) {
        self.counters.tx_rejected += 1;
        match self.core.layout().canonical(desc.addr) {
            Some(addr) => self.rejected.push(addr),
            None => self.counters.foreign_addrs += 1,
        }
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

impl Port for XskPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn receive(&mut self, out: &mut Vec<FrameDesc>, max: usize) -> usize {
        let mut total = 0;
        while total < max {
            let want = (max - total).min(self.scratch.len());
            let Some(batch) = self.scratch.get_mut(..want) else {
                break;
            };
            // SAFETY: the receive ring only ever holds frames of this
            // port's UMEM (the fill ring is fed only from its descriptors);
            // `batch` is scratch space the call overwrites.
            let got = unsafe { self.rx.consume(batch) };
            out.extend(self.scratch.iter().take(got).map(|d| FrameDesc {
                addr: d.addr() as u64,
                len: d.lengths().data() as u32,
            }));
            total += got;
            if got < want {
                break;
            }
        }
        self.in_fill = self.in_fill.saturating_sub(total);
        if total == 0 && self.fill.needs_wakeup() {
            // The driver sleeps until asked to look at the fill ring.
            self.counters.rx_wakeups += 1;
            if self.fill.wakeup(self.rx.fd_mut(), 0).is_err() {
                self.counters.wakeup_errors += 1;
            }
        }
        total
    }

    fn transmit(&mut self, frames: &[FrameDesc]) -> usize {
        let mut accepted = 0;
        let mut kicked = false;
        while accepted < frames.len() {
            let free = self.tx.nb_free(BATCH as u32) as usize;
            if free == 0 && !kicked {
                // A full ring drains only when the kernel is woken (always
                // so in copy mode): ask once before refusing frames.
                kicked = true;
                self.kick_tx();
                continue;
            }
            let chunk = (frames.len() - accepted).min(free).min(self.scratch.len());
            let Some(batch) = frames.get(accepted..accepted + chunk) else {
                break;
            };
            if batch.is_empty() {
                break;
            }
            let mut ready = 0;
            for &desc in batch {
                match (self.core.tx_desc(desc), self.scratch.get_mut(ready)) {
                    (Some(tx), Some(slot)) => {
                        *slot = tx;
                        ready += 1;
                    }
                    _ => self.reject(desc),
                }
            }
            // SAFETY: each descriptor was made by `tx_desc` from this UMEM's
            // own, so it names a frame of the UMEM the ring belongs to. The
            // caller handed these frames over (descriptor ownership): nothing
            // touches them until the completion ring gives them back.
            let sent = unsafe { self.tx.produce(self.scratch.get(..ready).unwrap_or(&[])) };
            // The ring had room for all of them, so this sends all of them;
            // were it not so, the rest would be refused, not lost.
            for i in sent..ready {
                if let Some(unsent) = self.scratch.get(i).copied() {
                    self.reject(FrameDesc {
                        addr: unsent.addr() as u64,
                        len: 0,
                    });
                }
            }
            self.in_tx += sent;
            accepted += batch.len();
        }
        accepted
    }

    fn reclaim(&mut self, pool: &mut FramePool) -> usize {
        let mut reclaimed = 0;
        loop {
            let room = pool.capacity().saturating_sub(pool.len());
            let want = room.min(self.scratch.len());
            let Some(batch) = self.scratch.get_mut(..want) else {
                break;
            };
            if batch.is_empty() {
                break;
            }
            // SAFETY: the completion ring only ever holds frames of this
            // port's UMEM (sent from its descriptors); `batch` is scratch
            // space the call overwrites.
            let got = unsafe { self.comp.consume(batch) };
            for d in self.scratch.iter().take(got) {
                match self.core.layout().canonical(d.addr() as u64) {
                    Some(addr) if pool.put(addr) => {}
                    // Cannot happen (room was checked); keep it counted.
                    Some(addr) => self.rejected.push(addr),
                    None => self.counters.foreign_addrs += 1,
                }
            }
            self.in_tx = self.in_tx.saturating_sub(got);
            reclaimed += got;
            if got < want {
                break;
            }
        }
        while let Some(&addr) = self.rejected.last() {
            if !pool.put(addr) {
                break;
            }
            self.rejected.pop();
            reclaimed += 1;
        }
        // Copy mode sends a budget per wakeup: see the rest of a burst
        // out even if nothing new is transmitted.
        self.kick_tx();
        reclaimed
    }

    fn refill(&mut self, pool: &mut FramePool) -> usize {
        let mut free = self.fill.nb_free(self.fill_ring as u32) as usize;
        if free < REFILL_BATCH.min(self.fill_ring) {
            return 0;
        }
        let mut filled = 0;
        while free > 0 {
            let want = free.min(self.scratch.len());
            let mut ready = 0;
            while ready < want {
                let Some(addr) = pool.take() else { break };
                match (self.core.fill_desc(addr), self.scratch.get_mut(ready)) {
                    (Some(desc), Some(slot)) => {
                        *slot = desc;
                        ready += 1;
                    }
                    _ => self.counters.foreign_addrs += 1,
                }
            }
            let to_fill = self.scratch.get(..ready).unwrap_or(&[]);
            // SAFETY: each descriptor is this UMEM's own (from
            // `fill_desc`), for a frame just taken from the pool, which
            // means no one else holds it: the kernel may write it now.
            let put = unsafe { self.fill.produce(to_fill) };
            for d in to_fill.iter().skip(put) {
                // The ring had room, so this does not happen; if it did,
                // the frames go back where they came from.
                pool.put(d.addr() as u64);
            }
            self.in_fill += put;
            filled += put;
            free = free.saturating_sub(put);
            if ready < want || put < ready {
                break;
            }
        }
        filled
    }

    fn flush(&mut self) {
        self.kick_tx();
    }
}
