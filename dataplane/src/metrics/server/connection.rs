//! One scrape connection: hyper speaks HTTP/1.1 on it, and a watchdog
//! closes it when the phase it is in outlasts its deadline.
//!
//! A connection is always in one of three phases, each with a deadline
//! counted from the moment it began:
//!
//! - [`Phase::ReadingHead`]: from accept, or from the first byte of a
//!   request on a kept-alive connection, until the whole request head is
//!   in: [`Timeouts::header_read`]. A client that sends its head a byte at
//!   a time gets no more time than one that sends nothing.
//! - [`Phase::Answering`]: from the end of the request head until the last
//!   byte of the response is in the kernel's send buffer:
//!   [`Timeouts::write`]. A client that does not read its response is
//!   closed then.
//! - [`Phase::KeptAlive`]: after a response, until the first byte of the
//!   next request: [`Timeouts::keep_alive`].
//!
//! The phase is read off the connection's byte stream ([`Watched`]) and its
//! request handler, not off hyper's internals; hyper's own header timer is
//! off, as it cannot tell keep-alive waiting from a slow head.

use std::convert::Infallible;
use std::io::{self, IoSlice};
use std::os::fd::RawFd;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use nix::sys::socket::{recv, MsgFlags};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{watch, Notify};
use tokio::time::{sleep_until, Instant};

use super::respond::respond;
use super::SampleSource;

/// Where a connection is in its request/response cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// Waiting for a request head to be complete.
    ReadingHead,
    /// A request is being answered.
    Answering,
    /// Between requests, kept alive.
    KeptAlive,
}

/// The deadline of each phase.
#[derive(Clone, Copy, Debug)]
pub(super) struct Timeouts {
    /// For [`Phase::ReadingHead`].
    pub header_read: Duration,
    /// For [`Phase::Answering`].
    pub write: Duration,
    /// For [`Phase::KeptAlive`].
    pub keep_alive: Duration,
}

impl Timeouts {
    fn of(&self, phase: Phase) -> Duration {
        match phase {
            Phase::ReadingHead => self.header_read,
            Phase::Answering => self.write,
            Phase::KeptAlive => self.keep_alive,
        }
    }
}

/// Why a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ended {
    /// The client closed it, or asked for it to be closed (or hyper did,
    /// after a malformed request).
    Closed,
    /// A phase outlasted its deadline.
    TimedOut(Phase),
    /// It was closed to make room for a new connection.
    Evicted,
    /// The server stopped.
    Stopped,
}

#[derive(Debug)]
struct State {
    phase: Phase,
    since: Instant,
    /// hyper has taken the whole response body (or dropped it, for HEAD).
    response_taken: bool,
    /// Bytes of a next request arrived while answering.
    early_input: bool,
    evicted: bool,
    /// The connection's socket while it is open (see
    /// [`Tracker::has_unread_input`]); `None` for a stream that is not a
    /// socket, and once the stream is being closed.
    socket: Option<RawFd>,
}

/// What the server knows of one connection: its phase, since when, and
/// whether it was evicted. Shared by the byte stream, the request handler,
/// the watchdog and the server's table of open connections.
#[derive(Debug)]
pub(super) struct Tracker {
    state: Mutex<State>,
    /// Woken on every change, so the watchdog can re-arm its timer.
    changed: Notify,
}

impl Tracker {
    /// A connection accepted at `now`: its head is due first.
    pub(super) fn new(now: Instant) -> Tracker {
        Tracker {
            state: Mutex::new(State {
                phase: Phase::ReadingHead,
                since: now,
                response_taken: false,
                early_input: false,
                evicted: false,
                socket: None,
            }),
            changed: Notify::new(),
        }
    }

