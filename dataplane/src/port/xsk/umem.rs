//! The one UMEM all of the gateway's sockets share, and the handles
//! workers read and write frames through.

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use xsk_rs::config::{FrameSize, QueueSize, UmemConfig};
use xsk_rs::umem::Umem;

use super::error::{classify, os_error_of, Target, XskError};
use super::layout::FrameLayout;
use super::settings::XskSettings;
use crate::port::{Frame, FrameDesc, FrameMemory, FramePool, MemoryId};

/// Huge pages are tried only for a UMEM that is a whole number of them,
/// so that unmapping it later cannot fail.
const HUGE_PAGE: u64 = 2 << 20;

/// The UMEM and what every user of it shares.
pub(super) struct UmemCore {
    umem: Umem,
    layout: FrameLayout,
    /// The id every frame of this UMEM carries: a frame of another
    /// memory is not one of ours, whatever its address.
    id: MemoryId,
    /// One xsk-rs descriptor per frame, at the frame's packet address,
    /// its length set to the frame's whole room. xsk-rs makes these only
    /// in `Umem::new`, so frames are named to it by copying them.
    templates: Box<[xsk_rs::FrameDesc]>,
    /// Entries of each fill ring (one per interface queue).
    fill_ring: usize,
    huge_pages: bool,
}

impl fmt::Debug for UmemCore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UmemCore")
            .field("layout", &self.layout)
            .field("huge_pages", &self.huge_pages)
            .finish_non_exhaustive()
    }
}

impl UmemCore {
    /// The xsk-rs UMEM, for binding sockets to it.
    pub(super) fn umem(&self) -> &Umem {
        &self.umem
    }

    /// Where the frames lie.
    pub(super) fn layout(&self) -> &FrameLayout {
        &self.layout
    }

    /// Entries of each fill ring.
    pub(super) fn fill_ring(&self) -> usize {
        self.fill_ring
    }

    /// The id of this UMEM's frames.
    pub(super) fn id(&self) -> MemoryId {
        self.id
    }

    /// The frame (index) and offset in its room of `frame`'s bytes, if
    /// it is a frame of this UMEM and they lie inside its room.
    #[inline]
    fn locate(&self, frame: &Frame) -> Option<(usize, usize)> {
        if frame.memory() != self.id {
            return None;
        }
        self.layout.locate(frame.addr(), frame.len())
    }

    /// The frame of this UMEM for a descriptor a ring handed back (with
    /// the packet's length), or `None` if its address is not in the UMEM.
    ///
    /// # Safety
    ///
    /// The ring must have handed the frame back (the kernel is done with
    /// it), and no other token for it may exist: true of the receive and
    /// completion rings, whose frames went to the kernel as descriptors
    /// (`Frame::into_raw`), and of frames a ring just refused.
    #[inline]
    pub(super) unsafe fn frame_from_ring(&self, addr: u64, len: u32) -> Option<Frame> {
        self.layout.index(addr)?;
        let desc = FrameDesc {
            addr,
            len,
            memory: self.id,
        };
        // SAFETY: the address is inside one frame of this UMEM (checked
        // above) and by this function's contract the caller owns it.
        Some(unsafe { Frame::from_raw(desc) })
    }

    /// The xsk-rs descriptor of `frame`, for the fill ring (which only
    /// reads its address): `None` if it is not a frame of this UMEM.
    #[inline]
    pub(super) fn fill_desc(&self, frame: &Frame) -> Option<xsk_rs::FrameDesc> {
        if frame.memory() != self.id {
            return None;
        }
        self.templates
            .get(self.layout.index(frame.addr())?)
            .copied()
    }

