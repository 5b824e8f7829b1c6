//! The HTTP endpoint for `GET /metrics`: hyper (HTTP/1.1) on a
//! single-threaded tokio runtime, on a thread of its own.
//!
//! It serves on a loopback address unless exposure is asked for (metrics
//! say a lot about the traffic), or on a Unix socket whose file mode says
//! who may scrape ([`ListenAddress`]).
//!
//! **Availability.** Every client, silent or slow, is bounded twice:
//!
//! - *in time*: a connection is always in one phase, with its own deadline
//!   ([`ServerOptions::header_read_timeout`] for a request head,
//!   [`ServerOptions::write_timeout`] for taking a response,
//!   [`ServerOptions::keep_alive_timeout`] between requests), and is
//!   closed when the phase outlasts it (see `connection`);
//! - *in number*: at most [`ServerOptions::max_connections`] are open. A
//!   new connection is always accepted; at the cap, the open connection
//!   that has waited on its client longest — the one idle (kept alive, or
//!   with its head unfinished) the longest, or, if every one is being
//!   answered, the one answered the longest — is closed to make room. A
//!   connection whose client has sent bytes the server has not read yet
//!   is not idle (the server peeks at its socket): it goes only after
//!   every idle one. A scraper sends its request as soon as it connects
//!   and is answered in milliseconds, so it is never the one that has
//!   waited longest — not even while a connect flood keeps the server
//!   from reading its request: a local user who holds a thousand idle
//!   connections, or opens them in a loop, only closes their own, and
//!   cannot lock a scraper out. The same eviction frees a descriptor when
//!   the process runs out of them.
//!
//! No connection gets a thread: a thousand idle ones cost a thousand
//! sockets and a task of a few kilobytes each. Rendering a scrape runs on the
//! server's thread, which inherits the affinity of the thread that starts
//! it (the daemon's control thread, off the worker cores).

mod connection;
mod listen;
mod respond;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use self::connection::{serve_connection, ConnectionConfig, Ended, Phase, Timeouts, Tracker};
use self::listen::{Accept, Listener};
pub use self::listen::{ListenAddress, UnixListen};
use super::sample::MetricsSample;
use crate::table::Snapshot;

/// Where a scrape's data comes from: a sample and the snapshot it was
/// taken against. Called on the server's thread, one scrape at a time.
pub type SampleSource = Arc<dyn Fn() -> (MetricsSample, Arc<Snapshot>) + Send + Sync>;

/// How long a stop waits for responses being written to finish.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// How long the accept loop waits after a failed accept (e.g. out of
/// descriptors) before it tries again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);

/// Why the metrics server could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The address is not a loopback one and exposure was not asked for.
    #[error(
        "metrics address {0} is not a loopback address; \
         metrics are served on loopback only unless exposure is asked for"
    )]
    NotLoopback(SocketAddr),
    /// An option is out of its range.
    #[error("metrics server: {0}")]
    BadOption(&'static str),
    /// The Unix socket's mode has bits beyond the permission bits.
    #[error("metrics socket mode {0:#o} is not a permission mode (0 to 0o777)")]
    BadMode(u32),
    /// The TCP socket could not be bound or set up.
    #[error("cannot serve metrics on {address}: {source}")]
    Listen {
        /// The address asked for.
        address: ListenAddress,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// Another process serves on the Unix socket's path.
    #[error("metrics socket {0} is in use by another process")]
    SocketInUse(PathBuf),
    /// Something that is not a socket is at the Unix socket's path.
    #[error("metrics socket path {0} exists and is not a socket; not replacing it")]
    NotASocket(PathBuf),
    /// The Unix socket could not be set up.
    #[error("metrics socket {path}: cannot {what}: {source}")]
    Socket {
        /// The socket's path.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// The server's thread or runtime could not be started.
    #[error("cannot start the metrics thread: {0}")]
    Thread(#[source] io::Error),
}

/// Limits and opt-ins of the server.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Serve on a non-loopback TCP address too (exposes the metrics).
    pub allow_non_loopback: bool,
    /// Time a client has to send a whole request head: from connecting,
    /// or from the first byte of a later request on a kept-alive
    /// connection.
    pub header_read_timeout: Duration,
    /// Time a kept-alive connection may wait for its next request.
    pub keep_alive_timeout: Duration,
    /// Time a client has to take a whole response, from the end of its
    /// request.
    pub write_timeout: Duration,
    /// Largest request head accepted, in bytes (at least 8 KiB, hyper's
    /// smallest buffer); a larger one is answered `431`.
    pub max_request_bytes: usize,
    /// Connections open at once; at the cap, the one that has waited on
    /// its client longest is closed for each new one.
    pub max_connections: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            allow_non_loopback: false,
            header_read_timeout: Duration::from_secs(2),
            keep_alive_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
            max_request_bytes: 8 * 1024,
            // Each is a descriptor of the daemon's; 256 keeps well inside
            // the usual soft limit of 1024 and far above any set of scrapers.
            max_connections: 256,
        }
    }
}

