//! The control socket: a Unix stream socket, mode 0600, one JSON request
//! per line and one JSON response per line (docs/api.md).
//!
//! The daemon's control thread runs [`ControlServer::serve`]; each client
//! gets a thread of its own, up to [`ServerLimits::max_clients`] at once,
//! so a slow client never holds up another. Requests are handled one at a
//! time against the shared [`ControlState`], whose lock makes changes
//! sequential. Every limit — request size, a client that never writes or
//! writes too slowly, too many clients — is answered with an error
//! response naming it, and nothing changes.

use std::fs;
use std::io::{self, BufReader, BufWriter};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowgate_api::framing::{parse_request, read_line, write_response, LineError, LineTimeouts};
use flowgate_api::{ApiError, ErrorCode, Reply, Response, MAX_REQUEST_BYTES};
use nix::sys::stat::{umask, Mode};

use super::state::ControlState;

/// How often an idle serve loop looks for new clients.
const ACCEPT_POLL: Duration = Duration::from_millis(5);

/// Longest time spent telling a client that the server is busy.
const BUSY_WRITE_TIMEOUT: Duration = Duration::from_millis(200);

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
    /// Most clients served at once; more are told the server is busy.
    pub max_clients: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_request_bytes: MAX_REQUEST_BYTES,
            idle_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(10),
            max_clients: 16,
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
    active: Arc<AtomicUsize>,
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
    /// Creates the socket at `path` (mode 0600) with the default limits.
    /// A stale socket file, one nobody answers on, is replaced; a live one
    /// is an error ([`ServerError::InUse`]). A missing parent directory is
    /// created with mode 0700.
    pub fn bind(path: &Path, state: Arc<Mutex<ControlState>>) -> Result<Self, ServerError> {
        Self::bind_with(path, state, ServerLimits::default())
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
        listener
            .set_nonblocking(true)
            .map_err(io("configure the control socket"))?;
        let meta = fs::metadata(path).map_err(io("inspect the control socket"))?;
        Ok(ControlServer {
            listener,
            path: path.to_owned(),
            identity: (meta.dev(), meta.ino()),
            state,
            limits,
            stop: StopHandle::default(),
            active: Arc::new(AtomicUsize::new(0)),
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
        self.active.load(Ordering::Acquire)
    }

    /// Serves clients until the stop handle is used.
    pub fn serve(&self) {
        while !self.stop.is_stopped() {
            if self.serve_pending() == 0 {
                std::thread::sleep(ACCEPT_POLL);
            }
        }
    }

    /// Accepts every client waiting now, without blocking, and hands each
    /// to a thread of its own; returns how many. For a daemon that runs its
    /// own loop instead of [`ControlServer::serve`].
    pub fn serve_pending(&self) -> usize {
        let mut accepted = 0;
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    accepted += 1;
                    self.dispatch(stream);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // E.g. out of file descriptors: try again next turn.
                    tracing::warn!(error = %e, "control socket: accept failed");
                    break;
                }
            }
        }
        accepted
    }

    /// Starts serving one client, or tells it why not.
    fn dispatch(&self, stream: UnixStream) {
        // Accepted sockets do not inherit the listener's non-blocking mode
        // on Linux; make sure, as the timeouts rely on blocking reads.
        if stream.set_nonblocking(false).is_err() {
            return;
        }
        let active = self.active.fetch_add(1, Ordering::AcqRel);
        let slot = ClientSlot(Arc::clone(&self.active));
        if active >= self.limits.max_clients {
            drop(slot);
            let message = format!(
                "server busy: {} clients are connected already (the most it serves at once); try again",
                self.limits.max_clients
            );
            tracing::debug!("control socket: client refused, busy");
            refuse(stream, ApiError::new(ErrorCode::Busy, message));
            return;
        }
        let state = Arc::clone(&self.state);
        let limits = self.limits;
        let stop = self.stop.clone();
        let spawned = std::thread::Builder::new()
            .name("flowgate-ctl".into())
            .spawn(move || {
                let _slot = slot;
                serve_client(stream, &state, limits, &stop);
            });
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

/// Counts a client as served until dropped.
struct ClientSlot(Arc<AtomicUsize>);

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
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

/// Tells a client it will not be served, and hangs up.
fn refuse(stream: UnixStream, error: ApiError) {
    let _ = stream.set_write_timeout(Some(BUSY_WRITE_TIMEOUT));
    let mut writer = BufWriter::new(stream);
    let _ = write_response(&mut writer, &Response::new(Err(error)));
}

/// Serves one client: request, response, until it hangs up, goes quiet,
/// breaks a limit, or the server stops.
fn serve_client(
    stream: UnixStream,
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
    let timeouts = LineTimeouts {
        idle: limits.idle_timeout,
        whole: limits.request_timeout,
    };
    let mut line = Vec::new();
    while !stop.is_stopped() {
        let error = match read_line(&mut reader, &mut line, limits.max_request_bytes, timeouts) {
            Ok(()) if line.iter().all(u8::is_ascii_whitespace) => continue,
            Ok(()) => {
                let response = Response::new(handle(&line, state));
                if write_response(&mut writer, &response).is_err() {
                    return;
                }
                continue;
            }
            Err(LineError::Closed) => return,
            Err(LineError::Io(e)) => {
                tracing::debug!(error = %e, "control socket: client connection failed");
                return;
            }
            Err(LineError::Idle) => ApiError::new(
                ErrorCode::Timeout,
                format!(
                    "no request within {} ms; closing the connection",
                    limits.idle_timeout.as_millis()
                ),
            ),
            Err(LineError::Incomplete) => ApiError::new(
                ErrorCode::Timeout,
                format!(
                    "request not finished (no newline) within {} ms; closing the connection",
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
        };
        tracing::debug!(code = %error.code, "control socket: {}", error.message);
        let _ = write_response(&mut writer, &Response::new(Err(error)));
        return;
    }
}

/// Parses and answers one request line.
fn handle(line: &[u8], state: &Mutex<ControlState>) -> Result<Reply, ApiError> {
    super::state::handle(state, parse_request(line)?)
}