    /// The xsk-rs descriptor that sends `frame`'s bytes: `None` if they
    /// are empty, or not a frame of this UMEM, or do not lie inside one
    /// frame's room. Bytes that start past the packet address (an XDP
    /// program moved the start) are moved back to it, within the frame,
    /// since xsk-rs can only name a frame at its packet address.
    #[inline]
    pub(super) fn tx_desc(&self, frame: &mut Frame) -> Option<xsk_rs::FrameDesc> {
        if frame.is_empty() {
            return None;
        }
        let (index, offset) = self.locate(frame)?;
        let mut tx = *self.templates.get(index)?;
        let len = frame.len() as usize;
        // SAFETY: `tx` is this UMEM's own descriptor for frame `index`, so
        // the view lies inside the mapping, within that frame. The caller
        // holds the frame's token (mutably borrowed here), so neither the
        // kernel nor another worker touches these bytes while the view
        // lives.
        let mut data = unsafe { self.umem.data_mut(&mut tx) };
        if offset > 0 {
            let room = data.contents_mut();
            if offset + len > room.len() {
                return None;
            }
            room.copy_within(offset..offset + len, 0);
        }
        data.cursor().set_pos(len);
        Some(tx)
    }

    /// The bytes `frame` names, or none if it is not a frame of this
    /// UMEM or they are not inside its room.
    #[inline]
    fn bytes<'a>(&'a self, frame: &'a Frame) -> &'a [u8] {
        let Some((index, offset)) = self.locate(frame) else {
            return &[];
        };
        let Some(template) = self.templates.get(index) else {
            return &[];
        };
        // SAFETY: `template` is this UMEM's own descriptor for frame
        // `index`, so the view (its room) lies inside the mapping, which
        // lives as long as `self`. `frame` is that frame's one token and
        // is borrowed for as long as the view lives, so nobody can write
        // the frame meanwhile: not through another token (there is none),
        // not the kernel (it gets frames only as tokens given up).
        let room = unsafe { self.umem.data(template) }.contents();
        room.get(offset..offset + frame.len() as usize)
            .unwrap_or(&[])
    }
}

/// Which (interface, queue) pairs have sockets on the UMEM.
#[derive(Debug, Default)]
pub(super) struct Registry {
    bound: HashSet<(String, u32)>,
    live: usize,
    /// The wakeup setting of the first socket bound, which the kernel
    /// applies to every later one on the UMEM.
    first_need_wakeup: Option<bool>,
}

impl Registry {
    /// Whether this UMEM already has a socket on the pair.
    pub(super) fn is_bound(&self, ifname: &str, queue: u32) -> bool {
        self.bound.contains(&(ifname.to_string(), queue))
    }

    /// Whether every socket was closed after one had been bound: libxdp
    /// keeps the UMEM's first socket bound and cannot start over.
    pub(super) fn is_retired(&self) -> bool {
        self.first_need_wakeup.is_some() && self.live == 0
    }

    /// The wakeup setting the UMEM's sockets run with, once one is bound.
    pub(super) fn need_wakeup(&self) -> Option<bool> {
        self.first_need_wakeup
    }

    /// Records that a socket was bound (a first socket fixes the UMEM's
    /// wakeup setting).
    pub(super) fn note_bound(&mut self, need_wakeup: bool) {
        self.first_need_wakeup.get_or_insert(need_wakeup);
    }

    /// Records a socket the caller keeps, until the returned [`Claim`]
    /// drops; `handle` is the registry's own `Arc`.
    pub(super) fn claim(
        &mut self,
        ifname: &str,
        queue: u32,
        handle: &Arc<Mutex<Registry>>,
    ) -> Claim {
        self.bound.insert((ifname.to_string(), queue));
        self.live += 1;
        Claim(Arc::clone(handle))
    }
}

/// Counts a live socket; dropping it (after the socket's rings) lets the
/// registry know the socket is gone.
#[derive(Debug)]
pub(super) struct Claim(Arc<Mutex<Registry>>);

impl Drop for Claim {
    fn drop(&mut self) {
        let mut registry = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        registry.live = registry.live.saturating_sub(1);
    }
}

/// The one UMEM of the gateway: frame memory every AF_XDP socket binds
/// to, so that forwarding between interfaces moves descriptors, not
/// bytes.
///
/// [`frames`](Self::frames) gives each worker a [`UmemFrames`] handle to
/// read and write frames; [`split_pools`](Self::split_pools) shares the
/// frames out among the workers; [`XskPort::open`](super::XskPort::open)
/// binds a socket to it.
#[derive(Debug)]
pub struct SharedUmem {
    core: Arc<UmemCore>,
    registry: Arc<Mutex<Registry>>,
    pools_given: AtomicBool,
}

