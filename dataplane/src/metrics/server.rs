//! A tiny HTTP/1.1 server for `GET /metrics`, on its own thread, std only.
//!
//! It answers one request per connection and closes it. Each connection
//! gets a thread of its own (at most [`ServerOptions::max_connections`] at
//! once; beyond that a client gets `503` at once, and when as many again
//! are being turned away, the connection is just closed), a bounded request size
//! and a deadline for the whole request, so a slow or silent client holds
//! one slot for at most the deadline and never delays the others. It
//! listens on loopback only unless told otherwise: metrics say a lot about
//! the traffic, so exposing them is an opt-in.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::render::{render, CONTENT_TYPE};
use super::sample::MetricsSample;
use crate::table::Snapshot;

/// Where a scrape's data comes from: a sample and the snapshot it was
/// taken against. Called on the server's connection threads, possibly by
/// several at once.
pub type SampleSource = Arc<dyn Fn() -> (MetricsSample, Arc<Snapshot>) + Send + Sync>;

/// How often the accept loop looks for a stop request while idle.
const ACCEPT_POLL: Duration = Duration::from_millis(20);

/// Why the metrics server could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The address is not a loopback one and exposure was not asked for.
    #[error(
        "metrics address {0} is not a loopback address; \
         metrics are served on loopback only unless exposure is asked for"
    )]
    NotLoopback(SocketAddr),
    /// The socket could not be bound or set up.
    #[error("cannot serve metrics on {addr}: {source}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// The server thread could not be started.
    #[error("cannot start the metrics thread: {0}")]
    Thread(#[source] io::Error),
}

/// Limits and opt-ins of the server.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Serve on a non-loopback address too (exposes the metrics).
    pub allow_non_loopback: bool,
    /// Time a client has to send its whole request head.
    pub request_timeout: Duration,
    /// Time a client has to take the response.
    pub write_timeout: Duration,
    /// Largest request head accepted, in bytes.
    pub max_request_bytes: usize,
    /// Connections served at once.
    pub max_connections: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            allow_non_loopback: false,
            request_timeout: Duration::from_secs(2),
            write_timeout: Duration::from_secs(5),
            max_request_bytes: 8 * 1024,
            max_connections: 8,
        }
    }
}

