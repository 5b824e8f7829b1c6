//! Per-service heartbeat tokens, compared in constant time.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use thiserror::Error;

/// The shortest token: 16 characters of guesswork at the least.
pub const MIN_TOKEN_LEN: usize = 16;
/// The longest token.
pub const MAX_TOKEN_LEN: usize = 128;

/// A service's heartbeat token: 16 to 128 visible ASCII characters (no
/// spaces). Its `Debug` form does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct HeartbeatToken(Box<[u8]>);

/// Why a token is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum TokenError {
    /// Too short or too long.
    #[error(
        "heartbeat token of {0} characters must be {MIN_TOKEN_LEN} to {MAX_TOKEN_LEN} characters"
    )]
    Length(usize),
    /// A space, a control character or a non-ASCII character.
    #[error("heartbeat token must be visible ASCII characters (no spaces)")]
    Characters,
}

impl HeartbeatToken {
    /// Checks and keeps `token`.
    pub fn new(token: &str) -> Result<HeartbeatToken, TokenError> {
        if !(MIN_TOKEN_LEN..=MAX_TOKEN_LEN).contains(&token.len()) {
            return Err(TokenError::Length(token.chars().count()));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::Characters);
        }
        Ok(HeartbeatToken(token.as_bytes().into()))
    }

    /// Whether `presented` is this token. The time taken depends on this
    /// token's length only, never on where `presented` first differs.
    pub fn matches(&self, presented: &[u8]) -> bool {
        constant_time_eq(&self.0, presented)
    }
}

impl fmt::Debug for HeartbeatToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HeartbeatToken(<redacted>)")
    }
}

/// Compares every byte of `expected` whatever `presented` holds, folding
/// the differences (and the length difference) into one value before a
/// single branch. `black_box` keeps the compiler from turning the fold
/// into an early exit.
fn constant_time_eq(expected: &[u8], presented: &[u8]) -> bool {
    let mut diff = u8::from(expected.len() != presented.len());
    for (i, &e) in expected.iter().enumerate() {
        let p = presented.get(i).copied().unwrap_or(!e);
        diff |= std::hint::black_box(e ^ p);
    }
    std::hint::black_box(diff) == 0
}

/// The tokens of every service that takes heartbeats, replaced whole when
/// the rules change; the listener reads them without a lock.
#[derive(Debug, Default)]
pub struct HeartbeatTokens {
    by_service: ArcSwap<HashMap<Arc<str>, HeartbeatToken>>,
}

impl HeartbeatTokens {
    /// An empty table: every heartbeat is for an unknown service.
    pub fn new() -> HeartbeatTokens {
        HeartbeatTokens::default()
    }

    /// Replaces the table.
    pub fn replace<I: IntoIterator<Item = (Arc<str>, HeartbeatToken)>>(&self, tokens: I) {
        self.by_service
            .store(Arc::new(tokens.into_iter().collect()));
    }

    /// The table now.
    pub(super) fn load(&self) -> Arc<HashMap<Arc<str>, HeartbeatToken>> {
        self.by_service.load_full()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_and_hidden() {
        assert_eq!(HeartbeatToken::new("short"), Err(TokenError::Length(5)));
        assert_eq!(
            HeartbeatToken::new(&"x".repeat(129))
                .unwrap_err()
                .to_string(),
            "heartbeat token of 129 characters must be 16 to 128 characters"
        );
        assert_eq!(
            HeartbeatToken::new("has a space in it!"),
            Err(TokenError::Characters)
        );
        let t = HeartbeatToken::new("0123456789abcdef").unwrap();
        assert_eq!(format!("{t:?}"), "HeartbeatToken(<redacted>)");
    }

    #[test]
    fn only_the_exact_token_matches() {
        let t = HeartbeatToken::new("0123456789abcdef").unwrap();
        assert!(t.matches(b"0123456789abcdef"));
        for wrong in [
            &b""[..],
            b"0123456789abcde",
            b"0123456789abcdef0",
            b"1123456789abcdef",
            b"0123456789abcdeF",
            b"\xcf\xce\xcd\xcc\xcb\xca\xc9\xc8\xc7\xc6\x9e\x9d\x9c\x9b\x9a\x99",
        ] {
            assert!(!t.matches(wrong), "{wrong:?}");
        }
    }
}
