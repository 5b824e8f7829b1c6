//! Why loading, attaching or updating the XDP program failed, in terms an
//! operator can act on.

use std::io;

use aya::programs::ProgramError;
use aya::EbpfError;
use nix::libc::{EACCES, EBUSY, EEXIST, ENODEV, ENOSYS, EOPNOTSUPP, EPERM};

/// How many of the verifier's last lines an error quotes.
const VERIFIER_TAIL_LINES: usize = 6;

/// Why the XDP filter failed. Each message is one line.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    /// The interface does not exist (in this network namespace).
    #[error("no such network interface: {0}")]
    NoSuchInterface(String),
    /// Not allowed to load BPF objects or attach XDP.
    #[error(
        "{0}: permission denied (run as root, or with CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON; \
         kernels before 5.11 also need a large enough RLIMIT_MEMLOCK)"
    )]
    Permission(String),
    /// The kernel or the driver lacks what the program needs.
    #[error("{0}: not supported by this kernel or driver (XDP and BPF are needed)")]
    Unsupported(String),
    /// The kernel's verifier refused the program.
    #[error("the kernel verifier rejected the XDP program: {0}")]
    Verifier(String),
    /// Another live process holds an XDP link on the interface; only it
    /// (or its exit) can remove it.
    #[error(
        "{interface} already has XDP program {program} attached through a bpf_link that a \
         running process holds; stop that process first"
    )]
    Busy {
        /// The interface.
        interface: String,
        /// The attached program's id.
        program: u32,
    },
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

impl XdpError {
    /// Classifies an I/O error of the step `what`.
    pub(crate) fn from_io(what: &str, error: &io::Error) -> XdpError {
        match error.raw_os_error() {
            Some(EPERM | EACCES) => XdpError::Permission(what.to_string()),
            Some(ENOSYS | EOPNOTSUPP) => XdpError::Unsupported(format!("{what} ({error})")),
            _ => XdpError::Other(format!("{what}: {error}")),
        }
    }

    /// Classifies a failed [`aya::Ebpf`] load.
    pub(crate) fn from_load(error: &EbpfError) -> XdpError {
        if let EbpfError::ProgramError(program) = error {
            return XdpError::from_program("loading the XDP program", program);
        }
        match first_io_error(error) {
            Some(io) => XdpError::from_io(&format!("loading the XDP object ({error})"), io),
            None => XdpError::Other(format!("loading the XDP object: {}", one_line(error))),
        }
    }

    /// Classifies a failed program load or attach, the step being `what`.
    pub(crate) fn from_program(what: &str, error: &ProgramError) -> XdpError {
        match error {
            ProgramError::LoadError {
                io_error,
                verifier_log,
            } => XdpError::from_rejected_load(what, io_error, &verifier_log.to_string()),
            ProgramError::UnknownInterface { name } => XdpError::NoSuchInterface(name.clone()),
            other => match first_io_error(other) {
                Some(io) if io.raw_os_error() == Some(ENODEV) => {
                    XdpError::Other(format!("{what}: the interface went away"))
                }
                Some(io) => XdpError::from_io(what, io),
                None => XdpError::Other(format!("{what}: {}", one_line(other))),
            },
        }
    }

    /// Classifies a failed `BPF_PROG_LOAD` with the verifier's `log`.
    fn from_rejected_load(what: &str, error: &io::Error, log: &str) -> XdpError {
        match error.raw_os_error() {
            Some(EPERM) => XdpError::Permission(what.to_string()),
            Some(ENOSYS) => XdpError::Unsupported(format!("{what} ({error})")),
            _ => XdpError::Verifier(verifier_tail(log, error)),
        }
    }

    /// Whether attaching failed because a program is already attached in
    /// this or the other mode (`EBUSY`, `EEXIST`).
    pub(crate) fn is_attach_conflict(error: &ProgramError) -> bool {
        first_io_error(error)
            .and_then(io::Error::raw_os_error)
            .is_some_and(|e| e == EBUSY || e == EEXIST)
    }
}

/// The verifier's last lines, joined on one line, after the errno.
fn verifier_tail(log: &str, error: &io::Error) -> String {
    let lines: Vec<&str> = log
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let tail = lines
        .get(lines.len().saturating_sub(VERIFIER_TAIL_LINES)..)
        .unwrap_or_default();
    if tail.is_empty() {
        format!("{error} (no verifier log)")
    } else {
        format!("{error}: {}", tail.join(" | "))
    }
}

/// The first [`io::Error`] in `error`'s source chain, itself included.
fn first_io_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a io::Error> {
    let mut current: Option<&'a (dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return Some(io);
        }
        current = e.source();
    }
    None
}

/// `error` and its sources on one line.
fn one_line(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errnos_map_to_what_an_operator_can_act_on() {
        let e = XdpError::from_io("creating map xsks", &io::Error::from_raw_os_error(EPERM));
        assert!(matches!(e, XdpError::Permission(_)), "{e}");
        assert!(e.to_string().contains("CAP_BPF"));
        let e = XdpError::from_io("bpf()", &io::Error::from_raw_os_error(ENOSYS));
        assert!(matches!(e, XdpError::Unsupported(_)), "{e}");
        let e = XdpError::from_io("attach", &io::Error::from_raw_os_error(EEXIST));
        assert!(matches!(e, XdpError::Other(_)), "{e}");
    }

    #[test]
    fn a_verifier_rejection_quotes_the_logs_last_lines_on_one_line() {
        let log = "0: R1=ctx() R10=fp0\n\n1: (61) r2 = *(u32 *)(r1 +0)\n2: invalid access to packet\nprocessed 3 insns\n";
        let tail = verifier_tail(log, &io::Error::from_raw_os_error(EACCES));
        assert!(!tail.contains('\n'));
        assert!(
            tail.ends_with("2: invalid access to packet | processed 3 insns"),
            "{tail}"
        );
        let long: String = (0..20).map(|i| format!("line {i}\n")).collect();
        let tail = verifier_tail(&long, &io::Error::from_raw_os_error(nix::libc::EINVAL));
        assert!(tail.contains("line 19") && tail.contains("line 14") && !tail.contains("line 13"));
    }

    #[test]
    fn program_errors_are_classified() {
        let e = XdpError::from_rejected_load(
            "loading",
            &io::Error::from_raw_os_error(EACCES),
            "0: R1=ctx()\nR0 !read_ok\n",
        );
        assert!(
            matches!(e, XdpError::Verifier(ref t) if t.ends_with("R0 !read_ok")),
            "{e}"
        );
        let e = XdpError::from_rejected_load("loading", &io::Error::from_raw_os_error(EPERM), "");
        assert!(matches!(e, XdpError::Permission(_)), "{e}");
        let e = XdpError::from_program(
            "attaching",
            &ProgramError::UnknownInterface { name: "fg9".into() },
        );
        assert!(matches!(e, XdpError::NoSuchInterface(ref n) if n == "fg9"));
    }
}
