//! One message per line: how requests and responses travel on the control
//! socket.
//!
//! A client writes a [`RequestEnvelope`] as one line of JSON
//! ([`request_line`]); the server reads it within a size limit and time
//! limits ([`read_line`]), so that no client can hold the server's memory or
//! a connection slot for long, reads the request from it
//! ([`parse_request`], which refuses another version as such), and writes
//! its [`Response`] as one line back ([`write_response`]).

use std::fmt;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::error::{ApiError, ErrorCode};
use crate::reply::Response;
use crate::request::{Request, RequestEnvelope};
use crate::API_VERSION;

/// `request` at this build's version as one line, newline included.
pub fn request_line(request: Request) -> Result<Vec<u8>, serde_json::Error> {
    let mut line = serde_json::to_vec(&RequestEnvelope::new(request))?;
    line.push(b'\n');
    Ok(line)
}

/// Writes `response` as one line and flushes it.
pub fn write_response(writer: &mut impl Write, response: &Response) -> io::Result<()> {
    serde_json::to_writer(&mut *writer, response)?;
    writer.write_all(b"\n")?;
    writer.flush()
}

/// Reads one request line (without its newline). A line that is not a
/// valid request is looked at again for its version, so that a request of
/// another version is refused as such rather than as a shape this version
/// does not know.
pub fn parse_request(line: &[u8]) -> Result<Request, ApiError> {
    let error = match serde_json::from_slice::<RequestEnvelope>(line) {
        Ok(envelope) if envelope.version == API_VERSION => return Ok(envelope.request),
        Ok(envelope) => return Err(unsupported_version(&envelope.version.to_string())),
        Err(error) => error,
    };
    let probe: VersionProbe = serde_json::from_slice(line).map_err(|e| {
        ApiError::new(
            ErrorCode::BadRequest,
            format!("malformed request: {e} (expected one JSON object per line)"),
        )
    })?;
    match probe.version {
        None => Err(ApiError::new(
            ErrorCode::BadRequest,
            format!(
                "malformed request: no \"version\" (send {{\"version\":{API_VERSION},\"request\":{{...}}}})"
            ),
        )),
        Some(v) if v.as_u64() == Some(u64::from(API_VERSION)) => Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("malformed request: {error}"),
        )),
        Some(v) => Err(unsupported_version(&v.to_string())),
    }
}

fn unsupported_version(version: &str) -> ApiError {
    ApiError::new(
        ErrorCode::UnsupportedVersion,
        format!("unsupported API version {version}: this flowgate speaks version {API_VERSION}"),
    )
}

/// The `version` of a request object; every other field is skipped
/// unread. Anything but an object is refused (a derived struct would also
/// take an array, reading its first element as the version).
struct VersionProbe {
    version: Option<serde_json::Value>,
}

impl<'de> Deserialize<'de> for VersionProbe {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectOnly;
        impl<'de> serde::de::Visitor<'de> for ObjectOnly {
            type Value = VersionProbe;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<VersionProbe, A::Error> {
                let mut version = None;
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    if key == "version" {
                        version = map.next_value::<Option<serde_json::Value>>()?;
                    } else {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
                Ok(VersionProbe { version })
            }
        }
        deserializer.deserialize_map(ObjectOnly)
    }
}

/// Why no request line was read.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    /// The client closed the connection between requests.
    #[error("the client closed the connection")]
    Closed,
    /// No byte arrived within the idle timeout.
    #[error("no request within the idle timeout")]
    Idle,
    /// A line was started but not finished within the request timeout.
    #[error("request not finished (no newline) within the request timeout")]
    Incomplete,
    /// The line is longer than allowed.
    #[error("request longer than allowed")]
    TooLarge,
    /// The socket failed.
    #[error("{0}")]
    Io(#[source] io::Error),
}

/// Time limits of one read.
#[derive(Clone, Copy, Debug)]
pub struct LineTimeouts {
    /// Longest wait for the first byte of a request.
    pub idle: Duration,
    /// Longest time from the first byte of a request to its newline.
    pub whole: Duration,
}

