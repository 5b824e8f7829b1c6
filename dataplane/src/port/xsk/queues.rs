//! How many queues an interface has, asked the way `ethtool -l` asks.
//!
//! Used to tell "no such queue" apart from other reasons the kernel
//! refuses a bind with EINVAL. The ioctl runs in the calling thread's
//! network namespace, like the socket that is about to be bound.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::libc;

/// `ETHTOOL_GCHANNELS` from `linux/ethtool.h`.
const ETHTOOL_GCHANNELS: u32 = 0x3c;

/// `struct ethtool_channels` from `linux/ethtool.h`.
#[repr(C)]
#[derive(Default)]
struct EthtoolChannels {
    cmd: u32,
    max_rx: u32,
    max_tx: u32,
    max_other: u32,
    max_combined: u32,
    rx_count: u32,
    tx_count: u32,
    other_count: u32,
    combined_count: u32,
}

/// Whether `ifname` can name an interface at all (1 to 15 bytes, no NUL).
pub(super) fn plausible_name(ifname: &str) -> bool {
    !ifname.is_empty() && ifname.len() < libc::IFNAMSIZ && !ifname.as_bytes().contains(&0)
}

/// Queues `ifname` has in use: `Ok(None)` when its driver does not say,
/// an ENODEV error when there is no such interface.
pub(super) fn queue_count(ifname: &str) -> io::Result<Option<u32>> {
    if !plausible_name(ifname) {
        return Err(io::Error::from_raw_os_error(libc::ENODEV));
    }
    // SAFETY: socket() takes no pointers; its result is checked below.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a descriptor socket() just opened and nothing else
    // owns; the OwnedFd closes it on every path out.
    let socket = unsafe { OwnedFd::from_raw_fd(raw) };

    let mut channels = EthtoolChannels {
        cmd: ETHTOOL_GCHANNELS,
        ..EthtoolChannels::default()
    };
    // SAFETY: `ifreq` is plain data (a name array and a union of plain
    // fields and a pointer); all-zero bytes are a valid value of it.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    // The name is shorter than IFNAMSIZ, so the zeroed tail terminates it.
    for (dst, &src) in request.ifr_name.iter_mut().zip(ifname.as_bytes()) {
        *dst = src as libc::c_char;
    }
    request.ifr_ifru.ifru_data = (&mut channels as *mut EthtoolChannels).cast();
    // SAFETY: SIOCETHTOOL reads the NUL-terminated name in `request` and,
    // for ETHTOOL_GCHANNELS, writes one `struct ethtool_channels` through
    // `ifru_data`, which points at `channels`: alive, exclusively
    // borrowed and of that layout for the whole call.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCETHTOOL as _, &mut request) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::EOPNOTSUPP) => Ok(None),
            _ => Err(err),
        };
    }
    // The kernel's bind check is against the larger of the receive and
    // transmit queue counts; combined channels are both.
    let queues = channels
        .combined_count
        .saturating_add(channels.rx_count.max(channels.tx_count));
    Ok((queues > 0).then_some(queues))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn implausible_names_are_no_such_device() {
        for name in ["", "a-name-far-too-long", "nul\0name"] {
            assert!(!plausible_name(name));
            let err = queue_count(name).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::ENODEV), "{name:?}");
        }
        assert!(plausible_name("fg-client"));
    }

    #[test]
    fn a_missing_interface_is_no_such_device() {
        // Asking needs no privileges.
        let err = queue_count("fgx-none0").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENODEV));
    }
}
