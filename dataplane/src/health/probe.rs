//! One probe on the wire: a non-blocking socket of the kernel's and the
//! step it waits for.
//!
//! - `tcp`: connect; healthy once connected. The socket has `SO_LINGER`
//!   0, so closing it sends a RST: no TIME_WAIT piles up on either side at
//!   thousands of checks a second.
//! - `http`: connect, write a minimal `GET`, read the status line's first
//!   12 bytes (`HTTP/1.1 200`) into a fixed buffer and no more, then
//!   reset the connection.
//! - `udp`: a connected socket sends the payload and reads one reply (at
//!   most the expected prefix's length). Being connected, it receives ICMP
//!   port unreachable as an error: the check fails at once, without
//!   waiting for the timeout.
//!
//! The prober registers each socket edge-triggered for everything it may
//! wait for, once; closing the socket removes it from epoll. So a tcp
//! check costs socket, setsockopt, connect, epoll_ctl and close, plus
//! getsockopt only when the connect failed.

use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::epoll::EpollFlags;
use nix::sys::socket::{
    self, getsockopt, setsockopt, sockopt, AddressFamily, MsgFlags, SockFlag, SockType,
    SockaddrStorage,
};

use super::check::{CheckKind, HttpCheck};
use super::state::{CheckResult, FailureReason};

/// Bytes of a status line the check reads: `HTTP/1.x NNN`.
const STATUS_PREFIX: usize = 12;

/// What a probe does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// Waits for readiness.
    Pending,
    /// Finished with this result.
    Done(CheckResult),
}

/// Why a probe did not start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum StartError {
    /// A local shortage (file descriptors, ports, memory): not the
    /// target's fault, so not counted against it.
    Local(Errno),
    /// The target failed at once (no route, refused).
    Failed(FailureReason),
}

#[derive(Debug)]
enum Stage {
    Connecting,
    Sending {
        sent: usize,
    },
    Reading {
        have: usize,
        head: [u8; STATUS_PREFIX],
    },
    AwaitingReply,
}

/// A probe in flight. Dropping it closes the socket (a TCP one with a RST).
#[derive(Debug)]
pub(super) struct Probe {
    fd: OwnedFd,
    stage: Stage,
}

/// The request an http check writes to `address`.
pub(super) fn http_request(check: &HttpCheck, address: SocketAddr) -> Box<[u8]> {
    let host = match check.host() {
        Some(host) => host.to_string(),
        None => address.to_string(),
    };
    format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: flowgate-health\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        check.path()
    )
    .into_bytes()
    .into_boxed_slice()
}

/// The readiness a probe's socket is registered for.
pub(super) fn interest(kind: &CheckKind) -> EpollFlags {
    match kind {
        CheckKind::Udp(_) => EpollFlags::EPOLLIN | EpollFlags::EPOLLET,
        _ => {
            EpollFlags::EPOLLIN
                | EpollFlags::EPOLLOUT
                | EpollFlags::EPOLLRDHUP
                | EpollFlags::EPOLLET
        }
    }
}