/// The running server; [`MetricsServer::stop`] or dropping it ends it.
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for MetricsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl MetricsServer {
    /// Serves `GET /metrics` on `addr` (a loopback address; port 0 picks
    /// a free port, see [`MetricsServer::local_addr`]) with default limits.
    pub fn start(addr: SocketAddr, source: SampleSource) -> Result<MetricsServer, MetricsError> {
        MetricsServer::start_with(addr, source, ServerOptions::default())
    }

    /// Serves `GET /metrics` on `addr` with these options.
    pub fn start_with(
        addr: SocketAddr,
        source: SampleSource,
        options: ServerOptions,
    ) -> Result<MetricsServer, MetricsError> {
        if !addr.ip().to_canonical().is_loopback() && !options.allow_non_loopback {
            return Err(MetricsError::NotLoopback(addr));
        }
        let listen = |source| MetricsError::Listen { addr, source };
        let listener = TcpListener::bind(addr).map_err(listen)?;
        // Non-blocking, so the loop can notice a stop request.
        listener.set_nonblocking(true).map_err(listen)?;
        let local = listener.local_addr().map_err(listen)?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("metrics".into())
            .spawn({
                let stop = Arc::clone(&stop);
                move || accept_loop(&listener, &source, &options, &stop)
            })
            .map_err(MetricsError::Thread)?;
        tracing::info!(address = %local, "serving metrics");
        Ok(MetricsServer {
            addr: local,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops listening and waits for the accept thread. Requests being
    /// answered finish on their own threads within their deadlines.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
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

fn accept_loop(
    listener: &TcpListener,
    source: &SampleSource,
    options: &ServerOptions,
    stop: &AtomicBool,
) {
    let serving = Arc::new(AtomicUsize::new(0));
    // Clients turned away get their 503 on threads of their own too (as
    // many again), so that the loop never waits on one; beyond that they
    // are dropped.
    let refusing = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::Relaxed) {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(ACCEPT_POLL);
                continue;
            }
            Err(e) => {
                // E.g. out of file descriptors: back off, keep serving.
                tracing::warn!(error = %e, "metrics: accept failed");
                std::thread::sleep(ACCEPT_POLL);
                continue;
            }
        };
        if let Some(slot) = Slot::take(&serving, options.max_connections) {
            let (source, options) = (Arc::clone(source), options.clone());
            spawn(slot, move || serve(stream, &source, &options));
        } else if let Some(slot) = Slot::take(&refusing, options.max_connections) {
            let options = options.clone();
            spawn(slot, move || refuse_busy(stream, &options));
        }
    }
}

/// Runs `work` on a connection thread that holds `slot` until it ends.
fn spawn(slot: Slot, work: impl FnOnce() + Send + 'static) {
    let spawned = std::thread::Builder::new()
        .name("metrics-conn".into())
        .spawn(move || {
            let _slot = slot;
            work();
        });
    if let Err(e) = spawned {
        // The closure, its connection and its slot went with the error.
        tracing::warn!(error = %e, "metrics: cannot start a connection thread");
    }
}

/// One of a bounded number of connection slots, given back on drop.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    /// A slot of `count`, if fewer than `max` are taken. Only the accept
    /// thread takes slots, so the check and the increment cannot race.
    fn take(count: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
        if count.load(Ordering::Acquire) >= max {
            return None;
        }
        count.fetch_add(1, Ordering::AcqRel);
        Some(Slot(Arc::clone(count)))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn refuse_busy(mut stream: TcpStream, options: &ServerOptions) {
    if prepare(&stream, options) {
        let reply = response(
            "503 Service Unavailable",
            &[],
            b"too many metrics clients\n",
        );
        finish(&mut stream, &reply);
    }
}

/// Blocking mode with a write deadline; false if the socket refuses.
fn prepare(stream: &TcpStream, options: &ServerOptions) -> bool {
    // Accepted sockets may inherit the listener's non-blocking mode.
    stream.set_nonblocking(false).is_ok()
        && stream
            .set_write_timeout(Some(options.write_timeout))
            .is_ok()
}

/// Writes `reply` and closes the connection so that the client gets to
/// read it: our side first, then what the client still sends is taken
/// (briefly), as closing over unread data would reset the connection.
fn finish(stream: &mut TcpStream, reply: &[u8]) {
    if stream.write_all(reply).is_err() {
        return;
    }
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let mut sink = [0u8; 1024];
    for _ in 0..64 {
        match stream.read(&mut sink) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
}

/// What a request asked for.
#[derive(Debug, PartialEq, Eq)]
enum Request {
    /// `GET /metrics` (or `HEAD`: no body).
    Metrics {
        head: bool,
    },
    NotFound,
    MethodNotAllowed,
    Bad,
}

/// Reads the request head: up to the blank line, within the size limit and
/// the deadline. `Err` carries the status to answer with.
fn read_head(stream: &mut TcpStream, options: &ServerOptions) -> Result<Vec<u8>, &'static str> {
    let deadline = Instant::now() + options.request_timeout;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return Err("408 Request Timeout");
        }
        let n = match stream.read(&mut buf) {
            Ok(0) => return Err("400 Bad Request"),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Err("408 Request Timeout"),
        };
        head.extend_from_slice(buf.get(..n).unwrap_or(&[]));
        if let Some(end) = find(&head, b"\r\n\r\n").or_else(|| find(&head, b"\n\n")) {
            head.truncate(end);
            return Ok(head);
        }
        if head.len() > options.max_request_bytes {
            return Err("431 Request Header Fields Too Large");
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Parses the request line of `head`.
fn parse_request(head: &[u8]) -> Request {
    let Ok(text) = std::str::from_utf8(head) else {
        return Request::Bad;
    };
    let line = text.lines().next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Request::Bad;
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() {
        return Request::Bad;
    }
    let path = target.split('?').next().unwrap_or("");
    let head = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Request::MethodNotAllowed,
    };
    if path == "/metrics" {
        Request::Metrics { head }
    } else {
        Request::NotFound
    }
}

fn response(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if !headers.iter().any(|(k, _)| *k == "Content-Type") {
        out.push_str("Content-Type: text/plain; charset=utf-8\r\n");
    }
    out.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// Answers one connection.
fn serve(mut stream: TcpStream, source: &SampleSource, options: &ServerOptions) {
    if !prepare(&stream, options) {
        return;
    }
    let reply = match read_head(&mut stream, options).map(|h| parse_request(&h)) {
        Ok(Request::Metrics { head }) => {
            let (sample, snapshot) = source();
            let body = render(&sample, &snapshot);
            let mut reply = response("200 OK", &[("Content-Type", CONTENT_TYPE)], body.as_bytes());
            if head {
                reply.truncate(reply.len().saturating_sub(body.len()));
            }
            reply
        }
        Ok(Request::NotFound) => response("404 Not Found", &[], b"not found: try /metrics\n"),
        Ok(Request::MethodNotAllowed) => response(
            "405 Method Not Allowed",
            &[("Allow", "GET, HEAD")],
            b"method not allowed\n",
        ),
        Ok(Request::Bad) => response("400 Bad Request", &[], b"bad request\n"),
        Err(status) => response(status, &[], b""),
    };
    finish(&mut stream, &reply);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_are_routed() {
        let cases: [(&[u8], Request); 9] = [
            (b"GET /metrics HTTP/1.1", Request::Metrics { head: false }),
            (
                b"GET /metrics?x=1 HTTP/1.0\r\nHost: a",
                Request::Metrics { head: false },
            ),
            (b"HEAD /metrics HTTP/1.1", Request::Metrics { head: true }),
            (b"GET / HTTP/1.1", Request::NotFound),
            (b"GET /metricsx HTTP/1.1", Request::NotFound),
            (b"POST /metrics HTTP/1.1", Request::MethodNotAllowed),
            (b"DELETE /x HTTP/1.1", Request::MethodNotAllowed),
            (b"GET /metrics", Request::Bad),
            (b"GET /metrics SPDY/3 extra", Request::Bad),
        ];
        for (line, want) in cases {
            assert_eq!(
                parse_request(line),
                want,
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        assert_eq!(parse_request(&[0xff, 0xfe]), Request::Bad);
    }

    #[test]
    fn responses_say_their_length_and_close() {
        let r = String::from_utf8(response("404 Not Found", &[], b"abc")).unwrap();
        assert!(r.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(r.contains("Content-Length: 3\r\n"));
        assert!(r.contains("Connection: close\r\n"));
        assert!(r.ends_with("\r\n\r\nabc"));
    }

    #[test]
    fn non_loopback_addresses_need_an_opt_in() {
        let source: SampleSource =
            Arc::new(|| (MetricsSample::default(), Arc::new(Snapshot::empty())));
        for addr in ["198.18.0.1:0", "0.0.0.0:0", "[::]:0"] {
            let err = MetricsServer::start(addr.parse().unwrap(), Arc::clone(&source)).unwrap_err();
            assert!(matches!(err, MetricsError::NotLoopback(_)), "{addr}: {err}");
        }
        // The IPv4-mapped form of loopback is loopback.
        let server = MetricsServer::start("[::ffff:127.0.0.1]:0".parse().unwrap(), source);
        assert!(!matches!(server, Err(MetricsError::NotLoopback(_))));
    }
}