impl SharedUmem {
    /// Maps and registers `settings.frame_count` frames of
    /// `settings.frame_size` bytes (on huge pages if asked for and
    /// available, on ordinary pages otherwise). The fill and completion
    /// ring sizes are fixed here too: every (interface, queue) the UMEM
    /// is bound to gets its own pair of that size.
    pub fn new(settings: &XskSettings) -> Result<SharedUmem, XskError> {
        settings.validate()?;
        let bad = |reason: String| XskError::BadSettings { reason };
        let config = UmemConfig::builder()
            .frame_size(FrameSize::new(settings.frame_size).map_err(|e| bad(e.to_string()))?)
            .fill_queue_size(QueueSize::new(settings.fill_ring).map_err(|e| bad(e.to_string()))?)
            .comp_queue_size(
                QueueSize::new(settings.completion_ring).map_err(|e| bad(e.to_string()))?,
            )
            .frame_headroom(0)
            .build()
            .map_err(|e| bad(e.to_string()))?;
        let count = NonZeroU32::new(settings.frame_count)
            .ok_or_else(|| bad("frame_count = 0 must be at least 1".into()))?;
        let id = MemoryId::next().ok_or_else(|| XskError::Os {
            target: "UMEM".into(),
            doing: "naming the frame memory",
            source: io::Error::other("this process has made 2^32 - 1 frame memories"),
        })?;

        let try_huge = settings.huge_pages && settings.umem_bytes().is_multiple_of(HUGE_PAGE);
        let (created, huge_pages) = match try_huge.then(|| Umem::new(config, count, true)) {
            Some(Ok(made)) => (made, true),
            _ => {
                let made = Umem::new(config, count, false).map_err(|e| {
                    classify(
                        Target::Umem,
                        "creating the UMEM",
                        os_error_of(&e),
                        false,
                        None,
                    )
                })?;
                (made, false)
            }
        };
        let (umem, mut templates) = created;

        let layout = FrameLayout {
            frame_size: settings.frame_size,
            frame_count: settings.frame_count,
            headroom: config.xdp_headroom() + config.frame_headroom(),
        };
        let laid_out_as_expected = templates.len() == settings.frame_count as usize
            && templates
                .iter()
                .enumerate()
                .all(|(i, t)| t.addr() as u64 == layout.packet_addr(i));
        if !laid_out_as_expected {
            return Err(XskError::Os {
                target: "UMEM".into(),
                doing: "laying out frames",
                source: io::Error::other(
                    "xsk-rs placed frames other than at i × frame_size + headroom",
                ),
            });
        }
        for template in templates.iter_mut() {
            // SAFETY: `template` is this UMEM's own descriptor. No socket
            // is bound yet and no frame has been handed out, so neither the
            // kernel nor any other code can be touching the frame.
            let mut data = unsafe { umem.data_mut(template) };
            // Lengthen the view to the frame's whole room.
            data.cursor().set_pos(usize::MAX);
        }

        Ok(SharedUmem {
            core: Arc::new(UmemCore {
                umem,
                layout,
                id,
                templates: templates.into_boxed_slice(),
                fill_ring: settings.fill_ring as usize,
                huge_pages,
            }),
            registry: Arc::new(Mutex::new(Registry::default())),
            pools_given: AtomicBool::new(false),
        })
    }

    /// A handle on the frames for one worker. Handles alias the same
    /// memory; each touches only frames whose tokens its worker holds.
    pub fn frames(&self) -> UmemFrames {
        UmemFrames {
            core: Arc::clone(&self.core),
        }
    }

    /// Every frame, shared out among `workers` pools (at least one) in
    /// near-equal parts; each pool can hold every frame, since frames
    /// drift between workers as flows are handed to their owners.
    ///
    /// Frames are handed out once: a frame must have one owner, so later
    /// calls return pools with room for every frame and no frames in
    /// them.
    pub fn split_pools(&self, workers: usize) -> Vec<FramePool> {
        let layout = &self.core.layout;
        let shares = layout.shares(workers);
        let mut pools: Vec<FramePool> = shares
            .iter()
            .map(|_| FramePool::with_capacity(layout.frame_count as usize))
            .collect();
        if self.pools_given.swap(true, Ordering::AcqRel) {
            return pools;
        }
        for (pool, share) in pools.iter_mut().zip(shares) {
            // Highest address first: `take` pops from the end, so a
            // worker starts with its lowest frames.
            for index in share.rev() {
                let desc = FrameDesc {
                    addr: layout.packet_addr(index),
                    len: 0,
                    memory: self.core.id,
                };
                // SAFETY: `desc` is frame `index`'s packet address in this
                // UMEM; its frames are handed out here once
                // (`pools_given`) and no socket has had any of them, so
                // this is the frame's one token and nobody else touches it.
                pool.put(unsafe { Frame::from_raw(desc) });
            }
        }
        pools
    }

