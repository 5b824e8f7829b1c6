//! Where the metrics server listens: a TCP address (loopback unless
//! exposure is asked for) or a Unix socket whose file mode says who may
//! scrape.

use std::fmt;
use std::fs;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UnixListener, UnixSocket, UnixStream};

use super::MetricsError;

/// Connections the kernel queues for the server before it accepts them.
const BACKLOG: u32 = 1024;

/// Where to serve the metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenAddress {
    /// A TCP address and port; port 0 picks a free one.
    Tcp(SocketAddr),
    /// A Unix stream socket.
    Unix(UnixListen),
}

/// A Unix socket to serve the metrics on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnixListen {
    /// The socket's path. An existing socket that nobody answers on is
    /// replaced; a live one, or anything that is not a socket, is an error.
    pub path: PathBuf,
    /// The file's permission bits (at most `0o777`): who may connect. Only
    /// those with write permission can.
    pub mode: u32,
    /// A group to give the file (by id), so that a mode such as `0o660`
    /// lets that group's scraper in. `None` keeps the daemon's group.
    pub group: Option<u32>,
}

impl UnixListen {
    /// `path` with mode `0o600`: only the daemon's user may scrape.
    pub fn new(path: impl Into<PathBuf>) -> UnixListen {
        UnixListen {
            path: path.into(),
            mode: 0o600,
            group: None,
        }
    }
}

impl From<SocketAddr> for ListenAddress {
    fn from(addr: SocketAddr) -> ListenAddress {
        ListenAddress::Tcp(addr)
    }
}

impl From<UnixListen> for ListenAddress {
    fn from(unix: UnixListen) -> ListenAddress {
        ListenAddress::Unix(unix)
    }
}

impl fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddress::Tcp(addr) => write!(f, "{addr}"),
            ListenAddress::Unix(unix) => write!(f, "unix:{}", unix.path.display()),
        }
    }
}

/// Accepts connections of one kind.
pub(super) trait Accept {
    /// What an accepted connection is (a socket: eviction peeks at it).
    type Stream: AsyncRead + AsyncWrite + AsRawFd + Unpin + Send + 'static;
    /// The next connection.
    async fn accept(&self) -> io::Result<Self::Stream>;
}

impl Accept for TcpListener {
    type Stream = TcpStream;
    async fn accept(&self) -> io::Result<TcpStream> {
        TcpListener::accept(self).await.map(|(stream, _)| stream)
    }
}

/// A listening Unix socket; its file is removed when it is dropped.
pub(super) struct UnixAccept {
    listener: UnixListener,
    _file: SocketFile,
}

impl Accept for UnixAccept {
    type Stream = UnixStream;
    async fn accept(&self) -> io::Result<UnixStream> {
        self.listener.accept().await.map(|(stream, _)| stream)
    }
}

/// A listening socket of either kind.
pub(super) enum Listener {
    /// TCP.
    Tcp(TcpListener),
    /// Unix.
    Unix(UnixAccept),
}

/// Binds and listens on `address`; returns the listener and the address
/// actually bound (with the port picked, for port 0). Must run inside the
/// server's runtime.
pub(super) fn bind(address: &ListenAddress) -> Result<(Listener, ListenAddress), MetricsError> {
    match address {
        ListenAddress::Tcp(addr) => {
            let listen = |source| MetricsError::Listen {
                address: address.clone(),
                source,
            };
            let socket = if addr.is_ipv4() {
                TcpSocket::new_v4()
            } else {
                TcpSocket::new_v6()
            }
            .map_err(listen)?;
            // As std's listeners do: a restart can bind while old
            // connections linger in TIME_WAIT.
            socket.set_reuseaddr(true).map_err(listen)?;
            socket.bind(*addr).map_err(listen)?;
            let listener = socket.listen(BACKLOG).map_err(listen)?;
            let local = listener.local_addr().map_err(listen)?;
            Ok((Listener::Tcp(listener), ListenAddress::Tcp(local)))
        }
        ListenAddress::Unix(unix) => {
            let accept = bind_unix(unix)?;
            Ok((Listener::Unix(accept), address.clone()))
        }
    }
}

/// Creates the socket file fresh, gives it its mode (and group) while
/// nobody can connect yet — a bound socket refuses connections until it
/// listens — and only then listens.
fn bind_unix(unix: &UnixListen) -> Result<UnixAccept, MetricsError> {
    let path = &unix.path;
    let failed = |what: &'static str| {
        move |source| MetricsError::Socket {
            path: path.clone(),
            what,
            source,
        }
    };
    clear_stale_socket(path)?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.exists() {
            // Others may pass through to the socket, not list the
            // directory; the socket's own mode says who may connect.
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o711)
                .create(parent)
                .map_err(failed("create the socket's directory"))?;
        }
    }
    let socket = UnixSocket::new_stream().map_err(failed("create the socket"))?;
    socket.bind(path).map_err(failed("bind the socket"))?;
    let meta = fs::symlink_metadata(path).map_err(failed("inspect the socket"))?;
    // From here on the file is ours to remove, whatever fails next.
    let file = SocketFile {
        path: path.clone(),
        identity: (meta.dev(), meta.ino()),
    };
    fs::set_permissions(path, fs::Permissions::from_mode(unix.mode))
        .map_err(failed("set the socket's mode"))?;
    if let Some(group) = unix.group {
        std::os::unix::fs::chown(path, None, Some(group))
            .map_err(failed("set the socket's group"))?;
    }
    let listener = socket
        .listen(BACKLOG)
        .map_err(failed("listen on the socket"))?;
    Ok(UnixAccept {
        listener,
        _file: file,
    })
}

/// The socket file we created; removed on drop if it is still ours.
struct SocketFile {
    path: PathBuf,
    identity: (u64, u64),
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Ok(meta) = fs::symlink_metadata(&self.path) {
            if (meta.dev(), meta.ino()) == self.identity {
                let _ = fs::remove_file(&self.path);
            }
        }
    }
}

/// Removes a socket file nobody answers on (left by a crash); refuses to
/// touch a live socket or anything that is not a socket.
fn clear_stale_socket(path: &Path) -> Result<(), MetricsError> {
    let failed = |what: &'static str| {
        move |source| MetricsError::Socket {
            path: path.to_owned(),
            what,
            source,
        }
    };
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(failed("inspect the existing path")(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(MetricsError::NotASocket(path.to_owned()));
    }
    match StdUnixStream::connect(path) {
        Ok(_) => Err(MetricsError::SocketInUse(path.to_owned())),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "removing a stale metrics socket");
            fs::remove_file(path).map_err(failed("remove the stale socket"))
        }
        Err(e) => Err(failed("check whether the existing socket is in use")(e)),
    }
}