    /// A connection on socket `fd` accepted at `now`. The socket must stay
    /// open until the [`Watched`] stream that carries it is dropped, which
    /// forgets it first.
    pub(super) fn with_socket(now: Instant, fd: RawFd) -> Tracker {
        let tracker = Tracker::new(now);
        tracker.state().socket = Some(fd);
        tracker
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Nothing panics while holding it; a poisoned state is still whole.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn enter(&self, state: &mut State, phase: Phase) {
        state.phase = phase;
        state.since = Instant::now();
        self.changed.notify_one();
    }

    /// Bytes arrived from the client.
    fn on_input(&self) {
        let mut state = self.state();
        match state.phase {
            Phase::KeptAlive => self.enter(&mut state, Phase::ReadingHead),
            Phase::Answering => state.early_input = true,
            Phase::ReadingHead => {}
        }
    }

    /// A whole request head is in; its answer begins.
    pub(super) fn on_request(&self) {
        let mut state = self.state();
        state.response_taken = false;
        state.early_input = false;
        self.enter(&mut state, Phase::Answering);
    }

    /// hyper is done with the response body.
    fn on_response_taken(&self) {
        self.state().response_taken = true;
    }

    /// Everything written so far is in the kernel.
    fn on_flushed(&self) {
        let mut state = self.state();
        if state.phase == Phase::Answering && state.response_taken {
            state.response_taken = false;
            let next = if state.early_input {
                Phase::ReadingHead
            } else {
                Phase::KeptAlive
            };
            self.enter(&mut state, next);
        }
    }

    /// Asks the connection's task to close it now.
    pub(super) fn evict(&self) {
        self.state().evicted = true;
        self.changed.notify_one();
    }

    /// Whether the client has sent bytes the server has not read yet: a
    /// request on its way in, which the connection's task has not been
    /// scheduled to read (under load, a scraper's request can wait in the
    /// kernel while the server accepts other connections). Such a
    /// connection is not idle, whatever its phase says. One non-blocking
    /// peek at the socket (false for a stream that is no socket, or one
    /// being closed, or whose client closed it).
    pub(super) fn has_unread_input(&self) -> bool {
        // The lock is held across the peek: the stream forgets its socket
        // under it before closing it (`Watched`'s drop), so the descriptor
        // peeked is this connection's.
        let state = self.state();
        let Some(fd) = state.socket else {
            return false;
        };
        let mut byte = [0u8; 1];
        let peeked = recv(fd, &mut byte, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT);
        matches!(peeked, Ok(n) if n > 0)
    }

    /// The stream is about to close its socket.
    fn forget_socket(&self) {
        self.state().socket = None;
    }

    /// The phase and since when: the server evicts the connection that
    /// has waited on its client longest, answering ones last.
    pub(super) fn phase(&self) -> (Phase, Instant) {
        let state = self.state();
        (state.phase, state.since)
    }

    /// Waits until the connection must end: evicted, or its phase past its
    /// deadline.
    pub(super) async fn expiry(&self, timeouts: Timeouts) -> Ended {
        loop {
            let (deadline, phase) = {
                let state = self.state();
                if state.evicted {
                    return Ended::Evicted;
                }
                (state.since + timeouts.of(state.phase), state.phase)
            };
            if Instant::now() >= deadline {
                return Ended::TimedOut(phase);
            }
            tokio::select! {
                () = sleep_until(deadline) => {}
                () = self.changed.notified() => {}
            }
        }
    }
}

/// A byte stream that tells its [`Tracker`] when input arrives and when
/// output has been flushed.
pub(super) struct Watched<S> {
    inner: S,
    tracker: Arc<Tracker>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.tracker.on_input();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    /// hyper flushes the stream only once its own buffer is written out.
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        if matches!(polled, Poll::Ready(Ok(()))) {
            self.tracker.on_flushed();
        }
        polled
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S> Drop for Watched<S> {
    /// Runs before `inner` (and its socket) is dropped.
    fn drop(&mut self) {
        self.tracker.forget_socket();
    }
}

/// A whole response body in one frame that tells the [`Tracker`] when
/// hyper is done with it (dropped after its last frame, or unread for
/// `HEAD`).
struct Answer {
    data: Option<Bytes>,
    tracker: Arc<Tracker>,
}

impl Body for Answer {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.get_mut().data.take().map(|d| Ok(Frame::data(d))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        self.tracker.on_response_taken();
    }
}

/// How every connection is served.
pub(super) struct ConnectionConfig {
    /// Phase deadlines.
    pub timeouts: Timeouts,
    /// hyper's read buffer limit (at least 8 KiB, hyper's minimum).
    pub max_request_bytes: usize,
    /// Where the exposition comes from.
    pub source: SampleSource,
}

/// Serves one connection until the client closes it, it outlasts a
/// deadline, it is evicted, or the server stops (a response being
/// written then still finishes, within its deadline).
pub(super) async fn serve_connection<S>(
    stream: S,
    tracker: Arc<Tracker>,
    config: Arc<ConnectionConfig>,
    mut stop: watch::Receiver<bool>,
) -> Ended
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(Watched {
        inner: stream,
        tracker: Arc::clone(&tracker),
    });
    let service = service_fn({
        let (tracker, config) = (Arc::clone(&tracker), Arc::clone(&config));
        move |request: Request<Incoming>| {
            tracker.on_request();
            let answer = respond(request.method(), request.uri().path(), &config.source);
            let answer = answer.map(|data| Answer {
                data: Some(data).filter(|d| !d.is_empty()),
                tracker: Arc::clone(&tracker),
            });
            std::future::ready(Ok::<Response<Answer>, Infallible>(answer))
        }
    });
    let connection = http1::Builder::new()
        .keep_alive(true)
        // Deadlines are the watchdog's (see the module's docs).
        .header_read_timeout(None)
        // Header names as the server always wrote them.
        .title_case_headers(true)
        .max_buf_size(config.max_request_bytes.max(MIN_REQUEST_BYTES))
        .serve_connection(io, service);
    let expiry = tracker.expiry(config.timeouts);
    tokio::pin!(connection, expiry);
    let mut stopping = false;
    loop {
        tokio::select! {
            served = connection.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(error = %e, "metrics: connection ended");
                }
                return if stopping { Ended::Stopped } else { Ended::Closed };
            }
            // Dropping the connection closes the socket.
            ended = expiry.as_mut() => return ended,
            _ = stop.changed(), if !stopping => {
                if tracker.phase().0 != Phase::Answering {
                    return Ended::Stopped;
                }
                // Finish this response, then close.
                stopping = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// hyper's smallest read buffer.
pub(super) const MIN_REQUEST_BYTES: usize = 8 * 1024;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::metrics::MetricsSample;
    use crate::table::Snapshot;

    fn config(timeouts: Timeouts) -> Arc<ConnectionConfig> {
        Arc::new(ConnectionConfig {
            timeouts,
            max_request_bytes: MIN_REQUEST_BYTES,
            source: Arc::new(|| (MetricsSample::default(), Arc::new(Snapshot::empty()))),
        })
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    const SLOW: Duration = Duration::from_secs(60);

    /// Reads one response: its head, then `Content-Length` bytes.
    async fn read_response(client: &mut tokio::io::DuplexStream) -> Vec<u8> {
        let mut response = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&response);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .and_then(|v| v.parse().ok())
                    .expect("a Content-Length");
                if body.len() >= length {
                    return response;
                }
            }
            let n = client.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed early");
            response.extend_from_slice(&buf[..n]);
        }
    }

