//! BPF_PROG_TEST_RUN: running the XDP program on a frame without a
//! network, as Katran's tester does, for the golden tests, the fast path's
//! tests, its fuzz target and its per-packet cost. aya does not wrap this
//! command; it is one `bpf(2)` call with a small attribute block.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::syscall::bpf;

/// What one run of the program gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRun {
    /// The program's return value (XDP_ABORTED 0, XDP_DROP 1, XDP_PASS 2,
    /// XDP_TX 3, XDP_REDIRECT 4).
    pub action: u32,
    /// The frame as the program left it.
    pub frame: Vec<u8>,
    /// The kernel's measure of the run, in nanoseconds (the average over
    /// `repeat` runs).
    pub duration_ns: u32,
}

/// XDP actions.
pub mod action {
    /// XDP_ABORTED.
    pub const ABORTED: u32 = 0;
    /// XDP_DROP.
    pub const DROP: u32 = 1;
    /// XDP_PASS.
    pub const PASS: u32 = 2;
    /// XDP_TX.
    pub const TX: u32 = 3;
    /// XDP_REDIRECT.
    pub const REDIRECT: u32 = 4;
}

/// How many bytes longer than its input a test run's output may be.
pub const GROWTH: usize = 64;

const BPF_PROG_LOAD: i64 = 5;
const BPF_PROG_TEST_RUN: i64 = 10;
const BPF_PROG_TYPE_XDP: u32 = 6;

/// `union bpf_attr` for BPF_PROG_TEST_RUN (its `test` member).
#[repr(C)]
#[derive(Default)]
struct TestAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// `union bpf_attr` for BPF_PROG_LOAD, up to the fields used.
#[repr(C)]
#[derive(Default)]
struct LoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// Runs the XDP program `program` once (or `repeat` times on the same
/// bytes, for its timing) on `frame`, in the calling thread's network
/// namespace: the frame looks received on queue 0 of loopback. The
/// program grows a frame only to answer a neighbour solicitation (by 8
/// bytes at most), so the output has room for [`GROWTH`] bytes more.
pub fn test_run(program: BorrowedFd<'_>, frame: &[u8], repeat: u32) -> io::Result<TestRun> {
    let mut out = vec![0u8; frame.len() + GROWTH];
    let mut attr = TestAttr {
        prog_fd: u32::try_from(program.as_raw_fd()).unwrap_or(u32::MAX),
        data_size_in: u32::try_from(frame.len()).unwrap_or(u32::MAX),
        data_size_out: u32::try_from(out.len()).unwrap_or(u32::MAX),
        data_in: frame.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat: repeat.max(1),
        ..TestAttr::default()
    };
    bpf(BPF_PROG_TEST_RUN, &mut attr)?;
    out.truncate(attr.data_size_out as usize);
    Ok(TestRun {
        action: attr.retval,
        frame: out,
        duration_ns: attr.duration,
    })
}

/// Loads the empty XDP program (`return XDP_PASS`): what a test run costs
/// with no program work, subtracted from a program's measure as Katran's
/// tester does.
pub fn load_empty_program() -> io::Result<OwnedFd> {
    // r0 = XDP_PASS; exit.
    let insns: [u64; 2] = [
        u64::from(0xb7u8) | (u64::from(action::PASS) << 32),
        u64::from(0x95u8),
    ];
    let license = b"GPL\0";
    let mut name = [0u8; 16];
    name[..9].copy_from_slice(b"xdp_empty");
    let mut attr = LoadAttr {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt: 2,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name,
        ..LoadAttr::default()
    };
    let fd = bpf(BPF_PROG_LOAD, &mut attr)?;
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("a file descriptor past i32"))?;
    // SAFETY: BPF_PROG_LOAD returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn the_empty_program_passes_a_frame_untouched() {
        let program = load_empty_program().expect("loading an XDP program (needs root)");
        let frame: Vec<u8> = (0..64).collect();
        let run = test_run(program.as_fd(), &frame, 1).unwrap();
        assert_eq!(run.action, action::PASS);
        assert_eq!(run.frame, frame);
    }
}
