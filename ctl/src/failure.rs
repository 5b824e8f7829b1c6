//! Why a run failed, its exit status, and how it is reported: one line on
//! stderr (then the problems and a hint, each on a line of its own), or
//! with `-o json` one document on stdout,
//! `{"error":{"code":"not_found","message":"unknown service \"nope\""}}`.
//!
//! | exit | meaning | `code` |
//! |---|---|---|
//! | 0 | success | — |
//! | 1 | the request failed and nothing changed: the daemon refused it, or the file to apply could not be read, or (`--etcd`) another writer changed the rules first | the API's code (`not_found`, `invalid`, ...), or `io`, or `conflict` |
//! | 2 | bad usage: nothing was sent | `usage` |
//! | 3 | no usable answer: the daemon could not be reached, the connection broke, its answer could not be read, or the output could not be written | `unreachable`, `connection_lost`, `protocol`, `output` |
//!
//! After exit 3 a change may or may not have been made if the connection
//! broke after the request was sent: `flowgatectl status` tells.

use std::io::Write;

use flowgate_api::{ApiError, ClientError};
use serde::Serialize;

/// Exit status of a request that failed and changed nothing.
pub const EXIT_REFUSED: u8 = 1;
/// Exit status of a command-line mistake.
pub const EXIT_USAGE: u8 = 2;
/// Exit status when no usable answer came back.
pub const EXIT_NO_ANSWER: u8 = 3;

/// The codes flowgatectl gives failures of its own, beside the API's
/// (`flowgate_api::ErrorCode`), with their exit statuses.
pub const CLIENT_CODES: [(&str, u8); 7] = [
    ("usage", EXIT_USAGE),
    ("io", EXIT_REFUSED),
    ("conflict", EXIT_REFUSED),
    ("unreachable", EXIT_NO_ANSWER),
    ("connection_lost", EXIT_NO_ANSWER),
    ("protocol", EXIT_NO_ANSWER),
    ("output", EXIT_NO_ANSWER),
];

/// Why the command failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// The error code: the API's, or one of [`CLIENT_CODES`].
    pub code: &'static str,
    /// One line.
    pub message: String,
    /// Every problem, when the daemon listed them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// For `apply_failed`: the generation that runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// What to do instead, when flowgatectl knows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<Box<str>>,
    /// The exit status.
    #[serde(skip)]
    pub exit: u8,
    /// Whether the daemon refused the request (the text line says
    /// `rejected: `).
    #[serde(skip)]
    refusal: bool,
}

impl Failure {
    fn client(code: &'static str, exit: u8, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
            problems: Vec::new(),
            generation: None,
            hint: None,
            exit,
            refusal: false,
        }
    }

    /// A command-line mistake.
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure::client("usage", EXIT_USAGE, message)
    }

    /// A file flowgatectl had to read could not be.
    pub fn file(message: impl Into<String>) -> Failure {
        Failure::client("io", EXIT_REFUSED, message)
    }

    /// The output could not be written.
    pub fn output(message: impl Into<String>) -> Failure {
        Failure::client("output", EXIT_NO_ANSWER, message)
    }

    /// etcd (`--etcd`) could not be reached or answered with an error.
    pub fn unreachable(message: impl Into<String>) -> Failure {
        Failure::client("unreachable", EXIT_NO_ANSWER, message)
    }

    /// Another writer changed the fleet's rules in etcd between the read
    /// and the write (`--etcd`): nothing was written.
    pub fn conflict(message: impl Into<String>) -> Failure {
        Failure::client("conflict", EXIT_REFUSED, message)
    }

    /// The daemon answered something this client does not expect.
    pub fn protocol(message: impl Into<String>) -> Failure {
        Failure::client("protocol", EXIT_NO_ANSWER, message)
    }

    /// A refusal in the API's terms (also for what flowgatectl finds
    /// missing itself, e.g. no service at a listener: `not_found`).
    pub fn refused(error: ApiError) -> Failure {
        Failure {
            code: error.code.name(),
            message: error.message,
            problems: error.problems,
            generation: error.generation,
            hint: None,
            exit: EXIT_REFUSED,
            refusal: true,
        }
    }

    /// The same failure with a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Failure {
        self.hint = Some(hint.into().into_boxed_str());
        self
    }

    /// Whether the daemon refused the request with `code`.
    pub fn is_refusal(&self, code: flowgate_api::ErrorCode) -> bool {
        self.refusal && self.code == code.name()
    }
}

