//! Why an AF_XDP UMEM or socket could not be set up, one clear line each.

use std::io;

use nix::libc;

/// Capabilities and limits the permission error spells out.
const PRIVILEGES: &str = "AF_XDP needs CAP_NET_ADMIN and CAP_NET_RAW, loading an XDP program \
                          CAP_BPF (or CAP_SYS_ADMIN), and the UMEM must fit the locked-memory \
                          limit (ulimit -l) unless the process has CAP_IPC_LOCK";

/// An AF_XDP setup failure. Socket errors name the interface and queue;
/// UMEM errors say "UMEM".
#[derive(Debug, thiserror::Error)]
pub enum XskError {
    /// A setting is out of range.
    #[error("invalid AF_XDP settings: {reason}")]
    BadSettings {
        /// Which setting, its value, and what it must be.
        reason: String,
    },
    /// The interface does not exist (in this network namespace).
    #[error("{ifname}: no such interface")]
    NoSuchInterface {
        /// The interface asked for.
        ifname: String,
    },
    /// The interface has fewer queues.
    #[error("{ifname}: no queue {queue} (the interface has {available} queues)")]
    NoSuchQueue {
        /// The interface.
        ifname: String,
        /// The queue asked for.
        queue: u32,
        /// Queues the interface has.
        available: u32,
    },
    /// Missing privileges or locked-memory allowance.
    #[error("{target}: permission denied ({source}): {}", PRIVILEGES)]
    PermissionDenied {
        /// "UMEM" or "<interface> queue <n>".
        target: String,
        /// The OS error.
        source: io::Error,
    },
    /// The kernel was built without AF_XDP.
    #[error(
        "{target}: this kernel has no AF_XDP sockets (EAFNOSUPPORT): \
         it needs Linux 4.18 or later built with CONFIG_XDP_SOCKETS"
    )]
    NoKernelSupport {
        /// "UMEM" or "<interface> queue <n>".
        target: String,
    },
    /// Zero-copy was asked for and the driver cannot do it, or the
    /// shared UMEM is already in the other mode.
    #[error("{ifname} queue {queue}: zero-copy is not available: {reason}")]
    ZeroCopyUnsupported {
        /// The interface.
        ifname: String,
        /// The queue.
        queue: u32,
        /// Why not.
        reason: String,
    },
    /// Copy mode was asked for on a UMEM its first socket bound in
    /// zero-copy (one UMEM, one mode).
    #[error(
        "{ifname} queue {queue}: copy mode requested, but the shared UMEM runs in zero-copy \
         (its first socket chose; all sockets on one UMEM share the mode)"
    )]
    ModeConflict {
        /// The interface.
        ifname: String,
        /// The queue.
        queue: u32,
    },
    /// Another AF_XDP socket (not on this UMEM) is bound to the queue.
    #[error("{ifname} queue {queue}: another AF_XDP socket is bound to this queue (EBUSY)")]
    QueueBusy {
        /// The interface.
        ifname: String,
        /// The queue.
        queue: u32,
    },
    /// This UMEM already has a socket on the queue.
    #[error(
        "{ifname} queue {queue}: already opened on this UMEM \
         (a shared UMEM has one socket per interface and queue)"
    )]
    AlreadyOpen {
        /// The interface.
        ifname: String,
        /// The queue.
        queue: u32,
    },
    /// Every socket of this UMEM was closed: libxdp keeps the UMEM's
    /// first socket bound, so it cannot take new ones.
    #[error(
        "{ifname} queue {queue}: every socket of this UMEM has been closed and libxdp cannot \
         rebind it; create a new SharedUmem"
    )]
    UmemRetired {
        /// The interface.
        ifname: String,
        /// The queue.
        queue: u32,
    },
    /// Any other OS error, with what was being done.
    #[error("{target}: {doing} failed: {source}")]
    Os {
        /// "UMEM" or "<interface> queue <n>".
        target: String,
        /// What was being done.
        doing: &'static str,
        /// The OS error (its text says which errno).
        source: io::Error,
    },
}

/// What an OS error was about: the UMEM, or one interface queue.
#[derive(Clone, Copy, Debug)]
pub(super) enum Target<'a> {
    /// Creating or registering the UMEM.
    Umem,
    /// A socket on an interface queue.
    Queue {
        /// The interface.
        ifname: &'a str,
        /// The queue.
        queue: u32,
    },
}

impl Target<'_> {
    fn describe(self) -> String {
        match self {
            Target::Umem => "UMEM".to_string(),
            Target::Queue { ifname, queue } => format!("{ifname} queue {queue}"),
        }
    }
}

