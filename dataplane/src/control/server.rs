//! The control socket: a Unix stream socket, mode 0600, one JSON request
//! per line and one JSON response per line (docs/api.md).
//!
//! The daemon's control thread runs [`ControlServer::serve`]; each client
//! gets a thread of its own, up to [`ServerLimits::max_clients`] at once,
//! so a slow client never holds up another. A client's requests are
//! handled one after another against the shared [`ControlState`], where
//! reads never wait for a change and changes take turns.
//!
//! Every client is root (the socket is mode 0600), so the limits that keep
//! the socket available to the operator are per connecting process
//! (`SO_PEERCRED`): a budget of new connections a second, a cap on
//! connections at once, and over all, a cap at which the client idle
//! longest makes room for a newcomer (`peers` says why each). A client
//! idle for [`ServerLimits::idle_timeout`] (`[daemon]
//! control_idle_timeout`, a few seconds) is closed. The listen queue is
//! short ([`LISTEN_BACKLOG`]), so a process that connects in a loop cannot
//! queue thousands of connections ahead of another one's.
//!
//! Every limit — request size, a client that never writes or writes too
//! slowly, a process over its budget or cap, a full server — is answered
//! with one error response line naming it, and nothing changes.

use std::fs;
use std::io::{self, BufReader, BufWriter};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use flowgate_api::framing::{parse_request, read_line, write_response, LineError, LineTimeouts};
use flowgate_api::{ApiError, ErrorCode, Request, Response, MAX_REQUEST_BYTES};
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{listen, recv, Backlog, MsgFlags};
use nix::sys::stat::{umask, Mode};

use super::peers::{Admission, Clients, Closing, Peer, PeerLimits, Ticket};
use super::state::ControlState;
use crate::rules::DaemonSettings;

/// How long the serve loop waits for a client before it looks at its stop
/// handle again.
const ACCEPT_WAIT_MS: u8 = 5;

/// How long the serve loop waits after a failed `accept` (e.g. out of
/// descriptors) before it tries again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);

/// Connections the kernel queues for the server to accept. Short, so that
/// a process connecting in a loop queues few ahead of another's: the
/// kernel lets waiting connectors in one at a time, in order, as places
/// free (a blocking `connect` waits; it does not fail).
const LISTEN_BACKLOG: i32 = 64;

/// What the server puts up with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    /// Largest request line, in bytes.
    pub max_request_bytes: usize,
    /// Longest wait for a client's (next) request.
    pub idle_timeout: Duration,
    /// Longest time from a request's first byte to its end.
    pub request_timeout: Duration,
    /// Longest wait for a client to take a response.
    pub write_timeout: Duration,
    /// Most clients served at once. At the cap, the client idle longest
    /// is closed for a newcomer; if none is idle, the newcomer is told the
    /// server is busy.
    pub max_clients: usize,
    /// Most clients one process may have served at once; its newest
    /// connection past them is refused (at least 1).
    pub max_clients_per_process: usize,
    /// New connections one process may open per second (all at once, if
    /// it likes); each one past them is refused.
    pub connects_per_process_per_second: u32,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_request_bytes: MAX_REQUEST_BYTES,
            idle_timeout: Duration::from_secs(
                DaemonSettings::default().control_idle_timeout_s.into(),
            ),
            request_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(10),
            max_clients: 32,
            max_clients_per_process: 8,
            connects_per_process_per_second: 20,
        }
    }
}

impl ServerLimits {
    /// The defaults, with what `[daemon]` sets (the idle timeout).
    pub fn for_daemon(settings: &DaemonSettings) -> ServerLimits {
        ServerLimits {
            idle_timeout: Duration::from_secs(settings.control_idle_timeout_s.into()),
            ..ServerLimits::default()
        }
    }

    fn peers(&self) -> PeerLimits {
        PeerLimits {
            max_clients: self.max_clients,
            max_per_peer: self.max_clients_per_process,
            connects_per_second: self.connects_per_process_per_second,
        }
    }
}

/// Why the control socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Another process answers on the socket: two daemons would fight over
    /// the rules.
    #[error("{}: another flowgate is already listening there", path.display())]
    InUse {
        /// The socket path.
        path: PathBuf,
    },
    /// Something other than a socket is at the path; it is not ours to
    /// remove.
    #[error("{}: exists and is not a socket; refusing to replace it", path.display())]
    NotASocket {
        /// The socket path.
        path: PathBuf,
    },
    /// A system call failed.
    #[error("{}: cannot {what}: {source}", path.display())]
    Io {
        /// The path concerned.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// What the OS said.
        source: io::Error,
    },
}