impl From<ClientError> for Failure {
    fn from(error: ClientError) -> Failure {
        let message = error.to_string();
        match error {
            ClientError::Rejected(api) => Failure::refused(api),
            ClientError::Connect { .. } => Failure::client("unreachable", EXIT_NO_ANSWER, message),
            ClientError::Io(_) => Failure::client("connection_lost", EXIT_NO_ANSWER, message),
            ClientError::Protocol(_) => Failure::protocol(message),
        }
    }
}

/// The JSON document of a failure.
#[derive(Serialize)]
struct ErrorDocument<'a> {
    error: &'a Failure,
}

/// Reports `failure` — as one JSON document on `out` if `json`, else as
/// text on `err` — and returns its exit status.
pub fn report(failure: &Failure, json: bool, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    if json {
        if let Ok(text) = serde_json::to_string(&ErrorDocument { error: failure }) {
            let _ = writeln!(out, "{text}").and_then(|()| out.flush());
        }
        return failure.exit;
    }
    let prefix = if failure.refusal { "rejected: " } else { "" };
    let _ = writeln!(err, "flowgatectl: {prefix}{}", failure.message);
    if failure.problems.len() > 1 {
        for problem in &failure.problems {
            let _ = writeln!(err, "  {problem}");
        }
    }
    if let Some(hint) = &failure.hint {
        let _ = writeln!(err, "  hint: {hint}");
    }
    failure.exit
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowgate_api::ErrorCode;

    fn reported(failure: &Failure, json: bool) -> (u8, String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let exit = report(failure, json, &mut out, &mut err);
        let text = |v: Vec<u8>| String::from_utf8(v).unwrap();
        (exit, text(out), text(err))
    }

    #[test]
    fn refusals_read_as_the_api_wrote_them() {
        let api = ApiError::with_problems(ErrorCode::Invalid, vec!["a".into(), "b".into()]);
        let failure = Failure::refused(api).with_hint("do x");
        assert!(failure.is_refusal(ErrorCode::Invalid));
        let (exit, out, err) = reported(&failure, false);
        assert_eq!((exit, out.as_str()), (1, ""));
        assert_eq!(
            err,
            "flowgatectl: rejected: 2 problems; the first: a\n  a\n  b\n  hint: do x\n"
        );
        let (exit, out, err) = reported(&failure, true);
        assert_eq!((exit, err.as_str()), (1, ""));
        assert_eq!(
            out,
            r#"{"error":{"code":"invalid","message":"2 problems; the first: a","problems":["a","b"],"hint":"do x"}}"#
                .to_owned()
                + "\n"
        );
    }

    #[test]
    fn client_failures_have_their_own_codes_and_statuses() {
        let connect = ClientError::Connect {
            path: "/x.sock".into(),
            reason: "is flowgate running?".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        let failure = Failure::from(connect);
        assert_eq!((failure.code, failure.exit), ("unreachable", 3));
        assert!(!failure.is_refusal(ErrorCode::NotFound));
        let (_, out, _) = reported(&failure, true);
        assert_eq!(
            out,
            "{\"error\":{\"code\":\"unreachable\",\"message\":\"cannot connect to /x.sock: is flowgate running?\"}}\n"
        );
        assert_eq!(Failure::usage("x").exit, EXIT_USAGE);
        for (code, exit) in CLIENT_CODES {
            assert!(
                serde_json::from_value::<ErrorCode>(serde_json::json!(code)).is_err()
                    || code == "io",
                "{code} is one of the API's codes"
            );
            assert!((1..=3).contains(&exit));
        }
    }
}
