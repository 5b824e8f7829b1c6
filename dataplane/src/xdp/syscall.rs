//! The `bpf(2)` system call, for the commands aya does not wrap
//! (BPF_PROG_TEST_RUN, the bpf_link commands of a takeover).

use std::io;

/// Runs `bpf(command, attr, size_of(attr))`; its non-negative return (a
/// descriptor for the commands that make one), or the error.
pub(super) fn bpf<T>(command: i64, attr: &mut T) -> io::Result<i64> {
    // SAFETY: every caller passes a live, initialised `repr(C)` block laid
    // out as the kernel's `union bpf_attr` for `command` (fields unused are
    // zero), and its size goes with it; the pointers inside it point at
    // buffers the caller keeps alive, of the lengths the block states.
    let ret = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_bpf,
            command,
            attr as *mut T,
            std::mem::size_of::<T>(),
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}