/// Turns an OS error met while `doing` something into the clearest
/// error there is for it. `queues` tells how many queues the interface
/// has, where known, to tell a bad queue from other invalid arguments.
pub(super) fn classify(
    target: Target<'_>,
    doing: &'static str,
    source: io::Error,
    zero_copy_forced: bool,
    queues: Option<u32>,
) -> XskError {
    let errno = source.raw_os_error().unwrap_or(0);
    match (errno, target) {
        (libc::EPERM | libc::EACCES, _) => XskError::PermissionDenied {
            target: target.describe(),
            source,
        },
        // Registering a UMEM beyond RLIMIT_MEMLOCK.
        (libc::ENOBUFS, Target::Umem) => XskError::PermissionDenied {
            target: target.describe(),
            source,
        },
        (libc::EAFNOSUPPORT, _) => XskError::NoKernelSupport {
            target: target.describe(),
        },
        (libc::ENODEV | libc::ENXIO, Target::Queue { ifname, .. }) => XskError::NoSuchInterface {
            ifname: ifname.to_string(),
        },
        (libc::EINVAL, Target::Queue { ifname, queue }) => match queues {
            Some(available) if queue >= available => XskError::NoSuchQueue {
                ifname: ifname.to_string(),
                queue,
                available,
            },
            _ => os(target, doing, source),
        },
        (libc::EOPNOTSUPP, Target::Queue { ifname, queue }) if zero_copy_forced => {
            XskError::ZeroCopyUnsupported {
                ifname: ifname.to_string(),
                queue,
                reason: "the driver does not support AF_XDP zero-copy (use bind mode auto or copy)"
                    .to_string(),
            }
        }
        (libc::EBUSY, Target::Queue { ifname, queue }) => XskError::QueueBusy {
            ifname: ifname.to_string(),
            queue,
        },
        _ => os(target, doing, source),
    }
}

fn os(target: Target<'_>, doing: &'static str, source: io::Error) -> XskError {
    XskError::Os {
        target: target.describe(),
        doing,
        source,
    }
}

/// The OS error behind an error of xsk-rs, which keeps it as its source.
pub(super) fn os_error_of(err: &(dyn std::error::Error + 'static)) -> io::Error {
    match err.source().and_then(|s| s.downcast_ref::<io::Error>()) {
        Some(io) => match io.raw_os_error() {
            Some(code) => io::Error::from_raw_os_error(code),
            None => io::Error::new(io.kind(), io.to_string()),
        },
        None => io::Error::other(err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q: Target<'static> = Target::Queue {
        ifname: "fg-client",
        queue: 3,
    };

    fn errno(code: i32) -> io::Error {
        io::Error::from_raw_os_error(code)
    }

    #[test]
    fn permission_errors_name_the_capabilities() {
        for code in [libc::EPERM, libc::EACCES] {
            let e = classify(Q, "creating the socket", errno(code), false, None);
            assert!(matches!(e, XskError::PermissionDenied { .. }), "{e:?}");
            let msg = e.to_string();
            for needed in [
                "fg-client queue 3",
                "CAP_NET_ADMIN",
                "CAP_NET_RAW",
                "CAP_BPF",
            ] {
                assert!(msg.contains(needed), "{msg}");
            }
            assert!(msg.contains("ulimit -l"), "{msg}");
        }
        let e = classify(
            Target::Umem,
            "registering",
            errno(libc::ENOBUFS),
            false,
            None,
        );
        assert!(e.to_string().starts_with("UMEM: permission denied"), "{e}");
    }

    #[test]
    fn missing_interface_and_queue_are_told_apart_from_other_einval() {
        let e = classify(Q, "binding", errno(libc::ENODEV), false, None);
        assert_eq!(e.to_string(), "fg-client: no such interface");
        let e = classify(Q, "binding", errno(libc::EINVAL), false, Some(2));
        assert_eq!(
            e.to_string(),
            "fg-client: no queue 3 (the interface has 2 queues)"
        );
        let e = classify(Q, "binding", errno(libc::EINVAL), false, Some(4));
        assert!(matches!(e, XskError::Os { .. }), "{e:?}");
        assert!(e
            .to_string()
            .starts_with("fg-client queue 3: binding failed: "));
        let e = classify(Q, "binding", errno(libc::EINVAL), false, None);
        assert!(matches!(e, XskError::Os { .. }), "{e:?}");
    }

    #[test]
    fn kernel_without_af_xdp_is_named() {
        let e = classify(
            Target::Umem,
            "creating",
            errno(libc::EAFNOSUPPORT),
            false,
            None,
        );
        assert!(e.to_string().contains("CONFIG_XDP_SOCKETS"), "{e}");
    }

    #[test]
    fn unsupported_zero_copy_only_when_it_was_forced() {
        let e = classify(Q, "binding", errno(libc::EOPNOTSUPP), true, None);
        assert!(matches!(e, XskError::ZeroCopyUnsupported { .. }), "{e:?}");
        let e = classify(Q, "binding", errno(libc::EOPNOTSUPP), false, None);
        assert!(matches!(e, XskError::Os { .. }), "{e:?}");
    }

    #[test]
    fn busy_queue_and_other_errors_carry_the_errno_text() {
        let e = classify(Q, "binding", errno(libc::EBUSY), false, None);
        assert!(matches!(e, XskError::QueueBusy { .. }), "{e:?}");
        let e = classify(Q, "mapping the rings", errno(libc::ENOMEM), false, None);
        let msg = e.to_string();
        assert!(
            msg.starts_with("fg-client queue 3: mapping the rings failed: "),
            "{msg}"
        );
        assert!(msg.contains("os error 12"), "{msg}");
    }

    #[test]
    fn every_message_is_one_line() {
        let errors = [
            classify(Q, "x", errno(libc::EPERM), false, None),
            classify(Q, "x", errno(libc::EAFNOSUPPORT), false, None),
            classify(Q, "x", errno(libc::EOPNOTSUPP), true, None),
            XskError::ModeConflict {
                ifname: "a".into(),
                queue: 0,
            },
            XskError::AlreadyOpen {
                ifname: "a".into(),
                queue: 0,
            },
            XskError::UmemRetired {
                ifname: "a".into(),
                queue: 0,
            },
        ];
        for e in errors {
            assert!(!e.to_string().contains('\n'), "{e}");
        }
    }
}
