//! Why a request failed: an [`ApiError`] with its [`ErrorCode`].

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a request failed. Whatever the code, the rules that ran before
/// still run; for `apply_failed`, the message says which generation that
/// is and what the XDP maps hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(deny_unknown_fields)]
#[error("{message}")]
pub struct ApiError {
    /// What kind of failure.
    pub code: ErrorCode,
    /// One line saying what went wrong.
    pub message: String,
    /// Every problem, one line each, when validation failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// For `apply_failed`: the generation that runs, the one from before
    /// the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
}

impl ApiError {
    /// An error with no list of problems.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            problems: Vec::new(),
            generation: None,
        }
    }

    /// An error for a list of problems: the message is the problem when
    /// there is one, else how many there are and the first.
    pub fn with_problems(code: ErrorCode, problems: Vec<String>) -> ApiError {
        let message = match problems.as_slice() {
            [] => "rejected".to_owned(),
            [one] => one.clone(),
            [first, ..] => format!("{} problems; the first: {first}", problems.len()),
        };
        ApiError {
            code,
            message,
            problems,
            generation: None,
        }
    }
}

/// The kinds of failure, as `snake_case` names on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, not an object of the documented shape, an unknown `op` or
    /// field, or a value of the wrong type.
    BadRequest,
    /// A `version` this daemon does not speak.
    UnsupportedVersion,
    /// The request line is longer than [`MAX_REQUEST_BYTES`](crate::MAX_REQUEST_BYTES).
    TooLarge,
    /// The client sent nothing, or not a whole line, in time.
    Timeout,
    /// Too many clients are connected; try again.
    Busy,
    /// No such service or backend.
    NotFound,
    /// The service or backend to add is there already.
    Exists,
    /// The change would make the rules invalid, or need more than the
    /// kernel side holds (the XDP maps' sizes); `problems` lists why.
    Invalid,
    /// The change touches settings that take effect only at start.
    RestartRequired,
    /// The data plane could not apply the change: it keeps the old rules
    /// (`generation` says which), and the message says what the XDP maps
    /// hold.
    ApplyFailed,
    /// A config file could not be read.
    Io,
    /// A bug: the daemon failed in a way it should not.
    Internal,
}

impl ErrorCode {
    /// Every code, in the order of the enum.
    pub const ALL: [ErrorCode; 12] = [
        ErrorCode::BadRequest,
        ErrorCode::UnsupportedVersion,
        ErrorCode::TooLarge,
        ErrorCode::Timeout,
        ErrorCode::Busy,
        ErrorCode::NotFound,
        ErrorCode::Exists,
        ErrorCode::Invalid,
        ErrorCode::RestartRequired,
        ErrorCode::ApplyFailed,
        ErrorCode::Io,
        ErrorCode::Internal,
    ];

    /// The name used on the wire.
    pub const fn name(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Busy => "busy",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Exists => "exists",
            ErrorCode::Invalid => "invalid",
            ErrorCode::RestartRequired => "restart_required",
            ErrorCode::ApplyFailed => "apply_failed",
            ErrorCode::Io => "io",
            ErrorCode::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_named_as_serialised() {
        for code in ErrorCode::ALL {
            assert_eq!(
                serde_json::to_string(&code).unwrap(),
                format!("\"{}\"", code.name())
            );
        }
    }
}
