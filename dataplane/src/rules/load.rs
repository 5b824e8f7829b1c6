//! Reading a config: file → text → TOML → validated [`Config`].

use std::path::Path;

use super::error::{line_column, ConfigError, ConfigProblem};
use super::raw::RawConfig;
use super::validate::validate;
use super::Config;

/// Loads and validates the config file at `path`. Problems are reported
/// against the path as given.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => load_str(&text, &file),
        Err(error) => Err(ConfigError::Io { file, error }),
    }
}

/// Loads and validates a config from its text; `origin` names it in
/// problems (a path, or e.g. `<api>`).
///
/// A TOML syntax or type error (including an unknown key) stops reading
/// and is reported alone; otherwise every semantic problem is reported.
pub fn load_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|error| ConfigError::Invalid {
        problems: vec![toml_problem(&error, text, origin)],
    })?;
    validate(&raw, text, origin).map_err(|mut problems| {
        // Stable: problems at one position keep the order they were found.
        problems.sort_by_key(|p| (p.line, p.column));
        ConfigError::Invalid { problems }
    })
}

/// A TOML error as a problem: its bare message (on one line) at the start
/// of its span, or at the top of the file when it has none.
fn toml_problem(error: &toml::de::Error, text: &str, origin: &str) -> ConfigProblem {
    let (line, column) = error
        .span()
        .map_or((1, 1), |span| line_column(text, span.start));
    let message = error
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    ConfigProblem {
        file: origin.to_owned(),
        line,
        column,
        message,
    }
}