    /// A client that asks and never reads: the response does not fit the
    /// 64-byte pipe, so it stays in `Answering` until its deadline.
    #[test]
    fn a_client_that_does_not_read_its_response_is_closed_at_the_write_deadline() {
        runtime().block_on(async {
            let write = Duration::from_millis(300);
            let timeouts = Timeouts {
                header_read: SLOW,
                write,
                keep_alive: SLOW,
            };
            let (mut client, server) = tokio::io::duplex(64);
            let tracker = Arc::new(Tracker::new(Instant::now()));
            let (_stop, stop) = watch::channel(false);
            let served = tokio::spawn(serve_connection(
                server,
                Arc::clone(&tracker),
                config(timeouts),
                stop,
            ));
            client
                .write_all(b"GET /metrics HTTP/1.1\r\n\r\n")
                .await
                .unwrap();
            let ended = tokio::time::timeout(Duration::from_secs(10), served)
                .await
                .expect("closed")
                .unwrap();
            assert_eq!(ended, Ended::TimedOut(Phase::Answering));
            let took = tracker.phase().1.elapsed();
            assert!(took >= write && took < write * 4, "{took:?}");
        });
    }

    /// The same client, reading: its response is whole, and the
    /// connection, kept alive, waits in `KeptAlive` until that deadline.
    #[test]
    fn a_kept_alive_connection_is_closed_at_the_keep_alive_deadline() {
        runtime().block_on(async {
            let keep_alive = Duration::from_millis(300);
            let timeouts = Timeouts {
                header_read: SLOW,
                write: SLOW,
                keep_alive,
            };
            let (mut client, server) = tokio::io::duplex(64);
            let tracker = Arc::new(Tracker::new(Instant::now()));
            let (_stop, stop) = watch::channel(false);
            let served = tokio::spawn(serve_connection(
                server,
                Arc::clone(&tracker),
                config(timeouts),
                stop,
            ));
            client
                .write_all(b"GET /metrics HTTP/1.1\r\n\r\n")
                .await
                .unwrap();
            let response = read_response(&mut client).await;
            let ended = tokio::time::timeout(Duration::from_secs(10), served)
                .await
                .expect("closed")
                .unwrap();
            assert_eq!(ended, Ended::TimedOut(Phase::KeptAlive));
            // The last phase began when the response was out.
            let (phase, since) = tracker.phase();
            assert_eq!(phase, Phase::KeptAlive);
            let took = since.elapsed();
            assert!(took >= keep_alive && took < keep_alive * 4, "{took:?}");
            assert!(response.starts_with(b"HTTP/1.1 200 OK\r\n"));
        });
    }