impl ServerOptions {
    fn check(&self) -> Result<(), MetricsError> {
        let timeouts = [
            self.header_read_timeout,
            self.keep_alive_timeout,
            self.write_timeout,
        ];
        if timeouts.iter().any(Duration::is_zero) {
            return Err(MetricsError::BadOption("timeouts must be longer than zero"));
        }
        if self.max_connections == 0 {
            return Err(MetricsError::BadOption(
                "max_connections must be at least 1",
            ));
        }
        Ok(())
    }
}

/// What the server has done since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Connections open now.
    pub open: usize,
    /// Connections accepted.
    pub accepted: u64,
    /// Connections closed to make room for new ones.
    pub evicted: u64,
    /// Connections closed because a phase outlasted its deadline.
    pub timed_out: u64,
}

/// The open connections, and the counts behind [`ServerStats`].
#[derive(Default)]
struct Connections {
    open: Mutex<HashMap<u64, Arc<Tracker>>>,
    accepted: AtomicU64,
    evicted: AtomicU64,
    timed_out: AtomicU64,
}

impl Connections {
    fn open(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Tracker>>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a new connection, first closing the one that has waited
    /// longest if `cap` are open.
    fn admit(&self, id: u64, tracker: Arc<Tracker>, cap: usize) {
        let mut open = self.open();
        while open.len() >= cap {
            let Some(victim) = longest_waiting(&open, true) else {
                break;
            };
            if let Some(evicted) = open.remove(&victim) {
                evicted.evict();
                self.evicted.fetch_add(1, Ordering::Relaxed);
            }
        }
        open.insert(id, tracker);
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    /// Closes the connection idle longest (none being answered), if any.
    fn evict_idlest(&self) -> bool {
        let mut open = self.open();
        let Some(victim) = longest_waiting(&open, false) else {
            return false;
        };
        if let Some(evicted) = open.remove(&victim) {
            evicted.evict();
            self.evicted.fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    fn ended(&self, ended: Ended) {
        if let Ended::TimedOut(phase) = ended {
            self.timed_out.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(?phase, "metrics: closed a connection past its deadline");
        }
    }

    fn stats(&self) -> ServerStats {
        ServerStats {
            open: self.open().len(),
            accepted: self.accepted.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
            timed_out: self.timed_out.load(Ordering::Relaxed),
        }
    }
}

/// A connection's place in [`Connections`], given up however its task
/// ends.
struct Registered {
    id: u64,
    connections: Arc<Connections>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.connections.open().remove(&self.id);
    }
}

/// The connection that has waited on its client longest: idle ones first
/// (kept alive or reading a head, with nothing unread), oldest phase first;
/// then those whose client has sent bytes the server has not read yet (a
/// request on its way in is not idle, however long ago the connection was
/// accepted: see [`Tracker::has_unread_input`]); then, if `answering_too`,
/// the one answered longest.
///
/// The oldest candidate is peeked at first: an eviction costs one peek,
/// and a sort only when that one has a request waiting.
fn longest_waiting(open: &HashMap<u64, Arc<Tracker>>, answering_too: bool) -> Option<u64> {
    let candidates = || {
        open.iter()
            .map(|(id, tracker)| {
                let (phase, since) = tracker.phase();
                ((phase == Phase::Answering, since, *id), tracker.as_ref())
            })
            .filter(|((answering, ..), _)| answering_too || !answering)
    };
    let ((answering, _, oldest), tracker) = candidates().min_by_key(|(key, _)| *key)?;
    if answering || !tracker.has_unread_input() {
        return Some(oldest);
    }
    // The oldest is not idle: the oldest idle one, if any.
    let mut waiting: Vec<_> = candidates()
        .filter(|((answering, ..), _)| !answering)
        .collect();
    waiting.sort_unstable_by_key(|(key, _)| *key);
    let idle = waiting
        .iter()
        .skip(1)
        .find(|(_, tracker)| !tracker.has_unread_input());
    Some(idle.map_or(oldest, |((_, _, id), _)| *id))
}

/// The running server; [`MetricsServer::stop`] or dropping it ends it.
pub struct MetricsServer {
    address: ListenAddress,
    stop: watch::Sender<bool>,
    connections: Arc<Connections>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for MetricsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsServer")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl MetricsServer {
    /// Serves `GET /metrics` on `address` (a loopback TCP address, where
    /// port 0 picks a free port, see [`MetricsServer::local_addr`]; or a
    /// Unix socket) with the default options.
    pub fn start(
        address: impl Into<ListenAddress>,
        source: SampleSource,
    ) -> Result<MetricsServer, MetricsError> {
        MetricsServer::start_with(address, source, ServerOptions::default())
    }

    /// Serves `GET /metrics` on `address` with these options.
    pub fn start_with(
        address: impl Into<ListenAddress>,
        source: SampleSource,
        options: ServerOptions,
    ) -> Result<MetricsServer, MetricsError> {
        let address = address.into();
        options.check()?;
        match &address {
            ListenAddress::Tcp(addr) => {
                if !addr.ip().to_canonical().is_loopback() && !options.allow_non_loopback {
                    return Err(MetricsError::NotLoopback(*addr));
                }
            }
            ListenAddress::Unix(unix) => {
                if unix.mode & !0o777 != 0 {
                    return Err(MetricsError::BadMode(unix.mode));
                }
            }
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(MetricsError::Thread)?;
        let (listener, bound) = {
            let _inside = runtime.enter();
            listen::bind(&address)?
        };
        let (stop, stopped) = watch::channel(false);
        let connections = Arc::new(Connections::default());
        let server = Server {
            config: Arc::new(ConnectionConfig {
                timeouts: Timeouts {
                    header_read: options.header_read_timeout,
                    write: options.write_timeout,
                    keep_alive: options.keep_alive_timeout,
                },
                max_request_bytes: options.max_request_bytes,
                source,
            }),
            max_connections: options.max_connections,
            connections: Arc::clone(&connections),
            stop: stopped,
        };
        let thread = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                runtime.block_on(async move {
                    match listener {
                        Listener::Tcp(listener) => server.serve(listener).await,
                        Listener::Unix(listener) => server.serve(listener).await,
                    }
                });
            })
            .map_err(MetricsError::Thread)?;
        tracing::info!(address = %bound, "serving metrics");
        Ok(MetricsServer {
            address: bound,
            stop,
            connections,
            thread: Some(thread),
        })
    }

    /// Where it listens (for TCP, with the port it was given).
    pub fn address(&self) -> &ListenAddress {
        &self.address
    }

    /// The TCP address it listens on; `None` on a Unix socket.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self.address {
            ListenAddress::Tcp(addr) => Some(addr),
            ListenAddress::Unix(_) => None,
        }
    }

