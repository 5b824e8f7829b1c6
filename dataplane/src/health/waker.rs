//! Wakes a thread that waits in epoll or poll: an eventfd.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use nix::sys::eventfd::{EfdFlags, EventFd};

/// An eventfd that one side writes to wake the other.
#[derive(Debug)]
pub struct Waker(EventFd);

impl Waker {
    /// A non-blocking eventfd.
    pub fn new() -> io::Result<Waker> {
        let fd = EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)?;
        Ok(Waker(fd))
    }

    /// Makes the fd readable (wakes the waiter). Never blocks; a wake
    /// already pending is enough, so a full counter is not an error.
    pub fn wake(&self) {
        let _ = self.0.write(1);
    }

    /// Clears pending wakes.
    pub fn drain(&self) {
        let _ = self.0.read();
    }
}

impl AsFd for Waker {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}