    /// The id every frame of this UMEM carries.
    pub fn id(&self) -> MemoryId {
        self.core.id
    }

    /// Frames in the UMEM.
    pub fn frame_count(&self) -> u32 {
        self.core.layout.frame_count
    }

    /// Bytes per frame, the kernel's XDP headroom included.
    pub fn frame_size(&self) -> u32 {
        self.core.layout.frame_size
    }

    /// Bytes of packet one frame holds (frame size less the headroom);
    /// also what [`UmemFrames::frame_size`](FrameMemory::frame_size) says.
    pub fn frame_room(&self) -> u32 {
        self.core.layout.room()
    }

    /// Whether the frames are on huge pages.
    pub fn huge_pages(&self) -> bool {
        self.core.huge_pages
    }

    pub(super) fn core(&self) -> &Arc<UmemCore> {
        &self.core
    }

    pub(super) fn registry(&self) -> &Arc<Mutex<Registry>> {
        &self.registry
    }

    pub(super) fn lock_registry(&self) -> MutexGuard<'_, Registry> {
        // The registry is a plain set and counters: still consistent if a
        // holder panicked.
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One worker's handle on the shared UMEM's frames.
///
/// Several handles alias one memory. That is sound because frames are
/// reached through their [`Frame`] tokens, of which there is one per
/// frame: a frame is touched only by whoever holds its token — a worker
/// between receiving it and handing it to a ring or a pool — or by the
/// kernel while it sits on a ring (where it went as a raw descriptor, the
/// token given up). A view borrows the token, so it ends before the
/// frame can be passed on.
///
/// Frames are named by packet addresses (see [`SharedUmem::frame_room`]);
/// a frame of another memory, or whose bytes are not wholly inside one
/// frame's room, yields an empty slice.
#[derive(Debug)]
pub struct UmemFrames {
    core: Arc<UmemCore>,
}

impl FrameMemory for UmemFrames {
    /// Bytes of packet a frame holds (the frame less the XDP headroom).
    fn frame_size(&self) -> u32 {
        self.core.layout.room()
    }

    #[inline]
    fn frame<'a>(&'a self, frame: &'a Frame) -> &'a [u8] {
        self.core.bytes(frame)
    }

    #[inline]
    fn frame_mut<'a>(&'a mut self, frame: &'a mut Frame) -> &'a mut [u8] {
        let Some((index, offset)) = self.core.locate(frame) else {
            return &mut [];
        };
        let Some(mut template) = self.core.templates.get(index).copied() else {
            return &mut [];
        };
        let (ptr, len) = {
            // SAFETY: `template` is this UMEM's own descriptor for frame
            // `index`, so the view (its room) lies inside the mapping. The
            // caller holds the frame's one token, so neither the kernel
            // nor another worker touches the frame meanwhile.
            let mut data = unsafe { self.core.umem.data_mut(&mut template) };
            match data
                .contents_mut()
                .get_mut(offset..offset + frame.len() as usize)
            {
                Some(bytes) => (bytes.as_mut_ptr(), bytes.len()),
                None => return &mut [],
            }
        };
        // SAFETY: `ptr` and `len` are the bytes just taken from the
        // frame's mutable view: inside the mapping, which `self.core`
        // keeps alive for as long as the returned borrow of `self` lasts.
        // The view is gone, and nothing else reads or writes these bytes
        // while the returned slice lives: it borrows the frame's one
        // token mutably, so no other view of the frame can be made and
        // the frame cannot be passed on (to a ring, a pool, a worker).
        unsafe { std::slice::from_raw_parts_mut(ptr, len) }
    }
}