/// Reads the next line (without its newline, and without a `\r` before
/// it) into `line`. A last line without a newline, ended by the client
/// closing its side, counts as a line.
pub fn read_line(
    reader: &mut BufReader<UnixStream>,
    line: &mut Vec<u8>,
    max: usize,
    timeouts: LineTimeouts,
) -> Result<(), LineError> {
    line.clear();
    let waiting_since = Instant::now();
    let mut first_byte: Option<Instant> = None;
    loop {
        let deadline = match first_byte {
            None => waiting_since + timeouts.idle,
            Some(at) => at + timeouts.whole,
        };
        let Some(left) = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
        else {
            return Err(timed_out(first_byte));
        };
        reader
            .get_ref()
            .set_read_timeout(Some(left))
            .map_err(LineError::Io)?;
        let available = match reader.fill_buf() {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(timed_out(first_byte))
            }
            Err(e) => return Err(LineError::Io(e)),
        };
        if available.is_empty() {
            return if line.is_empty() {
                Err(LineError::Closed)
            } else {
                trim_cr(line);
                Ok(())
            };
        }
        first_byte.get_or_insert_with(Instant::now);
        let (chunk, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (available.get(..i).unwrap_or_default(), true),
            None => (available, false),
        };
        if line.len().saturating_add(chunk.len()) > max {
            return Err(LineError::TooLarge);
        }
        line.extend_from_slice(chunk);
        let used = chunk.len() + usize::from(done);
        reader.consume(used);
        if done {
            trim_cr(line);
            return Ok(());
        }
    }
}

fn timed_out(first_byte: Option<Instant>) -> LineError {
    match first_byte {
        None => LineError::Idle,
        Some(_) => LineError::Incomplete,
    }
}

