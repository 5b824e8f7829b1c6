//! A route-netlink socket: requests, their replies, and notifications.
//!
//! Requests run on a blocking socket: the kernel answers every request
//! (with the reply, an acknowledgement, or an error), so a request waits
//! only for the kernel. Notifications arrive on a separate non-blocking
//! socket subscribed to a multicast group, so a dump's replies and
//! notifications never interleave.

use std::io;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket};
// MSG_TRUNC: `recv` returns the datagram's real length even when it did
// not fit. ENOBUFS: the kernel could not queue a notification for us.
use nix::libc::{ENOBUFS, MSG_TRUNC};

use super::NeighError;

/// Large enough for any one datagram the kernel sends on a route socket
/// (dump batches are at most a few pages).
const RECV_BUFFER: usize = 64 * 1024;
/// Receive buffer asked for the notification socket, so a burst of
/// neighbour changes does not overrun it.
const EVENTS_RCVBUF: usize = 4 * 1024 * 1024;
/// Most replies one request may produce before it is abandoned: a guard
/// against a kernel that never finishes a dump.
const MAX_REPLY_DATAGRAMS: usize = 1 << 20;

/// What one request expects back.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    /// Replies until `NLMSG_DONE` (`NLM_F_DUMP`).
    Dump,
    /// Zero or more replies, then an acknowledgement (`NLM_F_ACK`).
    Ack,
}

/// A blocking route-netlink socket for requests.
pub(crate) struct RequestSocket {
    socket: Socket,
    sequence: u32,
    buffer: Vec<u8>,
    /// Why the last reply that could not be decoded was skipped.
    last_decode_error: Option<String>,
}

impl RequestSocket {
    /// A socket in the calling thread's network namespace.
    pub(crate) fn open() -> Result<RequestSocket, NeighError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(NeighError::Socket)?;
        socket.bind_auto().map_err(NeighError::Socket)?;
        socket.set_ext_ack(true).map_err(NeighError::Socket)?;
        Ok(RequestSocket {
            socket,
            sequence: 0,
            buffer: Vec::with_capacity(RECV_BUFFER),
            last_decode_error: None,
        })
    }

    /// Sends `message` with `flags` (on top of `NLM_F_REQUEST` and what
    /// `expect` implies) and collects the kernel's replies. A kernel error
    /// becomes [`NeighError::Kernel`] naming `what`. A reply this crate
    /// cannot decode is skipped (see [`Self::last_decode_error`]): one odd
    /// entry must not hide the rest of a dump.
    pub(crate) fn request(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
        expect: Expect,
        what: &'static str,
    ) -> Result<Vec<RouteNetlinkMessage>, NeighError> {
        self.sequence = self.sequence.wrapping_add(1);
        let sequence = self.sequence;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST
            | flags
            | match expect {
                Expect::Dump => NLM_F_DUMP,
                Expect::Ack => NLM_F_ACK,
            };
        header.sequence_number = sequence;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
        packet.finalize();
        let mut bytes = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut bytes);
        self.socket.send(&bytes, 0).map_err(NeighError::Socket)?;

        let mut replies = Vec::new();
        for _ in 0..MAX_REPLY_DATAGRAMS {
            receive(&self.socket, &mut self.buffer).map_err(NeighError::Socket)?;
            for message in Messages::new(&self.buffer) {
                let message = match message {
                    Ok(message) => message,
                    Err(e) => {
                        self.last_decode_error = Some(e.to_string());
                        continue;
                    }
                };
                if message.header.sequence_number != sequence {
                    continue;
                }
                match message.payload {
                    NetlinkPayload::InnerMessage(inner) => replies.push(inner),
                    NetlinkPayload::Done(_) => return Ok(replies),
                    NetlinkPayload::Error(e) => match e.code {
                        None => return Ok(replies),
                        Some(_) => {
                            return Err(NeighError::Kernel {
                                what,
                                source: e.to_io(),
                            })
                        }
                    },
                    _ => {}
                }
            }
        }
        Err(NeighError::Kernel {
            what,
            source: io::Error::other("the kernel's reply never ended"),
        })
    }
}

impl RequestSocket {
    /// Why the last undecodable reply was skipped, if one was.
    pub(crate) fn last_decode_error(&self) -> Option<&str> {
        self.last_decode_error.as_deref()
    }
}

/// A non-blocking route-netlink socket subscribed to one multicast group.
pub(crate) struct NotificationSocket {
    socket: Socket,
    buffer: Vec<u8>,
}

impl NotificationSocket {
    /// Subscribes to `group` (an `RTNLGRP_*` number) in the calling
    /// thread's network namespace.
    pub(crate) fn subscribe(group: u32) -> Result<NotificationSocket, NeighError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(NeighError::Socket)?;
        socket.bind_auto().map_err(NeighError::Socket)?;
        // Best effort: the default buffer still works, only overruns sooner.
        let _ = socket.set_rx_buf_sz(EVENTS_RCVBUF);
        socket.add_membership(group).map_err(NeighError::Socket)?;
        socket.set_non_blocking(true).map_err(NeighError::Socket)?;
        Ok(NotificationSocket {
            socket,
            buffer: Vec::with_capacity(RECV_BUFFER),
        })
    }

    /// The messages of the next pending datagram; `Ok(None)` when none is
    /// pending. A notification lost to a full socket buffer is
    /// [`NeighError::EventsLost`].
    pub(crate) fn next_datagram(&mut self) -> Result<Option<Messages<'_>>, NeighError> {
        match receive(&self.socket, &mut self.buffer) {
            Ok(()) => Ok(Some(Messages::new(&self.buffer))),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) if e.raw_os_error() == Some(ENOBUFS) => Err(NeighError::EventsLost),
            Err(e) => Err(NeighError::Socket(e)),
        }
    }
}

/// Receives one datagram into `buffer` (replacing its contents).
fn receive(socket: &Socket, buffer: &mut Vec<u8>) -> io::Result<()> {
    buffer.clear();
    buffer.reserve(RECV_BUFFER);
    let capacity = buffer.capacity();
    let len = socket.recv(buffer, MSG_TRUNC)?;
    if len > capacity {
        return Err(io::Error::other(format!(
            "netlink datagram of {len} bytes did not fit in {capacity}"
        )));
    }
    Ok(())
}

/// The netlink messages of one datagram, in order.
pub(crate) struct Messages<'a> {
    rest: &'a [u8],
}

impl<'a> Messages<'a> {
    fn new(datagram: &'a [u8]) -> Messages<'a> {
        Messages { rest: datagram }
    }
}

impl Iterator for Messages<'_> {
    type Item = Result<NetlinkMessage<RouteNetlinkMessage>, NeighError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.len() < 16 {
            return None;
        }
        let len = self
            .rest
            .get(0..4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map_or(0, |b| u32::from_ne_bytes(b) as usize);
        // A message's length covers its header; messages are 4-aligned.
        let step = len.checked_add(3).map(|l| l & !3);
        let Some(step) = step.filter(|&s| s >= 16) else {
            self.rest = &[];
            return Some(Err(NeighError::Decode(format!(
                "netlink message with length {len}"
            ))));
        };
        let message = self
            .rest
            .get(..len.min(self.rest.len()))
            .unwrap_or_default();
        self.rest = self.rest.get(step..).unwrap_or_default();
        Some(NetlinkMessage::deserialize(message).map_err(|e| NeighError::Decode(e.to_string())))
    }
}
