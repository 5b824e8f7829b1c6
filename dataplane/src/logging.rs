//! Log output of the daemon and tools: `tracing` events written to stderr,
//! as human-readable lines (the default) or one JSON object per line.
//!
//! Logs are for events a person may want to read: start-up, rule changes,
//! errors, shutdown. Nothing logs per packet: the data path counts instead
//! (see [`crate::metrics`]), and `pipeline`, `flow`, `wire` and `table` make
//! no `tracing` calls at all.

use std::io::{self, IsTerminal};

use tracing::Subscriber;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// The environment variable that, when set, replaces the configured filter.
pub const FILTER_ENV: &str = "RUST_LOG";

/// How log lines look.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line, for log collectors.
    Json,
}

impl From<crate::rules::LogFormatSetting> for LogFormat {
    fn from(setting: crate::rules::LogFormatSetting) -> Self {
        match setting {
            crate::rules::LogFormatSetting::Human => LogFormat::Human,
            crate::rules::LogFormatSetting::Json => LogFormat::Json,
        }
    }
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// The filter does not parse.
    #[error("bad log filter {filter:?}: {reason}")]
    BadFilter {
        /// The filter as given.
        filter: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Another global subscriber was installed first.
    #[error("logging was already set up")]
    AlreadySet,
}

/// Installs the process-wide logger: `format`, filtered by `filter` (e.g.
/// `info`, or `warn,flowgate_dataplane=debug`) unless `RUST_LOG` is set and
/// not empty, in which case it wins. Call once, early.
pub fn init(format: LogFormat, filter: &str) -> Result<(), LoggingError> {
    let env = std::env::var(FILTER_ENV).ok();
    let filter = choose_filter(filter, env.as_deref())?;
    // Colours only for a person at a terminal, never into files or journals.
    let ansi = io::stderr().is_terminal();
    tracing::subscriber::set_global_default(subscriber(format, filter, ansi, io::stderr))
        .map_err(|_| LoggingError::AlreadySet)
}

/// The filter to use: the environment's when set and not blank, else the
/// configured one.
fn choose_filter(configured: &str, env: Option<&str>) -> Result<EnvFilter, LoggingError> {
    let chosen = match env {
        Some(e) if !e.trim().is_empty() => e,
        _ => configured,
    };
    parse_filter(chosen)
}

/// Parses `filter` (e.g. `info`, or `warn,flowgate_dataplane=debug`) as
/// the logger does; `flowgate check` uses it to judge `daemon.log_level`.
pub fn parse_filter(filter: &str) -> Result<EnvFilter, LoggingError> {
    EnvFilter::try_new(filter).map_err(|e| LoggingError::BadFilter {
        filter: filter.to_owned(),
        reason: e.to_string(),
    })
}

/// A subscriber writing `format` lines to `writer`, in colour if `ansi`
/// (human lines only).
fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    ansi: bool,
    writer: W,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(true);
    match format {
        LogFormat::Human => Box::new(builder.with_ansi(ansi).finish()),
        LogFormat::Json => Box::new(builder.with_ansi(false).json().flatten_event(true).finish()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Captured {
        type Writer = Captured;
        fn make_writer(&'w self) -> Captured {
            self.clone()
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn capture(format: LogFormat, filter: &str, log: impl FnOnce()) -> String {
        let out = Captured::default();
        let sub = subscriber(
            format,
            choose_filter(filter, None).unwrap(),
            false,
            out.clone(),
        );
        tracing::subscriber::with_default(sub, log);
        out.text()
    }

    #[test]
    fn human_lines_carry_level_target_message_and_fields() {
        let text = capture(LogFormat::Human, "info", || {
            tracing::info!(generation = 7, "rules applied");
            tracing::debug!("not shown at info");
        });
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        let line = lines[0];
        assert!(line.contains("INFO"), "{line}");
        assert!(line.contains("rules applied"), "{line}");
        assert!(line.contains("generation=7"), "{line}");
        assert!(!line.starts_with('{'));
    }

    #[test]
    fn json_lines_are_json_objects() {
        let text = capture(LogFormat::Json, "debug", || {
            tracing::warn!(worker = 1, "ring full");
            tracing::debug!("also shown");
            tracing::trace!("not shown");
        });
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["level"], "WARN");
        assert_eq!(lines[0]["message"], "ring full");
        assert_eq!(lines[0]["worker"], 1);
        assert!(lines[0]["target"].as_str().unwrap().contains("logging"));
        assert_eq!(lines[1]["level"], "DEBUG");
    }

    #[test]
    fn the_environment_overrides_the_configured_filter() {
        let f = choose_filter("info", Some("warn")).unwrap();
        assert_eq!(f.to_string(), "warn");
        let f = choose_filter("info", Some("  ")).unwrap();
        assert_eq!(f.to_string(), "info");
        let f = choose_filter("debug", None).unwrap();
        assert_eq!(f.to_string(), "debug");
    }

    #[test]
    fn a_bad_filter_is_refused_with_its_text() {
        let err = choose_filter("info,[", None).unwrap_err();
        assert!(matches!(&err, LoggingError::BadFilter { filter, .. } if filter == "info,["));
        assert!(err.to_string().contains("info,["));
        assert!(choose_filter("info", Some("=&=")).is_err());
    }
}