fn trim_cr(line: &mut Vec<u8>) {
    if line.last() == Some(&b'\r') {
        line.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{
        ApplyConfig, BackendAdd, BackendEdit, BackendKey, BackendSpec, Batch, Edit, FlowsQuery,
        ServiceName, ServiceSpec,
    };
    use crate::MAX_REQUEST_BYTES;

    fn parse(text: &str) -> Result<Request, ApiError> {
        parse_request(text.as_bytes())
    }

    #[test]
    fn requests_round_trip_through_json() {
        let requests = vec![
            Request::Status {},
            Request::Stats {},
            Request::ServiceList {},
            Request::Flows(FlowsQuery {
                service: Some("web".into()),
                limit: Some(5),
            }),
            Request::BackendList(ServiceName {
                service: "web".into(),
            }),
            Request::Explain(crate::ExplainQuery {
                from: "198.18.0.2:40000".into(),
                to: "198.18.100.10:80".into(),
                protocol: Some("udp".into()),
            }),
            Request::Apply(ApplyConfig {
                config: "[gateway]\n".into(),
                origin: Some("gw.toml".into()),
                dry_run: true,
            }),
            Request::ServiceAdd(ServiceSpec {
                name: "web".into(),
                protocol: "tcp".into(),
                vip: "198.18.100.10".into(),
                port: 80,
                scheduler: Some("wrr".into()),
                maglev_table_size: None,
                backends: vec![BackendSpec::new("198.18.1.11", 8080)],
            }),
            Request::BackendEdit(BackendEdit {
                service: "web".into(),
                address: "198.18.1.11".into(),
                port: 8080,
                weight: Some(3),
                zone: Some(String::new()),
                set: None,
                group: None,
                heartbeat_ttl: None,
                health: None,
            }),
            Request::Batch(Batch {
                edits: vec![
                    Edit::BackendDrain(BackendKey {
                        service: "web".into(),
                        address: "198.18.1.11".into(),
                        port: 8080,
                    }),
                    Edit::ServiceDel(ServiceName {
                        service: "old".into(),
                    }),
                ],
                dry_run: false,
            }),
        ];
        for request in requests {
            let line = serde_json::to_string(&RequestEnvelope::new(request.clone())).unwrap();
            assert!(!line.contains('\n'));
            assert_eq!(parse(&line).unwrap(), request, "{line}");
        }
    }

    #[test]
    fn the_documented_shape_parses() {
        let r = parse(
            r#"{"version":1,"request":{"op":"backend_add","service":"web","backend":{"address":"198.18.1.14","port":8080,"weight":2}}}"#,
        )
        .unwrap();
        let Request::BackendAdd(add) = r else {
            panic!("{r:?}")
        };
        assert_eq!(add.service, "web");
        assert_eq!(add.backend.weight, Some(2));
        assert_eq!(
            parse(r#"{"version":1,"request":{"op":"status"}}"#).unwrap(),
            Request::Status {}
        );
    }

    #[test]
    fn malformed_requests_are_bad_requests_with_a_reason() {
        for (text, needle) in [
            ("{not json", "malformed request"),
            ("[1,2]", "malformed request"),
            (r#"["status"]"#, "expected a JSON object"),
            ("42", "expected a JSON object"),
            ("", "malformed request"),
            (r#"{"request":{"op":"status"}}"#, "no \"version\""),
            (
                r#"{"version":null,"request":{"op":"status"}}"#,
                "no \"version\"",
            ),
            (
                r#"{"version":1,"request":{"op":"stauts"}}"#,
                "unknown variant `stauts`",
            ),
            (
                r#"{"version":1,"request":{"op":"status","x":1}}"#,
                "unknown field",
            ),
            (
                r#"{"version":1,"request":{"op":"backend_add","service":"web","backend":{"address":"198.18.1.1","port":80,"wieght":2}}}"#,
                "unknown field `wieght`",
            ),
            (
                r#"{"version":1,"request":{"op":"backend_add","service":"web","backend":{"address":"198.18.1.1","port":70000}}}"#,
                "70000",
            ),
            (
                r#"{"version":1,"request":{"op":"status"},"extra":true}"#,
                "unknown field `extra`",
            ),
            (r#"{"version":1}"#, "missing field `request`"),
        ] {
            let e = parse(text).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadRequest, "{text}: {e}");
            assert!(e.message.contains(needle), "{text}: {}", e.message);
            assert!(!e.message.contains('\n'));
        }
    }

    #[test]
    fn another_version_is_refused_as_such() {
        for version in ["2", "0", "\"1\"", "1.5", "[1]"] {
            let text = format!(r#"{{"version":{version},"request":{{"op":"whatever","new":[]}}}}"#);
            let e = parse(&text).unwrap_err();
            assert_eq!(e.code, ErrorCode::UnsupportedVersion, "{text}");
            assert!(
                e.message.contains("this flowgate speaks version 1"),
                "{}",
                e.message
            );
        }
    }

    #[test]
    fn a_batch_of_100_000_backend_changes_fits_the_limit() {
        let edits: Vec<Edit> = (0..100_000u32)
            .map(|i| {
                Edit::BackendAdd(BackendAdd {
                    service: format!("svc-{:04}", i % 1000),
                    backend: BackendSpec {
                        weight: Some(10_000),
                        ..BackendSpec::new(
                            format!("2001:2:0:{:x}::{:x}", i >> 16, i & 0xffff),
                            65_535,
                        )
                    },
                })
            })
            .collect();
        let line = serde_json::to_vec(&RequestEnvelope::new(Request::Batch(Batch {
            edits,
            dry_run: false,
        })))
        .unwrap();
        assert!(line.len() < MAX_REQUEST_BYTES, "{} bytes", line.len());
    }

    const T: LineTimeouts = LineTimeouts {
        idle: Duration::from_millis(300),
        whole: Duration::from_millis(300),
    };

    fn pair() -> (UnixStream, BufReader<UnixStream>) {
        let (a, b) = UnixStream::pair().unwrap();
        (a, BufReader::with_capacity(16, b))
    }

    #[test]
    fn reads_lines_across_buffer_refills() {
        let (mut w, mut r) = pair();
        w.write_all(b"first line longer than the buffer\r\nsecond\nlast")
            .unwrap();
        drop(w);
        let mut line = Vec::new();
        read_line(&mut r, &mut line, 100, T).unwrap();
        assert_eq!(line, b"first line longer than the buffer");
        read_line(&mut r, &mut line, 100, T).unwrap();
        assert_eq!(line, b"second");
        read_line(&mut r, &mut line, 100, T).unwrap();
        assert_eq!(line, b"last");
        assert!(matches!(
            read_line(&mut r, &mut line, 100, T),
            Err(LineError::Closed)
        ));
    }

    #[test]
    fn refuses_a_line_over_the_limit() {
        let (mut w, mut r) = pair();
        w.write_all(b"0123456789\n").unwrap();
        let mut line = Vec::new();
        assert!(matches!(read_line(&mut r, &mut line, 10, T), Ok(())));
        w.write_all(b"0123456789A\n").unwrap();
        assert!(matches!(
            read_line(&mut r, &mut line, 10, T),
            Err(LineError::TooLarge)
        ));
    }

    #[test]
    fn times_out_silent_and_slow_clients() {
        let (mut w, mut r) = pair();
        let mut line = Vec::new();
        assert!(matches!(
            read_line(&mut r, &mut line, 100, T),
            Err(LineError::Idle)
        ));
        w.write_all(b"{\"version\":").unwrap();
        assert!(matches!(
            read_line(&mut r, &mut line, 100, T),
            Err(LineError::Incomplete)
        ));
    }
}