impl Probe {
    /// Opens a socket to `address` and starts the check. `request` is the
    /// http request (empty for other kinds). The step may already be
    /// `Done` (a connect to loopback can complete at once).
    pub(super) fn start(
        address: SocketAddr,
        kind: &CheckKind,
        request: &[u8],
    ) -> Result<(Probe, Step), StartError> {
        let family = match address {
            SocketAddr::V4(_) => AddressFamily::Inet,
            SocketAddr::V6(_) => AddressFamily::Inet6,
        };
        let sock_type = match kind {
            CheckKind::Udp(_) => SockType::Datagram,
            _ => SockType::Stream,
        };
        let fd = socket::socket(
            family,
            sock_type,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(StartError::Local)?;
        let peer = SockaddrStorage::from(address);
        if sock_type == SockType::Stream {
            let reset_on_close = nix::libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            setsockopt(&fd, sockopt::Linger, &reset_on_close).map_err(StartError::Local)?;
        }
        let connected = match socket::connect(raw(&fd), &peer) {
            Ok(()) => true,
            Err(Errno::EINPROGRESS) => false,
            Err(e) if is_local(e) => return Err(StartError::Local(e)),
            Err(e) => return Err(StartError::Failed(classify(e))),
        };
        let mut probe = Probe {
            fd,
            stage: Stage::Connecting,
        };
        let step = match kind {
            CheckKind::Udp(udp) => {
                probe.stage = Stage::AwaitingReply;
                match socket::send(raw(&probe.fd), udp.payload(), MsgFlags::MSG_NOSIGNAL) {
                    Ok(_) => Step::Pending,
                    Err(e) if is_local(e) => return Err(StartError::Local(e)),
                    Err(e) => Step::Done(CheckResult::Failed(classify(e))),
                }
            }
            _ if connected => probe.connected(kind, request),
            _ => Step::Pending,
        };
        Ok((probe, step))
    }

    /// The socket, for registering with epoll.
    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Advances on readiness `events`.
    pub(super) fn on_ready(
        &mut self,
        events: EpollFlags,
        kind: &CheckKind,
        request: &[u8],
    ) -> Step {
        match self.stage {
            Stage::Connecting => {
                if events.intersects(EpollFlags::EPOLLERR | EpollFlags::EPOLLHUP) {
                    Step::Done(CheckResult::Failed(self.socket_error()))
                } else if events.contains(EpollFlags::EPOLLOUT) {
                    self.connected(kind, request)
                } else {
                    Step::Pending
                }
            }
            Stage::Sending { .. } => self.send_request(kind, request),
            Stage::Reading { .. } => self.read_status(kind),
            Stage::AwaitingReply => self.read_reply(kind),
        }
    }

    fn connected(&mut self, kind: &CheckKind, request: &[u8]) -> Step {
        match kind {
            CheckKind::Http(_) => {
                self.stage = Stage::Sending { sent: 0 };
                self.send_request(kind, request)
            }
            _ => Step::Done(CheckResult::Ok),
        }
    }

    fn send_request(&mut self, kind: &CheckKind, request: &[u8]) -> Step {
        let Stage::Sending { mut sent } = self.stage else {
            return Step::Pending;
        };
        while sent < request.len() {
            match socket::send(raw(&self.fd), &request[sent..], MsgFlags::MSG_NOSIGNAL) {
                Ok(n) => sent += n,
                Err(Errno::EAGAIN) => {
                    self.stage = Stage::Sending { sent };
                    return Step::Pending;
                }
                Err(Errno::EINTR) => {}
                Err(e) => return Step::Done(CheckResult::Failed(classify(e))),
            }
        }
        self.stage = Stage::Reading {
            have: 0,
            head: [0; STATUS_PREFIX],
        };
        self.read_status(kind)
    }

    fn read_status(&mut self, kind: &CheckKind) -> Step {
        let Stage::Reading { mut have, mut head } = self.stage else {
            return Step::Pending;
        };
        let CheckKind::Http(http) = kind else {
            return Step::Pending;
        };
        // Bounded: at most STATUS_PREFIX bytes are ever read.
        while have < STATUS_PREFIX {
            match socket::recv(raw(&self.fd), &mut head[have..], MsgFlags::empty()) {
                Ok(0) => {
                    let reason = if b"HTTP/1."[..have.min(7)] == head[..have.min(7)] {
                        FailureReason::Closed
                    } else {
                        FailureReason::NotHttp
                    };
                    return Step::Done(CheckResult::Failed(reason));
                }
                Ok(n) => have += n,
                Err(Errno::EAGAIN) => {
                    self.stage = Stage::Reading { have, head };
                    return Step::Pending;
                }
                Err(Errno::EINTR) => {}
                Err(e) => return Step::Done(CheckResult::Failed(classify(e))),
            }
        }
        Step::Done(match parse_status(&head) {
            Some(status) if http.status().contains(status) => CheckResult::Ok,
            Some(status) => CheckResult::Failed(FailureReason::BadStatus(status)),
            None => CheckResult::Failed(FailureReason::NotHttp),
        })
    }

    fn read_reply(&mut self, kind: &CheckKind) -> Step {
        let CheckKind::Udp(udp) = kind else {
            return Step::Pending;
        };
        let expect = udp.expect().unwrap_or(&[]);
        let mut buf = [0u8; super::check::MAX_EXPECT_LEN];
        let want = expect.len().max(1);
        loop {
            // MSG_TRUNC: the datagram's real length, though at most `want`
            // bytes are copied.
            match socket::recv(raw(&self.fd), &mut buf[..want], MsgFlags::MSG_TRUNC) {
                Ok(n) if n < expect.len() => {
                    return Step::Done(CheckResult::Failed(FailureReason::ShortReply))
                }
                Ok(_) if buf[..expect.len()] != *expect => {
                    return Step::Done(CheckResult::Failed(FailureReason::MismatchedReply))
                }
                Ok(_) => return Step::Done(CheckResult::Ok),
                Err(Errno::EAGAIN) => return Step::Pending,
                Err(Errno::EINTR) => {}
                Err(e) => return Step::Done(CheckResult::Failed(classify(e))),
            }
        }
    }

    fn socket_error(&self) -> FailureReason {
        match getsockopt(&self.fd, sockopt::SocketError) {
            Ok(0) => FailureReason::Reset,
            Ok(errno) => classify(Errno::from_raw(errno)),
            Err(e) => classify(e),
        }
    }
}

fn raw(fd: &OwnedFd) -> std::os::fd::RawFd {
    use std::os::fd::AsRawFd;
    fd.as_raw_fd()
}

/// A socket error as a check failure.
fn classify(e: Errno) -> FailureReason {
    match e {
        Errno::ECONNREFUSED => FailureReason::Refused,
        Errno::ETIMEDOUT => FailureReason::Timeout,
        Errno::ECONNRESET | Errno::EPIPE | Errno::ECONNABORTED => FailureReason::Reset,
        Errno::ENETUNREACH | Errno::EHOSTUNREACH | Errno::ENETDOWN | Errno::EHOSTDOWN => {
            FailureReason::Unreachable
        }
        e => FailureReason::Error(e as i32),
    }
}

/// A shortage of this box, not a fault of the target.
fn is_local(e: Errno) -> bool {
    matches!(
        e,
        Errno::EMFILE
            | Errno::ENFILE
            | Errno::ENOBUFS
            | Errno::ENOMEM
            | Errno::EADDRNOTAVAIL
            | Errno::EAGAIN
    )
}

/// The status of `HTTP/1.x NNN`, if `head` is one (and NNN is 100–599).
pub(super) fn parse_status(head: &[u8; STATUS_PREFIX]) -> Option<u16> {
    if &head[..7] != b"HTTP/1." || !head[7].is_ascii_digit() || head[8] != b' ' {
        return None;
    }
    let digits = &head[9..12];
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let status = digits
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    (100..=599).contains(&status).then_some(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::check::StatusRange;

    fn head(s: &str) -> [u8; STATUS_PREFIX] {
        s.as_bytes()[..STATUS_PREFIX].try_into().unwrap()
    }

    #[test]
    fn status_lines_are_read_from_twelve_bytes() {
        assert_eq!(parse_status(&head("HTTP/1.1 200 OK")), Some(200));
        assert_eq!(parse_status(&head("HTTP/1.0 503 Service")), Some(503));
        assert_eq!(parse_status(&head("HTTP/1.1 099 x")), None);
        assert_eq!(parse_status(&head("HTTP/1.1 600 x")), None);
        assert_eq!(parse_status(&head("HTTP/2.0 200 x")), None);
        assert_eq!(parse_status(&head("HTTP/1.1 2x0 x")), None);
        assert_eq!(parse_status(&head("SSH-2.0-OpenSSH")), None);
        assert_eq!(parse_status(&[0xff; STATUS_PREFIX]), None);
    }

    #[test]
    fn the_request_is_a_minimal_get_with_the_host() {
        let addr: SocketAddr = "198.18.1.10:8080".parse().unwrap();
        let check = HttpCheck::new("/healthz?x=1", None, StatusRange::DEFAULT).unwrap();
        assert_eq!(
            std::str::from_utf8(&http_request(&check, addr)).unwrap(),
            "GET /healthz?x=1 HTTP/1.1\r\nHost: 198.18.1.10:8080\r\nUser-Agent: flowgate-health\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        let v6: SocketAddr = "[2001:2::10]:80".parse().unwrap();
        let named = HttpCheck::new("/", Some("api.example"), StatusRange::DEFAULT).unwrap();
        assert!(std::str::from_utf8(&http_request(&named, v6))
            .unwrap()
            .contains("\r\nHost: api.example\r\n"));
        let unnamed = HttpCheck::new("/", None, StatusRange::DEFAULT).unwrap();
        assert!(std::str::from_utf8(&http_request(&unnamed, v6))
            .unwrap()
            .contains("\r\nHost: [2001:2::10]:80\r\n"));
    }
}
