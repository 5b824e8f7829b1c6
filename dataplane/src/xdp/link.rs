//! The bpf_link an XDP program is attached through, as a descriptor one
//! process hands to another (`flowgate run --takeover`).
//!
//! A bpf_link detaches its program when the last reference to it goes: the
//! old process's descriptor, and a copy passed over a Unix socket
//! (SCM_RIGHTS) is one more. So the old process finds the descriptor of
//! its own link ([`link_of`]), hands a copy over and exits; its program
//! stays attached, with its maps (the kernel fast path's connection cache
//! among them), and keeps forwarding what it can without a worker until
//! the new process replaces it with its own through the same link
//! ([`update`], BPF_LINK_UPDATE): one atomic switch, the interface never
//! without a program.
//!
//! aya keeps a link's descriptor to itself, so the two commands are made
//! here, as the kernel's `union bpf_attr` lays them out.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::syscall::bpf;
use super::XdpError;

const BPF_OBJ_GET_INFO_BY_FD: i64 = 15;
const BPF_LINK_UPDATE: i64 = 29;
const BPF_LINK_GET_FD_BY_ID: i64 = 30;
const BPF_LINK_GET_NEXT_ID: i64 = 31;
/// `enum bpf_link_type`'s BPF_LINK_TYPE_XDP.
const BPF_LINK_TYPE_XDP: u32 = 6;
/// How many links are looked at, at most, for one interface's.
const MAX_LINKS: usize = 65_536;

/// `union bpf_attr` for BPF_LINK_GET_NEXT_ID and BPF_LINK_GET_FD_BY_ID.
#[repr(C)]
#[derive(Default)]
struct IdAttr {
    /// `start_id` or `link_id`.
    id: u32,
    next_id: u32,
    open_flags: u32,
}

/// `union bpf_attr` for BPF_OBJ_GET_INFO_BY_FD.
#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// `struct bpf_link_info`, up to its XDP member (the union starts at 16),
/// with room for the rest of the union, which the kernel may fill.
#[repr(C)]
#[derive(Default)]
struct LinkInfo {
    link_type: u32,
    id: u32,
    prog_id: u32,
    _pad: u32,
    /// `xdp.ifindex` for an XDP link.
    ifindex: u32,
    _rest: [u32; 11],
}

/// `union bpf_attr` for BPF_LINK_UPDATE.
#[repr(C)]
#[derive(Default)]
struct UpdateAttr {
    link_fd: u32,
    new_prog_fd: u32,
    flags: u32,
    old_prog_fd: u32,
}

/// A new descriptor of the XDP link on interface `ifindex` that attaches
/// program `program_id` (ids are global, interface indices per network
/// namespace: the program id tells two namespaces' links apart).
pub(crate) fn link_of(ifindex: u32, program_id: u32) -> Result<OwnedFd, XdpError> {
    let failed = |what: &str, e: io::Error| XdpError::from_io(what, &e);
    let mut next = IdAttr::default();
    for _ in 0..MAX_LINKS {
        match bpf(BPF_LINK_GET_NEXT_ID, &mut next) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOENT) => break,
            Err(e) => return Err(failed("listing bpf links", e)),
        }
        let id = next.next_id;
        next = IdAttr {
            id,
            ..IdAttr::default()
        };
        let mut by_id = IdAttr {
            id,
            ..IdAttr::default()
        };
        let fd = match bpf(BPF_LINK_GET_FD_BY_ID, &mut by_id) {
            // SAFETY: the kernel just opened this descriptor for this call;
            // nothing else owns it.
            Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd as i32) },
            // Gone since it was listed.
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOENT) => continue,
            Err(e) => return Err(failed("opening a bpf link", e)),
        };
        let mut info = LinkInfo::default();
        let mut attr = InfoAttr {
            bpf_fd: fd.as_raw_fd() as u32,
            info_len: std::mem::size_of::<LinkInfo>() as u32,
            info: &mut info as *mut LinkInfo as u64,
        };
        bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).map_err(|e| failed("reading a bpf link", e))?;
        if info.link_type == BPF_LINK_TYPE_XDP
            && info.ifindex == ifindex
            && info.prog_id == program_id
        {
            return Ok(fd);
        }
    }
    Err(XdpError::Other(format!(
        "no bpf link attaches XDP program {program_id} to interface {ifindex}"
    )))
}

/// Makes `link` attach `program` in place of the program it attaches: one
/// atomic switch.
pub(crate) fn update(link: BorrowedFd<'_>, program: BorrowedFd<'_>) -> Result<(), XdpError> {
    let mut attr = UpdateAttr {
        link_fd: link.as_raw_fd() as u32,
        new_prog_fd: program.as_raw_fd() as u32,
        ..UpdateAttr::default()
    };
    bpf(BPF_LINK_UPDATE, &mut attr)
        .map(drop)
        .map_err(|e| XdpError::from_io("replacing the XDP program through its link", &e))
}