    /// What it has done so far.
    pub fn stats(&self) -> ServerStats {
        self.connections.stats()
    }

    /// Stops listening (a Unix socket's file is removed), closes idle
    /// connections, lets responses being written finish for up to a
    /// second, and waits for the server's thread.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the metrics thread panicked");
            }
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// The accept loop's state.
struct Server {
    config: Arc<ConnectionConfig>,
    max_connections: usize,
    connections: Arc<Connections>,
    stop: watch::Receiver<bool>,
}

impl Server {
    async fn serve<L: Accept>(mut self, listener: L) {
        let mut tasks = JoinSet::new();
        let mut next_id = 0u64;
        let mut failing = false;
        loop {
            tokio::select! {
                biased;
                _ = self.stop.changed() => break,
                // Reap finished connections as they end.
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                accepted = listener.accept() => match accepted {
                    Ok(stream) => {
                        failing = false;
                        let tracker = Tracker::with_socket(Instant::now(), stream.as_raw_fd());
                        let (id, tracker) = (next_id, Arc::new(tracker));
                        next_id += 1;
                        self.connections.admit(id, Arc::clone(&tracker), self.max_connections);
                        let (config, connections) =
                            (Arc::clone(&self.config), Arc::clone(&self.connections));
                        let stop = self.stop.clone();
                        tasks.spawn(async move {
                            let open = Registered { id, connections };
                            let ended = serve_connection(stream, tracker, config, stop).await;
                            open.connections.ended(ended);
                        });
                        // Let the connections run before the next accept:
                        // under a connect flood the listener is always
                        // ready, and a loop that only accepted would leave
                        // every request unread (and every evicted
                        // connection open) until the flood paused.
                        tokio::task::yield_now().await;
                    }
                    Err(e) => {
                        if !failing {
                            tracing::warn!(error = %e, "metrics: accept failed");
                        }
                        failing = true;
                        // Out of descriptors: give one of ours back.
                        if e.raw_os_error().is_some_and(is_out_of_descriptors) {
                            self.connections.evict_idlest();
                        }
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                },
            }
        }
        // No new connections (and a Unix socket's file is gone); idle
        // connections close at once, responses being written get a grace.
        drop(listener);
        let drained = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(STOP_GRACE, drained).await.is_err() {
            tracing::debug!("metrics: closing responses still being written");
        }
        tasks.shutdown().await;
    }
}

/// EMFILE (the process's limit) or ENFILE (the system's).
fn is_out_of_descriptors(errno: i32) -> bool {
    errno == nix::errno::Errno::EMFILE as i32 || errno == nix::errno::Errno::ENFILE as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_loopback_addresses_need_an_opt_in() {
        let source: SampleSource =
            Arc::new(|| (MetricsSample::default(), Arc::new(Snapshot::empty())));
        for addr in ["198.18.0.1:0", "0.0.0.0:0", "[::]:0"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let err = MetricsServer::start(addr, Arc::clone(&source)).unwrap_err();
            assert!(matches!(err, MetricsError::NotLoopback(_)), "{addr}: {err}");
        }
        // The IPv4-mapped form of loopback is loopback.
        let addr: SocketAddr = "[::ffff:127.0.0.1]:0".parse().unwrap();
        let server = MetricsServer::start(addr, source);
        assert!(!matches!(server, Err(MetricsError::NotLoopback(_))));
    }

    #[test]
    fn options_out_of_range_are_refused() {
        let source: SampleSource =
            Arc::new(|| (MetricsSample::default(), Arc::new(Snapshot::empty())));
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        for options in [
            ServerOptions {
                max_connections: 0,
                ..ServerOptions::default()
            },
            ServerOptions {
                keep_alive_timeout: Duration::ZERO,
                ..ServerOptions::default()
            },
        ] {
            let err = MetricsServer::start_with(addr, Arc::clone(&source), options).unwrap_err();
            assert!(matches!(err, MetricsError::BadOption(_)), "{err}");
        }
        let unix = UnixListen {
            mode: 0o4600,
            ..UnixListen::new("/nonexistent/metrics.sock")
        };
        let err = MetricsServer::start(unix, source).unwrap_err();
        assert_eq!(
            err.to_string(),
            "metrics socket mode 0o4600 is not a permission mode (0 to 0o777)"
        );
    }

    /// A connection whose request waits unread in its socket is not idle:
    /// older than every idle one (accepted first, its task not yet run),
    /// it still goes after them, and before any being answered.
    #[test]
    fn eviction_spares_a_connection_whose_request_waits_unread() {
        use std::io::Write;
        use std::os::unix::net::UnixStream;
        let connections = Connections::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // 0: the oldest, its request in the kernel; 1 and 2: idle, 1 the
        // older; 3: being answered since before all of them.
        let (mut scraper, scraper_end) = UnixStream::pair().unwrap();
        scraper.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
        let (_silent, silent_end) = UnixStream::pair().unwrap();
        let pending = Arc::new(Tracker::with_socket(at(1), scraper_end.as_raw_fd()));
        let idle_old = Arc::new(Tracker::with_socket(at(2), silent_end.as_raw_fd()));
        let idle_new = Arc::new(Tracker::new(at(3)));
        let answering = Arc::new(Tracker::new(at(0)));
        answering.on_request();
        for (id, t) in [
            (0, &pending),
            (1, &idle_old),
            (2, &idle_new),
            (3, &answering),
        ] {
            connections.admit(id, Arc::clone(t), 4);
        }
        let open = |c: &Connections| {
            let mut ids = c.open().keys().copied().collect::<Vec<_>>();
            ids.sort_unstable();
            ids
        };
        // Full: the idle ones go first, oldest first; the scraper stays.
        connections.admit(4, Arc::new(Tracker::new(at(4))), 4);
        assert_eq!(open(&connections), [0, 2, 3, 4]);
        assert!(connections.evict_idlest());
        assert_eq!(open(&connections), [0, 3, 4]);
        assert!(connections.evict_idlest());
        assert_eq!(open(&connections), [0, 3]);
        // Only the scraper and the one being answered: the scraper is the
        // last that is not being answered, so it goes, and then none does.
        assert!(connections.evict_idlest());
        assert_eq!(open(&connections), [3]);
        assert!(!connections.evict_idlest());
        assert_eq!(connections.stats().evicted, 4);
        drop(scraper);
    }

    /// Idle connections go first, the one idle longest first; a
    /// connection being answered goes only when every one is.
    #[test]
    fn eviction_picks_the_connection_that_waited_longest() {
        let connections = Connections::default();
        let t0 = Instant::now();
        let tracker = |id: u64| {
            let t = Arc::new(Tracker::new(t0 + Duration::from_millis(id)));
            (id, t)
        };
        // 0: the oldest, being answered; 1 and 2: idle, 1 the older.
        let (a, answering) = tracker(0);
        answering.on_request();
        let (b, idle_old) = tracker(1);
        let (c, idle_new) = tracker(2);
        for (id, t) in [(a, &answering), (b, &idle_old), (c, &idle_new)] {
            connections.admit(id, Arc::clone(t), 3);
        }
        // 0 has been answered since before 1 and 2 were accepted; still,
        // an idle one goes first: the older of the two.
        connections.admit(3, tracker(3).1, 3);
        let open = connections.open().keys().copied().collect::<Vec<_>>();
        assert!(!open.contains(&1), "{open:?}");
        assert!(open.contains(&0) && open.contains(&2) && open.contains(&3));
        assert_eq!(connections.stats().evicted, 1);
        // Out of descriptors: idle ones only, the older first.
        assert!(connections.evict_idlest());
        assert!(!connections.open().contains_key(&2));
        assert!(connections.evict_idlest());
        assert!(!connections.evict_idlest(), "the answering one stays");
        assert_eq!(connections.open().keys().collect::<Vec<_>>(), [&0]);
        assert_eq!(connections.stats().evicted, 3);
        // The evicted connections' tasks are told at once.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let long = Timeouts {
            header_read: Duration::from_secs(60),
            write: Duration::from_secs(60),
            keep_alive: Duration::from_secs(60),
        };
        for evicted in [&idle_old, &idle_new] {
            let ended = runtime.block_on(async {
                tokio::time::timeout(Duration::from_secs(5), evicted.expiry(long)).await
            });
            assert_eq!(ended, Ok(Ended::Evicted));
        }
    }
}
