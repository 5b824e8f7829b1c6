//! A client of the control socket: what `flowgatectl` uses, and tests.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::ApiError;
use crate::framing::request_line;
use crate::reply::{Reply, Response};
use crate::request::Request;
use crate::API_VERSION;

/// Why a call did not get an answer, or got a refusal.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No daemon answers at the path.
    #[error("cannot connect to {}: {reason}", path.display())]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// Why, in words an operator can act on.
        reason: String,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The connection broke mid-call.
    #[error("lost the connection to flowgate: {0}")]
    Io(#[from] io::Error),
    /// The daemon's answer could not be read.
    #[error("unreadable response from flowgate: {0}")]
    Protocol(String),
    /// The daemon refused the request; nothing changed.
    #[error("rejected: {0}")]
    Rejected(ApiError),
}

/// A connection to a running flowgate.
///
/// The daemon closes a connection that stays idle for a few seconds (or
/// that an idle client holds when another needs its place), saying so
/// first. A call on a connection the daemon has closed before the request
/// was sent connects again and sends it there: the daemon never read it,
/// so nothing is lost or done twice.
#[derive(Debug)]
pub struct ControlClient {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    path: PathBuf,
    timeout: Option<Duration>,
}

impl ControlClient {
    /// Connects to the control socket at `path`.
    pub fn connect(path: &Path) -> Result<ControlClient, ClientError> {
        let stream = UnixStream::connect(path).map_err(|source| {
            let reason = match source.kind() {
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                    "is flowgate running?".to_owned()
                }
                io::ErrorKind::PermissionDenied => {
                    "permission denied (the socket is mode 0600: run as the user flowgate runs as)"
                        .to_owned()
                }
                _ => source.to_string(),
            };
            ClientError::Connect {
                path: path.to_owned(),
                reason,
                source,
            }
        })?;
        let reader = BufReader::new(stream.try_clone()?);
        Ok(ControlClient {
            reader,
            writer: stream,
            path: path.to_owned(),
            timeout: None,
        })
    }

    /// Whether the daemon has closed this connection: before a request is
    /// sent, anything to read is its closing notice, or the end.
    fn closed_by_daemon(&mut self) -> bool {
        if !self.reader.buffer().is_empty() {
            return true;
        }
        if self.writer.set_nonblocking(true).is_err() {
            return false;
        }
        let closed = match self.reader.fill_buf() {
            // A line nobody asked for, or the end of the stream.
            Ok(_) => true,
            Err(e) => e.kind() != io::ErrorKind::WouldBlock,
        };
        let _ = self.writer.set_nonblocking(false);
        closed
    }

    /// Gives up on a response after `timeout` (none: wait as long as it
    /// takes).
    pub fn set_timeout(&mut self, timeout: Option<Duration>) -> Result<(), ClientError> {
        self.writer.set_read_timeout(timeout)?;
        self.writer.set_write_timeout(timeout)?;
        self.timeout = timeout;
        Ok(())
    }

    /// Sends `request` and waits for its answer.
    pub fn call(&mut self, request: Request) -> Result<Reply, ClientError> {
        let line = request_line(request).map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.call_raw(&line)?
            .into_result()
            .map_err(ClientError::Rejected)
    }

    /// Sends `bytes` as they are (they should end in a newline) and reads
    /// one response line. For tests and tools that speak the protocol
    /// themselves.
    pub fn call_raw(&mut self, bytes: &[u8]) -> Result<Response, ClientError> {
        if self.closed_by_daemon() {
            let mut fresh = ControlClient::connect(&self.path)?;
            fresh.set_timeout(self.timeout)?;
            *self = fresh;
        }
        let sent = self
            .writer
            .write_all(bytes)
            .and_then(|()| self.writer.flush());
        // The daemon answers a request it refuses part-way (too large)
        // and hangs up: read that answer before reporting a broken pipe.
        let response = self.read_response();
        match (sent, response) {
            (_, Ok(response)) => Ok(response),
            (Err(e), Err(_)) => Err(ClientError::Io(e)),
            (Ok(()), Err(e)) => Err(e),
        }
    }

    /// Reads one response line.
    pub fn read_response(&mut self) -> Result<Response, ClientError> {
        let mut line = Vec::new();
        let n = self.reader.read_until(b'\n', &mut line)?;
        if n == 0 {
            return Err(ClientError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "flowgate closed the connection without answering",
            )));
        }
        let response: Response =
            serde_json::from_slice(&line).map_err(|e| ClientError::Protocol(e.to_string()))?;
        if response.version != API_VERSION {
            return Err(ClientError::Protocol(format!(
                "flowgate speaks API version {}, this client version {API_VERSION}",
                response.version
            )));
        }
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixListener;

    fn line(response: &Response) -> Vec<u8> {
        let mut bytes = serde_json::to_vec(response).unwrap();
        bytes.push(b'\n');
        bytes
    }

    fn error(code: ErrorCode, message: &str) -> Response {
        Response::new(Err(ApiError::new(code, message)))
    }

    #[test]
    fn a_call_after_the_daemon_closed_an_idle_connection_goes_on_a_new_one() {
        let dir = std::env::temp_dir().join(format!("flowgate-client-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("control.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            // The first connection is closed as an idle one is: a notice,
            // then the end.
            let (mut idle, _) = listener.accept().unwrap();
            idle.write_all(&line(&error(ErrorCode::Timeout, "closing")))
                .unwrap();
            drop(idle);
            // The request arrives on the second, whole, and is answered.
            let (next, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(next.try_clone().unwrap());
            let mut request = String::new();
            reader.read_line(&mut request).unwrap();
            (&next)
                .write_all(&line(&error(ErrorCode::BadRequest, "answered")))
                .unwrap();
            request
        });
        let mut client = ControlClient::connect(&path).unwrap();
        client.set_timeout(Some(Duration::from_secs(5))).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let response = client.call_raw(b"{\"request\":1}\n").unwrap();
        let answered = response.into_result().unwrap_err();
        assert_eq!(answered.message, "answered");
        assert_eq!(server.join().unwrap(), "{\"request\":1}\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