/// The listening control socket.
#[derive(Debug)]
pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
    /// (device, inode) of the socket file we created, so that we only
    /// ever remove our own.
    identity: (u64, u64),
    state: Arc<Mutex<ControlState>>,
    limits: ServerLimits,
    stop: StopHandle,
    clients: Arc<Clients>,
    /// Wakes the serve loop when a client connects.
    epoll: Epoll,
}

/// Stops a [`ControlServer::serve`] loop from another thread.
#[derive(Clone, Debug, Default)]
pub struct StopHandle(Arc<AtomicBool>);

impl StopHandle {
    /// Asks the serve loop to return; it does within a few milliseconds.
    /// Clients being served finish their current request.
    pub fn stop(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether [`StopHandle::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

impl ControlServer {
    /// Creates the socket at `path` (mode 0600) with the limits of the
    /// state's `[daemon]` settings ([`ServerLimits::for_daemon`]: the idle
    /// timeout; the defaults for the rest). A stale socket file, one nobody
    /// answers on, is replaced; a live one is an error
    /// ([`ServerError::InUse`]). A missing parent directory is created with
    /// mode 0700.
    pub fn bind(path: &Path, state: Arc<Mutex<ControlState>>) -> Result<Self, ServerError> {
        let settings = {
            let state = state.lock().unwrap_or_else(PoisonError::into_inner);
            ServerLimits::for_daemon(&state.config().daemon)
        };
        Self::bind_with(path, state, settings)
    }

    /// [`ControlServer::bind`] with other limits.
    pub fn bind_with(
        path: &Path,
        state: Arc<Mutex<ControlState>>,
        limits: ServerLimits,
    ) -> Result<Self, ServerError> {
        let io = |what: &'static str| {
            move |source: io::Error| ServerError::Io {
                path: path.to_owned(),
                what,
                source,
            }
        };
        clear_stale_socket(path)?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            if !parent.exists() {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(parent)
                    .map_err(io("create the socket's directory"))?;
                // The mode a directory is born with is narrowed by the
                // umask in force, which another thread's bind (below) may
                // have narrowed for a moment: say it again, whole.
                fs::set_permissions(parent, fs::Permissions::from_mode(0o700))
                    .map_err(io("set the socket directory's mode"))?;
            }
        }
        // The socket file takes its mode from the umask: with 0177 it is
        // born 0600, with no moment at which others could connect. The
        // umask is process-wide, but only ever narrowed here, briefly.
        let old = umask(Mode::from_bits_truncate(0o177));
        let bound = UnixListener::bind(path);
        umask(old);
        let listener = bound.map_err(io("bind the control socket"))?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))
            .map_err(io("set the control socket's mode"))?;
        let configure = io("configure the control socket");
        // Listening again only sets the queue's length.
        Backlog::new(LISTEN_BACKLOG)
            .and_then(|backlog| listen(&listener, backlog))
            .map_err(|e| configure(e.into()))?;
        listener.set_nonblocking(true).map_err(&configure)?;
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)
            .and_then(|epoll| {
                epoll.add(&listener, EpollEvent::new(EpollFlags::EPOLLIN, 0))?;
                Ok(epoll)
            })
            .map_err(|e| configure(e.into()))?;
        let meta = fs::metadata(path).map_err(io("inspect the control socket"))?;
        Ok(ControlServer {
            listener,
            path: path.to_owned(),
            identity: (meta.dev(), meta.ino()),
            state,
            limits,
            stop: StopHandle::default(),
            clients: Arc::new(Clients::new(limits.peers())),
            epoll,
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A handle that stops [`ControlServer::serve`].
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// Clients being served now.
    pub fn active_clients(&self) -> usize {
        self.clients.served()
    }

    /// Of the clients served now, those waiting for a request (the rest
    /// are on one, or were just let in).
    pub fn waiting_clients(&self) -> usize {
        self.clients.waiting()
    }

    /// Serves clients until the stop handle is used; then closes the idle
    /// ones (the others once they have answered their request).
    pub fn serve(&self) {
        let mut events = [EpollEvent::empty()];
        while !self.stop.is_stopped() {
            match self.accept_waiting() {
                // The connection is still waiting: do not spin on it.
                (_, true) => std::thread::sleep(ACCEPT_BACKOFF),
                (0, false) => {
                    // A client connecting ends the wait.
                    let _ = self
                        .epoll
                        .wait(&mut events, EpollTimeout::from(ACCEPT_WAIT_MS));
                }
                (_, false) => {}
            }
        }
        self.clients.close_all();
    }

    /// Accepts the clients waiting now (at most a listen queue's worth),
    /// without blocking, and hands each to a thread of its own or refuses
    /// it; returns how many. For a daemon that runs its own loop instead
    /// of [`ControlServer::serve`].
    pub fn serve_pending(&self) -> usize {
        self.accept_waiting().0
    }

    /// Accepts the clients waiting now, at most [`LISTEN_BACKLOG`] of them
    /// so that a flood of connections cannot keep the caller from its stop
    /// handle; returns how many, and whether `accept` failed.
    fn accept_waiting(&self) -> (usize, bool) {
        let mut accepted = 0;
        while accepted < LISTEN_BACKLOG.unsigned_abs() as usize {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    accepted += 1;
                    self.dispatch(stream);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // E.g. out of file descriptors: try again shortly.
                    tracing::warn!(error = %e, "control socket: accept failed");
                    return (accepted, true);
                }
            }
        }
        (accepted, false)
    }

    /// Starts serving one client, or tells it why not.
    fn dispatch(&self, stream: UnixStream) {
        // Accepted sockets do not inherit the listener's non-blocking mode
        // on Linux; make sure, as the timeouts rely on blocking reads.
        if stream.set_nonblocking(false).is_err() {
            return;
        }
        let peer = Peer::of(&stream);
        let handle = match stream.try_clone() {
            Ok(handle) => handle,
            Err(e) => {
                let message = format!("cannot serve another client now: {e}; try again");
                refuse(stream, peer, ApiError::new(ErrorCode::Busy, message));
                return;
            }
        };
        let ticket = match self.clients.admit(peer, handle, Instant::now()) {
            Admission::Served(ticket) => ticket,
            Admission::Refused(error) => {
                refuse(stream, peer, error);
                return;
            }
        };
        let state = Arc::clone(&self.state);
        let limits = self.limits;
        let stop = self.stop.clone();
        let spawned = std::thread::Builder::new()
            .name("flowgate-ctl".into())
            .spawn(move || serve_client(stream, &ticket, &state, limits, &stop));
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "control socket: cannot start a client thread");
        }
    }
}

impl Drop for ControlServer {
    /// Removes the socket file, if it is still the one we created.
    fn drop(&mut self) {
        if let Ok(meta) = fs::symlink_metadata(&self.path) {
            if (meta.dev(), meta.ino()) == self.identity {
                let _ = fs::remove_file(&self.path);
            }
        }
    }
}

/// Removes a socket file nobody answers on; refuses to touch a live socket
/// or anything that is not a socket.
fn clear_stale_socket(path: &Path) -> Result<(), ServerError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ServerError::Io {
                path: path.to_owned(),
                what: "inspect the existing socket path",
                source,
            })
        }
    };
    if !meta.file_type().is_socket() {
        return Err(ServerError::NotASocket {
            path: path.to_owned(),
        });
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(ServerError::InUse {
            path: path.to_owned(),
        }),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "removing a stale control socket");
            fs::remove_file(path).map_err(|source| ServerError::Io {
                path: path.to_owned(),
                what: "remove the stale control socket",
                source,
            })
        }
        Err(source) => Err(ServerError::Io {
            path: path.to_owned(),
            what: "check whether the existing socket is in use",
            source,
        }),
    }
}

/// Tells a client it will not be served, and hangs up. The line fits in a
/// new socket's buffer, so it is written without waiting: the serve loop
/// never blocks on a client.
fn refuse(stream: UnixStream, peer: Peer, error: ApiError) {
    tracing::debug!(%peer, code = %error.code, "control socket: client refused: {}", error.message);
    let _ = stream.set_nonblocking(true);
    let mut writer = BufWriter::new(stream);
    let _ = write_response(&mut writer, &Response::new(Err(error)));
}

/// What came of waiting for a client's next request.
enum Waited {
    /// Its first byte is there.
    Request,
    /// The client hung up (or the server closed the connection).
    Closed,
    /// Nothing came within the idle timeout.
    Idle,
}

/// Waits up to `timeout` for the first byte of a request, leaving it to
/// be read.
fn wait_for_request(stream: &UnixStream, timeout: Duration) -> io::Result<Waited> {
    let deadline = Instant::now() + timeout;
    let mut byte = [0u8; 1];
    loop {
        let Some(left) = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
        else {
            return Ok(Waited::Idle);
        };
        stream.set_read_timeout(Some(left))?;
        match recv(stream.as_raw_fd(), &mut byte, MsgFlags::MSG_PEEK) {
            Ok(0) => return Ok(Waited::Closed),
            Ok(_) => return Ok(Waited::Request),
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => return Ok(Waited::Idle),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Serves one client: request, response, until it hangs up, goes quiet,
/// breaks a limit, the server closes it for a newcomer, or the server
/// stops.
fn serve_client(
    stream: UnixStream,
    ticket: &Ticket,
    state: &Mutex<ControlState>,
    limits: ServerLimits,
    stop: &StopHandle,
) {
    if stream
        .set_write_timeout(Some(limits.write_timeout))
        .is_err()
    {
        return;
    }
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::with_capacity(64 * 1024, read_half);
    let mut writer = BufWriter::with_capacity(64 * 1024, stream);
    // Once its first byte is there, a request has the request timeout to
    // be whole.
    let timeouts = LineTimeouts {
        idle: limits.request_timeout,
        whole: limits.request_timeout,
    };
    let client = ticket.client();
    let mut line = Vec::new();
    while !stop.is_stopped() {
        let waited = if reader.buffer().is_empty() {
            if let Err(why) = client.idle(Instant::now()) {
                return say_closed(why, &mut writer);
            }
            wait_for_request(reader.get_ref(), limits.idle_timeout)
        } else {
            Ok(Waited::Request)
        };
        // The server may have closed it for a newcomer while it waited.
        if let Err(why) = client.busy() {
            return say_closed(why, &mut writer);
        }
        let error = match waited {
            Ok(Waited::Closed) => return,
            Err(e) => {
                tracing::debug!(error = %e, "control socket: client connection failed");
                return;
            }
            Ok(Waited::Idle) => ApiError::new(
                ErrorCode::Timeout,
                format!(
                    "no request within {} ms; closing the connection",
                    limits.idle_timeout.as_millis()
                ),
            ),
            Ok(Waited::Request) => {
                match read_line(&mut reader, &mut line, limits.max_request_bytes, timeouts) {
                    Ok(()) if line.iter().all(u8::is_ascii_whitespace) => continue,
                    Ok(()) => {
                        let client = reader.get_ref();
                        if answer(&line, state, &mut writer, client, stop).is_err() {
                            return;
                        }
                        continue;
                    }
                    Err(LineError::Closed) => return,
                    Err(LineError::Io(e)) => {
                        tracing::debug!(error = %e, "control socket: client connection failed");
                        return;
                    }
                    Err(LineError::Idle | LineError::Incomplete) => ApiError::new(
                        ErrorCode::Timeout,
                        format!(
                            "request not finished (no newline) within {} ms; closing the \
                             connection",
                            limits.request_timeout.as_millis()
                        ),
                    ),
                    Err(LineError::TooLarge) => ApiError::new(
                        ErrorCode::TooLarge,
                        format!(
                            "request larger than {} bytes; send the changes in several batches",
                            limits.max_request_bytes
                        ),
                    ),
                }
            }
        };
        tracing::debug!(code = %error.code, "control socket: {}", error.message);
        let _ = write_response(&mut writer, &Response::new(Err(error)));
        return;
    }
}

/// Answers one request line on `writer`: one response line, or for
/// `capture` the lines of its stream. An error is the connection's.
fn answer(
    line: &[u8],
    state: &Mutex<ControlState>,
    writer: &mut BufWriter<UnixStream>,
    client: &UnixStream,
    stop: &StopHandle,
) -> io::Result<()> {
    let result = match parse_request(line) {
        Ok(Request::Capture(query)) => {
            let control = state.lock().unwrap_or_else(PoisonError::into_inner).clone();
            let stopped = || stop.is_stopped();
            match crate::capture::stream::serve(&query, &control, writer, client, &stopped) {
                Ok(()) => return Ok(()),
                Err(error) => Err(error),
            }
        }
        request => request.and_then(|r| super::state::handle(state, r)),
    };
    write_response(writer, &Response::new(result))
}

/// Tells a client the server closed it, and why (if there is anything to
/// tell).
fn say_closed(why: Closing, writer: &mut BufWriter<UnixStream>) {
    if let Some(error) = why.message() {
        tracing::debug!("control socket: {}", error.message);
        let _ = write_response(writer, &Response::new(Err(error)));
    }
}