    #[test]
    fn a_stop_closes_a_waiting_connection_at_once() {
        runtime().block_on(async {
            let timeouts = Timeouts {
                header_read: SLOW,
                write: SLOW,
                keep_alive: SLOW,
            };
            let (_client, server) = tokio::io::duplex(64);
            let tracker = Arc::new(Tracker::new(Instant::now()));
            let (stop_tx, stop) = watch::channel(false);
            let served = tokio::spawn(serve_connection(server, tracker, config(timeouts), stop));
            tokio::task::yield_now().await;
            stop_tx.send(true).unwrap();
            let ended = tokio::time::timeout(Duration::from_secs(5), served)
                .await
                .expect("closed")
                .unwrap();
            assert_eq!(ended, Ended::Stopped);
        });
    }

    #[test]
    fn phases_follow_the_byte_stream() {
        let tracker = Tracker::new(Instant::now());
        assert_eq!(tracker.phase().0, Phase::ReadingHead);
        tracker.on_input();
        assert_eq!(tracker.phase().0, Phase::ReadingHead);
        tracker.on_request();
        assert_eq!(tracker.phase().0, Phase::Answering);
        // A flush before hyper has taken the whole body changes nothing.
        tracker.on_flushed();
        assert_eq!(tracker.phase().0, Phase::Answering);
        tracker.on_response_taken();
        tracker.on_flushed();
        assert_eq!(tracker.phase().0, Phase::KeptAlive);
        tracker.on_input();
        assert_eq!(tracker.phase().0, Phase::ReadingHead);
        // A pipelined request's bytes while answering: its head is due next.
        tracker.on_request();
        tracker.on_input();
        tracker.on_response_taken();
        tracker.on_flushed();
        assert_eq!(tracker.phase().0, Phase::ReadingHead);
    }

    #[test]
    fn unread_input_is_seen_in_the_socket_until_the_stream_is_dropped() {
        use std::io::{Read, Write};
        use std::os::fd::AsRawFd;
        let (mut client, server) = std::os::unix::net::UnixStream::pair().unwrap();
        let tracker = Arc::new(Tracker::with_socket(Instant::now(), server.as_raw_fd()));
        assert!(!tracker.has_unread_input(), "nothing sent yet");
        const HEAD: &[u8] = b"GET /metrics HTTP/1.1\r\n\r\n";
        client.write_all(HEAD).unwrap();
        assert!(tracker.has_unread_input());
        assert!(tracker.has_unread_input(), "a peek leaves the bytes in");
        let mut server = server;
        let mut head = [0u8; HEAD.len()];
        server.read_exact(&mut head).unwrap();
        assert!(!tracker.has_unread_input(), "all read");
        client.write_all(b"x").unwrap();
        assert!(tracker.has_unread_input());
        // The stream forgets the socket before closing it.
        drop(Watched {
            inner: tokio::io::empty(),
            tracker: Arc::clone(&tracker),
        });
        assert!(!tracker.has_unread_input());
        // A tracker of no socket has nothing to peek.
        assert!(!Tracker::new(Instant::now()).has_unread_input());
    }
}
