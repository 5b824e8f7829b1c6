//! The heartbeat datagram.
//!
//! One UDP datagram is one heartbeat, a line of ASCII with four fields
//! separated by single spaces, and an optional trailing newline:
//!
//! ```text
//! flowgate-heartbeat/1 SERVICE ADDRESS:PORT TOKEN
//! flowgate-heartbeat/1 web 198.18.1.11:80 4f1c0d8e2a7b9c3d5e6f
//! flowgate-heartbeat/1 web6 [2001:2::1:11]:80 4f1c0d8e2a7b9c3d5e6f
//! ```
//!
//! `SERVICE` is the service's name in the rules, `ADDRESS:PORT` the
//! backend's, `TOKEN` the service's heartbeat token. A datagram is at most
//! [`MAX_DATAGRAM`] bytes. An agent needs nothing but a UDP socket:
//! `printf 'flowgate-heartbeat/1 web 198.18.1.11:80 TOKEN' | socat - UDP:gw:PORT`.

use std::net::SocketAddr;

use thiserror::Error;

use super::token::MAX_TOKEN_LEN;

/// The first field: the format and its version.
pub const MAGIC: &[u8] = b"flowgate-heartbeat/1";
/// The longest datagram taken; longer ones are refused whole.
pub const MAX_DATAGRAM: usize = 512;
/// The longest service name (as the rules allow).
const MAX_SERVICE_LEN: usize = 64;

/// A parsed heartbeat, borrowing the datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeartbeatMessage<'a> {
    /// The service's name.
    pub service: &'a str,
    /// The backend's address and port.
    pub backend: SocketAddr,
    /// The token as presented (not yet compared).
    pub token: &'a [u8],
}

/// Why a datagram is not a heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum MessageError {
    /// Longer than [`MAX_DATAGRAM`].
    #[error("datagram longer than {MAX_DATAGRAM} bytes")]
    TooLong,
    /// Not four fields separated by single spaces.
    #[error("not four space-separated fields")]
    Fields,
    /// The first field is not `flowgate-heartbeat/1`.
    #[error("unknown format (the first field must be flowgate-heartbeat/1)")]
    Version,
    /// The service field is not a service name.
    #[error("invalid service name")]
    Service,
    /// The backend field is not `ADDRESS:PORT`.
    #[error("invalid backend address (ADDRESS:PORT, IPv6 in brackets)")]
    Backend,
    /// The token field is empty, too long or not visible ASCII.
    #[error("invalid token")]
    Token,
}

/// Parses one datagram. Never panics, never allocates.
pub fn parse(datagram: &[u8]) -> Result<HeartbeatMessage<'_>, MessageError> {
    if datagram.len() > MAX_DATAGRAM {
        return Err(MessageError::TooLong);
    }
    let line = datagram
        .strip_suffix(b"\n")
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .unwrap_or(datagram);
    let mut fields = line.split(|&b| b == b' ');
    let (Some(magic), Some(service), Some(backend), Some(token), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(MessageError::Fields);
    };
    if magic != MAGIC {
        return Err(MessageError::Version);
    }
    let service_ok = (1..=MAX_SERVICE_LEN).contains(&service.len())
        && service
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    let service = service_ok
        .then(|| std::str::from_utf8(service).ok())
        .flatten()
        .ok_or(MessageError::Service)?;
    let backend = std::str::from_utf8(backend)
        .ok()
        .and_then(|s| s.parse::<SocketAddr>().ok())
        .filter(|a| a.port() != 0)
        .ok_or(MessageError::Backend)?;
    if token.is_empty() || token.len() > MAX_TOKEN_LEN || !token.iter().all(u8::is_ascii_graphic) {
        return Err(MessageError::Token);
    }
    Ok(HeartbeatMessage {
        service,
        backend,
        token,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_heartbeat_parses_with_or_without_a_newline() {
        for text in [
            "flowgate-heartbeat/1 web 198.18.1.11:80 s3cr3t-token-0123",
            "flowgate-heartbeat/1 web 198.18.1.11:80 s3cr3t-token-0123\n",
            "flowgate-heartbeat/1 web 198.18.1.11:80 s3cr3t-token-0123\r\n",
        ] {
            let m = parse(text.as_bytes()).unwrap();
            assert_eq!(m.service, "web");
            assert_eq!(m.backend, "198.18.1.11:80".parse().unwrap());
            assert_eq!(m.token, b"s3cr3t-token-0123");
        }
        let v6 = parse(b"flowgate-heartbeat/1 web6 [2001:2::1:11]:80 t").unwrap();
        assert_eq!(v6.backend, "[2001:2::1:11]:80".parse().unwrap());
    }

    #[test]
    fn malformed_datagrams_say_what_is_wrong() {
        let cases: [(&[u8], MessageError); 12] = [
            (b"", MessageError::Fields),
            (
                b"flowgate-heartbeat/1 web 198.18.1.11:80",
                MessageError::Fields,
            ),
            (
                b"flowgate-heartbeat/1 web 198.18.1.11:80 t extra",
                MessageError::Fields,
            ),
            (
                b"flowgate-heartbeat/1  web 198.18.1.11:80 t",
                MessageError::Fields,
            ),
            (
                b"flowgate-heartbeat/2 web 198.18.1.11:80 t",
                MessageError::Version,
            ),
            (
                b"flowgate-heartbeat/1 w\xffb 198.18.1.11:80 t",
                MessageError::Service,
            ),
            (
                b"flowgate-heartbeat/1 we/b 198.18.1.11:80 t",
                MessageError::Service,
            ),
            (
                b"flowgate-heartbeat/1 web 198.18.1.11 t",
                MessageError::Backend,
            ),
            (
                b"flowgate-heartbeat/1 web 198.18.1.11:0 t",
                MessageError::Backend,
            ),
            (
                b"flowgate-heartbeat/1 web 2001:2::1:80 t",
                MessageError::Backend,
            ),
            (
                b"flowgate-heartbeat/1 web 198.18.1.11:80 t\x01",
                MessageError::Token,
            ),
            (&[b'x'; MAX_DATAGRAM + 1], MessageError::TooLong),
        ];
        for (datagram, want) in cases {
            assert_eq!(
                parse(datagram),
                Err(want),
                "{:?}",
                String::from_utf8_lossy(datagram)
            );
        }
    }

    proptest! {
        #[test]
        fn any_bytes_parse_or_fail_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn near_misses_never_panic(
            service in "[a-z.\\-_\\x00-\\xff]{0,70}",
            backend in "[0-9.:\\[\\]a-f]{0,50}",
            token in "[ -~]{0,140}",
        ) {
            let text = format!("flowgate-heartbeat/1 {service} {backend} {token}");
            if let Ok(m) = parse(text.as_bytes()) {
                prop_assert_eq!(m.service, service.as_str());
                prop_assert_eq!(m.token, token.as_bytes());
            }
        }
    }
}
