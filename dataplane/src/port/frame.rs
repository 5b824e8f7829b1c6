//! Frames as owned tokens: see [`Frame`].

use std::sync::atomic::{AtomicU32, Ordering};

/// Which frame memory a frame belongs to. Every memory made in a process
/// has its own (there are 2³² − 1 of them), so a frame of one memory
/// cannot pass for a frame of another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MemoryId(u32);

impl MemoryId {
    /// A new id, unlike every other made in this process; `None` once
    /// all of them have been handed out.
    pub(crate) fn next() -> Option<MemoryId> {
        static NEXT: AtomicU32 = AtomicU32::new(1);
        NEXT.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_add(1))
            .ok()
            .map(MemoryId)
    }
}

/// A frame's raw descriptor: where its bytes are, in which memory.
///
/// Plain data, freely copied: it grants nothing. Only
/// [`Frame::from_raw`] turns one into a frame, and that is `unsafe`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameDesc {
    /// Byte offset of the frame's first byte in its memory.
    pub addr: u64,
    /// Length of the frame in bytes.
    pub len: u32,
    /// The memory.
    pub memory: MemoryId,
}

/// One frame of a frame memory, owned: the right to read and write it.
///
/// There is one token per frame; it cannot be copied or cloned, and every
/// way of passing a frame on — transmitting it, handing it to another
/// worker, putting it back in a pool — takes the token by value. Ports
/// receive into frames, pools hold free ones, the hand-over between
/// workers carries them. The bytes are reached only through the token
/// (`memory.frame(&frame)`, `memory.frame_mut(&mut frame)`), and a view
/// borrows it, so safe code cannot hold two mutable views of one frame,
/// or a view of a frame it has passed on. Dropping a token loses its
/// frame to its memory until the process ends (safe, and a leak), so it
/// is `#[must_use]`.
///
/// ```
/// use flowgate_dataplane::port::{FrameMemory, MemoryFrames};
///
/// let mut memory = MemoryFrames::new(2, 64);
/// let mut pool = memory.pool();
/// let mut frame = pool.take().unwrap();
/// assert!(memory.write(&mut frame, b"hello"));
/// memory.frame_mut(&mut frame)[0] = b'j';
/// assert_eq!(memory.frame(&frame), b"jello");
/// pool.put(frame);
/// ```
///
/// A token is not `Clone`:
///
/// ```compile_fail
/// # use flowgate_dataplane::port::MemoryFrames;
/// let mut memory = MemoryFrames::new(2, 64);
/// let frame = memory.pool().take().unwrap();
/// let twin = frame.clone(); // ✗
/// ```
///
/// nor `Copy`: passing it on moves it, and it cannot be used after:
///
/// ```compile_fail
/// # use flowgate_dataplane::port::{FrameMemory, MemoryFrames};
/// let mut memory = MemoryFrames::new(2, 64);
/// let mut pool = memory.pool();
/// let frame = pool.take().unwrap();
/// pool.put(frame);
/// let _ = memory.frame(&frame); // ✗ after it went back to the pool
/// ```
///
/// ```compile_fail
/// # use flowgate_dataplane::port::{FrameMemory, MemoryFrames, MemoryPort, Port};
/// let mut memory = MemoryFrames::new(2, 64);
/// let mut port = MemoryPort::new("p", 4);
/// let frame = memory.pool().take().unwrap();
/// let mut burst = vec![frame];
/// port.transmit(&mut burst);
/// let _ = memory.frame(&frame); // ✗ after it went to the port
/// ```
///
/// Two mutable views of one frame do not compile, through one handle or
/// through two (two AF_XDP workers' handles on one UMEM are the case that
/// matters; any two memories show it):
///
/// ```compile_fail
/// # use flowgate_dataplane::port::{FrameMemory, MemoryFrames};
/// let mut memory = MemoryFrames::new(2, 64);
/// let mut frame = memory.pool().take().unwrap();
/// let a = memory.frame_mut(&mut frame);
/// let b = memory.frame_mut(&mut frame);
/// a[0] = b[0]; // ✗ both alive
/// ```
///
/// ```compile_fail
/// # use flowgate_dataplane::port::{FrameMemory, MemoryFrames};
/// let mut one = MemoryFrames::new(2, 64);
/// let mut other = MemoryFrames::new(2, 64);
/// let mut frame = one.pool().take().unwrap();
/// let a = one.frame_mut(&mut frame);
/// let b = other.frame_mut(&mut frame);
/// a[0] = b[0]; // ✗ both alive
/// ```
///
/// and neither does keeping a view of a frame while passing it on:
///
/// ```compile_fail
/// # use flowgate_dataplane::port::{FrameMemory, MemoryFrames};
/// let mut memory = MemoryFrames::new(2, 64);
/// let mut pool = memory.pool();
/// let frame = pool.take().unwrap();
/// let view = memory.frame(&frame);
/// pool.put(frame);
/// assert_eq!(view.len(), 0); // ✗ the view outlives the frame
/// ```
///
/// (Each of these has a twin in `port::tests` that compiles, the line
/// marked ✗ changed or moved, so that they fail for the reason shown.)
///
/// Whatever deals in raw descriptors — the AF_XDP rings, where the kernel
/// hands frames back — makes tokens with the `unsafe`
/// [`Frame::from_raw`], whose contract says when that is sound.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a dropped frame is lost to its memory: transmit it, hand it on or put it in a pool"]
pub struct Frame {
    addr: u64,
    len: u32,
    memory: MemoryId,
}

impl Frame {
    /// The frame `desc` names.
    ///
    /// # Safety
    ///
    /// `desc` must name bytes inside one frame (one slot) of the memory
    /// `desc.memory`, and the caller must own that frame: no other
    /// `Frame` for it may exist, and nothing else — the kernel, another
    /// thread — may read or write the frame until the token this returns
    /// is given up (transmitted, handed on, put in a pool, or turned back
    /// into a descriptor with [`into_raw`](Self::into_raw)).
    ///
    /// A descriptor that a ring hands back once the kernel is done with
    /// the frame (AF_XDP's receive and completion rings), or that comes
    /// from `into_raw` of a token nobody else has, meets this.
    #[inline]
    pub unsafe fn from_raw(desc: FrameDesc) -> Frame {
        Frame {
            addr: desc.addr,
            len: desc.len,
            memory: desc.memory,
        }
    }

    /// Gives the frame up, returning its descriptor: for a ring, which
    /// from now on owns the frame.
    #[inline]
    pub fn into_raw(self) -> FrameDesc {
        self.desc()
    }

    /// What the frame names (a copy: it grants nothing).
    #[inline]
    pub fn desc(&self) -> FrameDesc {
        FrameDesc {
            addr: self.addr,
            len: self.len,
            memory: self.memory,
        }
    }

    /// Byte offset of the frame's first byte in its memory.
    #[inline]
    pub fn addr(&self) -> u64 {
        self.addr
    }

    /// Length of the frame in bytes.
    #[inline]
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Whether the frame holds no bytes.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The memory the frame belongs to.
    #[inline]
    pub fn memory(&self) -> MemoryId {
        self.memory
    }

    /// Sets how many bytes the frame holds. A length past the frame's
    /// room makes its views empty (memories check every access), never
    /// a view of a neighbour.
    #[inline]
    pub fn set_len(&mut self, len: u32) {
        self.len = len;
    }
}
