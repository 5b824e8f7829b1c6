//! The heartbeat endpoint: a UDP socket on the management address and a
//! thread that checks each datagram and reports good heartbeats.
//!
//! Every datagram costs a bounded amount of work and no allocation: it is
//! read into a fixed buffer (one byte longer than the longest heartbeat,
//! to tell an oversized one), rate-limited by its source before it is even
//! parsed, parsed without copying, its token compared in constant time,
//! and only then handed to the sink. Nothing is sent back: no reply can be
//! reflected at a spoofed source. Outcomes are counted.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::message::{parse, MessageError, MAX_DATAGRAM};
use super::rate_limit::{RateLimit, SourceRateLimiter};
use super::token::HeartbeatTokens;
use crate::health::schedule::duration_nanos;
use crate::health::waker::Waker;
use crate::pipeline::Counter;

/// Datagrams read per wake before checking the stop flag again.
const DATAGRAMS_PER_WAKE: usize = 256;

/// A good heartbeat, for the sink.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    /// The service (the name as the token table holds it).
    pub service: Arc<str>,
    /// The backend's address and port.
    pub backend: SocketAddr,
    /// Where the datagram came from.
    pub source: SocketAddr,
    /// When it was read.
    pub at: Instant,
}

/// The sink's answer for a heartbeat naming no backend of its service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownBackend;

/// What the listener does with a good heartbeat: the daemon looks up the
/// endpoint, moves its deadline ([`crate::liveness::Liveness::heartbeat`])
/// and tells the control thread.
pub type HeartbeatSink = Box<dyn FnMut(&Heartbeat) -> Result<(), UnknownBackend> + Send>;

/// The listener's settings.
#[derive(Clone, Copy, Debug)]
pub struct HeartbeatOptions {
    /// The management address and port to listen on.
    pub bind: SocketAddr,
    /// Each source's allowance.
    pub rate: RateLimit,
    /// Rate-limit buckets (memory: 16 bytes each).
    pub rate_buckets: usize,
}

impl HeartbeatOptions {
    /// Listens on `bind` with the default rate limit and 4 096 buckets.
    pub fn new(bind: SocketAddr) -> HeartbeatOptions {
        HeartbeatOptions {
            bind,
            rate: RateLimit::default(),
            rate_buckets: 4096,
        }
    }
}

/// What happened to the datagrams.
#[derive(Debug, Default)]
pub struct HeartbeatCounters {
    /// Datagrams read.
    pub received: Counter,
    /// Heartbeats taken by the sink.
    pub accepted: Counter,
    /// Dropped: over their source's rate.
    pub rate_limited: Counter,
    /// Dropped: longer than a heartbeat can be.
    pub oversized: Counter,
    /// Dropped: not a heartbeat.
    pub malformed: Counter,
    /// Dropped: no such service, or it takes no heartbeats.
    pub unknown_service: Counter,
    /// Dropped: wrong token.
    pub bad_token: Counter,
    /// Dropped by the sink: no such backend in the service.
    pub unknown_backend: Counter,
}

/// The running endpoint. Dropping it stops the thread and closes the socket.
#[derive(Debug)]
pub struct HeartbeatListener {
    local: SocketAddr,
    counters: Arc<HeartbeatCounters>,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

impl HeartbeatListener {
    /// Binds `options.bind` and starts the thread.
    pub fn start(
        options: HeartbeatOptions,
        tokens: Arc<HeartbeatTokens>,
        sink: HeartbeatSink,
    ) -> io::Result<HeartbeatListener> {
        let socket = UdpSocket::bind(options.bind)?;
        socket.set_nonblocking(true)?;
        let local = socket.local_addr()?;
        let counters = Arc::new(HeartbeatCounters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let waker = Arc::new(Waker::new()?);
        let mut serve = Serve {
            socket,
            tokens,
            sink,
            limiter: SourceRateLimiter::new(options.rate, options.rate_buckets),
            counters: Arc::clone(&counters),
            epoch: Instant::now(),
        };
        let (thread_stop, thread_waker) = (Arc::clone(&stop), Arc::clone(&waker));
        let thread = std::thread::Builder::new()
            .name("flowgate-heartbeat".into())
            .spawn(move || {
                if let Err(e) = serve.run(&thread_stop, &thread_waker) {
                    tracing::error!(error = %e, "heartbeat listener stopped");
                }
            })?;
        Ok(HeartbeatListener {
            local,
            counters,
            stop,
            waker,
            thread: Some(thread),
        })
    }

    /// The address it listens on (the port, when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// What happened to the datagrams so far.
    pub fn counters(&self) -> &HeartbeatCounters {
        &self.counters
    }
}

impl Drop for HeartbeatListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.waker.wake();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Serve {
    socket: UdpSocket,
    tokens: Arc<HeartbeatTokens>,
    sink: HeartbeatSink,
    limiter: SourceRateLimiter,
    counters: Arc<HeartbeatCounters>,
    epoch: Instant,
}

impl Serve {
    fn run(&mut self, stop: &AtomicBool, waker: &Waker) -> io::Result<()> {
        // One longer than a heartbeat can be: a datagram that fills it is oversized.
        let mut buf = [0u8; MAX_DATAGRAM + 1];
        while !stop.load(Ordering::Acquire) {
            let mut fds = [
                PollFd::new(self.socket.as_fd(), PollFlags::POLLIN),
                PollFd::new(waker.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
            waker.drain();
            for _ in 0..DATAGRAMS_PER_WAKE {
                match self.socket.recv_from(&mut buf) {
                    Ok((n, source)) => self.handle(&buf[..n], source),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    // An ICMP error queued on the socket, or the like: the
                    // next datagram is unaffected.
                    Err(_) => {}
                }
            }
        }
        Ok(())
    }

    fn handle(&mut self, datagram: &[u8], source: SocketAddr) {
        let c = &self.counters;
        c.received.inc();
        let now = Instant::now();
        let now_ns = duration_nanos(now.duration_since(self.epoch)).max(1);
        if !self.limiter.allow(source.ip(), now_ns) {
            c.rate_limited.inc();
            return;
        }
        let message = match parse(datagram) {
            Ok(m) => m,
            Err(MessageError::TooLong) => {
                c.oversized.inc();
                return;
            }
            Err(_) => {
                c.malformed.inc();
                return;
            }
        };
        let tokens = self.tokens.load();
        let Some((service, token)) = tokens.get_key_value(message.service) else {
            c.unknown_service.inc();
            return;
        };
        if !token.matches(message.token) {
            c.bad_token.inc();
            return;
        }
        let heartbeat = Heartbeat {
            service: Arc::clone(service),
            backend: message.backend,
            source,
            at: now,
        };
        match (self.sink)(&heartbeat) {
            Ok(()) => c.accepted.inc(),
            Err(UnknownBackend) => c.unknown_backend.inc(),
        }
    }
}
